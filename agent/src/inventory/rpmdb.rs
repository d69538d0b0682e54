//! The rpm database in its SQLite form (`/var/lib/rpm/rpmdb.sqlite`, rpm ≥ 4.16: RHEL/UBI 9,
//! AlmaLinux and Rocky 9, Fedora ≥ 33, Amazon Linux 2023): every row of its `Packages` table is
//! one installed package's header, parsed here for name, epoch, version, release, arch and
//! source rpm. The older BerkeleyDB (`Packages`) and NDB (`Packages.db`) forms are reported as
//! unsupported: no well-kept Rust crate reads them (the `rpm` crate parses `.rpm` files, not
//! databases), and guessing is worse than saying so.
//!
//! Header format: rpm's "Package header format" (rpm.org, `format_header.md`, and
//! `lib/header.c`): a header as stored in the database is the on-disk header without its
//! 8-byte magic: a big-endian `u32` index count `il`, a `u32` data length `dl`, `il` index
//! entries of 16 bytes (`tag`, `type`, `offset`, `count`, all big-endian `u32`), then `dl`
//! bytes of data. Tags (`rpmtag.h`): NAME 1000, VERSION 1001, RELEASE 1002, EPOCH 1003
//! (INT32), ARCH 1022, SOURCERPM 1044; types: INT32 = 4, STRING = 6, I18NSTRING = 9.

use std::io;
use std::path::Path;

use defender_proto::v1::InventoryPackage;

use super::fsroot::FsRoot;
use super::sqlite_file::{SqliteFile, Value, record};

/// Where rpm keeps its database (and the legacy location that is often a symlink to it).
pub const DB_DIRS: &[&str] = &["var/lib/rpm", "usr/lib/sysimage/rpm"];
/// Largest package header read (rpm's own `headerMaxbytes` is 256 MiB; real headers are at
/// most a few MiB, and the biggest is what the inventory holds in memory at once).
pub const MAX_HEADER_BYTES: usize = 16 * 1024 * 1024;
/// Most packages read from one database.
pub const MAX_PACKAGES: usize = 20_000;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_ARCH: u32 = 1022;
const TAG_SOURCERPM: u32 = 1044;
const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_I18NSTRING: u32 = 9;

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A parsed header blob: its index and data store.
struct Header<'a> {
    index: &'a [u8],
    data: &'a [u8],
}

impl<'a> Header<'a> {
    fn parse(blob: &'a [u8]) -> Option<Self> {
        let il = be32(blob, 0)? as usize;
        let dl = be32(blob, 4)? as usize;
        // rpm's own limits: at most 0xffff entries, 256 MiB of data.
        if il == 0 || il > 0xffff || dl > 256 << 20 {
            return None;
        }
        let index_end = 8 + il * 16;
        Some(Self {
            index: blob.get(8..index_end)?,
            data: blob.get(index_end..index_end.checked_add(dl)?)?,
        })
    }

    /// (type, offset, count) of `tag`.
    fn entry(&self, tag: u32) -> Option<(u32, usize, u32)> {
        self.index.chunks_exact(16).find_map(|e| {
            (be32(e, 0)? == tag).then(|| Some((be32(e, 4)?, be32(e, 8)? as usize, be32(e, 12)?)))?
        })
    }

    fn string(&self, tag: u32) -> Option<String> {
        let (ty, off, _) = self.entry(tag)?;
        if ty != TYPE_STRING && ty != TYPE_I18NSTRING {
            return None;
        }
        let rest = self.data.get(off..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    fn int32(&self, tag: u32) -> Option<u32> {
        let (ty, off, count) = self.entry(tag)?;
        (ty == TYPE_INT32 && count >= 1).then(|| be32(self.data, off))?
    }
}

/// The package a header blob describes; `None` for a malformed header and for rpm's
/// `gpg-pubkey` pseudo-packages (imported signing keys, not software).
pub fn parse_header(blob: &[u8]) -> Option<InventoryPackage> {
    let h = Header::parse(blob)?;
    let name = h.string(TAG_NAME)?;
    if name == "gpg-pubkey" || name.is_empty() {
        return None;
    }
    let version = h.string(TAG_VERSION)?;
    let release = h.string(TAG_RELEASE).unwrap_or_default();
    let vr = if release.is_empty() {
        version
    } else {
        format!("{version}-{release}")
    };
    let evr = match h.int32(TAG_EPOCH) {
        Some(e) if e != 0 => format!("{e}:{vr}"),
        _ => vr.clone(),
    };
    let (source_name, source_vr) = h
        .string(TAG_SOURCERPM)
        .and_then(|s| split_source_rpm(&s))
        .unwrap_or_default();
    Some(InventoryPackage {
        kind: "rpm".into(),
        source_name: if source_name == name {
            String::new()
        } else {
            source_name
        },
        // The source rpm carries no epoch; only a version-release that differs is kept.
        source_version: if source_vr == vr {
            String::new()
        } else {
            source_vr
        },
        name,
        version: evr,
        arch: h.string(TAG_ARCH).unwrap_or_default(),
        path: String::new(),
    })
}

fn is_pubkey(blob: &[u8]) -> bool {
    Header::parse(blob)
        .and_then(|h| h.string(TAG_NAME))
        .as_deref()
        == Some("gpg-pubkey")
}

/// `openssl-3.0.1-46.el9_0.src.rpm` → (`openssl`, `3.0.1-46.el9_0`).
pub fn split_source_rpm(file: &str) -> Option<(String, String)> {
    let stem = file
        .strip_suffix(".src.rpm")
        .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = stem.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    Some((name.to_string(), format!("{version}-{release}")))
}

/// Every package of the SQLite rpmdb at `rel` under `fs`, and notes about what could not be
/// read. One header is held in memory at a time.
pub fn read_sqlite(fs: &FsRoot, rel: &Path, notes: &mut Vec<String>) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    let db = match fs.open(rel).and_then(SqliteFile::open) {
        Ok(db) => db,
        Err(e) => {
            notes.push(format!("rpm: {}: {e}", rel.display()));
            return out;
        }
    };
    let mut malformed = 0usize;
    let result = (|| -> io::Result<usize> {
        let root = db
            .table_root("Packages")?
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Packages table"))?;
        db.scan(root, MAX_HEADER_BYTES, &mut |_, payload| {
            let cols = record(payload)?;
            match cols.get(1) {
                Some(Value::Blob(b)) => match parse_header(b) {
                    Some(p) => out.push(p),
                    None if is_pubkey(b) => {}
                    None => malformed += 1,
                },
                _ => malformed += 1,
            }
            Ok(out.len() < MAX_PACKAGES)
        })
    })();
    match result {
        Ok(0) => {}
        Ok(n) => notes.push(format!(
            "rpm: {n} package headers larger than {MAX_HEADER_BYTES} bytes skipped"
        )),
        Err(e) => notes.push(format!("rpm: {}: {e}", rel.display())),
    }
    if out.len() >= MAX_PACKAGES {
        notes.push(format!("rpm: only the first {MAX_PACKAGES} packages read"));
    }
    if malformed > 0 {
        notes.push(format!(
            "rpm: {malformed} malformed package headers skipped"
        ));
    }
    let wal = fs
        .lstat(&rel.with_extension("sqlite-wal"))
        .ok()
        .map(|m| m.len());
    if super::sqlite_file::wal_pending(wal) {
        notes.push(
            "rpm: rpmdb.sqlite-wal holds changes not checkpointed; packages installed since may be missing"
                .into(),
        );
    }
    out
}

/// The rpm packages of the image under `fs` (SQLite rpmdb), or a note saying which older
/// database form was found and is unsupported.
pub fn read(fs: &FsRoot, notes: &mut Vec<String>) -> Vec<InventoryPackage> {
    for dir in DB_DIRS {
        let dir = Path::new(dir);
        let sqlite = dir.join("rpmdb.sqlite");
        if fs.lstat(&sqlite).is_ok() {
            return read_sqlite(fs, &sqlite, notes);
        }
        if fs.lstat(&dir.join("Packages.db")).is_ok() {
            notes.push(format!(
                "rpm: the NDB rpmdb (/{}/Packages.db) is unsupported; rpm packages are not listed",
                dir.display()
            ));
            return Vec::new();
        }
        if fs.lstat(&dir.join("Packages")).is_ok() {
            notes.push(format!(
                "rpm: the BerkeleyDB rpmdb (/{}/Packages) is unsupported; rpm packages are not listed",
                dir.display()
            ));
            return Vec::new();
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header blob built by hand: entries (tag, type, data).
    fn blob(entries: &[(u32, u32, Vec<u8>)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, d) in entries {
            if *ty == TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
            }
            for v in [*tag, *ty, data.len() as u32, 1] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            data.extend_from_slice(d);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend(index);
        out.extend(data);
        out
    }

    fn s(v: &str) -> Vec<u8> {
        let mut b = v.as_bytes().to_vec();
        b.push(0);
        b
    }

    #[test]
    fn header_fields() {
        let b = blob(&[
            (TAG_NAME, TYPE_STRING, s("openssl-libs")),
            (TAG_VERSION, TYPE_STRING, s("3.0.1")),
            (TAG_RELEASE, TYPE_STRING, s("46.el9_0")),
            (TAG_EPOCH, TYPE_INT32, 1u32.to_be_bytes().to_vec()),
            (TAG_ARCH, TYPE_STRING, s("x86_64")),
            (
                TAG_SOURCERPM,
                TYPE_STRING,
                s("openssl-3.0.1-46.el9_0.src.rpm"),
            ),
        ]);
        let p = parse_header(&b).unwrap();
        assert_eq!(
            (
                p.name.as_str(),
                p.version.as_str(),
                p.arch.as_str(),
                p.source_name.as_str(),
                p.source_version.as_str()
            ),
            ("openssl-libs", "1:3.0.1-46.el9_0", "x86_64", "openssl", "")
        );
        let key = blob(&[
            (TAG_NAME, TYPE_STRING, s("gpg-pubkey")),
            (TAG_VERSION, TYPE_STRING, s("fd431d51")),
        ]);
        assert!(parse_header(&key).is_none());
        // Truncated or lying headers give None, never a panic.
        for cut in 0..b.len() {
            let _ = parse_header(&b[..cut]);
        }
        let mut lying = b.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_header(&lying).is_none());
    }

    #[test]
    fn source_rpm_names() {
        assert_eq!(
            split_source_rpm("openssl-3.0.1-46.el9_0.src.rpm"),
            Some(("openssl".into(), "3.0.1-46.el9_0".into()))
        );
        assert_eq!(
            split_source_rpm("python3.9-3.9.18-1.el9.src.rpm"),
            Some(("python3.9".into(), "3.9.18-1.el9".into()))
        );
        assert_eq!(split_source_rpm("(none)"), None);
    }
}
