//! `Enrollment.Enroll`: trades a valid enrollment token and a CSR for a client certificate.

use std::sync::Arc;

use defender_proto::v1::{EnrollRequest, EnrollResponse, Mode, enrollment_server::Enrollment};
use tonic::{Request, Response, Status};

use super::GrpcState;
use crate::store::{NewDefender, TokenKind};

/// Longest CSR accepted, in bytes.
const MAX_CSR_BYTES: usize = 8 * 1024;

/// The Enrollment service.
pub struct EnrollmentApi {
    state: Arc<GrpcState>,
}

impl EnrollmentApi {
    /// Wraps the shared state.
    pub fn new(state: Arc<GrpcState>) -> Self {
        Self { state }
    }
}

/// Stable lowercase name of a mode, as stored and shown.
pub fn mode_name(mode: i32) -> &'static str {
    match Mode::try_from(mode).unwrap_or(Mode::Unspecified) {
        Mode::Standalone => "standalone",
        Mode::Embedded => "embedded",
        Mode::Sidecar => "sidecar",
        Mode::Simulated => "simulated",
        Mode::Unspecified => "unknown",
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentApi {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let req = request.into_inner();
        if req.csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument("CSR too large"));
        }
        let token_id = self
            .state
            .store
            .check_token(TokenKind::Enrollment, &req.token)
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                tracing::warn!("enrollment refused: invalid, expired or revoked token");
                Status::unauthenticated("invalid, expired or revoked enrollment token")
            })?;
        let id = crate::secrets::new_id();
        let issued = self
            .state
            .ca
            .issue_client(&req.csr_pem, &id, self.state.client_cert_validity)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut metadata = req.metadata.unwrap_or_default();
        crate::limits::bound_metadata(&mut metadata);
        self.state
            .store
            .insert_defender(&NewDefender {
                id: &id,
                metadata: &metadata,
                agent_version: &req.agent_version,
                mode: mode_name(req.mode),
                enrollment_token: token_id,
                cert_not_after_ms: issued.not_after_ms,
            })
            .await
            .map_err(internal)?;
        tracing::info!(defender_id = %id, hostname = %metadata.hostname, family = %metadata.family, "defender enrolled");
        Ok(Response::new(EnrollResponse {
            defender_id: id,
            certificate_pem: issued.cert_pem,
            ca_pem: self.state.ca.cert_pem().to_owned(),
            not_after_ms: issued.not_after_ms,
        }))
    }
}

/// Logs a storage failure and hides its details from the peer.
pub(super) fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "storage failure while serving a defender");
    Status::internal("console storage failure")
}
