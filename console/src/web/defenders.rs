//! Manage > Defenders: the live list, its refresh fragment, and the per-Defender page.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::audits::{CountMap, counts_cell};
use super::auth::Operator;
use super::forensics::{self, OBSERVATION_WINDOW, PAGE_SIZE, TimelineParams};
use super::layout;
use super::render::{
    arn_tail, defender_name, display, dropped_text, human_bytes, path_segment, rfc3339,
    rfc3339_secs, task_definition, thousands,
};
use super::security::CspNonce;
use super::{WebState, internal_error_page, visible_defenders};
use crate::status::{Status, human_duration, status_of};
use crate::store::forensics::EventPage;
use crate::store::{DefenderRecord, now_ms};

/// Path of the list page.
pub const LIST_PATH: &str = "/manage/defenders";
/// Path of the list's `<tbody>` fragment the page's script polls.
pub const ROWS_PATH: &str = "/manage/defenders/rows";
/// Events shown on one page of a Defender's timeline.
pub const DETAIL_EVENTS: i64 = PAGE_SIZE;

const COLUMNS: usize = 9;

fn detail_href(id: &str) -> String {
    format!("{LIST_PATH}/{}", path_segment(id))
}

fn status_badge(s: &Status) -> Markup {
    html! {
        span class={ "status " (if s.connected { "connected" } else { "disconnected" }) } { (s.text) }
    }
}

/// "12,345 events dropped" when the Defender's last heartbeat counted drops, else nothing.
fn dropped_badge(d: &DefenderRecord) -> Markup {
    html! {
        @if d.dropped_events > 0 {
            " " span.dropped title="Events the Defender dropped at its spool cap (from its heartbeats)" {
                (dropped_text(d.dropped_events))
            }
        }
    }
}

/// Style of the list's drop warning (constant; under the page's CSP nonce).
const LIST_CSS: &str = ".dropped { color:var(--err); font-weight:600; white-space:nowrap; }";

fn row(d: &DefenderRecord, now: i64, audits: &CountMap) -> Markup {
    let s = status_of(d, now);
    html! {
        tr {
            td { a href=(detail_href(&d.id)) { (defender_name(d)) } }
            td { (task_definition(d)) }
            td title=(display(&d.cluster)) { (display(arn_tail(&d.cluster))) }
            td { (display(&d.agent_version)) }
            td { (display(&d.mode)) }
            td {
                time datetime=(rfc3339(s.last_seen_ms)) title=(rfc3339_secs(s.last_seen_ms)) {
                    (human_duration(now - s.last_seen_ms)) " ago"
                }
            }
            td { (status_badge(&s)) (dropped_badge(d)) }
            td.num { (thousands(d.dropped_events)) }
            (counts_cell(&d.id, audits))
        }
    }
}

fn empty_state(retention_ms: i64) -> Markup {
    html! {
        div.empty {
            p {
                strong { "No Defenders to show." }
                " A Defender appears here as soon as it enrolls; disconnected ones leave the list after "
                (human_duration(retention_ms)) "."
            }
            ol {
                li {
                    "Create an install bundle (Console address, CA certificate and an enrollment token) on the Console host:"
                    pre { "defender-console bundle --console-addr <console-host>:8084 > bundle.b64" }
                }
                li {
                    "Start your application under the Defender, with the bundle:"
                    pre { "defender run --install-bundle \"$(cat bundle.b64)\" -- <your app and its arguments>" }
                    "On AWS Fargate, pass the bundle as the INSTALL_BUNDLE environment variable or secret of the protected task definition."
                }
            }
        }
    }
}

/// The list's `<tbody>`, the same markup for the page and for its refresh fragment.
fn rows_tbody(
    defenders: &[DefenderRecord],
    now: i64,
    retention_ms: i64,
    audits: &CountMap,
) -> Markup {
    html! {
        tbody #defender-rows data-refresh=(ROWS_PATH) data-interval="5000" {
            @if defenders.is_empty() {
                tr { td colspan=(COLUMNS) { (empty_state(retention_ms)) } }
            }
            @for d in defenders {
                (row(d, now, audits))
            }
        }
    }
}

/// `GET /manage/defenders`.
pub async fn list_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
) -> Response {
    let (defenders, now) = match visible_defenders(&state).await {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let audits = match state.store.audit_counts().await {
        Ok(c) => c,
        Err(e) => return internal_error_page(&e),
    };
    let body = html! {
        style nonce=(nonce.0) { (maud::PreEscaped(LIST_CSS)) }
        div.page-head {
            h1 { "Defenders" }
            span.muted data-refresh-status { "Refreshes every 5 s" }
        }
        table.grid {
            thead {
                tr {
                    th { "Defender" } th { "Task definition" } th { "Cluster" } th { "Version" }
                    th { "Mode" } th { "Last seen" } th { "Status" } th { "Dropped events" }
                    th title="Runtime audits (and how many the Defender prevented)" { "Audits" }
                }
            }
            (rows_tbody(&defenders, now, state.retention_ms(), &audits))
        }
    };
    Html(layout::page(&nonce, &op, LIST_PATH, "Defenders", body).into_string()).into_response()
}

/// `GET /manage/defenders/rows`: the list's `<tbody>`, for the page's refresh script.
pub async fn rows(State(state): State<WebState>) -> Response {
    let audits = match state.store.audit_counts().await {
        Ok(c) => c,
        Err(e) => return internal_error_page(&e),
    };
    match visible_defenders(&state).await {
        Ok((defenders, now)) => {
            Html(rows_tbody(&defenders, now, state.retention_ms(), &audits).into_string())
                .into_response()
        }
        Err(e) => internal_error_page(&e),
    }
}

/// A container as `containers_json` stores it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Container {
    name: String,
    image: String,
    image_id: String,
    docker_id: String,
}

/// `GET /manage/defenders/{id}[?kind=…&since=…&until=…&before=SEQ|after=SEQ]`: metadata,
/// status, health, containers, the forensics timeline (filterable by kind and UTC time,
/// keyset-paginated by seq, process-tree-aware) and the observations summary beside it.
pub async fn detail_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    Path(id): Path<String>,
    RawQuery(raw_query): RawQuery,
) -> Response {
    let d = match state.store.get_defender(&id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            let body = html! {
                h1 { "Defender not found" }
                p { "No Defender has the id " code { (display(&id)) } ". " a href=(LIST_PATH) { "Back to the list" } }
            };
            return (
                StatusCode::NOT_FOUND,
                Html(layout::page(&nonce, &op, LIST_PATH, "Not found", body).into_string()),
            )
                .into_response();
        }
        Err(e) => return internal_error_page(&e),
    };
    let pairs = forensics::query_pairs(raw_query.as_deref().unwrap_or(""));
    let (params, param_error) = match TimelineParams::parse(&pairs) {
        Ok(p) => (p, None),
        Err(e) => (TimelineParams::default(), Some(e)),
    };
    let store = &state.store;
    let query = params.query(DETAIL_EVENTS);
    let timeline = async {
        if param_error.is_some() {
            return Ok(None);
        }
        let (page, matching) = tokio::try_join!(
            store.event_page(&d.id, &query),
            store.count_matching_events(&d.id, &query)
        )?;
        Ok::<_, crate::store::StoreError>(Some((page, matching)))
    };
    let (timeline, total, observations) = match tokio::try_join!(
        timeline,
        store.count_events(&d.id),
        store.observations(&d.id, OBSERVATION_WINDOW)
    ) {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let images = state
        .store
        .images_of_defender(&d.id)
        .await
        .unwrap_or_default();
    let now = now_ms();
    let s = status_of(&d, now);
    let containers: Vec<Container> = serde_json::from_str(&d.containers_json).unwrap_or_default();
    let name = defender_name(&d);
    let base = detail_href(&d.id);
    let body = html! {
        (forensics::style(&nonce.0))
        p.muted { a href=(LIST_PATH) { "Defenders" } " › " (name) }
        div.page-head {
            h1 { (name) }
            (status_badge(&s))
            (dropped_badge(&d))
        }
        dl.meta {
            dt { "Status" } dd { (s.text) }
            dt { "Defender ID" } dd { (display(&d.id)) }
            dt { "Hostname" } dd { (display(&d.hostname)) }
            dt { "Task ARN" } dd { (display(&d.task_arn)) }
            dt { "Task definition" } dd { (task_definition(&d)) }
            dt { "Cluster" } dd { (display(&d.cluster)) }
            dt { "Availability zone" } dd { (display(&d.availability_zone)) }
            dt { "Launch type" } dd { (display(&d.launch_type)) }
            dt { "Agent version" } dd { (display(&d.agent_version)) }
            dt { "Mode" } dd { (display(&d.mode)) }
            dt { "Enrolled" } dd { (rfc3339_secs(d.enrolled_at)) }
            dt { "Last seen" } dd { (rfc3339_secs(s.last_seen_ms)) " (" (human_duration(now - s.last_seen_ms)) " ago)" }
            @if let Some(since) = s.connected_since_ms {
                dt { "Connected since" } dd { (rfc3339_secs(since)) }
            }
            @if let Some(at) = d.decommissioned_at {
                dt { "Decommissioned" } dd.error { (rfc3339_secs(at)) }
            }
        }
        h2 { "Health " span.muted { "(last heartbeat)" } }
        dl.meta {
            dt { "Queue depth" } dd { (thousands(d.queue_depth)) " events" }
            dt { "Spool" } dd { (human_bytes(d.spool_bytes)) }
            dt { "Dropped events" } dd {
                @if d.dropped_events > 0 { span.dropped { (dropped_text(d.dropped_events)) } } @else { "0" }
            }
            dt { "Memory (RSS)" } dd { (human_bytes(d.rss_bytes)) }
            dt { "CPU" } dd { (format!("{:.2} %", d.cpu_centipercent as f64 / 100.0)) }
            dt { "Events stored" } dd { (thousands(total)) }
        }
        h2 { "Containers" }
        @if containers.is_empty() {
            p.muted { "No containers reported." }
        } @else {
            table.grid {
                thead { tr { th { "Name" } th { "Image" } th { "Image ID" } th { "Docker ID" } } }
                tbody {
                    @for c in &containers {
                        tr {
                            td { (display(&c.name)) }
                            td.wrap { (display(&c.image)) }
                            td.wrap { (display(&c.image_id)) }
                            td.wrap { (display(&c.docker_id)) }
                        }
                    }
                }
            }
        }
        (super::vulns::defender_links(&d.id, &images))
        div.forensics {
            section {
                (timeline_section(&base, &params, param_error.as_deref(), timeline.as_ref()))
            }
            (forensics::observations(&observations, total))
        }
    };
    let status = if param_error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (
        status,
        Html(layout::page(&nonce, &op, LIST_PATH, &name, body).into_string()),
    )
        .into_response()
}

fn timeline_section(
    base: &str,
    params: &TimelineParams,
    error: Option<&str>,
    timeline: Option<&(EventPage, i64)>,
) -> Markup {
    match (timeline, error) {
        (Some((page, matching)), _) => forensics::timeline(base, params, page, *matching),
        (None, error) => {
            forensics::timeline_error(base, params, error.unwrap_or("invalid parameters"))
        }
    }
}
