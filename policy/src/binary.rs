//! First-seen identities of executables, so the Defender can tell a process started from a
//! binary modified after the container started (the `modified_binary` check).

use std::collections::HashMap;

/// Default number of executable paths a [`BinaryTracker`] remembers.
pub const DEFAULT_TRACKED_BINARIES: usize = 4096;

/// What identifies one version of an executable file (from `stat` of `/proc/<pid>/exe`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryIdentity {
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub inode: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, nanoseconds since the epoch (0 when unknown); `touch` cannot fake it.
    pub ctime_ns: i64,
    /// Hex SHA-256 of the content, empty when not computed.
    pub sha256: String,
}

impl BinaryIdentity {
    /// The identity of a file from its metadata (no hash).
    #[cfg(unix)]
    pub fn from_metadata(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Self {
            dev: m.dev(),
            inode: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
            sha256: String::new(),
        }
    }

    /// Whether `self` and `other` are the same version of the file: equal hashes when both
    /// have one, else equal device, inode, size, mtime and ctime.
    pub fn same_version(&self, other: &BinaryIdentity) -> bool {
        if !self.sha256.is_empty() && !other.sha256.is_empty() {
            return self.sha256.eq_ignore_ascii_case(&other.sha256);
        }
        (
            self.dev,
            self.inode,
            self.size,
            self.mtime_ns,
            self.ctime_ns,
        ) == (
            other.dev,
            other.inode,
            other.size,
            other.mtime_ns,
            other.ctime_ns,
        )
    }
}

/// Remembers the identity each executable path had the first time a process ran it in one
/// container, and reports later runs of a different version.
///
/// Bounded: once `capacity` paths are remembered, new paths are not (the ones seen first, the
/// application's own, stay protected; [`untracked`](Self::untracked) counts the misses).
/// A first-seen identity is never replaced, so every run of a modified binary is reported.
#[derive(Debug, Clone)]
pub struct BinaryTracker {
    first_seen: HashMap<Vec<u8>, BinaryIdentity>,
    capacity: usize,
    container_start_ns: Option<i64>,
    untracked: u64,
}

impl Default for BinaryTracker {
    fn default() -> Self {
        Self::new(DEFAULT_TRACKED_BINARIES)
    }
}

impl BinaryTracker {
    /// A tracker remembering at most `capacity` paths.
    pub fn new(capacity: usize) -> Self {
        Self {
            first_seen: HashMap::new(),
            capacity,
            container_start_ns: None,
            untracked: 0,
        }
    }

    /// Also reports binaries whose ctime is later than `start_ms` (unix ms), i.e. written or
    /// changed after the container started, even the first time they run (a dropped payload).
    pub fn with_container_start(mut self, start_ms: i64) -> Self {
        self.container_start_ns = Some(start_ms.saturating_mul(1_000_000));
        self
    }

    /// Records a run of the executable at `path`; true when the binary was modified after the
    /// container started (differs from its first-seen version, or is newer than the start).
    pub fn record(&mut self, path: &[u8], identity: &BinaryIdentity) -> bool {
        let path = path.strip_suffix(b" (deleted)").unwrap_or(path);
        let newer_than_start = self
            .container_start_ns
            .is_some_and(|start| identity.ctime_ns > 0 && identity.ctime_ns > start);
        match self.first_seen.get(path) {
            Some(first) => newer_than_start || !first.same_version(identity),
            None => {
                if self.first_seen.len() < self.capacity {
                    self.first_seen.insert(path.to_vec(), identity.clone());
                } else {
                    self.untracked = self.untracked.saturating_add(1);
                }
                newer_than_start
            }
        }
    }

    /// Number of paths remembered.
    pub fn len(&self) -> usize {
        self.first_seen.len()
    }

    /// Whether no path is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.first_seen.is_empty()
    }

    /// Whether the tracker is full (new paths are no longer remembered).
    pub fn is_full(&self) -> bool {
        self.first_seen.len() >= self.capacity
    }

    /// Runs of paths that could not be remembered because the tracker was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(inode: u64, mtime_ns: i64) -> BinaryIdentity {
        BinaryIdentity {
            dev: 1,
            inode,
            size: 100,
            mtime_ns,
            ctime_ns: mtime_ns,
            sha256: String::new(),
        }
    }

    #[test]
    fn first_sight_is_not_a_change_and_a_new_version_is() {
        let mut t = BinaryTracker::default();
        assert!(!t.record(b"/usr/bin/app", &id(7, 10)));
        assert!(!t.record(b"/usr/bin/app", &id(7, 10)));
        assert!(t.record(b"/usr/bin/app", &id(8, 20)));
        // Still reported: the first-seen version is kept.
        assert!(t.record(b"/usr/bin/app", &id(8, 20)));
        assert!(!t.record(b"/usr/bin/other", &id(8, 20)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn hashes_decide_when_both_known() {
        let mut t = BinaryTracker::default();
        let a = BinaryIdentity {
            sha256: "AB".into(),
            ..id(1, 1)
        };
        assert!(!t.record(b"/bin/x", &a));
        // chmod changed ctime, content is the same.
        let b = BinaryIdentity {
            sha256: "ab".into(),
            ctime_ns: 99,
            ..id(1, 1)
        };
        assert!(!t.record(b"/bin/x", &b));
        let c = BinaryIdentity {
            sha256: "cd".into(),
            ..id(1, 1)
        };
        assert!(t.record(b"/bin/x", &c));
    }

    #[test]
    fn deleted_suffix_is_the_same_path() {
        let mut t = BinaryTracker::default();
        assert!(!t.record(b"/app/run", &id(1, 1)));
        assert!(t.record(b"/app/run (deleted)", &id(2, 2)));
    }

    #[test]
    fn bounded() {
        let mut t = BinaryTracker::new(2);
        assert!(!t.record(b"/a", &id(1, 1)));
        assert!(!t.record(b"/b", &id(1, 1)));
        assert!(t.is_full());
        assert!(!t.record(b"/c", &id(1, 1)));
        assert!(!t.record(b"/c", &id(2, 2)));
        assert_eq!((t.len(), t.untracked()), (2, 2));
        // Early paths stay protected.
        assert!(t.record(b"/a", &id(2, 2)));
    }

    #[test]
    fn written_after_container_start() {
        let start_ms = 1_000;
        let mut t = BinaryTracker::default().with_container_start(start_ms);
        assert!(!t.record(b"/usr/bin/app", &id(1, 500 * 1_000_000)));
        assert!(t.record(b"/tmp/payload", &id(2, 2_000 * 1_000_000)));
        assert!(!t.record(b"/unknown-ctime", &id(3, 0)));
    }

    #[cfg(unix)]
    #[test]
    fn from_metadata_reads_stat() {
        let m = std::fs::metadata("/").unwrap();
        let i = BinaryIdentity::from_metadata(&m);
        assert!(i.inode > 0 && i.ctime_ns > 0);
    }
}
