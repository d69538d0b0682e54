//! Record framing: `[len u32 LE][crc32 u32 LE][seq u64 LE][payload]`, the CRC-32 covering
//! `seq` and `payload`, so a torn or bit-flipped record is recognised and ends a segment's good
//! prefix.

use std::io::{self, BufRead, BufReader, Read, Seek};

/// Bytes of framing before each payload.
pub(crate) const HEADER_LEN: u64 = 16;

/// Framed size of a record whose payload has `payload_len` bytes.
pub(crate) fn frame_len(payload_len: usize) -> u64 {
    HEADER_LEN + payload_len as u64
}

/// CRC-32 over the seq (little endian) followed by the payload.
pub(crate) fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Writes the framed record into `buf` (cleared first), ready for a single `write_all`.
/// The caller guarantees `payload.len()` fits in a `u32` (segments are at most 1 GiB).
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    buf.clear();
    buf.reserve(HEADER_LEN as usize + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
}

impl Header {
    fn parse(b: &[u8; HEADER_LEN as usize]) -> Header {
        let mut len = [0u8; 4];
        let mut crc = [0u8; 4];
        let mut seq = [0u8; 8];
        len.copy_from_slice(&b[0..4]);
        crc.copy_from_slice(&b[4..8]);
        seq.copy_from_slice(&b[8..16]);
        Header {
            len: u32::from_le_bytes(len),
            crc: u32::from_le_bytes(crc),
            seq: u64::from_le_bytes(seq),
        }
    }

    /// Framed size of this record.
    pub fn frame_len(&self) -> u64 {
        HEADER_LEN + u64::from(self.len)
    }
}

/// Why the bytes at some offset do not continue a segment's good prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bad {
    /// Fewer bytes remain than a header or the announced payload needs.
    Torn,
    /// The length field points past the end of the segment.
    Length,
    /// The CRC does not match.
    Checksum,
    /// The record's seq is not the one expected at this position.
    Sequence,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Bad::Torn => "torn record",
            Bad::Length => "absurd length field",
            Bad::Checksum => "checksum mismatch",
            Bad::Sequence => "unexpected seq",
        })
    }
}

/// What follows at the current offset.
#[derive(Debug)]
pub(crate) enum Next {
    /// The known-good length of the segment is exhausted.
    End,
    /// A plausible header (payload not yet read or verified).
    Frame(Header),
    /// Damage: the good prefix ends here.
    Bad(Bad),
}

fn eof_is_torn<T>(r: io::Result<T>) -> io::Result<Result<T, Bad>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Err(Bad::Torn)),
        Err(e) => Err(e),
    }
}

/// Reads the header at the current offset; `remaining` is how many bytes of the segment follow
/// it, `expected_seq` the seq the record there must carry.
pub(crate) fn read_header<R: Read>(
    r: &mut R,
    remaining: u64,
    expected_seq: u64,
) -> io::Result<Next> {
    if remaining == 0 {
        return Ok(Next::End);
    }
    if remaining < HEADER_LEN {
        return Ok(Next::Bad(Bad::Torn));
    }
    let mut b = [0u8; HEADER_LEN as usize];
    if let Err(bad) = eof_is_torn(r.read_exact(&mut b))? {
        return Ok(Next::Bad(bad));
    }
    let h = Header::parse(&b);
    if u64::from(h.len) > remaining - HEADER_LEN {
        return Ok(Next::Bad(Bad::Length));
    }
    if h.seq != expected_seq {
        return Ok(Next::Bad(Bad::Sequence));
    }
    Ok(Next::Frame(h))
}

/// Reads and verifies the payload that follows `h`.
pub(crate) fn read_payload<R: Read>(r: &mut R, h: &Header) -> io::Result<Result<Vec<u8>, Bad>> {
    let mut payload = vec![0u8; h.len as usize];
    if let Err(bad) = eof_is_torn(r.read_exact(&mut payload))? {
        return Ok(Err(bad));
    }
    if checksum(h.seq, &payload) != h.crc {
        return Ok(Err(Bad::Checksum));
    }
    Ok(Ok(payload))
}

/// Verifies the payload that follows `h` without keeping it (bounded memory: streams through
/// the reader's buffer).
pub(crate) fn verify_payload<R: Read>(
    r: &mut BufReader<R>,
    h: &Header,
) -> io::Result<Result<(), Bad>> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h.seq.to_le_bytes());
    let mut left = h.len as usize;
    while left > 0 {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(Err(Bad::Torn));
        }
        let n = chunk.len().min(left);
        hasher.update(&chunk[..n]);
        r.consume(n);
        left -= n;
    }
    if hasher.finalize() != h.crc {
        return Ok(Err(Bad::Checksum));
    }
    Ok(Ok(()))
}

/// Skips the payload that follows `h` without reading it.
pub(crate) fn skip_payload<R: Read + Seek>(r: &mut BufReader<R>, h: &Header) -> io::Result<()> {
    r.seek_relative(i64::from(h.len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, b"hello");
        assert_eq!(buf.len() as u64, frame_len(5));
        let mut r = BufReader::new(Cursor::new(buf.clone()));
        let Next::Frame(h) = read_header(&mut r, buf.len() as u64, 7).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(read_payload(&mut r, &h).unwrap(), Ok(b"hello".to_vec()));

        // Wrong expected seq.
        let mut r = Cursor::new(buf.clone());
        assert!(matches!(
            read_header(&mut r, buf.len() as u64, 8).unwrap(),
            Next::Bad(Bad::Sequence)
        ));
        // Length beyond the segment.
        let mut r = Cursor::new(buf.clone());
        assert!(matches!(
            read_header(&mut r, buf.len() as u64 - 1, 7).unwrap(),
            Next::Bad(Bad::Length)
        ));
        // Flipped payload byte.
        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let mut r = BufReader::new(Cursor::new(bad.clone()));
        let Next::Frame(h) = read_header(&mut r, bad.len() as u64, 7).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(verify_payload(&mut r, &h).unwrap(), Err(Bad::Checksum));
        // Short header.
        let mut r = Cursor::new(buf[..10].to_vec());
        assert!(matches!(
            read_header(&mut r, 10, 7).unwrap(),
            Next::Bad(Bad::Torn)
        ));
    }
}
