//! The Defender's side of exact capture: receives the seccomp listener from the application's
//! first process, then answers every trapped syscall (seccomp_unotify(2)):
//! `SECCOMP_IOCTL_NOTIF_RECV` → read the arguments out of the process → check that the request
//! is still pending (`SECCOMP_IOCTL_NOTIF_ID_VALID`, so the pid read from was not reused) → judge
//! with the runtime policy → `SECCOMP_IOCTL_NOTIF_SEND` with `SECCOMP_USER_NOTIF_FLAG_CONTINUE`
//! or `-EPERM` → report the event (after answering: spooling never delays the application).
//!
//! A watchdog thread answers "continue" for any request the handler has held longer than
//! [`super::ANSWER_DEADLINE`], and keeps answering while the handler stays stuck: a stalled or
//! crashed handler never hangs the application (counted as `timed_out`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender_proto::MAX_ARGV_BYTES;
use defender_proto::v1::{
    Direction, DnsQuery, Event, NetworkConnection, NetworkListen, ProcessStart, Protocol,
    RuntimeAudit, event,
};

use super::decode::{self, Addr};
use super::install::{self, Received};
use super::remote;
use super::{ANSWER_DEADLINE, Announce, Shared};
use crate::observe::exehash::ExeHasher;
use crate::observe::users::UserNames;
use crate::supervise::Exited;

/// Longest exec path read (PATH_MAX).
const MAX_PATH: usize = 4096;
/// Most bytes of a UDP payload read to find a DNS question (RFC 1035: 512 on UDP without EDNS).
const MAX_DNS_READ: usize = 512;
/// Most messages of one `sendmmsg` looked at.
const MAX_MMSG: u64 = 16;
/// How long after an allowed exec the running executable is checked against the judged file.
const VERIFY_WINDOW: Duration = Duration::from_millis(500);
/// UDP destinations remembered per (process, address), so a datagram stream is reported once.
const MAX_UDP_SEEN: usize = 4096;
/// Bound of the canonical-path cache.
const MAX_CACHED: usize = 4096;
/// Fault injection for tests (documented in the README's test notes): an exec whose path
/// contains this value makes the handler stall, as a hung Defender would.
const STALL_ENV: &str = "DEFENDER_CAPTURE_STALL_ON";

#[cfg(target_arch = "x86_64")]
const NATIVE_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "x86_64")]
const COMPAT_ARCH: u32 = 0x4000_0003; // AUDIT_ARCH_I386
#[cfg(target_arch = "x86_64")]
const COMPAT_EXEC: (i32, i32) = (11, 358);
#[cfg(target_arch = "aarch64")]
const NATIVE_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
#[cfg(target_arch = "aarch64")]
const COMPAT_ARCH: u32 = 0x4000_0028; // AUDIT_ARCH_ARM
#[cfg(target_arch = "aarch64")]
const COMPAT_EXEC: (i32, i32) = (11, 387);
/// x32 ABI (x86_64 only): syscall numbers with bit 30 set; execve 520, execveat 545.
const X32_BIT: i32 = 0x4000_0000;
const X32_EXEC: (i32, i32) = (520, 545);

/// Starts the capture thread: it waits for the child's report on `sock`, then serves.
pub(crate) fn spawn(sock: UnixStream, shared: Arc<Shared>) -> Result<(), String> {
    std::thread::Builder::new()
        .name("capture".into())
        .spawn(move || match install::receive(sock.as_raw_fd()) {
            Received::Listener(fd) => {
                shared.state.set_mode(true, "");
                tracing::info!("exact capture in force (seccomp user notification)");
                serve(fd, shared);
            }
            Received::Failed(step, err) => {
                let why = format!("exact capture unavailable ({step}: {err}); polling");
                tracing::warn!("{why}");
                shared.state.set_mode(false, why);
            }
            Received::Nothing => {
                shared.state.set_mode(
                    false,
                    "the application started without exact capture; polling",
                );
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the capture thread: {e}"))
}

/// What the watchdog watches: the request the handler holds, and since when.
#[derive(Default)]
struct Watch {
    in_flight: Mutex<Option<(u64, Instant)>>,
    stop: AtomicBool,
}

/// The verdict sent to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Continue,
    Refuse,
}

/// What to do after answering.
#[derive(Default)]
struct After {
    event: Option<Event>,
    audits: Vec<RuntimeAudit>,
    announce: Option<Announce>,
    verify: Option<Verify>,
    exit: Option<Exited>,
}

/// An allowed exec whose result is checked: the process must end up running `expected`.
struct Verify {
    pid: u32,
    expected: (u64, u64),
    old: Option<(u64, u64)>,
    exe: Vec<u8>,
    until: Instant,
}

fn serve(listener: OwnedFd, shared: Arc<Shared>) {
    let listener = Arc::new(listener);
    let fd = listener.as_raw_fd();
    // Linux ≥ 6.6: wake the application on the CPU that answered (cheaper round trips).
    // SAFETY: ioctl on our listener with an integer flag argument.
    let _ = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _, 1u64) };
    let watch = Arc::new(Watch::default());
    {
        let (listener, watch, shared) = (listener.clone(), watch.clone(), shared.clone());
        let _ = std::thread::Builder::new()
            .name("capture-watchdog".into())
            .spawn(move || watchdog(&listener, &watch, &shared));
    }
    let mut h = Handler::new(shared);
    loop {
        let timeout = if h.verify.is_empty() { 1000 } else { 20 };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        h.verify_pending();
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
            && pfd.revents & libc::POLLIN == 0
        {
            break; // no process uses the filter any more: the application is gone
        }
        if pfd.revents & libc::POLLIN == 0 {
            continue;
        }
        let Some(req) = recv(fd) else { continue };
        h.shared.state.count_intercepted();
        *watch.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = Some((req.id, Instant::now()));
        let (answer, after) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.handle(fd, &req)))
                .unwrap_or_else(|_| {
                    tracing::error!("capture handler panicked; the syscall is let through");
                    (Answer::Continue, After::default())
                });
        respond(fd, req.id, answer);
        *watch.in_flight.lock().unwrap_or_else(|e| e.into_inner()) = None;
        h.after(after);
    }
    watch.stop.store(true, Ordering::Relaxed);
    tracing::debug!("exact capture ended: no process of the application is left");
}

fn recv(fd: RawFd) -> Option<libc::seccomp_notif> {
    // SAFETY: the kernel requires a zeroed structure, which is a valid value.
    let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: RECV writes one seccomp_notif into `req`.
    let rc = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV as _, &mut req) };
    (rc == 0).then_some(req)
}

fn respond(fd: RawFd, id: u64, answer: Answer) -> bool {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: match answer {
            Answer::Continue => 0,
            Answer::Refuse => -libc::EPERM,
        },
        flags: match answer {
            Answer::Continue => libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
            Answer::Refuse => 0,
        },
    };
    // SAFETY: SEND reads one seccomp_notif_resp.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND as _, &resp) == 0 }
}

/// Whether request `id` is still pending (its process alive and still in the syscall).
fn still_pending(fd: RawFd, id: u64) -> bool {
    // SAFETY: ID_VALID reads one u64.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _, &id) == 0 }
}

fn watchdog(listener: &OwnedFd, watch: &Watch, shared: &Shared) {
    let fd = listener.as_raw_fd();
    let mut warned = false;
    while !watch.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        let stuck = watch
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(|(_, since)| since.elapsed() > ANSWER_DEADLINE);
        let Some((stuck_id, _)) = stuck else { continue };
        if !warned {
            tracing::error!(
                "the capture handler did not answer within {ANSWER_DEADLINE:?}: letting the \
                 application's syscalls through unjudged until it recovers"
            );
            warned = true;
        }
        if respond(fd, stuck_id, Answer::Continue) {
            shared.state.count_timed_out();
        }
        // While the handler stays stuck on that request, answer everything else too.
        while !watch.stop.load(Ordering::Relaxed)
            && watch
                .in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|(id, _)| id == stuck_id)
        {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 50) } > 0
                && pfd.revents & libc::POLLIN != 0
                && let Some(req) = recv(fd)
                && respond(fd, req.id, Answer::Continue)
            {
                shared.state.count_timed_out();
            }
        }
    }
}

/// Per-thread state of the handler.
struct Handler {
    shared: Arc<Shared>,
    hasher: ExeHasher,
    users: UserNames,
    boot_ms: i64,
    clk_tck: u64,
    verify: Vec<Verify>,
    udp_seen: HashMap<(u32, SocketAddr), bool>,
    /// `realpath` of an exec'd path and whether it is a script, by (root, path, file):
    /// `canonicalize` walks every component with `lstat`/`readlink`, the largest cost on the
    /// exec path. A changed symlink, another root or a changed file misses.
    canonical: HashMap<CanonKey, (Vec<u8>, bool)>,
    stall_on: Option<Vec<u8>>,
}

/// What a cached canonical path depends on.
#[derive(PartialEq, Eq, Hash)]
struct CanonKey {
    /// The process's root directory (device, inode).
    root: (u64, u64),
    /// The path the exec asked for.
    path: Vec<u8>,
    /// The file (device, inode, change time s and ns): a rewritten script misses.
    file: (u64, u64, i64, i64),
}

impl Handler {
    fn new(shared: Arc<Shared>) -> Self {
        // SAFETY: sysconf has no preconditions.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        Self {
            shared,
            hasher: ExeHasher::new(),
            users: UserNames::new(PathBuf::from("/etc/passwd")),
            boot_ms: boot_ms().unwrap_or(0),
            clk_tck: u64::try_from(tck).ok().filter(|t| *t > 0).unwrap_or(100),
            verify: Vec::new(),
            udp_seen: HashMap::new(),
            canonical: HashMap::new(),
            stall_on: std::env::var_os(STALL_ENV)
                .filter(|v| !v.is_empty())
                .map(OsString::into_vec),
        }
    }

    fn handle(&mut self, fd: RawFd, req: &libc::seccomp_notif) -> (Answer, After) {
        let nr = req.data.nr;
        let a = req.data.args;
        let arch = req.data.arch;
        if arch != NATIVE_ARCH || nr & X32_BIT != 0 {
            // 32-bit programs: only their execs are decoded (pointers are 4 bytes).
            let exec = if arch == COMPAT_ARCH {
                (nr == COMPAT_EXEC.0)
                    .then_some(false)
                    .or((nr == COMPAT_EXEC.1).then_some(true))
            } else if arch == NATIVE_ARCH && cfg!(target_arch = "x86_64") {
                let n = nr & !X32_BIT;
                (n == X32_EXEC.0)
                    .then_some(false)
                    .or((n == X32_EXEC.1).then_some(true))
            } else {
                None
            };
            return match exec {
                Some(false) => self.exec(fd, req, None, a[0], a[1], 0, 4),
                Some(true) => self.exec(fd, req, Some(a[0]), a[1], a[2], a[4], 4),
                None => (Answer::Continue, After::default()),
            };
        }
        match i64::from(nr) {
            libc::SYS_execve => self.exec(fd, req, None, a[0], a[1], 0, 8),
            libc::SYS_execveat => self.exec(fd, req, Some(a[0]), a[1], a[2], a[4], 8),
            libc::SYS_connect => self.connect(fd, req),
            libc::SYS_bind => self.bind(fd, req),
            libc::SYS_listen => self.listen(fd, req),
            libc::SYS_sendto => self.sendto(fd, req),
            libc::SYS_sendmmsg => self.sendmmsg(fd, req),
            libc::SYS_exit_group => self.exit_group(req),
            _ => (Answer::Continue, After::default()),
        }
    }

    fn event(&self, kind: event::Kind) -> Event {
        Event {
            seq: 0,
            time_ms: crate::unix_ms(),
            container: self
                .shared
                .container
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            kind: Some(kind),
        }
    }

    /// Judges `event` with the policy in force (none yet while starting: allowed, and judged
    /// after the fact when the Defender attaches).
    fn judge(&self, event: &Event, meta: Option<&std::fs::Metadata>) -> (Vec<RuntimeAudit>, bool) {
        match self.shared.enforcer() {
            Some(e) => e.judge(event, meta),
            None => (Vec::new(), false),
        }
    }

    /// Judges a network event, marks it blocked when prevented, and builds the answer and the
    /// report. Returns whether it was prevented.
    fn decide(&self, mut kind: event::Kind) -> (Answer, After, bool) {
        let (audits, prevent) = self.judge(&self.event(kind.clone()), None);
        match &mut kind {
            event::Kind::NetworkConnection(c) => c.blocked = prevent,
            event::Kind::NetworkListen(l) => l.blocked = prevent,
            _ => {}
        }
        let after = After {
            event: Some(self.event(kind)),
            audits,
            ..After::default()
        };
        let answer = if prevent {
            Answer::Refuse
        } else {
            Answer::Continue
        };
        (answer, after, prevent)
    }

    #[allow(clippy::too_many_arguments)]
    fn exec(
        &mut self,
        fd: RawFd,
        req: &libc::seccomp_notif,
        dirfd: Option<u64>,
        path_ptr: u64,
        argv_ptr: u64,
        flags: u64,
        ptr_size: usize,
    ) -> (Answer, After) {
        let tid = req.pid;
        let Ok((path, _)) = remote::read_cstring(tid, path_ptr, MAX_PATH) else {
            return (Answer::Continue, After::default());
        };
        let (argv, argv_truncated) = remote::read_argv(tid, argv_ptr, ptr_size, MAX_ARGV_BYTES);
        let file = resolve(tid, dirfd, &path, flags);
        let Ok(meta) = std::fs::metadata(&file) else {
            // The kernel will fail this exec on its own (no such file, no access).
            return (Answer::Continue, After::default());
        };
        let (exe, script) = self.canonicalize(tid, &path, &file, &meta);
        let Some((tgid, ppid, uid, euid)) = remote::ids(tid) else {
            return (Answer::Continue, After::default());
        };
        let cwd = std::fs::read_link(format!("/proc/{tgid}/cwd"))
            .map(|p| p.into_os_string().into_vec())
            .unwrap_or_default();
        let start_ticks = start_ticks(tgid).unwrap_or(0);
        let exe_sha256 = self.hasher.hash_path(&file).unwrap_or_default();
        let user = self
            .users
            .lookup(uid, &PathBuf::from(format!("/proc/{tgid}/root")))
            .unwrap_or_default();
        if !still_pending(fd, req.id) {
            return (Answer::Continue, After::default());
        }
        if let Some(marker) = &self.stall_on
            && path.windows(marker.len()).any(|w| w == marker.as_slice())
        {
            // Fault injection (tests only): behave like a hung handler.
            std::thread::sleep(Duration::from_secs(30));
        }
        let start_ms = u64::try_from(self.boot_ms).unwrap_or(0)
            + start_ticks.saturating_mul(1000) / self.clk_tck;
        let mut ps = ProcessStart {
            pid: tgid,
            ppid,
            exe: exe.clone(),
            argv,
            argv_truncated,
            uid,
            user,
            cwd,
            start_time_ms: i64::try_from(start_ms).unwrap_or(0),
            exe_sha256,
            euid,
            exec_path: path,
            forked: false,
            intercepted: true,
            blocked: false,
        };
        let probe = self.event(event::Kind::ProcessStart(ps.clone()));
        let (audits, prevent) = self.judge(&probe, Some(&meta));
        if prevent {
            ps.blocked = true;
            let after = After {
                event: Some(self.event(event::Kind::ProcessStart(ps))),
                audits,
                ..After::default()
            };
            return (Answer::Refuse, after);
        }
        let verify = (!script).then(|| Verify {
            pid: tgid,
            expected: (meta.dev(), meta.ino()),
            old: std::fs::metadata(format!("/proc/{tgid}/exe"))
                .ok()
                .map(|m| (m.dev(), m.ino())),
            exe,
            until: Instant::now() + VERIFY_WINDOW,
        });
        let after = After {
            event: Some(probe),
            audits,
            announce: Some(Announce {
                pid: tgid,
                ppid,
                start_ticks,
            }),
            verify,
            exit: None,
        };
        (Answer::Continue, after)
    }

    /// The canonical path of `file` (the exec'd `path` seen through `/proc/<tid>/…`) and whether
    /// it is a `#!` script, cached by the identity of the process's root and of the file
    /// (device, inode, change time).
    fn canonicalize(
        &mut self,
        tid: u32,
        path: &[u8],
        file: &std::path::Path,
        meta: &std::fs::Metadata,
    ) -> (Vec<u8>, bool) {
        let root = std::fs::metadata(format!("/proc/{tid}/root")).ok();
        let key = root.map(|r| CanonKey {
            root: (r.dev(), r.ino()),
            path: path.to_vec(),
            file: (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec()),
        });
        if let Some(hit) = key.as_ref().and_then(|k| self.canonical.get(k)) {
            return hit.clone();
        }
        let exe = std::fs::canonicalize(file)
            .map(|p| p.into_os_string().into_vec())
            .unwrap_or_else(|_| path.to_vec());
        let resolved = (exe, is_script(file));
        if let Some(key) = key {
            if self.canonical.len() >= MAX_CACHED {
                self.canonical.clear();
            }
            self.canonical.insert(key, resolved.clone());
        }
        resolved
    }

    fn connect(&mut self, fd: RawFd, req: &libc::seccomp_notif) -> (Answer, After) {
        let a = req.data.args;
        let Addr::Ip(remote) = remote::read_sockaddr(req.pid, a[1], a[2]) else {
            return (Answer::Continue, After::default());
        };
        let info = remote::socket_info(req.pid, a[0]);
        let protocol = protocol_of(info);
        if protocol == Protocol::Udp && remote.port() == 53 {
            // A resolver's socket: the query itself is reported when it is sent.
            return (Answer::Continue, After::default());
        }
        let Some(tgid) = remote::ids(req.pid).map(|i| i.0) else {
            return (Answer::Continue, After::default());
        };
        if protocol == Protocol::Udp
            && let Some(prevent) = self.udp_seen.get(&(tgid, remote))
        {
            let answer = if *prevent {
                Answer::Refuse
            } else {
                Answer::Continue
            };
            return (answer, After::default());
        }
        if !still_pending(fd, req.id) {
            return (Answer::Continue, After::default());
        }
        let local = info.and_then(|i| i.local).filter(|l| l.port() != 0);
        let conn = NetworkConnection {
            protocol: protocol as i32,
            direction: Direction::Outbound as i32,
            local_addr: local.map(|l| l.ip().to_string()).unwrap_or_default(),
            local_port: local.map_or(0, |l| u32::from(l.port())),
            remote_addr: remote.ip().to_string(),
            remote_port: u32::from(remote.port()),
            pid: tgid,
            closed: false,
            blocked: false,
        };
        let (answer, after, prevent) = self.decide(event::Kind::NetworkConnection(conn));
        if protocol == Protocol::Udp {
            self.remember_udp(tgid, remote, prevent);
        }
        (answer, after)
    }

    fn remember_udp(&mut self, pid: u32, remote: SocketAddr, prevent: bool) {
        if self.udp_seen.len() >= MAX_UDP_SEEN {
            self.udp_seen.clear();
        }
        self.udp_seen.insert((pid, remote), prevent);
    }

    fn bind(&mut self, fd: RawFd, req: &libc::seccomp_notif) -> (Answer, After) {
        let a = req.data.args;
        let Addr::Ip(local) = remote::read_sockaddr(req.pid, a[1], a[2]) else {
            return (Answer::Continue, After::default());
        };
        if local.port() == 0 {
            return (Answer::Continue, After::default());
        }
        // TCP sockets are reported when they listen; a UDP socket bound to a port serves it.
        if protocol_of(remote::socket_info(req.pid, a[0])) != Protocol::Udp {
            return (Answer::Continue, After::default());
        }
        self.listening(fd, req, Protocol::Udp, local)
    }

    fn listen(&mut self, fd: RawFd, req: &libc::seccomp_notif) -> (Answer, After) {
        let info = remote::socket_info(req.pid, req.data.args[0]);
        let Some(local) = info.and_then(|i| i.local) else {
            return (Answer::Continue, After::default());
        };
        self.listening(fd, req, Protocol::Tcp, local)
    }

    fn listening(
        &mut self,
        fd: RawFd,
        req: &libc::seccomp_notif,
        protocol: Protocol,
        local: SocketAddr,
    ) -> (Answer, After) {
        let Some(tgid) = remote::ids(req.pid).map(|i| i.0) else {
            return (Answer::Continue, After::default());
        };
        if !still_pending(fd, req.id) {
            return (Answer::Continue, After::default());
        }
        let listen = NetworkListen {
            protocol: protocol as i32,
            local_addr: local.ip().to_string(),
            local_port: u32::from(local.port()),
            pid: tgid,
            closed: false,
            pids: vec![tgid],
            blocked: false,
        };
        let (answer, after, _) = self.decide(event::Kind::NetworkListen(listen));
        (answer, after)
    }

    fn sendto(&mut self, fd: RawFd, req: &libc::seccomp_notif) -> (Answer, After) {
        let a = req.data.args;
        let Addr::Ip(dest) = remote::read_sockaddr(req.pid, a[4], a[5]) else {
            return (Answer::Continue, After::default());
        };
        if dest.port() == 53 {
            let len = usize::try_from(a[2]).unwrap_or(0).min(MAX_DNS_READ);
            let packet = remote::read_bytes(req.pid, a[1], len).unwrap_or_default();
            return self.dns(fd, req, dest, &[packet]);
        }
        // Another UDP destination: reported (and judged) once per process and address.
        let Some(tgid) = remote::ids(req.pid).map(|i| i.0) else {
            return (Answer::Continue, After::default());
        };
        if let Some(prevent) = self.udp_seen.get(&(tgid, dest)) {
            let answer = if *prevent {
                Answer::Refuse
            } else {
                Answer::Continue
            };
            return (answer, After::default());
        }
        if !still_pending(fd, req.id) {
            return (Answer::Continue, After::default());
        }
        let conn = NetworkConnection {
            protocol: Protocol::Udp as i32,
            direction: Direction::Outbound as i32,
            local_addr: String::new(),
            local_port: 0,
            remote_addr: dest.ip().to_string(),
            remote_port: u32::from(dest.port()),
            pid: tgid,
            closed: false,
            blocked: false,
        };
        let (answer, after, prevent) = self.decide(event::Kind::NetworkConnection(conn));
        self.remember_udp(tgid, dest, prevent);
        (answer, after)
    }

    fn sendmmsg(&mut self, fd: RawFd, req: &libc::seccomp_notif) -> (Answer, After) {
        let a = req.data.args;
        let count = a[2].min(MAX_MMSG);
        // struct mmsghdr on 64-bit: msghdr (56 bytes) + unsigned int + padding = 64 bytes.
        let Ok(raw) = remote::read_bytes(req.pid, a[1], usize::try_from(count).unwrap_or(0) * 64)
        else {
            return (Answer::Continue, After::default());
        };
        let mut peer = None;
        let mut packets = Vec::new();
        let mut dest = None;
        for m in raw.chunks_exact(64) {
            let word = |at: usize| u64::from_ne_bytes(m[at..at + 8].try_into().unwrap_or([0; 8]));
            let (name, namelen, iov, iovlen) = (word(0), word(8) & 0xffff_ffff, word(16), word(24));
            let to = if name != 0 {
                match remote::read_sockaddr(req.pid, name, namelen) {
                    Addr::Ip(d) => Some(d),
                    _ => None,
                }
            } else {
                *peer.get_or_insert_with(|| peer_of(req.pid, a[0]))
            };
            let Some(to) = to.filter(|d| d.port() == 53) else {
                continue;
            };
            if iovlen == 0 || iov == 0 {
                continue;
            }
            let Ok(first) = remote::read_bytes(req.pid, iov, 16) else {
                continue;
            };
            if first.len() < 16 {
                continue;
            }
            let base = u64::from_ne_bytes(first[0..8].try_into().unwrap_or([0; 8]));
            let len = u64::from_ne_bytes(first[8..16].try_into().unwrap_or([0; 8]));
            let len = usize::try_from(len).unwrap_or(0).min(MAX_DNS_READ);
            if let Ok(p) = remote::read_bytes(req.pid, base, len) {
                packets.push(p);
                dest = Some(to);
            }
        }
        match dest {
            Some(d) => self.dns(fd, req, d, &packets),
            None => (Answer::Continue, After::default()),
        }
    }

    /// DNS queries in `packets` sent to `server`: reported and judged (one query denied refuses
    /// the whole send).
    fn dns(
        &mut self,
        fd: RawFd,
        req: &libc::seccomp_notif,
        server: SocketAddr,
        packets: &[Vec<u8>],
    ) -> (Answer, After) {
        let Some(tgid) = remote::ids(req.pid).map(|i| i.0) else {
            return (Answer::Continue, After::default());
        };
        if !still_pending(fd, req.id) {
            return (Answer::Continue, After::default());
        }
        let mut after = After::default();
        let mut prevent = false;
        let mut queries = Vec::new();
        for p in packets {
            let Some((name, qtype)) = decode::dns_question(p) else {
                continue;
            };
            if queries.iter().any(|(n, t)| *n == name && *t == qtype) {
                continue;
            }
            queries.push((name, qtype));
        }
        let mut events = Vec::new();
        for (name, qtype) in queries {
            let q = DnsQuery {
                pid: tgid,
                name,
                qtype: u32::from(qtype),
                server_addr: server.ip().to_string(),
                server_port: u32::from(server.port()),
                blocked: false,
            };
            let (audits, p) = self.judge(&self.event(event::Kind::DnsQuery(q.clone())), None);
            prevent |= p;
            events.push((q, audits));
        }
        // Several queries (A and AAAA) in one send: each is an event; audits follow the first.
        let mut iter = events.into_iter();
        if let Some((mut q, audits)) = iter.next() {
            q.blocked = prevent;
            after.event = Some(self.event(event::Kind::DnsQuery(q)));
            after.audits = audits;
        }
        for (mut q, audits) in iter {
            q.blocked = prevent;
            after.audits.extend(audits);
            self.extra(self.event(event::Kind::DnsQuery(q)));
        }
        (
            if prevent {
                Answer::Refuse
            } else {
                Answer::Continue
            },
            after,
        )
    }

    /// An event reported beside the main one of a request (delivered before it).
    fn extra(&self, event: Event) {
        self.shared.deliver(event, Vec::new());
    }

    fn exit_group(&mut self, req: &libc::seccomp_notif) -> (Answer, After) {
        let code = (req.data.args[0] & 0xff) as i32;
        let pid = if is_leader(req.pid) {
            req.pid
        } else {
            remote::ids(req.pid).map_or(req.pid, |i| i.0)
        };
        let after = After {
            exit: Some(Exited {
                pid,
                code: Some(code),
                signal: None,
            }),
            ..After::default()
        };
        (Answer::Continue, after)
    }

    /// Reports what a request produced, after the application was answered.
    fn after(&mut self, after: After) {
        if let Some(event) = after.event {
            self.shared.deliver(event, after.audits);
        }
        if let Some(a) = after.announce {
            self.shared.announce.try_send(a);
        }
        if let Some(x) = after.exit {
            self.shared.exits.try_send(x);
        }
        if let Some(v) = after.verify {
            self.verify.push(v);
        }
    }

    /// Checks allowed execs: the process must run the file that was judged. A different file
    /// means the path was swapped between the check and the exec (another thread rewrote it, or
    /// the file was replaced): the process is killed and audited.
    fn verify_pending(&mut self) {
        if self.verify.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut mismatches = Vec::new();
        self.verify.retain(|v| {
            let Ok(m) = std::fs::metadata(format!("/proc/{}/exe", v.pid)) else {
                return false; // gone
            };
            let running = (m.dev(), m.ino());
            if running == v.expected {
                return false;
            }
            if Some(running) == v.old {
                return now < v.until; // not exec'd yet (or the exec failed)
            }
            mismatches.push((v.pid, v.exe.clone(), m));
            false
        });
        for (pid, judged, _) in mismatches {
            let running = std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let killed = kill(pid);
            let audit = RuntimeAudit {
                rule: "exact capture".into(),
                effect: defender_proto::v1::Effect::Prevent as i32,
                message: format!(
                    "process {pid} runs {running}, not the executable judged before its exec ({}): \
                     the path changed between the check and the exec{}",
                    String::from_utf8_lossy(&judged),
                    if killed { "; killed" } else { "" }
                ),
                subject_seq: 0,
                pid,
            };
            let notice = self.event(event::Kind::Audit(audit));
            self.shared.deliver(notice, Vec::new());
        }
    }
}

fn protocol_of(info: Option<remote::SocketInfo>) -> Protocol {
    match info.map(|i| i.sotype) {
        Some(libc::SOCK_STREAM) => Protocol::Tcp,
        Some(libc::SOCK_DGRAM) => Protocol::Udp,
        _ => Protocol::Unspecified,
    }
}

fn peer_of(pid: u32, fd: u64) -> Option<SocketAddr> {
    let sock = remote::dup_fd(pid, fd).ok()?;
    let mut storage = [0u8; decode::MAX_SOCKADDR];
    let mut len = storage.len() as libc::socklen_t;
    // SAFETY: getpeername writes at most `len` bytes into `storage`.
    let rc = unsafe { libc::getpeername(sock.as_raw_fd(), storage.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return None;
    }
    match decode::sockaddr(&storage[..usize::try_from(len).unwrap_or(0).min(storage.len())]) {
        Addr::Ip(a) => Some(a),
        _ => None,
    }
}

/// The file an exec names, seen through the process's own root, cwd or descriptor.
fn resolve(tid: u32, dirfd: Option<u64>, path: &[u8], flags: u64) -> PathBuf {
    let rel = OsStr::from_bytes(path);
    if path.first() == Some(&b'/') {
        let mut p = PathBuf::from(format!("/proc/{tid}/root"));
        p.push(OsStr::from_bytes(&path[1..]));
        return p;
    }
    let at_fdcwd = dirfd.is_none_or(|d| d as i32 == libc::AT_FDCWD);
    if at_fdcwd {
        return PathBuf::from(format!("/proc/{tid}/cwd")).join(rel);
    }
    let dirfd = dirfd.map_or(0, |d| d as i32);
    let base = PathBuf::from(format!("/proc/{tid}/fd/{dirfd}"));
    if path.is_empty() && flags & libc::AT_EMPTY_PATH as u64 != 0 {
        base
    } else {
        base.join(rel)
    }
}

fn is_script(path: &std::path::Path) -> bool {
    let mut head = [0u8; 2];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"#!")
}

/// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn start_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn boot_ms() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let secs: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    secs.checked_mul(1000)
}

/// Whether thread `tid` leads its thread group (its tid is the process id): see
/// [`remote::pidfd_open`]. Cheaper than reading `/proc/<tid>/status`; a false answer only means
/// the slower read is made.
fn is_leader(tid: u32) -> bool {
    remote::pidfd_open(tid).is_ok()
}

fn kill(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 1 || pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handler() -> Handler {
        let (announce, _) = super::super::feed::feed(1);
        let (exits, _) = super::super::feed::feed(1);
        Handler::new(Arc::new(Shared {
            target: std::sync::RwLock::new(super::super::Target::default()),
            state: super::super::CaptureState::new(Duration::from_secs(1)),
            container: std::sync::RwLock::new(String::new()),
            announce,
            exits,
        }))
    }

    /// The cache answers what `canonicalize` would: a re-pointed symlink or a file rewritten
    /// into a script is not served the stale answer.
    #[test]
    fn canonical_paths_are_cached_by_what_they_depend_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b, link) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("l"),
        );
        std::fs::write(&a, b"\x7fELF").expect("a");
        std::fs::write(&b, b"\x7fELF").expect("b");
        std::os::unix::fs::symlink(&a, &link).expect("symlink");
        let me = std::process::id();
        let mut h = handler();
        let ask = |h: &mut Handler| {
            let meta = std::fs::metadata(&link).expect("meta");
            h.canonicalize(me, link.as_os_str().as_bytes(), &link, &meta)
        };
        let canon = |p: &std::path::Path| {
            std::fs::canonicalize(p)
                .expect("canon")
                .into_os_string()
                .into_vec()
        };
        assert_eq!(ask(&mut h), (canon(&a), false));
        assert_eq!(ask(&mut h), (canon(&a), false), "served from the cache");
        assert_eq!(h.canonical.len(), 1);

        std::fs::remove_file(&link).expect("rm");
        std::os::unix::fs::symlink(&b, &link).expect("symlink");
        assert_eq!(ask(&mut h), (canon(&b), false), "re-pointed symlink");

        std::fs::write(&b, b"#!/bin/sh\n").expect("rewrite");
        assert_eq!(ask(&mut h), (canon(&b), true), "rewritten into a script");
    }

    #[test]
    fn only_a_thread_group_leader_is_a_leader() {
        assert!(is_leader(std::process::id()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (done, wait) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).expect("send");
            let _ = wait.recv(); // alive until the check is made
        });
        let tid = rx.recv().expect("tid");
        assert!(!is_leader(tid), "a live non-leader thread");
        done.send(()).expect("done");
        t.join().expect("join");
    }
}
