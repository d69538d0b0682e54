//! `fargate protect --resolve-images`, run as the real binary against a registry stand-in
//! started here (OCI distribution API over HTTP on 127.0.0.1:0 with real manifest, manifest
//! list, OCI index and image config shapes, and a bearer token endpoint that wants basic
//! credentials for private repositories), and against the local Docker engine with an image
//! built here when Docker answers.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

const WRAPPER: [&str; 4] = ["/var/lib/defender/defender", "fargate", "entrypoint", "--"];
const USER: &str = "AWS";
const PASSWORD: &str = "s3cret-login-password";

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
struct Registry {
    /// (repository, tag or digest) -> (media type, body).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// digest -> body.
    blobs: HashMap<String, Vec<u8>>,
    /// Requests seen, for assertions: "token <repo> <auth kind>", "manifest <repo> <ref>", ...
    log: Vec<String>,
}

type Shared = Arc<Mutex<Registry>>;

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

fn challenge(port: u16) -> Response {
    let mut res = StatusCode::UNAUTHORIZED.into_response();
    let value = format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="stand-in""#);
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&value).unwrap(),
    );
    res
}

async fn start_registry() -> (u16, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
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
    let app = Router::new()
        .route("/v2/", get(v2_root))
        .route("/token", get(token))
        .route("/v2/{*rest}", get(v2_object))
        .with_state((port, shared.clone()));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (port, shared)
}

async fn v2_root(State((port, _)): State<(u16, Shared)>, headers: HeaderMap) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        StatusCode::OK.into_response()
    } else {
        challenge(port)
    }
}

/// The token endpoint (Docker's token authentication spec): anonymous tokens for the public
/// `library/*` and `defender/*`, basic credentials required for everything else.
async fn token(
    State((_, shared)): State<(u16, Shared)>,
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
    State((port, shared)): State<(u16, Shared)>,
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
        return challenge(port);
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

/// Runs `defender-console fargate protect ARGS` (off the runtime's threads).
async fn protect(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_defender-console"));
        cmd.args(["fargate", "protect"]).args(&args);
        for var in [
            "REGISTRY_USERNAME",
            "REGISTRY_PASSWORD",
            "REGISTRY_PASSWORD_FILE",
            "REGISTRY_AUTH_FILE",
            "DEFENDER_RESOLVE_IMAGES",
            "DEFENDER_INSECURE_REGISTRIES",
            "DEFENDER_IMAGE",
            "DEFENDER_ENTRYPOINTS",
            "CONSOLE_ADDR",
        ] {
            cmd.env_remove(var);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run defender-console")
    })
    .await
    .unwrap()
}

fn write_task(dir: &Path, name: &str, task: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, task.to_string()).unwrap();
    path.to_string_lossy().into_owned()
}

fn container<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containerDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn wrapped(rest: &[&str]) -> Value {
    let mut v: Vec<&str> = WRAPPER.to_vec();
    v.extend(rest);
    json!(v)
}

#[tokio::test]
async fn registry_resolution_follows_indexes_to_the_task_platform_with_token_auth() {
    let (port, shared) = start_registry().await;
    let reg = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let task = json!({
        "family": "web", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "1024", "memory": "2048",
        "containerDefinitions": [
            {"name": "web", "image": format!("{reg}/library/nginx:1.27"), "essential": true},
            {"name": "api", "image": format!("{reg}/private/api:2"), "essential": true}
        ]
    });
    let path = write_task(dir.path(), "task.json", &task);
    let base = vec![
        "--resolve-images".to_owned(),
        "--insecure-registry".to_owned(),
        reg.clone(),
        "--defender-image".to_owned(),
        format!("{reg}/defender/defender:1"),
    ];

    // Without credentials the private repository's token is refused: an error, no output.
    let mut args = base.clone();
    args.push(path.clone());
    let out = protect(args, vec![]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("private/api:2") && err.contains("linux/amd64"),
        "{err}"
    );

    // With `AWS` and the login password (from the environment, never argv).
    let mut args = base.clone();
    args.extend([
        "--registry-username".to_owned(),
        USER.to_owned(),
        path.clone(),
    ]);
    let out = protect(args, vec![("REGISTRY_PASSWORD", PASSWORD.to_owned())]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let protected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let web = container(&protected, "web");
    assert_eq!(web["entryPoint"], wrapped(&["/docker-entrypoint.sh"]));
    assert_eq!(web["command"], json!(["nginx", "-g", "daemon off;"]));
    let api = container(&protected, "api");
    assert_eq!(api["entryPoint"], wrapped(&[]));
    assert_eq!(api["command"], json!(["/api", "serve"]));
    assert!(err.contains("container \"web\": ENTRYPOINT"), "{err}");
    assert!(err.contains(&format!("registry {reg}, sha256:")), "{err}");
    assert!(
        !err.contains("published for"),
        "amd64 task, amd64 Defender: {err}"
    );
    {
        let log = &shared.lock().unwrap().log;
        assert!(
            log.iter()
                .any(|l| l.starts_with("token library/nginx anonymous service=stand-in")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("token private/api basic-ok")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("manifest library/nginx 1.27")),
            "{log:?}"
        );
        assert!(
            log.iter()
                .any(|l| l.starts_with("manifest library/nginx sha256:")),
            "{log:?}"
        );
    }

    // Docker's config.json works the same.
    let auth = STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = json!({"auths": {reg.clone(): {"auth": auth}}});
    let config_path = write_task(dir.path(), "config.json", &config);
    let mut args = base.clone();
    args.extend(["--registry-auth-file".to_owned(), config_path, path.clone()]);
    let out = protect(args, vec![]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again, protected);

    // ARM64: the arm64 entry of the manifest list is chosen; the amd64-only private image
    // and the amd64-only Defender image are reported.
    let mut arm = task.clone();
    arm["runtimePlatform"] = json!({"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"});
    let arm_path = write_task(dir.path(), "arm.json", &arm);
    let mut args = base.clone();
    args.extend(["--registry-username".to_owned(), USER.to_owned(), arm_path]);
    let out = protect(args, vec![("REGISTRY_PASSWORD", PASSWORD.to_owned())]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("private/api:2") && err.contains("linux/arm64"),
        "{err}"
    );

    arm["containerDefinitions"].as_array_mut().unwrap().pop();
    let arm_path = write_task(dir.path(), "arm-web.json", &arm);
    let mut args = base.clone();
    args.push(arm_path);
    let out = protect(args, vec![]).await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let protected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        container(&protected, "web")["command"],
        json!(["nginx", "-g", "daemon off; # arm64"])
    );
    assert!(
        err.contains("is published for linux/amd64 only, not for this task's linux/arm64"),
        "{err}"
    );
}

/// Whether a Docker engine answers here.
fn docker_works() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn docker_resolution_reads_an_image_built_here() {
    if !docker_works() {
        eprintln!(
            "SKIPPED docker_resolution_reads_an_image_built_here: `docker info` fails, no Docker engine here"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello"), b"not a real program").unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello /hello\nENTRYPOINT [\"/hello\", \"--from-entrypoint\"]\nCMD [\"--greet\", \"world\"]\n",
    )
    .unwrap();
    let tag = format!("defender-test/resolve-{}:1", std::process::id());
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &tag])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    let task = json!({"family": "ci", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
        "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "app", "image": tag}]});
    let path = write_task(dir.path(), "task.json", &task);
    let out = protect(
        vec!["--resolve-images".into(), "docker".into(), path.clone()],
        vec![],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = Command::new("docker").args(["rmi", "-f", &tag]).output();
    assert!(out.status.success(), "{err}");
    let protected: Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = container(&protected, "app");
    assert_eq!(app["entryPoint"], wrapped(&["/hello", "--from-entrypoint"]));
    assert_eq!(app["command"], json!(["--greet", "world"]));
    assert!(err.contains("local Docker engine"), "{err}");

    // An image the engine does not have: a clear error, nothing on stdout.
    let missing = json!({"family": "ci", "containerDefinitions": [{"name": "app", "image": "defender-test/absent:0"}]});
    let path = write_task(dir.path(), "missing.json", &missing);
    let out = protect(
        vec!["--resolve-images".into(), "docker".into(), path],
        vec![],
    )
    .await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot inspect defender-test/absent:0"),
        "{err}"
    );
}
