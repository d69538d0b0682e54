//! Runs the application as a child the way an init would: the Defender becomes a child
//! subreaper (orphaned descendants are re-parented to it and reaped, so no zombies pile up and
//! their exit statuses are known), forwards catchable signals to the application, and ends with
//! its exit status (the code, or 128 + signal) like a shell.

use std::ffi::OsString;
use std::process::Command;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

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

/// How a reaped process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exited {
    pub pid: u32,
    /// Exit code when it exited normally.
    pub code: Option<i32>,
    /// Signal number when a signal ended it.
    pub signal: Option<i32>,
}

impl Exited {
    /// The status a shell would report: the code, or 128 + signal.
    pub fn shell_status(&self) -> i32 {
        self.code.or(self.signal.map(|s| 128 + s)).unwrap_or(1)
    }
}

/// The running application.
pub struct Supervisor {
    pid: u32,
    forwarded: mpsc::UnboundedReceiver<libc::c_int>,
    sigchld: tokio::signal::unix::Signal,
}

/// Why the application could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("no application command given")]
    NoCommand,
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("cannot install signal handler: {0}")]
    Signal(std::io::Error),
}

impl Supervisor {
    /// Starts `argv`. With `subreaper`, orphaned descendants are re-parented to this process.
    /// With `capture`, exact capture is installed in the application before it execs (the
    /// capture thread answers that very exec, so it must be running: see [`Capture::prepare`]).
    ///
    /// [`Capture::prepare`]: crate::capture::Capture::prepare
    pub fn spawn(
        argv: &[OsString],
        subreaper: bool,
        capture: Option<&mut crate::capture::Capture>,
    ) -> Result<Self, SuperviseError> {
        let (program, args) = argv.split_first().ok_or(SuperviseError::NoCommand)?;
        if subreaper {
            // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag only.
            let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            if rc != 0 {
                tracing::warn!(
                    "cannot become child subreaper: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        // Handlers exist before the child does: a signal sent as soon as the application is up
        // must reach it, not kill the Defender and orphan the application.
        let sigchld = signal(SignalKind::child()).map_err(SuperviseError::Signal)?;
        let (tx, forwarded) = mpsc::unbounded_channel();
        for sig in FORWARDED {
            let mut stream = signal(SignalKind::from_raw(sig)).map_err(SuperviseError::Signal)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).is_err() {
                        break;
                    }
                }
            });
        }
        // std, not tokio, spawns: this module reaps every child itself with waitpid(-1).
        let mut command = Command::new(program);
        // The install bundle carries an enrollment token: it is the Defender's, never the
        // application's (which would otherwise inherit it and could enroll Defenders of its own).
        command.args(args).env_remove("INSTALL_BUNDLE");
        if let Some(c) = &capture {
            use std::os::unix::process::CommandExt;
            // SAFETY: the hook only makes async-signal-safe calls (see capture::install).
            unsafe { command.pre_exec(c.pre_exec()) };
        }
        let spawned = command.spawn();
        if let Some(c) = capture {
            c.spawned();
        }
        let child = spawned.map_err(|source| SuperviseError::Spawn {
            program: program.to_string_lossy().into_owned(),
            source,
        })?;
        Ok(Self {
            pid: child.id(),
            forwarded,
            sigchld,
        })
    }

    /// The application's pid (the root of the observed process tree).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Forwards signals and reaps children until the application exits; every reaped process
    /// (the application too) is sent to `reaped`. Returns the application's exit status.
    pub async fn wait(mut self, reaped: Option<mpsc::UnboundedSender<Exited>>) -> i32 {
        // SIGCHLD can coalesce; the periodic sweep also catches a status missed in a race.
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            for exited in reap_all() {
                if let Some(tx) = &reaped {
                    let _ = tx.send(exited);
                }
                if exited.pid == self.pid {
                    return exited.shell_status();
                }
            }
            tokio::select! {
                _ = self.sigchld.recv() => {}
                _ = sweep.tick() => {}
                Some(sig) = self.forwarded.recv() => {
                    if let Ok(pid) = libc::pid_t::try_from(self.pid) {
                        // SAFETY: kill has no memory-safety preconditions; the pid is our child,
                        // not yet reaped (we reap it ourselves), so it cannot have been reused.
                        unsafe { libc::kill(pid, sig) };
                    }
                }
            }
        }
    }
}

/// Collects every exited child without blocking.
fn reap_all() -> Vec<Exited> {
    let mut out = Vec::new();
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid writes only to `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        let (code, signal) = if libc::WIFEXITED(status) {
            (Some(libc::WEXITSTATUS(status)), None)
        } else if libc::WIFSIGNALED(status) {
            (None, Some(libc::WTERMSIG(status)))
        } else {
            continue;
        };
        out.push(Exited {
            pid: pid as u32,
            code,
            signal,
        });
    }
}

/// Starts `argv`, forwards signals, and returns its exit status (127 when it cannot start).
pub async fn run_child(argv: &[OsString]) -> i32 {
    match Supervisor::spawn(argv, true, None) {
        Ok(s) => s.wait(None).await,
        Err(e) => {
            tracing::error!("{e}");
            EXIT_CANNOT_START
        }
    }
}
