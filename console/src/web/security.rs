//! Response hardening for every HTTP response: a per-response CSP nonce (the only way an inline
//! `<script>` or `<style>` runs), no sniffing, no framing, no referrers, no caching.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::secrets::random_bytes;

/// The CSP nonce of the response being built. Pages put it on their inline `<script>` and
/// `<style>` elements; [`headers`] puts it in the `Content-Security-Policy` header.
#[derive(Clone, Debug)]
pub struct CspNonce(pub String);

impl CspNonce {
    fn new() -> Self {
        Self(STANDARD.encode(random_bytes::<16>()))
    }
}

/// Policy of HTML responses: nothing but this response's own inline script and style, and
/// same-origin requests from it.
fn html_policy(nonce: &str) -> String {
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; \
         img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
         base-uri 'none'"
    )
}

/// Policy of everything else (JSON, text): nothing may run or load.
const OTHER_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";

/// Middleware: hands the handler a fresh [`CspNonce`] and adds the security headers.
pub async fn headers(mut req: Request, next: Next) -> Response {
    let nonce = CspNonce::new();
    let policy = html_policy(&nonce.0);
    req.extensions_mut().insert(nonce);
    let mut res = next.run(req).await;
    let is_html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let h = res.headers_mut();
    let csp = if is_html {
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static(OTHER_POLICY))
    } else {
        HeaderValue::from_static(OTHER_POLICY)
    };
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Middleware: one debug line per request (method, path without query, status, duration).
/// Never the query, headers or body: those can carry tokens.
pub async fn access_log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    tracing::debug!(
        %method,
        path = %path,
        status = res.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "http request"
    );
    res
}
