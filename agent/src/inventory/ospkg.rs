//! OS package databases: dpkg (`/var/lib/dpkg/status`, and distroless's
//! `/var/lib/dpkg/status.d/*`), apk (`/lib/apk/db/installed`), and rpm (the SQLite rpmdb, read
//! by [`super::rpmdb`]; older rpmdb forms are reported as unsupported in a note).

use std::path::Path;

use defender_proto::v1::InventoryPackage;

use super::fsroot::FsRoot;

/// Largest package database read, in bytes.
pub const MAX_DB_BYTES: u64 = 64 * 1024 * 1024;

/// Packages of a dpkg status file (deb-control(5) stanzas); only `install ok installed`
/// packages count. `Source: name (version)` gives the source package and, when it differs,
/// its version.
pub fn parse_dpkg_status(text: &str) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut p = InventoryPackage {
            kind: "deb".into(),
            ..Default::default()
        };
        let mut installed = true;
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k {
                "Package" => p.name = v.into(),
                "Version" => p.version = v.into(),
                "Architecture" => p.arch = v.into(),
                "Status" => installed = v.ends_with(" installed") && !v.contains("not-installed"),
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
        }
        if installed && !p.name.is_empty() && !p.version.is_empty() {
            if p.source_name == p.name {
                p.source_name.clear();
            }
            if p.source_version == p.version {
                p.source_version.clear();
            }
            out.push(p);
        }
    }
    out
}

/// Packages of apk's installed database (`P:` name, `V:` version, `A:` arch, `o:` origin).
pub fn parse_apk_installed(text: &str) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut p = InventoryPackage {
            kind: "apk".into(),
            ..Default::default()
        };
        for line in stanza.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            match k {
                "P" => p.name = v.into(),
                "V" => p.version = v.into(),
                "A" => p.arch = v.into(),
                "o" => p.source_name = v.into(),
                _ => {}
            }
        }
        if !p.name.is_empty() && !p.version.is_empty() {
            if p.source_name == p.name {
                p.source_name.clear();
            }
            out.push(p);
        }
    }
    out
}

/// Every OS package of the image, and notes about databases that could not be read.
pub fn read(fs: &FsRoot, notes: &mut Vec<String>) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    match fs.read(Path::new("var/lib/dpkg/status"), MAX_DB_BYTES) {
        Ok(b) => out.extend(parse_dpkg_status(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => notes.push(format!("dpkg: {e}")),
        Err(_) => {}
    }
    // Distroless: one status file per package.
    let dir = Path::new("var/lib/dpkg/status.d");
    for name in fs.list(dir, 10_000) {
        if name.ends_with(".md5sums") {
            continue;
        }
        if let Ok(b) = fs.read(&dir.join(&name), 1024 * 1024) {
            out.extend(parse_dpkg_status(&String::from_utf8_lossy(&b)));
        }
    }
    match fs.read(Path::new("lib/apk/db/installed"), MAX_DB_BYTES) {
        Ok(b) => out.extend(parse_apk_installed(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => notes.push(format!("apk: {e}")),
        Err(_) => {}
    }
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
