//! `DefenderService.Connect`: the Defender's one mTLS stream. Identity comes only from the
//! verified peer certificate; events are acked only after their transaction committed.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use defender_proto::MAX_BATCH_EVENTS;
use defender_proto::v1::{
    Ack, ConsoleMessage, DefenderMessage, Hello, PolicyUpdate, RenewRequest, RenewResponse,
    Welcome, console_message, defender_message, defender_service_server::DefenderService,
};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::GrpcState;
use super::enroll::{internal, mode_name};
use super::registry::{self, StreamGuard};
use super::renew::peer_defender_id;
use crate::store::{Health, SessionRef, Standing};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest Hello accepted, in bytes (as for `EnrollRequest`): a real one is well under 4 KiB.
/// A stream's decoding buffer keeps the size of the largest message it received for as long as
/// the stream lives, so an oversized Hello is refused rather than cut.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// The DefenderService.
pub struct DefenderApi {
    state: Arc<GrpcState>,
}

impl DefenderApi {
    /// Wraps the shared state.
    pub fn new(state: Arc<GrpcState>) -> Self {
        Self { state }
    }
}

type ConsoleStream = Pin<Box<dyn Stream<Item = Result<ConsoleMessage, Status>> + Send>>;

#[tonic::async_trait]
impl DefenderService for DefenderApi {
    type ConnectStream = ConsoleStream;

    async fn connect(
        &self,
        request: Request<Streaming<DefenderMessage>>,
    ) -> Result<Response<ConsoleStream>, Status> {
        // The TLS layer verified the chain against our CA; here we only read who it names.
        let id = peer_defender_id(&request)
            .ok_or_else(|| Status::unauthenticated("a Defender client certificate is required"))?;
        let state = self.state.clone();
        match state.store.defender_standing(&id).await.map_err(internal)? {
            Standing::Active => {}
            Standing::Decommissioned => {
                tracing::warn!(defender_id = %id, "refused: decommissioned defender");
                return Err(registry::decommissioned());
            }
            Standing::Unknown => {
                tracing::warn!(defender_id = %id, "refused: unknown defender");
                return Err(Status::unauthenticated(
                    "unknown Defender: enroll again with an install bundle",
                ));
            }
        }
        let mut inbound = request.into_inner();
        let mut hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(DefenderMessage {
                msg: Some(defender_message::Msg::Hello(h)),
            }))) => h,
            Ok(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("the stream must start with Hello")),
        };
        let hello_bytes = hello.encoded_len();
        if hello_bytes > MAX_HELLO_BYTES {
            tracing::warn!(defender_id = %id, hello_bytes, "refused: oversized Hello");
            return Err(Status::invalid_argument(format!(
                "Hello of {hello_bytes} bytes exceeds the limit of {MAX_HELLO_BYTES} bytes"
            )));
        }
        // Cut at once: the Hello lives as long as the stream.
        if let Some(m) = hello.metadata.as_mut() {
            crate::limits::bound_metadata(m);
        }
        crate::limits::bound_version(&mut hello.agent_version);
        let interval_ms = i64::try_from(state.heartbeat_interval.as_millis()).unwrap_or(10_000);
        // One identity, one stream: this one replaces any older one, here (the registry) and
        // on other replicas (start_session ends every older open session in the database).
        let streams = state.lifecycle.streams.clone();
        let (guard, closed, session) = {
            let _opening = streams.opening(&id).await;
            let (guard, closed) = streams.register(&id);
            let session = state
                .store
                .start_session(
                    &id,
                    &hello,
                    mode_name(hello.mode),
                    &state.console_instance,
                    interval_ms,
                )
                .await
                .map_err(internal)?;
            (guard, closed, session)
        };
        let last_stored_seq = state.store.last_stored_seq(&id).await.map_err(internal)?;
        let (tx, rx) = mpsc::channel(16);
        let welcome = ConsoleMessage {
            msg: Some(console_message::Msg::Welcome(Welcome {
                heartbeat_interval_ms: u32::try_from(interval_ms).unwrap_or(u32::MAX),
                last_stored_seq,
                policy: state.policy.current(),
                defender_id: id.clone(),
                waas: state.waas.current(),
            })),
        };
        // Capacity 16 and nothing sent yet: this cannot fail.
        let _ = tx.try_send(Ok(welcome));
        let span = tracing::info_span!("defender_stream", defender_id = %id);
        let open = OpenStream {
            session,
            closed,
            _guard: guard,
        };
        tokio::spawn(run_stream(state, id, open, hello, inbound, tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        super::renew::renew(&self.state, request).await
    }
}

/// A registered stream: its session row, and how it learns that it was closed from outside.
struct OpenStream {
    session: SessionRef,
    closed: oneshot::Receiver<Status>,
    /// Unregisters the stream when it ends.
    _guard: StreamGuard,
}

async fn run_stream(
    state: Arc<GrpcState>,
    id: String,
    open: OpenStream,
    hello: Hello,
    mut inbound: Streaming<DefenderMessage>,
    tx: mpsc::Sender<Result<ConsoleMessage, Status>>,
) {
    tracing::info!(
        agent_version = %hello.agent_version,
        last_acked_seq = hello.last_acked_seq,
        "defender connected"
    );
    // The capture status last stored, so heartbeats write it only when it changes.
    let mut capture = hello.capture.clone();
    if let Some(c) = &capture
        && let Err(e) = state.store.set_capture(&id, c).await
    {
        tracing::error!(error = %e, "storing the capture status failed");
    }
    // A stream with no message for this long is dead even if TCP has not noticed.
    let idle_limit = state.heartbeat_interval * crate::status::MISSED_HEARTBEATS as u32;
    let OpenStream {
        session,
        mut closed,
        _guard,
    } = open;
    // "Connected for" is measured here, on the monotonic clock, and stored with each heartbeat.
    let opened = tokio::time::Instant::now();
    let mut stopping = state.stopping.clone();
    let mut policy = state.policy.subscribe();
    // Welcome carried the version current then; only later ones are pushed.
    policy.mark_unchanged();
    let mut waas = state.waas.subscribe();
    waas.mark_unchanged();
    let reason = loop {
        let next = tokio::select! {
            next = tokio::time::timeout(idle_limit, inbound.next()) => next,
            // Mapped to (): the watch guard must not live across the awaits below.
            _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                break "console shutting down".to_owned()
            }
            status = &mut closed => {
                // Superseded by a newer stream of this Defender, or decommissioned.
                let status = status.unwrap_or_else(|_| registry::superseded());
                let reason = status.message().to_owned();
                let _ = tx.send(Err(status)).await;
                break reason;
            }
            changed = policy.changed() => {
                if changed.is_err() {
                    continue;
                }
                let update = policy.borrow_and_update().clone();
                if let Some(p) = update {
                    tracing::info!(version = p.version, "pushing runtime policy");
                    let msg = ConsoleMessage {
                        msg: Some(console_message::Msg::Policy(PolicyUpdate { policy: Some(p), waas: None })),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break "defender went away".to_owned();
                    }
                }
                continue;
            }
            changed = waas.changed() => {
                if changed.is_err() {
                    continue;
                }
                let update = waas.borrow_and_update().clone();
                if let Some(p) = update {
                    tracing::info!(version = p.version, "pushing WAAS policy");
                    let msg = ConsoleMessage {
                        msg: Some(console_message::Msg::Policy(PolicyUpdate { policy: None, waas: Some(p) })),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break "defender went away".to_owned();
                    }
                }
                continue;
            }
        };
        let msg = match next {
            Err(_) => break "no heartbeat within 3 intervals".to_owned(),
            Ok(None) => break "stream closed by defender".to_owned(),
            Ok(Some(Err(status))) => break format!("stream error: {}", status.message()),
            Ok(Some(Ok(m))) => m,
        };
        match msg.msg {
            Some(defender_message::Msg::Heartbeat(hb)) => {
                let health = Health {
                    queue_depth: hb.queue_depth,
                    spool_bytes: hb.spool_bytes,
                    dropped_events: hb.dropped_events,
                    rss_bytes: hb.rss_bytes,
                    cpu_centipercent: hb.cpu_centipercent,
                };
                let alive_ms = i64::try_from(opened.elapsed().as_millis()).unwrap_or(i64::MAX);
                let beat = crate::store::heartbeats::Beat {
                    defender_id: id.clone(),
                    session,
                    health,
                    alive_ms: Some(alive_ms),
                };
                match state.heartbeats.beat(beat).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Our session was ended by someone else: a newer stream of this
                        // Defender (perhaps on another replica), or a decommission.
                        let status = match state.store.defender_standing(&id).await {
                            Ok(Standing::Active) => registry::superseded(),
                            _ => registry::decommissioned(),
                        };
                        let reason = status.message().to_owned();
                        let _ = tx.send(Err(status)).await;
                        break reason;
                    }
                    Err(e) => tracing::error!(error = %e, "storing heartbeat failed"),
                }
                if hb.capture.is_some() && hb.capture != capture {
                    if let Some(c) = &hb.capture
                        && let Err(e) = state.store.set_capture(&id, c).await
                    {
                        tracing::error!(error = %e, "storing the capture status failed");
                    }
                    capture = hb.capture;
                }
            }
            Some(defender_message::Msg::Events(batch)) => {
                if batch.events.len() > MAX_BATCH_EVENTS {
                    let _ = tx
                        .send(Err(Status::invalid_argument(format!(
                            "batch of {} events exceeds the limit of {MAX_BATCH_EVENTS}",
                            batch.events.len()
                        ))))
                        .await;
                    break "oversized batch".to_owned();
                }
                if let Err(e) = crate::limits::check_batch(&batch.events, crate::store::now_ms()) {
                    // Nothing of the batch is stored or acked, and nothing about the Defender
                    // changes: its next stream resumes from the same `last_stored_seq`.
                    tracing::warn!(error = %e, "event batch refused");
                    let _ = tx
                        .send(Err(Status::invalid_argument(format!(
                            "event batch refused, nothing of it stored: {e}"
                        ))))
                        .await;
                    break "invalid event batch".to_owned();
                }
                let Some(up_to_seq) = batch.events.iter().map(|e| e.seq).max() else {
                    continue;
                };
                if let Err(e) = state.writer.write(&id, batch.events).await {
                    // No ack: the Defender keeps the events and resends them on its next stream.
                    let status = match &e {
                        crate::store::WriteError::Refused(_) => {
                            Status::invalid_argument(e.to_string())
                        }
                        _ => Status::unavailable(e.to_string()),
                    };
                    let _ = tx.send(Err(status)).await;
                    break "event storage failed".to_owned();
                }
                let ack = ConsoleMessage {
                    msg: Some(console_message::Msg::Ack(Ack { up_to_seq })),
                };
                if tx.send(Ok(ack)).await.is_err() {
                    break "defender went away".to_owned();
                }
            }
            Some(defender_message::Msg::Hello(_)) | None => {
                let _ = tx
                    .send(Err(Status::invalid_argument("unexpected message")))
                    .await;
                break "protocol violation".to_owned();
            }
        }
    };
    if let Err(e) = state.store.end_session(session).await {
        tracing::error!(error = %e, "closing session failed");
    }
    tracing::info!(%reason, "defender disconnected");
}
