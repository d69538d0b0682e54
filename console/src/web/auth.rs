//! Operator authentication.
//!
//! - UI pages sit behind [`require_operator`]: a live `defender_session` cookie or a 303 to
//!   `/login`. Any other method than GET/HEAD/OPTIONS must also prove it came from our own page:
//!   the session's CSRF token in a form field `csrf` or in the header `X-CSRF-Token` (403 else).
//! - `/api/v1/…` sits behind [`require_api_caller`]: `Authorization: Bearer <api token>`, or the
//!   UI session cookie (then non-GET requests need `X-CSRF-Token`). Otherwise 401 JSON.
//!
//! Tokens, passwords and cookies are never logged.

use std::fmt;

use axum::Extension;
use axum::Form;
use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::layout;
use super::security::CspNonce;
use super::{MAX_BODY_BYTES, WebState, api_error, internal_error_page};
use crate::store::{Store, StoreError, TokenKind};

/// Name of the UI session cookie.
pub const SESSION_COOKIE: &str = "defender_session";
/// Form field carrying the CSRF token in state-changing UI forms.
pub const CSRF_FIELD: &str = "csrf";
/// Header carrying the CSRF token in requests made by the UI's scripts.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Where operators land after logging in.
pub const HOME: &str = "/manage/defenders";

/// The logged-in operator of a UI request (an extension set by [`require_operator`]).
#[derive(Clone)]
pub struct Operator {
    pub username: String,
    /// Goes into every state-changing form as the hidden field [`CSRF_FIELD`].
    pub csrf_token: String,
    session_cookie: String,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Who made an API request (an extension set by [`require_api_caller`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiCaller {
    /// An API token, by its row id.
    Token { id: i64 },
    /// An operator's browser session.
    Operator { username: String },
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Compares secrets without an early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of the session cookie, if the request carries one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

pub(super) async fn operator_from(
    store: &Store,
    headers: &HeaderMap,
) -> Result<Option<Operator>, StoreError> {
    let Some(cookie) = session_cookie(headers) else {
        return Ok(None);
    };
    Ok(store.ui_session(cookie).await?.map(|s| Operator {
        username: s.username,
        csrf_token: s.csrf_token,
        session_cookie: cookie.to_owned(),
    }))
}

fn csrf_header_matches(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(CSRF_HEADER)
        .is_some_and(|v| ct_eq(v.as_bytes(), expected.as_bytes()))
}

/// The first value of field `name` in an `application/x-www-form-urlencoded` body.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    body.split(|b| *b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let key = url_decode(kv.next()?);
        (key == name).then(|| url_decode(kv.next().unwrap_or_default()))
    })
}

fn url_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex_val(s[i + 1]), hex_val(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

fn forbidden_page() -> Response {
    (
        StatusCode::FORBIDDEN,
        Html(
            html! { h1 { "Forbidden" } p { "Missing or invalid CSRF token. Reload the page and try again." } }
                .into_string(),
        ),
    )
        .into_response()
}

/// Checks the CSRF token of a state-changing UI request: header, or form field (the body is
/// read, bounded, and handed on unchanged).
async fn check_ui_csrf(req: Request, expected: &str) -> Result<Request, Response> {
    if csrf_header_matches(req.headers(), expected) {
        return Ok(req);
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(forbidden_page());
    }
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE.into_response())?;
    match form_value(&bytes, CSRF_FIELD) {
        Some(token) if ct_eq(token.as_bytes(), expected.as_bytes()) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        _ => Err(forbidden_page()),
    }
}

/// Middleware of UI routes: requires a session (else 303 to `/login`) and, for state-changing
/// methods, its CSRF token (else 403). Inserts the [`Operator`] for the handler.
pub async fn require_operator(State(state): State<WebState>, req: Request, next: Next) -> Response {
    let op = match operator_from(&state.store, req.headers()).await {
        Ok(Some(op)) => op,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(e) => return internal_error_page(&e),
    };
    let mut req = if is_safe(req.method()) {
        req
    } else {
        match check_ui_csrf(req, &op.csrf_token).await {
            Ok(req) => req,
            Err(res) => {
                tracing::warn!(username = %op.username, "UI request refused: bad CSRF token");
                return res;
            }
        }
    };
    req.extensions_mut().insert(op);
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut res = api_error(StatusCode::UNAUTHORIZED, message);
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"defender-console\""),
    );
    res
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn api_caller(
    store: &Store,
    method: &Method,
    headers: &HeaderMap,
) -> Result<ApiCaller, Response> {
    let internal = |e: StoreError| {
        tracing::error!(error = %e, "API authentication failed");
        api_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let Some(token) = value.to_str().ok().and_then(bearer) else {
            return Err(unauthorized("expected Authorization: Bearer <api token>"));
        };
        return match store.check_token(TokenKind::Api, token).await {
            Ok(Some(id)) => Ok(ApiCaller::Token { id }),
            Ok(None) => {
                tracing::warn!("API request refused: unknown or revoked token");
                Err(unauthorized("invalid API token"))
            }
            Err(e) => Err(internal(e)),
        };
    }
    match operator_from(store, headers).await {
        Ok(Some(op)) => {
            if !is_safe(method) && !csrf_header_matches(headers, &op.csrf_token) {
                return Err(api_error(
                    StatusCode::FORBIDDEN,
                    "missing or invalid X-CSRF-Token header",
                ));
            }
            Ok(ApiCaller::Operator {
                username: op.username,
            })
        }
        Ok(None) => Err(unauthorized(
            "authentication required: send Authorization: Bearer <api token>",
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Middleware of API routes: an API token or a session (see the module docs), else 401 JSON.
/// Inserts the [`ApiCaller`] for the handler.
pub async fn require_api_caller(
    State(state): State<WebState>,
    mut req: Request,
    next: Next,
) -> Response {
    match api_caller(&state.store, req.method(), req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(res) => res,
    }
}

/// The login form. No `Debug`: it holds a password.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

fn login_form(nonce: &CspNonce, error: Option<&str>) -> Html<String> {
    let body = html! {
        main.login {
            h1 { "Defender Console" }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/login" {
                label { "Username" input type="text" name="username" autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Log in" }
            }
        }
    };
    Html(layout::bare_page(nonce, "Log in", body).into_string())
}

/// `GET /login`: the form, or straight home when already logged in.
pub async fn login_page(
    State(state): State<WebState>,
    Extension(nonce): Extension<CspNonce>,
    headers: HeaderMap,
) -> Response {
    match operator_from(&state.store, &headers).await {
        Ok(Some(_)) => Redirect::to(HOME).into_response(),
        Ok(None) => login_form(&nonce, None).into_response(),
        Err(e) => internal_error_page(&e),
    }
}

/// `POST /login`: on success sets the session cookie and redirects home; else 401 and the form
/// with a message that does not say which half was wrong; 429 with `Retry-After` (seconds)
/// while the source or the user is throttled after failures ([`crate::ratelimit`]).
pub async fn login(
    State(state): State<WebState>,
    Extension(nonce): Extension<CspNonce>,
    peer: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip().to_string());
    let peer = peer.as_deref().unwrap_or("unknown");
    // Throttled before the password is even checked (see `crate::ratelimit`): per source, and
    // per user with a bounded delay. The key is cut so that long names cost no memory.
    let user_key: String = form.username.chars().take(128).collect();
    let logins = &state.lifecycle.logins;
    if let Err(wait) = logins.check(&user_key, peer) {
        state
            .lifecycle
            .refused_logins
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        let mut res = (
            StatusCode::TOO_MANY_REQUESTS,
            login_form(
                &nonce,
                Some(&format!("Too many failed logins. Try again in {secs} s.")),
            ),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return res;
    }
    let result = state.store.login(&form.username, &form.password).await;
    match &result {
        Ok(Some(_)) => logins.succeeded(&user_key),
        Ok(None) => logins.failed(&user_key, peer),
        Err(_) => {}
    }
    match result {
        Ok(Some(cookie)) => {
            tracing::info!(username = %form.username, peer, "operator logged in");
            let set = format!("{SESSION_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/");
            match HeaderValue::from_str(&set) {
                Ok(set) => {
                    let mut res = Redirect::to(HOME).into_response();
                    res.headers_mut().insert(header::SET_COOKIE, set);
                    res
                }
                Err(_) => internal_error_page(&"session cookie is not a valid header"),
            }
        }
        Ok(None) => {
            // The username is not logged: people type passwords into the wrong field.
            tracing::warn!(peer, "operator login failed");
            (
                StatusCode::UNAUTHORIZED,
                login_form(&nonce, Some("Invalid username or password.")),
            )
                .into_response()
        }
        Err(e) => internal_error_page(&e),
    }
}

/// `POST /logout` (CSRF-checked by [`require_operator`]): ends the session, clears the cookie.
pub async fn logout(State(state): State<WebState>, Extension(op): Extension<Operator>) -> Response {
    if let Err(e) = state.store.logout(&op.session_cookie).await {
        return internal_error_page(&e);
    }
    tracing::info!(username = %op.username, "operator logged out");
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("defender_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        let body = b"a=1&csrf=csrf_ab%2Bc+d&csrf=second";
        assert_eq!(form_value(body, "csrf").as_deref(), Some("csrf_ab+c d"));
        assert_eq!(form_value(body, "a").as_deref(), Some("1"));
        assert_eq!(form_value(body, "missing"), None);
        assert_eq!(form_value(b"x=%zz%4", "x").as_deref(), Some("%zz%4"));
        assert_eq!(form_value(b"x=%41", "x").as_deref(), Some("A"));
        assert_eq!(form_value(b"x", "x").as_deref(), Some(""));
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; defender_session=dfs_abc ; x=y"),
        );
        assert_eq!(session_cookie(&h), Some("dfs_abc"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("defender_session="),
        );
        assert_eq!(session_cookie(&h), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer("Bearer dfa_x"), Some("dfa_x"));
        assert_eq!(bearer("bearer  dfa_x "), Some("dfa_x"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}
