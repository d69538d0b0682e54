//! `GET /metrics`: Prometheus text format. Open like `/healthz`, so it exposes counts only —
//! no names, ids or metadata of Defenders.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{WebState, visible_defenders};
use crate::status::status_of;

/// Content type of the Prometheus text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(State(state): State<WebState>) -> Response {
    let counts = async {
        let (defenders, now) = visible_defenders(&state).await?;
        let events = state.store.count_all_events().await?;
        Ok::<_, crate::store::StoreError>((defenders, now, events))
    };
    let (defenders, now, events) = match counts.await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "collecting metrics failed");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "collecting metrics failed\n",
            )
                .into_response();
        }
    };
    let connected = defenders
        .iter()
        .filter(|d| status_of(d, now).connected)
        .count();
    let disconnected = defenders.len() - connected;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP defender_console_defenders Defenders listed in Manage > Defenders (not decommissioned, seen within the retention), by status.\n\
         # TYPE defender_console_defenders gauge\n\
         defender_console_defenders{{status=\"connected\"}} {connected}\n\
         defender_console_defenders{{status=\"disconnected\"}} {disconnected}"
    );
    // A gauge despite the `_total` name: forensic retention may delete events.
    let _ = writeln!(
        out,
        "# HELP defender_console_events_stored_total Events held in the Console's database.\n\
         # TYPE defender_console_events_stored_total gauge\n\
         defender_console_events_stored_total {events}"
    );
    super::lifecycle_metrics::write(&mut out, &state.lifecycle);
    crate::listen::write_metrics(&mut out, &state.edge);
    let _ = writeln!(
        out,
        "# HELP defender_console_build_info Version of this Console.\n\
         # TYPE defender_console_build_info gauge\n\
         defender_console_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let mut res = out.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}
