//! Language packages: Python distributions (`*.dist-info/METADATA`, `*.egg-info/PKG-INFO` in
//! `site-packages`/`dist-packages`) and Node packages (`node_modules/**/package.json`), found by
//! bounded walks of the places images put them.

use std::path::{Path, PathBuf};

use defender_proto::v1::InventoryPackage;

use super::fsroot::{Budget, FsRoot, find_dirs};

/// Where language packages are looked for (walks start here).
const SEARCH_ROOTS: &[&str] = &[
    "usr/lib",
    "usr/local/lib",
    "usr/share",
    "opt",
    "app",
    "srv",
    "home",
    "root",
    "var/www",
    "workspace",
];
/// Largest METADATA/PKG-INFO/package.json read.
const MAX_META_BYTES: u64 = 512 * 1024;
/// Deepest `node_modules` nesting followed.
const MAX_NODE_DEPTH: usize = 8;

/// Name and version from the RFC 822 header of a Python core-metadata file.
pub fn parse_python_metadata(text: &str) -> Option<(String, String)> {
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Name:") {
            name.get_or_insert_with(|| v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version.get_or_insert_with(|| v.trim().to_string());
        }
    }
    Some((
        name.filter(|n| !n.is_empty())?,
        version.filter(|v| !v.is_empty())?,
    ))
}

/// Python distributions under every site-packages/dist-packages found.
pub fn python(fs: &FsRoot, budget: &mut Budget) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for start in SEARCH_ROOTS {
        dirs.extend(find_dirs(fs, Path::new(start), 6, budget, &|n| {
            n == "site-packages" || n == "dist-packages"
        }));
    }
    for dir in dirs {
        for entry in fs.list(&dir, 20_000) {
            let meta = if entry.ends_with(".dist-info") {
                dir.join(&entry).join("METADATA")
            } else if entry.ends_with(".egg-info") {
                // An egg-info is a directory with PKG-INFO, or (distutils) a file itself.
                let p = dir.join(&entry);
                if fs.is_dir(&p) { p.join("PKG-INFO") } else { p }
            } else {
                continue;
            };
            let Ok(bytes) = fs.read(&meta, MAX_META_BYTES) else {
                continue;
            };
            if let Some((name, version)) = parse_python_metadata(&String::from_utf8_lossy(&bytes)) {
                out.push(InventoryPackage {
                    kind: "python".into(),
                    name,
                    version,
                    path: format!("/{}", meta.display()),
                    ..Default::default()
                });
            }
        }
    }
    out
}

/// `name` and `version` of a package.json.
pub fn parse_package_json(bytes: &[u8]) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let version = v.get("version")?.as_str()?.to_string();
    (!name.is_empty() && !version.is_empty()).then_some((name, version))
}

/// Node packages in every node_modules found (nested ones and `@scope/` ones included).
pub fn node(fs: &FsRoot, budget: &mut Budget) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    let mut queue: Vec<(PathBuf, usize)> = Vec::new();
    for start in SEARCH_ROOTS {
        for d in find_dirs(fs, Path::new(start), 5, budget, &|n| n == "node_modules") {
            queue.push((d, 0));
        }
    }
    while let Some((nm, depth)) = queue.pop() {
        for entry in fs.list(&nm, 20_000) {
            if !budget.take() {
                return out;
            }
            let mut pkgs = Vec::new();
            if entry.starts_with('@') {
                for sub in fs.list(&nm.join(&entry), 5_000) {
                    pkgs.push(nm.join(&entry).join(sub));
                }
            } else if !entry.starts_with('.') {
                pkgs.push(nm.join(&entry));
            }
            for pkg in pkgs {
                let pj = pkg.join("package.json");
                if let Ok(bytes) = fs.read(&pj, MAX_META_BYTES)
                    && let Some((name, version)) = parse_package_json(&bytes)
                {
                    out.push(InventoryPackage {
                        kind: "npm".into(),
                        name,
                        version,
                        path: format!("/{}", pj.display()),
                        ..Default::default()
                    });
                }
                let nested = pkg.join("node_modules");
                if depth < MAX_NODE_DEPTH && fs.is_dir(&nested) {
                    queue.push((nested, depth + 1));
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
    fn python_metadata_header_only() {
        let m =
            "Metadata-Version: 2.1\nName: Jinja2\nVersion: 3.1.2\nSummary: x\n\nName: not-this\n";
        assert_eq!(
            parse_python_metadata(m),
            Some(("Jinja2".into(), "3.1.2".into()))
        );
        assert_eq!(parse_python_metadata("Name: x\n"), None);
    }

    #[test]
    fn package_json() {
        assert_eq!(
            parse_package_json(br#"{"name":"lodash","version":"4.17.20","main":"x"}"#),
            Some(("lodash".into(), "4.17.20".into()))
        );
        assert_eq!(parse_package_json(br#"{"name":"x"}"#), None);
        assert_eq!(parse_package_json(b"not json"), None);
    }
}
