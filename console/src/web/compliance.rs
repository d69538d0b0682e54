//! Monitor > Compliance (latest results per image and Defender, failed checks first, with the
//! evidence) and Defend > Compliance (turn checks on or off, set the severity alerts use).
//! Results are shown through the policy, so saving it changes them at once.

use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::html;
use serde::Deserialize;

use super::auth::{CSRF_FIELD, Operator};
use super::layout;
use super::render::{display, path_segment, rfc3339_secs};
use super::security::CspNonce;
use super::vulns::image_href;
use super::vulns_api::validate_setting;
use super::{WebState, internal_error_page};
use crate::store::vulns::CheckSetting;

/// Monitor > Compliance.
pub const MONITOR_PATH: &str = "/monitor/compliance";
/// Defend > Compliance.
pub const POLICY_PATH: &str = "/defend/compliance";

const CSS: &str = r#"
.res { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; }
.res.fail { color:#fff; background:var(--err); } .res.pass { color:var(--ok); background:var(--ok-bg); }
form.policy td select { padding:2px 4px; }
"#;

/// `?defender=`.
#[derive(Deserialize, Default)]
pub struct MonitorQuery {
    defender: Option<String>,
}

/// `GET /monitor/compliance`.
pub async fn monitor_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    Query(q): Query<MonitorQuery>,
) -> Response {
    let defender = q.defender.filter(|d| !d.is_empty());
    let rows = match state.store.compliance(defender.as_deref()).await {
        Ok(r) => r,
        Err(e) => return internal_error_page(&e),
    };
    let failed = rows.iter().filter(|r| !r.passed).count();
    let body = html! {
        style nonce=(nonce.0) { (CSS) }
        h1 { "Compliance" }
        p.muted {
            @if let Some(d) = &defender { "Defender " code { (display(d)) } " — " a href=(MONITOR_PATH) { "all Defenders" } ". " }
            (failed) " failed of " (rows.len()) " results. Checks are turned on and off in " a href=(POLICY_PATH) { "Defend › Compliance" } "."
        }
        @if rows.is_empty() {
            div.empty { "No compliance results yet. Defenders evaluate the checks with their first inventory." }
        } @else {
            table.grid {
                thead { tr { th { "Result" } th { "Severity" } th { "Check" } th { "Evidence" } th { "Image" } th { "Defender" } th { "Checked" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { @if r.passed { span.res.pass { "passed" } } @else { span.res.fail { "failed" } } }
                            td { (display(&r.severity)) }
                            td { (display(&r.title)) br; span.muted { (display(&r.check_id)) @if !r.cis.is_empty() { " · CIS Docker " (display(&r.cis)) } } }
                            td.wrap { (display(&r.evidence)) }
                            td.wrap { a href=(image_href(&r.image_id)) { (display(&r.image_id)) } }
                            td { a href=(format!("/manage/defenders/{}", path_segment(&r.defender_id))) { (display(&r.defender_id)) }
                                 @if !r.container.is_empty() { br; span.muted { (display(&r.container)) } } }
                            td { (rfc3339_secs(r.time_ms)) }
                        }
                    }
                }
            }
        }
    };
    Html(layout::page(&nonce, &op, MONITOR_PATH, "Compliance", body).into_string()).into_response()
}

/// `GET /defend/compliance`.
pub async fn policy_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
) -> Response {
    let checks = match state.store.compliance_policy().await {
        Ok(c) => c,
        Err(e) => return internal_error_page(&e),
    };
    let body = html! {
        style nonce=(nonce.0) { (CSS) }
        h1 { "Compliance" }
        p.muted { "Checks appear here once a Defender has reported them. A disabled check is left out of Monitor › Compliance and the API; the severity replaces the check's default." }
        @if checks.is_empty() {
            div.empty { "No check reported yet." }
        } @else {
            form.policy method="post" action=(POLICY_PATH) {
                input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
                table.grid {
                    thead { tr { th { "Enabled" } th { "Check" } th { "Severity" } } }
                    tbody {
                        @for (s, title, default) in &checks {
                            tr {
                                td { input type="checkbox" name=(format!("enabled.{}", s.check_id)) value="on" checked[s.enabled]; }
                                td { (display(title)) br; span.muted { (display(&s.check_id)) } }
                                td {
                                    select name=(format!("severity.{}", s.check_id)) {
                                        option value="" selected[s.severity.is_empty()] { "default (" (display(default)) ")" }
                                        @for v in ["critical", "high", "medium", "low"] { option value=(v) selected[s.severity == v] { (v) } }
                                    }
                                }
                            }
                        }
                    }
                }
                p { button.primary type="submit" { "Save" } }
            }
        }
    };
    Html(layout::page(&nonce, &op, POLICY_PATH, "Compliance", body).into_string()).into_response()
}

/// `POST /defend/compliance` (CSRF-checked by the router): every listed check is saved; an
/// unchecked box means disabled.
pub async fn save_policy(
    State(state): State<WebState>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let checks = match state.store.compliance_policy().await {
        Ok(c) => c,
        Err(e) => return internal_error_page(&e),
    };
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let settings: Vec<CheckSetting> = checks
        .iter()
        .map(|(s, _, _)| CheckSetting {
            check_id: s.check_id.clone(),
            enabled: get(&format!("enabled.{}", s.check_id)) == Some("on"),
            severity: get(&format!("severity.{}", s.check_id))
                .unwrap_or("")
                .to_string(),
        })
        .filter(|s| validate_setting(s).is_ok())
        .collect();
    if let Err(e) = state.store.set_compliance_policy(&settings).await {
        return internal_error_page(&e);
    }
    Redirect::to(POLICY_PATH).into_response()
}
