//! How the Defender learns what the application does. Two sources behind one interface:
//!
//! - **Exact capture** (`--capture exact`, the default where the kernel allows it): the wrapper
//!   installs a seccomp filter in the application's process before it execs the application
//!   ([`install`]); every descendant inherits it. The syscalls that matter ([`filter`]: exec,
//!   connect, bind/listen, UDP sends with an address, exit) stop in the kernel until the
//!   Defender's [`notify`] thread has read their arguments out of the process
//!   ([`remote`]), judged them against the runtime policy, and answered: go on
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`) or fail with `EPERM` (prevent: the program never runs,
//!   the packet never leaves). Nothing a process does between two polls escapes.
//! - **Polling** ([`crate::observe`]): `/proc` every `--poll-interval`. It runs in both modes: in
//!   exact mode it adds what interception cannot see (processes forked without exec, exits by
//!   signal, accepted connections); without exact capture it is the only source, and the
//!   Defender says so.
//!
//! The mode in force, why, and what was missed travel in `Hello` and every `Heartbeat`
//! ([`CaptureState::status`]), so the Console shows "exact" or "polling (1 s)".
//!
//! Invariant: **the application never waits on a Defender that is gone.** A trapped syscall
//! not answered within [`ANSWER_DEADLINE`] is let through by a watchdog and counted
//! (`timed_out`); if the Defender process dies, the kernel fails the pending syscalls with ENOSYS,
//! but in embedded and standalone mode the Defender is the application's parent and the
//! container ends with it anyway.
//!
//! Costs and limits (measured by `cargo bench -p defender --bench capture`, see the README):
//! `no_new_privs` is set for the application, so setuid/setgid binaries run without their
//! privileges; a process may have only one seccomp listener, so an application that installs
//! its own user-notification filter is not supported (seccomp filters themselves stack fine);
//! arguments are read from the application's memory after it made the call (another thread could
//! rewrite them), so after an allowed exec the Defender verifies that the file running is the file
//! judged and kills on a mismatch.

pub mod decode;
pub mod feed;
pub mod filter;
pub mod install;
pub mod notify;
pub mod remote;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use defender_proto::v1::{CaptureMode, CaptureStatus, Event};

use crate::enforce::Enforcer;
use crate::observe::EventSink;
use crate::supervise::Exited;

/// Longest a trapped syscall waits for the Defender's verdict before it is let through.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(2);
/// Events held while the Defender is still starting (before the spool or socket exists).
const EARLY_EVENTS: usize = 10_000;
/// Announcements and exit codes queued for the poller.
const FEED_CAPACITY: usize = 65_536;

/// The capture mode asked for (`--capture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Requested {
    /// Seccomp user notification; falls back to polling (and says why) where refused.
    Exact,
    /// /proc polling only.
    Poll,
}

/// The capture mode in force and its counters, shared by every capture source and read by the
/// link for `Hello` and heartbeats.
#[derive(Debug, Default)]
pub struct CaptureState {
    exact: AtomicBool,
    detail: Mutex<String>,
    poll_interval_ms: AtomicU32,
    intercepted: AtomicU64,
    timed_out: AtomicU64,
    missed: AtomicU64,
    error: Mutex<String>,
    /// Statuses reported by app-container wrappers (sidecar), by container name.
    wrappers: Mutex<BTreeMap<String, CaptureStatus>>,
}

impl CaptureState {
    /// A state starting in polling mode with `poll_interval`.
    pub fn new(poll_interval: Duration) -> Arc<Self> {
        let s = Self::default();
        s.poll_interval_ms.store(
            u32::try_from(poll_interval.as_millis()).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        Arc::new(s)
    }

    /// Records the mode in force and why.
    pub fn set_mode(&self, exact: bool, detail: impl Into<String>) {
        self.exact.store(exact, Ordering::Relaxed);
        *self.detail.lock().unwrap_or_else(|e| e.into_inner()) = detail.into();
    }

    /// Sets (non-empty) or clears (empty) the error of a failing source.
    pub fn set_error(&self, error: impl Into<String>) {
        let error = error.into();
        let mut e = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if *e != error {
            if error.is_empty() {
                tracing::info!("capture recovered: {}", *e);
            } else {
                tracing::error!("capture is failing: {error}");
            }
            *e = error;
        }
    }

    /// Processes reaped that no capture source reported (running total).
    pub fn set_missed(&self, total: u64) {
        self.missed.store(total, Ordering::Relaxed);
    }

    pub(crate) fn count_intercepted(&self) {
        self.intercepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_timed_out(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether exact capture is in force.
    pub fn is_exact(&self) -> bool {
        self.exact.load(Ordering::Relaxed)
    }

    /// Records what an app-container wrapper reported (sidecar, embedded mode).
    pub fn set_wrapper(&self, container: &str, status: CaptureStatus) {
        let mut w = self.wrappers.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() < 64 || w.contains_key(container) {
            w.insert(container.to_owned(), status);
        }
    }

    /// The status to report. With wrappers (sidecar in embedded mode), the task is "exact" only
    /// when every wrapped container is; counters add up; details name the containers.
    pub fn status(&self) -> CaptureStatus {
        let own = CaptureStatus {
            mode: if self.is_exact() {
                CaptureMode::Exact
            } else {
                CaptureMode::Polling
            } as i32,
            detail: self
                .detail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            poll_interval_ms: self.poll_interval_ms.load(Ordering::Relaxed),
            intercepted: self.intercepted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            missed_processes: self.missed.load(Ordering::Relaxed),
            error: self.error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        };
        let wrappers = self.wrappers.lock().unwrap_or_else(|e| e.into_inner());
        if wrappers.is_empty() {
            return own;
        }
        let mut out = CaptureStatus {
            mode: CaptureMode::Exact as i32,
            poll_interval_ms: own.poll_interval_ms,
            ..Default::default()
        };
        let mut details = Vec::new();
        let mut errors = Vec::new();
        for (name, s) in wrappers.iter() {
            if s.mode != CaptureMode::Exact as i32 {
                out.mode = CaptureMode::Polling as i32;
                out.poll_interval_ms = s.poll_interval_ms;
            }
            if !s.detail.is_empty() {
                details.push(format!("{name}: {}", s.detail));
            }
            if !s.error.is_empty() {
                errors.push(format!("{name}: {}", s.error));
            }
            out.intercepted += s.intercepted;
            out.timed_out += s.timed_out;
            out.missed_processes += s.missed_processes;
        }
        out.detail = details.join("; ");
        out.error = errors.join("; ");
        out
    }
}

/// A process start that exact capture reported, so the poller knows it without reporting it
/// again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    pub pid: u32,
    pub ppid: u32,
    /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
    pub start_ticks: u64,
}

/// What exact capture feeds the poller: processes it reported and exit codes it saw.
pub struct CaptureFeed {
    pub announced: feed::FeedReceiver<Announce>,
    pub exits: feed::FeedReceiver<Exited>,
}

/// Starts the application (a child subreaper's child) under exact capture when `requested`
/// and possible, plainly otherwise; the returned state says which and why.
pub fn spawn_app(
    argv: &[std::ffi::OsString],
    requested: Requested,
    poll_interval: Duration,
) -> Result<
    (
        crate::supervise::Supervisor,
        Option<Capture>,
        Arc<CaptureState>,
    ),
    crate::supervise::SuperviseError,
> {
    let state = CaptureState::new(poll_interval);
    let mut capture = match requested {
        Requested::Poll => {
            state.set_mode(false, "polling chosen with --capture poll");
            None
        }
        Requested::Exact => match Capture::prepare(state.clone()) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("exact capture unavailable ({e}); polling");
                state.set_mode(false, format!("exact capture unavailable ({e}); polling"));
                None
            }
        },
    };
    let supervisor = crate::supervise::Supervisor::spawn(argv, true, capture.as_mut())?;
    Ok((supervisor, capture, state))
}

/// Where judged events go, once the Defender has finished starting.
#[derive(Default)]
struct Target {
    enforcer: Option<Arc<Enforcer>>,
    sink: Option<Arc<dyn EventSink>>,
    /// Events captured before `attach`: judged by no policy yet, delivered (and judged after
    /// the fact) at `attach`.
    early: Vec<Event>,
}

/// What the notification thread shares with the rest of the Defender.
pub(crate) struct Shared {
    target: RwLock<Target>,
    state: Arc<CaptureState>,
    /// Container name put on events (known at `attach`; events held before get it then).
    container: RwLock<String>,
    announce: feed::FeedSender<Announce>,
    exits: feed::FeedSender<Exited>,
}

impl Shared {
    /// Delivers an event and its audits, or holds it while the Defender is starting.
    fn deliver(&self, event: Event, audits: Vec<defender_proto::v1::RuntimeAudit>) {
        let t = self.target.read().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = &t.sink {
            crate::enforce::deliver(sink.as_ref(), event, audits);
            return;
        }
        drop(t);
        let mut t = self.target.write().unwrap_or_else(|e| e.into_inner());
        if let Some(sink) = &t.sink {
            crate::enforce::deliver(sink.as_ref(), event, audits);
        } else if t.early.len() < EARLY_EVENTS {
            t.early.push(event);
        }
    }

    fn enforcer(&self) -> Option<Arc<Enforcer>> {
        self.target
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .enforcer
            .clone()
    }
}

/// Exact capture being set up around one application start. Create it before spawning the
/// application, pass [`Capture::pre_exec`] to the spawn, then [`Capture::spawned`] and
/// [`Capture::attach`].
pub struct Capture {
    shared: Arc<Shared>,
    prog: Arc<Vec<libc::sock_filter>>,
    child_end: Option<UnixStream>,
    feed: Option<CaptureFeed>,
}

impl Capture {
    /// Builds the filter and starts the thread that will receive the listener and answer the
    /// application's trapped syscalls. Errors when exact capture cannot even be attempted (the
    /// caller falls back to polling and reports why).
    pub fn prepare(state: Arc<CaptureState>) -> Result<Self, String> {
        let prog = filter::program().map_err(|e| e.to_string())?;
        let prog: Vec<libc::sock_filter> = prog
            .iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let (ours, theirs) =
            UnixStream::pair().map_err(|e| format!("cannot create a socket pair: {e}"))?;
        let (announce, announced) = feed::feed(FEED_CAPACITY);
        let (exits_tx, exits) = feed::feed(FEED_CAPACITY);
        let shared = Arc::new(Shared {
            target: RwLock::new(Target::default()),
            state,
            container: RwLock::new(String::new()),
            announce,
            exits: exits_tx,
        });
        notify::spawn(ours, shared.clone())?;
        Ok(Self {
            shared,
            prog: Arc::new(prog),
            child_end: Some(theirs),
            feed: Some(CaptureFeed { announced, exits }),
        })
    }

    /// The hook to run in the child between fork and exec (see [`install`]).
    pub fn pre_exec(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let prog = self.prog.clone();
        let fd = self.child_end.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        move || {
            if fd >= 0 {
                // SAFETY: runs in the forked child before exec; `prog` is alive (an Arc clone).
                unsafe { install::install_and_report(&prog, fd) };
            }
            Ok(())
        }
    }

    /// To call once the application was spawned (or failed to): closes the child's end here,
    /// so the notification thread sees the end of the report if the child never sent one.
    pub fn spawned(&mut self) {
        self.child_end = None;
    }

    /// The announcements and exit codes for the poller (once).
    pub fn take_feed(&mut self) -> Option<CaptureFeed> {
        self.feed.take()
    }

    /// From now on, label events with `container`, judge with `enforcer` and deliver to `sink`
    /// (which must not evaluate again). Events held while starting are delivered through
    /// `late`, which judges them after the fact.
    pub fn attach(
        &self,
        container: &str,
        enforcer: Arc<Enforcer>,
        sink: Arc<dyn EventSink>,
        late: Arc<dyn EventSink>,
    ) {
        *self
            .shared
            .container
            .write()
            .unwrap_or_else(|e| e.into_inner()) = container.to_owned();
        // Under the write lock, so held events keep their order before new ones.
        let mut t = self
            .shared
            .target
            .write()
            .unwrap_or_else(|e| e.into_inner());
        for mut e in std::mem::take(&mut t.early) {
            e.container = container.to_owned();
            late.push_event(e);
        }
        t.enforcer = Some(enforcer);
        t.sink = Some(sink);
    }
}
