//! Manage › Defenders at fleet size, shared by the page, its refresh fragment, the REST list
//! and its CSV export: the query parameters, their validation, and links that keep them.
//!
//! Parameters (all optional): `q` (search: hostname, task ARN, family, cluster, id), `status`
//! (`connected`|`disconnected`; the API also takes `connected=true|false`), `mode`, `version`,
//! `cluster` (exact values), `sort` (a [`FleetSort`] name), `order` (`asc`|`desc`), `limit`,
//! `cursor` (from the previous page), `offset` (API only, without a cursor), `start` (the row
//! number of the page's first row, for the "1–100 of N" line only), `format=csv` (API).

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::api::DefenderJson;
use super::render::path_segment;
use super::{WebState, api_error};
use crate::store::fleet::{FleetCursor, FleetPage, FleetQuery, FleetSort, MAX_SEARCH_CHARS};
use crate::store::{StoreError, now_ms};

/// Default and largest `limit` of `GET /api/v1/defenders`.
pub const MAX_API_LIMIT: usize = 1000;
/// Rows of one CSV export at most.
pub const MAX_CSV_ROWS: usize = 100_000;

/// The raw query; every field is text so that a bad value gets a message naming it.
#[derive(Debug, Default, Deserialize)]
pub struct FleetParams {
    q: Option<String>,
    status: Option<String>,
    connected: Option<String>,
    mode: Option<String>,
    version: Option<String>,
    cluster: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
    offset: Option<String>,
    start: Option<String>,
    format: Option<String>,
}

/// A checked query and what goes with it.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub query: FleetQuery,
    /// Row number (1-based) of the page's first row, for display.
    pub start: usize,
    /// Whether the caller gave `limit` (kept in links only then).
    limit_given: bool,
    csv: bool,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.chars().take(1024).collect())
}

impl FleetParams {
    /// Checks the parameters; `default_limit` applies without `limit`, which may not exceed
    /// `max_limit`.
    pub fn check(&self, default_limit: usize, max_limit: usize) -> Result<Fleet, String> {
        // `status` is the form's (empty: any); `connected` the API's older spelling.
        let connected = match (self.status.as_deref(), self.connected.as_deref()) {
            (Some("connected"), _) => Some(true),
            (Some("disconnected"), _) => Some(false),
            (Some(s), _) if !s.is_empty() => {
                return Err("status must be \"connected\" or \"disconnected\"".into());
            }
            (_, None) => None,
            (_, Some("true")) => Some(true),
            (_, Some("false")) => Some(false),
            (_, Some(_)) => return Err("connected must be \"true\" or \"false\"".into()),
        };
        let sort = match non_empty(&self.sort) {
            None => FleetSort::default(),
            Some(s) => FleetSort::parse(&s).ok_or_else(|| {
                let names: Vec<&str> = FleetSort::ALL.iter().map(|k| k.as_str()).collect();
                format!("sort must be one of {}", names.join(", "))
            })?,
        };
        let descending = match self.order.as_deref().map(str::trim) {
            None | Some("") => sort.default_descending(),
            Some("asc") => false,
            Some("desc") => true,
            Some(_) => return Err("order must be \"asc\" or \"desc\"".into()),
        };
        let number =
            |v: &Option<String>, what: &str, max: usize| -> Result<Option<usize>, String> {
                match v.as_deref().map(str::trim) {
                    None | Some("") => Ok(None),
                    Some(n) => n
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n <= max)
                        .map(Some)
                        .ok_or_else(|| format!("{what} must be an integer from 0 to {max}")),
                }
            };
        let limit = number(&self.limit, "limit", max_limit)?;
        if limit == Some(0) {
            return Err(format!("limit must be an integer from 1 to {max_limit}"));
        }
        let offset = number(&self.offset, "offset", usize::MAX)?.unwrap_or(0);
        let start = number(&self.start, "start", usize::MAX)?
            .unwrap_or(offset + 1)
            .max(1);
        let after = match non_empty(&self.cursor) {
            None => None,
            Some(c) => Some(FleetCursor::decode(&c).ok_or("cursor is not one this list gave")?),
        };
        let csv = match self.format.as_deref().map(str::trim) {
            None | Some("") | Some("json") => false,
            Some("csv") => true,
            Some(_) => return Err("format must be \"json\" or \"csv\"".into()),
        };
        Ok(Fleet {
            query: FleetQuery {
                search: self
                    .q
                    .as_deref()
                    .unwrap_or("")
                    .trim()
                    .chars()
                    .take(MAX_SEARCH_CHARS)
                    .collect(),
                connected,
                mode: non_empty(&self.mode),
                version: non_empty(&self.version),
                cluster: non_empty(&self.cluster),
                sort,
                descending,
                limit: limit.unwrap_or(default_limit),
                after,
                offset,
            },
            start,
            limit_given: limit.is_some(),
            csv,
        })
    }
}

impl Fleet {
    /// The query string (without `?`) of this list with `sort`/`order` and the position
    /// replaced; filters kept.
    pub fn href(
        &self,
        base: &str,
        sort: FleetSort,
        descending: bool,
        cursor: Option<&FleetCursor>,
        start: usize,
    ) -> String {
        let q = &self.query;
        let mut parts: Vec<String> = Vec::new();
        let mut put = |k: &str, v: &str| parts.push(format!("{k}={}", path_segment(v)));
        if !q.search.is_empty() {
            put("q", &q.search);
        }
        if let Some(c) = q.connected {
            put("status", if c { "connected" } else { "disconnected" });
        }
        for (k, v) in [
            ("mode", &q.mode),
            ("version", &q.version),
            ("cluster", &q.cluster),
        ] {
            if let Some(v) = v {
                put(k, v);
            }
        }
        put("sort", sort.as_str());
        put("order", if descending { "desc" } else { "asc" });
        if self.limit_given {
            put("limit", &q.limit.to_string());
        }
        if let Some(c) = cursor {
            put("cursor", &c.encode());
            put("start", &start.to_string());
        }
        if parts.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", parts.join("&"))
        }
    }

    /// This page's own link (same position), e.g. for the refresh fragment.
    pub fn same_page(&self, base: &str) -> String {
        self.href(
            base,
            self.query.sort,
            self.query.descending,
            self.query.after.as_ref(),
            self.start,
        )
    }

    /// Whether any filter (not sort or position) is set.
    pub fn filtered(&self) -> bool {
        let q = &self.query;
        !q.search.is_empty()
            || q.connected.is_some()
            || q.mode.is_some()
            || q.version.is_some()
            || q.cluster.is_some()
    }

    /// Reads one page (see [`crate::store::Store::fleet_page`]).
    pub async fn read(&self, state: &WebState) -> Result<(FleetPage, i64), StoreError> {
        let now = now_ms();
        let page = state
            .store
            .fleet_page(&self.query, now, now.saturating_sub(state.retention_ms()))
            .await?;
        Ok((page, now))
    }
}

/// `GET /api/v1/defenders[?q=…][&status=connected|disconnected][&mode=…][&version=…][&cluster=…]
/// [&sort=…&order=asc|desc][&limit=1..1000][&cursor=…|&offset=N][&format=csv]`: the Defenders of
/// Manage › Defenders, most recently seen first by default. The answer is the array (or CSV);
/// `X-Total-Count` says how many match, `X-Connected-Count`/`X-Disconnected-Count` how many of
/// those matching the other filters are connected or not, and `Link: <…>; rel="next"` (and
/// `X-Next-Cursor`) where the next page starts.
pub async fn api_list(
    State(state): State<WebState>,
    headers: HeaderMap,
    params: Result<Query<FleetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(q) => q,
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("invalid query: {}", rejection.body_text()),
            );
        }
    };
    let wants_csv = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv"));
    let mut fleet = match params.check(MAX_API_LIMIT, MAX_API_LIMIT) {
        Ok(f) => f,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    if fleet.csv || wants_csv {
        fleet.query.limit = if fleet.limit_given {
            fleet.query.limit
        } else {
            MAX_CSV_ROWS
        };
    }
    let (page, now) = match fleet.read(&state).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "API request failed");
            return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
        }
    };
    let (audits, waas) = if page.defenders.is_empty() {
        Default::default()
    } else {
        let ids = || page.defenders.iter().map(|d| d.id.as_str());
        match tokio::try_join!(
            state.store.audit_counts_for(ids()),
            state.store.waas_counts_for(ids())
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "API request failed");
                return api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        }
    };
    let list: Vec<DefenderJson> = page
        .defenders
        .iter()
        .map(|d| {
            DefenderJson::new(d, now)
                .with_audits(audits.get(&d.id).copied().unwrap_or_default())
                .with_waas(waas.get(&d.id).copied().unwrap_or_default())
        })
        .collect();
    let mut res = if fleet.csv || wants_csv {
        (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"defenders.csv\"",
                ),
            ],
            csv(&list),
        )
            .into_response()
    } else {
        axum::Json(list).into_response()
    };
    let h = res.headers_mut();
    h.insert("x-total-count", page.matching.into());
    h.insert("x-connected-count", page.connected.into());
    h.insert("x-disconnected-count", page.disconnected.into());
    let next = if params.cursor.is_none() && params.offset.is_some() {
        // The older offset paging continues as it started.
        let next_offset = fleet.query.offset.saturating_add(fleet.query.limit);
        (i64::try_from(next_offset).unwrap_or(i64::MAX) < page.matching).then(|| {
            let mut link = format!(
                "/api/v1/defenders?limit={}&offset={next_offset}",
                fleet.query.limit
            );
            if let Some(c) = fleet.query.connected {
                link.push_str(&format!("&connected={c}"));
            }
            link
        })
    } else {
        page.next.as_ref().map(|c| {
            h.insert(
                "x-next-cursor",
                HeaderValue::from_str(&c.encode()).unwrap_or(HeaderValue::from_static("")),
            );
            let mut f = fleet.clone();
            f.limit_given = true;
            f.href(
                "/api/v1/defenders",
                f.query.sort,
                f.query.descending,
                Some(c),
                fleet.start + f.query.limit,
            )
        })
    };
    if let Some(link) = next
        && let Ok(v) = HeaderValue::from_str(&format!("<{link}>; rel=\"next\""))
    {
        h.insert(header::LINK, v);
    }
    res
}

/// Columns of the CSV export, in order.
pub const CSV_COLUMNS: [&str; 14] = [
    "id",
    "name",
    "status",
    "connected",
    "last_seen",
    "cluster",
    "family",
    "revision",
    "task_arn",
    "hostname",
    "version",
    "mode",
    "dropped_events",
    "audits",
];

/// One CSV field: quoted when it holds a comma, quote or line break; a leading `=`, `+`, `-`
/// or `@` is prefixed with `'` so that a spreadsheet never runs Defender-sent text as a formula.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv(list: &[DefenderJson]) -> String {
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for d in list {
        let row = [
            d.id.clone(),
            d.name.clone(),
            d.status.clone(),
            d.connected.to_string(),
            d.last_seen.clone(),
            d.cluster.clone(),
            d.family.clone(),
            d.revision.clone(),
            d.task_arn.clone(),
            d.hostname.clone(),
            d.agent_version.clone(),
            d.mode.clone(),
            d.dropped_events.to_string(),
            d.audits.to_string(),
        ];
        let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }

    #[test]
    fn parameters_are_checked() {
        let p = |s: &str| serde_urlencoded_like(s).check(100, 1000);
        assert!(p("status=connected").unwrap().query.connected == Some(true));
        assert!(p("connected=false").unwrap().query.connected == Some(false));
        assert!(p("status=maybe").is_err());
        assert!(p("sort=nope").is_err());
        assert!(p("limit=0").is_err());
        assert!(p("limit=1001").is_err());
        assert!(p("cursor=garbage").is_err());
        let f = p("sort=name").unwrap();
        assert!(!f.query.descending, "names sort A to Z by default");
        assert!(p("sort=last_seen").unwrap().query.descending);
    }

    /// A tiny `k=v&k=v` reader for the tests (values without escapes).
    fn serde_urlencoded_like(s: &str) -> FleetParams {
        let mut p = FleetParams::default();
        for pair in s.split('&') {
            let (k, v) = pair.split_once('=').unwrap();
            let v = Some(v.to_owned());
            match k {
                "status" => p.status = v,
                "connected" => p.connected = v,
                "sort" => p.sort = v,
                "limit" => p.limit = v,
                "cursor" => p.cursor = v,
                _ => panic!("{k}"),
            }
        }
        p
    }
}
