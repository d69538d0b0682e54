//! SHA-256 of the executables processes run, computed once per binary.
//!
//! The file is read through `/proc/<pid>/exe`, which opens the very inode the process executes,
//! even when its path was since deleted or replaced. Results are cached by the opened file's
//! (device, inode, mtime, size), so a binary that hundreds of processes run is hashed once, and a
//! binary rewritten in place (new mtime or size) is hashed again.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Default number of cached hashes; the oldest is evicted beyond it.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Default largest executable hashed, in bytes; larger ones get no hash.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Identity of one version of a file: (device, inode, mtime seconds, mtime nanoseconds, size).
type FileKey = (u64, u64, i64, i64, u64);

/// Hashes executables with SHA-256, caching results by file identity (bounded, oldest evicted).
#[derive(Debug)]
pub struct ExeHasher {
    cache: HashMap<FileKey, String>,
    order: VecDeque<FileKey>,
    capacity: usize,
    max_file_bytes: u64,
    computed: u64,
    buf: Vec<u8>,
}

impl ExeHasher {
    /// A hasher with the default cache size and file-size cap.
    pub fn new() -> Self {
        Self::with_limits(DEFAULT_CACHE_ENTRIES, DEFAULT_MAX_FILE_BYTES)
    }

    /// A hasher keeping at most `capacity` hashes and skipping files over `max_file_bytes`.
    pub fn with_limits(capacity: usize, max_file_bytes: u64) -> Self {
        Self {
            cache: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            max_file_bytes,
            computed: 0,
            buf: Vec::new(),
        }
    }

    /// Lowercase hex SHA-256 of the executable of `pid` (read via `<proc_root>/<pid>/exe`); `None`
    /// when it cannot be opened or read, is not a regular file, or is larger than the cap.
    pub fn hash(&mut self, pid: u32, proc_root: &Path) -> Option<String> {
        let mut path = PathBuf::from(proc_root);
        path.push(pid.to_string());
        path.push("exe");
        self.hash_path(&path)
    }

    /// Like [`ExeHasher::hash`] for any path (followed if it is a symlink).
    pub fn hash_path(&mut self, path: &Path) -> Option<String> {
        let mut file = open_nonblocking(path)?;
        let meta = file.metadata().ok()?;
        if !meta.file_type().is_file() || meta.size() > self.max_file_bytes {
            return None;
        }
        let key = (
            meta.dev(),
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.size(),
        );
        if let Some(hex) = self.cache.get(&key) {
            return Some(hex.clone());
        }
        let hex = self.digest(&mut file)?;
        // Cache only if the file did not change while it was read.
        let after = file.metadata().ok()?;
        let key_after = (
            after.dev(),
            after.ino(),
            after.mtime(),
            after.mtime_nsec(),
            after.size(),
        );
        if key_after == key {
            if self.order.len() >= self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.cache.remove(&old);
            }
            self.cache.insert(key, hex.clone());
            self.order.push_back(key);
        }
        Some(hex)
    }

    /// Number of hashes actually computed (cache misses) since creation.
    pub fn hashes_computed(&self) -> u64 {
        self.computed
    }

    fn digest(&mut self, file: &mut File) -> Option<String> {
        self.buf.resize(64 * 1024, 0);
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut total = 0u64;
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return None,
            };
            total += n as u64;
            if total > self.max_file_bytes {
                return None;
            }
            ctx.update(&self.buf[..n]);
        }
        self.computed += 1;
        Some(hex(ctx.finish().as_ref()))
    }
}

impl Default for ExeHasher {
    fn default() -> Self {
        Self::new()
    }
}

fn open_nonblocking(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking so a FIFO can never stall the observer; regular files ignore the flag.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn sha256_hex(data: &[u8]) -> String {
        hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
    }

    #[test]
    fn known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_once_per_file_version() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::write(&bin, b"first version").unwrap();
        // A fake proc root whose <pid>/exe points at the file.
        std::fs::create_dir_all(dir.path().join("proc/42")).unwrap();
        std::os::unix::fs::symlink(&bin, dir.path().join("proc/42/exe")).unwrap();
        let proc_root = dir.path().join("proc");

        let mut h = ExeHasher::new();
        assert_eq!(h.hash(42, &proc_root), Some(sha256_hex(b"first version")));
        assert_eq!(h.hashes_computed(), 1);
        assert_eq!(h.hash(42, &proc_root), Some(sha256_hex(b"first version")));
        assert_eq!(h.hashes_computed(), 1, "cached");

        std::fs::write(&bin, b"second version!").unwrap();
        // Make sure the mtime differs even on coarse-timestamp file systems.
        let f = File::options().write(true).open(&bin).unwrap();
        f.set_modified(SystemTime::now() + Duration::from_secs(10))
            .unwrap();
        assert_eq!(h.hash(42, &proc_root), Some(sha256_hex(b"second version!")));
        assert_eq!(h.hashes_computed(), 2, "modified file is rehashed");

        assert_eq!(h.hash(43, &proc_root), None, "no such pid");
    }

    #[test]
    fn hashes_the_running_executable_of_a_real_process() {
        let me = std::fs::read("/proc/self/exe").unwrap();
        let mut h = ExeHasher::new();
        let got = h.hash(std::process::id(), Path::new("/proc"));
        assert_eq!(got, Some(sha256_hex(&me)));
    }

    #[test]
    fn skips_large_files_and_evicts_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![0u8; 2048]).unwrap();
        let mut h = ExeHasher::with_limits(2, 1024);
        assert_eq!(h.hash_path(&big), None);
        assert_eq!(h.hashes_computed(), 0);

        let files: Vec<PathBuf> = (0..3)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, format!("file {i}")).unwrap();
                p
            })
            .collect();
        for p in &files {
            assert!(h.hash_path(p).is_some());
        }
        assert_eq!(h.hashes_computed(), 3);
        assert_eq!(h.cache.len(), 2);
        h.hash_path(&files[2]);
        assert_eq!(h.hashes_computed(), 3, "newest still cached");
        h.hash_path(&files[0]);
        assert_eq!(h.hashes_computed(), 4, "oldest was evicted");
    }
}
