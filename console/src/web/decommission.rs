//! Decommissioning Defenders from the UI and the REST API.
//!
//! A decommissioned Defender leaves Manage > Defenders, its open stream is closed at once with
//! `PERMISSION_DENIED`, and it can never connect, renew or enroll its keys again; its events
//! stay until retention purges the Defender (`--defender-purge-after`).
//!
//! | Route                                            | What                                             |
//! |--------------------------------------------------|--------------------------------------------------|
//! | `GET /manage/defenders/decommission`             | pick Defenders (checkboxes)                      |
//! | `POST /manage/defenders/decommission`            | `id=…` (repeated): confirmation page; with `confirm=yes`: done |
//! | `POST /api/v1/defenders/{id}/decommission`       | `{id, decommissioned: true, changed}`; 404 unknown |
//! | `POST /api/v1/defenders/decommission`            | `{"ids": […]}` (≤ 1000) → `{decommissioned, already_decommissioned, not_found}` |

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::{ApiCaller, CSRF_FIELD, Operator};
use super::forensics::query_pairs;
use super::layout;
use super::render::{defender_name, display, path_segment, task_definition};
use super::security::CspNonce;
use super::{WebState, api_error, internal_error_page};
use crate::status::status_of;
use crate::store::{DefenderRecord, StoreError, now_ms};

/// The selection page, and where its form posts.
pub const PATH: &str = "/manage/defenders/decommission";
/// Most Defenders one request decommissions.
pub const MAX_IDS: usize = 1000;

/// What happened to each requested Defender.
#[derive(Debug, Default, serde::Serialize)]
pub struct Outcome {
    pub decommissioned: Vec<String>,
    pub already_decommissioned: Vec<String>,
    pub not_found: Vec<String>,
}

/// The ids without repeats, in their first order.
fn unique(ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.filter(|id| seen.insert(id.clone())).collect()
}

/// Decommissions every id (see [`crate::lifecycle::Lifecycle::decommission`]).
async fn decommission_all(state: &WebState, ids: &[String]) -> Result<Outcome, StoreError> {
    let mut out = Outcome::default();
    for id in ids {
        if state.store.get_defender(id).await?.is_none() {
            out.not_found.push(id.clone());
        } else if state.lifecycle.decommission(&state.store, id).await? {
            out.decommissioned.push(id.clone());
        } else {
            out.already_decommissioned.push(id.clone());
        }
    }
    Ok(out)
}

fn note(op: &Operator, out: &Outcome) {
    tracing::info!(
        username = %op.username,
        count = out.decommissioned.len(),
        "defenders decommissioned from the UI"
    );
}

/// `GET /manage/defenders/decommission`: every Defender not yet decommissioned, to pick from.
pub async fn select_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
) -> Response {
    let defenders = match state.store.list_defenders(0).await {
        Ok(d) => d,
        Err(e) => return internal_error_page(&e),
    };
    let now = now_ms();
    let body = html! {
        p.muted { a href=(super::defenders::LIST_PATH) { "Defenders" } " › Decommission" }
        h1 { "Decommission Defenders" }
        p {
            "A decommissioned Defender is disconnected at once and refused from then on: it can "
            "never reconnect, renew its certificate or enroll its key again. Its events stay until "
            "retention removes them. Use it for tasks that are gone for good or identities you no "
            "longer trust."
        }
        @if defenders.is_empty() {
            p.empty { "No Defenders to decommission." }
        } @else {
            form method="post" action=(PATH) {
                input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
                table.grid {
                    thead { tr { th { "" } th { "Defender" } th { "Task definition" } th { "Status" } } }
                    tbody {
                        @for d in defenders.iter().take(MAX_IDS) {
                            tr {
                                td { input type="checkbox" name="id" value=(d.id) aria-label=(format!("Select {}", defender_name(d))); }
                                td { (defender_name(d)) br; span.muted { (display(&d.id)) } }
                                td { (task_definition(d)) }
                                td { (status_of(d, now).text) }
                            }
                        }
                    }
                }
                p { button.primary type="submit" { "Decommission selected…" } }
            }
        }
    };
    Html(
        layout::page(
            &nonce,
            &op,
            super::defenders::LIST_PATH,
            "Decommission",
            body,
        )
        .into_string(),
    )
    .into_response()
}

fn confirm_page(op: &Operator, defenders: &[DefenderRecord]) -> Markup {
    html! {
        p.muted { a href=(super::defenders::LIST_PATH) { "Defenders" } " › Decommission" }
        h1 { "Decommission " (defenders.len()) " Defender" @if defenders.len() != 1 { "s" } "?" }
        p.warnings {
            "This cannot be undone: each of these Defenders is disconnected now and can never "
            "connect, renew or enroll its key again. A task that should be protected again needs "
            "a new Defender (restart it with a fresh data directory and a valid install bundle)."
        }
        ul {
            @for d in defenders {
                li { (defender_name(d)) " " span.muted { "(" (display(&d.id)) ")" } }
            }
        }
        form method="post" action=(PATH) {
            input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
            input type="hidden" name="confirm" value="yes";
            @for d in defenders {
                input type="hidden" name="id" value=(d.id);
            }
            p {
                button.primary type="submit" { "Decommission" }
                " " a href=(super::defenders::LIST_PATH) { "Cancel" }
            }
        }
    }
}

/// `POST /manage/defenders/decommission` (CSRF-checked): `id=…` repeated. Without
/// `confirm=yes` it shows what would be decommissioned and asks; with it, it acts.
pub async fn submit(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    body: Bytes,
) -> Response {
    let pairs = query_pairs(&String::from_utf8_lossy(&body));
    let ids = unique(
        pairs
            .iter()
            .filter(|(k, _)| k == "id")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty()),
    );
    let confirmed = pairs.iter().any(|(k, v)| k == "confirm" && v == "yes");
    let page = |status: StatusCode, title: &str, body: Markup| {
        (
            status,
            Html(layout::page(&nonce, &op, super::defenders::LIST_PATH, title, body).into_string()),
        )
            .into_response()
    };
    if ids.is_empty() || ids.len() > MAX_IDS {
        let body = html! {
            h1 { "Nothing decommissioned" }
            p.error { "Select between 1 and " (MAX_IDS) " Defenders." }
            p { a href=(PATH) { "Back" } }
        };
        return page(StatusCode::BAD_REQUEST, "Decommission", body);
    }
    if !confirmed {
        let mut found = Vec::new();
        for id in &ids {
            match state.store.get_defender(id).await {
                Ok(Some(d)) if d.decommissioned_at.is_none() => found.push(d),
                Ok(_) => {}
                Err(e) => return internal_error_page(&e),
            }
        }
        if found.is_empty() {
            let body = html! {
                h1 { "Nothing to decommission" }
                p { "The selected Defenders are unknown or already decommissioned." }
                p { a href=(super::defenders::LIST_PATH) { "Back to the list" } }
            };
            return page(StatusCode::NOT_FOUND, "Decommission", body);
        }
        return page(StatusCode::OK, "Decommission", confirm_page(&op, &found));
    }
    let out = match decommission_all(&state, &ids).await {
        Ok(o) => o,
        Err(e) => return internal_error_page(&e),
    };
    note(&op, &out);
    let body = html! {
        h1 { "Decommissioned " (out.decommissioned.len()) " Defender" @if out.decommissioned.len() != 1 { "s" } }
        @if !out.decommissioned.is_empty() {
            ul.done {
                @for id in &out.decommissioned {
                    li { a href=(format!("{}/{}", super::defenders::LIST_PATH, path_segment(id))) { (display(id)) } }
                }
            }
        }
        @if !out.already_decommissioned.is_empty() {
            p.muted { (out.already_decommissioned.len()) " were decommissioned already." }
        }
        @if !out.not_found.is_empty() {
            p.muted { (out.not_found.len()) " are unknown." }
        }
        p { a href=(super::defenders::LIST_PATH) { "Back to the list" } }
    };
    page(StatusCode::OK, "Decommissioned", body)
}

/// The form on a Defender's page that leads to the confirmation.
pub fn button(op: &Operator, d: &DefenderRecord) -> Markup {
    html! {
        @if d.decommissioned_at.is_none() {
            form.inline method="post" action=(PATH) {
                input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
                input type="hidden" name="id" value=(d.id);
                button type="submit" { "Decommission…" }
            }
        }
    }
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "API request failed");
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// `POST /api/v1/defenders/{id}/decommission`.
pub async fn api_one(
    State(state): State<WebState>,
    Extension(caller): Extension<ApiCaller>,
    Path(id): Path<String>,
) -> Response {
    match decommission_all(&state, std::slice::from_ref(&id)).await {
        Ok(out) if !out.not_found.is_empty() => {
            api_error(StatusCode::NOT_FOUND, "no such defender")
        }
        Ok(out) => {
            let changed = !out.decommissioned.is_empty();
            if changed {
                tracing::info!(?caller, defender_id = %id, "defender decommissioned over the API");
            }
            Json(serde_json::json!({ "id": id, "decommissioned": true, "changed": changed }))
                .into_response()
        }
        Err(e) => internal(&e),
    }
}

/// Body of `POST /api/v1/defenders/decommission`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    ids: Vec<String>,
}

/// `POST /api/v1/defenders/decommission` with `{"ids": […]}`.
pub async fn api_bulk(
    State(state): State<WebState>,
    Extension(caller): Extension<ApiCaller>,
    body: Result<Json<BulkRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"ids\": [\"<defender id>\", …]}}: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    if req.ids.is_empty() || req.ids.len() > MAX_IDS {
        return api_error(
            StatusCode::BAD_REQUEST,
            &format!("ids must hold between 1 and {MAX_IDS} Defender ids"),
        );
    }
    match decommission_all(&state, &unique(req.ids.into_iter())).await {
        Ok(out) => {
            tracing::info!(
                ?caller,
                count = out.decommissioned.len(),
                "defenders decommissioned over the API"
            );
            Json(out).into_response()
        }
        Err(e) => internal(&e),
    }
}
