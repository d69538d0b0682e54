//! The Console's private CA: created once in the data directory, it signs the gRPC server
//! certificate and every Defender's short-lived client certificate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// URI SAN prefix that names a Defender in its client certificate.
pub const DEFENDER_URI_PREFIX: &str = "urn:defender:";

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("reading or writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate material in {path} is unusable: {source}")]
    BadMaterial { path: PathBuf, source: rcgen::Error },
    #[error("invalid certificate signing request: {0}")]
    BadCsr(rcgen::Error),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("invalid subject alternative name {0:?}")]
    BadSan(String),
}

/// The CA key and certificate, loaded from (or first written to) the data directory.
pub struct CertAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A PEM certificate with its PEM private key, ready for a TLS server.
pub struct ServerIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A client certificate issued to a Defender.
pub struct IssuedCert {
    pub cert_pem: String,
    pub not_after_ms: i64,
    /// Hex SHA-256 of the certified public key (the CSR's), to tie the key to one Defender.
    pub key_sha256: String,
}

impl CertAuthority {
    /// Loads `ca.pem`/`ca-key.pem` from `dir`, creating them on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, PkiError> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        if cert_path.exists() && key_path.exists() {
            let cert_pem = read(&cert_path)?;
            let key_pem = read(&key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|source| PkiError::BadMaterial {
                path: key_path.clone(),
                source,
            })?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|source| {
                PkiError::BadMaterial {
                    path: cert_path.clone(),
                    source,
                }
            })?;
            return Ok(Self { cert_pem, issuer });
        }
        let (cert_pem, key_pem) = Self::generate()?;
        write_private(&key_path, &key_pem)?;
        write_public(&cert_path, &cert_pem)?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// A new CA: `(certificate PEM, private key PEM)`, valid ten years, allowed to sign end
    /// certificates only (path length 0).
    pub fn generate() -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("Defender Console CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA of `cert_pem` and `key_pem` (as [`CertAuthority::generate`] makes them; kept in
    /// the database when Console replicas share PostgreSQL).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let origin = || PathBuf::from("(database: console_pki)");
        let key = KeyPair::from_pem(key_pem).map_err(|source| PkiError::BadMaterial {
            path: origin(),
            source,
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|source| PkiError::BadMaterial {
                path: origin(),
                source,
            })?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// PEM of the CA certificate (goes into install bundles and trust stores).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a fresh server certificate for the gRPC listener, valid for the given SANs.
    pub fn server_identity(&self, sans: &[String]) -> Result<ServerIdentity, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("Defender Console");
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| PkiError::BadSan(s.clone())),
            })
            .collect::<Result<_, _>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerIdentity {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a Defender's CSR. Only the CSR's public key is used: subject, SANs and usages
    /// are the Console's, so a Defender cannot name itself.
    pub fn issue_client(
        &self,
        csr_pem: &str,
        defender_id: &str,
        validity: Duration,
    ) -> Result<IssuedCert, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(defender_id);
        let uri = format!("{DEFENDER_URI_PREFIX}{defender_id}");
        params.subject_alt_names = vec![SanType::URI(
            uri.clone().try_into().map_err(|_| PkiError::BadSan(uri))?,
        )];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        let not_after = now + validity;
        params.not_after = not_after;
        let cert = params.signed_by(&csr.public_key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            not_after_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
            key_sha256: key_sha256(&csr.public_key),
        })
    }
}

/// Hex SHA-256 of a public key's DER SubjectPublicKeyInfo.
fn key_sha256(key: &impl rcgen::PublicKeyData) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts the Defender id from a verified client certificate (DER), by its URI SAN.
pub fn defender_id_from_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => u
            .strip_prefix(DEFENDER_URI_PREFIX)
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
        _ => None,
    })
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Fargate Defender");
    dn.push(DnType::CommonName, cn);
    dn
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_with_mode(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
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
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

/// Writes a secret file readable by the owner only, atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o600)
}

/// Writes `contents` to `path` readable by everyone (0644): certificates, never keys.
pub fn write_public(path: &Path, contents: &str) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_issued_cert_names_the_defender() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        let again = CertAuthority::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());

        let key = KeyPair::generate().unwrap();
        let mut req = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        req.distinguished_name = name("someone-else");
        let csr = req.serialize_request(&key).unwrap().pem().unwrap();
        let issued = again
            .issue_client(&csr, "d-123", Duration::from_secs(3600))
            .unwrap();
        let der = x509_der(&issued.cert_pem);
        assert_eq!(defender_id_from_cert(&der).as_deref(), Some("d-123"));
        assert!(issued.not_after_ms > 0);
    }

    #[test]
    fn garbage_csr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::load_or_create(dir.path()).unwrap();
        assert!(matches!(
            ca.issue_client("not a csr", "d-1", Duration::from_secs(60)),
            Err(PkiError::BadCsr(_))
        ));
    }

    fn x509_der(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }
}
