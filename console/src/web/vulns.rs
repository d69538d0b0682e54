//! Monitor > Vulnerabilities: every image running under a Defender (sortable, filterable), an
//! image's findings and packages, and the search "where is CVE-X running". Package names,
//! versions, paths and record texts come from Defenders and feeds: they reach the markup only
//! as escaped text, and links to records only when they are http(s) URLs.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::Operator;
use super::layout;
use super::render::{arn_tail, display, path_segment, rfc3339_secs, thousands};
use super::security::CspNonce;
use super::{WebState, internal_error_page};
use crate::status::human_duration;
use crate::store::now_ms;
use crate::store::vulns::{ImageSummary, VulnRow};

/// Path of the Images list.
pub const IMAGES_PATH: &str = "/monitor/vulnerabilities/images";
/// Path of the search page.
pub const SEARCH_PATH: &str = "/monitor/vulnerabilities/search";
/// Severities in the order columns show them.
const SEVERITIES: [&str; 5] = ["critical", "high", "medium", "low", "unknown"];

const CSS: &str = r#"
.sev { display:inline-block; min-width:2.2em; text-align:center; padding:0 6px; border-radius:9px; font-size:12px; }
.sev.critical { color:#fff; background:#7a1010; } .sev.high { color:#fff; background:var(--err); }
.sev.medium { color:#93370d; background:#fef0c7; } .sev.low { color:#344054; background:#eef0f3; }
.sev.negligible, .sev.unknown { color:var(--off); background:var(--off-bg); } .sev.zero { opacity:.35; }
form.filters { display:flex; gap:8px; align-items:center; margin:0 0 12px; flex-wrap:wrap; }
form.filters input, form.filters select { padding:4px 6px; border:1px solid #d0d5dd; border-radius:6px; font:inherit; }
"#;

/// The image page's path.
pub fn image_href(id: &str) -> String {
    format!("{IMAGES_PATH}/{}", path_segment(id))
}

fn sev_badge(sev: &str, n: Option<i64>) -> Markup {
    let zero = n == Some(0);
    html! {
        span class={ "sev " (sev) @if zero { " zero" } } {
            @match n { Some(n) => (thousands(n)), None => (sev) }
        }
    }
}

fn safe_link(url: &str) -> Option<&str> {
    (url.starts_with("https://") || url.starts_with("http://")).then_some(url)
}

/// `?q=&sort=` of the Images list.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    q: Option<String>,
    sort: Option<String>,
}

fn sorted(mut images: Vec<ImageSummary>, sort: &str) -> Vec<ImageSummary> {
    let count = |i: &ImageSummary, s: &str| i.counts.get(s).copied().unwrap_or(0);
    match sort {
        "name" => images.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id))),
        "last" => images.sort_by_key(|i| std::cmp::Reverse(i.last_inventory_ms)),
        "total" => images.sort_by_key(|i| std::cmp::Reverse(i.vulnerabilities)),
        _ => images.sort_by(|a, b| {
            SEVERITIES
                .iter()
                .map(|s| count(b, s))
                .cmp(SEVERITIES.iter().map(|s| count(a, s)))
                .then(a.name.cmp(&b.name))
        }),
    }
    images
}

/// `GET /monitor/vulnerabilities/images`.
pub async fn images_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    Query(q): Query<ListQuery>,
) -> Response {
    let images = match state.store.list_images().await {
        Ok(i) => i,
        Err(e) => return internal_error_page(&e),
    };
    let status = state.store.vulndb_status().await.unwrap_or_default();
    let filter = q.q.clone().unwrap_or_default();
    let needle = filter.to_lowercase();
    let sort = q.sort.clone().unwrap_or_else(|| "severity".into());
    let shown: Vec<ImageSummary> = sorted(images, &sort)
        .into_iter()
        .filter(|i| {
            needle.is_empty()
                || i.name.to_lowercase().contains(&needle)
                || i.id.to_lowercase().contains(&needle)
                || i.os.to_lowercase().contains(&needle)
                || i.defenders.iter().any(|d| {
                    d.family.to_lowercase().contains(&needle)
                        || d.task_arn.to_lowercase().contains(&needle)
                })
        })
        .collect();
    let now = now_ms();
    let body = html! {
        style nonce=(nonce.0) { (CSS) }
        div.page-head { h1 { "Vulnerabilities" } }
        p.muted {
            "Matched against " (thousands(status.records)) " OSV records"
            @if !status.newest_modified.is_empty() { " (newest modified " (display(&status.newest_modified)) ")" }
            ". Import more with " code { "defender-console vulndb import" } " or " code { "POST /api/v1/vulndb" } "."
        }
        form.filters method="get" action=(SEARCH_PATH) {
            label { "Where is " input type="search" name="id" placeholder="CVE-2024-… / GHSA-… / DSA-…" size="28"; " running?" }
            button type="submit" { "Search" }
        }
        form.filters method="get" action=(IMAGES_PATH) {
            input type="search" name="q" value=(filter) placeholder="Filter by image, OS, task family" size="32";
            select name="sort" {
                @for (v, label) in [("severity", "Most severe first"), ("total", "Most findings"), ("name", "Name"), ("last", "Newest inventory")] {
                    option value=(v) selected[sort == v] { (label) }
                }
            }
            button type="submit" { "Apply" }
        }
        @if shown.is_empty() {
            div.empty { "No image yet. Images appear when a Defender sends its first inventory (shortly after it starts)." }
        } @else {
            table.grid {
                thead { tr {
                    th { "Image" } th { "OS" }
                    @for s in SEVERITIES { th { (s) } }
                    th { "Packages" } th { "Tasks running it" } th { "Last inventory" }
                } }
                tbody {
                    @for i in &shown {
                        tr {
                            td.wrap { a href=(image_href(&i.id)) { (display(if i.name.is_empty() { &i.id } else { &i.name })) }
                                @if !i.name.is_empty() { br; span.muted { (display(&i.id)) } } }
                            td { (display(&i.os)) }
                            @for s in SEVERITIES { td.num { (sev_badge(s, Some(i.counts.get(s).copied().unwrap_or(0) + if s == "unknown" { i.counts.get("negligible").copied().unwrap_or(0) } else { 0 }))) } }
                            td.num { (thousands(i.total_packages)) @if i.truncated { " (truncated)" } }
                            td { (defender_list(i)) }
                            td { (human_duration(now - i.last_inventory_ms)) " ago" }
                        }
                    }
                }
            }
        }
    };
    Html(layout::page(&nonce, &op, IMAGES_PATH, "Vulnerabilities", body).into_string())
        .into_response()
}

fn defender_list(i: &ImageSummary) -> Markup {
    html! {
        @for (n, d) in i.defenders.iter().enumerate() {
            @if n > 0 { br; }
            a href=(format!("/manage/defenders/{}", path_segment(&d.defender_id))) {
                (display(if d.family.is_empty() { &d.hostname } else { &d.family }))
                @if !d.revision.is_empty() { ":" (display(&d.revision)) }
            }
            @if !d.task_arn.is_empty() { " " span.muted { (display(arn_tail(&d.task_arn))) } }
            @if !d.container.is_empty() { " " span.muted { "(" (display(&d.container)) ")" } }
        }
    }
}

fn vuln_table(rows: &[VulnRow], show_image: bool) -> Markup {
    html! {
        table.grid {
            thead { tr {
                @if show_image { th { "Image" } }
                th { "Advisory" } th { "Package" } th { "Installed" } th { "Fixed in" } th { "Severity" } th { "CVSS" } th { "Ecosystem" }
            } }
            tbody {
                @for v in rows {
                    tr {
                        @if show_image { td.wrap { a href=(image_href(&v.image_id)) { (display(&v.image_id)) } } }
                        td {
                            @match safe_link(&v.link) {
                                Some(url) => a href=(url) rel="noreferrer noopener" { (display(&v.record_id)) },
                                None => (display(&v.record_id)),
                            }
                            @let aliases: Vec<&str> = v.ids.split(' ').filter(|a| !a.is_empty() && *a != v.record_id).collect();
                            @if !aliases.is_empty() { br; span.muted { (display(&aliases.join(", "))) } }
                            @if !v.summary.is_empty() { br; span.muted { (display(&v.summary.chars().take(160).collect::<String>())) } }
                        }
                        td { (display(&v.package)) }
                        td.wrap { (display(&v.version)) }
                        td.wrap { @if v.fixed.is_empty() { span.muted { "not fixed" } } @else { (display(&v.fixed)) } }
                        td { (sev_badge(&v.severity, None)) }
                        td { @if let Some(s) = v.cvss_score { (format!("{s:.1}")) br; span.muted.wrap { (display(&v.cvss_vector)) } } }
                        td { (display(&v.ecosystem)) }
                    }
                }
            }
        }
    }
}

/// `GET /monitor/vulnerabilities/images/{id}`.
pub async fn image_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    Path(id): Path<String>,
) -> Response {
    let image = match state.store.image(&id).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            let body = html! { h1 { "Image not found" } p { "No image has the id " code { (display(&id)) } ". " a href=(IMAGES_PATH) { "Back to the list" } } };
            return (
                StatusCode::NOT_FOUND,
                Html(layout::page(&nonce, &op, IMAGES_PATH, "Not found", body).into_string()),
            )
                .into_response();
        }
        Err(e) => return internal_error_page(&e),
    };
    let (vulns, packages) = match tokio::try_join!(
        state.store.image_vulns(&id),
        state.store.image_packages(&id)
    ) {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let name = if image.name.is_empty() {
        image.id.clone()
    } else {
        image.name.clone()
    };
    let api = format!("/api/v1/images/{}/vulnerabilities", path_segment(&image.id));
    let body = html! {
        style nonce=(nonce.0) { (CSS) }
        p.muted { a href=(IMAGES_PATH) { "Images" } " › " (display(&name)) }
        h1 { (display(&name)) }
        dl.meta {
            dt { "Image ID" } dd { (display(&image.id)) }
            dt { "OS" } dd { (display(&image.os)) }
            dt { "Packages" } dd { (thousands(image.total_packages)) @if image.truncated { " — the inventory was truncated to the size limit; not every package is listed" } }
            dt { "Last inventory" } dd { (rfc3339_secs(image.last_inventory_ms)) " (took " (image.inventory_ms) " ms)" }
            dt { "Findings" } dd { @for s in SEVERITIES { (sev_badge(s, Some(image.counts.get(s).copied().unwrap_or(0)))) " " } }
            dt { "Tasks running it" } dd { (defender_list(&image)) }
            @if !image.notes.is_empty() { dt { "Notes" } dd { @for n in &image.notes { (display(n)) br; } } }
        }
        h2 { "Vulnerabilities (" (vulns.len()) ") " span.muted { a href=(format!("{api}?format=csv")) { "CSV" } " · " a href=(api) { "JSON" } } }
        @if vulns.is_empty() { div.empty { "No known vulnerability in the inventoried packages." } } @else { (vuln_table(&vulns, false)) }
        h2 { "Packages (" (packages.len()) ")" }
        table.grid {
            thead { tr { th { "Type" } th { "Name" } th { "Version" } th { "Source" } th { "Path" } } }
            tbody {
                @for p in &packages {
                    tr {
                        td { (display(&p.kind)) } td { (display(&p.name)) } td.wrap { (display(&p.version)) }
                        td { (display(&p.source_name)) @if !p.source_version.is_empty() { " (" (display(&p.source_version)) ")" } }
                        td.wrap { (display(&p.path)) }
                    }
                }
            }
        }
    };
    Html(layout::page(&nonce, &op, IMAGES_PATH, &name, body).into_string()).into_response()
}

/// `?id=` of the search.
#[derive(Deserialize, Default)]
pub struct SearchQuery {
    id: Option<String>,
}

/// `GET /monitor/vulnerabilities/search?id=CVE-…`.
pub async fn search_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    Query(q): Query<SearchQuery>,
) -> Response {
    let id =
        q.id.unwrap_or_default()
            .trim()
            .chars()
            .take(200)
            .collect::<String>();
    let (rows, known) = if id.is_empty() {
        (Vec::new(), false)
    } else {
        match tokio::try_join!(
            state.store.find_vulnerability(&id),
            state.store.vuln_id_known(&id)
        ) {
            Ok(v) => v,
            Err(e) => return internal_error_page(&e),
        }
    };
    let images: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.image_id.as_str()).collect();
    let body = html! {
        style nonce=(nonce.0) { (CSS) }
        p.muted { a href=(IMAGES_PATH) { "Images" } " › Search" }
        h1 { "Where is it running?" }
        form.filters method="get" action=(SEARCH_PATH) {
            input type="search" name="id" value=(id) placeholder="CVE-2024-… / GHSA-… / DSA-…" size="32";
            button type="submit" { "Search" }
        }
        @if id.is_empty() {
        } @else if rows.is_empty() {
            div.empty {
                @if known { (display(&id)) " is in the database but affects no running image." }
                @else { "No imported record has the id or alias " code { (display(&id)) } "." }
            }
        } @else {
            p { (display(&id)) " is found in " strong { (images.len()) } " image(s):" }
            (vuln_table(&rows, true))
        }
    };
    Html(layout::page(&nonce, &op, IMAGES_PATH, "Search", body).into_string()).into_response()
}

/// The Defender page's links to the vulnerabilities and compliance of its images.
pub fn defender_links(defender_id: &str, images: &[String]) -> Markup {
    html! {
        h2 { "Vulnerabilities and compliance" }
        @if images.is_empty() {
            p.muted { "No inventory from this Defender yet." }
        } @else {
            ul {
                @for i in images { li { "Image " a href=(image_href(i)) { (display(i)) } } }
                li { a href=(format!("{}?defender={}", super::compliance::MONITOR_PATH, path_segment(defender_id))) { "Compliance of this Defender" } }
            }
        }
    }
}
