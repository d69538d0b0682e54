//! Manage › Defenders at fleet size: search, filters, sorting by every column, keyset (cursor)
//! pagination and the connected/disconnected counts, all answered by SQLite so that a page
//! costs one page of rows whatever the fleet's size.
//!
//! Status is computed in SQL with the same rule as [`crate::status::status_of`]: a session that
//! has not ended, with a heartbeat younger than [`MISSED_HEARTBEATS`] intervals (the age
//! clamped at 0 against clock steps).

use std::sync::OnceLock;

use sqlx::Row;

use super::{DefenderRecord, Store, StoreError};
use crate::status::MISSED_HEARTBEATS;

/// Longest search text used, in characters (the rest is ignored).
pub const MAX_SEARCH_CHARS: usize = 256;

/// A column of the list, to sort by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FleetSort {
    /// The name shown ([`fleet_name`]).
    Name,
    /// `family:revision`.
    Task,
    Cluster,
    Version,
    /// Deployment mode, then capture mode.
    Mode,
    /// Newest sign of life (the default, newest first).
    #[default]
    LastSeen,
    /// Connected before disconnected (ascending: disconnected first).
    Status,
    Dropped,
    Audits,
}

impl FleetSort {
    /// Every column, in the list's order.
    pub const ALL: [FleetSort; 9] = [
        Self::Name,
        Self::Task,
        Self::Cluster,
        Self::Version,
        Self::Mode,
        Self::LastSeen,
        Self::Status,
        Self::Dropped,
        Self::Audits,
    ];

    /// The name in `?sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Task => "task",
            Self::Cluster => "cluster",
            Self::Version => "version",
            Self::Mode => "mode",
            Self::LastSeen => "last_seen",
            Self::Status => "status",
            Self::Dropped => "dropped",
            Self::Audits => "audits",
        }
    }

    /// Parses `?sort=`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The sort column of the inner query, and whether its values are integers.
    fn column(self) -> (&'static str, bool) {
        match self {
            Self::Name => ("k_name", false),
            Self::Task => ("k_task", false),
            Self::Cluster => ("k_cluster", false),
            Self::Version => ("k_version", false),
            Self::Mode => ("k_mode", false),
            Self::LastSeen => ("k_last_seen", true),
            Self::Status => ("k_connected", true),
            Self::Dropped => ("k_dropped", true),
            Self::Audits => ("k_audits", true),
        }
    }

    /// The natural direction of a column: newest, most and connected first; names A to Z.
    pub fn default_descending(self) -> bool {
        matches!(
            self,
            Self::LastSeen | Self::Status | Self::Dropped | Self::Audits
        )
    }
}

/// A position in the sorted list: the sort value and the id of the last row shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetCursor {
    pub key: CursorKey,
    pub id: String,
}

/// The sort value of a cursor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CursorKey {
    Int(i64),
    Text(String),
}

impl FleetCursor {
    /// Opaque text for `?cursor=`: `i<number>~<id>` or `s<hex of the text>~<id>`.
    pub fn encode(&self) -> String {
        match &self.key {
            CursorKey::Int(n) => format!("i{n}~{}", self.id),
            CursorKey::Text(t) => {
                let hex: String = t.bytes().map(|b| format!("{b:02x}")).collect();
                format!("s{hex}~{}", self.id)
            }
        }
    }

    /// Parses [`Self::encode`]'s text; None when it is not one (bounded: 4 KiB).
    pub fn decode(s: &str) -> Option<Self> {
        if s.len() > 4096 {
            return None;
        }
        let (key, id) = s.split_once('~')?;
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return None;
        }
        let key = match key.split_at_checked(1)? {
            ("i", n) => CursorKey::Int(n.parse().ok()?),
            ("s", hex) => {
                if hex.len() % 2 != 0 {
                    return None;
                }
                let bytes: Option<Vec<u8>> = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect();
                CursorKey::Text(String::from_utf8(bytes?).ok()?)
            }
            _ => return None,
        };
        Some(Self {
            key,
            id: id.to_owned(),
        })
    }
}

/// What to list.
#[derive(Clone, Debug, Default)]
pub struct FleetQuery {
    /// Case-insensitive substring of the hostname, task ARN, family, cluster or id.
    pub search: String,
    /// Only connected (`Some(true)`) or disconnected Defenders.
    pub connected: Option<bool>,
    /// Exact deployment mode (`embedded`, `sidecar`, `standalone`).
    pub mode: Option<String>,
    /// Exact Defender version.
    pub version: Option<String>,
    /// Exact cluster (as the task metadata gives it: a name or an ARN).
    pub cluster: Option<String>,
    pub sort: FleetSort,
    pub descending: bool,
    /// Rows wanted (the caller bounds it).
    pub limit: usize,
    /// Rows after this position; None for the first page.
    pub after: Option<FleetCursor>,
    /// Rows skipped before the page (the API's older `offset`; ignored with a cursor).
    pub offset: usize,
}

/// One page of the list.
#[derive(Debug, Default)]
pub struct FleetPage {
    pub defenders: Vec<DefenderRecord>,
    /// The position after the last row, when more rows follow.
    pub next: Option<FleetCursor>,
    /// Defenders matching every filter.
    pub matching: i64,
    /// Of the Defenders matching every filter but the status one: how many are connected,
    /// and how many are not.
    pub connected: i64,
    pub disconnected: i64,
}

/// Values for the filter menus.
#[derive(Debug, Default)]
pub struct FleetFacets {
    pub modes: Vec<String>,
    pub versions: Vec<String>,
    pub clusters: Vec<String>,
}

/// The inner query: every visible Defender with its newest session and the sort keys. Bound
/// first: `$1` = now (ms), `$2` = seen since (ms).
fn inner_sql(postgres: bool) -> &'static str {
    static SQL: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    // The larger of two values: a scalar MAX on SQLite, GREATEST on PostgreSQL.
    let greatest = if postgres { "GREATEST" } else { "MAX" };
    SQL[usize::from(postgres)].get_or_init(|| {
        let keys = format!(
            ", COALESCE(s.ended_at, s.last_heartbeat, d.enrolled_at) AS k_last_seen, \
             CAST(CASE WHEN s.started_at IS NOT NULL AND s.last_heartbeat IS NOT NULL \
               AND s.ended_at IS NULL AND s.heartbeat_interval_ms IS NOT NULL \
               AND {greatest}($1 - s.last_heartbeat, 0) < {MISSED_HEARTBEATS} * s.heartbeat_interval_ms \
               THEN 1 ELSE 0 END AS BIGINT) AS k_connected, \
             d.name_key AS k_name, \
             lower(d.family || ':' || d.revision) AS k_task, lower(d.cluster) AS k_cluster, \
             d.agent_version AS k_version, d.mode || ' ' || d.capture_mode AS k_mode, \
             d.dropped_events AS k_dropped, \
             (SELECT COUNT(*) FROM audit_index a WHERE a.defender_id = d.id) AS k_audits \
             FROM defenders d"
        );
        let select = super::defenders::SELECT_DEFENDER.replacen(" FROM defenders d", &keys, 1);
        format!(
            "{select} WHERE d.decommissioned_at IS NULL \
             AND COALESCE(s.ended_at, s.last_heartbeat, d.enrolled_at) >= $2"
        )
    })
}

/// `%text%` for LIKE, with `\` escaping the wildcards.
fn like_pattern(text: &str) -> String {
    let mut p = String::from("%");
    for c in text.chars().take(MAX_SEARCH_CHARS) {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A value bound to a [`Bound`] query (the fleet's filters and keys are integers or text).
enum Arg {
    Int(i64),
    Text(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}

/// SQL text with its arguments, every placeholder numbered (`$N`) since the inner query's `$1`
/// and `$2` are used more than once. Bound by [`bind_args!`] on either database.
struct Bound {
    sql: String,
    args: Vec<Arg>,
    /// Case-insensitive LIKE: `LIKE` on SQLite (ASCII case-insensitive), `ILIKE` on PostgreSQL.
    like: &'static str,
}

/// Binds a [`Bound`]'s arguments, in order, to a query of either database.
macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for a in $args {
            query = match a {
                Arg::Int(i) => query.bind(i),
                Arg::Text(t) => query.bind(t),
            };
        }
        query
    }};
}

impl Bound {
    /// Starts with `sql` (which uses `$1` = now and `$2` = seen since).
    fn new(sql: String, now_ms: i64, seen_since_ms: i64, postgres: bool) -> Self {
        Self {
            sql,
            args: vec![Arg::Int(now_ms), Arg::Int(seen_since_ms)],
            like: if postgres { "ILIKE" } else { "LIKE" },
        }
    }

    /// Adds an argument; returns its placeholder.
    fn arg(&mut self, v: impl Into<Arg>) -> String {
        self.args.push(v.into());
        format!("${}", self.args.len())
    }

    fn key(&mut self, key: &CursorKey) -> String {
        match key {
            CursorKey::Int(n) => self.arg(*n),
            CursorKey::Text(t) => self.arg(t.clone()),
        }
    }

    /// Appends the filters of `q` (all but status when `with_status` is false).
    fn filters(&mut self, q: &FleetQuery, with_status: bool) {
        let search = q.search.trim();
        if !search.is_empty() {
            let p = self.arg(like_pattern(search));
            let clause = format!(
                " AND (f.hostname {like} {p} ESCAPE '\\' OR f.task_arn {like} {p} ESCAPE '\\' \
                 OR f.family {like} {p} ESCAPE '\\' OR f.cluster {like} {p} ESCAPE '\\' \
                 OR f.id {like} {p} ESCAPE '\\')",
                like = self.like
            );
            self.sql.push_str(&clause);
        }
        if with_status && let Some(c) = q.connected {
            let p = self.arg(i64::from(c));
            self.sql.push_str(&format!(" AND f.k_connected = {p}"));
        }
        for (column, value) in [
            ("f.mode", &q.mode),
            ("f.agent_version", &q.version),
            ("f.cluster", &q.cluster),
        ] {
            if let Some(v) = value {
                let p = self.arg(v.clone());
                self.sql.push_str(&format!(" AND {column} = {p}"));
            }
        }
    }
}

impl Store {
    /// The Defenders `ids`, in that order (ids not found are left out).
    async fn defenders_by_ids(&self, ids: &[String]) -> Result<Vec<DefenderRecord>, StoreError> {
        with_pool!(&self.pool, |pool| {
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let marks: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
            let marks = marks.join(",");
            let sql = format!(
                "{} WHERE d.id IN ({marks})",
                super::defenders::SELECT_DEFENDER
            );
            let mut query = sqlx::query_as::<_, DefenderRecord>(sqlx::AssertSqlSafe(sql));
            for id in ids {
                query = query.bind(id);
            }
            let mut found: std::collections::HashMap<String, DefenderRecord> = query
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|d| (d.id.clone(), d))
                .collect();
            Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
        })
    }

    /// One page of the Defenders seen since `seen_since_ms` (not decommissioned) matching `q`,
    /// sorted by `q.sort` then id, with the counts, status judged at `now_ms`.
    pub async fn fleet_page(
        &self,
        q: &FleetQuery,
        now_ms: i64,
        seen_since_ms: i64,
    ) -> Result<FleetPage, StoreError> {
        with_pool!(&self.pool, |pool| {
            if q.sort == FleetSort::Audits {
                self.sync_audit_index().await?;
            }
            let (column, numeric) = q.sort.column();
            let (cmp, dir) = if q.descending {
                ("<", "DESC")
            } else {
                (">", "ASC")
            };
            let mut b = Bound::new(
                // Only the id and the sort key go through the sort: SQLite then computes, for
                // every Defender, just what the filters and the key need; the page's full rows
                // are read afterwards by id.
                format!(
                    "SELECT f.id, f.{column} FROM ({}) f WHERE TRUE",
                    inner_sql(self.is_postgres())
                ),
                now_ms,
                seen_since_ms,
                self.is_postgres(),
            );
            b.filters(q, true);
            if let Some(after) = &q.after {
                let k = b.key(&after.key);
                let id = b.arg(after.id.clone());
                b.sql.push_str(&format!(
                    " AND (f.{column} {cmp} {k} OR (f.{column} = {k} AND f.id {cmp} {id}))"
                ));
            }
            let limit = b.arg(i64::try_from(q.limit).unwrap_or(i64::MAX).saturating_add(1));
            let offset = if q.after.is_some() { 0 } else { q.offset };
            let offset = b.arg(i64::try_from(offset).unwrap_or(i64::MAX));
            b.sql.push_str(&format!(
                " ORDER BY f.{column} {dir}, f.id {dir} LIMIT {limit} OFFSET {offset}"
            ));
            let (sql, args) = (b.sql, b.args);
            let rows = bind_args!(sqlx::query(sqlx::AssertSqlSafe(sql)), args)
                .fetch_all(pool)
                .await?;
            let more = rows.len() > q.limit;
            let mut ids = Vec::with_capacity(rows.len().min(q.limit));
            let mut next = None;
            for (i, row) in rows.iter().enumerate() {
                if i == q.limit {
                    break;
                }
                let id: String = row.try_get("id")?;
                if more && i + 1 == q.limit {
                    let key = if numeric {
                        CursorKey::Int(row.try_get(column)?)
                    } else {
                        CursorKey::Text(row.try_get(column)?)
                    };
                    next = Some(FleetCursor {
                        key,
                        id: id.clone(),
                    });
                }
                ids.push(id);
            }
            let defenders = self.defenders_by_ids(&ids).await?;

            let mut b = Bound::new(
                format!(
                    "SELECT COUNT(*), CAST(COALESCE(SUM(f.k_connected), 0) AS BIGINT) FROM ({}) f WHERE TRUE",
                    inner_sql(self.is_postgres())
                ),
                now_ms,
                seen_since_ms,
                self.is_postgres(),
            );
            b.filters(q, false);
            let (sql, args) = (b.sql, b.args);
            let (total, connected): (i64, i64) =
                bind_args!(sqlx::query_as(sqlx::AssertSqlSafe(sql)), args)
                    .fetch_one(pool)
                    .await?;
            let disconnected = total - connected;
            let matching = match q.connected {
                None => total,
                Some(true) => connected,
                Some(false) => disconnected,
            };
            Ok(FleetPage {
                defenders,
                next,
                matching,
                connected,
                disconnected,
            })
        })
    }

    /// Distinct modes, versions and clusters of the Defenders not decommissioned, for the
    /// filter menus (at most 200 of each).
    pub async fn fleet_facets(&self) -> Result<FleetFacets, StoreError> {
        with_pool!(&self.pool, |pool| {
            let mut facets = FleetFacets::default();
            for (column, out) in [
                ("d.mode", &mut facets.modes),
                ("d.agent_version", &mut facets.versions),
                ("d.cluster", &mut facets.clusters),
            ] {
                // Every Defender not decommissioned (also those past the list's retention, which
                // are few and soon purged): one pass over the table, no session lookups.
                let sql = format!(
                    "SELECT DISTINCT {column} FROM defenders d WHERE d.decommissioned_at IS NULL \
                 AND {column} <> '' ORDER BY 1 LIMIT 200"
                );
                *out = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_all(pool)
                    .await?;
            }
            Ok(facets)
        })
    }
}

/// The name Manage › Defenders shows: `family/task-id` for an ECS task (the task id is the last
/// segment of its ARN), else the family (`FARGATE_TASK`) or hostname with the Defender id, so
/// that Defenders on one host read apart.
pub fn fleet_name(d: &DefenderRecord) -> String {
    if !d.task_arn.is_empty() {
        let task_id = d.task_arn.rsplit('/').next().unwrap_or(&d.task_arn);
        if d.family.is_empty() {
            task_id.to_owned()
        } else {
            format!("{}/{task_id}", d.family)
        }
    } else {
        let local = [&d.family, &d.hostname]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("", |s| s.as_str());
        let short: String = d.id.chars().take(8).collect();
        if local.is_empty() {
            d.id.clone()
        } else {
            format!("{local} {short}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        for c in [
            FleetCursor {
                key: CursorKey::Int(-5),
                id: "abc".into(),
            },
            FleetCursor {
                key: CursorKey::Text("web/ä~x".into()),
                id: "0123abcd".into(),
            },
        ] {
            assert_eq!(FleetCursor::decode(&c.encode()), Some(c));
        }
        for bad in ["", "x1~a", "i1~", "iNaN~a", "s4~a", "s4g~a", "i1~a b", "s~"] {
            assert_eq!(FleetCursor::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }

    #[test]
    fn names_say_what_the_user_knows() {
        let mut d = DefenderRecord {
            id: "0123456789abcdef".into(),
            hostname: "vm".into(),
            ..Default::default()
        };
        assert_eq!(fleet_name(&d), "vm 01234567");
        d.family = "quickstart-demo".into();
        assert_eq!(fleet_name(&d), "quickstart-demo 01234567");
        d.task_arn = "arn:aws:ecs:eu-west-1:1:task/prod/3f2a9c".into();
        d.family = "web".into();
        assert_eq!(fleet_name(&d), "web/3f2a9c");
    }
}
