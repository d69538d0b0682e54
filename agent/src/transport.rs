//! TLS channels to the Console: server verified against the bundle's CA only, and, once
//! enrolled, the Defender's client certificate presented.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::bundle::{self, BundleError, InstallBundle};
use crate::identity::Identity;

/// Why no channel could be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("cannot reach the Console at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
}

/// Opens a channel to the (first) Console address named in the bundle.
pub async fn channel(
    bundle: &InstallBundle,
    identity: Option<&Identity>,
) -> Result<Channel, TransportError> {
    channel_to(bundle, &bundle.console_addr, identity).await
}

/// Opens a channel to the Console at `addr` (`host:port`, one of the bundle's addresses),
/// trusting only the bundle's CA and expecting a server certificate for `addr`'s host.
pub async fn channel_to(
    bundle: &InstallBundle,
    addr: &str,
    identity: Option<&Identity>,
) -> Result<Channel, TransportError> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&bundle.ca_pem))
        .domain_name(bundle::host_of(addr)?);
    if let Some(id) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            &id.cert_pem,
            &id.key_pem,
        ));
    }
    let unreachable = |detail: String| TransportError::Unreachable {
        addr: addr.to_owned(),
        detail,
    };
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| unreachable(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| unreachable(error_chain(&e)))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))
}

/// One line with every cause of an error, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// A gRPC status as one readable line, including transport causes.
pub fn describe_status(s: &tonic::Status) -> String {
    use std::error::Error;
    match s.source() {
        Some(src) => format!("{} ({:?}): {}", s.message(), s.code(), error_chain(src)),
        None => format!("{} ({:?})", s.message(), s.code()),
    }
}
