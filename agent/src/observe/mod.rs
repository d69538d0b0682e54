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
#[derive(Clone, Debug)]
pub struct ObserveConfig {
    pub interval: Duration,
    pub scope: ProcessScope,
    /// Container name put on every event.
    pub container: String,
    /// Normally `/proc`.
    pub proc_root: PathBuf,
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
                );
                let mut net = NetWatcher::new(
                    cfg.proc_root.clone(),
                    cfg.proc_root.join("net"),
                    cfg.container.clone(),
                );
                let mut last = false;
                loop {
                    let started = Instant::now();
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
