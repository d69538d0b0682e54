//! The Defender's identity: a key pair made here (the private key never leaves the data dir)
//! and the client certificate the Console issued for it. Enrolls when there is none, or when
//! it expired or belongs to another Console.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use defender_proto::v1::{EnrollRequest, Mode, TaskMetadata, enrollment_client::EnrollmentClient};
use rcgen::{CertificateParams, KeyPair};
use serde::{Deserialize, Serialize};

use crate::bundle::InstallBundle;
use crate::transport::{self, TransportError};

/// Re-enroll when the certificate has less than this left (ms).
const RENEW_MARGIN_MS: i64 = 60_000;

/// Credentials for the mTLS stream.
#[derive(Clone)]
pub struct Identity {
    pub defender_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after_ms: i64,
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

/// Loads the stored identity if it is still usable with this bundle.
pub fn load(dir: &Path, bundle: &InstallBundle, now_ms: i64) -> Option<Identity> {
    let meta: IdentityFile =
        serde_json::from_slice(&fs::read(dir.join("identity.json")).ok()?).ok()?;
    if meta.console_addr != bundle.console_addr
        || meta.ca_pem.trim() != bundle.ca_pem.trim()
        || meta.not_after_ms - RENEW_MARGIN_MS <= now_ms
    {
        return None;
    }
    Some(Identity {
        defender_id: meta.defender_id,
        cert_pem: fs::read_to_string(dir.join("cert.pem")).ok()?,
        key_pem: fs::read_to_string(dir.join("key.pem")).ok()?,
        not_after_ms: meta.not_after_ms,
    })
}

/// Forgets the stored identity, so the next start enrolls again.
pub fn forget(dir: &Path) {
    let _ = fs::remove_file(dir.join("identity.json"));
}

/// Enrolls with the Console and stores the result in `dir`.
pub async fn enroll(
    dir: &Path,
    bundle: &InstallBundle,
    metadata: TaskMetadata,
    mode: Mode,
) -> Result<Identity, IdentityError> {
    let key = KeyPair::generate()?;
    let csr = CertificateParams::default()
        .serialize_request(&key)?
        .pem()?;
    let channel = transport::channel(bundle, None).await?;
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
    write(&dir.join("key.pem"), id.key_pem.as_bytes(), 0o600)?;
    write(&dir.join("cert.pem"), id.cert_pem.as_bytes(), 0o644)?;
    let meta = IdentityFile {
        defender_id: id.defender_id.clone(),
        console_addr: bundle.console_addr.clone(),
        ca_pem: bundle.ca_pem.clone(),
        not_after_ms: id.not_after_ms,
    };
    // identity.json is written last: its presence means the other two files are complete.
    write(
        &dir.join("identity.json"),
        &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
        0o644,
    )
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
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}
