//! Decodes the install bundle (`INSTALL_BUNDLE`): Console address, CA and enrollment token.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// Largest bundle accepted, in bytes of base64.
const MAX_BUNDLE_BYTES: usize = 64 * 1024;

/// What the Console's `bundle` command produced.
#[derive(Clone, Deserialize)]
pub struct InstallBundle {
    /// `host:port` of the Console's gRPC listener.
    pub console_addr: String,
    /// PEM of the Console CA, the only root this Defender trusts.
    pub ca_pem: String,
    /// Enrollment token (a secret: never logged).
    pub token: String,
}

impl std::fmt::Debug for InstallBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallBundle")
            .field("console_addr", &self.console_addr)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Why a bundle could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no install bundle: pass --install-bundle or set INSTALL_BUNDLE")]
    Missing,
    #[error("install bundle is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge,
    #[error("install bundle is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("install bundle is not the JSON the Console produces: {0}")]
    Json(#[from] serde_json::Error),
    #[error("install bundle has an invalid console address {0:?} (expected host:port)")]
    Address(String),
    #[error("install bundle's CA certificate is not PEM")]
    Ca,
}

impl InstallBundle {
    /// Decodes and checks a base64 bundle.
    pub fn decode(b64: &str) -> Result<Self, BundleError> {
        let b64 = b64.trim();
        if b64.is_empty() {
            return Err(BundleError::Missing);
        }
        if b64.len() > MAX_BUNDLE_BYTES {
            return Err(BundleError::TooLarge);
        }
        let bundle: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64)?)?;
        bundle.host()?;
        if !bundle.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(BundleError::Ca);
        }
        Ok(bundle)
    }

    /// The host part of the Console address: the name its certificate must carry.
    pub fn host(&self) -> Result<&str, BundleError> {
        let bad = || BundleError::Address(self.console_addr.clone());
        let (host, port) = self.console_addr.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        Ok(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        STANDARD.encode(json)
    }

    #[test]
    fn decodes_a_good_bundle_and_redacts_the_token() {
        let b = InstallBundle::decode(&encode(
            r#"{"console_addr":"console:8084","ca_pem":"-----BEGIN CERTIFICATE-----\nx\n","token":"dfe_secret"}"#,
        ))
        .unwrap();
        assert_eq!(b.host().unwrap(), "console");
        assert!(!format!("{b:?}").contains("dfe_secret"));
    }

    #[test]
    fn bad_bundles_say_why() {
        assert!(matches!(
            InstallBundle::decode(""),
            Err(BundleError::Missing)
        ));
        assert!(matches!(
            InstallBundle::decode("%%%"),
            Err(BundleError::Base64(_))
        ));
        assert!(matches!(
            InstallBundle::decode(&encode("[]")),
            Err(BundleError::Json(_))
        ));
        let no_port =
            r#"{"console_addr":"console","ca_pem":"-----BEGIN CERTIFICATE-----","token":"t"}"#;
        assert!(matches!(
            InstallBundle::decode(&encode(no_port)),
            Err(BundleError::Address(_))
        ));
        let no_ca = r#"{"console_addr":"c:1","ca_pem":"nope","token":"t"}"#;
        assert!(matches!(
            InstallBundle::decode(&encode(no_ca)),
            Err(BundleError::Ca)
        ));
    }
}
