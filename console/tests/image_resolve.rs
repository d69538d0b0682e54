//! `fargate protect --resolve-images`, run as the real binary against a registry stand-in
//! started here (OCI distribution API over HTTP on 127.0.0.1:0 with real manifest, manifest
//! list, OCI index and image config shapes, and a bearer token endpoint that wants basic
//! credentials for private repositories), and against the local Docker engine with an image
//! built here when Docker answers.

mod registry_support;

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use registry_support::{PASSWORD, USER, WRAPPER, start_registry, start_registry_tls};
use serde_json::{Value, json};

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
            "REGISTRY_CA_FILE",
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

#[tokio::test]
async fn registry_resolution_over_https_trusts_a_private_ca_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let (port, shared, ca_pem) = start_registry_tls(&dir.path().join("ca")).await;
    let reg = format!("127.0.0.1:{port}");
    let ca_file = dir.path().join("registry-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let task = json!({"family": "web", "containerDefinitions": [
        {"name": "web", "image": format!("{reg}/library/nginx:1.27")}]});
    let path = write_task(dir.path(), "task.json", &task);

    // The stand-in's CA is in no store: the TLS handshake fails, and nothing is printed.
    let out = protect(vec!["--resolve-images".into(), path.clone()], vec![]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nginx:1.27"), "{err}");
    assert!(
        !shared
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("manifest")),
        "no request got past TLS"
    );

    // Trusting it: rustls (ring) verifies 127.0.0.1 against it, tokens and all over https.
    let out = protect(
        vec![
            "--resolve-images".into(),
            "--registry-ca-file".into(),
            ca_file.to_string_lossy().into_owned(),
            path,
        ],
        vec![],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    let protected: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        container(&protected, "web")["command"],
        json!(["nginx", "-g", "daemon off;"])
    );
    let log = shared.lock().unwrap().log.clone();
    assert!(
        log.iter()
            .any(|l| l.starts_with("token library/nginx anonymous")),
        "{log:?}"
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
    let out = protect(vec!["--resolve-images=docker".into(), path.clone()], vec![]).await;
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
    let out = protect(vec!["--resolve-images=docker".into(), path], vec![]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot inspect defender-test/absent:0"),
        "{err}"
    );
}
