//! Dependencies compiled into executables: Go's build info (the `.go.buildinfo` ELF section,
//! Go ≥ 1.18 inline format: main module and `dep` lines with versions) and cargo-auditable's
//! `.dep-v0` section (zlib-compressed JSON of the crates built in). Only ELF section headers and
//! those sections are read, never whole binaries.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use defender_proto::v1::InventoryPackage;

use super::fsroot::{Budget, FsRoot};

/// Directories whose executables are inspected.
const BINARY_DIRS: &[&str] = &[
    "usr/local/bin",
    "usr/bin",
    "bin",
    "usr/local/sbin",
    "usr/sbin",
    "sbin",
    "app",
    "opt",
    "srv",
    "ko-app",
];
/// Largest section read.
const MAX_SECTION_BYTES: u64 = 4 * 1024 * 1024;
/// Largest decompressed cargo-auditable document.
const MAX_AUDIT_JSON_BYTES: usize = 8 * 1024 * 1024;
/// Go build info header magic.
const GO_MAGIC: &[u8] = b"\xff Go buildinf:";

fn u16le(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32le(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64le(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// The named sections of a 64-bit little-endian ELF file (`None` for anything else).
pub fn elf_sections(file: &mut File, wanted: &[&str]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut hdr = [0u8; 64];
    file.read_exact(&mut hdr).ok()?;
    if &hdr[..4] != b"\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
        return None;
    }
    let shoff = u64le(&hdr, 0x28)?;
    let shentsize = u64::from(u16le(&hdr, 0x3A)?);
    let shnum = u64::from(u16le(&hdr, 0x3C)?);
    let shstrndx = u64::from(u16le(&hdr, 0x3E)?);
    if shentsize < 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return None;
    }
    let mut table = vec![0u8; usize::try_from(shentsize * shnum).ok()?];
    file.seek(SeekFrom::Start(shoff)).ok()?;
    file.read_exact(&mut table).ok()?;
    let entry = |i: u64| -> Option<(u32, u64, u64)> {
        let o = usize::try_from(i * shentsize).ok()?;
        Some((
            u32le(&table, o)?,
            u64le(&table, o + 24)?,
            u64le(&table, o + 32)?,
        ))
    };
    let read_at = |file: &mut File, off: u64, size: u64| -> Option<Vec<u8>> {
        if size > MAX_SECTION_BYTES {
            return None;
        }
        let mut buf = vec![0u8; usize::try_from(size).ok()?];
        file.seek(SeekFrom::Start(off)).ok()?;
        file.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    let (_, stroff, strsize) = entry(shstrndx)?;
    let strtab = read_at(file, stroff, strsize)?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let Some((name_off, off, size)) = entry(i) else {
            continue;
        };
        let Some(rest) = strtab.get(name_off as usize..) else {
            continue;
        };
        let name = rest.split(|b| *b == 0).next().unwrap_or(&[]);
        let name = String::from_utf8_lossy(name).to_string();
        if wanted.contains(&name.as_str())
            && let Some(data) = read_at(file, off, size)
        {
            out.push((name, data));
        }
    }
    Some(out)
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((x, i + 1));
        }
    }
    None
}

/// Go version and module info from a `.go.buildinfo` section (inline-string format of
/// Go ≥ 1.18; older binaries give `None`).
pub fn parse_go_buildinfo(sec: &[u8]) -> Option<(String, String)> {
    if sec.get(..14)? != GO_MAGIC || sec.get(15)? & 2 == 0 {
        return None;
    }
    let mut rest = sec.get(32..)?;
    let mut strings = Vec::new();
    for _ in 0..2 {
        let (n, used) = uvarint(rest)?;
        let n = usize::try_from(n).ok()?;
        let s = rest.get(used..used + n)?;
        strings.push(String::from_utf8_lossy(s).to_string());
        rest = &rest[used + n..];
    }
    let mut modinfo = strings.pop()?;
    let version = strings.pop()?;
    // The module info is framed by 16-byte sentinels.
    if modinfo.len() >= 33 {
        modinfo = modinfo
            .get(16..modinfo.len() - 16)
            .unwrap_or("")
            .to_string();
    }
    Some((version, modinfo))
}

/// Packages of a Go binary: the toolchain (`stdlib`), the main module and every `dep`
/// (replacements `=>` replace the preceding dep's version).
pub fn go_packages(version: &str, modinfo: &str, path: &str) -> Vec<InventoryPackage> {
    let pkg = |name: &str, v: &str| InventoryPackage {
        kind: "go".into(),
        name: name.into(),
        version: v.into(),
        path: path.into(),
        ..Default::default()
    };
    let mut out = vec![pkg("stdlib", version.trim_start_matches("go"))];
    for line in modinfo.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f.as_slice() {
            ["mod", name, v, ..] | ["dep", name, v, ..] if *v != "(devel)" => {
                out.push(pkg(name, v))
            }
            ["=>", name, v, ..] => {
                if let Some(last) = out.last_mut() {
                    last.name = (*name).to_string();
                    last.version = (*v).to_string();
                }
            }
            _ => {}
        }
    }
    out
}

/// Crates of a cargo-auditable `.dep-v0` section (runtime crates from crates.io).
pub fn auditable_packages(sec: &[u8], path: &str) -> Vec<InventoryPackage> {
    let Ok(json) =
        miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(sec, MAX_AUDIT_JSON_BYTES)
    else {
        return Vec::new();
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in doc
        .get("packages")
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
    {
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
        if s("source") == "crates.io" && s("kind") != "build" {
            out.push(InventoryPackage {
                kind: "cargo".into(),
                name: s("name").into(),
                version: s("version").into(),
                path: path.into(),
                ..Default::default()
            });
        }
    }
    out
}

/// Go and Rust dependencies of the executables in the usual binary directories.
pub fn read(fs: &FsRoot, budget: &mut Budget) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    for dir in BINARY_DIRS {
        let dir = Path::new(dir);
        for name in fs.list(dir, 20_000) {
            if !budget.take() {
                return out;
            }
            let rel = dir.join(&name);
            let Ok(meta) = fs.lstat(&rel) else { continue };
            use std::os::unix::fs::PermissionsExt;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 || meta.len() < 64 {
                continue;
            }
            let Ok(mut file) = fs.open(&rel) else {
                continue;
            };
            let Some(sections) = elf_sections(&mut file, &[".go.buildinfo", ".dep-v0"]) else {
                continue;
            };
            let shown = format!("/{}", rel.display());
            for (sec, data) in sections {
                if sec == ".go.buildinfo" {
                    if let Some((v, m)) = parse_go_buildinfo(&data) {
                        out.extend(go_packages(&v, &m, &shown));
                    }
                } else {
                    out.extend(auditable_packages(&data, &shown));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_modinfo_lines() {
        let m = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/net\tv0.17.0\th1:x\ndep\tgithub.com/a/b\tv1.0.0\th1:y\n=>\tgithub.com/c/b\tv1.0.1\th1:z\n";
        let p = go_packages("go1.21.5", m, "/app");
        let names: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("stdlib", "1.21.5"),
                ("golang.org/x/net", "v0.17.0"),
                ("github.com/c/b", "v1.0.1")
            ]
        );
    }

    #[test]
    fn varints() {
        assert_eq!(uvarint(&[0x05]), Some((5, 1)));
        assert_eq!(uvarint(&[0xAC, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80; 11]), None);
    }
}
