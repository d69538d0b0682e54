//! Reading what a trapped syscall points at, in the application's memory and file table:
//! `process_vm_readv(2)` for strings, argv arrays and socket addresses, `pidfd_getfd(2)` to look
//! at the socket a `connect`/`bind`/`listen` is about (its type and local address). Both need
//! ptrace-level access to the target (PTRACE_MODE_ATTACH_REALCREDS), which the Defender has over
//! its own descendants.
//!
//! Everything read here can change after it was read (another thread of the application may
//! rewrite the buffer): the supervisor re-checks `SECCOMP_IOCTL_NOTIF_ID_VALID` after reading,
//! and verifies after an exec that the program running is the one judged.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

use super::decode::{self, Addr};

/// Page size used to split string reads (reads never cross into a page that may be unmapped).
const PAGE: u64 = 4096;

/// Reads up to `len` bytes at `addr` of `pid`; may return fewer at the end of a mapping.
pub fn read_bytes(pid: u32, addr: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    let pid_t =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: `local` points into `buf`, valid for `len` bytes; the remote range is only read
    // by the kernel, which checks it against the target's mappings.
    let n = unsafe { libc::process_vm_readv(pid_t, &local, 1, &remote, 1, 0) };
    if n >= 0 {
        buf.truncate(usize::try_from(n).unwrap_or(0));
        return Ok(buf);
    }
    let err = io::Error::last_os_error();
    if matches!(err.raw_os_error(), Some(libc::EFAULT | libc::ESRCH)) {
        return Err(err);
    }
    // Without process_vm_readv (old kernels, or a container seccomp profile that refuses it
    // without CAP_SYS_PTRACE): /proc/<pid>/mem, same access check in the kernel.
    let file = File::open(format!("/proc/{pid}/mem"))?;
    let n = file.read_at(&mut buf, addr)?;
    buf.truncate(n);
    Ok(buf)
}

/// Reads a NUL-terminated string of at most `max` bytes; `true` when it was longer (cut).
pub fn read_cstring(pid: u32, addr: u64, max: usize) -> io::Result<(Vec<u8>, bool)> {
    if addr == 0 {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() <= max {
        let to_page_end = PAGE - (at % PAGE);
        let want = usize::try_from(to_page_end)
            .unwrap_or(4096)
            .min(max + 1 - out.len());
        let chunk = read_bytes(pid, at, want)?;
        if chunk.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        }
        if let Some(nul) = chunk.iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..nul]);
            return Ok(cut(out, max));
        }
        out.extend_from_slice(&chunk);
        at += chunk.len() as u64;
    }
    Ok(cut(out, max))
}

fn cut(mut s: Vec<u8>, max: usize) -> (Vec<u8>, bool) {
    if s.len() > max {
        s.truncate(max);
        (s, true)
    } else {
        (s, false)
    }
}

/// Reads a NULL-terminated array of pointers (`argv`) of `ptr_size`-byte pointers and the
/// strings it points to, keeping at most `max_bytes` of arguments plus separators (the same
/// bound as `/proc/<pid>/cmdline` observation). Returns the arguments and whether any were cut.
pub fn read_argv(pid: u32, addr: u64, ptr_size: usize, max_bytes: usize) -> (Vec<Vec<u8>>, bool) {
    let mut args = Vec::new();
    if addr == 0 {
        return (args, false);
    }
    let mut used = 0usize;
    let mut at = addr;
    loop {
        // Read pointers a chunk at a time (at most to the end of the page).
        let to_page_end = usize::try_from(PAGE - (at % PAGE)).unwrap_or(ptr_size);
        let want = (to_page_end / ptr_size).clamp(1, 64) * ptr_size;
        let Ok(raw) = read_bytes(pid, at, want) else {
            return (args, true);
        };
        if raw.len() < ptr_size {
            return (args, true);
        }
        for p in raw.chunks_exact(ptr_size) {
            let ptr = match ptr_size {
                4 => u64::from(u32::from_ne_bytes([p[0], p[1], p[2], p[3]])),
                _ => u64::from_ne_bytes([p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]]),
            };
            if ptr == 0 {
                return (args, false);
            }
            let room = max_bytes.saturating_sub(used + usize::from(!args.is_empty()));
            if room == 0 {
                return (args, true);
            }
            match read_cstring(pid, ptr, room) {
                Ok((s, cut)) => {
                    used += s.len() + usize::from(!args.is_empty());
                    args.push(s);
                    if cut {
                        return (args, true);
                    }
                }
                Err(_) => return (args, true),
            }
        }
        at += (raw.len() - raw.len() % ptr_size) as u64;
    }
}

/// Reads a `struct sockaddr` of `len` bytes at `addr`.
pub fn read_sockaddr(pid: u32, addr: u64, len: u64) -> Addr {
    let len = usize::try_from(len).unwrap_or(0).min(decode::MAX_SOCKADDR);
    if addr == 0 || len < 2 {
        return Addr::Invalid;
    }
    match read_bytes(pid, addr, len) {
        Ok(buf) => decode::sockaddr(&buf),
        Err(_) => Addr::Invalid,
    }
}

/// What the Defender can learn about a socket of the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketInfo {
    /// `SOCK_STREAM`, `SOCK_DGRAM`, …
    pub sotype: i32,
    /// The bound local address, if any.
    pub local: Option<SocketAddr>,
}

/// A pidfd of process `pid` (`pidfd_open`, Linux ≥ 5.3). Without `PIDFD_THREAD` the kernel
/// refuses (EINVAL) a thread that does not lead its thread group, so success also says that
/// `pid` is a process id, not another thread's id.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::c_long::from(pid), 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd is a descriptor we own from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(pidfd as i32) })
}

/// A duplicate of file descriptor `fd` of `pid` (`pidfd_open` + `pidfd_getfd`, Linux ≥ 5.6).
pub fn dup_fd(pid: u32, fd: u64) -> io::Result<OwnedFd> {
    let fd = libc::c_long::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    let pidfd = pidfd_open(pid)?;
    // SAFETY: pidfd_getfd takes descriptors and flags and returns a new descriptor or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a new descriptor owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

/// Type and local address of socket `fd` of `pid`; `None` when it is not a socket or cannot be
/// looked at.
pub fn socket_info(pid: u32, fd: u64) -> Option<SocketInfo> {
    let sock = dup_fd(pid, fd).ok()?;
    let mut sotype: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `sotype`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut sotype as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut storage = [0u8; decode::MAX_SOCKADDR];
    let mut slen = storage.len() as libc::socklen_t;
    // SAFETY: getsockname writes at most `slen` bytes into `storage`.
    let rc = unsafe { libc::getsockname(sock.as_raw_fd(), storage.as_mut_ptr().cast(), &mut slen) };
    let local = if rc == 0 {
        match decode::sockaddr(&storage[..usize::try_from(slen).unwrap_or(0).min(storage.len())]) {
            Addr::Ip(a) => Some(a),
            _ => None,
        }
    } else {
        None
    };
    Some(SocketInfo { sotype, local })
}

/// Process id (thread group id: `pid` may be a thread's), parent pid, real uid and effective
/// uid from `/proc/<pid>/status`.
pub fn ids(pid: u32) -> Option<(u32, u32, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut tgid = None;
    let mut ppid = None;
    let mut uids = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Tgid:") {
            tgid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            let mut it = v.split_whitespace().filter_map(|x| x.parse::<u32>().ok());
            uids = Some((it.next()?, it.next()?));
        }
    }
    let (uid, euid) = uids?;
    Some((tgid?, ppid?, uid, euid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_strings_and_argv() {
        let me = std::process::id();
        let s = b"hello\0world\0";
        let (got, cut) = read_cstring(me, s.as_ptr() as u64, 100).unwrap();
        assert_eq!((got.as_slice(), cut), (&b"hello"[..], false));
        let (got, cut) = read_cstring(me, s.as_ptr() as u64, 3).unwrap();
        assert_eq!((got.as_slice(), cut), (&b"hel"[..], true));
        let a = b"sh\0";
        let b = b"-c\0";
        let ptrs: [u64; 3] = [a.as_ptr() as u64, b.as_ptr() as u64, 0];
        let (args, cut) = read_argv(me, ptrs.as_ptr() as u64, 8, 1000);
        assert_eq!(args, vec![b"sh".to_vec(), b"-c".to_vec()]);
        assert!(!cut);
        let (args, cut) = read_argv(me, ptrs.as_ptr() as u64, 8, 4);
        assert_eq!(args, vec![b"sh".to_vec(), b"-".to_vec()]);
        assert!(cut);
        assert!(read_cstring(me, 0, 10).is_err());
    }

    #[test]
    fn looks_at_own_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let info = socket_info(std::process::id(), l.as_raw_fd() as u64).unwrap();
        assert_eq!(info.sotype, libc::SOCK_STREAM);
        assert_eq!(info.local, Some(l.local_addr().unwrap()));
        let (tgid, ppid, uid, euid) = ids(std::process::id()).unwrap();
        assert_eq!(tgid, std::process::id());
        // SAFETY: getppid/getuid/geteuid have no preconditions.
        assert_eq!(ppid, unsafe { libc::getppid() } as u32);
        assert_eq!((uid, euid), unsafe { (libc::getuid(), libc::geteuid()) });
    }
}
