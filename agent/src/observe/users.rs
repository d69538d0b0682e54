//! uid → user name from `passwd` files.
//!
//! The `defender` binary is statically linked, so NSS (`getpwuid`) is not available: the file is
//! parsed directly. A process's name is looked up in the passwd file of *its* root file system
//! (`/proc/<pid>/root/etc/passwd`), so the name is the one inside that container.
//!
//! Files read here live in the application's file system and are attacker-controlled: reads are
//! bounded ([`MAX_PASSWD_BYTES`]), opened non-blocking and only if they are regular files (a FIFO
//! named `/etc/passwd` must not hang the observer), and the container's `/etc/passwd` is resolved
//! with `openat2(RESOLVE_IN_ROOT)` so its symlinks are followed inside the container, never into
//! the Defender's own file system.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest passwd file read, in bytes; the rest of a longer file is ignored.
pub const MAX_PASSWD_BYTES: u64 = 1024 * 1024;

/// Passwd files whose parsed contents [`UserNames`] keeps.
const CACHED_FILES: usize = 8;

/// Name of `uid` in the passwd file at `passwd_path` (first matching line wins, as in glibc);
/// `None` when the file is unreadable or has no valid line for `uid`.
pub fn user_name(uid: u32, passwd_path: &Path) -> Option<String> {
    let file = open_regular(passwd_path).ok()?;
    let reader = BufReader::new(file.take(MAX_PASSWD_BYTES));
    reader
        .split(b'\n')
        .map_while(Result::ok)
        .find_map(|line| parse_line(&line).filter(|(u, _)| *u == uid).map(|(_, n)| n))
}

/// Parses one passwd line `name:password:uid:gid[:gecos:home:shell]` into (uid, name); `None` for
/// comments, NIS `+`/`-` entries, and lines with an empty name or a non-numeric uid.
pub fn parse_line(line: &[u8]) -> Option<(u32, String)> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut fields = line.split(|b| *b == b':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let uid = fields.next()?;
    let _gid = fields.next()?;
    if name.is_empty()
        || matches!(name[0], b'#' | b'+' | b'-')
        || name.iter().any(u8::is_ascii_whitespace)
    {
        return None;
    }
    if uid.is_empty() || !uid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let uid = std::str::from_utf8(uid).ok()?.parse::<u32>().ok()?;
    Some((uid, String::from_utf8_lossy(name).into_owned()))
}

/// Parses a whole passwd file into uid → name (first line per uid wins).
fn parse_file(file: File) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in BufReader::new(file.take(MAX_PASSWD_BYTES))
        .split(b'\n')
        .map_while(Result::ok)
    {
        if let Some((uid, name)) = parse_line(&line) {
            map.entry(uid).or_insert(name);
        }
    }
    map
}

/// Identity of one version of a file: (device, inode, mtime seconds, mtime nanoseconds, size).
type FileKey = (u64, u64, i64, i64, u64);

fn file_key(file: &File) -> io::Result<FileKey> {
    let m = file.metadata()?;
    Ok((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// Cached uid → name lookups over several passwd files (one per container root), keyed by the
/// file's identity so an edited file is re-read and a file shared by many processes is parsed once.
#[derive(Debug)]
pub struct UserNames {
    fallback: PathBuf,
    files: HashMap<FileKey, HashMap<u32, String>>,
    order: VecDeque<FileKey>,
    parses: u64,
}

impl UserNames {
    /// A cache that falls back to `fallback` (normally `/etc/passwd`) when a process's own root
    /// has no readable passwd file.
    pub fn new(fallback: PathBuf) -> Self {
        Self {
            fallback,
            files: HashMap::new(),
            order: VecDeque::new(),
            parses: 0,
        }
    }

    /// Name of `uid` for a process whose root directory is `root` (e.g. `/proc/<pid>/root`):
    /// looked up in `<root>/etc/passwd`, or in the fallback file when that one cannot be read.
    pub fn lookup(&mut self, uid: u32, root: &Path) -> Option<String> {
        let file = match open_in_root(root, Path::new("etc/passwd")) {
            Ok(f) => f,
            Err(_) => open_regular(&self.fallback).ok()?,
        };
        let key = file_key(&file).ok()?;
        if !self.files.contains_key(&key) {
            if self.order.len() >= CACHED_FILES
                && let Some(old) = self.order.pop_front()
            {
                self.files.remove(&old);
            }
            self.files.insert(key, parse_file(file));
            self.order.push_back(key);
            self.parses += 1;
        }
        self.files.get(&key)?.get(&uid).cloned()
    }

    /// How many times a passwd file was parsed (cache misses).
    pub fn parses(&self) -> u64 {
        self.parses
    }
}

/// Opens `path` read-only and non-blocking, refusing anything but a regular file.
fn open_regular(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    check_regular(file)
}

fn check_regular(file: File) -> io::Result<File> {
    if file.metadata()?.file_type().is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    }
}

/// Argument of `openat2(2)` (`struct open_how`).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Opens `rel` inside the directory tree `root` as if `root` were `/` (symlinks, `..` and absolute
/// targets stay inside it), read-only, non-blocking, regular files only. Where `openat2` is
/// unavailable (kernels before 5.6, older seccomp profiles) this is a plain open of `root/rel`.
pub(crate) fn open_in_root(root: &Path, rel: &Path) -> io::Result<File> {
    let dir = File::open(root)?;
    let c_rel = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `dir` is an open directory, `c_rel` a NUL-terminated string and `how` a properly
    // laid out `struct open_how` whose size is passed; the kernel only reads them.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c_rel.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        // ENOSYS: kernel before 5.6; EPERM: a seccomp profile that predates openat2.
        if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
            return open_regular(&root.join(rel));
        }
        return Err(err);
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    check_regular(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # a comment:x:5:5::/:/bin/sh\n\
        garbage\n\
        bad:x:notanumber:1::/:/bin/sh\n\
        :x:7:7::/:/bin/sh\n\
        +nis:x:8:8::/:/bin/sh\n\
        short:x:9\n\
        daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\r\n\
        app:x:1000:1000::/home/app:/bin/sh\n\
        dup:x:1000:1000::/home/dup:/bin/sh\n\
        nonl:x:4294967295:1::/:/bin/sh";

    #[test]
    fn parses_lines_and_ignores_malformed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, PASSWD).unwrap();
        assert_eq!(user_name(0, &p).as_deref(), Some("root"));
        assert_eq!(user_name(1, &p).as_deref(), Some("daemon"));
        assert_eq!(
            user_name(1000, &p).as_deref(),
            Some("app"),
            "first line wins"
        );
        assert_eq!(user_name(u32::MAX, &p).as_deref(), Some("nonl"));
        for uid in [5, 7, 8, 9, 4242] {
            assert_eq!(user_name(uid, &p), None, "uid {uid}");
        }
        assert_eq!(user_name(0, &dir.path().join("missing")), None);
        assert_eq!(parse_line(b"a b:x:3:3::/:/bin/sh"), None);
        assert_eq!(parse_line(b"x:x:-3:3::/:/bin/sh"), None);
    }

    #[test]
    fn cache_reads_the_container_file_then_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "inside:x:1000:1000::/:/bin/sh\n").unwrap();
        let fallback = dir.path().join("fallback");
        std::fs::write(&fallback, "outside:x:1000:1000::/:/bin/sh\n").unwrap();
        let mut names = UserNames::new(fallback);
        assert_eq!(names.lookup(1000, &root).as_deref(), Some("inside"));
        assert_eq!(names.lookup(1000, &root).as_deref(), Some("inside"));
        assert_eq!(names.parses(), 1, "second lookup is cached");
        assert_eq!(names.lookup(1, &root), None);
        // No passwd in this root: the fallback file answers.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert_eq!(names.lookup(1000, &empty).as_deref(), Some("outside"));
    }

    #[test]
    fn container_symlinks_resolve_inside_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        std::fs::write(root.join("real/passwd"), "contained:x:5:5::/:/bin/sh\n").unwrap();
        // An absolute target: must mean <root>/real/passwd, not the Defender's /real/passwd.
        std::os::unix::fs::symlink("/real/passwd", root.join("etc/passwd")).unwrap();
        let mut names = UserNames::new(dir.path().join("none"));
        assert_eq!(names.lookup(5, &root).as_deref(), Some("contained"));
    }

    #[test]
    fn a_fifo_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let fifo = CString::new(root.join("etc/passwd").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(user_name(0, &root.join("etc/passwd")), None);
        let mut names = UserNames::new(dir.path().join("none"));
        assert_eq!(names.lookup(0, &root), None);
    }
}
