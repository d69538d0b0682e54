//! Manage > Defenders: the live list, its refresh fragment, and the per-Defender page.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::Operator;
use super::layout;
use super::render::{
    MAX_SUMMARY_CHARS, arn_tail, defender_name, display, event_summary, human_bytes, path_segment,
    rfc3339, rfc3339_secs, task_definition, truncate,
};
use super::security::CspNonce;
use super::{WebState, internal_error_page, visible_defenders};
use crate::status::{Status, human_duration, status_of};
use crate::store::{DefenderRecord, now_ms};

/// Path of the list page.
pub const LIST_PATH: &str = "/manage/defenders";
/// Path of the list's `<tbody>` fragment the page's script polls.
pub const ROWS_PATH: &str = "/manage/defenders/rows";
/// Events shown on a Defender's page.
pub const DETAIL_EVENTS: i64 = 100;

const COLUMNS: usize = 8;

fn detail_href(id: &str) -> String {
    format!("{LIST_PATH}/{}", path_segment(id))
}

fn status_badge(s: &Status) -> Markup {
    html! {
        span class={ "status " (if s.connected { "connected" } else { "disconnected" }) } { (s.text) }
    }
}

fn row(d: &DefenderRecord, now: i64) -> Markup {
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
            td { (status_badge(&s)) }
            td.num { (d.dropped_events) }
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
fn rows_tbody(defenders: &[DefenderRecord], now: i64, retention_ms: i64) -> Markup {
    html! {
        tbody #defender-rows data-refresh=(ROWS_PATH) data-interval="5000" {
            @if defenders.is_empty() {
                tr { td colspan=(COLUMNS) { (empty_state(retention_ms)) } }
            }
            @for d in defenders {
                (row(d, now))
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
    let body = html! {
        div.page-head {
            h1 { "Defenders" }
            span.muted data-refresh-status { "Refreshes every 5 s" }
        }
        table.grid {
            thead {
                tr {
                    th { "Defender" } th { "Task definition" } th { "Cluster" } th { "Version" }
                    th { "Mode" } th { "Last seen" } th { "Status" } th { "Dropped events" }
                }
            }
            (rows_tbody(&defenders, now, state.retention_ms()))
        }
    };
    Html(layout::page(&nonce, &op, LIST_PATH, "Defenders", body).into_string()).into_response()
}

/// `GET /manage/defenders/rows`: the list's `<tbody>`, for the page's refresh script.
pub async fn rows(State(state): State<WebState>) -> Response {
    match visible_defenders(&state).await {
        Ok((defenders, now)) => {
            Html(rows_tbody(&defenders, now, state.retention_ms()).into_string()).into_response()
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

/// `GET /manage/defenders/{id}`: metadata, status, health, containers and newest events.
pub async fn detail_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    Path(id): Path<String>,
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
    let (events, total) = match tokio::try_join!(
        state.store.list_events(&d.id, None, DETAIL_EVENTS),
        state.store.count_events(&d.id)
    ) {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let now = now_ms();
    let s = status_of(&d, now);
    let containers: Vec<Container> = serde_json::from_str(&d.containers_json).unwrap_or_default();
    let name = defender_name(&d);
    let body = html! {
        p.muted { a href=(LIST_PATH) { "Defenders" } " › " (name) }
        div.page-head {
            h1 { (name) }
            (status_badge(&s))
        }
        dl.meta {
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
            dt { "Queue depth" } dd { (d.queue_depth) " events" }
            dt { "Spool" } dd { (human_bytes(d.spool_bytes)) }
            dt { "Dropped events" } dd { (d.dropped_events) }
            dt { "Memory (RSS)" } dd { (human_bytes(d.rss_bytes)) }
            dt { "CPU" } dd { (format!("{:.2} %", d.cpu_centipercent as f64 / 100.0)) }
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
        h2 {
            "Events "
            span.muted { "(newest " (events.len()) " of " (total) ")" }
        }
        @if events.is_empty() {
            p.muted { "No events stored yet." }
        } @else {
            table.grid {
                thead {
                    tr { th { "Seq" } th { "Time" } th { "Kind" } th { "Container" } th { "PID" } th { "Summary" } }
                }
                tbody {
                    @for e in &events {
                        tr {
                            td.num { (e.seq) }
                            td { time datetime=(rfc3339(e.time_ms)) { (rfc3339_secs(e.time_ms)) } }
                            td { (e.kind) }
                            td { (display(&e.container)) }
                            td.num { @if let Some(pid) = e.pid { (pid) } }
                            td.wrap { (truncate(event_summary(&e.event), MAX_SUMMARY_CHARS)) }
                        }
                    }
                }
            }
        }
    };
    Html(layout::page(&nonce, &op, LIST_PATH, &name, body).into_string()).into_response()
}
