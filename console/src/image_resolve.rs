//! `--resolve-images`: reads each image's ENTRYPOINT and CMD (OCI image spec `config.Entrypoint`
//! / `config.Cmd`) for the containers whose task definition does not state them, so that
//! embedded mode can wrap them exactly as the image would have run.
//!
//! Two sources:
//! * a registry, over the OCI distribution API with the `oci-client` crate: anonymous, HTTP
//!   basic, or bearer tokens from the registry's token endpoint (Docker Hub, ECR, GHCR, ...);
//!   image indexes / manifest lists are followed to the task's `runtimePlatform` (linux/amd64 by
//!   default). Credentials: a user name and password (for Amazon ECR: `AWS` and the output of
//!   `aws ecr get-login-password`), or Docker's `config.json`. The Defender image's index is
//!   read too, to warn when it lacks the task's platform.
//! * the local Docker engine (`docker image inspect`), for CI pipelines that just built the
//!   image.
//!
//! The pure decisions (which images, which platform, how to wrap) are in `defender_taskdef`;
//! this module only does the I/O. Everything read from the network is bounded: the config blob
//! to [`MAX_CONFIG_BYTES`], every request to [`REQUEST_TIMEOUT`].

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use defender_taskdef::{ImageConfig, Platform, ResolutionPlan, ResolvedImages};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::manifest::{ImageIndexEntry, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;

/// Largest image config blob read (real ones are a few KiB; history can make them ~100 KiB).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Largest `docker image inspect` output read.
const MAX_INSPECT_BYTES: usize = 4 * 1024 * 1024;

/// Connect and read timeout of every registry request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Where image configs are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// The image's registry, over the OCI distribution API.
    Registry,
    /// The local Docker engine (`docker image inspect`).
    Docker,
}

impl FromStr for ImageSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "registry" | "true" | "" => Ok(Self::Registry),
            "docker" => Ok(Self::Docker),
            other => Err(format!(
                "image source {other:?} is neither \"registry\" nor \"docker\""
            )),
        }
    }
}

/// Credentials for registries.
#[derive(Clone, Default)]
pub struct RegistryCredentials {
    /// User name and password used for every registry (ECR: `AWS` and the login password).
    pub basic: Option<(String, String)>,
    /// Per-registry entries of Docker's `config.json` (`auths`), by registry host.
    pub docker_config: BTreeMap<String, (String, String)>,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("RegistryCredentials")
            .field("basic", &self.basic.as_ref().map(|(u, _)| u))
            .field("docker_config", &self.docker_config.keys())
            .finish()
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Credentials, if any (anonymous otherwise).
    pub credentials: RegistryCredentials,
    /// Registries (`host[:port]`) spoken to over plain HTTP (a local registry, a test stand-in).
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) to trust, for registries with a private CA.
    pub ca_pems: Vec<Vec<u8>>,
}

/// Why image configs could not be read; worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The image reference does not parse.
    #[error("--resolve-images: {image:?} is not an image reference ({reason})")]
    BadReference { image: String, reason: String },
    /// The registry refused or failed.
    #[error(
        "--resolve-images: cannot read the image config of {image} for {platform} from its registry: {reason}"
    )]
    Registry {
        image: String,
        platform: Platform,
        reason: String,
    },
    /// The local Docker engine could not inspect the image.
    #[error("--resolve-images=docker: cannot inspect {image}: {reason}")]
    Docker { image: String, reason: String },
    /// A credentials file could not be used.
    #[error("--registry-auth-file {path}: {reason}")]
    AuthFile { path: String, reason: String },
}

/// What resolving found: the configs for `protect`, and notes for the operator.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Hand to `ProtectOptions::resolved_images`.
    pub images: ResolvedImages,
    /// Notes (platform mismatches, a Defender image that could not be looked up).
    pub warnings: Vec<String>,
}

/// Reads Docker's `config.json` (`auths.<registry>.auth` = base64 `user:password`, or
/// `username`/`password`); registries served by a credential helper are reported as such.
pub fn read_docker_config(path: &Path) -> Result<BTreeMap<String, (String, String)>, ResolveError> {
    let bad = |reason: String| ResolveError::AuthFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        return Err(bad("larger than 1 MiB; is it Docker's config.json?".into()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let json: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let mut out = BTreeMap::new();
    if let Some(auths) = json.get("auths").and_then(Value::as_object) {
        for (registry, entry) in auths {
            let pair = if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| bad(format!("auths.{registry}.auth is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| bad(format!("auths.{registry}.auth is not UTF-8")))?;
                let Some((user, password)) = decoded.split_once(':') else {
                    return Err(bad(format!("auths.{registry}.auth is not user:password")));
                };
                (user.to_owned(), password.to_owned())
            } else if let (Some(u), Some(p)) = (
                entry.get("username").and_then(Value::as_str),
                entry.get("password").and_then(Value::as_str),
            ) {
                (u.to_owned(), p.to_owned())
            } else {
                continue;
            };
            out.insert(registry_host(registry), pair);
        }
    }
    if out.is_empty() {
        let helper = json
            .get("credsStore")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                json.get("credHelpers")
                    .and_then(Value::as_object)
                    .and_then(|h| h.values().next())
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        return Err(bad(match helper {
            Some(helper) => format!(
                "holds no passwords: they are kept by the credential helper docker-credential-{helper}; give the password in REGISTRY_PASSWORD (for ECR: `aws ecr get-login-password`) with --registry-username instead"
            ),
            None => "has no \"auths\" entries with credentials".into(),
        }));
    }
    Ok(out)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:5000` stays.
fn registry_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_ascii_lowercase()
}

impl RegistryCredentials {
    /// The credentials for `registry` (as `Reference::resolve_registry` names it).
    fn for_registry(&self, registry: &str) -> RegistryAuth {
        let registry = registry.to_ascii_lowercase();
        let docker_hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
        let found = self.docker_config.get(&registry).or_else(|| {
            docker_hub
                .contains(&registry.as_str())
                .then(|| docker_hub.iter().find_map(|h| self.docker_config.get(*h)))
                .flatten()
        });
        match found.or(self.basic.as_ref()) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// An `AsyncWrite` into memory that fails past a limit, so a registry cannot make us buffer
/// more than [`MAX_CONFIG_BYTES`].
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.buf.len() + data.len() > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the image config is larger than {} bytes",
                self.limit
            ))));
        }
        self.buf.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A registry client that picks `platform` from image indexes.
fn client(platform: &Platform, opts: &RegistryOptions) -> Client {
    let (os, arch) = (platform.os.clone(), platform.architecture.clone());
    let resolver = move |entries: &[ImageIndexEntry]| {
        entries
            .iter()
            .find(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| p.os.to_string() == os && p.architecture.to_string() == arch)
            })
            .map(|e| e.digest.clone())
    };
    Client::new(ClientConfig {
        protocol: if opts.insecure.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(opts.insecure.clone())
        },
        platform_resolver: Some(Box::new(resolver)),
        // Mozilla's roots beside the system's: the Console's image (FROM scratch) has no
        // system certificate store.
        extra_root_certificates: webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|cert| Certificate {
                encoding: CertificateEncoding::Der,
                data: cert.to_vec(),
            })
            .chain(opts.ca_pems.iter().map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            }))
            .collect(),
        connect_timeout: Some(REQUEST_TIMEOUT),
        read_timeout: Some(REQUEST_TIMEOUT),
        user_agent: concat!("defender-console/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    })
}

/// Reads `Entrypoint`/`Cmd` (and `os`/`architecture`) from an image config JSON.
fn parse_config(json: &[u8]) -> Result<(Vec<String>, Vec<String>, Platform), String> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| format!("the image config is not JSON: {e}"))?;
    let list = |key: &str| -> Result<Vec<String>, String> {
        match value.get("config").and_then(|c| c.get(key)) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("config.{key} holds a non-string"))
                })
                .collect(),
            Some(_) => Err(format!("config.{key} is not a list")),
        }
    };
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok((
        list("Entrypoint")?,
        list("Cmd")?,
        Platform {
            os: text("os"),
            architecture: text("architecture"),
        },
    ))
}

/// Reads one image's config from its registry for `platform`.
async fn registry_config(
    image: &str,
    platform: &Platform,
    opts: &RegistryOptions,
) -> Result<(ImageConfig, Platform), ResolveError> {
    let reference = Reference::from_str(image).map_err(|e| ResolveError::BadReference {
        image: image.to_owned(),
        reason: e.to_string(),
    })?;
    let failed = |reason: String| ResolveError::Registry {
        image: image.to_owned(),
        platform: platform.clone(),
        reason,
    };
    let client = client(platform, opts);
    let auth = opts.credentials.for_registry(reference.resolve_registry());
    let (manifest, digest) = client
        .pull_image_manifest(&reference, &auth)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if usize::try_from(manifest.config.size).is_ok_and(|s| s > MAX_CONFIG_BYTES) {
        return Err(failed(format!(
            "its config is {} bytes, more than the {MAX_CONFIG_BYTES}-byte limit",
            manifest.config.size
        )));
    }
    let mut out = Bounded {
        buf: Vec::new(),
        limit: MAX_CONFIG_BYTES,
    };
    client
        .pull_blob(&reference, &manifest.config, &mut out)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let (entrypoint, cmd, found) = parse_config(&out.buf).map_err(failed)?;
    Ok((
        ImageConfig {
            entrypoint,
            cmd,
            source: format!("registry {}, {digest}", reference.resolve_registry()),
        },
        found,
    ))
}

/// The platforms an image is published for: an index's entries, or a single image's own.
async fn registry_platforms(image: &str, opts: &RegistryOptions) -> Result<Vec<Platform>, String> {
    let reference = Reference::from_str(image).map_err(|e| e.to_string())?;
    let any = Platform {
        os: "linux".into(),
        architecture: "amd64".into(),
    };
    let client = client(&any, opts);
    let auth = opts.credentials.for_registry(reference.resolve_registry());
    let (manifest, _) = client
        .pull_manifest(&reference, &auth)
        .await
        .map_err(|e| e.to_string())?;
    match manifest {
        OciManifest::ImageIndex(index) => Ok(index
            .manifests
            .iter()
            .filter_map(|e| e.platform.as_ref())
            .map(|p| Platform {
                os: p.os.to_string(),
                architecture: p.architecture.to_string(),
            })
            .collect()),
        OciManifest::Image(manifest) => {
            let mut out = Bounded {
                buf: Vec::new(),
                limit: MAX_CONFIG_BYTES,
            };
            client
                .pull_blob(&reference, &manifest.config, &mut out)
                .await
                .map_err(|e| e.to_string())?;
            let (_, _, platform) = parse_config(&out.buf)?;
            Ok(vec![platform])
        }
    }
}

/// Reads one image's config from the local Docker engine.
async fn docker_config(image: &str) -> Result<(ImageConfig, Platform), ResolveError> {
    let failed = |reason: String| ResolveError::Docker {
        image: image.to_owned(),
        reason,
    };
    if image.starts_with('-') {
        return Err(failed("an image reference cannot start with '-'".into()));
    }
    let output = tokio::time::timeout(
        REQUEST_TIMEOUT,
        tokio::process::Command::new("docker")
            .args(["image", "inspect", "--", image])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| failed("docker did not answer in time".into()))?
    .map_err(|e| failed(format!("cannot run docker: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr
            .lines()
            .next()
            .unwrap_or("docker image inspect failed");
        return Err(failed(format!(
            "{first} (build or pull it first, or use --resolve-images=registry)"
        )));
    }
    if output.stdout.len() > MAX_INSPECT_BYTES {
        return Err(failed("docker image inspect printed too much".into()));
    }
    let inspected: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| failed(format!("unexpected docker output: {e}")))?;
    let first = inspected
        .get(0)
        .ok_or_else(|| failed("docker image inspect returned nothing".into()))?;
    // `docker image inspect` shows the image config with `Config` capitalised.
    let shaped = serde_json::json!({
        "os": first.get("Os"),
        "architecture": first.get("Architecture"),
        "config": first.get("Config"),
    });
    let (entrypoint, cmd, platform) =
        parse_config(shaped.to_string().as_bytes()).map_err(failed)?;
    let id = first
        .get("Id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((
        ImageConfig {
            entrypoint,
            cmd,
            source: format!("local Docker engine, {id}"),
        },
        platform,
    ))
}

/// Reads every image `plan` names from `source`; with a registry, also the Defender image's
/// platforms (a failure there is only a warning: the Console may not reach that registry).
pub async fn resolve(
    plan: &ResolutionPlan,
    source: ImageSource,
    defender_image: &str,
    opts: &RegistryOptions,
) -> Result<Resolution, ResolveError> {
    let mut resolution = Resolution::default();
    for image in &plan.images {
        let (config, found) = match source {
            ImageSource::Registry => registry_config(image, &plan.platform, opts).await?,
            ImageSource::Docker => docker_config(image).await?,
        };
        if !found.architecture.is_empty() && found != plan.platform {
            resolution.warnings.push(format!(
                "the image {image} ({}) is built for {found}, but the task runs on {} (runtimePlatform): it will not start there",
                config.source, plan.platform
            ));
        }
        resolution.images.configs.insert(image.clone(), config);
    }
    if source == ImageSource::Registry {
        match registry_platforms(defender_image, opts).await {
            Ok(platforms) => resolution.images.defender_platforms = Some(platforms),
            Err(reason) => resolution.warnings.push(format!(
                "could not look up which platforms the Defender image {defender_image} is published for ({reason}); make sure it has {}",
                plan.platform
            )),
        }
    }
    Ok(resolution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_fields_are_read_as_the_image_spec_names_them() {
        let (ep, cmd, p) = parse_config(
            br#"{"architecture":"arm64","os":"linux","config":{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"]}}"#,
        )
        .unwrap();
        assert_eq!(ep, ["/docker-entrypoint.sh"]);
        assert_eq!(cmd, ["nginx", "-g", "daemon off;"]);
        assert_eq!(p.to_string(), "linux/arm64");
        let (ep, cmd, _) =
            parse_config(br#"{"config":{"Entrypoint":null,"Cmd":["/bin/sh"]}}"#).unwrap();
        assert!(ep.is_empty());
        assert_eq!(cmd, ["/bin/sh"]);
        assert!(parse_config(br#"{"config":{"Cmd":"sh"}}"#).is_err());
    }

    #[tokio::test]
    async fn the_config_buffer_is_bounded() {
        use tokio::io::AsyncWriteExt as _;
        let mut out = Bounded {
            buf: Vec::new(),
            limit: 8,
        };
        out.write_all(b"12345678").await.unwrap();
        assert!(out.write_all(b"9").await.is_err());
        assert_eq!(out.buf.len(), 8);
    }

    #[test]
    fn docker_config_files_are_read_or_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("defender-dockercfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dTpw"}, "ghcr.io": {"username": "me", "password": "tok"}}}"#,
        )
        .unwrap();
        let auths = read_docker_config(&path).unwrap();
        assert_eq!(auths["index.docker.io"], ("u".to_owned(), "p".to_owned()));
        assert_eq!(auths["ghcr.io"], ("me".to_owned(), "tok".to_owned()));
        std::fs::write(&path, r#"{"auths": {}, "credsStore": "ecr-login"}"#).unwrap();
        let err = read_docker_config(&path).unwrap_err().to_string();
        assert!(
            err.contains("docker-credential-ecr-login") && err.contains("REGISTRY_PASSWORD"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn docker_config_entries_match_registry_hosts() {
        assert_eq!(
            registry_host("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(
            registry_host("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
        let creds = RegistryCredentials {
            basic: None,
            docker_config: BTreeMap::from([(
                "index.docker.io".to_owned(),
                ("u".to_owned(), "p".to_owned()),
            )]),
        };
        assert!(matches!(creds.for_registry("docker.io"), RegistryAuth::Basic(u, _) if u == "u"));
        assert!(matches!(
            creds.for_registry("ghcr.io"),
            RegistryAuth::Anonymous
        ));
        assert!(!format!("{creds:?}").contains("\"p\""));
    }
}
