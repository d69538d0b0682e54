//! The child's side of exact capture, run between `fork` and `exec` of the application
//! (`CommandExt::pre_exec`): set `no_new_privs` (required to install a filter without
//! CAP_SYS_ADMIN, prctl(2) PR_SET_NO_NEW_PRIVS), install the filter with
//! `SECCOMP_FILTER_FLAG_NEW_LISTENER`, and send the listener descriptor to the Defender over a
//! Unix socket pair (`SCM_RIGHTS`, unix(7)). Only async-signal-safe calls happen here: no
//! allocation, no locks. A failure is sent as an errno instead and the application starts
//! without the filter (the Defender then polls and says so); it never keeps the app from running.

use std::os::fd::RawFd;

/// First byte of the message: the listener follows as `SCM_RIGHTS`.
pub const SENT_LISTENER: u8 = 0;
/// First byte of the message: installing failed at `no_new_privs`; errno follows (4 bytes).
pub const FAILED_NO_NEW_PRIVS: u8 = 1;
/// First byte of the message: installing failed at `seccomp()`; errno follows (4 bytes).
pub const FAILED_SECCOMP: u8 = 2;

/// Installs `prog` in the calling (child) process and reports on `sock`.
///
/// # Safety
/// Must only be called in a freshly forked child before `exec` (it changes the calling
/// process's seccomp state for good). `prog` must stay valid for the call.
pub unsafe fn install_and_report(prog: &[libc::sock_filter], sock: RawFd) {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        // SAFETY: as documented for this function.
        unsafe { report_error(sock, FAILED_NO_NEW_PRIVS) };
        return;
    }
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len()).unwrap_or(u16::MAX),
        filter: prog.as_ptr().cast_mut(),
    };
    // SPEC_ALLOW: where the kernel is booted with `spec_store_bypass_disable=seccomp` (the x86
    // default before Linux 5.16), any seccomp filter would also switch Speculative Store Bypass
    // mitigation on for the whole application, a slowdown the application did not ask for and
    // would not have without the Defender. The filter observes; it does not sandbox.
    // SAFETY: `fprog` points at `prog`, valid for the call; the kernel copies the program.
    let listener = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            &fprog as *const libc::sock_fprog,
        )
    };
    if listener < 0 {
        // SAFETY: as documented for this function.
        unsafe { report_error(sock, FAILED_SECCOMP) };
        return;
    }
    let listener = listener as RawFd;
    // SAFETY: plain descriptors; the message buffers live on this stack frame.
    unsafe {
        send_fd(sock, listener);
        libc::close(listener);
    }
}

unsafe fn report_error(sock: RawFd, what: u8) {
    // SAFETY: reading errno is async-signal-safe.
    let errno = unsafe { *libc::__errno_location() };
    let e = errno.to_ne_bytes();
    let msg = [what, e[0], e[1], e[2], e[3]];
    // SAFETY: `msg` is a valid buffer of its length.
    unsafe { libc::send(sock, msg.as_ptr().cast(), msg.len(), libc::MSG_NOSIGNAL) };
}

unsafe fn send_fd(sock: RawFd, fd: RawFd) {
    let mut byte = [SENT_LISTENER];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Room for one cmsghdr carrying one int, 8-byte aligned (CMSG_SPACE(4) is 24 on 64-bit).
    let mut control = [0u64; 4];
    // SAFETY: a zeroed msghdr is a valid value; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as _;
    // SAFETY: msg_control points at `control`, large enough for one header and an int.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return;
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
    }
}

/// What the child reported: the listener, or why there is none.
pub enum Received {
    Listener(std::os::fd::OwnedFd),
    Failed(&'static str, std::io::Error),
    /// The child ended (or exec'd) without reporting.
    Nothing,
}

/// Receives the child's report on `sock` (blocking).
pub fn receive(sock: RawFd) -> Received {
    use std::os::fd::FromRawFd;
    let mut buf = [0u8; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; buffers live on this frame.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    let n = loop {
        // SAFETY: `msg` describes valid buffers.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n <= 0 {
        return Received::Nothing;
    }
    match buf[0] {
        SENT_LISTENER => {
            // SAFETY: walking the control messages the kernel filled in.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                if !cmsg.is_null()
                    && (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                {
                    let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                    return Received::Listener(std::os::fd::OwnedFd::from_raw_fd(fd));
                }
            }
            Received::Nothing
        }
        what => {
            let errno = i32::from_ne_bytes([buf[1], buf[2], buf[3], buf[4]]);
            let step = if what == FAILED_NO_NEW_PRIVS {
                "prctl(PR_SET_NO_NEW_PRIVS)"
            } else {
                "seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER | SPEC_ALLOW)"
            };
            Received::Failed(step, std::io::Error::from_raw_os_error(errno))
        }
    }
}
