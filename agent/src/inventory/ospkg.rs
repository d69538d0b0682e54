//! OS package databases: dpkg (`/var/lib/dpkg/status`, and distroless's
//! `/var/lib/dpkg/status.d/*`), apk (`/lib/apk/db/installed`), and rpm (the SQLite rpmdb, read
//! by [`super::rpmdb`]; older rpmdb forms are reported as unsupported in a note).

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use defender_proto::v1::InventoryPackage;

use super::fsroot::FsRoot;

/// Largest package database read, in bytes.
pub const MAX_DB_BYTES: u64 = 64 * 1024 * 1024;

/// Calls `line` with each line of `r` (newline removed, invalid UTF-8 replaced) and `end` at
/// each blank line and at the end: one line is held at a time, so a large package database is
/// never in memory whole.
fn stanzas<R: BufRead>(
    mut r: R,
    line: &mut dyn FnMut(&str),
    end: &mut dyn FnMut(),
) -> io::Result<()> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            end();
            return Ok(());
        }
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            end();
        } else {
            line(text);
        }
    }
}

/// Packages of a dpkg status file (deb-control(5) stanzas) read from `r`; only
/// `install ok installed` packages count. `Source: name (version)` gives the source package
/// and, when it differs, its version.
pub fn read_dpkg_status<R: BufRead>(r: R) -> io::Result<Vec<InventoryPackage>> {
    let new = || InventoryPackage {
        kind: "deb".into(),
        ..Default::default()
    };
    let out = RefCell::new(Vec::new());
    let cur = RefCell::new((new(), true));
    stanzas(
        r,
        &mut |line| {
            if line.starts_with([' ', '\t']) {
                return;
            }
            let Some((k, v)) = line.split_once(':') else {
                return;
            };
            let v = v.trim();
            let (p, installed) = &mut *cur.borrow_mut();
            match k {
                "Package" => p.name = v.into(),
                "Version" => p.version = v.into(),
                "Architecture" => p.arch = v.into(),
                "Status" => *installed = v.ends_with(" installed") && !v.contains("not-installed"),
                "Source" => {
                    let (name, ver) = match v.split_once(' ') {
                        Some((n, rest)) => {
                            (n, rest.trim().trim_start_matches('(').trim_end_matches(')'))
                        }
                        None => (v, ""),
                    };
                    p.source_name = name.into();
                    p.source_version = ver.into();
                }
                _ => {}
            }
        },
        &mut || {
            let (mut p, installed) = cur.replace((new(), true));
            if installed && !p.name.is_empty() && !p.version.is_empty() {
                if p.source_name == p.name {
                    p.source_name.clear();
                }
                if p.source_version == p.version {
                    p.source_version.clear();
                }
                out.borrow_mut().push(p);
            }
        },
    )?;
    Ok(out.into_inner())
}

/// [`read_dpkg_status`] of a text.
pub fn parse_dpkg_status(text: &str) -> Vec<InventoryPackage> {
    read_dpkg_status(text.as_bytes()).unwrap_or_default()
}

/// Packages of apk's installed database read from `r` (`P:` name, `V:` version, `A:` arch,
/// `o:` origin).
pub fn read_apk_installed<R: BufRead>(r: R) -> io::Result<Vec<InventoryPackage>> {
    let new = || InventoryPackage {
        kind: "apk".into(),
        ..Default::default()
    };
    let out = RefCell::new(Vec::new());
    let cur = RefCell::new(new());
    stanzas(
        r,
        &mut |line| {
            let Some((k, v)) = line.split_once(':') else {
                return;
            };
            let p = &mut *cur.borrow_mut();
            match k {
                "P" => p.name = v.into(),
                "V" => p.version = v.into(),
                "A" => p.arch = v.into(),
                "o" => p.source_name = v.into(),
                _ => {}
            }
        },
        &mut || {
            let mut p = cur.replace(new());
            if !p.name.is_empty() && !p.version.is_empty() {
                if p.source_name == p.name {
                    p.source_name.clear();
                }
                out.borrow_mut().push(p);
            }
        },
    )?;
    Ok(out.into_inner())
}

/// [`read_apk_installed`] of a text.
pub fn parse_apk_installed(text: &str) -> Vec<InventoryPackage> {
    read_apk_installed(text.as_bytes()).unwrap_or_default()
}

/// Reads the package database `rel` with `parse`, at most [`MAX_DB_BYTES`] of it, streamed.
fn read_db(
    fs: &FsRoot,
    rel: &Path,
    what: &str,
    parse: fn(BufReader<io::Take<std::fs::File>>) -> io::Result<Vec<InventoryPackage>>,
    notes: &mut Vec<String>,
) -> Vec<InventoryPackage> {
    match fs
        .open(rel)
        .and_then(|f| parse(BufReader::new(f.take(MAX_DB_BYTES))))
    {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            notes.push(format!("{what}: {e}"));
            Vec::new()
        }
    }
}

/// Every OS package of the image, and notes about databases that could not be read.
pub fn read(fs: &FsRoot, notes: &mut Vec<String>) -> Vec<InventoryPackage> {
    let mut out = read_db(
        fs,
        Path::new("var/lib/dpkg/status"),
        "dpkg",
        read_dpkg_status,
        notes,
    );
    // Distroless: one status file per package.
    let dir = Path::new("var/lib/dpkg/status.d");
    for name in fs.list(dir, 10_000) {
        if name.ends_with(".md5sums") {
            continue;
        }
        out.extend(read_db(
            fs,
            &dir.join(&name),
            "dpkg",
            read_dpkg_status,
            notes,
        ));
    }
    out.extend(read_db(
        fs,
        Path::new("lib/apk/db/installed"),
        "apk",
        read_apk_installed,
        notes,
    ));
    out.extend(super::rpmdb::read(fs, notes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_stanzas() {
        let text = "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.11-1~deb12u2\nDescription: x\n multi line\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libpython3.11\nStatus: install ok installed\nSource: python3.11 (3.11.2-6)\nVersion: 3.11.2-6+b1\n";
        let p = parse_dpkg_status(text);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (
                p[0].name.as_str(),
                p[0].source_name.as_str(),
                p[0].version.as_str()
            ),
            ("libssl3", "openssl", "3.0.11-1~deb12u2")
        );
        assert_eq!(p[0].source_version, "");
        assert_eq!(
            (p[1].source_name.as_str(), p[1].source_version.as_str()),
            ("python3.11", "3.11.2-6")
        );
    }

    #[test]
    fn apk_stanzas() {
        let text = "C:Q1abc=\nP:libcrypto3\nV:3.1.4-r0\nA:x86_64\no:openssl\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\no:busybox\n";
        let p = parse_apk_installed(text);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].source_name.as_str()),
            ("libcrypto3", "openssl")
        );
        assert_eq!(p[1].source_name, "");
    }
}
