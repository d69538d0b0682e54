//! A registry stand-in for tests: the OCI distribution API over HTTP on 127.0.0.1:0 with real
//! manifest, manifest list, OCI index and image config shapes, and a bearer token endpoint
//! (Docker's token authentication) that issues anonymous tokens for the public `library/*` and
//! `defender/*` repositories and wants basic credentials for the rest.
//!
//! Images: `library/nginx:1.27` (Docker manifest list, amd64 + arm64 with distinct CMDs),
//! `private/api:2` (OCI index, amd64 only, no ENTRYPOINT), `defender/defender:1` (a single
//! amd64 OCI manifest).
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

pub const WRAPPER: [&str; 4] = ["/var/lib/defender/defender", "fargate", "entrypoint", "--"];
pub const USER: &str = "AWS";
pub const PASSWORD: &str = "s3cret-login-password";

/// Media types as registries send them.
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

fn sha256(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[derive(Default)]
pub struct Registry {
    /// (repository, tag or digest) -> (media type, body).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// digest -> body.
    blobs: HashMap<String, Vec<u8>>,
    /// Requests seen, for assertions: "token <repo> <auth kind>", "manifest <repo> <ref>", ...
    pub log: Vec<String>,
}

pub type Shared = Arc<Mutex<Registry>>;

impl Registry {
    /// Adds an image config blob and a single-platform manifest for it; returns the
    /// manifest's digest and size.
    fn add_image(
        &mut self,
        repo: &str,
        oci: bool,
        arch: &str,
        entrypoint: Value,
        cmd: Value,
    ) -> (String, usize, &'static str) {
        // A real config's shape (trimmed history).
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                       "Entrypoint": entrypoint, "Cmd": cmd, "WorkingDir": "/",
                       "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT"},
            "created": "2026-10-01T00:00:00Z",
            "history": [{"created": "2026-10-01T00:00:00Z", "created_by": "ENTRYPOINT [...]", "empty_layer": true}],
            "rootfs": {"type": "layers", "diff_ids": ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}
        }))
        .unwrap();
        let config_digest = sha256(&config);
        let (manifest_type, config_type) = if oci {
            (OCI_MANIFEST, OCI_CONFIG)
        } else {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {"mediaType": config_type, "size": config.len(), "digest": config_digest},
            "layers": [{"mediaType": if oci { "application/vnd.oci.image.layer.v1.tar+gzip" } else { "application/vnd.docker.image.rootfs.diff.tar.gzip" },
                        "size": 3_623_807, "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111"}]
        }))
        .unwrap();
        let digest = sha256(&manifest);
        let size = manifest.len();
        self.blobs.insert(config_digest, config);
        self.manifests.insert(
            (repo.to_owned(), digest.clone()),
            (manifest_type.to_owned(), manifest),
        );
        (digest, size, manifest_type)
    }

    fn tag(&mut self, repo: &str, tag: &str, media_type: &str, body: Vec<u8>) {
        self.manifests.insert(
            (repo.to_owned(), tag.to_owned()),
            (media_type.to_owned(), body),
        );
    }

    fn tag_index(
        &mut self,
        repo: &str,
        tag: &str,
        oci: bool,
        entries: &[(String, usize, &str, &str)],
    ) {
        let list_type = if oci { OCI_INDEX } else { DOCKER_LIST };
        let manifests: Vec<Value> = entries
            .iter()
            .map(|(digest, size, media_type, arch)| {
                json!({"mediaType": media_type, "size": size, "digest": digest,
                       "platform": {"architecture": arch, "os": "linux"}})
            })
            .collect();
        let body = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": list_type, "manifests": manifests}),
        )
        .unwrap();
        self.tag(repo, tag, list_type, body);
    }
}

/// What `Authorization` a request carries, if it is the token for `repo`.
fn has_token(headers: &HeaderMap, repo: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer tok-{repo}"))
}

fn challenge(base: &str) -> Response {
    let mut res = StatusCode::UNAUTHORIZED.into_response();
    let value = format!(r#"Bearer realm="{base}/token",service="stand-in""#);
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&value).unwrap(),
    );
    res
}

/// Starts the stand-in over plain HTTP; returns its port and its state (with the request log).
pub async fn start_registry() -> (u16, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shared = images();
    let app = router(format!("http://127.0.0.1:{port}"), shared.clone());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, shared)
}

/// Starts the stand-in over HTTPS with a certificate for 127.0.0.1 issued by a CA made now
/// (the Console's own CA code, in `ca_dir`); returns its port, state and the CA's PEM.
pub async fn start_registry_tls(ca_dir: &std::path::Path) -> (u16, Shared, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    std::fs::create_dir_all(ca_dir).unwrap();
    let ca = defender_console::pki::CertAuthority::load_or_create(ca_dir).unwrap();
    let identity = ca.server_identity(&["127.0.0.1".to_owned()]).unwrap();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shared = images();
    let app = router(format!("https://127.0.0.1:{port}"), shared.clone());
    let tls = TlsListener {
        tcp: listener,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move {
        axum::serve(tls, app).await.unwrap();
    });
    (port, shared, ca.cert_pem().to_owned())
}

/// A TLS listener for `axum::serve`: failed handshakes are dropped, the next one accepted.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn router(base: String, shared: Shared) -> Router {
    Router::new()
        .route("/v2/", get(v2_root))
        .route("/token", get(token))
        .route("/v2/{*rest}", get(v2_object))
        .with_state((base, shared))
}

/// The stand-in's images.
fn images() -> Shared {
    let shared: Shared = Arc::default();
    {
        let mut r = shared.lock().unwrap();
        // nginx: a Docker manifest list, amd64 and arm64 with distinct CMDs to show the choice.
        let amd = r.add_image(
            "library/nginx",
            false,
            "amd64",
            json!(["/docker-entrypoint.sh"]),
            json!(["nginx", "-g", "daemon off;"]),
        );
        let arm = r.add_image(
            "library/nginx",
            false,
            "arm64",
            json!(["/docker-entrypoint.sh"]),
            json!(["nginx", "-g", "daemon off; # arm64"]),
        );
        r.tag_index(
            "library/nginx",
            "1.27",
            false,
            &[
                (amd.0, amd.1, amd.2, "amd64"),
                (arm.0, arm.1, arm.2, "arm64"),
            ],
        );
        // A private image: an OCI index with amd64 only, no ENTRYPOINT.
        let api = r.add_image(
            "private/api",
            true,
            "amd64",
            Value::Null,
            json!(["/api", "serve"]),
        );
        r.tag_index("private/api", "2", true, &[(api.0, api.1, api.2, "amd64")]);
        // A Defender image published for amd64 only (a single manifest, no index).
        let (digest, _, media_type) = r.add_image(
            "defender/defender",
            true,
            "amd64",
            json!(["/defender"]),
            Value::Null,
        );
        let body = r.manifests[&("defender/defender".to_owned(), digest)]
            .1
            .clone();
        r.tag("defender/defender", "1", media_type, body);
    }
    shared
}

async fn v2_root(State((base, _)): State<(String, Shared)>, headers: HeaderMap) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        StatusCode::OK.into_response()
    } else {
        challenge(&base)
    }
}

/// The token endpoint (Docker's token authentication spec): anonymous tokens for the public
/// `library/*` and `defender/*`, basic credentials required for everything else.
async fn token(
    State((_, shared)): State<(String, Shared)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let scope = q.get("scope").cloned().unwrap_or_default();
    let repo = scope
        .strip_prefix("repository:")
        .and_then(|s| s.strip_suffix(":pull"))
        .unwrap_or_default()
        .to_owned();
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let kind = match &basic {
        Some(creds) if creds == &format!("{USER}:{PASSWORD}") => "basic-ok",
        Some(_) => "basic-wrong",
        None => "anonymous",
    };
    shared.lock().unwrap().log.push(format!(
        "token {repo} {kind} service={}",
        q.get("service").cloned().unwrap_or_default()
    ));
    let public = repo.starts_with("library/") || repo.starts_with("defender/");
    if repo.is_empty() || (!public && kind != "basic-ok") {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        )
            .into_response();
    }
    axum::Json(json!({"token": format!("tok-{repo}"), "expires_in": 300})).into_response()
}

async fn v2_object(
    State((base, shared)): State<(String, Shared)>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let (repo, kind, reference) = if let Some((repo, r)) = rest.split_once("/manifests/") {
        (repo.to_owned(), "manifest", r.to_owned())
    } else if let Some((repo, r)) = rest.split_once("/blobs/") {
        (repo.to_owned(), "blob", r.to_owned())
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if !has_token(&headers, &repo) {
        return challenge(&base);
    }
    let mut r = shared.lock().unwrap();
    r.log.push(format!("{kind} {repo} {reference}"));
    let found = match kind {
        "manifest" => r.manifests.get(&(repo, reference.clone())).cloned(),
        _ => r
            .blobs
            .get(&reference)
            .map(|b| ("application/octet-stream".to_owned(), b.clone())),
    };
    match found {
        Some((media_type, body)) => {
            let digest = sha256(&body);
            (
                [
                    (header::CONTENT_TYPE, media_type),
                    (
                        header::HeaderName::from_static("docker-content-digest"),
                        digest,
                    ),
                ],
                body,
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
            .into_response(),
    }
}
