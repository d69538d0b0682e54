//! Manage > Tokens and `/api/v1/tokens`: enrollment tokens (in install bundles; they expire)
//! and API tokens (named, with their last use), listed, created and revoked. A token itself
//! is shown once, when it is created; only its SHA-256 is stored.
//!
//! | Route                                   | What                                                    |
//! |-----------------------------------------|---------------------------------------------------------|
//! | `GET /manage/tokens`                    | the list, revoke buttons, "New API token" form          |
//! | `POST /manage/tokens/api`               | `name=…`: creates an API token, shows it once           |
//! | `POST /manage/tokens/revoke`            | `token=enroll-3`: asks; with `confirm=yes`: revokes     |
//! | `GET /api/v1/tokens`                    | `[Token]`                                               |
//! | `POST /api/v1/tokens`                   | `{"name", "kind"?: "api"|"enrollment", "ttl"?: "90d"}` → 201 `Token` + `token` |
//! | `POST /api/v1/tokens/{id}/revoke`       | `Token` (404 unknown, 409 already revoked)              |

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::auth::{ApiCaller, CSRF_FIELD, Operator};
use super::forensics::query_pairs;
use super::layout;
use super::render::{display, rfc3339, rfc3339_secs};
use super::security::CspNonce;
use super::{WebState, api_error, internal_error_page};
use crate::status::human_duration;
use crate::store::lifecycle::{TokenRecord, parse_handle};
use crate::store::{DEFAULT_ENROLLMENT_TTL, StoreError, TokenKind, now_ms};

/// Path of the page.
pub const PAGE_PATH: &str = "/manage/tokens";
/// Longest token name accepted.
pub const MAX_NAME_CHARS: usize = 200;

/// A token as the API returns it (never the token itself, except once in `token` on creation).
#[derive(Debug, Serialize)]
pub struct TokenJson {
    /// `enroll-3` / `api-5`.
    pub id: String,
    /// `enrollment` or `api`.
    pub kind: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    /// Enrollments made with it (enrollment tokens).
    pub uses: i64,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    /// The token in clear: only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl TokenJson {
    fn new(t: &TokenRecord, now: i64) -> Self {
        Self {
            id: t.handle(),
            kind: t.kind.clone(),
            name: t.description.clone(),
            created_at: rfc3339(t.created_at),
            expires_at: t.expires_at.map(rfc3339),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            uses: t.uses,
            state: t.state(now).to_owned(),
            token: None,
        }
    }
}

fn when(ms: Option<i64>, now: i64, never: &str) -> Markup {
    html! {
        @match ms {
            Some(ms) if ms <= now => time datetime=(rfc3339(ms)) title=(rfc3339_secs(ms)) { (human_duration(now - ms)) " ago" },
            Some(ms) => time datetime=(rfc3339(ms)) title=(rfc3339_secs(ms)) { "in " (human_duration(ms - now)) },
            None => span.muted { (never) },
        }
    }
}

fn table(op: &Operator, tokens: &[&TokenRecord], now: i64, enrollment: bool) -> Markup {
    html! {
        table.grid {
            thead {
                tr {
                    th { "ID" } th { (if enrollment { "Description" } else { "Name" }) } th { "Created" }
                    @if enrollment { th { "Expires" } th { "Enrollments" } }
                    th { "Last used" } th { "State" } th { "" }
                }
            }
            tbody {
                @if tokens.is_empty() {
                    tr { td colspan="8" { span.muted { "None." } } }
                }
                @for t in tokens {
                    tr {
                        td { code { (t.handle()) } }
                        td { (display(&t.description)) }
                        td { (when(Some(t.created_at), now, "")) }
                        @if enrollment {
                            td { (when(t.expires_at, now, "never")) }
                            td.num { (t.uses) }
                        }
                        td { (when(t.last_used_at, now, "never")) }
                        td { (t.state(now)) }
                        td {
                            @if t.revoked_at.is_none() {
                                form method="post" action=(format!("{PAGE_PATH}/revoke")) {
                                    input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
                                    input type="hidden" name="token" value=(t.handle());
                                    button type="submit" { "Revoke…" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn page(
    nonce: &CspNonce,
    op: &Operator,
    status: StatusCode,
    title: &str,
    body: Markup,
) -> Response {
    (
        status,
        Html(layout::page(nonce, op, PAGE_PATH, title, body).into_string()),
    )
        .into_response()
}

/// `GET /manage/tokens`.
pub async fn list_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
) -> Response {
    let tokens = match state.store.list_tokens().await {
        Ok(t) => t,
        Err(e) => return internal_error_page(&e),
    };
    let now = now_ms();
    let enrollment: Vec<&TokenRecord> = tokens.iter().filter(|t| t.kind != "api").collect();
    let api: Vec<&TokenRecord> = tokens.iter().filter(|t| t.kind == "api").collect();
    let body = html! {
        h1 { "Tokens" }
        h2 { "Enrollment tokens" }
        p.hint {
            "Carried by install bundles. New ones expire after " (human_duration(DEFAULT_ENROLLMENT_TTL.as_millis() as i64))
            " unless created with another life (" code { "defender-console bundle --ttl 30d" } "). "
            "Running Defenders renew their certificates by themselves, so an expired or revoked "
            "token only stops new enrollments. Create bundles in "
            a href=(super::deploy::PAGE_PATH) { "Deploy › Defenders" } "."
        }
        (table(&op, &enrollment, now, true))
        h2 { "API tokens" }
        p.hint { "For scripts: " code { "Authorization: Bearer <token>" } " on " code { "/api/v1/…" } "." }
        (table(&op, &api, now, false))
        h2 { "New API token" }
        form.deploy method="post" action=(format!("{PAGE_PATH}/api")) {
            input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
            div.field {
                label for="token-name" { "Name" }
                input #token-name type="text" name="name" required maxlength=(MAX_NAME_CHARS) placeholder="e.g. ci-deploy";
            }
            button.primary type="submit" { "Create API token" }
        }
    };
    page(&nonce, &op, StatusCode::OK, "Tokens", body)
}

fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("a name is required".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "the name is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the name must not contain control characters".into());
    }
    Ok(name.to_owned())
}

/// `POST /manage/tokens/api` (CSRF-checked): `name=…`; shows the new token once.
pub async fn create_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    body: Bytes,
) -> Response {
    let pairs = query_pairs(&String::from_utf8_lossy(&body));
    let name = pairs
        .iter()
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let name = match check_name(name) {
        Ok(n) => n,
        Err(e) => {
            let body = html! {
                h1 { "No token created" }
                p.error { (e) }
                p { a href=(PAGE_PATH) { "Back" } }
            };
            return page(&nonce, &op, StatusCode::BAD_REQUEST, "Tokens", body);
        }
    };
    let token = match state.store.create_token(TokenKind::Api, &name, None).await {
        Ok(t) => t,
        Err(e) => return internal_error_page(&e),
    };
    tracing::info!(username = %op.username, name = %name, "API token created");
    let body = html! {
        h1 { "API token created" }
        p.warnings { "Copy it now: it is shown only this once (the Console keeps only its hash)." }
        pre { (token) }
        p { a href=(PAGE_PATH) { "Back to the tokens" } }
    };
    page(&nonce, &op, StatusCode::CREATED, "Tokens", body)
}

/// `POST /manage/tokens/revoke` (CSRF-checked): `token=<id>`; asks first, revokes with
/// `confirm=yes`.
pub async fn revoke_page(
    State(state): State<WebState>,
    Extension(op): Extension<Operator>,
    Extension(nonce): Extension<CspNonce>,
    body: Bytes,
) -> Response {
    let pairs = query_pairs(&String::from_utf8_lossy(&body));
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let handle = value("token");
    let found = match parse_handle(&handle) {
        Some((kind, id)) => match state.store.get_token(kind, id).await {
            Ok(t) => t.map(|t| (kind, t)),
            Err(e) => return internal_error_page(&e),
        },
        None => None,
    };
    let Some((kind, token)) = found else {
        let body = html! {
            h1 { "No such token" }
            p { a href=(PAGE_PATH) { "Back to the tokens" } }
        };
        return page(&nonce, &op, StatusCode::NOT_FOUND, "Tokens", body);
    };
    if value("confirm") != "yes" {
        let body = html! {
            h1 { "Revoke " code { (token.handle()) } "?" }
            p { (display(&token.description)) }
            p.warnings {
                @if kind == TokenKind::Api {
                    "Scripts using this API token will get 401 from now on."
                } @else {
                    "No Defender can enroll with this token from now on; Defenders already enrolled keep running and renewing."
                }
            }
            form method="post" action=(format!("{PAGE_PATH}/revoke")) {
                input type="hidden" name=(CSRF_FIELD) value=(op.csrf_token);
                input type="hidden" name="token" value=(token.handle());
                input type="hidden" name="confirm" value="yes";
                button.primary type="submit" { "Revoke" }
                " " a href=(PAGE_PATH) { "Cancel" }
            }
        };
        return page(&nonce, &op, StatusCode::OK, "Revoke token", body);
    }
    match state.store.revoke_token_id(kind, token.id).await {
        Ok(revoked) => {
            if revoked {
                tracing::info!(username = %op.username, token = %token.handle(), "token revoked");
            }
            let body = html! {
                h1 { "Token " code { (token.handle()) } " revoked" }
                p { a href=(PAGE_PATH) { "Back to the tokens" } }
            };
            page(&nonce, &op, StatusCode::OK, "Tokens", body)
        }
        Err(e) => internal_error_page(&e),
    }
}

fn internal(e: &StoreError) -> Response {
    tracing::error!(error = %e, "API request failed");
    api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// `GET /api/v1/tokens`.
pub async fn api_list(State(state): State<WebState>) -> Response {
    let now = now_ms();
    match state.store.list_tokens().await {
        Ok(tokens) => Json(
            tokens
                .iter()
                .map(|t| TokenJson::new(t, now))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => internal(&e),
    }
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    /// `api` (default) or `enrollment`.
    #[serde(default)]
    kind: Option<String>,
    /// Life of an enrollment token (`30d`, `12h`…); default 90 days. Not for API tokens.
    #[serde(default)]
    ttl: Option<String>,
}

/// `POST /api/v1/tokens`: 201 with the new token (in `token`, this once).
pub async fn api_create(
    State(state): State<WebState>,
    Extension(caller): Extension<ApiCaller>,
    body: Result<Json<CreateRequest>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(rejection) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"name\": \"…\", \"kind\": \"api\"|\"enrollment\", \"ttl\": \"90d\"}}: {}",
                    rejection.body_text()
                ),
            );
        }
    };
    let name = match check_name(&req.name) {
        Ok(n) => n,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("name: {e}")),
    };
    let kind = match req.kind.as_deref().unwrap_or("api") {
        "api" => TokenKind::Api,
        "enrollment" => TokenKind::Enrollment,
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "kind must be \"api\" or \"enrollment\"",
            );
        }
    };
    let expires_at = match (kind, req.ttl.as_deref()) {
        (TokenKind::Api, Some(_)) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "ttl applies to enrollment tokens only",
            );
        }
        (TokenKind::Api, None) => None,
        (TokenKind::Enrollment, ttl) => {
            let ttl = match ttl.map(crate::cli::parse_duration).transpose() {
                Ok(t) => t.unwrap_or(DEFAULT_ENROLLMENT_TTL),
                Err(e) => return api_error(StatusCode::BAD_REQUEST, &format!("ttl: {e}")),
            };
            Some(now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
        }
    };
    let token = match state.store.create_token(kind, &name, expires_at).await {
        Ok(t) => t,
        Err(e) => return internal(&e),
    };
    let record = match state.store.token_id(kind, &token).await {
        Ok(Some(id)) => state.store.get_token(kind, id).await,
        Ok(None) => Ok(None),
        Err(e) => Err(e),
    };
    match record {
        Ok(Some(t)) => {
            tracing::info!(?caller, token = %t.handle(), "token created over the API");
            let mut json = TokenJson::new(&t, now_ms());
            json.token = Some(token);
            (StatusCode::CREATED, Json(json)).into_response()
        }
        Ok(None) => api_error(StatusCode::INTERNAL_SERVER_ERROR, "token vanished"),
        Err(e) => internal(&e),
    }
}

/// `POST /api/v1/tokens/{id}/revoke`.
pub async fn api_revoke(
    State(state): State<WebState>,
    Extension(caller): Extension<ApiCaller>,
    Path(handle): Path<String>,
) -> Response {
    let Some((kind, id)) = parse_handle(&handle) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "no such token (ids look like enroll-3 or api-5)",
        );
    };
    let revoked = match state.store.revoke_token_id(kind, id).await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    match state.store.get_token(kind, id).await {
        Ok(Some(t)) if revoked => {
            tracing::info!(?caller, token = %t.handle(), "token revoked over the API");
            Json(TokenJson::new(&t, now_ms())).into_response()
        }
        Ok(Some(_)) => api_error(StatusCode::CONFLICT, "token already revoked"),
        Ok(None) => api_error(StatusCode::NOT_FOUND, "no such token"),
        Err(e) => internal(&e),
    }
}
