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
        let source = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let lifecycle = &self.state.lifecycle;
        // Per source first: guessing tokens costs the guesser, whatever the token.
        if let Err(wait) = lifecycle.enroll_per_source.take(&source) {
            return Err(rate_limited(lifecycle, "this source address", wait));
        }
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
        if let Err(wait) = lifecycle.enroll_per_token.take(&token_id.to_string()) {
            return Err(rate_limited(lifecycle, "this enrollment token", wait));
        }
        let id = crate::secrets::new_id();
        let issued = self
            .state
            .ca
            .issue_client(&req.csr_pem, &id, self.state.client_cert_validity)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // A key belongs to one Defender forever: a decommissioned Defender cannot come back by
        // enrolling its key again, and no key serves two identities.
        if let Some(owner) = self
            .state
            .store
            .key_owner(&issued.key_sha256)
            .await
            .map_err(internal)?
        {
            tracing::warn!(owner = %owner.defender_id, decommissioned = owner.decommissioned, "enrollment refused: key already certified");
            return Err(if owner.decommissioned {
                Status::permission_denied(
                    "this key belongs to a decommissioned Defender; it can never enroll again",
                )
            } else {
                Status::already_exists(
                    "this key is already certified for another Defender; generate a new key",
                )
            });
        }
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
        self.state
            .store
            .record_enrollment(&id, &issued.key_sha256, token_id)
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

/// `RESOURCE_EXHAUSTED` with the time to wait, counted for `/metrics`.
pub(super) fn rate_limited(
    lifecycle: &crate::lifecycle::Lifecycle,
    what: &str,
    wait: std::time::Duration,
) -> Status {
    lifecycle
        .refused_enrollments
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Status::resource_exhausted(format!(
        "too many enrollments with {what}; retry in {} s",
        wait.as_secs().max(1)
    ))
}

/// Logs a storage failure and hides its details from the peer.
pub(super) fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "storage failure while serving a defender");
    Status::internal("console storage failure")
}
