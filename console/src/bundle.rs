//! The install bundle: everything a Defender needs to find and trust the Console and enroll,
//! as base64 JSON so it fits one environment variable or secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Contents of `INSTALL_BUNDLE` (the Defender decodes the same JSON shape).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstallBundle {
    /// `host:port` of the Console's gRPC listener; host must be one of the server certificate's SANs.
    pub console_addr: String,
    /// PEM of the Console CA.
    pub ca_pem: String,
    /// Enrollment token (a secret).
    pub token: String,
}

impl InstallBundle {
    /// The base64 form operators paste into task definitions.
    pub fn encode(&self) -> String {
        // Serializing plain strings to JSON cannot fail.
        STANDARD.encode(serde_json::to_vec(self).unwrap_or_default())
    }
}
