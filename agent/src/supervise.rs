//! Runs the application as a child: forwards catchable signals to it and reports its exit
//! status the way a shell would (code, or 128 + signal).

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;

use tokio::process::Command;
use tokio::signal::unix::{SignalKind, signal};

/// Signals passed on to the application.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Exit status when the application could not be started (as shells use).
pub const EXIT_CANNOT_START: i32 = 127;

/// Starts `argv` and returns its exit status once it ends, forwarding signals meanwhile.
pub async fn run_child(argv: &[OsString]) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        tracing::error!("no application command given");
        return EXIT_CANNOT_START;
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for sig in FORWARDED {
        match signal(SignalKind::from_raw(sig)) {
            Ok(mut s) => {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while s.recv().await.is_some() {
                        if tx.send(sig).is_err() {
                            break;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot forward signal {sig}: {e}"),
        }
    }
    // Handlers are in place before the child exists: a signal sent as soon as the application
    // is up must reach it, not kill the Defender and orphan the application.
    let mut child = match Command::new(program).args(args).spawn() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot start {}: {e}", program.to_string_lossy());
            return EXIT_CANNOT_START;
        }
    };
    let pid = child.id().and_then(|p| libc::pid_t::try_from(p).ok());
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(s) => s.code().or_else(|| s.signal().map(|sig| 128 + sig)).unwrap_or(1),
                    Err(e) => {
                        tracing::error!("waiting for the application failed: {e}");
                        1
                    }
                };
            }
            Some(sig) = rx.recv() => {
                if let Some(pid) = pid {
                    // SAFETY: kill has no memory-safety preconditions; pid is our child's.
                    unsafe { libc::kill(pid, sig) };
                }
            }
        }
    }
}
