//! Manage > Defenders: the live list, its refresh fragment, and the per-Defender page.

use axum::Extension;
use axum::extract::{Path, Query, RawQuery, State};
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

const COLUMNS: usize = 10;
/// Rows of one page of the list: the page and its 5-second refresh stay small whatever the
/// fleet's size.
pub const PAGE_ROWS: usize = 100;

/// `?page=N` (1-based) of the list and of its refresh fragment; anything else is page 1.
#[derive(Debug, Default, Deserialize)]
pub struct ListPageQuery {
    page: Option<String>,
}

impl ListPageQuery {
    fn page(&self) -> usize {
        self.page
            .as_deref()
            .and_then(|p| p.trim().parse::<usize>().ok())
            .filter(|p| *p >= 1)
            .unwrap_or(1)
    }
}

/// Rows of page `page` (1-based) and the page actually shown (the last one when past the end).
fn page_of(defenders: &[DefenderRecord], page: usize) -> (&[DefenderRecord], usize) {
    let pages = defenders.len().div_ceil(PAGE_ROWS).max(1);
    let page = page.min(pages);
    let start = (page - 1) * PAGE_ROWS;
    let end = (start + PAGE_ROWS).min(defenders.len());
    (&defenders[start..end], page)
}

/// "Defenders 101–200 of 2,345 · ‹ Previous · Next ›" under the list, when there is more than
/// one page.
fn list_pager(total: usize, page: usize) -> Markup {
    let pages = total.div_ceil(PAGE_ROWS).max(1);
    let first = (page - 1) * PAGE_ROWS + 1;
    let last = (page * PAGE_ROWS).min(total);
    html! {
        @if pages > 1 {
            p.pager.muted {
                "Defenders " (thousands(first as i64)) "–" (thousands(last as i64)) " of " (thousands(total as i64))
                @if page > 1 {
                    " · " a rel="prev" href=(format!("{LIST_PATH}?page={}", page - 1)) { "‹ Previous" }
                }
                @if page < pages {
                    " · " a rel="next" href=(format!("{LIST_PATH}?page={}", page + 1)) { "Next ›" }
                }
            }
        }
    }
}

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

/// "exact" / "polling (1 s)", flagged when a capture source is failing (the Defender is blind).
fn capture_badge(d: &DefenderRecord) -> Markup {
    let summary = crate::web::render::capture_summary(d);
    html! {
        span.capture title=(display(&d.capture_detail)) { (summary) }
        @if !d.capture_error.is_empty() {
            " " span.dropped title=(display(&d.capture_error)) { "capture failing" }
        }
    }
}

/// Style of the list's drop warning (constant; under the page's CSP nonce).
const LIST_CSS: &str = ".dropped { color:var(--err); font-weight:600; white-space:nowrap; }";

/// WAAS event counts per Defender id.
type WaasMap = std::collections::HashMap<String, crate::store::waas::WaasCounts>;

/// The WAAS cell of a row: events (a link to the Defender's WAAS events) and how many refused.
fn waas_cell(id: &str, waas: &WaasMap) -> Markup {
    let c = waas.get(id).copied().unwrap_or_default();
    html! {
        td.num.waas data-waas=(c.total) data-refused=(c.refused) {
            @if c.total == 0 {
                "0"
            } @else {
                a href=(format!("{}?defender={}", super::waas::EVENTS_PATH, super::render::form_encode(id))) title="This Defender's WAAS events" { (thousands(c.total)) }
                @if c.refused > 0 {
                    " " span.muted { "(" (thousands(c.refused)) " refused)" }
                }
            }
        }
    }
}

fn row(d: &DefenderRecord, now: i64, audits: &CountMap, waas: &WaasMap) -> Markup {
    let s = status_of(d, now);
    html! {
        tr {
            td { a href=(detail_href(&d.id)) { (defender_name(d)) } }
            td { (task_definition(d)) }
            td title=(display(&d.cluster)) { (display(arn_tail(&d.cluster))) }
            td { (display(&d.agent_version)) }
            td {
                (display(&d.mode))
                " · "
                (capture_badge(d))
            }
            td {
                time datetime=(rfc3339(s.last_seen_ms)) title=(rfc3339_secs(s.last_seen_ms)) {
                    (human_duration(now - s.last_seen_ms)) " ago"
                }
            }
            td { (status_badge(&s)) (dropped_badge(d)) }
            td.num { (thousands(d.dropped_events)) }
            (counts_cell(&d.id, audits))
            (waas_cell(&d.id, waas))
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
                    "Create an install bundle (Console address, CA certificate and an enrollment token, valid 90 days) on the Console host:"
                    pre { "defender-console bundle --console-addr <console-host>:8084 -o bundle.b64" }
                }
                li {
                    "Start your application under the Defender, with the bundle in a file (or the INSTALL_BUNDLE environment variable; never on the command line, where every local user can read it):"
                    pre { "defender run --install-bundle-file bundle.b64 -- <your app and its arguments>" }
                    "On AWS Fargate, pass the bundle as the INSTALL_BUNDLE secret (or environment variable) of the protected task definition."
                }
            }
        }
    }
}

/// The list's `<tbody>` for page `page`, the same markup for the page and for its refresh
/// fragment.
fn rows_tbody(
    defenders: &[DefenderRecord],
    page: usize,
    now: i64,
    retention_ms: i64,
    audits: &CountMap,
    waas: &WaasMap,
) -> Markup {
    html! {
        tbody #defender-rows data-refresh=(format!("{ROWS_PATH}?page={page}")) data-interval="5000" {
            @if defenders.is_empty() {
                tr { td colspan=(COLUMNS) { (empty_state(retention_ms)) } }
            }
            @for d in defenders {
                (row(d, now, audits, waas))
            }
        }
    }
}

/// `GET /manage/defenders[?page=N]`: [`PAGE_ROWS`] Defenders a page.
pub async fn list_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    query: Result<Query<ListPageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let requested = query.map_or(1, |Query(q)| q.page());
    let (defenders, now) = match visible_defenders(&state).await {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let (audits, waas) =
        match tokio::try_join!(state.store.audit_counts(), state.store.waas_counts()) {
            Ok(c) => c,
            Err(e) => return internal_error_page(&e),
        };
    let (rows, page) = page_of(&defenders, requested);
    let body = html! {
        style nonce=(nonce.0) { (maud::PreEscaped(LIST_CSS)) }
        div.page-head {
            h1 { "Defenders" }
            span.muted data-refresh-status { "Refreshes every 5 s" }
            a href=(super::decommission::PATH) { "Decommission…" }
        }
        table.grid {
            thead {
                tr {
                    th { "Defender" } th { "Task definition" } th { "Cluster" } th { "Version" }
                    th { "Mode · capture" } th { "Last seen" } th { "Status" } th { "Dropped events" }
                    th title="Runtime audits (and how many the Defender prevented)" { "Audits" }
                    th title="WAAS events (and how many requests were refused)" { "WAAS" }
                }
            }
            (rows_tbody(rows, page, now, state.retention_ms(), &audits, &waas))
        }
        (list_pager(defenders.len(), page))
    };
    Html(layout::page(&nonce, &op, LIST_PATH, "Defenders", body).into_string()).into_response()
}

/// `GET /manage/defenders/rows[?page=N]`: the list's `<tbody>`, for the page's refresh script.
pub async fn rows(
    State(state): State<WebState>,
    query: Result<Query<ListPageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let requested = query.map_or(1, |Query(q)| q.page());
    let (audits, waas) =
        match tokio::try_join!(state.store.audit_counts(), state.store.waas_counts()) {
            Ok(c) => c,
            Err(e) => return internal_error_page(&e),
        };
    match visible_defenders(&state).await {
        Ok((defenders, now)) => {
            let (rows, page) = page_of(&defenders, requested);
            Html(rows_tbody(rows, page, now, state.retention_ms(), &audits, &waas).into_string())
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
    let (timeline, total, observations, cert) = match tokio::try_join!(
        timeline,
        store.count_events(&d.id),
        store.observations(&d.id, OBSERVATION_WINDOW),
        store.cert_state(&d.id)
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
            (super::decommission::button(&op, &d))
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
            dt { "Capture" } dd #capture {
                (capture_badge(&d))
                @if !d.capture_detail.is_empty() { " — " (display(&d.capture_detail)) }
                @if d.capture_mode == "exact" || d.capture_intercepted > 0 {
                    br; span.muted {
                        (thousands(d.capture_intercepted)) " syscalls intercepted"
                        @if d.capture_timed_out > 0 { ", " (thousands(d.capture_timed_out)) " let through unjudged (Defender too slow)" }
                    }
                }
                @if d.capture_missed > 0 {
                    br; span.dropped { (thousands(d.capture_missed)) " processes ran and ended unseen" }
                }
                @if !d.capture_error.is_empty() {
                    br; span.dropped { "Capture error: " (display(&d.capture_error)) }
                }
            }
            dt { "Enrolled" } dd { (rfc3339_secs(d.enrolled_at)) }
            dt { "Last seen" } dd { (rfc3339_secs(s.last_seen_ms)) " (" (human_duration(now - s.last_seen_ms)) " ago)" }
            @if let Some(since) = s.connected_since_ms {
                dt { "Connected since" } dd { (rfc3339_secs(since)) }
            }
            @if let Some(at) = d.decommissioned_at {
                dt { "Decommissioned" } dd.error { (rfc3339_secs(at)) }
            }
            @if let Some((not_after, renewals, renewed_at)) = cert {
                dt { "Certificate expires" } dd { (rfc3339_secs(not_after)) }
                dt { "Certificate renewals" } dd {
                    (renewals)
                    @if let Some(at) = renewed_at { " (last " (rfc3339_secs(at)) ")" }
                }
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
