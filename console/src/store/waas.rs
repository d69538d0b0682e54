//! WAAS: saved versions of the WAAS policy (the newest is in force), and the WAAS events'
//! index (their fields decoded once from the stored protobuf into `waas_index`, as
//! [`super::audits`] does for runtime audits), its pages, counts per Defender and the webhook
//! forwarders' reads. `waas_index.id` is the event's rowid in `events`; retention deletes both
//! together (see `store::lifecycle`).

use std::collections::HashMap;

use defender_proto::v1::Event;
use defender_proto::v1::event::Kind;
use prost::Message;
use serde::Serialize;
use sqlx::QueryBuilder;

use super::{PolicyTable, PolicyVersion, Store, StoreError};

/// WAAS events indexed per statement (17 bound values per row).
const SYNC_CHUNK: i64 = 500;

/// One WAAS event with the Defender that reported it. Every text field is attacker-controlled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct WaasRecord {
    /// The event's rowid in `events` (page and webhook cursor unit).
    pub id: i64,
    pub defender_id: String,
    pub seq: i64,
    pub time_ms: i64,
    /// The id the client saw in the 403 page.
    pub event_id: String,
    pub rule: String,
    pub family: String,
    /// `alert`, `prevent` or `ban`.
    pub effect: String,
    pub client_ip: String,
    pub method: String,
    pub path: String,
    /// `query`, `body`, `header`, `cookie`, `path`...
    pub location: String,
    pub name: String,
    pub matched: String,
    pub message: String,
    /// Status sent to the client (0 when passed on).
    pub status: i64,
    /// The body was longer than the inspection prefix.
    pub incomplete: bool,
    /// The Defender's hostname (empty when its row is gone).
    pub hostname: String,
}

/// Which WAAS events a page holds (filters AND; `None` is any), newest first.
#[derive(Clone, Debug, Default)]
pub struct WaasQuery {
    pub defender_id: Option<String>,
    pub rule: Option<String>,
    pub family: Option<String>,
    pub effect: Option<String>,
    /// The id quoted from a 403 page.
    pub event_id: Option<String>,
    /// Only events with a smaller id (the "Older" cursor).
    pub before: Option<i64>,
    pub limit: i64,
}

/// WAAS events of one Defender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WaasCounts {
    pub total: i64,
    /// Refused (prevent or ban).
    pub refused: i64,
}

const COLUMNS: &str = "SELECT w.id, w.defender_id, w.seq, w.time_ms, w.event_id, w.rule, w.family, \
     w.effect, w.client_ip, w.method, w.path, w.location, w.name, w.matched, w.message, w.status, \
     w.incomplete, COALESCE(d.hostname, '') AS hostname \
     FROM waas_index w LEFT JOIN defenders d ON d.id = w.defender_id ";

type EventRow = (i64, String, i64, i64, Vec<u8>);

/// Serialises [`Store::sync_waas_index`] within the process.
static SYNC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Store {
    /// The WAAS policy in force, if one was ever saved.
    pub async fn current_waas_policy(&self) -> Result<Option<PolicyVersion>, StoreError> {
        self.current_version(PolicyTable::Waas).await
    }

    /// Saves a new WAAS policy version (already validated by the caller) and returns it.
    pub async fn save_waas_policy(
        &self,
        json: &str,
        saved_by: &str,
    ) -> Result<PolicyVersion, StoreError> {
        self.save_version(PolicyTable::Waas, json, saved_by).await
    }

    /// Indexes the WAAS events committed since the last call.
    pub async fn sync_waas_index(&self) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            let _one = SYNC.lock().await;
            loop {
                let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM waas_index")
                    .fetch_one(pool)
                    .await?;
                let rows: Vec<EventRow> = sqlx::query_as(
                    "SELECT rowid, defender_id, seq, time_ms, body FROM events \
                 WHERE kind = 'waas' AND rowid > $1 ORDER BY rowid LIMIT $2",
                )
                .bind(last)
                .bind(SYNC_CHUNK)
                .fetch_all(pool)
                .await?;
                if rows.is_empty() {
                    return Ok(());
                }
                let short = (rows.len() as i64) < SYNC_CHUNK;
                let mut qb = QueryBuilder::<Db>::new(
                    "INSERT INTO waas_index (id, defender_id, seq, time_ms, event_id, rule, family, \
                 effect, client_ip, method, path, location, name, matched, message, status, \
                 incomplete) ",
                );
                qb.push_values(rows, |mut b, (id, defender_id, seq, time_ms, body)| {
                    // An undecodable body indexes as an empty rule, so the index moves past it.
                    let w = match Event::decode(body.as_slice()) {
                        Ok(Event {
                            kind: Some(Kind::Waas(w)),
                            ..
                        }) => w,
                        _ => {
                            tracing::warn!(defender_id, seq, "stored WAAS event does not decode");
                            Default::default()
                        }
                    };
                    b.push_bind(id)
                        .push_bind(defender_id)
                        .push_bind(seq)
                        .push_bind(time_ms)
                        .push_bind(w.event_id)
                        .push_bind(w.rule)
                        .push_bind(w.family)
                        .push_bind(w.effect)
                        .push_bind(w.client_ip)
                        .push_bind(w.method)
                        .push_bind(w.path)
                        .push_bind(w.location)
                        .push_bind(w.name)
                        .push_bind(w.matched)
                        .push_bind(w.message)
                        .push_bind(i64::from(w.status))
                        .push_bind(w.incomplete);
                });
                qb.push(" ON CONFLICT (id) DO NOTHING");
                qb.build().execute(pool).await?;
                if short {
                    return Ok(());
                }
            }
        })
    }

    /// One page of WAAS events matching `q`, newest first; the second value is the `before`
    /// cursor of the next older page, when there is one.
    pub async fn waas_page(
        &self,
        q: &WaasQuery,
    ) -> Result<(Vec<WaasRecord>, Option<i64>), StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_waas_index().await?;
            let limit = q.limit.clamp(1, 1000);
            let mut qb = QueryBuilder::<Db>::new(COLUMNS);
            qb.push("WHERE 1 = 1");
            let filters = [
                ("w.defender_id", &q.defender_id),
                ("w.rule", &q.rule),
                ("w.family", &q.family),
                ("w.effect", &q.effect),
                ("w.event_id", &q.event_id),
            ];
            for (col, v) in filters {
                if let Some(v) = v {
                    qb.push(format!(" AND {col} = ")).push_bind(v.clone());
                }
            }
            if let Some(b) = q.before {
                qb.push(" AND w.id < ").push_bind(b);
            }
            qb.push(" ORDER BY w.id DESC LIMIT ").push_bind(limit + 1);
            let mut rows: Vec<WaasRecord> = qb.build_query_as().fetch_all(pool).await?;
            let more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            let older = if more {
                rows.last().map(|r| r.id)
            } else {
                None
            };
            Ok((rows, older))
        })
    }

    /// WAAS counts (events, refused) of the Defenders `ids` (one page of Manage > Defenders).
    pub async fn waas_counts_for(
        &self,
        ids: impl Iterator<Item = &str>,
    ) -> Result<HashMap<String, WaasCounts>, StoreError> {
        self.sync_waas_index().await?;
        let counts = self
            .counts_per_defender("waas_index", "effect IN ('prevent', 'ban')", ids)
            .await?;
        Ok(counts
            .into_iter()
            .map(|(id, (total, refused))| (id, WaasCounts { total, refused }))
            .collect())
    }

    /// WAAS events per family across every Defender: `(family, events, refused)`, most first
    /// (the overview above Monitor > Events > WAAS).
    pub async fn waas_family_counts(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_waas_index().await?;
            Ok(sqlx::query_as(
                "SELECT family, COUNT(*) AS n, \
             SUM(CASE WHEN effect IN ('prevent', 'ban') THEN 1 ELSE 0 END) \
             FROM waas_index GROUP BY family ORDER BY n DESC, family",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// WAAS events stored after rowid `after`, oldest first (webhook forwarding).
    pub async fn waas_after(&self, after: i64, limit: i64) -> Result<Vec<WaasRecord>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_waas_index().await?;
            let mut qb = QueryBuilder::<Db>::new(COLUMNS);
            qb.push("WHERE w.id > ")
                .push_bind(after)
                .push(" ORDER BY w.id ASC LIMIT ")
                .push_bind(limit);
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// Rowid of the newest stored WAAS event, 0 when there is none.
    pub async fn last_waas_rowid(&self) -> Result<i64, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(
                sqlx::query_scalar(
                    "SELECT COALESCE(MAX(rowid), 0) FROM events WHERE kind = 'waas'",
                )
                .fetch_one(pool)
                .await?,
            )
        })
    }
}
