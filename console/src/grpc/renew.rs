//! `DefenderService.Renew`: a new client certificate for the same Defender id and a new key,
//! authenticated only by the verified client certificate of the connection. A long-running
//! task keeps its identity for as long as it lives, and enrollment tokens can expire.

use std::sync::Arc;

use defender_proto::v1::{RenewRequest, RenewResponse};
use tonic::{Request, Response, Status};

use super::GrpcState;
use super::enroll::internal;
use crate::pki::defender_id_from_cert;
use crate::store::Standing;

/// Longest CSR accepted, in bytes (as for enrollment).
const MAX_CSR_BYTES: usize = 8 * 1024;

/// The Defender id a request's verified client certificate names, if it has one.
pub(super) fn peer_defender_id<T>(request: &Request<T>) -> Option<String> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().and_then(|c| defender_id_from_cert(c)))
}

/// Serves one renewal.
pub(super) async fn renew(
    state: &Arc<GrpcState>,
    request: Request<RenewRequest>,
) -> Result<Response<RenewResponse>, Status> {
    let id = peer_defender_id(&request)
        .ok_or_else(|| Status::unauthenticated("a Defender client certificate is required"))?;
    let req = request.into_inner();
    if req.csr_pem.len() > MAX_CSR_BYTES {
        return Err(Status::invalid_argument("CSR too large"));
    }
    match state.store.defender_standing(&id).await.map_err(internal)? {
        Standing::Active => {}
        Standing::Decommissioned => {
            tracing::warn!(defender_id = %id, "renewal refused: decommissioned");
            return Err(super::registry::decommissioned());
        }
        Standing::Unknown => {
            return Err(Status::unauthenticated(
                "unknown Defender: enroll again with an install bundle",
            ));
        }
    }
    if let Err(wait) = state.lifecycle.renew_per_defender.take(&id) {
        state
            .lifecycle
            .refused_renewals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(Status::resource_exhausted(format!(
            "too many renewals; retry in {} s",
            wait.as_secs().max(1)
        )));
    }
    let issued = state
        .ca
        .issue_client(&req.csr_pem, &id, state.client_cert_validity)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if state
        .store
        .key_owner(&issued.key_sha256)
        .await
        .map_err(internal)?
        .is_some()
    {
        return Err(Status::already_exists(
            "renewal needs a new key: this one was certified before",
        ));
    }
    if !state
        .store
        .record_renewal(&id, &issued.key_sha256, issued.not_after_ms)
        .await
        .map_err(internal)?
    {
        // Decommissioned meanwhile, or the same new key raced in twice.
        return Err(Status::permission_denied(
            "renewal refused: the Defender was decommissioned or the key is already used",
        ));
    }
    tracing::info!(defender_id = %id, not_after_ms = issued.not_after_ms, "client certificate renewed");
    Ok(Response::new(RenewResponse {
        defender_id: id,
        certificate_pem: issued.cert_pem,
        ca_pem: state.ca.cert_pem().to_owned(),
        not_after_ms: issued.not_after_ms,
    }))
}
