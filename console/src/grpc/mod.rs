//! The Defender-facing gRPC server: token enrollment and the one mTLS stream per Defender.

mod enroll;
pub mod registry;
mod renew;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use defender_proto::MAX_MESSAGE_BYTES;
use defender_proto::v1::defender_service_server::DefenderServiceServer;
use defender_proto::v1::enrollment_server::EnrollmentServer;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::pki::{CertAuthority, ServerIdentity};
use crate::store::{EventWriter, Store};

pub use enroll::EnrollmentApi;
pub use stream::DefenderApi;

/// What the gRPC services share.
pub struct GrpcState {
    pub store: Store,
    pub writer: EventWriter,
    /// Records heartbeats in batches (`store::heartbeats`).
    pub heartbeats: crate::store::heartbeats::HeartbeatWriter,
    pub ca: Arc<CertAuthority>,
    /// Identifies this Console process in session rows.
    pub console_instance: String,
    pub heartbeat_interval: Duration,
    pub client_cert_validity: Duration,
    /// Turns true when the Console stops, so open streams end and graceful shutdown can finish.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// The runtime policy in force, pushed to every stream.
    pub policy: crate::policy_feed::PolicyFeed,
    /// The WAAS policy in force, pushed to every stream.
    pub waas: crate::policy_feed::PolicyFeed,
    /// Live streams, rate limits, decommissioning.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}

/// Serves enrollment and Connect on `listener` until `shutdown` resolves, at most
/// `limits.max_connections` connections at once ([`crate::listen::grpc_incoming`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<GrpcState>,
    identity: ServerIdentity,
    limits: crate::listen::ListenerLimits,
    stats: Arc<crate::listen::EdgeStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(identity.cert_pem, identity.key_pem))
        .client_ca_root(Certificate::from_pem(state.ca.cert_pem()))
        // Enrollment runs before the Defender has a certificate; Connect checks for one itself.
        .client_auth_optional(true)
        .timeout(Duration::from_secs(10));
    let enroll = EnrollmentServer::new(EnrollmentApi::new(state.clone()))
        .max_decoding_message_size(64 * 1024);
    let defenders = DefenderServiceServer::new(DefenderApi::new(state))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(enroll)
        .add_service(defenders)
        .serve_with_incoming_shutdown(
            crate::listen::grpc_incoming(listener, limits, stats),
            shutdown,
        )
        .await
}
