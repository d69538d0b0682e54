//! REST API v1 (JSON). Authentication is done by the router's middleware
//! ([`super::auth::require_api_caller`]); handlers only see authorised requests.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::render::{event_detail, event_summary, rfc3339};
use super::{WebState, api_error, visible_defenders};
use crate::status::status_of;
use crate::store::{DefenderRecord, StoreError, StoredEvent, now_ms};

/// Event kinds the events endpoint filters on (the names stored beside each event).
const EVENT_KINDS: [&str; 6] = [
    "process_start",
    "process_exit",
    "network_listen",
    "network_connection",
    "audit",
    "notice",
];
/// Default and largest `limit` of the events endpoint.
const DEFAULT_EVENTS: i64 = 100;
const MAX_EVENTS: i64 = 1000;

/// A Defender as the API returns it.
#[derive(Debug, Serialize)]
pub struct DefenderJson {
    pub id: String,
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
        }
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

/// Query of `GET /api/v1/defenders`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    connected: Option<String>,
}

/// `GET /api/v1/defenders[?connected=true|false]`: the Defenders of Manage > Defenders.
pub async fn list_defenders(
    State(state): State<WebState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return bad_query(&rejection),
    };
    let connected = match query.connected.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "connected must be \"true\" or \"false\"",
            );
        }
    };
    let (defenders, now) = match visible_defenders(&state).await {
        Ok(v) => v,
        Err(e) => return internal(&e),
    };
    let list: Vec<DefenderJson> = defenders
        .iter()
        .map(|d| DefenderJson::new(d, now))
        .filter(|d| connected.is_none_or(|want| d.connected == want))
        .collect();
    Json(list).into_response()
}

/// `GET /api/v1/defenders/{id}`: one Defender, whatever its age (404 when unknown).
pub async fn get_defender(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    match state.store.get_defender(&id).await {
        Ok(Some(d)) => Json(DefenderJson::new(&d, now_ms())).into_response(),
        Ok(None) => api_error(StatusCode::NOT_FOUND, "no such defender"),
        Err(e) => internal(&e),
    }
}

/// Query of `GET /api/v1/defenders/{id}/events`.
#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    kind: Option<String>,
    limit: Option<i64>,
}

/// An event as the API returns it.
#[derive(Debug, Serialize)]
pub struct EventJson {
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
    /// The decoded event's fields.
    pub detail: serde_json::Value,
}

impl EventJson {
    fn new(e: &StoredEvent) -> Self {
        Self {
            seq: e.seq,
            time: rfc3339(e.time_ms),
            received_at: rfc3339(e.received_at),
            kind: e.kind.clone(),
            container: e.container.clone(),
            pid: e.pid,
            summary: event_summary(&e.event),
            detail: event_detail(&e.event),
        }
    }
}

/// `GET /api/v1/defenders/{id}/events[?kind=…][&limit=1..1000]`: newest events first.
pub async fn list_events(
    State(state): State<WebState>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(rejection) => return bad_query(&rejection),
    };
    if let Some(kind) = query.kind.as_deref()
        && !EVENT_KINDS.contains(&kind)
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!("kind must be one of {}", EVENT_KINDS.join(", ")),
        );
    }
    let limit = query.limit.unwrap_or(DEFAULT_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!("limit must be between 1 and {MAX_EVENTS}"),
        );
    }
    match state.store.get_defender(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return api_error(StatusCode::NOT_FOUND, "no such defender"),
        Err(e) => return internal(&e),
    }
    match state
        .store
        .list_events(&id, query.kind.as_deref(), limit)
        .await
    {
        Ok(events) => Json(events.iter().map(EventJson::new).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(&e),
    }
}
