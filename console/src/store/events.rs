//! Event ingest: one writer task batches the events of every stream into few transactions and
//! answers each stream only after the commit, which is what makes an `Ack` safe to send.

use defender_proto::v1::{Event, event::Kind};
use prost::Message;
use sqlx::QueryBuilder;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, now_ms};

/// Most events written in one transaction.
const MAX_EVENTS_PER_TX: usize = 2000;
/// Rows per multi-row INSERT statement (SQLite allows 32766 bound values; 8 per row).
const ROWS_PER_STATEMENT: usize = 500;

/// Why events could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the event writer has stopped")]
    Stopped,
    /// Nothing of the batch was stored.
    #[error(transparent)]
    Refused(#[from] crate::limits::BatchError),
}

struct WriteRequest {
    defender_id: String,
    events: Vec<Event>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Sends event batches to the single writer task.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<WriteRequest>,
}

/// An event as stored, for pages and the API.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub defender_id: String,
    pub seq: i64,
    pub kind: String,
    pub time_ms: i64,
    pub received_at: i64,
    pub container: String,
    pub pid: Option<i64>,
    pub event: Event,
}

impl EventWriter {
    /// Starts the writer task on `store`.
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(run_writer(store, rx));
        Self { tx }
    }

    /// Stores `events` of one Defender; returns once they are committed (duplicates are no-ops).
    /// Every event is first cut to the limits of [`crate::limits`]; a seq outside
    /// `1..=i64::MAX` refuses the whole batch (it could not be stored as it is).
    pub async fn write(&self, defender_id: &str, mut events: Vec<Event>) -> Result<(), WriteError> {
        if let Some(bad) = events
            .iter()
            .find(|e| e.seq == 0 || i64::try_from(e.seq).is_err())
        {
            return Err(crate::limits::BatchError::Seq(bad.seq).into());
        }
        for e in &mut events {
            crate::limits::bound_event(e);
        }
        let (done, wait) = oneshot::channel();
        self.tx
            .send(WriteRequest {
                defender_id: defender_id.to_owned(),
                events,
                done,
            })
            .await
            .map_err(|_| WriteError::Stopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(msg)) => Err(WriteError::Store(StoreError::Db(sqlx::Error::Protocol(
                msg,
            )))),
            Err(_) => Err(WriteError::Stopped),
        }
    }
}

async fn run_writer(store: Store, mut rx: mpsc::Receiver<WriteRequest>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let mut count = batch[0].events.len();
        while count < MAX_EVENTS_PER_TX {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.events.len();
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        let result = store.insert_events(&batch).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, events = count, "storing events failed");
        }
        for req in batch {
            let _ = req
                .done
                .send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        }
    }
}

/// Short stable name of an event's kind, stored beside it for filtering.
pub fn kind_name(e: &Event) -> &'static str {
    match &e.kind {
        Some(Kind::ProcessStart(_)) => "process_start",
        Some(Kind::ProcessExit(_)) => "process_exit",
        Some(Kind::NetworkListen(_)) => "network_listen",
        Some(Kind::NetworkConnection(_)) => "network_connection",
        Some(Kind::Audit(_)) => "audit",
        Some(Kind::Notice(_)) => "notice",
        Some(Kind::DnsQuery(_)) => "dns_query",
        Some(Kind::Inventory(_)) => "inventory",
        Some(Kind::Compliance(_)) => "compliance",
        Some(Kind::Waas(_)) => "waas",
        None => "unknown",
    }
}

fn event_pid(e: &Event) -> Option<i64> {
    match &e.kind {
        Some(Kind::ProcessStart(p)) => Some(p.pid),
        Some(Kind::ProcessExit(p)) => Some(p.pid),
        Some(Kind::NetworkListen(n)) => Some(n.pid),
        Some(Kind::NetworkConnection(n)) => Some(n.pid),
        Some(Kind::Audit(a)) => Some(a.pid),
        Some(Kind::DnsQuery(q)) => Some(q.pid),
        _ => None,
    }
    .filter(|pid| *pid != 0)
    .map(i64::from)
}

/// Advisory lock key (`pg_advisory_xact_lock`) of the event writers on PostgreSQL ("events" in
/// ASCII); see `insert_events`.
const EVENTS_WRITER_LOCK: i64 = 0x6576_656e_7473;

impl Store {
    async fn insert_events(&self, batch: &[WriteRequest]) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let received = now_ms();
            let rows: Vec<(&str, &Event)> = batch
                .iter()
                .flat_map(|r| r.events.iter().map(move |e| (r.defender_id.as_str(), e)))
                .collect();
            let mut tx = pool.begin().await?;
            if self.is_postgres() {
                // `events.rowid` must grow in commit order (the index and webhook cursors read
                // "rowid > N"): with several writers (replicas) a lower id could commit after a
                // higher one was read. One writer at a time per database, released at commit.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(EVENTS_WRITER_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO events (defender_id, seq, kind, time_ms, received_at, container, pid, body) ",
                );
                qb.push_values(chunk, |mut b, (id, e)| {
                    b.push_bind(*id)
                        .push_bind(i64::try_from(e.seq).unwrap_or(i64::MAX))
                        .push_bind(kind_name(e))
                        .push_bind(e.time_ms)
                        .push_bind(received)
                        .push_bind(e.container.clone())
                        .push_bind(event_pid(e))
                        .push_bind(e.encode_to_vec());
                });
                qb.push(" ON CONFLICT (defender_id, seq) DO NOTHING");
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Highest seq stored for a Defender (0 when none): where its replay resumes.
    pub async fn last_stored_seq(&self, defender_id: &str) -> Result<u64, StoreError> {
        with_pool!(&self.pool, |pool| {
            let max: Option<i64> =
                sqlx::query_scalar("SELECT MAX(seq) FROM events WHERE defender_id = $1")
                    .bind(defender_id)
                    .fetch_one(pool)
                    .await?;
            Ok(max.map_or(0, |m| u64::try_from(m).unwrap_or(0)))
        })
    }

    /// Events of one Defender, newest first, optionally of one kind.
    pub async fn list_events(
        &self,
        defender_id: &str,
        kind: Option<&str>,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        with_pool!(&self.pool, |pool| {
            let rows: Vec<EventRow> = sqlx::query_as(
            "SELECT defender_id, seq, kind, time_ms, received_at, container, pid, body FROM events \
             WHERE defender_id = $1 AND ($2 IS NULL OR kind = $3) ORDER BY seq DESC LIMIT $4",
        )
        .bind(defender_id)
        .bind(kind)
        .bind(kind)
        .bind(limit)
        .fetch_all(pool)
        .await?;
            Ok(rows.into_iter().map(EventRow::into_stored).collect())
        })
    }

    /// Number of events stored for a Defender, from the counts the triggers of migration 0011
    /// keep (no scan of its events).
    pub async fn count_events(&self, defender_id: &str) -> Result<i64, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM event_counts WHERE defender_id = $1",
            )
            .bind(defender_id)
            .fetch_one(pool)
            .await?)
        })
    }
}

/// One row of `events`, as the queries of this module and of `forensics` read it.
#[derive(sqlx::FromRow)]
pub(super) struct EventRow {
    defender_id: String,
    seq: i64,
    kind: String,
    time_ms: i64,
    received_at: i64,
    container: String,
    pid: Option<i64>,
    body: Vec<u8>,
}

impl EventRow {
    /// Decodes the stored body (an undecodable one is logged and shown as an empty event).
    pub(super) fn into_stored(self) -> StoredEvent {
        let event = Event::decode(self.body.as_slice()).unwrap_or_else(|e| {
            tracing::warn!(defender_id = %self.defender_id, seq = self.seq, "stored event does not decode: {e}");
            Event::default()
        });
        StoredEvent {
            defender_id: self.defender_id,
            seq: self.seq,
            kind: self.kind,
            time_ms: self.time_ms,
            received_at: self.received_at,
            container: self.container,
            pid: self.pid,
            event,
        }
    }
}
