//! REST API v1 (JSON). Authentication is done by the router's middleware
//! ([`super::auth::require_api_caller`]); handlers only see authorised requests.
//!
//! | Route                                   | Answer                                              |
//! |-----------------------------------------|-----------------------------------------------------|
//! | `GET /api/v1/defenders[?connected=…&limit=…&offset=…]` | `[Defender]` (`X-Total-Count`, `Link: rel="next"`) |
//! | `GET /api/v1/defenders/{id}`            | `Defender` (404 when unknown)                       |
//! | `GET /api/v1/defenders/{id}/events`     | `[Event]`, newest first (filters as below)          |
//! | `GET /api/v1/defenders/{id}/observations` | executables, listening sockets, destinations      |
//! | `GET /api/v1/events?defender=ID…`       | `{defender_id, events: [Event], older_before, newer_after}` |
//!
//! Event filters: `kind` (a stored kind — `process_start`, `process_exit`, `network_listen`,
//! `network_connection`, `audit`, `notice` — or a group `process`, `network`, `audit`,
//! `notice`; a comma-separated list selects their union), `since` (inclusive) and `until`
//! (exclusive) as unix milliseconds or RFC 3339 (a zone-less `YYYY-MM-DDTHH:MM[:SS]` is UTC),
//! `before=SEQ` / `after=SEQ` (keyset cursors: pass a page's `older_before` as `before` to get
//! the next older page), `limit` 1..=1000 (default 100). A response carries at most
//! [`MAX_EVENTS_RESPONSE_BYTES`] of events (fewer than `limit` when they are large; continue
//! with `before` = the last seq returned), and `summary` at most 600 characters. Any invalid parameter is a 400 with
//! `{"error": …}`; `/api/v1/events` without `defender` is a 400, with an unknown one a 404.
//!
//! Raw bytes (exe, argv, cwd) are lossy UTF-8 strings; where they are not valid UTF-8 the exact
//! bytes come along in standard base64: `exe_b64`, `cwd_b64`, and `argv_b64` (all arguments,
//! parallel to `argv`) when any argument is not valid UTF-8. No `*_b64` field: the string is
//! exact. Observations are a separate resource (not part of `GET /api/v1/defenders/{id}`, which
//! stays one cheap row and equal to its entry in the list): they decode up to
//! [`OBSERVATION_WINDOW`] of the Defender's newest events and say `truncated` when older ones
//! exist.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::forensics::{OBSERVATION_WINDOW, parse_kinds, parse_time};
use super::render::{
    MAX_SUMMARY_CHARS, event_detail, event_summary, protocol, put_bytes, rfc3339, truncate,
};
use super::{WebState, api_error};
use crate::status::status_of;
use crate::store::audits::AuditCounts;
use crate::store::forensics::{EventPage, EventQuery, Observations};
use crate::store::{DefenderRecord, StoreError, StoredEvent, now_ms};

/// Default and largest `limit` of the events endpoints.
const DEFAULT_EVENTS: i64 = 100;
const MAX_EVENTS: i64 = 1000;

/// A Defender as the API returns it.
#[derive(Debug, Serialize)]
pub struct DefenderJson {
    pub id: String,
    /// The name the UI shows: `family/task-id` for an ECS task, else the family
    /// (`FARGATE_TASK`) or hostname and the first 8 characters of the id.
    pub name: String,
    pub hostname: String,
    pub cluster: String,
    pub task_arn: String,
    pub family: String,
    pub revision: String,
    pub availability_zone: String,
    pub launch_type: String,
    /// `[{name, image, image_id, docker_id}]`.
    pub containers: serde_json::Value,
    pub agent_version: String,
    pub mode: String,
    pub connected: bool,
    /// RFC 3339, start of the current stream; null when disconnected.
    pub connected_since: Option<String>,
    /// RFC 3339.
    pub last_seen: String,
    /// "Connected for 3m 12s" / "Disconnected for 45s".
    pub status: String,
    pub dropped_events: i64,
    pub queue_depth: i64,
    pub spool_bytes: i64,
    pub rss_bytes: i64,
    pub cpu_percent: f64,
    /// RFC 3339.
    pub enrolled_at: String,
    pub decommissioned: bool,
    /// Runtime audits the Defender reported, and how many of them it prevented.
    pub audits: i64,
    pub audits_prevented: i64,
    /// WAAS events the Defender reported, and how many requests they refused.
    pub waas_events: i64,
    pub waas_refused: i64,
    /// How the Defender captures what its application does.
    pub capture: CaptureJson,
}

/// A Defender's capture status as the API returns it.
#[derive(Debug, Serialize)]
pub struct CaptureJson {
    /// `exact` (seccomp user notification: every exec, connect, listen and DNS query seen and
    /// judged before it runs), `polling` (/proc every `poll_interval_ms`), or empty when the
    /// Defender did not say (older versions).
    pub mode: String,
    /// "exact" or "polling (1 s)", as the pages show it.
    pub summary: String,
    /// Why this mode (e.g. why exact capture could not be installed).
    pub detail: String,
    /// A capture source that is failing (e.g. `/proc` unreadable): the Defender is partly blind.
    pub error: String,
    pub poll_interval_ms: i64,
    /// Syscalls intercepted since the Defender started.
    pub intercepted: i64,
    /// Intercepted syscalls let through unjudged because the Defender did not answer in time.
    pub timed_out: i64,
    /// Processes the Defender reaped that no capture source reported.
    pub missed_processes: i64,
}

impl DefenderJson {
    pub fn new(d: &DefenderRecord, now: i64) -> Self {
        let s = status_of(d, now);
        let containers = serde_json::from_str::<serde_json::Value>(&d.containers_json)
            .ok()
            .filter(serde_json::Value::is_array)
            .unwrap_or_else(|| serde_json::Value::Array(Vec::new()));
        Self {
            id: d.id.clone(),
            name: crate::store::fleet::fleet_name(d),
            hostname: d.hostname.clone(),
            cluster: d.cluster.clone(),
            task_arn: d.task_arn.clone(),
            family: d.family.clone(),
            revision: d.revision.clone(),
            availability_zone: d.availability_zone.clone(),
            launch_type: d.launch_type.clone(),
            containers,
            agent_version: d.agent_version.clone(),
            mode: d.mode.clone(),
            connected: s.connected,
            connected_since: s.connected_since_ms.map(rfc3339),
            last_seen: rfc3339(s.last_seen_ms),
            status: s.text,
            dropped_events: d.dropped_events,
            queue_depth: d.queue_depth,
            spool_bytes: d.spool_bytes,
            rss_bytes: d.rss_bytes,
            cpu_percent: d.cpu_centipercent as f64 / 100.0,
            enrolled_at: rfc3339(d.enrolled_at),
            decommissioned: d.decommissioned_at.is_some(),
            audits: 0,
            audits_prevented: 0,
            waas_events: 0,
            waas_refused: 0,
            capture: CaptureJson {
                mode: d.capture_mode.clone(),
                summary: crate::web::render::capture_summary(d),
                detail: d.capture_detail.clone(),
                error: d.capture_error.clone(),
                poll_interval_ms: d.capture_poll_interval_ms,
                intercepted: d.capture_intercepted,
                timed_out: d.capture_timed_out,
                missed_processes: d.capture_missed,
            },
        }
    }

    /// With the Defender's WAAS counts.
    pub fn with_waas(mut self, c: crate::store::waas::WaasCounts) -> Self {
        self.waas_events = c.total;
        self.waas_refused = c.refused;
        self
    }

    /// With the Defender's audit counts.
    pub fn with_audits(mut self, c: AuditCounts) -> Self {
        self.audits = c.total;
        self.audits_prevented = c.prevented;
        self
    }
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "API request failed");
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn bad_query(rejection: &QueryRejection) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        &format!("invalid query: {}", rejection.body_text()),
    )
}

/// `GET /api/v1/defenders/{id}`: one Defender, whatever its age (404 when unknown).
pub async fn get_defender(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    match state.store.get_defender(&id).await {
        Ok(Some(d)) => match tokio::try_join!(
            state.store.audit_counts_of(&d.id),
            state.store.waas_counts_for(std::iter::once(d.id.as_str()))
        ) {
            Ok((c, w)) => Json(
                DefenderJson::new(&d, now_ms())
                    .with_audits(c)
                    .with_waas(w.get(&d.id).copied().unwrap_or_default()),
            )
            .into_response(),
            Err(e) => internal(&e),
        },
        Ok(None) => api_error(StatusCode::NOT_FOUND, "no such defender"),
        Err(e) => internal(&e),
    }
}

/// Query of the events endpoints. Everything is taken as text and checked here, so every
/// mistake gets a message saying what is expected.
#[derive(Debug, Default, Deserialize)]
pub struct EventsQuery {
    /// Required by `GET /api/v1/events`; ignored by `/api/v1/defenders/{id}/events`.
    defender: Option<String>,
    /// A stored kind or a group (`process`, `network`, `audit`, `notice`); a comma-separated
    /// list of them selects their union.
    kind: Option<String>,
    /// Unix milliseconds or RFC 3339 (a zone-less `YYYY-MM-DDTHH:MM[:SS]` is taken as UTC).
    since: Option<String>,
    until: Option<String>,
    before: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

fn bad_request(message: &str) -> Response {
    api_error(StatusCode::BAD_REQUEST, message)
}

/// Checks an events query and turns it into the store's; `Err` is the message of a 400.
fn event_query(q: &EventsQuery) -> Result<EventQuery, String> {
    let (_, kinds) = parse_kinds(q.kind.as_deref())?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_EVENTS,
        Some(l) => l
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_EVENTS).contains(l))
            .ok_or_else(|| format!("limit must be between 1 and {MAX_EVENTS}"))?,
    };
    let time = |name: &str, v: Option<&str>| -> Result<Option<i64>, String> {
        v.map(|v| parse_time(v).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    let seq = |name: &str, v: Option<&str>| -> Result<Option<i64>, String> {
        v.map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| format!("{name} must be an event seq (an integer)"))
        })
        .transpose()
    };
    Ok(EventQuery {
        kinds,
        since_ms: time("since", q.since.as_deref())?,
        until_ms: time("until", q.until.as_deref())?,
        before_seq: seq("before", q.before.as_deref())?,
        after_seq: seq("after", q.after.as_deref())?,
        limit,
    })
}

/// An event as the API returns it.
#[derive(Debug, Serialize)]
pub struct EventJson {
    pub defender_id: String,
    pub seq: i64,
    /// RFC 3339, when the Defender observed it.
    pub time: String,
    /// RFC 3339, when the Console stored it.
    pub received_at: String,
    pub kind: String,
    pub container: String,
    pub pid: Option<i64>,
    /// One human-readable line.
    pub summary: String,
    /// The decoded event's fields (see [`event_detail`] for raw bytes: lossy UTF-8 strings, plus
    /// `exe_b64`/`cwd_b64`/`argv_b64` exactly when the bytes are not valid UTF-8).
    pub detail: serde_json::Value,
}

impl EventJson {
    fn new(e: &StoredEvent) -> Self {
        Self {
            defender_id: e.defender_id.clone(),
            seq: e.seq,
            time: rfc3339(e.time_ms),
            received_at: rfc3339(e.received_at),
            kind: e.kind.clone(),
            container: e.container.clone(),
            pid: e.pid,
            summary: truncate(event_summary(&e.event), MAX_SUMMARY_CHARS),
            detail: event_detail(&e.event),
        }
    }
}

/// Most JSON bytes of events one API response carries. A page stops before the event that would
/// exceed it (it always holds at least one), whatever `limit` asked for; the `before` cursor of
/// the next older page (`older_before`, or the seq of the last event returned) continues it.
pub const MAX_EVENTS_RESPONSE_BYTES: usize = 1024 * 1024;

/// The events of a page (newest first) that fit [`MAX_EVENTS_RESPONSE_BYTES`], and the `before`
/// cursor of what was left out (None when everything fit).
fn within_budget(events: &[StoredEvent]) -> (Vec<EventJson>, Option<i64>) {
    let mut out = Vec::with_capacity(events.len());
    let mut used = 0usize;
    for e in events {
        let json = EventJson::new(e);
        let size = serde_json::to_vec(&json).map_or(0, |v| v.len() + 1);
        if !out.is_empty() && used + size > MAX_EVENTS_RESPONSE_BYTES {
            let cursor = last_seq(&out);
            return (out, Some(cursor));
        }
        used += size;
        out.push(json);
    }
    (out, None)
}

fn last_seq(events: &[EventJson]) -> i64 {
    events.last().map_or(0, |e| e.seq)
}

/// One page of `GET /api/v1/events`.
#[derive(Debug, Serialize)]
pub struct EventPageJson {
    pub defender_id: String,
    /// Newest first.
    pub events: Vec<EventJson>,
    /// Pass as `before` for the next older page; null when there is none.
    pub older_before: Option<i64>,
    /// Pass as `after` for the next newer page; null when there is none.
    pub newer_after: Option<i64>,
}

/// 404 unless the Defender exists.
async fn require_defender(state: &WebState, id: &str) -> Result<(), Response> {
    match state.store.get_defender(id).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(api_error(StatusCode::NOT_FOUND, "no such defender")),
        Err(e) => Err(internal(&e)),
    }
}

async fn page_of(state: &WebState, id: &str, q: &EventQuery) -> Result<EventPage, Response> {
    require_defender(state, id).await?;
    state
        .store
        .event_page(id, q)
        .await
        .map_err(|e| internal(&e))
}

/// `GET /api/v1/events?defender=ID[&kind=…][&since=…][&until=…][&before=SEQ|&after=SEQ][&limit=1..1000]`:
/// one page of a Defender's events, newest first, with the cursors of the neighbouring pages.
/// 400 when `defender` is missing or a parameter is invalid, 404 when the Defender is unknown.
pub async fn events(
    State(state): State<WebState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return bad_query(&rejection),
    };
    let Some(id) = query.defender.as_deref().filter(|d| !d.is_empty()) else {
        return bad_request("defender is required (a Defender id)");
    };
    let q = match event_query(&query) {
        Ok(q) => q,
        Err(message) => return bad_request(&message),
    };
    match page_of(&state, id, &q).await {
        Ok(page) => {
            let (events, cut_at) = within_budget(&page.events);
            Json(EventPageJson {
                defender_id: id.to_owned(),
                events,
                older_before: cut_at.or(page.older_before),
                newer_after: page.newer_after,
            })
            .into_response()
        }
        Err(res) => res,
    }
}

/// `GET /api/v1/defenders/{id}/events`: the same filters as `/api/v1/events` (its `defender`
/// is the path's), answering with the bare array of events, newest first.
pub async fn list_events(
    State(state): State<WebState>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return bad_query(&rejection),
    };
    let q = match event_query(&query) {
        Ok(q) => q,
        Err(message) => return bad_request(&message),
    };
    match page_of(&state, &id, &q).await {
        Ok(page) => Json(within_budget(&page.events).0).into_response(),
        Err(res) => res,
    }
}

fn observations_json(id: &str, o: &Observations) -> serde_json::Value {
    use serde_json::{Value, json};
    let executables: Vec<Value> = o
        .executables
        .iter()
        .map(|x| {
            let mut obj = serde_json::Map::new();
            put_bytes(&mut obj, "exe", &x.exe);
            obj.insert("starts".into(), x.starts.into());
            obj.insert("last_seen".into(), rfc3339(x.last_seen_ms).into());
            obj.insert("sha256".into(), x.sha256.clone().into());
            obj.insert("sha256_varies".into(), x.sha256_varies.into());
            Value::Object(obj)
        })
        .collect();
    let listening: Vec<Value> = o
        .listening
        .iter()
        .map(|l| {
            let mut obj = serde_json::Map::new();
            obj.insert("protocol".into(), protocol(l.protocol).into());
            obj.insert("address".into(), l.addr.clone().into());
            obj.insert("port".into(), l.port.into());
            obj.insert("pid".into(), l.pid.into());
            obj.insert("container".into(), l.container.clone().into());
            match &l.exe {
                Some(exe) => put_bytes(&mut obj, "exe", exe),
                None => {
                    obj.insert("exe".into(), Value::Null);
                }
            }
            obj.insert("open".into(), l.open.into());
            obj.insert("last_seen".into(), rfc3339(l.last_seen_ms).into());
            Value::Object(obj)
        })
        .collect();
    let destinations: Vec<Value> = o
        .destinations
        .iter()
        .map(|d| {
            json!({
                "protocol": protocol(d.protocol), "address": d.addr, "port": d.port,
                "connections": d.connections, "last_seen": rfc3339(d.last_seen_ms),
            })
        })
        .collect();
    json!({
        "defender_id": id,
        "window": OBSERVATION_WINDOW,
        "events_examined": o.events_examined,
        "truncated": o.truncated,
        "capped": o.capped,
        "executables": executables,
        "listening": listening,
        "destinations": destinations,
    })
}

/// `GET /api/v1/defenders/{id}/observations`: executables started, listening sockets and
/// outbound destinations over the Defender's newest events (`window`; `truncated` when older
/// events exist). A separate resource, not part of `GET /api/v1/defenders/{id}`, because it
/// decodes up to `window` stored events while the Defender itself is one row.
pub async fn observations(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    if let Err(res) = require_defender(&state, &id).await {
        return res;
    }
    match state.store.observations(&id, OBSERVATION_WINDOW).await {
        Ok(o) => Json(observations_json(&id, &o)).into_response(),
        Err(e) => internal(&e),
    }
}
