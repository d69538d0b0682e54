//! Defend › Runtime: the page (`/defend/runtime/app-embedded`: the version
//! in force, a summary of its rules, a JSON editor, the version history) and the REST resource
//! `GET`/`PUT /api/v1/policies/runtime/app-embedded`.
//!
//! Saving validates with [`defender_policy`] (strict parse, then every problem at once, each
//! with its path); nothing is saved on error. What is stored is the policy re-serialised from
//! the parsed document (canonical, every default written out), so the stored text is exactly
//! what was validated. A saved version is published to [`WebState::policy`] at once: every
//! connected Defender receives it as `PolicyUpdate`.

use axum::Extension;
use axum::Form;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FormRejection};
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use defender_policy::{
    Collection, Effect, MAX_POLICY_BYTES, NetworkSection, PolicyError, PortRange, ProcessSection,
    Rule, RuntimePolicy, ValidationError,
};
use maud::{Markup, PreEscaped, html};
use serde::{Deserialize, Serialize};

use super::auth::{ApiCaller, CSRF_FIELD, Operator};
use super::forensics::query_pairs;
use super::layout;
use super::render::{display, rfc3339, rfc3339_secs};
use super::security::CspNonce;
use super::{WebState, api_error, internal_error_page};
use crate::store::{PolicyVersion, StoreError};

/// Path of the page (GET: show, POST: save).
pub const PAGE_PATH: &str = "/defend/runtime/app-embedded";
/// Path of the REST resource (GET, PUT).
pub const API_PATH: &str = "/api/v1/policies/runtime/app-embedded";
/// Request body limit of `PUT`: the policy limit plus slack, so a body just over the limit is
/// still read and refused with the library's message.
pub const API_BODY_LIMIT: usize = MAX_POLICY_BYTES + 64 * 1024;
/// Versions listed in the history.
pub const HISTORY: i64 = 20;
/// Entries of one list shown in the rules summary; the rest are counted.
const SUMMARY_LIST: usize = 12;
/// Path given to problems that concern the whole document (its root).
const ROOT_PATH: &str = "(document)";

/// Styles of the page (constant, no data; under the page's CSP nonce).
const CSS: &str = r#"
.effect { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px; white-space:nowrap; }
.effect.prevent { color:#fff; background:var(--err); }
.effect.alert { color:#93370d; background:#fef0c7; }
.effect.disable { color:var(--off); background:var(--off-bg); }
table.rules td ul { margin:0; padding-left:16px; }
table.rules code, ul.problems code { font-family:ui-monospace,SFMono-Regular,Menlo,monospace; word-break:break-all; }
form.policy { display:grid; gap:10px; background:#fff; border:1px solid var(--line); border-radius:8px; padding:14px 16px; }
form.policy label { font-weight:600; color:#344054; }
ul.problems { margin:4px 0; padding-left:20px; }
.saved { background:var(--ok-bg); border:1px solid #abefc6; border-radius:6px; padding:8px 14px; }
"#;

// ---------------------------------------------------------------------------------------------
// Validation, shared by the page and the API

/// One problem of a refused policy, as the API and the page list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl From<ValidationError> for Problem {
    fn from(e: ValidationError) -> Self {
        Self {
            path: e.path,
            message: e.message,
        }
    }
}

/// Why a policy was refused.
#[derive(Debug)]
struct Refusal {
    too_large: bool,
    error: String,
    problems: Vec<Problem>,
}

/// Parses and validates `json`; the policy, or every problem found.
fn check(json: &str) -> Result<RuntimePolicy, Refusal> {
    let policy = match RuntimePolicy::parse(json) {
        Ok(p) => p,
        Err(e @ PolicyError::TooLarge { .. }) => {
            return Err(Refusal {
                too_large: true,
                error: e.to_string(),
                problems: vec![Problem {
                    path: ROOT_PATH.into(),
                    message: e.to_string(),
                }],
            });
        }
        Err(PolicyError::Json {
            path,
            message,
            line,
            column,
        }) => {
            let message = if line > 0 {
                format!("{message} (line {line}, column {column})")
            } else {
                message
            };
            let path = if path.is_empty() {
                ROOT_PATH.to_owned()
            } else {
                path
            };
            return Err(Refusal {
                too_large: false,
                error: "the policy is not a valid policy document (JSON)".into(),
                problems: vec![Problem { path, message }],
            });
        }
        Err(PolicyError::Invalid(errors)) => return Err(invalid(errors)),
    };
    policy.validate().map_err(invalid)?;
    Ok(policy)
}

fn invalid(errors: Vec<ValidationError>) -> Refusal {
    let n = errors.len();
    Refusal {
        too_large: false,
        error: format!(
            "the policy is invalid ({n} problem{})",
            if n == 1 { "" } else { "s" }
        ),
        problems: errors.into_iter().map(Problem::from).collect(),
    }
}

/// The stored form of a valid policy: pretty JSON with every default written out.
fn canonical(policy: &RuntimePolicy) -> String {
    serde_json::to_string_pretty(policy).unwrap_or_else(|_| "{\"rules\": []}".to_owned())
}

/// The built-in policy Defenders apply while no version is saved, as the editor shows it.
fn default_json() -> String {
    canonical(&RuntimePolicy::default_policy())
}

/// Validates and saves `json` as a new version, then publishes it to every Defender stream.
async fn save(
    state: &WebState,
    json: &str,
    saved_by: &str,
) -> Result<Result<PolicyVersion, Refusal>, StoreError> {
    let policy = match check(json) {
        Ok(p) => p,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let saved = state
        .store
        .save_policy(&canonical(&policy), saved_by)
        .await?;
    state.policy.publish(&saved);
    tracing::info!(
        version = saved.version,
        saved_by,
        rules = policy.rules.len(),
        "runtime policy saved and pushed to connected Defenders"
    );
    Ok(Ok(saved))
}

// ---------------------------------------------------------------------------------------------
// REST

/// The policy resource: `{"version": N|null, "saved_at": RFC 3339|null, "saved_by": …|null,
/// "policy": {…}}` (the built-in default, version null, while none is saved).
fn document(v: Option<&PolicyVersion>) -> serde_json::Value {
    match v {
        Some(v) => {
            let policy = serde_json::from_str::<serde_json::Value>(&v.rules_json)
                .unwrap_or(serde_json::Value::Null);
            serde_json::json!({
                "version": v.version,
                "saved_at": rfc3339(v.saved_at),
                "saved_by": v.saved_by,
                "policy": policy,
            })
        }
        None => serde_json::json!({
            "version": null,
            "saved_at": null,
            "saved_by": null,
            "policy": RuntimePolicy::default_policy(),
        }),
    }
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "runtime policy request failed");
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// `GET /api/v1/policies/runtime/app-embedded`: the version in force.
pub async fn get_policy(State(state): State<WebState>) -> Response {
    match state.store.current_policy().await {
        Ok(v) => Json(document(v.as_ref())).into_response(),
        Err(e) => internal(&e),
    }
}

/// `PUT /api/v1/policies/runtime/app-embedded` with the policy document as the body: validates,
/// saves a new version, pushes it to every connected Defender, answers with the saved resource.
/// 400 `{"error", "problems": [{"path", "message"}]}` when refused (nothing saved), 413 when too
/// large.
pub async fn put_policy(
    State(state): State<WebState>,
    Extension(caller): Extension<ApiCaller>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return api_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the policy is larger than the {MAX_POLICY_BYTES}-byte limit"),
            );
        }
        Err(r) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {}", r.body_text()),
            );
        }
    };
    let Ok(json) = std::str::from_utf8(&body) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8 text; send the policy JSON",
        );
    };
    let saved_by = match &caller {
        ApiCaller::Token { id } => format!("api-token:{id}"),
        ApiCaller::Operator { username } => username.clone(),
    };
    match save(&state, json, &saved_by).await {
        Ok(Ok(saved)) => Json(document(Some(&saved))).into_response(),
        Ok(Err(refusal)) => {
            let status = if refusal.too_large {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            (
                status,
                Json(serde_json::json!({ "error": refusal.error, "problems": refusal.problems })),
            )
                .into_response()
        }
        Err(e) => internal(&e),
    }
}

// ---------------------------------------------------------------------------------------------
// Page

/// The editor form's fields (the CSRF field is checked by the middleware).
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct PolicyForm {
    policy: String,
}

/// What the page shows besides the version in force.
#[derive(Default)]
struct View {
    /// `?version=N`: an older version to look at (its text goes into the editor).
    viewing: Option<PolicyVersion>,
    /// `?version=N` named a version that does not exist.
    missing_version: Option<String>,
    /// `?saved=N`: the redirect after a successful save.
    saved: Option<i64>,
    /// A refused save: the text as typed and what is wrong with it.
    refused: Option<(String, Refusal)>,
}

/// `GET /defend/runtime/app-embedded[?version=N][&saved=N]`.
pub async fn page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    RawQuery(raw): RawQuery,
) -> Response {
    let mut view = View::default();
    for (k, v) in query_pairs(raw.as_deref().unwrap_or("")) {
        match k.as_str() {
            "version" if !v.trim().is_empty() => match v.trim().parse::<i64>() {
                Ok(n) => match state.store.policy_version(n).await {
                    Ok(Some(pv)) => view.viewing = Some(pv),
                    Ok(None) => view.missing_version = Some(v),
                    Err(e) => return internal_error_page(&e),
                },
                Err(_) => view.missing_version = Some(v),
            },
            "saved" => view.saved = v.trim().parse().ok(),
            _ => {}
        }
    }
    let status = if view.missing_version.is_some() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    render(&state, &op, &nonce, view, status).await
}

/// `POST /defend/runtime/app-embedded` (CSRF-checked by the router): saves and redirects to the
/// page (303), or shows the problems above the editor with the text kept (422).
pub async fn save_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    form: Result<Form<PolicyForm>, FormRejection>,
) -> Response {
    let text = match form {
        Ok(Form(f)) => f.policy,
        Err(rejection) => {
            let refusal = Refusal {
                too_large: false,
                error: "the form could not be read".into(),
                problems: vec![Problem {
                    path: ROOT_PATH.into(),
                    message: rejection.body_text(),
                }],
            };
            let view = View {
                refused: Some((String::new(), refusal)),
                ..View::default()
            };
            return render(&state, &op, &nonce, view, StatusCode::BAD_REQUEST).await;
        }
    };
    match save(&state, &text, &op.username).await {
        Ok(Ok(saved)) => {
            Redirect::to(&format!("{PAGE_PATH}?saved={}", saved.version)).into_response()
        }
        Ok(Err(refusal)) => {
            let view = View {
                refused: Some((text, refusal)),
                ..View::default()
            };
            render(&state, &op, &nonce, view, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => internal_error_page(&e),
    }
}

async fn render(
    state: &WebState,
    op: &Operator,
    nonce: &CspNonce,
    view: View,
    status: StatusCode,
) -> Response {
    let (current, history) = match tokio::try_join!(
        state.store.current_policy(),
        state.store.policy_history(HISTORY)
    ) {
        Ok(v) => v,
        Err(e) => return internal_error_page(&e),
    };
    let in_force_json = current
        .as_ref()
        .map_or_else(default_json, |v| v.rules_json.clone());
    let editor_text = match (&view.refused, &view.viewing) {
        (Some((text, _)), _) => text.clone(),
        (None, Some(old)) => old.rules_json.clone(),
        (None, None) => in_force_json.clone(),
    };
    let body = html! {
        style nonce=(nonce.0) { (PreEscaped(CSS)) }
        h1 { "Runtime" }
        p.muted {
            "Rules the App-Embedded Defenders enforce on the processes and network activity of their "
            "tasks. The first rule whose collection matches a task applies. A saved version is pushed "
            "to every connected Defender at once; Defenders that connect later receive it on connect."
        }
        @if let Some(v) = view.saved {
            p.saved role="status" {
                "Saved version " strong { (v) } ". Connected Defenders are receiving it now."
            }
        }
        @if let Some(v) = &view.missing_version {
            p.error role="alert" { "There is no saved version " (display(v)) "." }
        }
        h2 { "In force" }
        dl.meta #in-force {
            dt { "Version" }
            dd {
                @match &current {
                    Some(v) => { strong { (v.version) } }
                    None => { "built-in default, no version saved yet" }
                }
            }
            @if let Some(v) = &current {
                dt { "Saved by" } dd { (display(&v.saved_by)) }
                dt { "Saved at" } dd { time datetime=(rfc3339(v.saved_at)) { (rfc3339_secs(v.saved_at)) } }
            }
        }
        (summary(&in_force_json, "summary-in-force"))
        @if let Some(old) = &view.viewing {
            section #viewing {
                h2 { "Version " (old.version) " " span.muted { "(saved " (rfc3339_secs(old.saved_at)) " by " (display(&old.saved_by)) ")" } }
                p.notice {
                    "The editor below holds version " (old.version) ". "
                    @if current.as_ref().is_some_and(|c| c.version == old.version) {
                        "It is the version in force."
                    } @else {
                        "Saving it makes it the newest version again (a restore)."
                    }
                }
                (summary(&old.rules_json, "summary-viewing"))
            }
        }
        h2 #editor-heading { "Edit" }
        (editor(op, &editor_text, view.refused.as_ref().map(|(_, r)| r)))
        h2 { "History " span.muted { "(last " (HISTORY) " versions)" } }
        @if history.is_empty() {
            p.muted #history { "No version saved yet: Defenders apply the built-in default shown above." }
        } @else {
            table.grid #history {
                thead { tr { th { "Version" } th { "Saved at (UTC)" } th { "Saved by" } th {} } }
                tbody {
                    @for v in &history {
                        tr {
                            td.num { (v.version) }
                            td { (rfc3339_secs(v.saved_at)) }
                            td { (display(&v.saved_by)) }
                            td {
                                a href=(format!("{PAGE_PATH}?version={}#viewing", v.version)) { "View" }
                                @if current.as_ref().is_some_and(|c| c.version == v.version) {
                                    " " span.muted { "(in force)" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = layout::page(nonce, op, PAGE_PATH, "Runtime", body);
    let mut res = (status, Html(page.into_string())).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}

fn editor(op: &Operator, text: &str, refusal: Option<&Refusal>) -> Markup {
    html! {
        form.policy method="post" action=(PAGE_PATH) {
            input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
            label for="policy" { "Policy (JSON)" }
            span.hint {
                "Keys are snake_case; effects are " code { "disable" } ", " code { "alert" } " or "
                code { "prevent" } ". Only " code { "rules" } " and each rule's " code { "name" }
                " are required. Up to 1 MiB; the REST API takes the same document at "
                code { (API_PATH) } "."
            }
            @if let Some(r) = refusal {
                div.field-error #policy-error role="alert" {
                    p.error { "Not saved: " (display(&r.error)) "." }
                    ul.problems {
                        @for p in &r.problems {
                            li { code { (display(&p.path)) } ": " (display(&p.message)) }
                        }
                    }
                }
            }
            textarea #policy .code name="policy" rows="24" spellcheck="false" autocomplete="off"
                aria-invalid=[refusal.map(|_| "true")]
                aria-describedby=[refusal.map(|_| "policy-error")] {
                (text)
            }
            button.primary type="submit" { "Save" }
        }
    }
}

fn effect_badge(e: Effect) -> Markup {
    html! { span class={ "effect " (e.as_str()) } { (e.as_str()) } }
}

/// Up to [`SUMMARY_LIST`] entries of a list, then "+N more".
fn list<T: ToString>(items: &[T]) -> Markup {
    let shown: Vec<String> = items
        .iter()
        .take(SUMMARY_LIST)
        .map(|i| display(&i.to_string()))
        .collect();
    html! {
        @for (i, s) in shown.iter().enumerate() {
            @if i > 0 { ", " }
            code { (s) }
        }
        @if items.len() > SUMMARY_LIST {
            " " span.muted { "+" (items.len() - SUMMARY_LIST) " more" }
        }
    }
}

fn collection(c: &Collection) -> Markup {
    let parts: [(&str, &Vec<String>); 4] = [
        ("families", &c.families),
        ("containers", &c.containers),
        ("images", &c.images),
        ("clusters", &c.clusters),
    ];
    html! {
        @if parts.iter().all(|(_, l)| l.is_empty()) {
            "all workloads"
        } @else {
            ul {
                @for (name, l) in parts {
                    @if !l.is_empty() {
                        li { (name) ": " (list(l)) }
                    }
                }
            }
        }
    }
}

fn processes(p: &ProcessSection) -> Markup {
    html! {
        ul {
            @if !p.denied.is_empty() {
                li { "denied " (effect_badge(p.effect)) ": " (list(&p.denied)) }
            }
            @if !p.allowed.is_empty() {
                li { "only allowed " (effect_badge(p.effect)) ": " (list(&p.allowed)) }
            }
            li { "crypto-miners " (effect_badge(p.crypto_miners)) }
            li { "modified binaries " (effect_badge(p.modified_binary)) }
            li { "shell from a non-shell " (effect_badge(p.shell_from_non_shell)) }
        }
    }
}

fn ports(p: &[PortRange]) -> Markup {
    list(p)
}

fn network(n: &NetworkSection) -> Markup {
    let empty = n.allowed_listening_ports.is_empty()
        && n.denied_listening_ports.is_empty()
        && n.denied_outbound_ports.is_empty()
        && n.denied_outbound_ips.is_empty();
    html! {
        @if empty {
            span.muted { "no network lists" }
            " " (effect_badge(n.effect))
        } @else {
            "effect " (effect_badge(n.effect))
            ul {
                @if !n.allowed_listening_ports.is_empty() {
                    li { "listening only on: " (ports(&n.allowed_listening_ports)) }
                }
                @if !n.denied_listening_ports.is_empty() {
                    li { "denied listening ports: " (ports(&n.denied_listening_ports)) }
                }
                @if !n.denied_outbound_ports.is_empty() {
                    li { "denied outbound ports: " (ports(&n.denied_outbound_ports)) }
                }
                @if !n.denied_outbound_ips.is_empty() {
                    li { "denied outbound addresses: " (list(&n.denied_outbound_ips)) }
                }
            }
        }
    }
}

fn rule_row(i: usize, r: &Rule) -> Markup {
    html! {
        tr {
            td.num { (i + 1) }
            td { strong { (display(&r.name)) } }
            td { (collection(&r.collection)) }
            td { (processes(&r.processes)) }
            td { (network(&r.network)) }
        }
    }
}

/// A readable summary of the rules in `json` (every value escaped by maud, after [`display`]).
fn summary(json: &str, id: &str) -> Markup {
    match RuntimePolicy::parse(json) {
        Ok(p) if p.rules.is_empty() => html! {
            p.muted id=(id) { "No rules: nothing is checked." }
        },
        Ok(p) => html! {
            table.grid.rules id=(id) {
                thead { tr { th { "#" } th { "Rule" } th { "Applies to" } th { "Processes" } th { "Network" } } }
                tbody {
                    @for (i, r) in p.rules.iter().enumerate() { (rule_row(i, r)) }
                }
            }
        },
        Err(e) => html! {
            p.error id=(id) { "This version does not parse: " (display(&e.to_string())) }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_carry_path_and_position() {
        let r = check(r#"{"rules": [{"name": "a", "bogus": 1}]}"#).unwrap_err();
        assert!(!r.too_large);
        assert_eq!(r.problems.len(), 1);
        assert_eq!(r.problems[0].path, "rules[0].bogus");
        assert!(r.problems[0].message.contains("bogus"), "{:?}", r.problems);
        assert!(r.problems[0].message.contains("line 1"), "{:?}", r.problems);
        let r = check("not json").unwrap_err();
        assert_eq!(r.problems[0].path, ROOT_PATH);
    }

    #[test]
    fn validation_lists_every_problem() {
        let r = check(
            r#"{"rules": [{"name": ""}, {"name": "x", "network": {"denied_listening_ports": [70000]}}]}"#,
        )
        .unwrap_err();
        assert!(r.problems.len() >= 2, "{:?}", r.problems);
        assert!(r.error.contains("invalid"));
    }

    #[test]
    fn canonical_form_round_trips() {
        let p = check(r#"{"rules":[{"name":"r","network":{"effect":"alert","denied_outbound_ports":[25,"6660-6669"]}}]}"#)
            .unwrap();
        let text = canonical(&p);
        assert_eq!(RuntimePolicy::parse(&text).unwrap(), p);
        assert!(text.contains("\"6660-6669\""));
        assert_eq!(
            RuntimePolicy::parse(&default_json()).unwrap(),
            RuntimePolicy::default_policy()
        );
    }
}
