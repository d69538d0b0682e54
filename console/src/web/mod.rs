//! HTTP side of the Console: UI pages, REST API, health and metrics.
//!
//! Routes and who may use them:
//!
//! | Route                                          | Access                                                  |
//! |------------------------------------------------|---------------------------------------------------------|
//! | `GET /healthz`, `GET /metrics`                 | open (metrics expose counts only)                       |
//! | `GET /login`, `POST /login`, `GET /`           | open                                                    |
//! | `POST /logout`, `/manage/…`, `/monitor/…`, `/defend/…`, `/deploy/…` | UI session ([`auth::require_operator`]) |
//! | `/api/v1/…`                                    | API token or UI session ([`auth::require_api_caller`])  |
//!
//! New UI pages go into the `ui` router of [`router`] (they get the session and CSRF checks and
//! an [`Operator`] extension); new API routes into its `api` router. Every response passes
//! through [`security::headers`] (CSP with a per-response nonce, nosniff, no framing).

mod api;
mod audits;
mod auth;
mod compliance;
mod decommission;
mod defenders;
mod deploy;
mod fleet;
mod forensics;
mod layout;
mod lifecycle_metrics;
mod metrics;
mod not_found;
mod render;
mod runtime;
mod security;
mod tokens;
mod vulns;
mod vulns_api;
pub mod waas;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::html;
use tokio::net::TcpListener;

pub use api::{DefenderJson, EventJson};
pub use auth::{ApiCaller, CSRF_FIELD, CSRF_HEADER, Operator, SESSION_COOKIE};
pub use deploy::WARNINGS_HEADER;
pub use layout::{NAV, NavItem, bare_page, page};
pub use render::rfc3339;
pub use security::CspNonce;

use crate::store::{DefenderRecord, Store, StoreError, now_ms};

/// Largest request body accepted (forms and JSON).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What every HTTP handler can reach.
#[derive(Clone)]
pub struct WebState {
    pub store: Store,
    pub defender_retention: Duration,
    /// PEM of the Console CA, for the install bundles Deploy > Defenders creates.
    pub ca_pem: Arc<str>,
    /// Port of the gRPC listener: the default port of a Console address given without one.
    pub grpc_port: u16,
    /// Names the gRPC server certificate carries; Console addresses in new bundles are checked
    /// against them.
    pub sans: Arc<[String]>,
    /// The runtime policy in force; saving a version publishes it to every Defender stream.
    pub policy: crate::policy_feed::PolicyFeed,
    /// The WAAS policy in force; saving a version publishes it to every Defender stream.
    pub waas: crate::policy_feed::PolicyFeed,
    /// Live streams (closed on decommission), login rate limits, retention figures.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// Connection counters of both listeners, for `/metrics`.
    pub edge: Arc<crate::listen::EdgeStats>,
}

impl WebState {
    /// The retention in milliseconds.
    fn retention_ms(&self) -> i64 {
        i64::try_from(self.defender_retention.as_millis()).unwrap_or(i64::MAX)
    }
}

/// The Defenders of Manage > Defenders (seen within the retention) and the instant they were
/// read at, for [`crate::status::status_of`].
async fn visible_defenders(state: &WebState) -> Result<(Vec<DefenderRecord>, i64), StoreError> {
    let now = now_ms();
    let defenders = state
        .store
        .list_defenders(now.saturating_sub(state.retention_ms()))
        .await?;
    Ok((defenders, now))
}

/// A JSON error response: `{"error": message}`.
pub fn api_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// A 500 page; the cause goes to the log, not to the browser.
fn internal_error_page(error: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %error, "HTTP request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Html(
            html! { h1 { "Internal error" } p { "The Console could not answer; see its log." } }
                .into_string(),
        ),
    )
        .into_response()
}

/// All routes of the Console's HTTP listener.
pub fn router(state: WebState) -> Router {
    let ui = Router::new()
        .route(defenders::LIST_PATH, get(defenders::list_page))
        .route(defenders::ROWS_PATH, get(defenders::rows))
        .route(
            decommission::PATH,
            get(decommission::select_page).post(decommission::submit),
        )
        .route("/manage/defenders/{id}", get(defenders::detail_page))
        .route(
            "/manage/defenders/{id}/status",
            get(defenders::status_fragment),
        )
        .route(tokens::PAGE_PATH, get(tokens::list_page))
        .route("/manage/tokens/api", post(tokens::create_page))
        .route("/manage/tokens/revoke", post(tokens::revoke_page))
        .route(
            deploy::PAGE_PATH,
            get(deploy::page).post(deploy::generate_page),
        )
        .route(
            runtime::PAGE_PATH,
            get(runtime::page).post(runtime::save_page),
        )
        .route(audits::PAGE_PATH, get(audits::page))
        .route(waas::EVENTS_PATH, get(waas::events_page))
        .route(
            waas::POLICY_PATH,
            get(waas::policy_page).post(waas::save_page),
        )
        .route(vulns::IMAGES_PATH, get(vulns::images_page))
        .route(
            "/monitor/vulnerabilities/images/{id}",
            get(vulns::image_page),
        )
        .route(vulns::SEARCH_PATH, get(vulns::search_page))
        .route(compliance::MONITOR_PATH, get(compliance::monitor_page))
        .route(
            compliance::POLICY_PATH,
            get(compliance::policy_page).post(compliance::save_policy),
        )
        .route("/logout", post(auth::logout))
        .route_layer(from_fn_with_state(state.clone(), auth::require_operator));
    let api = Router::new()
        .route("/api/v1/defenders", get(fleet::api_list))
        .route("/api/v1/defenders/{id}", get(api::get_defender))
        .route(
            "/api/v1/defenders/{id}/decommission",
            post(decommission::api_one),
        )
        .route(
            "/api/v1/defenders/decommission",
            post(decommission::api_bulk),
        )
        .route(
            "/api/v1/tokens",
            get(tokens::api_list).post(tokens::api_create),
        )
        .route("/api/v1/tokens/{id}/revoke", post(tokens::api_revoke))
        .route("/api/v1/defenders/{id}/events", get(api::list_events))
        .route(
            "/api/v1/defenders/{id}/observations",
            get(api::observations),
        )
        .route("/api/v1/events", get(api::events))
        .route(
            deploy::API_PATH,
            post(deploy::fargate_json).layer(DefaultBodyLimit::max(deploy::API_BODY_LIMIT)),
        )
        .route(
            runtime::API_PATH,
            get(runtime::get_policy)
                .put(runtime::put_policy)
                .layer(DefaultBodyLimit::max(runtime::API_BODY_LIMIT)),
        )
        .route(audits::API_PATH, get(audits::list))
        .route(waas::EVENTS_API_PATH, get(waas::list_events))
        .route(
            waas::POLICY_API_PATH,
            get(waas::get_policy)
                .put(waas::put_policy)
                .layer(DefaultBodyLimit::max(waas::API_BODY_LIMIT)),
        )
        .route("/api/v1/images", get(vulns_api::list_images))
        .route(
            "/api/v1/images/{id}/vulnerabilities",
            get(vulns_api::image_vulnerabilities),
        )
        .route(
            "/api/v1/images/{id}/packages",
            get(vulns_api::image_packages),
        )
        .route(
            "/api/v1/vulnerabilities",
            get(vulns_api::find_vulnerability),
        )
        .route("/api/v1/compliance", get(vulns_api::compliance))
        .route(
            "/api/v1/vulndb",
            get(vulns_api::vulndb_status)
                .post(vulns_api::vulndb_import)
                .layer(DefaultBodyLimit::max(vulns_api::VULNDB_BODY_LIMIT)),
        )
        .route(
            "/api/v1/policies/compliance",
            get(vulns_api::get_compliance_policy).put(vulns_api::put_compliance_policy),
        )
        .route_layer(from_fn_with_state(state.clone(), auth::require_api_caller));
    Router::new()
        .route("/", get(|| async { Redirect::to(auth::HOME) }))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::metrics))
        .merge(ui)
        .merge(api)
        .fallback(not_found::fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn(security::headers))
        .layer(from_fn(security::access_log))
        .with_state(state)
}

/// How the HTTP listener serves: limits, TLS, cookie security.
pub struct HttpEdge {
    pub limits: crate::listen::ListenerLimits,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Mark cookies `Secure` (HTTPS listener, or `--public-url https://…`).
    pub secure_cookies: bool,
}

/// Serves the UI and API on `listener` until `shutdown` resolves (see [`crate::listen`]).
pub async fn serve(
    listener: TcpListener,
    state: WebState,
    edge: HttpEdge,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stats = state.edge.clone();
    let mut app = router(state);
    if edge.secure_cookies {
        app = app.layer(from_fn(crate::listen::secure_cookies));
    }
    crate::listen::serve_http(listener, app, edge.limits, stats, edge.tls, shutdown).await
}
