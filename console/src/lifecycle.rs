//! The identity lifecycle's moving parts, shared by the gRPC and HTTP sides: the registry of
//! live streams, the rate limiters, decommissioning, and retention (with its figures for
//! `/metrics`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::grpc::registry::{self, StreamRegistry};
use crate::ratelimit::{KeyedLimiter, LoginLimiter, RateLimits};
use crate::store::{Store, StoreError, now_ms};

/// Lifecycle settings of a Console (`serve` flags); [`Default`] is what `serve` uses.
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    pub rate_limits: RateLimits,
    /// Events received longer ago than this are deleted (`--event-retention`, default 30 days).
    pub event_retention: Duration,
    /// Decommissioned Defenders, and Defenders disconnected for longer than this, are deleted
    /// with their sessions and events (`--defender-purge-after`, default 30 days).
    pub defender_purge_after: Duration,
    /// Pause between retention passes.
    pub retention_interval: Duration,
    /// Rows deleted per transaction: small, so ingest's transactions never wait long.
    pub retention_batch: i64,
    /// How often streams decommissioned by another process (the CLI, another replica) are
    /// looked for, to close them.
    pub decommission_poll: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            rate_limits: RateLimits::default(),
            event_retention: Duration::from_secs(30 * 86_400),
            defender_purge_after: Duration::from_secs(30 * 86_400),
            retention_interval: Duration::from_secs(60),
            retention_batch: 500,
            decommission_poll: Duration::from_secs(2),
        }
    }
}

/// What retention has deleted since this process started (for `/metrics`).
#[derive(Default)]
pub struct RetentionStats {
    pub events_purged: AtomicU64,
    pub defenders_purged: AtomicU64,
    pub sessions_purged: AtomicU64,
    pub passes: AtomicU64,
    /// Unix ms of the end of the last pass (0: none yet).
    pub last_pass_ms: AtomicI64,
    /// Wall time of the last pass, ms.
    pub last_pass_duration_ms: AtomicU64,
    pub errors: AtomicU64,
}

/// Shared lifecycle state of a running Console.
pub struct Lifecycle {
    pub config: LifecycleConfig,
    pub streams: Arc<StreamRegistry>,
    pub enroll_per_token: KeyedLimiter,
    pub enroll_per_source: KeyedLimiter,
    pub renew_per_defender: KeyedLimiter,
    pub logins: LoginLimiter,
    pub retention: RetentionStats,
    /// Refusals by the rate limits, by door (for `/metrics`).
    pub refused_enrollments: AtomicU64,
    pub refused_renewals: AtomicU64,
    pub refused_logins: AtomicU64,
}

impl Lifecycle {
    /// Fresh state for `config`.
    pub fn new(config: LifecycleConfig) -> Self {
        let r = &config.rate_limits;
        Self {
            enroll_per_token: KeyedLimiter::new(r.enroll_per_token),
            enroll_per_source: KeyedLimiter::new(r.enroll_per_source),
            renew_per_defender: KeyedLimiter::new(r.renew_per_defender),
            logins: LoginLimiter::new(r),
            streams: Arc::new(StreamRegistry::default()),
            retention: RetentionStats::default(),
            refused_enrollments: AtomicU64::new(0),
            refused_renewals: AtomicU64::new(0),
            refused_logins: AtomicU64::new(0),
            config,
        }
    }

    /// Decommissions one Defender: refused from now on, and its open stream on this Console
    /// closed at once with `PERMISSION_DENIED` (streams on other replicas end at their next
    /// heartbeat or decommission poll). Returns false when it was unknown or already
    /// decommissioned.
    pub async fn decommission(&self, store: &Store, id: &str) -> Result<bool, StoreError> {
        let done = store.decommission_defender(id).await?;
        let closed = self.streams.close(id, registry::decommissioned());
        if done {
            tracing::info!(defender_id = %id, stream_closed = closed, "defender decommissioned");
        }
        Ok(done)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs retention until `stop` turns true: every `retention_interval`, delete events (and
/// ended sessions other than each Defender's newest) older than `event_retention`, and Defenders decommissioned or unseen for `defender_purge_after`,
/// `retention_batch` rows per transaction with a pause between transactions, so the event
/// writer's transactions interleave and ingest never waits behind a purge.
pub async fn run_retention(
    store: Store,
    lifecycle: Arc<Lifecycle>,
    mut stop: watch::Receiver<bool>,
) {
    let cfg = lifecycle.config.clone();
    let stats = &lifecycle.retention;
    loop {
        let started = std::time::Instant::now();
        let pass = async {
            let cutoff = now_ms().saturating_sub(ms(cfg.event_retention));
            loop {
                let n = store
                    .purge_events_before(cutoff, cfg.retention_batch)
                    .await?;
                stats.events_purged.fetch_add(n, Ordering::Relaxed);
                if n == 0 || *stop.borrow() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Old stream records of Defenders that stay: history, like events.
            loop {
                let n = store
                    .purge_sessions_before(cutoff, cfg.retention_batch)
                    .await?;
                stats.sessions_purged.fetch_add(n, Ordering::Relaxed);
                if n == 0 || *stop.borrow() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cutoff = now_ms().saturating_sub(ms(cfg.defender_purge_after));
            loop {
                let p = store
                    .purge_defenders(cutoff, 10, cfg.retention_batch)
                    .await?;
                stats.events_purged.fetch_add(p.events, Ordering::Relaxed);
                stats
                    .defenders_purged
                    .fetch_add(p.defenders, Ordering::Relaxed);
                stats
                    .sessions_purged
                    .fetch_add(p.sessions, Ordering::Relaxed);
                if (p.defenders == 0 && p.events == 0) || *stop.borrow() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<_, StoreError>(())
        };
        if let Err(e) = pass.await {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "retention pass failed");
        }
        stats.passes.fetch_add(1, Ordering::Relaxed);
        stats.last_pass_ms.store(now_ms(), Ordering::Relaxed);
        stats
            .last_pass_duration_ms
            .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        tokio::select! {
            _ = tokio::time::sleep(cfg.retention_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Closes the streams of Defenders that another process decommissioned (the CLI works on the
/// database directly), polling every `decommission_poll` until `stop` turns true.
pub async fn watch_decommissions(
    store: Store,
    lifecycle: Arc<Lifecycle>,
    mut stop: watch::Receiver<bool>,
) {
    // A little overlap, in case the other process's clock is slightly behind ours.
    let mut since = now_ms() - 60_000;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lifecycle.config.decommission_poll) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if lifecycle.streams.is_empty() {
            continue;
        }
        match store.decommissioned_since(since).await {
            Ok(rows) => {
                for (id, at) in rows {
                    since = since.max(at - 60_000);
                    if lifecycle.streams.close(&id, registry::decommissioned()) {
                        tracing::info!(defender_id = %id, "closed the stream of a defender decommissioned elsewhere");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "looking for decommissioned defenders failed"),
        }
    }
}
