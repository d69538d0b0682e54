//! The Fargate modes of the `defender` binary: the sidecar that holds the task's identity and
//! Console stream, the entrypoint wrapper of each app container, and the health check.

pub mod entrypoint;
pub mod healthcheck;
pub mod sidecar;
mod socket_sink;

use std::future::Future;

/// Resolves on SIGTERM or SIGINT (how ECS and Docker stop a container).
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}
