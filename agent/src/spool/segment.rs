//! Segment files: naming (`<first seq, 20 digits>.seg`, so names sort like seqs), listing, and
//! the open-time scan that finds each file's good prefix.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::record::{self, Bad, Next};

/// File name suffix of segment files.
const SUFFIX: &str = ".seg";
/// Digits in a segment file name.
const NAME_DIGITS: usize = 20;
/// Seqs above this are refused in names (keeps `seq + 1` arithmetic far from overflow).
const MAX_NAME_SEQ: u64 = super::MAX_SEQ;
/// Read buffer for scans and cursors.
pub(crate) const READ_BUF: usize = 64 * 1024;

/// In-memory description of one segment: seqs `first..=last` (contiguous) in `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegMeta {
    pub first: u64,
    pub last: u64,
    pub len: u64,
}

impl SegMeta {
    /// Records in the segment.
    pub fn count(&self) -> u64 {
        self.last - self.first + 1
    }

    /// Records in the segment whose seq lies in `lo..=hi`.
    pub fn count_in(&self, lo: u64, hi: u64) -> u64 {
        let lo = lo.max(self.first);
        let hi = hi.min(self.last);
        if hi >= lo { hi - lo + 1 } else { 0 }
    }

    /// Records in the segment above `acked`.
    pub fn unacked(&self, acked: u64) -> u64 {
        self.count_in(acked.saturating_add(1), u64::MAX)
    }
}

/// The file name of the segment whose first record has seq `first`.
pub(crate) fn file_name(first: u64) -> String {
    format!("{first:0NAME_DIGITS$}{SUFFIX}")
}

/// The first seq encoded in a segment file name, or `None` for any other file.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq: u64 = digits.parse().ok()?;
    (1..=MAX_NAME_SEQ).contains(&seq).then_some(seq)
}

/// The segment files in `dir`, sorted by first seq.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(first) = name.to_str().and_then(parse_name) else {
            continue;
        };
        if entry.file_type()?.is_file() {
            out.push((first, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first, _)| *first);
    Ok(out)
}

/// Result of scanning one segment file.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Intact records at the start of the file.
    pub records: u64,
    /// Bytes those records occupy: the good prefix.
    pub good_len: u64,
    /// What ended the good prefix before the end of the file, if anything.
    pub damage: Option<Bad>,
}

/// Reads `path` record by record (without holding more than one read buffer), checking lengths,
/// checksums and that seqs run `first, first + 1, …`.
pub(crate) fn scan(path: &Path, first: u64, file_len: u64) -> io::Result<Scan> {
    let mut r = BufReader::with_capacity(READ_BUF, File::open(path)?);
    let mut pos = 0u64;
    let mut expect = first;
    loop {
        let damage = match record::read_header(&mut r, file_len - pos, expect)? {
            Next::End => None,
            Next::Bad(bad) => Some(bad),
            Next::Frame(h) => match record::verify_payload(&mut r, &h)? {
                Ok(()) => {
                    pos += h.frame_len();
                    expect += 1;
                    continue;
                }
                Err(bad) => Some(bad),
            },
        };
        return Ok(Scan {
            records: expect - first,
            good_len: pos,
            damage,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_name(&file_name(42)), Some(42));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_name("state"), None);
        assert_eq!(parse_name("0042.seg"), None);
        assert_eq!(parse_name("0000000000000000004x.seg"), None);
        assert_eq!(parse_name(&file_name(0)), None);
    }

    #[test]
    fn counts() {
        let s = SegMeta {
            first: 10,
            last: 19,
            len: 0,
        };
        assert_eq!(s.count(), 10);
        assert_eq!(s.unacked(0), 10);
        assert_eq!(s.unacked(14), 5);
        assert_eq!(s.unacked(19), 0);
        assert_eq!(s.count_in(15, 100), 5);
        assert_eq!(s.count_in(1, 9), 0);
    }
}
