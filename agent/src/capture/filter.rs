//! The seccomp BPF program of exact capture: which syscalls of the application leave the kernel
//! for the Defender to judge (`SECCOMP_RET_USER_NOTIF`, seccomp(2), seccomp_unotify(2)).
//!
//! Trapped, and why:
//! - `execve`, `execveat`: every program start, judged before its first instruction;
//! - `connect`: every outbound TCP connection attempt and every UDP `connect`, before a packet
//!   leaves (including attempts that never complete);
//! - `bind`, `listen`: UDP servers (bind to a port) and TCP listeners, before they serve;
//! - `sendto` *with a destination address* (argument 4 not NULL): unconnected UDP, which is how
//!   musl and most stub resolvers send DNS queries; sends on connected sockets (the hot path of
//!   every TCP server, `send()` is `sendto(…, NULL, 0)`) are not trapped;
//! - `sendmmsg`: glibc's resolver sends its A and AAAA queries with it; rare elsewhere;
//! - `exit_group`: once per process, gives the exit code of processes the Defender does not reap.
//!
//! Everything else runs at native speed: the filter is a short chain of comparisons on the
//! syscall number (`getpid`, `read`, `write`, `mmap`… cost a few BPF instructions).
//!
//! The program is compiled by `seccompiler` (rust-vmm), which has no action for user
//! notification: rules are compiled with a marker action (`SECCOMP_RET_TRACE | MARKER`) that
//! is then rewritten to `SECCOMP_RET_USER_NOTIF`, and seccompiler's "wrong architecture → kill"
//! is rewritten to "notify" as well: a 32-bit (`int 0x80`) program is then judged on every
//! syscall rather than killed or unseen. On x86_64, x32-ABI syscall numbers (bit 30 set) are
//! notified too, so that ABI cannot be used to slip an `execve` past the filter.

use std::collections::BTreeMap;

#[cfg(target_arch = "x86_64")]
use seccompiler::sock_filter;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// `SECCOMP_RET_TRACE` data value marking "notify" in seccompiler's output.
const MARKER: u32 = 0x0d3f;
/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;
/// BPF_LD | BPF_W | BPF_ABS.
const LD_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JGE | BPF_K.
const JGE_K: u16 = 0x35;
/// `__X32_SYSCALL_BIT`.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Why the filter could not be built (a bug or an unsupported architecture, never input).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the seccomp filter: {0}")]
pub struct FilterError(String);

/// The syscalls trapped unconditionally.
fn trapped() -> Vec<i64> {
    vec![
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_connect,
        libc::SYS_bind,
        libc::SYS_listen,
        libc::SYS_sendmmsg,
        libc::SYS_exit_group,
    ]
}

/// Builds the BPF program (native architecture).
pub fn program() -> Result<BpfProgram, FilterError> {
    let arch =
        TargetArch::try_from(std::env::consts::ARCH).map_err(|e| FilterError(e.to_string()))?;
    let err = |e: seccompiler::BackendError| FilterError(e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in trapped() {
        rules.insert(nr, Vec::new());
    }
    let with_address =
        SeccompCondition::new(4, SeccompCmpArgLen::Qword, SeccompCmpOp::Ne, 0).map_err(err)?;
    rules.insert(
        libc::SYS_sendto,
        vec![SeccompRule::new(vec![with_address]).map_err(err)?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Trace(MARKER),
        arch,
    )
    .map_err(err)?;
    let mut prog: BpfProgram = filter.try_into().map_err(err)?;
    patch(&mut prog)?;
    Ok(prog)
}

/// Rewrites the marker and the wrong-architecture kill into `SECCOMP_RET_USER_NOTIF`, and (x86_64)
/// inserts the x32 check right after the architecture check.
fn patch(prog: &mut BpfProgram) -> Result<(), FilterError> {
    let notify = libc::SECCOMP_RET_USER_NOTIF;
    let marker = libc::SECCOMP_RET_TRACE | MARKER;
    // seccompiler's program starts: load arch; jeq native → skip 1; ret KILL_PROCESS.
    let arch_kill = prog
        .get_mut(2)
        .filter(|i| i.code == RET_K && i.k == libc::SECCOMP_RET_KILL_PROCESS)
        .ok_or_else(|| FilterError("unexpected program layout".into()))?;
    arch_kill.k = notify;
    let mut marked = 0;
    for i in prog.iter_mut() {
        if i.code == RET_K && i.k == marker {
            i.k = notify;
            marked += 1;
        }
    }
    if marked == 0 {
        return Err(FilterError("no notify action in the program".into()));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let x32 = [
            sock_filter {
                code: LD_ABS,
                jt: 0,
                jf: 0,
                k: 0, // offsetof(struct seccomp_data, nr)
            },
            sock_filter {
                code: JGE_K,
                jt: 0,
                jf: 1,
                k: X32_SYSCALL_BIT,
            },
            sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k: notify,
            },
        ];
        // Index 3 is where the architecture check jumps on success; every later jump is
        // relative and stays within the code after this insertion point.
        prog.splice(3..3, x32);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (LD_ABS, JGE_K);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_notifies_and_never_kills() {
        let prog = program().expect("filter");
        let rets: Vec<u32> = prog
            .iter()
            .filter(|i| i.code == RET_K)
            .map(|i| i.k)
            .collect();
        assert!(rets.contains(&libc::SECCOMP_RET_USER_NOTIF));
        assert!(rets.contains(&libc::SECCOMP_RET_ALLOW));
        assert!(
            rets.iter()
                .all(|k| *k == libc::SECCOMP_RET_USER_NOTIF || *k == libc::SECCOMP_RET_ALLOW),
            "{rets:x?}"
        );
        assert!(prog.len() < 128, "keep the hot path short: {}", prog.len());
    }
}
