//! Java: Maven coordinates from `META-INF/maven/<group>/<artifact>/pom.properties` inside JAR,
//! WAR and EAR archives found in the usual places (bounded walk, symlinks not followed). Only the
//! zip central directory and those small entries are read. Archives nested inside archives
//! (Spring Boot's `BOOT-INF/lib/*.jar`) are not opened.

use std::io::Read;
use std::path::{Path, PathBuf};

use defender_proto::v1::InventoryPackage;

use super::fsroot::{Budget, FsRoot};

/// Where archives are looked for.
const SEARCH_ROOTS: &[&str] = &[
    "usr/share/java",
    "usr/local",
    "opt",
    "app",
    "srv",
    "home",
    "root",
    "usr/lib/jvm",
    "var/lib/jetty",
    "deployments",
];
/// Largest archive opened.
const MAX_ARCHIVE_BYTES: u64 = 1 << 30;
/// Most entries an archive may have to be read.
const MAX_ENTRIES: usize = 200_000;
/// Largest pom.properties read.
const MAX_PROPERTIES_BYTES: u64 = 64 * 1024;
/// Deepest directory level walked.
const MAX_DEPTH: usize = 8;

/// `groupId`, `artifactId` and `version` of a pom.properties file.
pub fn parse_pom_properties(text: &str) -> Option<(String, String, String)> {
    let get = |k: &str| {
        text.lines().find_map(|l| {
            let (key, v) = l.split_once('=')?;
            (key.trim() == k).then(|| v.trim().to_string())
        })
    };
    let (g, a, v) = (get("groupId")?, get("artifactId")?, get("version")?);
    (!g.is_empty() && !a.is_empty() && !v.is_empty()).then_some((g, a, v))
}

/// The Maven packages inside one archive.
pub fn archive_packages(fs: &FsRoot, rel: &Path) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    let Ok(file) = fs.open(rel) else { return out };
    if file
        .metadata()
        .map_or(true, |m| m.len() > MAX_ARCHIVE_BYTES)
    {
        return out;
    }
    let Ok(mut zip) = zip::ZipArchive::new(std::io::BufReader::new(file)) else {
        return out;
    };
    if zip.len() > MAX_ENTRIES {
        return out;
    }
    let names: Vec<String> = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .filter(|n| n.starts_with("META-INF/maven/") && n.ends_with("/pom.properties"))
        .collect();
    for name in names {
        let Ok(entry) = zip.by_name(&name) else {
            continue;
        };
        let mut text = String::new();
        if entry
            .take(MAX_PROPERTIES_BYTES)
            .read_to_string(&mut text)
            .is_err()
        {
            continue;
        }
        if let Some((g, a, v)) = parse_pom_properties(&text) {
            out.push(InventoryPackage {
                kind: "java".into(),
                name: format!("{g}:{a}"),
                version: v,
                path: format!("/{}", rel.display()),
                ..Default::default()
            });
        }
    }
    out
}

/// Maven packages of every archive found.
pub fn read(fs: &FsRoot, budget: &mut Budget) -> Vec<InventoryPackage> {
    let mut out = Vec::new();
    for start in SEARCH_ROOTS {
        let mut level: Vec<(PathBuf, usize)> = vec![(PathBuf::from(start), 0)];
        while let Some((dir, depth)) = level.pop() {
            for name in fs.list(&dir, 20_000) {
                if !budget.take() {
                    return out;
                }
                let rel = dir.join(&name);
                let Ok(m) = fs.lstat(&rel) else { continue };
                if m.is_dir() && depth < MAX_DEPTH && !name.starts_with('.') {
                    level.push((rel, depth + 1));
                } else if m.is_file() && [".jar", ".war", ".ear"].iter().any(|e| name.ends_with(e))
                {
                    out.extend(archive_packages(fs, &rel));
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.name, &a.version, &a.path).cmp(&(&b.name, &b.version, &b.path)));
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version && a.path == b.path);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn pom_properties() {
        let t = "#Created by Apache Maven\nartifactId=log4j-core\ngroupId=org.apache.logging.log4j\nversion=2.14.1\n";
        assert_eq!(
            super::parse_pom_properties(t),
            Some((
                "org.apache.logging.log4j".into(),
                "log4j-core".into(),
                "2.14.1".into()
            ))
        );
        assert_eq!(super::parse_pom_properties("groupId=x\n"), None);
    }
}
