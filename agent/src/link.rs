//! The Defender's link to the Console: enroll when needed, hold the one mTLS Connect stream,
//! heartbeat at the interval the Console sets, send the spool's events (replaying everything
//! after the Console's last stored seq), delete what the Console acks, and reconnect with capped
//! exponential backoff plus jitter whenever the stream is lost. The backoff is reset only after
//! a stream that worked (events acked, or up for a while) and was not ended by a refusal.
//! When the bundle names several Console addresses (replicas), the link starts at a random one
//! and moves to the next after each failed or lost stream ([`ConsoleAddrs`]), so one dead
//! address is never retried before the others were tried.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use defender_proto::MAX_MESSAGE_BYTES;
use defender_proto::v1::{
    ConsoleMessage, DefenderMessage, Event, EventBatch, Heartbeat, Hello, Mode, Policy,
    TaskMetadata, console_message, defender_message,
    defender_service_client::DefenderServiceClient,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::bundle::InstallBundle;
use crate::console_addrs::ConsoleAddrs;
use crate::identity::{self, Identity};
use crate::outbox::Outbox;
use crate::transport::{self, describe_status};
use crate::{selfstats, unix_ms};

/// How long the Console may take to answer Hello with Welcome.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches sent and not yet acked: the backpressure window towards a slow Console.
const WINDOW_BATCHES: usize = 4;
/// Bytes of events in one batch (well under the gRPC message limit).
const BATCH_BYTES: usize = 1024 * 1024;

/// Reconnect delays: doubled after each failure up to `max`, reset once connected.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// Everything the link needs.
#[derive(Clone)]
pub struct LinkConfig {
    pub bundle: InstallBundle,
    /// Where the identity (key, certificate) is kept.
    pub data_dir: PathBuf,
    pub mode: Mode,
    pub metadata: TaskMetadata,
    pub backoff: Backoff,
    /// The spool whose events this link delivers.
    pub outbox: Arc<Outbox>,
    /// Receives every runtime policy the Console sends (Welcome and PolicyUpdate).
    pub policy: Option<tokio::sync::watch::Sender<Option<Policy>>>,
    /// Receives every WAAS policy the Console sends (Welcome and PolicyUpdate), for the proxy.
    pub waas: Option<tokio::sync::watch::Sender<Option<Policy>>>,
    /// The capture mode and its counters, reported in Hello and every heartbeat (None:
    /// nothing is captured here, e.g. a simulated Defender).
    pub capture: Option<Arc<crate::capture::CaptureState>>,
}

/// What the link is doing, for health checks and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    Starting,
    Connected { defender_id: String },
    Disconnected { reason: String },
}

/// A running link; dropping it does not stop it, `stop` does.
pub struct Link {
    state: watch::Receiver<LinkState>,
    identity: watch::Receiver<Option<Identity>>,
    task: JoinHandle<()>,
    renewer: JoinHandle<()>,
}

impl Link {
    /// Starts the link in the background, and its certificate renewal beside it.
    pub fn spawn(cfg: LinkConfig) -> Self {
        let (tx, state) = watch::channel(LinkState::Starting);
        let (ids, identity) = watch::channel(None);
        let addrs = Arc::new(ConsoleAddrs::new(cfg.bundle.addrs()));
        let renewer = tokio::spawn(renew_loop(
            cfg.bundle.clone(),
            Arc::clone(&addrs),
            cfg.data_dir.join("identity"),
            ids.clone(),
        ));
        let task = tokio::spawn(run(cfg, addrs, tx, ids));
        Self {
            state,
            identity,
            task,
            renewer,
        }
    }

    /// Watches the identity in use (changes on enrollment and on each renewal).
    pub fn identity(&self) -> watch::Receiver<Option<Identity>> {
        self.identity.clone()
    }

    /// Watches the link's state.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Stops the link abruptly (the stream is cut, as when the process dies).
    pub fn stop(self) {
        self.task.abort();
        self.renewer.abort();
    }
}

enum StreamEnd {
    /// The Console closed the stream or the connection broke; try again.
    Lost(String),
    /// The Console does not accept this identity; enroll again.
    IdentityRejected(String),
    /// This Defender was decommissioned.
    Decommissioned(String),
    /// Another stream with this identity took over (the Console keeps the newest).
    Superseded(String),
    /// The Console refused what this Defender sent (a batch it will not store, an oversized
    /// message): nothing of it was acked, so it stays spooled. Retried with backoff, which is
    /// not reset, so a refusal that repeats cannot become a tight reconnect loop.
    Refused(String),
}

async fn run(
    cfg: LinkConfig,
    addrs: Arc<ConsoleAddrs>,
    state: watch::Sender<LinkState>,
    ids: watch::Sender<Option<Identity>>,
) {
    let mut delay = cfg.backoff.initial;
    let id_dir = cfg.data_dir.join("identity");
    loop {
        // The renewer may have replaced the identity since the last stream: use the newest.
        let now = unix_ms();
        let known = ids.borrow().clone().filter(|id| id.usable_at(now));
        let addr = addrs.current();
        let identity = match known.or_else(|| identity::load(&id_dir, &cfg.bundle, now)) {
            Some(id) => Ok(id),
            None => {
                tracing::info!(console = %addr, "enrolling with the Console");
                let meta = cfg.metadata.clone();
                identity::enroll_at(&id_dir, &cfg.bundle, addr, meta, cfg.mode).await
            }
        };
        if let Ok(id) = &identity {
            ids.send_if_modified(|cur| {
                let same = cur.as_ref().is_some_and(|c| c.cert_pem == id.cert_pem);
                if !same {
                    *cur = Some(id.clone());
                }
                !same
            });
        }
        let started = tokio::time::Instant::now();
        let mut acked = false;
        let end = match identity {
            Ok(id) => stream(&cfg, addr, &id, &state, &mut acked).await,
            Err(e) => {
                let hint = if e.is_permanent() {
                    " (check the install bundle's token)"
                } else {
                    ""
                };
                StreamEnd::Lost(format!("enrollment failed: {e}{hint}"))
            }
        };
        // Only a stream that worked resets the backoff (it had events acked, or stayed up for
        // a while): one that is refused or cut right after Welcome must not turn into
        // reconnecting several times a second. Two holders of one identity would take the
        // stream from each other forever: after being superseded the delay keeps growing too.
        let stable = matches!(*state.borrow(), LinkState::Connected { .. })
            && !matches!(end, StreamEnd::Refused(_) | StreamEnd::Superseded(_))
            && (acked || started.elapsed() >= cfg.backoff.max.min(STABLE_STREAM));
        let reason = match end {
            StreamEnd::Lost(r) => r,
            StreamEnd::Superseded(r) => {
                format!("{r}: another process uses this Defender's identity")
            }
            StreamEnd::Refused(r) => {
                tracing::error!("the Console refused this Defender's data: {r}");
                format!("the Console refused this Defender's data ({r})")
            }
            StreamEnd::IdentityRejected(r) => {
                identity::forget(&id_dir);
                ids.send_replace(None);
                format!("the Console rejected this Defender's certificate ({r}); enrolling again")
            }
            StreamEnd::Decommissioned(r) => format!("the Console refuses this Defender: {r}"),
        };
        if stable {
            delay = cfg.backoff.initial;
        }
        let wait = jitter(delay);
        if addrs.len() > 1 {
            // Another replica next: a dead or refusing address is not retried before the
            // others were tried, and the backoff still paces the attempts.
            let next = addrs.fail_over();
            tracing::warn!(
                console = %addr,
                next_console = %next,
                "Console link down: {reason}; retrying in {:.1}s at {next}",
                wait.as_secs_f64()
            );
        } else {
            tracing::warn!(
                "Console link down: {reason}; retrying in {:.1}s",
                wait.as_secs_f64()
            );
        }
        state.send_replace(LinkState::Disconnected { reason });
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(cfg.backoff.max);
    }
}

/// Renews the identity in `ids` once [`identity::RENEW_AT_FRACTION`] of its certificate's
/// life has passed (`DefenderService.Renew` over mTLS: same Defender id, new key), stores it
/// atomically and publishes it; the open stream is left alone, the next one uses the new
/// certificate. Failures are retried after a twentieth of the remaining life (1 s to 60 s);
/// a certificate that expires anyway leads to a new enrollment by [`run`]. Renews with the
/// Console address the link currently uses.
async fn renew_loop(
    bundle: InstallBundle,
    addrs: Arc<ConsoleAddrs>,
    id_dir: PathBuf,
    ids: watch::Sender<Option<Identity>>,
) {
    let mut changes = ids.subscribe();
    let mut retry_at: Option<i64> = None;
    loop {
        let current = changes.borrow_and_update().clone();
        let Some(current) = current else {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        };
        let due = retry_at.unwrap_or_else(|| current.renew_at_ms());
        let wait = Duration::from_millis(u64::try_from(due - unix_ms()).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                retry_at = None;
                continue;
            }
        }
        match identity::renew_at(&id_dir, &bundle, addrs.current(), &current).await {
            Ok(renewed) => {
                tracing::info!(
                    defender_id = %renewed.defender_id,
                    not_after_ms = renewed.not_after_ms,
                    "client certificate renewed"
                );
                retry_at = None;
                ids.send_replace(Some(renewed));
            }
            Err(e) => {
                let left = (current.not_after_ms - unix_ms()).max(0);
                let backoff = (left / 20).clamp(1_000, 60_000);
                tracing::warn!(
                    "certificate renewal failed: {e}; retrying in {} s",
                    backoff / 1000
                );
                retry_at = Some(unix_ms() + backoff);
            }
        }
    }
}

/// Between half and all of `d`, so a fleet does not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..=1.0))
}

/// A stream open this long counts as working even if nothing was acked on it.
const STABLE_STREAM: Duration = Duration::from_secs(10);

/// Holds one Connect stream to the Console at `addr` until it ends; `acked` turns true once the Console acked events.
async fn stream(
    cfg: &LinkConfig,
    addr: &str,
    id: &Identity,
    state: &watch::Sender<LinkState>,
    acked: &mut bool,
) -> StreamEnd {
    let channel = match transport::channel_to(&cfg.bundle, addr, Some(id)).await {
        Ok(c) => c,
        Err(e) => return StreamEnd::Lost(e.to_string()),
    };
    let mut client = DefenderServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<DefenderMessage>(64);
    let hello = DefenderMessage {
        msg: Some(defender_message::Msg::Hello(Hello {
            metadata: Some(cfg.metadata.clone()),
            agent_version: crate::VERSION.to_owned(),
            mode: cfg.mode as i32,
            last_acked_seq: cfg.outbox.stats().acked_seq,
            capture: cfg.capture.as_ref().map(|c| c.status()),
        })),
    };
    if tx.send(hello).await.is_err() {
        return StreamEnd::Lost("internal channel closed".into());
    }
    let mut inbound = match client.connect(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => return classify(&s),
    };
    let welcome = match tokio::time::timeout(WELCOME_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(ConsoleMessage {
            msg: Some(console_message::Msg::Welcome(w)),
        }))) => w,
        Ok(Err(s)) => return classify(&s),
        Ok(Ok(_)) => return StreamEnd::Lost("the Console did not answer with Welcome".into()),
        Err(_) => return StreamEnd::Lost("timed out waiting for Welcome".into()),
    };
    if let (Some(tx), Some(p)) = (&cfg.policy, welcome.policy.clone()) {
        publish_policy(tx, p);
    }
    if let (Some(tx), Some(p)) = (&cfg.waas, welcome.waas.clone()) {
        publish_policy(tx, p);
    }
    let interval = match welcome.heartbeat_interval_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(u64::from(ms))
            .clamp(Duration::from_millis(50), Duration::from_secs(300)),
    };
    tracing::info!(
        console = %addr,
        defender_id = %id.defender_id,
        heartbeat_ms = interval.as_millis() as u64,
        "connected to the Console"
    );
    state.send_replace(LinkState::Connected {
        defender_id: id.defender_id.clone(),
    });
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu = selfstats::CpuMeter::new();
    let outbox = &cfg.outbox;
    // Trust the Console's figure: it has everything up to it, and nothing after it.
    let mut cursor = welcome.last_stored_seq;
    {
        let mut spool = outbox.spool();
        if let Err(e) = spool
            .ensure_next_seq_above(welcome.last_stored_seq)
            .and_then(|()| spool.ack(welcome.last_stored_seq))
        {
            return StreamEnd::Lost(format!("spool: {e}"));
        }
    }
    // The first heartbeat goes at once, before any replay, so the Console sees the spool's
    // figures (drops counted while disconnected) without waiting an interval.
    if let Err(end) = heartbeat(&tx, outbox, &mut cpu, cfg.capture.as_deref()).await {
        return end;
    }
    let mut in_flight: VecDeque<u64> = VecDeque::new();
    loop {
        if in_flight.len() < WINDOW_BATCHES {
            match next_batch(outbox, cursor) {
                Ok(Some((last, batch))) if batch.events.is_empty() => {
                    cursor = last;
                    continue;
                }
                Ok(Some((last, batch))) => {
                    let msg = DefenderMessage {
                        msg: Some(defender_message::Msg::Events(batch)),
                    };
                    if tx.send(msg).await.is_err() {
                        return StreamEnd::Lost("stream closed".into());
                    }
                    cursor = last;
                    in_flight.push_back(last);
                    continue;
                }
                Ok(None) => {}
                Err(e) => return StreamEnd::Lost(format!("spool: {e}")),
            }
        }
        let window_open = in_flight.len() < WINDOW_BATCHES;
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(end) = heartbeat(&tx, outbox, &mut cpu, cfg.capture.as_deref()).await {
                    return end;
                }
            }
            _ = outbox.appended(), if window_open => {}
            msg = inbound.message() => match msg {
                Ok(Some(m)) => match m.msg {
                    Some(console_message::Msg::Ack(ack)) => {
                        *acked = true;
                        if let Err(e) = outbox.spool().ack(ack.up_to_seq) {
                            return StreamEnd::Lost(format!("spool: {e}"));
                        }
                        while in_flight.front().is_some_and(|s| *s <= ack.up_to_seq) {
                            in_flight.pop_front();
                        }
                    }
                    Some(console_message::Msg::Policy(update)) => {
                        if let (Some(tx), Some(p)) = (&cfg.policy, update.policy) {
                            publish_policy(tx, p);
                        }
                        if let (Some(tx), Some(p)) = (&cfg.waas, update.waas) {
                            publish_policy(tx, p);
                        }
                    }
                    _ => {}
                },
                Ok(None) => return StreamEnd::Lost("the Console closed the stream".into()),
                Err(s) => return classify(&s),
            }
        }
    }
}

/// Sends one heartbeat with the spool's figures (and fsyncs the spool if its policy wants).
async fn heartbeat(
    tx: &mpsc::Sender<DefenderMessage>,
    outbox: &Outbox,
    cpu: &mut selfstats::CpuMeter,
    capture: Option<&crate::capture::CaptureState>,
) -> Result<(), StreamEnd> {
    if let Err(e) = outbox.spool().sync() {
        tracing::warn!("spool sync failed: {e}");
    }
    let stats = outbox.stats();
    let hb = Heartbeat {
        queue_depth: stats.pending,
        spool_bytes: stats.bytes,
        dropped_events: stats.dropped,
        rss_bytes: selfstats::rss_bytes(),
        cpu_centipercent: cpu.centipercent(),
        sent_at_ms: unix_ms(),
        capture: capture.map(crate::capture::CaptureState::status),
    };
    let msg = DefenderMessage {
        msg: Some(defender_message::Msg::Heartbeat(hb)),
    };
    tx.send(msg)
        .await
        .map_err(|_| StreamEnd::Lost("stream closed".into()))
}

/// The next batch of spooled events after `cursor` with the last seq it covers, if any.
fn next_batch(
    outbox: &Outbox,
    cursor: u64,
) -> Result<Option<(u64, EventBatch)>, crate::spool::SpoolError> {
    let records =
        outbox
            .spool()
            .read_after(cursor, defender_proto::MAX_BATCH_EVENTS, BATCH_BYTES)?;
    let Some(last) = records.last().map(|(seq, _)| *seq) else {
        return Ok(None);
    };
    let events = records
        .into_iter()
        .filter_map(|(seq, bytes)| match Event::decode(bytes.as_slice()) {
            Ok(mut e) => {
                e.seq = seq;
                Some(e)
            }
            Err(e) => {
                // Framing and checksum passed, so this is a bug, not disk damage: skip it loudly.
                tracing::error!(seq, "undecodable spooled event skipped: {e}");
                None
            }
        })
        .collect();
    Ok(Some((last, EventBatch { events })))
}

/// Passes a policy on unless the same or a newer version is already there.
fn publish_policy(tx: &tokio::sync::watch::Sender<Option<Policy>>, p: Policy) {
    tx.send_if_modified(|cur| {
        if cur.as_ref().is_some_and(|c| c.version >= p.version) {
            return false;
        }
        tracing::info!(version = p.version, "runtime policy received");
        *cur = Some(p);
        true
    });
}

fn classify(s: &tonic::Status) -> StreamEnd {
    match s.code() {
        tonic::Code::Unauthenticated => StreamEnd::IdentityRejected(describe_status(s)),
        tonic::Code::PermissionDenied => StreamEnd::Decommissioned(s.message().to_owned()),
        tonic::Code::Aborted => StreamEnd::Superseded(s.message().to_owned()),
        tonic::Code::InvalidArgument
        | tonic::Code::OutOfRange
        | tonic::Code::FailedPrecondition
        | tonic::Code::ResourceExhausted => StreamEnd::Refused(describe_status(s)),
        _ => StreamEnd::Lost(describe_status(s)),
    }
}
