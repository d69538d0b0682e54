//! Runtime audits: the audit index (the audits' rule, effect and message decoded once from the
//! stored protobuf into `audit_index`, so filters, counts and pages are SQL), keyset pages of
//! audits across Defenders, counts per Defender, and the webhook forwarders' cursors.
//!
//! The index is filled from `events` by [`Store::sync_audit_index`], which every read here runs
//! first: it indexes the audits committed since the previous read (usually none, one indexed
//! lookup), so a page never lags behind ingest. `audit_index.id` is the audit's rowid in
//! `events`. Rowids grow with every insert and SQLite has one writer, so a row committed later
//! always has a larger rowid and "everything after rowid N" never skips a late commit. (Retention
//! deletes events oldest rowid first with their index rows and never the newest row, so rowids
//! are never reused — see `store::lifecycle`; the database must not be `VACUUM`ed: that may
//! renumber the rowids of a table without an `INTEGER PRIMARY KEY`.)

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use defender_proto::v1::Event;
use defender_proto::v1::event::Kind;
use prost::Message;
use sqlx::QueryBuilder;

use super::{Store, StoreError, now_ms};

/// `RuntimeAudit.effect` of an alert (`EFFECT_ALERT`).
pub const EFFECT_ALERT: i64 = 1;
/// `RuntimeAudit.effect` of a prevented violation (`EFFECT_PREVENT`).
pub const EFFECT_PREVENT: i64 = 2;

/// Audit events indexed per statement (10 bound values per row).
const SYNC_CHUNK: i64 = 500;

/// One audit with the Defender that reported it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    /// The audit event's rowid in `events` (the webhook cursor's unit).
    pub id: i64,
    pub defender_id: String,
    pub seq: i64,
    pub time_ms: i64,
    pub container: String,
    pub rule: String,
    /// [`EFFECT_ALERT`], [`EFFECT_PREVENT`], or 0 when the Defender sent none.
    pub effect: i64,
    pub message: String,
    pub pid: i64,
    /// Seq of the event that violated the rule, 0 when none.
    pub subject_seq: i64,
    /// The Defender's metadata (empty when the Defender row is gone).
    pub hostname: String,
    pub task_arn: String,
    pub family: String,
    pub revision: String,
    pub cluster: String,
}

/// Position of an audit in the newest-first order: `(time_ms, id)`. Written `TIME.ID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditCursor {
    pub time_ms: i64,
    pub id: i64,
}

impl AuditCursor {
    pub fn of(a: &AuditRecord) -> Self {
        Self {
            time_ms: a.time_ms,
            id: a.id,
        }
    }
}

impl fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.time_ms, self.id)
    }
}

impl FromStr for AuditCursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a page cursor (TIME.ID, as a page's older_before)");
        let (t, id) = s.trim().split_once('.').ok_or_else(bad)?;
        Ok(Self {
            time_ms: t.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// Which audits a page holds. Filters AND; `None` is "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub defender_id: Option<String>,
    /// Exact rule name.
    pub rule: Option<String>,
    /// [`EFFECT_ALERT`] or [`EFFECT_PREVENT`].
    pub effect: Option<i64>,
    /// Inclusive lower bound on the audit's time, unix ms.
    pub since_ms: Option<i64>,
    /// Exclusive upper bound on the audit's time, unix ms.
    pub until_ms: Option<i64>,
    /// Only audits older than this (the "Older" cursor).
    pub before: Option<AuditCursor>,
    /// Only audits newer than this (the "Newer" cursor).
    pub after: Option<AuditCursor>,
    pub limit: i64,
}

/// One page of audits, newest first, with the cursors of its neighbours.
#[derive(Clone, Debug)]
pub struct AuditPage {
    pub audits: Vec<AuditRecord>,
    /// `before` of the next older page, when older matching audits exist.
    pub older_before: Option<AuditCursor>,
    /// `after` of the next newer page, when newer matching audits exist.
    pub newer_after: Option<AuditCursor>,
}

/// Audits of one Defender.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditCounts {
    pub total: i64,
    pub prevented: i64,
}

const AUDIT_COLUMNS: &str = "SELECT a.id, a.defender_id, a.seq, a.time_ms, a.container, a.rule, \
     a.effect, a.message, a.pid, a.subject_seq, COALESCE(d.hostname, '') AS hostname, \
     COALESCE(d.task_arn, '') AS task_arn, COALESCE(d.family, '') AS family, \
     COALESCE(d.revision, '') AS revision, COALESCE(d.cluster, '') AS cluster \
     FROM audit_index a LEFT JOIN defenders d ON d.id = a.defender_id ";

/// `WHERE …` of `q`'s filters (not its cursors).
fn push_filter<'a, DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, q: &AuditQuery)
where
    String: super::Bind<'a, DB>,
    i64: super::Bind<'a, DB>,
{
    qb.push("WHERE 1 = 1");
    if let Some(id) = &q.defender_id {
        qb.push(" AND a.defender_id = ").push_bind(id.clone());
    }
    if let Some(rule) = &q.rule {
        qb.push(" AND a.rule = ").push_bind(rule.clone());
    }
    if let Some(effect) = q.effect {
        qb.push(" AND a.effect = ").push_bind(effect);
    }
    if let Some(since) = q.since_ms {
        qb.push(" AND a.time_ms >= ").push_bind(since);
    }
    if let Some(until) = q.until_ms {
        qb.push(" AND a.time_ms < ").push_bind(until);
    }
}

fn push_older<'a, DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, c: AuditCursor)
where
    i64: super::Bind<'a, DB>,
{
    qb.push(" AND (a.time_ms, a.id) < (")
        .push_bind(c.time_ms)
        .push(", ")
        .push_bind(c.id)
        .push(")");
}

fn push_newer<'a, DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, c: AuditCursor)
where
    i64: super::Bind<'a, DB>,
{
    qb.push(" AND (a.time_ms, a.id) > (")
        .push_bind(c.time_ms)
        .push(", ")
        .push_bind(c.id)
        .push(")");
}

/// The fields of one stored audit event (undecodable bodies index as an empty rule, so the
/// index moves past them).
struct Decoded {
    rule: String,
    effect: i64,
    message: String,
    pid: i64,
    subject_seq: i64,
}

fn decode_audit(defender_id: &str, seq: i64, body: &[u8]) -> Decoded {
    match Event::decode(body) {
        Ok(Event {
            kind: Some(Kind::Audit(a)),
            ..
        }) => Decoded {
            rule: a.rule,
            effect: i64::from(a.effect),
            message: a.message,
            pid: i64::from(a.pid),
            subject_seq: i64::try_from(a.subject_seq).unwrap_or(i64::MAX),
        },
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok(_) => "not an audit".to_owned(),
            };
            tracing::warn!(
                defender_id,
                seq,
                "stored audit event does not decode: {why}"
            );
            Decoded {
                rule: String::new(),
                effect: 0,
                message: format!("(undecodable audit event: {why})"),
                pid: 0,
                subject_seq: 0,
            }
        }
    }
}

type AuditEventRow = (i64, String, i64, i64, String, Vec<u8>);

/// Serialises [`Store::sync_audit_index`] within the process.
static SYNC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Store {
    /// Indexes the audit events committed since the last call (see the module docs). Concurrent
    /// calls are harmless: an already indexed audit is a no-op.
    pub async fn sync_audit_index(&self) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            // One sync at a time (a page runs several audit reads at once): the others then find
            // nothing left to index instead of all decoding and inserting the same rows.
            let _one = SYNC.lock().await;
            loop {
                let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM audit_index")
                    .fetch_one(pool)
                    .await?;
                let rows: Vec<AuditEventRow> = sqlx::query_as(
                    "SELECT rowid, defender_id, seq, time_ms, container, body FROM events \
                 WHERE kind = 'audit' AND rowid > $1 ORDER BY rowid LIMIT $2",
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
                    "INSERT INTO audit_index (id, defender_id, seq, time_ms, container, rule, effect, \
                 message, pid, subject_seq) ",
                );
                qb.push_values(
                    rows,
                    |mut b, (id, defender_id, seq, time_ms, container, body)| {
                        let d = decode_audit(&defender_id, seq, &body);
                        b.push_bind(id)
                            .push_bind(defender_id)
                            .push_bind(seq)
                            .push_bind(time_ms)
                            .push_bind(container)
                            .push_bind(d.rule)
                            .push_bind(d.effect)
                            .push_bind(d.message)
                            .push_bind(d.pid)
                            .push_bind(d.subject_seq);
                    },
                );
                qb.push(" ON CONFLICT (id) DO NOTHING");
                qb.build().execute(pool).await?;
                if short {
                    return Ok(());
                }
            }
        })
    }

    /// One page of audits matching `q`, newest first (by time, then by arrival). Without
    /// cursors it is the newest page; with `after` alone, the page just above it.
    pub async fn audit_page(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_audit_index().await?;
            let limit = q.limit.max(1);
            let ascending = q.after.is_some() && q.before.is_none();
            let mut qb = QueryBuilder::<Db>::new(AUDIT_COLUMNS);
            push_filter(&mut qb, q);
            if let Some(c) = q.before {
                push_older(&mut qb, c);
            }
            if let Some(c) = q.after {
                push_newer(&mut qb, c);
            }
            qb.push(if ascending {
                " ORDER BY a.time_ms ASC, a.id ASC LIMIT "
            } else {
                " ORDER BY a.time_ms DESC, a.id DESC LIMIT "
            })
            .push_bind(limit + 1);
            let mut audits: Vec<AuditRecord> = qb.build_query_as().fetch_all(pool).await?;
            let more = audits.len() as i64 > limit;
            audits.truncate(limit as usize);
            if ascending {
                audits.reverse();
            }
            let newest = audits.first().map(AuditCursor::of);
            let oldest = audits.last().map(AuditCursor::of);
            // The direction of travel is known from the extra row; the other one is asked.
            let (older_before, newer_after) = if ascending {
                let edge = oldest.or(q.after);
                let older = match edge {
                    Some(c) if self.any_audit(q, None, Some(c)).await? => Some(c),
                    _ => None,
                };
                (older, if more { newest } else { None })
            } else {
                let edge = newest.or(q.before);
                let newer = match edge {
                    Some(c) if q.before.is_some() && self.any_audit(q, Some(c), None).await? => {
                        Some(c)
                    }
                    _ => None,
                };
                (if more { oldest } else { None }, newer)
            };
            Ok(AuditPage {
                audits,
                older_before,
                newer_after,
            })
        })
    }

    /// Whether an audit matching `q`'s filters (not its cursors) lies above `newer_than` /
    /// below `older_than`.
    async fn any_audit(
        &self,
        q: &AuditQuery,
        newer_than: Option<AuditCursor>,
        older_than: Option<AuditCursor>,
    ) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let mut qb = QueryBuilder::<Db>::new("SELECT EXISTS (SELECT 1 FROM audit_index a ");
            push_filter(&mut qb, q);
            if let Some(c) = newer_than {
                push_newer(&mut qb, c);
            }
            if let Some(c) = older_than {
                push_older(&mut qb, c);
            }
            qb.push(")");
            Ok(qb.build_query_scalar::<bool>().fetch_one(pool).await?)
        })
    }

    /// Number of audits matching `q`'s filters (cursors and limit ignored).
    pub async fn count_audits(&self, q: &AuditQuery) -> Result<i64, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_audit_index().await?;
            let mut qb = QueryBuilder::<Db>::new("SELECT COUNT(*) FROM audit_index a ");
            push_filter(&mut qb, q);
            Ok(qb.build_query_scalar().fetch_one(pool).await?)
        })
    }

    /// Audit counts of the Defenders `ids` (one page of a list); Defenders without audits are
    /// left out.
    pub async fn audit_counts_for(
        &self,
        ids: impl Iterator<Item = &str>,
    ) -> Result<HashMap<String, AuditCounts>, StoreError> {
        self.sync_audit_index().await?;
        let counts = self
            .counts_per_defender("audit_index", "effect = 2", ids)
            .await?;
        Ok(counts
            .into_iter()
            .map(|(id, (total, prevented))| (id, AuditCounts { total, prevented }))
            .collect())
    }

    /// Audit counts of one Defender.
    pub async fn audit_counts_of(&self, defender_id: &str) -> Result<AuditCounts, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_audit_index().await?;
            let (total, prevented): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), SUM(CASE WHEN effect = 2 THEN 1 ELSE 0 END) \
             FROM audit_index WHERE defender_id = $1",
            )
            .bind(defender_id)
            .fetch_one(pool)
            .await?;
            Ok(AuditCounts {
                total,
                prevented: prevented.unwrap_or(0),
            })
        })
    }

    /// Distinct rule names of the stored audits, alphabetically, at most `limit` (filter menus).
    pub async fn audit_rules(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_audit_index().await?;
            Ok(
                sqlx::query_scalar("SELECT DISTINCT rule FROM audit_index ORDER BY rule LIMIT $1")
                    .bind(limit)
                    .fetch_all(pool)
                    .await?,
            )
        })
    }

    /// Defenders that have audits, as `(id, hostname, task_arn)`, at most `limit` (filter menus).
    pub async fn audit_defenders(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_audit_index().await?;
            Ok(sqlx::query_as(
                "SELECT a.defender_id, COALESCE(d.hostname, ''), COALESCE(d.task_arn, '') \
             FROM (SELECT DISTINCT defender_id FROM audit_index) a \
             LEFT JOIN defenders d ON d.id = a.defender_id \
             ORDER BY COALESCE(d.hostname, ''), a.defender_id LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Audits stored after rowid `after`, oldest first, at most `limit` (webhook forwarding).
    pub async fn audits_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        with_pool!(&self.pool, |pool| {
            self.sync_audit_index().await?;
            let mut qb = QueryBuilder::<Db>::new(AUDIT_COLUMNS);
            qb.push("WHERE a.id > ")
                .push_bind(after)
                .push(" ORDER BY a.id ASC LIMIT ")
                .push_bind(limit);
            Ok(qb.build_query_as().fetch_all(pool).await?)
        })
    }

    /// Rowid of the newest stored audit event, 0 when there is none.
    pub async fn last_audit_rowid(&self) -> Result<i64, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(sqlx::query_scalar(
                "SELECT COALESCE(MAX(rowid), 0) FROM events WHERE kind = 'audit'",
            )
            .fetch_one(pool)
            .await?)
        })
    }

    /// The cursor of webhook `key`: created at `start` when the webhook is new, else as saved.
    pub async fn init_webhook_cursor(&self, key: &str, start: i64) -> Result<i64, StoreError> {
        with_pool!(&self.pool, |pool| {
            sqlx::query(
                "INSERT INTO webhook_cursor (url, last_rowid, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (url) DO NOTHING",
            )
            .bind(key)
            .bind(start)
            .bind(now_ms())
            .execute(pool)
            .await?;
            self.webhook_cursor(key).await.map(|c| c.unwrap_or(start))
        })
    }

    /// The saved cursor of webhook `key` (the rowid of the last audit it delivered).
    pub async fn webhook_cursor(&self, key: &str) -> Result<Option<i64>, StoreError> {
        with_pool!(&self.pool, |pool| {
            Ok(
                sqlx::query_scalar("SELECT last_rowid FROM webhook_cursor WHERE url = $1")
                    .bind(key)
                    .fetch_optional(pool)
                    .await?,
            )
        })
    }

    /// Takes or renews the lease on webhook `lease_key` for `holder` (a Console instance) for
    /// `ttl_ms`: true when `holder` holds it now, false while another live replica does.
    pub async fn take_webhook_lease(
        &self,
        lease_key: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let now = now_ms();
            let done = sqlx::query(
                "UPDATE webhook_cursor SET lease_holder = $1, lease_until = $2 \
                 WHERE url = $3 AND (lease_holder = $1 OR lease_holder IS NULL OR lease_until < $4)",
            )
            .bind(holder)
            .bind(now.saturating_add(ttl_ms))
            .bind(lease_key)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Gives up `holder`'s lease on webhook `lease_key` (a Console that stops).
    pub async fn release_webhook_lease(
        &self,
        lease_key: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        with_pool!(&self.pool, |pool| {
            sqlx::query(
                "UPDATE webhook_cursor SET lease_holder = NULL, lease_until = 0 \
                 WHERE url = $1 AND lease_holder = $2",
            )
            .bind(lease_key)
            .bind(holder)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Records that webhook `key` delivered everything up to rowid `last_rowid`, if `holder`
    /// still holds the lease on `lease_key`; false (nothing written) when it lost it.
    pub async fn set_webhook_cursor(
        &self,
        key: &str,
        lease_key: &str,
        holder: &str,
        last_rowid: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(&self.pool, |pool| {
            let done = sqlx::query(
                "UPDATE webhook_cursor SET last_rowid = $1, updated_at = $2 WHERE url = $3 \
                 AND EXISTS (SELECT 1 FROM webhook_cursor l WHERE l.url = $4 AND l.lease_holder = $5)",
            )
            .bind(last_rowid)
            .bind(now_ms())
            .bind(key)
            .bind(lease_key)
            .bind(holder)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let c = AuditCursor {
            time_ms: 1_714_521_600_000,
            id: 42,
        };
        assert_eq!(c.to_string(), "1714521600000.42");
        assert_eq!("1714521600000.42".parse::<AuditCursor>(), Ok(c));
        assert_eq!(
            "-5.3".parse::<AuditCursor>(),
            Ok(AuditCursor { time_ms: -5, id: 3 })
        );
        for bad in ["", "12", "a.b", "1.", ".1", "1.2.3"] {
            assert!(bad.parse::<AuditCursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn undecodable_bodies_index_as_empty_rule() {
        let d = decode_audit("x", 1, b"\xff\xff\xff");
        assert_eq!((d.rule.as_str(), d.effect), ("", 0));
        assert!(d.message.starts_with("(undecodable"));
        let ok = Event {
            seq: 1,
            time_ms: 5,
            container: "c".into(),
            kind: Some(Kind::Audit(defender_proto::v1::RuntimeAudit {
                rule: "r".into(),
                effect: 2,
                message: "m".into(),
                subject_seq: 9,
                pid: 77,
            })),
        }
        .encode_to_vec();
        let d = decode_audit("x", 1, &ok);
        assert_eq!(
            (
                d.rule.as_str(),
                d.effect,
                d.message.as_str(),
                d.pid,
                d.subject_seq
            ),
            ("r", 2, "m", 77, 9)
        );
    }
}
