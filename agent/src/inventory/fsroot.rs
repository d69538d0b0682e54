//! Reading an application container's file system from the Defender: bounded reads of regular
//! files opened with `openat2(RESOLVE_IN_ROOT)` (symlinks stay inside the container's root, so a
//! hostile image cannot make the sidecar read its own files), and bounded directory walks that
//! never follow symlinks.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::observe::users::open_in_root;

/// A container's root directory (`/` in the wrapper, `/proc/<pid>/root` in the sidecar).
#[derive(Clone, Debug)]
pub struct FsRoot {
    pub root: PathBuf,
}

impl FsRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Opens `rel` (relative to the root, with or without a leading `/`) as a regular file.
    pub fn open(&self, rel: &Path) -> io::Result<File> {
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        open_in_root(&self.root, rel)
    }

    /// Reads at most `limit` bytes of `rel`.
    pub fn read(&self, rel: &Path, limit: u64) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open(rel)?.take(limit).read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// The path of `rel` under the root, for listing directories and `lstat`.
    pub fn host_path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// `lstat` of `rel` (symlinks are not followed).
    pub fn lstat(&self, rel: &Path) -> io::Result<std::fs::Metadata> {
        std::fs::symlink_metadata(self.host_path(rel))
    }

    /// Names in directory `rel` (not following a symlinked `rel`), at most `limit`.
    pub fn list(&self, rel: &Path, limit: usize) -> Vec<String> {
        let path = self.host_path(rel);
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return Vec::new();
        }
        let Ok(rd) = std::fs::read_dir(&path) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(|e| e.ok())
            .take(limit)
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// True when `rel` is a real directory (not a symlink to one).
    pub fn is_dir(&self, rel: &Path) -> bool {
        self.lstat(rel).is_ok_and(|m| m.is_dir())
    }
}

/// A budget of directory entries a walk may visit, shared by every walk of one inventory.
pub struct Budget {
    pub entries: usize,
}

impl Budget {
    /// Takes one entry; false when the budget is spent.
    pub fn take(&mut self) -> bool {
        if self.entries == 0 {
            return false;
        }
        self.entries -= 1;
        true
    }
}

/// Directories below `start` (itself included) whose name satisfies `wanted`, found by a
/// breadth-first walk to `max_depth` that does not follow symlinks and stops when `budget` is
/// spent. Wanted directories are not descended into.
pub fn find_dirs(
    fs: &FsRoot,
    start: &Path,
    max_depth: usize,
    budget: &mut Budget,
    wanted: &dyn Fn(&str) -> bool,
) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut level = vec![start.to_path_buf()];
    for depth in 0..=max_depth {
        let mut next = Vec::new();
        for dir in level {
            if !fs.is_dir(&dir) {
                continue;
            }
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if wanted(name) {
                found.push(dir);
                continue;
            }
            if depth == max_depth {
                continue;
            }
            for child in fs.list(&dir, 10_000) {
                if !budget.take() {
                    return found;
                }
                if child.starts_with('.') && child != ".venv" {
                    continue;
                }
                next.push(dir.join(child));
            }
        }
        level = next;
    }
    found
}
