//! The Defender's identity: a key pair made here (the private key never leaves the data dir)
//! and the client certificate the Console issued for it. Enrolls when there is none, or when
//! it expired or belongs to another Console; renews it over the existing identity
//! (`DefenderService.Renew`, same Defender id, new key) once [`RENEW_AT_FRACTION`] of the
//! certificate's life has passed, so a long-running task keeps one id and the enrollment
//! token may expire.
//!
//! Storage: `identity.json` (mode 0600) holds the id, the key, the certificate and its times
//! in one file, replaced atomically (write to a temporary file, fsync, rename): a crash during
//! a renewal leaves either the old identity or the new one, never a key with the other's
//! certificate. Identities stored by older versions (`key.pem` and `cert.pem` beside it) are
//! still read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use defender_proto::v1::{
    EnrollRequest, Mode, RenewRequest, TaskMetadata,
    defender_service_client::DefenderServiceClient, enrollment_client::EnrollmentClient,
};
use rcgen::{CertificateParams, KeyPair};
use serde::{Deserialize, Serialize};

use crate::bundle::InstallBundle;
use crate::transport::{self, TransportError};

/// Re-enroll when the certificate has less than this left (ms): too late to renew.
const RENEW_MARGIN_MS: i64 = 60_000;

/// Renew once this fraction of the certificate's life (issue to expiry) has passed.
pub const RENEW_AT_FRACTION: f64 = 2.0 / 3.0;

/// Credentials for the mTLS stream.
#[derive(Clone)]
pub struct Identity {
    pub defender_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after_ms: i64,
    /// When the certificate was obtained (unix ms, this host's clock).
    pub issued_at_ms: i64,
}

impl Identity {
    /// When to renew: [`RENEW_AT_FRACTION`] of the way from issue to expiry (unix ms).
    pub fn renew_at_ms(&self) -> i64 {
        let life = (self.not_after_ms - self.issued_at_ms).max(0);
        self.issued_at_ms + (life as f64 * RENEW_AT_FRACTION) as i64
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("defender_id", &self.defender_id)
            .field("not_after_ms", &self.not_after_ms)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    defender_id: String,
    console_addr: String,
    ca_pem: String,
    not_after_ms: i64,
    /// Absent in files of older versions (then: the time of loading).
    #[serde(default)]
    issued_at_ms: Option<i64>,
    /// Absent in files of older versions (then in `key.pem` / `cert.pem`).
    #[serde(default)]
    key_pem: Option<String>,
    #[serde(default)]
    cert_pem: Option<String>,
}

/// Why the Defender could not obtain an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("data directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("making a key pair: {0}")]
    Key(#[from] rcgen::Error),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the Console refused enrollment: {0}")]
    Refused(String),
    #[error("enrollment failed: {0}")]
    Rpc(String),
}

impl IdentityError {
    /// Whether retrying later can help (the Console may come back; a refused token will not).
    pub fn is_permanent(&self) -> bool {
        matches!(self, IdentityError::Refused(_))
    }
}

/// Loads the stored identity if it is still usable with this bundle: same CA, and enrolled
/// through one of the bundle's Console addresses (replicas behind several addresses share
/// one identity).
pub fn load(dir: &Path, bundle: &InstallBundle, now_ms: i64) -> Option<Identity> {
    let meta: IdentityFile =
        serde_json::from_slice(&fs::read(dir.join("identity.json")).ok()?).ok()?;
    let issued_at_ms = meta.issued_at_ms.unwrap_or(now_ms).min(meta.not_after_ms);
    if !bundle.addrs().contains(&meta.console_addr)
        || meta.ca_pem.trim() != bundle.ca_pem.trim()
        || !still_usable(meta.not_after_ms, issued_at_ms, now_ms)
    {
        return None;
    }
    let cert_pem = match meta.cert_pem {
        Some(c) => c,
        None => fs::read_to_string(dir.join("cert.pem")).ok()?,
    };
    let key_pem = match meta.key_pem {
        Some(k) => k,
        None => fs::read_to_string(dir.join("key.pem")).ok()?,
    };
    Some(Identity {
        defender_id: meta.defender_id,
        cert_pem,
        key_pem,
        not_after_ms: meta.not_after_ms,
        issued_at_ms,
    })
}

/// Whether a certificate is far enough from expiry to connect with (and to renew over): at
/// least [`RENEW_MARGIN_MS`] left, or a tenth of its life when it is shorter.
fn still_usable(not_after_ms: i64, issued_at_ms: i64, now_ms: i64) -> bool {
    let margin = RENEW_MARGIN_MS.min((not_after_ms - issued_at_ms).max(0) / 10);
    not_after_ms - margin > now_ms
}

impl Identity {
    /// Whether this identity can still be used at `now_ms` (see [`load`]).
    pub fn usable_at(&self, now_ms: i64) -> bool {
        still_usable(self.not_after_ms, self.issued_at_ms, now_ms)
    }
}

/// Renews `current` over mTLS (`DefenderService.Renew`): a new key, a new certificate for
/// the same Defender id, stored atomically in `dir` before it is returned. On error the stored
/// identity is unchanged. Talks to the bundle's first address; see [`renew_at`].
pub async fn renew(
    dir: &Path,
    bundle: &InstallBundle,
    current: &Identity,
) -> Result<Identity, IdentityError> {
    renew_at(dir, bundle, &bundle.console_addr, current).await
}

/// [`renew`] with the Console at `addr` (one of the bundle's addresses).
pub async fn renew_at(
    dir: &Path,
    bundle: &InstallBundle,
    addr: &str,
    current: &Identity,
) -> Result<Identity, IdentityError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let channel = transport::channel_to(bundle, addr, Some(current)).await?;
    let resp = DefenderServiceClient::new(channel)
        .renew(RenewRequest { csr_pem: csr })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                IdentityError::Refused(s.message().to_owned())
            }
            _ => IdentityError::Rpc(transport::describe_status(&s)),
        })?
        .into_inner();
    if resp.defender_id != current.defender_id {
        return Err(IdentityError::Rpc(format!(
            "the Console renewed a certificate for another Defender ({})",
            resp.defender_id
        )));
    }
    let identity = Identity {
        defender_id: resp.defender_id,
        cert_pem: resp.certificate_pem,
        key_pem: key.serialize_pem(),
        not_after_ms: resp.not_after_ms,
        issued_at_ms: crate::unix_ms(),
    };
    save(dir, bundle, &identity)?;
    Ok(identity)
}

/// Forgets the stored identity, so the next start enrolls again.
pub fn forget(dir: &Path) {
    let _ = fs::remove_file(dir.join("identity.json"));
}

/// Enrolls with the Console at the bundle's first address and stores the result in `dir`;
/// see [`enroll_at`].
pub async fn enroll(
    dir: &Path,
    bundle: &InstallBundle,
    metadata: TaskMetadata,
    mode: Mode,
) -> Result<Identity, IdentityError> {
    enroll_at(dir, bundle, &bundle.console_addr, metadata, mode).await
}

/// Enrolls with the Console at `addr` (one of the bundle's addresses) and stores the result
/// in `dir`.
pub async fn enroll_at(
    dir: &Path,
    bundle: &InstallBundle,
    addr: &str,
    metadata: TaskMetadata,
    mode: Mode,
) -> Result<Identity, IdentityError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let channel = transport::channel_to(bundle, addr, None).await?;
    let resp = EnrollmentClient::new(channel)
        .enroll(EnrollRequest {
            token: bundle.token.clone(),
            csr_pem: csr,
            metadata: Some(metadata),
            agent_version: crate::VERSION.to_owned(),
            mode: mode as i32,
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unauthenticated
            | tonic::Code::PermissionDenied
            | tonic::Code::InvalidArgument => IdentityError::Refused(s.message().to_owned()),
            _ => IdentityError::Rpc(transport::describe_status(&s)),
        })?
        .into_inner();
    let identity = Identity {
        defender_id: resp.defender_id,
        cert_pem: resp.certificate_pem,
        key_pem: key.serialize_pem(),
        not_after_ms: resp.not_after_ms,
        issued_at_ms: crate::unix_ms(),
    };
    save(dir, bundle, &identity)?;
    Ok(identity)
}

fn save(dir: &Path, bundle: &InstallBundle, id: &Identity) -> Result<(), IdentityError> {
    fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
        path: dir.to_owned(),
        source,
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        // The key file is 0600 in any case; the directory too where we own it.
        if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), "could not make the identity directory 0700: {e}");
        }
    }
    let meta = IdentityFile {
        defender_id: id.defender_id.clone(),
        console_addr: bundle.console_addr.clone(),
        ca_pem: bundle.ca_pem.clone(),
        not_after_ms: id.not_after_ms,
        issued_at_ms: Some(id.issued_at_ms),
        key_pem: Some(id.key_pem.clone()),
        cert_pem: Some(id.cert_pem.clone()),
    };
    // One file holds key and certificate, replaced in one rename: never a torn pair.
    write(
        &dir.join("identity.json"),
        &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
        0o600,
    )?;
    // Files of older versions would only confuse a reader now.
    let _ = fs::remove_file(dir.join("key.pem"));
    let _ = fs::remove_file(dir.join("cert.pem"));
    Ok(())
}

fn write(path: &Path, data: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // A leftover temporary file keeps its old mode through `open`: set it.
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    // Make the rename itself durable (best effort: not every file system can sync a directory).
    if let Some(parent) = path.parent() {
        let _ = fs::File::open(parent).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> InstallBundle {
        InstallBundle {
            console_addr: "127.0.0.1:1".into(),
            console_addrs: vec![],
            ca_pem: "-----BEGIN CERTIFICATE-----\nCA\n".into(),
            token: "dfe_t".into(),
        }
    }

    fn identity(issued: i64, not_after: i64) -> Identity {
        Identity {
            defender_id: "d-1".into(),
            cert_pem: "CERT".into(),
            key_pem: "KEY".into(),
            not_after_ms: not_after,
            issued_at_ms: issued,
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_life() {
        let id = identity(1_000, 7_000);
        assert_eq!(id.renew_at_ms(), 5_000);
        // Usable until a tenth of the life (or a minute) before expiry.
        assert!(id.usable_at(6_300));
        assert!(!id.usable_at(6_500));
    }

    #[test]
    fn saved_identity_is_one_private_file_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let now = crate::unix_ms();
        let id = identity(now, now + 3_600_000);
        save(dir.path(), &bundle(), &id).unwrap();
        let file = dir.path().join("identity.json");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.path().join("key.pem").exists());
        let back = load(dir.path(), &bundle(), now).unwrap();
        assert_eq!(
            (back.key_pem.as_str(), back.cert_pem.as_str()),
            ("KEY", "CERT")
        );
        assert_eq!(back.issued_at_ms, now);
        // Another Console's bundle: not this identity.
        let mut other = bundle();
        other.console_addr = "127.0.0.1:2".into();
        assert!(load(dir.path(), &other, now).is_none());
        // The same Console among several replicas' addresses: still this identity.
        other.console_addrs = vec!["127.0.0.1:2".into(), "127.0.0.1:1".into()];
        assert!(load(dir.path(), &other, now).is_some());
    }

    #[test]
    fn identities_stored_by_older_versions_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::unix_ms();
        fs::write(dir.path().join("key.pem"), "OLDKEY").unwrap();
        fs::write(dir.path().join("cert.pem"), "OLDCERT").unwrap();
        let b = bundle();
        let meta = serde_json::json!({
            "defender_id": "d-old", "console_addr": b.console_addr, "ca_pem": b.ca_pem,
            "not_after_ms": now + 3_600_000,
        });
        fs::write(dir.path().join("identity.json"), meta.to_string()).unwrap();
        let id = load(dir.path(), &b, now).unwrap();
        assert_eq!(
            (id.defender_id.as_str(), id.key_pem.as_str()),
            ("d-old", "OLDKEY")
        );
        assert!(id.renew_at_ms() > now);
    }
}
