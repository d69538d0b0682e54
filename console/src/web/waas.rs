//! WAAS in the Console: Defend > WAAS (`/defend/waas`: the policy in force, a JSON editor that
//! lists every validation problem, saving pushes to every Defender), Monitor > Events > WAAS
//! (`/monitor/events/waas`: rule, effect, client IP, method, path, the matched part with its
//! location; every field escaped, since all of it is attacker-controlled), and the REST
//! resources `GET`/`PUT /api/v1/policies/waas` and `GET /api/v1/waas/events`.

use axum::Extension;
use axum::Form;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FormRejection};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use defender_waas::{PolicyProblem, WaasPolicy};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::auth::{ApiCaller, CSRF_FIELD, Operator};
use super::forensics::query_pairs;
use super::layout;
use super::render::{display, rfc3339, rfc3339_secs};
use super::security::CspNonce;
use super::{WebState, api_error, internal_error_page};
use crate::store::waas::{WaasQuery, WaasRecord};
use crate::store::{PolicyVersion, StoreError};

/// Path of the policy page (GET: show, POST: save).
pub const POLICY_PATH: &str = "/defend/waas";
/// Path of the policy resource (GET, PUT).
pub const POLICY_API_PATH: &str = "/api/v1/policies/waas";
/// Path of the events page.
pub const EVENTS_PATH: &str = "/monitor/events/waas";
/// Path of the events resource.
pub const EVENTS_API_PATH: &str = "/api/v1/waas/events";
/// Request body limit of `PUT` (the policy limit plus slack, so the library's message shows).
pub const API_BODY_LIMIT: usize = defender_waas::policy::MAX_POLICY_BYTES + 64 * 1024;
/// Events per page.
pub const PAGE_SIZE: i64 = 50;

const CSS: &str = r#"
.effect { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; white-space:nowrap; }
.effect.prevent, .effect.ban { color:#fff; background:var(--err); }
.effect.alert { color:#93370d; background:#fef0c7; }
form.policy { display:grid; gap:10px; background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
ul.problems { margin:4px 0; padding-left:20px; }
td code, ul.problems code { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; word-break:break-all; }
.saved { background:var(--ok-bg); border:1px solid #abefc6; border-radius:6px; padding:8px 14px; }
"#;

/// Parses and validates; the canonical stored text (pretty, every default written out), or
/// every problem.
fn check(json: &str) -> Result<(WaasPolicy, String), Vec<PolicyProblem>> {
    let p = WaasPolicy::from_json(json)?;
    let canonical = serde_json::to_string_pretty(&p).unwrap_or_else(|_| "{}".into());
    Ok((p, canonical))
}

/// Validates and saves `json` as a new version, then publishes it to every Defender stream.
async fn save(
    state: &WebState,
    json: &str,
    saved_by: &str,
) -> Result<Result<PolicyVersion, Vec<PolicyProblem>>, StoreError> {
    let (_, canonical) = match check(json) {
        Ok(x) => x,
        Err(p) => return Ok(Err(p)),
    };
    let saved = state.store.save_waas_policy(&canonical, saved_by).await?;
    state.waas.publish(&saved);
    tracing::info!(
        version = saved.version,
        saved_by,
        "WAAS policy saved and pushed to connected Defenders"
    );
    Ok(Ok(saved))
}

fn document(v: Option<&PolicyVersion>) -> serde_json::Value {
    match v {
        Some(v) => serde_json::json!({
            "version": v.version,
            "saved_at": rfc3339(v.saved_at),
            "saved_by": v.saved_by,
            "policy": serde_json::from_str::<serde_json::Value>(&v.rules_json).unwrap_or_default(),
        }),
        None => serde_json::json!({
            "version": null, "saved_at": null, "saved_by": null,
            "policy": WaasPolicy::default(),
        }),
    }
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "WAAS request failed");
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// `GET /api/v1/policies/waas`: the version in force (the built-in default, version null, while
/// none is saved).
pub async fn get_policy(State(state): State<WebState>) -> Response {
    match state.store.current_waas_policy().await {
        Ok(v) => Json(document(v.as_ref())).into_response(),
        Err(e) => internal(&e),
    }
}

/// `PUT /api/v1/policies/waas`: validates, saves, pushes; 400 `{"error", "problems": [{path,
/// message}]}` listing every problem when refused (nothing saved).
pub async fn put_policy(
    State(state): State<WebState>,
    Extension(caller): Extension<ApiCaller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(body) = body else {
        return api_error(StatusCode::PAYLOAD_TOO_LARGE, "the policy is too large");
    };
    let Ok(json) = std::str::from_utf8(&body) else {
        return api_error(StatusCode::BAD_REQUEST, "the body is not UTF-8 text");
    };
    let saved_by = match &caller {
        ApiCaller::Token { id } => format!("api-token:{id}"),
        ApiCaller::Operator { username } => username.clone(),
    };
    match save(&state, json, &saved_by).await {
        Ok(Ok(saved)) => Json(document(Some(&saved))).into_response(),
        Ok(Err(problems)) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({
                "error": format!("the WAAS policy is invalid ({} problem(s))", problems.len()),
                "problems": problems,
            })),
        )
            .into_response(),
        Err(e) => internal(&e),
    }
}

/// The editor form.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct PolicyForm {
    policy: String,
}

/// `GET /defend/waas[?saved=N]`.
pub async fn policy_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    RawQuery(raw): RawQuery,
) -> Response {
    let saved = query_pairs(raw.as_deref().unwrap_or(""))
        .into_iter()
        .find(|(k, _)| k == "saved")
        .and_then(|(_, v)| v.parse().ok());
    render_policy(&state, &op, &nonce, saved, None, StatusCode::OK).await
}

/// `POST /defend/waas` (CSRF-checked): saves and redirects (303), or shows every problem above
/// the editor with the text kept (422).
pub async fn save_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    form: Result<Form<PolicyForm>, FormRejection>,
) -> Response {
    let text = match form {
        Ok(Form(f)) => f.policy,
        Err(r) => {
            let p = vec![PolicyProblem {
                path: String::new(),
                message: r.body_text(),
            }];
            return render_policy(
                &state,
                &op,
                &nonce,
                None,
                Some((String::new(), p)),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    match save(&state, &text, &op.username).await {
        Ok(Ok(saved)) => {
            Redirect::to(&format!("{POLICY_PATH}?saved={}", saved.version)).into_response()
        }
        Ok(Err(problems)) => {
            render_policy(
                &state,
                &op,
                &nonce,
                None,
                Some((text, problems)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(e) => internal_error_page(&e),
    }
}

async fn render_policy(
    state: &WebState,
    op: &Operator,
    nonce: &CspNonce,
    saved: Option<i64>,
    refused: Option<(String, Vec<PolicyProblem>)>,
    status: StatusCode,
) -> Response {
    let current = match state.store.current_waas_policy().await {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let in_force = current.as_ref().map_or_else(
        || serde_json::to_string_pretty(&WaasPolicy::default()).unwrap_or_default(),
        |v| v.rules_json.clone(),
    );
    let text = refused
        .as_ref()
        .map_or(in_force.clone(), |(t, _)| t.clone());
    let rules = defender_waas::rule_catalog();
    let body = html! {
        style nonce=(nonce.0) { (PreEscaped(CSS)) }
        p.muted { "Defend › WAAS" }
        h1 { "WAAS" }
        p.muted {
            "Web Application and API Security: the Defender's reverse proxy (" code { "--waas LISTEN=UPSTREAM" } ") "
            "judges every request to the app under this policy. Effects per protection: "
            code { "disable" } ", " code { "alert" } ", " code { "prevent" } " (403 with an event id) or "
            code { "ban" } " (403 and the client IP is banned for " code { "ban.minutes" } "). "
            "A saved version is pushed to every connected Defender at once."
        }
        @if let Some(v) = saved {
            p.saved role="status" { "Saved version " strong { (v) } ". Connected Defenders are receiving it now." }
        }
        dl.meta #in-force {
            dt { "Version" }
            dd { @match &current { Some(v) => { strong { (v.version) } } None => { "built-in default, no version saved yet" } } }
            @if let Some(v) = &current {
                dt { "Saved by" } dd { (display(&v.saved_by)) }
                dt { "Saved at" } dd { (rfc3339_secs(v.saved_at)) }
            }
        }
        form.policy method="post" action=(POLICY_PATH) {
            input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
            label for="policy" { "Policy (JSON)" }
            @if let Some((_, problems)) = &refused {
                div.field-error #policy-error role="alert" {
                    p.error { "Not saved: " (problems.len()) " problem(s)." }
                    ul.problems {
                        @for p in problems {
                            li { code { (display(if p.path.is_empty() { "(document)" } else { &p.path })) } ": " (display(&p.message)) }
                        }
                    }
                }
            }
            textarea #policy .code name="policy" rows="24" spellcheck="false" autocomplete="off"
                aria-invalid=[refused.as_ref().map(|_| "true")] { (text) }
            button.primary type="submit" { "Save" }
        }
        h2 { "Rules" }
        p.muted { "Rule ids for " code { "exceptions" } " (" code { "{\"rule_id\": \"sqli-110\", \"path_prefix\": \"/search\"}" } "); a family name silences all its rules." }
        table.grid #rules {
            thead { tr { th { "Rule" } th { "Family" } th { "Detects" } } }
            tbody {
                @for (id, fam, msg) in &rules {
                    tr { td { code { (id) } } td { (fam.as_str()) } td { (msg) } }
                }
            }
        }
    };
    let page = layout::page(nonce, op, POLICY_PATH, "WAAS", body);
    let mut res = (status, Html(page.into_string())).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

/// Filters of the events page and API from the query string.
fn query(raw: Option<&str>) -> WaasQuery {
    let mut q = WaasQuery {
        limit: PAGE_SIZE,
        ..WaasQuery::default()
    };
    for (k, v) in query_pairs(raw.unwrap_or("")) {
        let v = v.trim().to_owned();
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "defender" => q.defender_id = Some(v),
            "rule" => q.rule = Some(v),
            "family" => q.family = Some(v),
            "effect" => q.effect = Some(v),
            "event_id" => q.event_id = Some(v),
            "before" => q.before = v.parse().ok(),
            "limit" => q.limit = v.parse().unwrap_or(PAGE_SIZE).clamp(1, 500),
            _ => {}
        }
    }
    q
}

/// A WAAS event as the API lists it (and webhooks forward it). Plain strings: receivers that
/// render them must escape them.
pub fn waas_json(r: &WaasRecord) -> serde_json::Value {
    serde_json::json!({
        "defender": { "id": r.defender_id, "hostname": r.hostname },
        "waas": {
            "id": r.id,
            "seq": r.seq,
            "time": rfc3339(r.time_ms),
            "event_id": r.event_id,
            "rule": r.rule,
            "family": r.family,
            "effect": r.effect,
            "client_ip": r.client_ip,
            "method": r.method,
            "path": r.path,
            "location": r.location,
            "name": r.name,
            "matched": r.matched,
            "message": r.message,
            "status": r.status,
            "incomplete": r.incomplete,
        }
    })
}

/// `GET /api/v1/waas/events[?defender=&rule=&family=&effect=&event_id=&before=&limit=]`:
/// `{"events": [...], "older_before": id|null}`, newest first.
pub async fn list_events(State(state): State<WebState>, RawQuery(raw): RawQuery) -> Response {
    let q = query(raw.as_deref());
    match state.store.waas_page(&q).await {
        Ok((rows, older)) => Json(serde_json::json!({
            "events": rows.iter().map(waas_json).collect::<Vec<_>>(),
            "older_before": older,
        }))
        .into_response(),
        Err(e) => internal(&e),
    }
}

fn effect_badge(e: &str) -> Markup {
    let class = match e {
        "prevent" | "ban" | "alert" => e,
        _ => "",
    };
    html! { span class={ "effect " (class) } { (display(e)) } }
}

/// `GET /monitor/events/waas[?defender=&rule=&family=&effect=&event_id=&before=]`.
pub async fn events_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(raw.as_deref());
    let ((rows, older), families) =
        match tokio::try_join!(state.store.waas_page(&q), state.store.waas_family_counts()) {
            Ok(v) => v,
            Err(e) => return internal_error_page(&e),
        };
    let total: i64 = families.iter().map(|f| f.1).sum();
    let refused: i64 = families.iter().map(|f| f.2).sum();
    let keep = |name: &str, v: &Option<String>| {
        v.as_ref()
            .map(|v| format!("&{name}={}", super::render::form_encode(v)))
            .unwrap_or_default()
    };
    let filters = format!(
        "{}{}{}{}{}",
        keep("defender", &q.defender_id),
        keep("rule", &q.rule),
        keep("family", &q.family),
        keep("effect", &q.effect),
        keep("event_id", &q.event_id)
    );
    let body = html! {
        style nonce=(nonce.0) { (PreEscaped(CSS)) }
        p.muted { "Monitor › Events › WAAS" }
        h1 { "WAAS" }
        p #waas-overview data-total=(total) data-refused=(refused) {
            strong { (total) } " events, " strong { (refused) } " requests refused"
            @if !families.is_empty() {
                " — "
                @for (i, (fam, n, r)) in families.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(format!("{EVENTS_PATH}?family={}", super::render::form_encode(fam))) { (display(fam)) }
                    " " (n)
                    @if *r > 0 { span.muted { " (" (r) " refused)" } }
                }
            }
        }
        form.filters method="get" action=(EVENTS_PATH) {
            label { "Event id " input type="text" name="event_id" value=(q.event_id.as_deref().unwrap_or("")) size="18"; }
            " "
            label { "Rule " input type="text" name="rule" value=(q.rule.as_deref().unwrap_or("")) size="14"; }
            " "
            label { "Family " input type="text" name="family" value=(q.family.as_deref().unwrap_or("")) size="10"; }
            " "
            label { "Effect " input type="text" name="effect" value=(q.effect.as_deref().unwrap_or("")) size="8"; }
            " "
            label { "Defender " input type="text" name="defender" value=(q.defender_id.as_deref().unwrap_or("")) size="20"; }
            " "
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() {
            p.muted #no-events { "No WAAS event matches." }
        } @else {
            table.grid #waas-events {
                thead { tr {
                    th { "Time (UTC)" } th { "Event id" } th { "Effect" } th { "Rule" } th { "Client IP" }
                    th { "Method" } th { "Path" } th { "Matched" } th { "Defender" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (rfc3339_secs(r.time_ms)) }
                            td { code.event-id { (display(&r.event_id)) } }
                            td { (effect_badge(&r.effect)) @if r.status > 0 { " " span.muted { (r.status) } } }
                            td { code { (display(&r.rule)) } br; span.muted { (display(&r.family)) } }
                            td { (display(&r.client_ip)) }
                            td { (display(&r.method)) }
                            td { code { (display(&r.path)) } }
                            td {
                                span.muted { (display(&r.location)) @if !r.name.is_empty() { " " code { (display(&r.name)) } } }
                                br;
                                code.matched { (display(&r.matched)) }
                                @if r.incomplete { br; span.muted { "body longer than the inspected prefix" } }
                            }
                            td { a href=(format!("/manage/defenders/{}", super::render::form_encode(&r.defender_id))) {
                                (display(if r.hostname.is_empty() { &r.defender_id } else { &r.hostname }))
                            } }
                        }
                    }
                }
            }
            @if let Some(b) = older {
                p { a #older href=(format!("{EVENTS_PATH}?before={b}{filters}")) { "Older →" } }
            }
        }
    };
    let page = layout::page(&nonce, &op, EVENTS_PATH, "WAAS", body);
    (StatusCode::OK, Html(page.into_string())).into_response()
}
