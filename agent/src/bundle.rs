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
    #[error("no install bundle: set INSTALL_BUNDLE or pass --install-bundle-file FILE")]
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

/// Reads an install bundle file (at most 64 KiB, like the bundle itself). Files (Docker and
/// Kubernetes secrets, `defender-console bundle -o FILE`) and the `INSTALL_BUNDLE` variable
/// keep the token out of `/proc/*/cmdline`, which every local user can read.
pub fn read_file(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(MAX_BUNDLE_BYTES as u64 + 2)
        .read_to_string(&mut s)?;
    Ok(s)
}

/// The bundle from `--install-bundle`/`INSTALL_BUNDLE` if given, else from the file, else
/// empty (which [`InstallBundle::decode`] reports as [`BundleError::Missing`]).
pub fn from_value_or_file(
    value: Option<&str>,
    file: Option<&std::path::Path>,
) -> std::io::Result<String> {
    match (value, file) {
        (Some(v), _) => Ok(v.to_owned()),
        (None, Some(path)) => read_file(path),
        (None, None) => Ok(String::new()),
    }
}

/// Whether the process's own command line carries the bundle (`--install-bundle B64` or
/// `--install-bundle=B64`): then the enrollment token is readable by every local user in
/// `/proc/<pid>/cmdline`.
pub fn in_argv<I: IntoIterator<Item = std::ffi::OsString>>(args: I) -> bool {
    args.into_iter().any(|a| {
        let a = a.to_string_lossy();
        a == "--install-bundle" || a.starts_with("--install-bundle=")
    })
}

/// Logs a warning when [`in_argv`] holds for this process.
pub fn warn_if_in_argv() {
    if in_argv(std::env::args_os()) {
        tracing::warn!(
            "--install-bundle puts the enrollment token in this process's command line, which every \
             local user can read (/proc/*/cmdline); set INSTALL_BUNDLE or use --install-bundle-file instead"
        );
    }
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

    #[test]
    fn bundle_in_argv_is_noticed_but_the_file_flag_is_not() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(in_argv(args(&[
            "defender",
            "run",
            "--install-bundle",
            "x",
            "--",
            "app"
        ])));
        assert!(in_argv(args(&["defender", "run", "--install-bundle=x"])));
        assert!(!in_argv(args(&[
            "defender",
            "run",
            "--install-bundle-file",
            "/b"
        ])));
        assert!(!in_argv(args(&["defender", "run", "--", "app"])));
    }
}
