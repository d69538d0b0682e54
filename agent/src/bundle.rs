//! Decodes the install bundle (`INSTALL_BUNDLE`): Console address(es), CA and enrollment token.
//!
//! A bundle names one Console address (`console_addr`) or, for several Console replicas,
//! also the whole list (`console_addrs`, whose first entry is `console_addr`, so that
//! Defenders that only know `console_addr` still connect). The link picks one of them at
//! random and fails over to the next ([`crate::console_addrs`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// Largest bundle accepted, in bytes of base64.
const MAX_BUNDLE_BYTES: usize = 64 * 1024;

/// Most Console addresses one bundle may name (the Console's `bundle` command has the same
/// bound).
pub const MAX_CONSOLE_ADDRS: usize = 16;

/// What the Console's `bundle` command produced.
#[derive(Clone, Deserialize)]
pub struct InstallBundle {
    /// `host:port` of the Console's gRPC listener (the first of [`Self::console_addrs`]).
    pub console_addr: String,
    /// Every `host:port` Defenders may connect to (Console replicas), at most
    /// [`MAX_CONSOLE_ADDRS`]. Absent in single-address bundles: [`InstallBundle::decode`] then
    /// fills it with `console_addr`, so it is never empty after decoding.
    #[serde(default)]
    pub console_addrs: Vec<String>,
    /// PEM of the Console CA, the only root this Defender trusts.
    pub ca_pem: String,
    /// Enrollment token (a secret: never logged).
    pub token: String,
}

impl std::fmt::Debug for InstallBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallBundle")
            .field("console_addrs", &self.console_addrs)
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
    #[error("install bundle names {0} Console addresses; at most {MAX_CONSOLE_ADDRS} are accepted")]
    TooManyAddresses(usize),
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
        let mut bundle: InstallBundle = serde_json::from_slice(&STANDARD.decode(b64)?)?;
        if bundle.console_addrs.is_empty() {
            bundle.console_addrs = vec![bundle.console_addr.clone()];
        }
        if bundle.console_addrs.len() > MAX_CONSOLE_ADDRS {
            return Err(BundleError::TooManyAddresses(bundle.console_addrs.len()));
        }
        host_of(&bundle.console_addr)?;
        for addr in &bundle.console_addrs {
            host_of(addr)?;
        }
        if !bundle.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(BundleError::Ca);
        }
        Ok(bundle)
    }

    /// The host part of the (first) Console address: the name its certificate must carry.
    pub fn host(&self) -> Result<&str, BundleError> {
        host_of(&self.console_addr)
    }

    /// Every Console address of the bundle (never empty once decoded).
    pub fn addrs(&self) -> &[String] {
        if self.console_addrs.is_empty() {
            std::slice::from_ref(&self.console_addr)
        } else {
            &self.console_addrs
        }
    }
}

/// The host part of a `host:port` Console address (IPv6 hosts in brackets): the name the
/// Console's server certificate must carry.
pub fn host_of(addr: &str) -> Result<&str, BundleError> {
    let bad = || BundleError::Address(addr.to_owned());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains([',', '/', ' ', '@']) {
        return Err(bad());
    }
    Ok(host)
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
        assert_eq!(b.addrs(), ["console:8084"]);
        assert!(!format!("{b:?}").contains("dfe_secret"));
    }

    #[test]
    fn decodes_several_addresses_and_checks_each() {
        let b = InstallBundle::decode(&encode(
            r#"{"console_addr":"a:8084","console_addrs":["a:8084","[::1]:9"],"ca_pem":"-----BEGIN CERTIFICATE-----\nx\n","token":"t"}"#,
        ))
        .unwrap();
        assert_eq!(b.addrs(), ["a:8084", "[::1]:9"]);
        let bad = r#"{"console_addr":"a:1","console_addrs":["a:1","b"],"ca_pem":"-----BEGIN CERTIFICATE-----","token":"t"}"#;
        match InstallBundle::decode(&encode(bad)) {
            Err(BundleError::Address(a)) => assert_eq!(a, "b"),
            other => panic!("{other:?}"),
        }
        let many: Vec<String> = (1..=17).map(|p| format!("\"h:{p}\"")).collect();
        let too_many = format!(
            r#"{{"console_addr":"h:1","console_addrs":[{}],"ca_pem":"-----BEGIN CERTIFICATE-----","token":"t"}}"#,
            many.join(",")
        );
        assert!(matches!(
            InstallBundle::decode(&encode(&too_many)),
            Err(BundleError::TooManyAddresses(17))
        ));
        // A list squeezed into the single-address field is refused, not half-parsed.
        let squeezed =
            r#"{"console_addr":"a:1,b:1","ca_pem":"-----BEGIN CERTIFICATE-----","token":"t"}"#;
        assert!(matches!(
            InstallBundle::decode(&encode(squeezed)),
            Err(BundleError::Address(_))
        ));
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
