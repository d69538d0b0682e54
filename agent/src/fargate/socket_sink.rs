//! The app-container wrapper's side of the task-local socket: a bounded queue of events that
//! a background task writes to the sidecar, reconnecting whenever the sidecar is unreachable.
//! The application never waits for it; when the queue is full the oldest events are dropped
//! and counted, and the count is reported as a notice once the sidecar is back.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use defender_proto::v1::{
    AgentNotice, Event, LocalHello, LocalPush, LocalRequest, agent_notice, event, local_request,
};
use tokio::net::UnixStream;
use tokio::sync::Notify;

use crate::enforce::Enforcer;
use crate::local::{read_frame, write_frame};
use crate::observe::EventSink;

/// Events held while the sidecar is unreachable.
pub const QUEUE_CAP: usize = 10_000;

struct Queue {
    events: VecDeque<Event>,
    dropped: u64,
    /// Events taken by the writer and not yet written.
    in_flight: usize,
}

/// Sends events to the sidecar over its Unix socket.
pub struct SocketSink {
    queue: Mutex<Queue>,
    wake: Notify,
    idle: Notify,
}

impl SocketSink {
    /// Starts the writer task for `socket`, introducing this container with `hello`; policies
    /// the sidecar pushes are applied to `enforcer`.
    /// `capture`, when given, is reported to the sidecar after Hello and whenever it changes.
    pub fn spawn(
        socket: PathBuf,
        hello: LocalHello,
        enforcer: Arc<Enforcer>,
        capture: Option<Arc<crate::capture::CaptureState>>,
    ) -> Arc<Self> {
        let sink = Arc::new(Self {
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                dropped: 0,
                in_flight: 0,
            }),
            wake: Notify::new(),
            idle: Notify::new(),
        });
        tokio::spawn(writer(sink.clone(), socket, hello, enforcer, capture));
        sink
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until everything queued was written, or `timeout` passes.
    pub async fn flush(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let idle = self.idle.notified();
                {
                    let q = self.lock();
                    if q.events.is_empty() && q.in_flight == 0 {
                        return;
                    }
                }
                idle.await;
            }
        })
        .await;
    }
}

impl EventSink for SocketSink {
    fn push_event(&self, event: Event) -> Option<u64> {
        {
            let mut q = self.lock();
            if q.events.len() >= QUEUE_CAP {
                q.events.pop_front();
                q.dropped += 1;
            }
            q.events.push_back(event);
        }
        self.wake.notify_one();
        // The sidecar assigns the seq when it spools the event.
        None
    }
}

async fn writer(
    sink: Arc<SocketSink>,
    socket: PathBuf,
    hello: LocalHello,
    enforcer: Arc<Enforcer>,
    capture: Option<Arc<crate::capture::CaptureState>>,
) {
    let mut delay = Duration::from_millis(100);
    let mut reported_drops = 0u64;
    let mut warned = false;
    loop {
        let stream = match UnixStream::connect(&socket).await {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "sidecar unreachable at {}: {e}; the application runs, events are queued",
                        socket.display()
                    );
                    warned = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (mut reader, mut stream) = stream.into_split();
        let hello_frame = LocalRequest {
            msg: Some(local_request::Msg::Hello(hello.clone())),
        };
        if write_frame(&mut stream, &hello_frame).await.is_err() {
            continue;
        }
        // The capture status last sent on this connection (resent when it changes).
        let mut sent_status = None;
        let enforcer_for_reader = enforcer.clone();
        let policies = tokio::spawn(async move {
            while let Ok(Some(push)) = read_frame::<_, LocalPush>(&mut reader).await {
                if let Some(p) = push.policy
                    && let Err(e) = enforcer_for_reader.apply(&p)
                {
                    tracing::error!(
                        version = p.version,
                        "refusing an invalid runtime policy: {e}"
                    );
                }
            }
        });
        if warned {
            tracing::info!("connected to the sidecar at {}", socket.display());
            warned = false;
        }
        delay = Duration::from_millis(100);
        loop {
            if let Some(c) = &capture {
                let now = c.status();
                if sent_status.as_ref() != Some(&now) {
                    let frame = LocalRequest {
                        msg: Some(local_request::Msg::Capture(now.clone())),
                    };
                    if write_frame(&mut stream, &frame).await.is_err() {
                        break;
                    }
                    sent_status = Some(now);
                }
            }
            let dropped = sink.lock().dropped;
            if dropped > reported_drops {
                sink.push_event(drop_notice(&hello.container, dropped - reported_drops));
                reported_drops = dropped;
            }
            let wake = sink.wake.notified();
            let next = {
                let mut q = sink.lock();
                let e = q.events.pop_front();
                if e.is_some() {
                    q.in_flight += 1;
                }
                e
            };
            let Some(event) = next else {
                sink.idle.notify_waiters();
                // Wake for events, or now and then to resend a changed capture status.
                let _ = tokio::time::timeout(Duration::from_secs(2), wake).await;
                continue;
            };
            let frame = LocalRequest {
                msg: Some(local_request::Msg::Event(event.clone())),
            };
            let result = write_frame(&mut stream, &frame).await;
            let mut q = sink.lock();
            q.in_flight -= 1;
            if result.is_err() {
                // Not written: keep it first in line for the next connection.
                q.events.push_front(event);
                break;
            }
        }
        policies.abort();
    }
}

fn drop_notice(container: &str, dropped: u64) -> Event {
    Event {
        seq: 0,
        time_ms: crate::unix_ms(),
        container: container.to_owned(),
        kind: Some(event::Kind::Notice(AgentNotice {
            level: agent_notice::Level::Warning as i32,
            message: format!(
                "{dropped} events dropped in container {container} while the sidecar was unreachable"
            ),
            dropped,
        })),
    }
}
