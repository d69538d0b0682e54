//! Heartbeats, batched: one writer task gathers the heartbeats of every stream that arrived
//! while the previous batch was being written and records them with two statements in one
//! transaction, instead of a transaction per heartbeat (10,000 Defenders at the default 10 s
//! interval are 1,000 heartbeats a second). Each stream still learns whether its session is
//! open (it closes when a newer stream of its Defender, perhaps on another replica, or a
//! decommission ended it).
//!
//! Both statements join a `VALUES` list (`UPDATE … FROM (VALUES …) AS v`, whose columns both
//! databases name `column1`, `column2`, …). The Defenders' rows are written before their
//! sessions', the order `start_session` locks them in, so PostgreSQL cannot deadlock a batch
//! against a new stream; should it detect one anyway (rows of one batch locked in another
//! order by a concurrent replica), the batch is retried.

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot};

use super::{Health, SessionRef, Store, StoreError, now_ms};

/// Heartbeats recorded per transaction at most (9 bound values each, in two statements).
const MAX_PER_BATCH: usize = 500;
/// Tries of a batch that PostgreSQL aborted as a deadlock victim or serialization failure.
const TRIES: u32 = 3;

/// One heartbeat: the Defender's health figures, and how long its stream has been open on the
/// Console's monotonic clock (`alive_ms`, "Connected for").
#[derive(Clone, Debug)]
pub struct Beat {
    pub defender_id: String,
    pub session: SessionRef,
    pub health: Health,
    pub alive_ms: Option<i64>,
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Records `beats` (at most one per session is kept: the last) and returns, per beat,
    /// whether its session was still open. A closed session's beat changes nothing.
    pub async fn record_heartbeats(&self, beats: &[Beat]) -> Result<Vec<bool>, StoreError> {
        let mut last: HashMap<i64, &Beat> = HashMap::new();
        for b in beats {
            last.insert(b.session.0, b);
        }
        let mut rows: Vec<&Beat> = last.into_values().collect();
        // A stable order of the rows a batch locks.
        rows.sort_by(|a, b| a.defender_id.cmp(&b.defender_id));
        let mut tries = 0;
        let open = loop {
            tries += 1;
            match self.write_heartbeats(&rows).await {
                Err(StoreError::Db(sqlx::Error::Database(e)))
                    if tries < TRIES && matches!(e.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    tracing::info!(error = %e, "heartbeat batch retried");
                }
                other => break other?,
            }
        };
        Ok(beats.iter().map(|b| open.contains(&b.session.0)).collect())
    }

    /// One transaction for `rows`: the open sessions' ids.
    async fn write_heartbeats(&self, rows: &[&Beat]) -> Result<HashSet<i64>, StoreError> {
        let now = now_ms();
        with_pool!(&self.pool, |pool| {
            let mut tx = pool.begin().await?;
            let mut open = HashSet::with_capacity(rows.len());
            for chunk in rows.chunks(MAX_PER_BATCH) {
                // Health of the Defenders whose session is open (read, not locked, here).
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE defenders SET queue_depth = v.column3, spool_bytes = v.column4, \
                     dropped_events = v.column5, rss_bytes = v.column6, \
                     cpu_centipercent = v.column7 FROM (",
                );
                qb.push_values(chunk, |mut r, b| {
                    r.push_bind(b.defender_id.as_str())
                        .push_bind(b.session.0)
                        .push_bind(clamp(b.health.queue_depth))
                        .push_bind(clamp(b.health.spool_bytes))
                        .push_bind(clamp(b.health.dropped_events))
                        .push_bind(clamp(b.health.rss_bytes))
                        .push_bind(i64::from(b.health.cpu_centipercent));
                });
                qb.push(
                    ") AS v WHERE defenders.id = v.column1 AND EXISTS \
                     (SELECT 1 FROM sessions s WHERE s.id = v.column2 AND s.ended_at IS NULL)",
                );
                qb.build().execute(&mut *tx).await?;

                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "UPDATE sessions SET last_heartbeat = v.column2, \
                     alive_ms = COALESCE(v.column3, sessions.alive_ms) FROM (",
                );
                qb.push_values(chunk, |mut r, b| {
                    r.push_bind(b.session.0)
                        .push_bind(now)
                        .push_bind(b.alive_ms);
                });
                qb.push(
                    ") AS v WHERE sessions.id = v.column1 AND sessions.ended_at IS NULL \
                     RETURNING sessions.id",
                );
                let ids: Vec<i64> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
                open.extend(ids);
            }
            tx.commit().await?;
            Ok(open)
        })
    }
}

type Request = (Beat, oneshot::Sender<Result<bool, String>>);

/// Sends heartbeats to the single heartbeat writer task.
#[derive(Clone)]
pub struct HeartbeatWriter {
    tx: mpsc::Sender<Request>,
}

impl HeartbeatWriter {
    /// Starts the writer task on `store`.
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_PER_BATCH);
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Records `beat` with whatever else is queued; true when its session is still open.
    pub async fn beat(&self, beat: Beat) -> Result<bool, StoreError> {
        let stopped = || StoreError::Db(sqlx::Error::PoolClosed);
        let (done, wait) = oneshot::channel();
        self.tx.send((beat, done)).await.map_err(|_| stopped())?;
        match wait.await {
            Ok(Ok(open)) => Ok(open),
            Ok(Err(msg)) => Err(StoreError::Db(sqlx::Error::Protocol(msg))),
            Err(_) => Err(stopped()),
        }
    }
}

async fn run(store: Store, mut rx: mpsc::Receiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_PER_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let beats: Vec<Beat> = batch.iter().map(|(b, _)| b.clone()).collect();
        match store.record_heartbeats(&beats).await {
            Ok(open) => {
                for ((_, done), open) in batch.into_iter().zip(open) {
                    let _ = done.send(Ok(open));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, heartbeats = beats.len(), "storing heartbeats failed");
                for (_, done) in batch {
                    let _ = done.send(Err(e.to_string()));
                }
            }
        }
    }
}
