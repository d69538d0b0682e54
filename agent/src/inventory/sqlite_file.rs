//! A read-only reader of one SQLite table, straight from the database file: enough to list the
//! rows of rpm's `Packages` table in `rpmdb.sqlite` without linking SQLite into the Defender.
//!
//! Why not SQLite itself: the Defender is a static binary whose size and RSS count, it reads an
//! application container's files through [`FsRoot`](super::fsroot::FsRoot) (an `openat2`
//! descriptor confined to the container's root, which SQLite's path-based open would not honour),
//! and it needs one table scan, never a query (ARCHITECTURE.md gives the measured sizes).
//!
//! Format: "Database File Format" of sqlite.org (`fileformat2.html`): the 100-byte header
//! (page size at offset 16), table b-tree pages (interior `0x05`, leaf `0x0D`), cells with
//! varint payload size and rowid, payload spilled to overflow pages past the local maximum,
//! and the record format (a header of serial types, then the values). Pages are read one at a
//! time with `pread`; every page number, offset and length read from the file is checked, so a
//! hostile or truncated file gives an error, never a panic or an endless walk.
//!
//! Not handled: a write-ahead log (`-wal`) that has not been checkpointed into the main file
//! (rpm checkpoints when it closes the database; [`wal_pending`] lets the caller say so).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Deepest table b-tree walked (SQLite's own limit is 20 levels for any sane page size).
const MAX_DEPTH: usize = 32;

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("sqlite: {what}"))
}

/// One value of a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// An open database file.
pub struct SqliteFile {
    file: File,
    page_size: usize,
    /// Page size less the reserved bytes at the end of each page.
    usable: usize,
    pages: u32,
}

/// Reads a SQLite varint at the start of `b`: (value, length).
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn be(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(n)?)?;
    Some(s.iter().fold(0u64, |v, x| (v << 8) | u64::from(*x)))
}

/// The values of a record (the payload of a table row).
pub fn record(payload: &[u8]) -> io::Result<Vec<Value<'_>>> {
    let (hlen, mut at) = varint(payload).ok_or_else(|| bad("record header"))?;
    let hlen = usize::try_from(hlen).map_err(|_| bad("record header"))?;
    if hlen > payload.len() || hlen < at {
        return Err(bad("record header length"));
    }
    let mut body = hlen;
    let mut out = Vec::new();
    while at < hlen {
        let (t, n) = varint(&payload[at..hlen]).ok_or_else(|| bad("serial type"))?;
        at += n;
        let size = match t {
            0 | 8 | 9 => 0,
            1..=4 => t as usize,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return Err(bad("reserved serial type")),
            _ => ((t - 12) / 2) as usize,
        };
        let end = body.checked_add(size).ok_or_else(|| bad("value length"))?;
        let v = payload
            .get(body..end)
            .ok_or_else(|| bad("value past the record"))?;
        out.push(match t {
            0 => Value::Null,
            8 => Value::Int(0),
            9 => Value::Int(1),
            1..=6 => {
                // Big-endian two's complement of `size` bytes.
                let raw = v.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x));
                let shift = 64 - 8 * size as u32;
                Value::Int(((raw << shift) as i64) >> shift)
            }
            7 => Value::Float(f64::from_bits(be(v, 0, 8).unwrap_or(0))),
            t if t % 2 == 0 => Value::Blob(v),
            _ => Value::Text(v),
        });
        body = end;
    }
    Ok(out)
}

impl SqliteFile {
    /// Checks the header of `file` and reads its page size.
    pub fn open(file: File) -> io::Result<Self> {
        let mut h = [0u8; 100];
        file.read_exact_at(&mut h, 0)?;
        if &h[..16] != b"SQLite format 3\0" {
            return Err(bad("not a SQLite 3 database"));
        }
        let page_size = match u16::from_be_bytes([h[16], h[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => usize::from(n),
            _ => return Err(bad("invalid page size")),
        };
        let usable = page_size - usize::from(h[20]);
        if usable < 480 {
            return Err(bad("invalid reserved space"));
        }
        let len = file.metadata()?.len();
        let pages = u32::try_from(len / page_size as u64).unwrap_or(u32::MAX);
        Ok(Self {
            file,
            page_size,
            usable,
            pages,
        })
    }

    fn read_page(&self, n: u32, buf: &mut [u8]) -> io::Result<()> {
        if n == 0 || n > self.pages {
            return Err(bad("page number out of the file"));
        }
        self.file
            .read_exact_at(buf, u64::from(n - 1) * self.page_size as u64)
    }

    /// Root page of the table named `name` (from the `sqlite_schema` table on page 1).
    pub fn table_root(&self, name: &str) -> io::Result<Option<u32>> {
        let mut root = None;
        self.scan(1, 1 << 20, &mut |_, payload| {
            let cols = record(payload)?;
            if let (Some(Value::Text(b"table")), Some(Value::Text(n)), Some(Value::Int(page))) =
                (cols.first(), cols.get(1), cols.get(3))
                && n.eq_ignore_ascii_case(name.as_bytes())
            {
                root = u32::try_from(*page).ok();
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(root)
    }

    /// Calls `row(rowid, payload)` for every row of the table b-tree rooted at `root`, in
    /// rowid order, until it returns `Ok(false)`. Rows whose payload exceeds `max_payload`
    /// bytes are skipped (counted in the returned number of skipped rows). One page and one
    /// payload are held at a time.
    pub fn scan(
        &self,
        root: u32,
        max_payload: usize,
        row: &mut dyn FnMut(i64, &[u8]) -> io::Result<bool>,
    ) -> io::Result<usize> {
        let mut page = vec![0u8; self.page_size];
        let mut payload = Vec::new();
        let mut skipped = 0;
        // Depth-first: each stack entry is a page still to visit.
        let mut stack: Vec<(u32, usize)> = vec![(root, 0)];
        let mut visited = 0u64;
        while let Some((n, depth)) = stack.pop() {
            visited += 1;
            if visited > u64::from(self.pages) || depth > MAX_DEPTH {
                return Err(bad("b-tree loops or is too deep"));
            }
            self.read_page(n, &mut page)?;
            let h = if n == 1 { 100 } else { 0 };
            let kind = *page.get(h).ok_or_else(|| bad("page header"))?;
            let cells = be(&page, h + 3, 2).ok_or_else(|| bad("page header"))? as usize;
            let (ptrs, interior) = match kind {
                0x05 => (h + 12, true),
                0x0d => (h + 8, false),
                _ => return Err(bad("not a table b-tree page")),
            };
            let cell_at = |i: usize| -> io::Result<usize> {
                let at = be(&page, ptrs + 2 * i, 2).ok_or_else(|| bad("cell pointer"))? as usize;
                if at >= self.usable {
                    return Err(bad("cell pointer past the page"));
                }
                Ok(at)
            };
            if interior {
                // Visit children left to right: push the right-most first.
                let right = be(&page, h + 8, 4).ok_or_else(|| bad("right pointer"))? as u32;
                stack.push((right, depth + 1));
                let mut children = Vec::with_capacity(cells);
                for i in 0..cells {
                    let at = cell_at(i)?;
                    children.push(be(&page, at, 4).ok_or_else(|| bad("child pointer"))? as u32);
                }
                stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
                // A real b-tree never has more pages pending than the file has pages.
                if stack.len() as u64 > u64::from(self.pages) {
                    return Err(bad("b-tree names more pages than the file has"));
                }
                continue;
            }
            for i in 0..cells {
                let mut at = cell_at(i)?;
                let (size, n1) = varint(&page[at..]).ok_or_else(|| bad("payload size"))?;
                at += n1;
                let (rowid, n2) = varint(&page[at..]).ok_or_else(|| bad("rowid"))?;
                at += n2;
                let size = usize::try_from(size).map_err(|_| bad("payload size"))?;
                if size > max_payload {
                    skipped += 1;
                    continue;
                }
                self.payload(&page, at, size, &mut payload)?;
                if !row(rowid as i64, &payload)? {
                    return Ok(skipped);
                }
            }
        }
        Ok(skipped)
    }

    /// Gathers a cell's payload of `size` bytes starting at `at` on `page`, following its
    /// overflow chain.
    fn payload(&self, page: &[u8], at: usize, size: usize, out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        let u = self.usable;
        let x = u - 35;
        let local = if size <= x {
            size
        } else {
            let m = ((u - 12) * 32 / 255) - 23;
            let k = m + ((size - m) % (u - 4));
            if k <= x { k } else { m }
        };
        out.extend_from_slice(
            page.get(at..at + local)
                .ok_or_else(|| bad("payload past the page"))?,
        );
        if local == size {
            return Ok(());
        }
        let mut next = be(page, at + local, 4).ok_or_else(|| bad("overflow pointer"))? as u32;
        let mut buf = vec![0u8; self.page_size];
        let mut hops = 0u64;
        while out.len() < size {
            hops += 1;
            if hops > u64::from(self.pages) {
                return Err(bad("overflow chain loops"));
            }
            self.read_page(next, &mut buf)?;
            let take = (size - out.len()).min(u - 4);
            out.extend_from_slice(&buf[4..4 + take]);
            next = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        }
        Ok(())
    }
}

/// True when `wal` (the database's `-wal` file, if any) holds frames not yet checkpointed:
/// anything longer than its 32-byte header.
pub fn wal_pending(wal_len: Option<u64>) -> bool {
    wal_len.is_some_and(|l| l > 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81]), None);
    }

    #[test]
    fn records() {
        // Header: size 4, NULL, 1-byte int, 3-byte text; then -2, "abc".
        let p = [4u8, 0, 1, 19, 0xfe, b'a', b'b', b'c'];
        assert_eq!(
            record(&p).unwrap(),
            vec![Value::Null, Value::Int(-2), Value::Text(b"abc")]
        );
        assert!(record(&[4u8, 0, 1, 19, 0xfe, b'a']).is_err(), "truncated");
    }
}
