//! Shared test harness: a real Console on 127.0.0.1 port 0 with a fresh data dir.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use defender_console::server::{self, RunningConsole, ServeConfig};
use defender_console::store::{StoredEvent, TokenKind};
use tokio::net::TcpListener;

use crate::db_support;

pub const ADMIN_PASSWORD: &str = "test-admin-password";

pub fn config(data_dir: &Path, heartbeat: Duration) -> ServeConfig {
    ServeConfig {
        data_dir: data_dir.to_owned(),
        database_url: db_support::database_url(data_dir),
        sans: vec![],
        heartbeat_interval: heartbeat,
        defender_retention: Duration::from_secs(3600),
        client_cert_validity: Duration::from_secs(3600),
        admin_password: Some(ADMIN_PASSWORD.to_owned()),
    }
}

pub async fn start_console(data_dir: &Path, heartbeat: Duration) -> RunningConsole {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::start(config(data_dir, heartbeat), grpc, http)
        .await
        .unwrap()
}

/// Restarts a console on the same gRPC port (so Defenders find it again) and data dir.
pub async fn restart_console(
    data_dir: &Path,
    heartbeat: Duration,
    grpc_port: u16,
) -> RunningConsole {
    let grpc = bind_retry(grpc_port).await;
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::start(config(data_dir, heartbeat), grpc, http)
        .await
        .unwrap()
}

async fn bind_retry(port: u16) -> TcpListener {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot rebind port {port}: {e}"),
        }
    }
}

pub async fn api_token(console: &RunningConsole) -> String {
    console
        .store
        .create_token(TokenKind::Api, "test", None)
        .await
        .unwrap()
}

pub async fn bundle_b64(data_dir: &Path, console: &RunningConsole) -> String {
    server::create_bundle(
        data_dir,
        db_support::database_url(data_dir).as_deref(),
        &format!("127.0.0.1:{}", console.grpc_addr.port()),
        "test",
        None,
    )
    .await
    .unwrap()
    .encode()
}

/// GET /api/v1/defenders as JSON.
pub async fn defenders(console: &RunningConsole, token: &str, query: &str) -> serde_json::Value {
    let url = format!("http://{}/api/v1/defenders{query}", console.http_addr);
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "API call failed");
    resp.json().await.unwrap()
}

/// Polls `check` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `defender` binary. `cargo test --workspace` builds it fresh (the agent's own tests need
/// it); when this package's tests run alone and the binary is older than the agent's sources,
/// it is rebuilt here so a test never runs stale code.
pub fn defender_bin() -> std::path::PathBuf {
    let bin =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_defender-console")).with_file_name("defender");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
        let newest = ["agent/src", "agent/Cargo.toml", "proto"]
            .iter()
            .filter_map(|p| newest_mtime(&root.join(p)))
            .max();
        if built.is_some() && built >= newest {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "defender", "--bin", "defender"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the defender binary failed");
    });
    bin
}

fn newest_mtime(path: &std::path::Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// Validates `json` as a runtime policy, saves it as a new version and pushes it to every
/// connected Defender, as the policy API does. Returns the version.
pub async fn save_policy(console: &defender_console::server::RunningConsole, json: &str) -> i64 {
    defender_policy::RuntimePolicy::parse(json)
        .unwrap()
        .validate()
        .unwrap();
    let saved = console.store.save_policy(json, "test").await.unwrap();
    console.policy.publish(&saved);
    saved.version
}

/// Path of a system program (`/bin` or `/usr/bin`).
pub fn which(cmd: &str) -> std::path::PathBuf {
    ["/bin", "/usr/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(cmd))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{cmd} not found"))
}

/// Waits until the Defender whose data directory is `agent` persisted policy `version` (it is
/// in force from then on).
pub async fn policy_in_force(agent: &Path, version: i64) {
    let file = agent.join("policy.json");
    eventually(
        "policy in force in the Defender",
        Duration::from_secs(60),
        || async {
            let text = std::fs::read_to_string(&file).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["version"].as_i64()? >= version).then_some(())
        },
    )
    .await;
}

/// Every event the Console stored of `kind` (`None`: every kind), across all its Defenders,
/// at most `limit` per Defender, each Defender's newest first.
pub async fn stored_events(
    console: &RunningConsole,
    kind: Option<&str>,
    limit: i64,
) -> Vec<StoredEvent> {
    let ids: Vec<String> =
        defender_console::with_pool!(console.store.pool(), |p| sqlx::query_scalar(
            "SELECT id FROM defenders"
        )
        .fetch_all(p)
        .await
        .unwrap());
    let mut all = Vec::new();
    for id in ids {
        all.extend(console.store.list_events(&id, kind, limit).await.unwrap());
    }
    all
}
