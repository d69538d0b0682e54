//! The Defender's link to the Console: enroll when needed, hold the one mTLS Connect stream,
//! heartbeat at the interval the Console sets, send the spool's events (replaying everything
//! after the Console's last stored seq), delete what the Console acks, and reconnect with capped
//! exponential backoff plus jitter whenever the stream is lost.

use std::path::PathBuf;
use std::time::Duration;

use defender_proto::MAX_MESSAGE_BYTES;
use defender_proto::v1::{
    ConsoleMessage, DefenderMessage, Heartbeat, Hello, Mode, TaskMetadata, console_message,
    defender_message, defender_service_client::DefenderServiceClient,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::bundle::InstallBundle;
use crate::identity::{self, Identity};
use crate::transport::{self, describe_status};
use crate::{selfstats, unix_ms};

/// How long the Console may take to answer Hello with Welcome.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

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
    task: JoinHandle<()>,
}

impl Link {
    /// Starts the link in the background.
    pub fn spawn(cfg: LinkConfig) -> Self {
        let (tx, state) = watch::channel(LinkState::Starting);
        let task = tokio::spawn(run(cfg, tx));
        Self { state, task }
    }

    /// Watches the link's state.
    pub fn state(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    /// Stops the link abruptly (the stream is cut, as when the process dies).
    pub fn stop(self) {
        self.task.abort();
    }
}

enum StreamEnd {
    /// The Console closed the stream or the connection broke; try again.
    Lost(String),
    /// The Console does not accept this identity; enroll again.
    IdentityRejected(String),
    /// This Defender was decommissioned.
    Decommissioned(String),
}

async fn run(cfg: LinkConfig, state: watch::Sender<LinkState>) {
    let mut delay = cfg.backoff.initial;
    let id_dir = cfg.data_dir.join("identity");
    loop {
        let identity = match identity::load(&id_dir, &cfg.bundle, unix_ms()) {
            Some(id) => Ok(id),
            None => {
                tracing::info!(console = %cfg.bundle.console_addr, "enrolling with the Console");
                identity::enroll(&id_dir, &cfg.bundle, cfg.metadata.clone(), cfg.mode).await
            }
        };
        let end = match identity {
            Ok(id) => stream(&cfg, &id, &state).await,
            Err(e) => {
                let hint = if e.is_permanent() {
                    " (check the install bundle's token)"
                } else {
                    ""
                };
                StreamEnd::Lost(format!("enrollment failed: {e}{hint}"))
            }
        };
        let reason = match end {
            StreamEnd::Lost(r) => r,
            StreamEnd::IdentityRejected(r) => {
                identity::forget(&id_dir);
                format!("the Console rejected this Defender's certificate ({r}); enrolling again")
            }
            StreamEnd::Decommissioned(r) => format!("the Console refuses this Defender: {r}"),
        };
        if matches!(*state.borrow(), LinkState::Connected { .. }) {
            delay = cfg.backoff.initial;
        }
        let wait = jitter(delay);
        tracing::warn!(
            "Console link down: {reason}; retrying in {:.1}s",
            wait.as_secs_f64()
        );
        state.send_replace(LinkState::Disconnected { reason });
        tokio::time::sleep(wait).await;
        delay = (delay * 2).min(cfg.backoff.max);
    }
}

/// Between half and all of `d`, so a fleet does not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..=1.0))
}

async fn stream(cfg: &LinkConfig, id: &Identity, state: &watch::Sender<LinkState>) -> StreamEnd {
    let channel = match transport::channel(&cfg.bundle, Some(id)).await {
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
            last_acked_seq: 0,
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
    let interval = match welcome.heartbeat_interval_ms {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(u64::from(ms))
            .clamp(Duration::from_millis(50), Duration::from_secs(300)),
    };
    tracing::info!(
        defender_id = %id.defender_id,
        heartbeat_ms = interval.as_millis() as u64,
        "connected to the Console"
    );
    state.send_replace(LinkState::Connected {
        defender_id: id.defender_id.clone(),
    });
    let mut ticker = tokio::time::interval(interval);
    let mut cpu = selfstats::CpuMeter::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let hb = Heartbeat {
                    rss_bytes: selfstats::rss_bytes(),
                    cpu_centipercent: cpu.centipercent(),
                    sent_at_ms: unix_ms(),
                    ..Default::default()
                };
                let msg = DefenderMessage { msg: Some(defender_message::Msg::Heartbeat(hb)) };
                if tx.send(msg).await.is_err() {
                    return StreamEnd::Lost("stream closed".into());
                }
            }
            msg = inbound.message() => match msg {
                Ok(Some(_)) => {}
                Ok(None) => return StreamEnd::Lost("the Console closed the stream".into()),
                Err(s) => return classify(&s),
            }
        }
    }
}

fn classify(s: &tonic::Status) -> StreamEnd {
    match s.code() {
        tonic::Code::Unauthenticated => StreamEnd::IdentityRejected(describe_status(s)),
        tonic::Code::PermissionDenied => StreamEnd::Decommissioned(s.message().to_owned()),
        _ => StreamEnd::Lost(describe_status(s)),
    }
}
