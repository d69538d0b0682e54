//! Monitor › Audits: every runtime audit the Defenders reported, newest
//! first, filterable by Defender, rule, effect and time, keyset-paginated by `(time, id)`; each
//! links to the forensics timeline of its Defender around the event that violated the rule.
//! The same as JSON: `GET /api/v1/audits`.
//!
//! Rule names and messages come from Defenders (and messages quote attacker-controlled paths and
//! arguments): they reach the markup only as text, after [`display`].

use std::collections::HashMap;

use axum::Extension;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, PreEscaped, html};
use serde_json::json;

use super::auth::Operator;
use super::forensics::{self, datetime_local, parse_time, query_pairs};
use super::layout;
use super::render::{
    arn_tail, display, form_encode, path_segment, rfc3339, rfc3339_secs, thousands, truncate,
};
use super::security::CspNonce;
use super::{WebState, api_error, internal_error_page};
use crate::store::StoreError;
use crate::store::audits::{
    AuditCounts, AuditCursor, AuditPage, AuditQuery, AuditRecord, EFFECT_ALERT, EFFECT_PREVENT,
};
use crate::webhook::{audit_json, effect_name};

/// Path of the page.
pub const PAGE_PATH: &str = "/monitor/events/app-embedded";
/// Path of the REST endpoint.
pub const API_PATH: &str = "/api/v1/audits";
/// Audits on one page of the UI.
pub const PAGE_SIZE: i64 = 50;
/// Default and largest `limit` of the API.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 1000;
/// The timeline link shows the events up to this many seqs after the violating event (the
/// Defender page shows 100 events per page, so the violation sits mid-page).
pub const TIMELINE_CONTEXT: i64 = 50;
/// Longest message shown in a table cell (characters); the API carries the whole message.
const MESSAGE_CHARS: usize = 500;
/// Entries of the filter menus.
const MENU_ENTRIES: i64 = 500;
/// Parameters of the API, for the message about an unknown one.
const API_PARAMS: &str = "defender, rule, effect, since, until, before, after, limit";

/// Styles of the page (constant, no data; under the page's CSP nonce).
const CSS: &str = r#"
.effect { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; white-space:nowrap; }
.effect.prevent { color:#fff; background:var(--err); }
.effect.alert { color:#93370d; background:#fef0c7; }
.effect.unspecified { color:var(--off); background:var(--off-bg); }
form.filters select { padding:4px 6px; border:1px solid #d0d5dd; border-radius:6px; font:inherit; max-width:320px; }
table.audits td.msg { word-break:break-word; }
table.audits code { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; word-break:break-word; }
table.audits td.when { white-space:nowrap; }
"#;

/// The page's and the API's parameters, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct AuditParams {
    defender: Option<String>,
    rule: Option<String>,
    /// `alert` or `prevent`.
    effect: Option<&'static str>,
    /// As given (for the form and links) and as unix ms.
    since: Option<(String, i64)>,
    until: Option<(String, i64)>,
    before: Option<AuditCursor>,
    after: Option<AuditCursor>,
    limit: Option<i64>,
}

impl AuditParams {
    /// Parses query pairs. Empty values count as absent (an empty form field). With `strict`
    /// (the API), unknown and repeated keys are errors; the page ignores unknown keys.
    fn parse(pairs: &[(String, String)], strict: bool) -> Result<Self, String> {
        let mut p = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for (k, v) in pairs {
            if strict {
                if seen.contains(&k.as_str()) {
                    return Err(format!("query parameter {k:?} is given twice"));
                }
                seen.push(k);
            }
            let value = v.trim();
            let known = matches!(
                k.as_str(),
                "defender" | "rule" | "effect" | "since" | "until" | "before" | "after" | "limit"
            );
            if !known {
                if strict {
                    return Err(format!(
                        "unknown query parameter {k:?}; the parameters are {API_PARAMS}"
                    ));
                }
                continue;
            }
            if value.is_empty() {
                continue;
            }
            match k.as_str() {
                "defender" => p.defender = Some(value.to_owned()),
                // Rule names are matched exactly, spaces included.
                "rule" => p.rule = Some(v.clone()),
                "effect" => {
                    p.effect = Some(match value {
                        "alert" => "alert",
                        "prevent" => "prevent",
                        _ => return Err("effect must be \"alert\" or \"prevent\"".into()),
                    });
                }
                "since" => {
                    p.since = Some((
                        value.to_owned(),
                        parse_time(value).map_err(|e| format!("since: {e}"))?,
                    ));
                }
                "until" => {
                    p.until = Some((
                        value.to_owned(),
                        parse_time(value).map_err(|e| format!("until: {e}"))?,
                    ));
                }
                "before" => p.before = Some(value.parse().map_err(|e| format!("before: {e}"))?),
                "after" => p.after = Some(value.parse().map_err(|e| format!("after: {e}"))?),
                _ => {
                    p.limit = Some(
                        value
                            .parse::<i64>()
                            .ok()
                            .filter(|l| (1..=MAX_LIMIT).contains(l))
                            .ok_or_else(|| format!("limit must be between 1 and {MAX_LIMIT}"))?,
                    );
                }
            }
        }
        Ok(p)
    }

    fn query(&self, limit: i64) -> AuditQuery {
        AuditQuery {
            defender_id: self.defender.clone(),
            rule: self.rule.clone(),
            effect: self.effect.map(|e| {
                if e == "prevent" {
                    EFFECT_PREVENT
                } else {
                    EFFECT_ALERT
                }
            }),
            since_ms: self.since.as_ref().map(|s| s.1),
            until_ms: self.until.as_ref().map(|u| u.1),
            before: self.before,
            after: self.after,
            limit,
        }
    }

    fn is_filtered(&self) -> bool {
        self.defender.is_some()
            || self.rule.is_some()
            || self.effect.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    /// Link to the page of these filters with one cursor (`before`/`after`) or none.
    fn href(&self, cursor: Option<(&str, AuditCursor)>) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut add = |k: &str, v: &str| parts.push(format!("{k}={}", form_encode(v)));
        if let Some(d) = &self.defender {
            add("defender", d);
        }
        if let Some(r) = &self.rule {
            add("rule", r);
        }
        if let Some(e) = self.effect {
            add("effect", e);
        }
        if let Some((raw, _)) = &self.since {
            add("since", raw);
        }
        if let Some((raw, _)) = &self.until {
            add("until", raw);
        }
        if let Some((name, c)) = cursor {
            add(name, &c.to_string());
        }
        if parts.is_empty() {
            PAGE_PATH.to_owned()
        } else {
            format!("{PAGE_PATH}?{}", parts.join("&"))
        }
    }
}

/// Link to the Defender's forensics timeline around the audit: the page of events just below
/// `subject_seq + TIMELINE_CONTEXT` (the audit's own seq when it names no subject).
pub fn timeline_href(a: &AuditRecord) -> String {
    let anchor = if a.subject_seq > 0 {
        a.subject_seq
    } else {
        a.seq
    };
    format!(
        "/manage/defenders/{}?before={}#timeline",
        path_segment(&a.defender_id),
        anchor.saturating_add(TIMELINE_CONTEXT)
    )
}

/// Audit counts per Defender id (Manage > Defenders).
pub type CountMap = HashMap<String, AuditCounts>;

/// The Audits cell of a Manage > Defenders row: the total (a link to the Defender's audits) and
/// how many were prevented.
pub fn counts_cell(id: &str, counts: &CountMap) -> Markup {
    let c = counts.get(id).copied().unwrap_or_default();
    let filter = AuditParams {
        defender: Some(id.to_owned()),
        ..AuditParams::default()
    };
    html! {
        td.num.audits data-audits=(c.total) data-prevented=(c.prevented) {
            @if c.total == 0 {
                "0"
            } @else {
                a href=(filter.href(None)) title="This Defender's audits" { (thousands(c.total)) }
                @if c.prevented > 0 {
                    " " span.muted { "(" (thousands(c.prevented)) " prevented)" }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST

/// `GET /api/v1/audits[?defender=ID][&rule=NAME][&effect=alert|prevent][&since=…][&until=…]
/// [&before=CURSOR|&after=CURSOR][&limit=1..1000]`: audits of every Defender, newest first:
/// `{"audits": [{"defender": {…}, "audit": {…}, "timeline": PATH}], "older_before", "newer_after"}`
/// (pass `older_before` as `before` for the next older page). Times are unix ms or RFC 3339.
pub async fn list(State(state): State<WebState>, RawQuery(raw): RawQuery) -> Response {
    let params = match AuditParams::parse(&query_pairs(raw.as_deref().unwrap_or("")), true) {
        Ok(p) => p,
        Err(message) => return api_error(StatusCode::BAD_REQUEST, &message),
    };
    let q = params.query(params.limit.unwrap_or(DEFAULT_LIMIT));
    match state.store.audit_page(&q).await {
        Ok(page) => {
            let audits: Vec<serde_json::Value> = page
                .audits
                .iter()
                .map(|a| {
                    let mut v = audit_json(a, false);
                    v["timeline"] = timeline_href(a).into();
                    v
                })
                .collect();
            Json(json!({
                "audits": audits,
                "older_before": page.older_before.map(|c| c.to_string()),
                "newer_after": page.newer_after.map(|c| c.to_string()),
            }))
            .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "listing audits failed");
            api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Page

/// What the filter menus offer.
struct Menus {
    defenders: Vec<(String, String, String)>,
    rules: Vec<String>,
}

/// `GET /monitor/events/app-embedded[?defender=…&rule=…&effect=…&since=…&until=…&before=…|after=…]`.
pub async fn page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    RawQuery(raw): RawQuery,
) -> Response {
    let (params, error) =
        match AuditParams::parse(&query_pairs(raw.as_deref().unwrap_or("")), false) {
            Ok(p) => (p, None),
            Err(e) => (AuditParams::default(), Some(e)),
        };
    let store = &state.store;
    let q = params.query(PAGE_SIZE);
    let results = async {
        if error.is_some() {
            return Ok(None);
        }
        let (page, matching) = tokio::try_join!(store.audit_page(&q), store.count_audits(&q))?;
        Ok::<_, StoreError>(Some((page, matching)))
    };
    let (results, defenders, rules) = match tokio::try_join!(
        results,
        store.audit_defenders(MENU_ENTRIES),
        store.audit_rules(MENU_ENTRIES)
    ) {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let menus = Menus { defenders, rules };
    let body = html! {
        style nonce=(nonce.0) { (PreEscaped(forensics::CSS)) (PreEscaped(CSS)) }
        div.page-head {
            h1 { "Audits" }
            @if let Some((_, matching)) = &results {
                span.muted #matching { (thousands(*matching)) " matching" }
            }
        }
        p.muted {
            "Violations of the " a href=(super::runtime::PAGE_PATH) { "runtime policy" }
            " reported by App-Embedded Defenders. Prevent means the Defender killed the offending process."
        }
        (filter_form(&params, &menus, error.as_deref()))
        @if let Some((page, _)) = &results {
            (pager(&params, page))
            (table(page))
            (pager(&params, page))
        }
    };
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let page = layout::page(&nonce, &op, PAGE_PATH, "Audits", body);
    (status, Html(page.into_string())).into_response()
}

/// How a Defender is named: hostname, else its task id, else its id.
fn defender_label(id: &str, hostname: &str, task_arn: &str) -> String {
    if !hostname.is_empty() {
        display(hostname)
    } else if !task_arn.is_empty() {
        display(arn_tail(task_arn))
    } else {
        display(id)
    }
}

fn effect_badge(effect: i64) -> Markup {
    let name = effect_name(effect);
    let label = match effect {
        EFFECT_PREVENT => "Prevent",
        EFFECT_ALERT => "Alert",
        _ => "Unspecified",
    };
    html! { span class={ "effect " (name) } { (label) } }
}

fn filter_form(params: &AuditParams, menus: &Menus, error: Option<&str>) -> Markup {
    let rule_listed = params.rule.as_ref().is_none_or(|r| menus.rules.contains(r));
    let defender_listed = params
        .defender
        .as_ref()
        .is_none_or(|d| menus.defenders.iter().any(|(id, _, _)| id == d));
    html! {
        form.filters method="get" action=(PAGE_PATH) {
            label {
                "Defender"
                select name="defender" {
                    option value="" { "All" }
                    @if !defender_listed {
                        @if let Some(d) = &params.defender {
                            option value=(d) selected { (display(d)) }
                        }
                    }
                    @for (id, hostname, task_arn) in &menus.defenders {
                        option value=(id) selected[params.defender.as_deref() == Some(id.as_str())] {
                            (defender_label(id, hostname, task_arn))
                        }
                    }
                }
            }
            label {
                "Rule"
                select name="rule" {
                    option value="" { "All" }
                    @if !rule_listed {
                        @if let Some(r) = &params.rule {
                            option value=(r) selected { (display(r)) }
                        }
                    }
                    @for r in menus.rules.iter().filter(|r| !r.trim().is_empty()) {
                        option value=(r) selected[params.rule.as_deref() == Some(r.as_str())] {
                            (display(r))
                        }
                    }
                }
            }
            label {
                "Effect"
                select name="effect" {
                    option value="" { "All" }
                    option value="alert" selected[params.effect == Some("alert")] { "Alert" }
                    option value="prevent" selected[params.effect == Some("prevent")] { "Prevent" }
                }
            }
            label {
                "Since (UTC)"
                input type="datetime-local" name="since" step="1"
                    value=(params.since.as_ref().map(|s| datetime_local(s.1)).unwrap_or_default());
            }
            label {
                "Until (UTC)"
                input type="datetime-local" name="until" step="1"
                    value=(params.until.as_ref().map(|u| datetime_local(u.1)).unwrap_or_default());
            }
            button type="submit" { "Apply" }
            @if params.is_filtered() || params.before.is_some() || params.after.is_some() {
                a href=(PAGE_PATH) { "Reset" }
            }
            p.hint {
                "Times are interpreted and shown as UTC; since is inclusive, until exclusive."
            }
            @if let Some(error) = error {
                p.error role="alert" { (display(error)) }
            }
        }
    }
}

fn pager(params: &AuditParams, page: &AuditPage) -> Markup {
    let on_newest = params.before.is_none() && params.after.is_none();
    html! {
        nav.pager aria-label="Audit pages" {
            @if !on_newest {
                a data-page="newest" href=(params.href(None)) { "Newest" }
            }
            @if let Some(c) = page.newer_after {
                a rel="prev" data-page="newer" href=(params.href(Some(("after", c)))) { "← Newer" }
            } @else {
                span.muted { "← Newer" }
            }
            @if let Some(c) = page.older_before {
                a rel="next" data-page="older" href=(params.href(Some(("before", c)))) { "Older →" }
            } @else {
                span.muted { "Older →" }
            }
        }
    }
}

fn table(page: &AuditPage) -> Markup {
    html! {
        @if page.audits.is_empty() {
            div.empty #audits {
                p {
                    strong { "No audits to show." }
                    " Defenders report an audit when an event violates a rule of the "
                    a href=(super::runtime::PAGE_PATH) { "runtime policy" }
                    " whose effect is alert or prevent."
                }
            }
        } @else {
            table.grid.audits #audits {
                thead {
                    tr {
                        th { "Time (UTC)" } th { "Defender" } th { "Container" } th { "Rule" }
                        th { "Effect" } th { "Message" } th { "PID" } th { "Forensics" }
                    }
                }
                tbody {
                    @for a in &page.audits {
                        (row(a))
                    }
                }
            }
        }
    }
}

fn row(a: &AuditRecord) -> Markup {
    let defender_href = format!("/manage/defenders/{}", path_segment(&a.defender_id));
    html! {
        tr data-seq=(a.seq) data-defender=(a.defender_id) {
            td.when { time datetime=(rfc3339(a.time_ms)) { (rfc3339_secs(a.time_ms)) } }
            td {
                a href=(defender_href) title=(display(&a.defender_id)) {
                    (defender_label(&a.defender_id, &a.hostname, &a.task_arn))
                }
                @if !a.family.is_empty() {
                    br; span.muted { (display(&a.family)) @if !a.revision.is_empty() { ":" (display(&a.revision)) } }
                }
            }
            td { (display(&a.container)) }
            td { code { (display(&a.rule)) } }
            td { (effect_badge(a.effect)) }
            td.msg { (truncate(display(&a.message), MESSAGE_CHARS)) }
            td.num { @if a.pid > 0 { (a.pid) } }
            td { a.timeline href=(timeline_href(a)) { "Timeline" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn params_parse_and_round_trip_into_links() {
        let p = AuditParams::parse(
            &pairs(&[
                ("defender", "d1"),
                ("rule", "web: no tools & ssh"),
                ("effect", "prevent"),
                ("since", "2024-05-01T00:00"),
                ("until", ""),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(p.effect, Some("prevent"));
        assert_eq!(p.since.as_ref().unwrap().1, 1_714_521_600_000);
        assert!(p.until.is_none());
        let href = p.href(Some(("before", AuditCursor { time_ms: 5, id: 6 })));
        assert_eq!(
            href,
            "/monitor/events/app-embedded?defender=d1&rule=web%3A+no+tools+%26+ssh&effect=prevent&since=2024-05-01T00%3A00&before=5.6"
        );
        let back = AuditParams::parse(&query_pairs(href.split_once('?').unwrap().1), true).unwrap();
        assert_eq!(back.rule, p.rule);
        assert_eq!(back.before, Some(AuditCursor { time_ms: 5, id: 6 }));
    }

    #[test]
    fn bad_params_are_refused() {
        for bad in [
            ("effect", "kill"),
            ("since", "yesterday"),
            ("limit", "0"),
            ("limit", "1001"),
            ("before", "12"),
        ] {
            assert!(
                AuditParams::parse(&pairs(&[bad]), false).is_err(),
                "{bad:?}"
            );
        }
        assert!(AuditParams::parse(&pairs(&[("bogus", "1")]), true).is_err());
        assert!(AuditParams::parse(&pairs(&[("bogus", "1")]), false).is_ok());
        assert!(AuditParams::parse(&pairs(&[("rule", "a"), ("rule", "b")]), true).is_err());
    }

    #[test]
    fn timeline_link_centres_on_the_subject() {
        let mut a = AuditRecord {
            id: 1,
            defender_id: "d/1".into(),
            seq: 120,
            time_ms: 0,
            container: String::new(),
            rule: String::new(),
            effect: 1,
            message: String::new(),
            pid: 0,
            subject_seq: 100,
            hostname: String::new(),
            task_arn: String::new(),
            family: String::new(),
            revision: String::new(),
            cluster: String::new(),
        };
        assert_eq!(
            timeline_href(&a),
            "/manage/defenders/d%2F1?before=150#timeline"
        );
        a.subject_seq = 0;
        assert_eq!(
            timeline_href(&a),
            "/manage/defenders/d%2F1?before=170#timeline"
        );
    }
}
