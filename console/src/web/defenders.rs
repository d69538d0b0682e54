//! Manage › Defenders: the live list (searched, filtered, sorted and paged by [`super::fleet`]),
//! its refresh fragment, and the per-Defender page.

use axum::Extension;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::audits::{CountMap, counts_cell};
use super::auth::Operator;
use super::fleet::{Fleet, FleetParams};
use super::forensics::{self, OBSERVATION_WINDOW, PAGE_SIZE, TimelineParams};
use super::layout;
use super::render::{
    arn_tail, defender_name, display, dropped_text, human_bytes, path_segment, rfc3339,
    rfc3339_secs, task_definition, thousands,
};
use super::security::CspNonce;
use super::{WebState, internal_error_page};
use crate::status::{Status, human_duration, status_of};
use crate::store::fleet::FleetSort;
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
const LIST_CSS: &str = ".dropped { color:var(--err); font-weight:600; white-space:nowrap; } \
    span.host { font-size:12px; }";

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
            td {
                a href=(detail_href(&d.id)) { (defender_name(d)) }
                @if !d.hostname.is_empty() && !defender_name(d).starts_with(&display(&d.hostname)) {
                    br; span.muted.host { (display(&d.hostname)) }
                }
            }
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

/// The list's `<tbody>`, the same markup for the page and for its refresh fragment, which
/// re-reads this page only (same filters, sort and cursor).
fn rows_tbody(
    fleet: &Fleet,
    defenders: &[DefenderRecord],
    now: i64,
    retention_ms: i64,
    audits: &CountMap,
    waas: &WaasMap,
) -> Markup {
    html! {
        tbody #defender-rows data-refresh=(fleet.same_page(ROWS_PATH)) data-interval="5000" {
            @if defenders.is_empty() {
                tr { td colspan=(COLUMNS) {
                    @if fleet.filtered() {
                        div.empty { "No Defender matches. " a href=(LIST_PATH) { "Show all" } }
                    } @else {
                        (empty_state(retention_ms))
                    }
                } }
            }
            @for d in defenders {
                (row(d, now, audits, waas))
            }
        }
    }
}

/// A column heading that sorts by its column (a second click reverses the order).
fn sort_th(fleet: &Fleet, key: FleetSort, label: &str, title: Option<&str>) -> Markup {
    let q = &fleet.query;
    let current = q.sort == key;
    let descending = if current {
        !q.descending
    } else {
        key.default_descending()
    };
    let arrow = match (current, q.descending) {
        (false, _) => "",
        (true, true) => " ↓",
        (true, false) => " ↑",
    };
    let sort = if current {
        Some(if q.descending {
            "descending"
        } else {
            "ascending"
        })
    } else {
        None
    };
    html! {
        th aria-sort=[sort] title=[title] {
            a.sort href=(fleet.href(LIST_PATH, key, descending, None, 1)) { (label) (arrow) }
        }
    }
}

/// A `<select>` of a filter: "any" and the known values (the current one kept even if gone).
fn filter_select(name: &str, label: &str, current: Option<&str>, values: &[String]) -> Markup {
    html! {
        label.filter {
            span { (label) }
            select name=(name) {
                option value="" { "any" }
                @if let Some(c) = current {
                    @if !values.iter().any(|v| v == c) {
                        option value=(c) selected { (display(c)) }
                    }
                }
                @for v in values {
                    option value=(v) selected[current == Some(v.as_str())] { (display(v)) }
                }
            }
        }
    }
}

/// Style of the list's search bar and headings (constant; under the page's CSP nonce).
const FLEET_CSS: &str = "
form.fleet { display:flex; flex-wrap:wrap; gap:10px 14px; align-items:end; margin:0 0 12px; }
form.fleet input[type=search] { padding:6px 8px; border:1px solid #d0d5dd; border-radius:6px; font:inherit; min-width:280px; }
form.fleet label.filter { display:grid; gap:2px; font-size:12.5px; color:var(--muted); }
form.fleet select { padding:5px 6px; border:1px solid #d0d5dd; border-radius:6px; font:inherit; }
form.fleet button { padding:6px 14px; border:0; border-radius:6px; background:var(--accent); color:#fff; font:inherit; cursor:pointer; }
th a.sort { color:inherit; text-decoration:none; }
th a.sort:hover { text-decoration:underline; }
.counts { font-variant-numeric:tabular-nums; }
.counts .on { color:var(--ok); } .counts .off { color:var(--off); }
";

/// `GET /manage/defenders[?q=…&status=…&mode=…&version=…&cluster=…&sort=…&order=…&cursor=…]`:
/// [`PAGE_ROWS`] Defenders a page, searched, filtered and sorted by SQLite ([`super::fleet`]).
pub async fn list_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    params: Result<Query<FleetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = params.map(|Query(p)| p).unwrap_or_default();
    let (fleet, problem) = match params.check(PAGE_ROWS, PAGE_ROWS) {
        Ok(f) => (f, None),
        Err(e) => (
            FleetParams::default()
                .check(PAGE_ROWS, PAGE_ROWS)
                .expect("defaults are valid"),
            Some(e),
        ),
    };
    let (page, now) = match fleet.read(&state).await {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let (audits, waas) = match page_counts(&state, &page.defenders).await {
        Ok(c) => c,
        Err(e) => return internal_error_page(&e),
    };
    let facets = match state.store.fleet_facets().await {
        Ok(f) => f,
        Err(e) => return internal_error_page(&e),
    };
    let q = &fleet.query;
    let shown = page.defenders.len();
    let first = fleet.start;
    let csv_href = fleet
        .href("/api/v1/defenders", q.sort, q.descending, None, 1)
        .replacen("/api/v1/defenders", "/api/v1/defenders?format=csv", 1)
        .replacen("csv?", "csv&", 1);
    let status_value = q
        .connected
        .map(|c| if c { "connected" } else { "disconnected" });
    let body = html! {
        style nonce=(nonce.0) { (maud::PreEscaped(LIST_CSS)) (maud::PreEscaped(FLEET_CSS)) }
        div.page-head {
            h1 { "Defenders" }
            span.counts #fleet-counts {
                span.on { (thousands(page.connected)) " connected" }
                " · "
                span.off { (thousands(page.disconnected)) " disconnected" }
            }
            span.muted data-refresh-status { "Refreshes every 5 s" }
            a href=(csv_href) download="defenders.csv" { "Export CSV" }
            a href=(super::decommission::PATH) { "Decommission…" }
        }
        @if let Some(problem) = &problem {
            p.error role="alert" { "Ignored an invalid query: " (problem) }
        }
        form.fleet method="get" action=(LIST_PATH) role="search" {
            label.filter {
                span { "Search" }
                input type="search" name="q" value=(q.search) maxlength="256"
                    placeholder="name, task, family, cluster or id";
            }
            label.filter {
                span { "Status" }
                select name="status" {
                    option value="" { "any" }
                    option value="connected" selected[status_value == Some("connected")] { "connected" }
                    option value="disconnected" selected[status_value == Some("disconnected")] { "disconnected" }
                }
            }
            (filter_select("mode", "Mode", q.mode.as_deref(), &facets.modes))
            (filter_select("version", "Version", q.version.as_deref(), &facets.versions))
            (filter_select("cluster", "Cluster", q.cluster.as_deref(), &facets.clusters))
            @if q.sort != FleetSort::default() || q.descending != q.sort.default_descending() {
                input type="hidden" name="sort" value=(q.sort.as_str());
                input type="hidden" name="order" value=(if q.descending { "desc" } else { "asc" });
            }
            button type="submit" { "Apply" }
            @if fleet.filtered() {
                a href=(LIST_PATH) { "Clear" }
            }
        }
        table.grid {
            thead {
                tr {
                    (sort_th(&fleet, FleetSort::Name, "Defender", None))
                    (sort_th(&fleet, FleetSort::Task, "Task definition", None))
                    (sort_th(&fleet, FleetSort::Cluster, "Cluster", None))
                    (sort_th(&fleet, FleetSort::Version, "Version", None))
                    (sort_th(&fleet, FleetSort::Mode, "Mode · capture", None))
                    (sort_th(&fleet, FleetSort::LastSeen, "Last seen", None))
                    (sort_th(&fleet, FleetSort::Status, "Status", None))
                    (sort_th(&fleet, FleetSort::Dropped, "Dropped events", None))
                    (sort_th(&fleet, FleetSort::Audits, "Audits", Some("Runtime audits (and how many the Defender prevented)")))
                    th title="WAAS events (and how many requests were refused)" { "WAAS" }
                }
            }
            (rows_tbody(&fleet, &page.defenders, now, state.retention_ms(), &audits, &waas))
        }
        p.pager.muted {
            @if shown > 0 {
                "Defenders " (thousands(first as i64)) "–" (thousands((first + shown - 1) as i64))
                " of " (thousands(page.matching))
            } @else {
                "No Defenders shown of " (thousands(page.matching))
            }
            @if q.after.is_some() {
                " · " a rel="first" href=(fleet.href(LIST_PATH, q.sort, q.descending, None, 1)) { "« First page" }
            }
            @if let Some(next) = &page.next {
                " · " a rel="next" href=(fleet.href(LIST_PATH, q.sort, q.descending, Some(next), first + shown)) { "Next ›" }
            }
        }
    };
    Html(layout::page(&nonce, &op, LIST_PATH, "Defenders", body).into_string()).into_response()
}

/// Audit and WAAS counts of the Defenders of one page.
async fn page_counts(
    state: &WebState,
    defenders: &[DefenderRecord],
) -> Result<(CountMap, WaasMap), crate::store::StoreError> {
    if defenders.is_empty() {
        return Ok((CountMap::default(), WaasMap::default()));
    }
    let ids = || defenders.iter().map(|d| d.id.as_str());
    tokio::try_join!(
        state.store.audit_counts_for(ids()),
        state.store.waas_counts_for(ids())
    )
}

/// `GET /manage/defenders/rows[?…the list's parameters]`: the list's `<tbody>` for the same
/// page, for the page's refresh script (one page of rows, never the whole fleet).
pub async fn rows(
    State(state): State<WebState>,
    params: Result<Query<FleetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let params = params.map(|Query(p)| p).unwrap_or_default();
    let Ok(fleet) = params.check(PAGE_ROWS, PAGE_ROWS) else {
        return (StatusCode::BAD_REQUEST, "invalid query").into_response();
    };
    let (page, now) = match fleet.read(&state).await {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let (audits, waas) = match page_counts(&state, &page.defenders).await {
        Ok(c) => c,
        Err(e) => return internal_error_page(&e),
    };
    Html(
        rows_tbody(
            &fleet,
            &page.defenders,
            now,
            state.retention_ms(),
            &audits,
            &waas,
        )
        .into_string(),
    )
    .into_response()
}

/// The Defender page's status badge (and drop warning) as a `<span>` that refreshes itself
/// every 5 s from [`status_fragment`].
fn status_fragment_markup(d: &DefenderRecord, now: i64, base: &str) -> Markup {
    let s = status_of(d, now);
    html! {
        span.live-status data-refresh=(format!("{base}/status")) data-interval="5000" {
            (status_badge(&s)) (dropped_badge(d))
        }
    }
}

/// `GET /manage/defenders/{id}/status`: the Defender page's status `<span>`, for its refresh
/// script (404 when the Defender is gone).
pub async fn status_fragment(State(state): State<WebState>, Path(id): Path<String>) -> Response {
    match state.store.get_defender(&id).await {
        Ok(Some(d)) => {
            Html(status_fragment_markup(&d, now_ms(), &detail_href(&d.id)).into_string())
                .into_response()
        }
        Ok(None) => (StatusCode::NOT_FOUND, "no such Defender").into_response(),
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
        div.page-head {
            h1 { (name) }
            (status_fragment_markup(&d, now, &base))
            (super::decommission::button(&op, &d))
        }
        dl.meta {
            dt { "Status" } dd { (status_fragment_markup(&d, now, &base)) }
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
