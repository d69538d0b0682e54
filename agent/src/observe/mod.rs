//! What the Defender observes of the application: its processes and their sockets, polled on
//! a thread of its own (reading /proc is blocking I/O) and pushed to an [`EventSink`].

pub mod exehash;
pub mod network;
pub mod process;
pub mod sockets;
pub mod users;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use defender_proto::v1::Event;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::outbox::Outbox;
use crate::supervise::Exited;
use network::NetWatcher;
use process::{ProcessScope, ProcessWatcher, Reaped};

/// Where observed events go: the spool (sidecar, standalone) or the socket to the sidecar
/// (app-container wrapper).
pub trait EventSink: Send + Sync + 'static {
    /// Hands over one event; must not block for long. Returns its seq when it is assigned here.
    fn push_event(&self, event: Event) -> Option<u64>;
}

impl EventSink for Outbox {
    fn push_event(&self, event: Event) -> Option<u64> {
        self.push(event)
    }
}

/// What to observe and how often.
pub struct ObserveConfig {
    pub interval: Duration,
    pub scope: ProcessScope,
    /// Container name put on every event.
    pub container: String,
    /// Normally `/proc` (`DEFENDER_PROC_ROOT` overrides it, for tests).
    pub proc_root: PathBuf,
    /// Exact capture's announcements and exit codes, when it is in force: this observer then
    /// reports only what interception cannot see (forks without exec, exits, accepted
    /// connections).
    pub exact: Option<crate::capture::CaptureFeed>,
    /// Where the capture mode, errors and missed counts are recorded.
    pub state: Arc<crate::capture::CaptureState>,
}

/// The proc root to observe: `/proc`, or `DEFENDER_PROC_ROOT` (tests simulate an unreadable
/// `/proc` with it).
pub fn proc_root() -> PathBuf {
    std::env::var_os("DEFENDER_PROC_ROOT")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/proc"), PathBuf::from)
}

/// A running observer thread.
pub struct Observer {
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Observer {
    /// Starts polling. `reaped` carries exit statuses the supervisor collected.
    pub fn spawn(
        cfg: ObserveConfig,
        sink: Arc<dyn EventSink>,
        mut reaped: Option<UnboundedReceiver<Exited>>,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("observe".into())
            .spawn(move || {
                let mut procs = ProcessWatcher::new(
                    cfg.proc_root.clone(),
                    cfg.scope.clone(),
                    cfg.container.clone(),
                )
                // The Defender is the application's child subreaper in this scope.
                .adopt_orphans(matches!(cfg.scope, ProcessScope::Descendants(_)));
                let mut net = NetWatcher::new(
                    cfg.proc_root.clone(),
                    cfg.proc_root.join("net"),
                    cfg.container.clone(),
                );
                let mut last = false;
                loop {
                    let started = Instant::now();
                    // Exact capture may have been refused after this thread started (the
                    // application's first exec decides): follow the mode in force.
                    let exact = cfg.exact.is_some() && cfg.state.is_exact();
                    procs.set_exact(exact);
                    net.set_inbound_only(exact);
                    if let Some(feed) = &cfg.exact {
                        while let Some(a) = feed.announced.try_recv() {
                            procs.announce(a);
                        }
                        while let Some(x) = feed.exits.try_recv() {
                            if let Some(code) = x.code {
                                procs.exit_code(x.pid, code);
                            }
                        }
                    }
                    let mut exits = Vec::new();
                    if let Some(rx) = reaped.as_mut() {
                        while let Ok(e) = rx.try_recv() {
                            exits.push(Reaped {
                                pid: e.pid,
                                code: e.code,
                                signal: e.signal,
                            });
                        }
                    }
                    let now = crate::unix_ms();
                    let mut events = procs.poll(&exits, now);
                    let pids: HashSet<u32> = procs.pids().collect();
                    events.extend(net.poll(&pids, now));
                    cfg.state.set_error(procs.error().unwrap_or(""));
                    cfg.state
                        .set_missed(procs.last_poll_stats().reaped_unseen_total);
                    for e in events {
                        sink.push_event(e);
                    }
                    if last {
                        break;
                    }
                    let wait = cfg.interval.saturating_sub(started.elapsed());
                    if !matches!(stopped.recv_timeout(wait), Err(RecvTimeoutError::Timeout)) {
                        // Asked to stop (or the handle is gone): poll once more, so exits the
                        // supervisor collected last (the application's own) are reported.
                        last = true;
                    }
                }
            })
            .ok();
        Self { stop, thread }
    }

    /// Does one last poll (so the application's own exit is reported) and stops.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
