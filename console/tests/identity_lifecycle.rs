//! Identity lifecycle against a real Console (gRPC mTLS with certificates made at test time,
//! HTTP, SQLite file): one stream per identity, decommission, tokens, certificate renewal,
//! rate limits and retention (issue 13, items 3, 4, 5, 6 and 8).

mod common;
mod db_support;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use defender::bundle::InstallBundle;
use defender::identity::{self, Identity};
use defender::link::{Backoff, Link, LinkConfig, LinkState};
use defender::outbox::Outbox;
use defender::spool::SpoolConfig;
use defender_console::lifecycle::LifecycleConfig;
use defender_console::ratelimit::{Rate, RateLimits};
use defender_console::server::{self, RunningConsole};
use defender_proto::v1::{
    ConsoleMessage, DefenderMessage, EnrollRequest, Event, EventBatch, Heartbeat, Hello, Mode,
    ProcessExit, RenewRequest, RuntimeAudit, TaskMetadata, console_message, defender_message,
    defender_service_client::DefenderServiceClient, enrollment_client::EnrollmentClient, event,
};
use rcgen::{CertificateParams, KeyPair};
use reqwest::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(20);

async fn start(
    dir: &Path,
    heartbeat: Duration,
    cert_validity: Duration,
    lifecycle: LifecycleConfig,
) -> RunningConsole {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(dir, heartbeat);
    cfg.client_cert_validity = cert_validity;
    server::start_with(cfg, lifecycle, grpc, http)
        .await
        .unwrap()
}

fn metadata(host: &str) -> TaskMetadata {
    TaskMetadata {
        hostname: host.into(),
        cluster: "lifecycle".into(),
        family: "web".into(),
        revision: "1".into(),
        ..Default::default()
    }
}

fn link_config(bundle: &str, dir: &Path, host: &str) -> LinkConfig {
    LinkConfig {
        bundle: InstallBundle::decode(bundle).unwrap(),
        data_dir: dir.to_owned(),
        mode: Mode::Standalone,
        metadata: metadata(host),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        },
        outbox: Outbox::open(&dir.join("spool"), SpoolConfig::default()).unwrap(),
        policy: None,
        waas: None,
        capture: None,
    }
}

async fn wait_connected(link: &Link) -> String {
    let mut rx = link.state();
    let state = tokio::time::timeout(
        WAIT,
        rx.wait_for(|s| matches!(s, LinkState::Connected { .. })),
    )
    .await
    .expect("link did not connect in time")
    .unwrap()
    .clone();
    match state {
        LinkState::Connected { defender_id } => defender_id,
        _ => unreachable!(),
    }
}

fn hello() -> DefenderMessage {
    DefenderMessage {
        msg: Some(defender_message::Msg::Hello(Hello {
            metadata: Some(metadata("raw")),
            agent_version: "test".into(),
            mode: Mode::Standalone as i32,
            capture: None,
            last_acked_seq: 0,
        })),
    }
}

fn heartbeat() -> DefenderMessage {
    DefenderMessage {
        msg: Some(defender_message::Msg::Heartbeat(Heartbeat {
            rss_bytes: 1,
            ..Default::default()
        })),
    }
}

/// A raw stream with `id`: the sender (keep it alive to keep the stream open) and the
/// inbound half, after Welcome.
async fn open_stream(
    bundle: &InstallBundle,
    id: &Identity,
) -> (
    mpsc::Sender<DefenderMessage>,
    tonic::Streaming<ConsoleMessage>,
) {
    let channel = defender::transport::channel(bundle, Some(id))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(hello()).await.unwrap();
    let mut inbound = DefenderServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match inbound.message().await.unwrap().unwrap().msg {
        Some(console_message::Msg::Welcome(w)) => assert_eq!(w.defender_id, id.defender_id),
        other => panic!("expected Welcome, got {other:?}"),
    }
    (tx, inbound)
}

/// The status that ends `inbound` (skipping acks and policy pushes), within `within`.
async fn end_status(
    inbound: &mut tonic::Streaming<ConsoleMessage>,
    within: Duration,
) -> tonic::Status {
    tokio::time::timeout(within, async {
        loop {
            match inbound.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without a status"),
                Err(s) => return s,
            }
        }
    })
    .await
    .expect("the stream was not closed in time")
}

async fn client(bundle: &InstallBundle, id: &Identity) -> DefenderServiceClient<Channel> {
    DefenderServiceClient::new(
        defender::transport::channel(bundle, Some(id))
            .await
            .unwrap(),
    )
}

fn csr_for(key: &KeyPair) -> String {
    CertificateParams::default()
        .serialize_request(key)
        .unwrap()
        .pem()
        .unwrap()
}

async fn api_get(console: &RunningConsole, token: &str, path: &str) -> serde_json::Value {
    let resp = reqwest::Client::new()
        .get(format!("http://{}{path}", console.http_addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

async fn api_post(
    console: &RunningConsole,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (StatusCode, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}{path}", console.http_addr))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

fn find<'a>(list: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?.iter().find(|d| d["id"] == id)
}

async fn metric(console: &RunningConsole, line_prefix: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", console.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .unwrap_or_else(|| panic!("no metric {line_prefix} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn console_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_defender-console"))
}

// ---- item 3: one identity, one stream ------------------------------------------------------

#[tokio::test]
async fn newest_stream_wins_and_the_status_follows_the_live_one() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let heartbeat_every = Duration::from_millis(200);
    let console = start(
        data.path(),
        heartbeat_every,
        Duration::from_secs(3600),
        LifecycleConfig::default(),
    )
    .await;
    let token = api_token(&console).await;
    let bundle_b64 = bundle_b64(data.path(), &console).await;
    let bundle = InstallBundle::decode(&bundle_b64).unwrap();

    // A real Defender streams...
    let link = Link::spawn(link_config(&bundle_b64, agent.path(), "streaming"));
    let id = wait_connected(&link).await;
    let current = link
        .identity()
        .borrow()
        .clone()
        .expect("identity published");
    assert_eq!(current.defender_id, id);

    // ...and a second stream with the same identity (a copied certificate) opens: the newest
    // wins, the Defender's own stream is closed with ABORTED.
    let mut states = link.state();
    let (second_tx, mut second_in) = open_stream(&bundle, &current).await;
    let reason = tokio::time::timeout(WAIT, async {
        loop {
            states.changed().await.unwrap();
            if let LinkState::Disconnected { reason } = &*states.borrow() {
                return reason.clone();
            }
        }
    })
    .await
    .expect("the older stream was not closed");
    assert!(
        reason.contains("superseded by a newer stream"),
        "reason: {reason}"
    );

    // The Defender reconnects, which in turn supersedes the second stream.
    let status = end_status(&mut second_in, WAIT).await;
    assert_eq!(status.code(), tonic::Code::Aborted);
    assert_eq!(status.message(), "superseded by a newer stream");
    drop(second_tx);
    wait_connected(&link).await;

    // Opening and closing another stream does not leave the streaming Defender "Disconnected":
    // the status follows the live stream, which is the Defender's again.
    for _ in 0..3 {
        let (tx, mut inbound) = open_stream(&bundle, &current).await;
        // The Defender may already have taken its identity back (then this stream is gone).
        let _ = tx.send(heartbeat()).await;
        drop(tx);
        let _ = tokio::time::timeout(WAIT, inbound.message()).await;
    }
    let row = eventually("the live Defender reads Connected", WAIT, || async {
        let list = defenders(&console, &token, "").await;
        find(&list, &id).filter(|d| d["connected"] == true).cloned()
    })
    .await;
    assert!(
        row["status"]
            .as_str()
            .unwrap()
            .starts_with("Connected for ")
    );
    // It stays connected over several heartbeat intervals: nothing is fighting for the identity.
    let mut last_reconnects = 0;
    for _ in 0..10 {
        tokio::time::sleep(heartbeat_every).await;
        let list = defenders(&console, &token, "").await;
        let d = find(&list, &id).unwrap();
        if d["connected"] != true {
            last_reconnects += 1;
        }
    }
    assert_eq!(last_reconnects, 0, "the live Defender flapped");
    assert_eq!(console.lifecycle.streams.len(), 1);

    // Fifty streams with one identity: exactly one stays live.
    link.stop();
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(open_stream(&bundle, &current).await);
    }
    let mut aborted = 0;
    let last = streams.pop().unwrap();
    for (_tx, mut inbound) in streams {
        let s = end_status(&mut inbound, WAIT).await;
        assert_eq!(s.code(), tonic::Code::Aborted);
        aborted += 1;
    }
    assert_eq!(aborted, 49);
    assert_eq!(console.lifecycle.streams.len(), 1);
    assert_eq!(
        metric(&console, "defender_console_streams_live ").await,
        1.0
    );
    drop(last);
}

// ---- item 4: decommission ------------------------------------------------------------------

#[tokio::test]
async fn decommission_closes_the_stream_at_once_and_the_identity_never_comes_back() {
    let data = tempfile::tempdir().unwrap();
    // Heartbeats 10 s apart: the stream must close well before any heartbeat could notice.
    let console = start(
        data.path(),
        Duration::from_secs(10),
        Duration::from_secs(3600),
        LifecycleConfig::default(),
    )
    .await;
    let token = api_token(&console).await;
    let bundle_b64 = bundle_b64(data.path(), &console).await;
    let bundle = InstallBundle::decode(&bundle_b64).unwrap();

    // One Defender decommissioned over REST.
    let agent = tempfile::tempdir().unwrap();
    let link = Link::spawn(link_config(&bundle_b64, agent.path(), "to-retire"));
    let id = wait_connected(&link).await;
    let ident = link.identity().borrow().clone().unwrap();
    let mut states = link.state();
    let asked = Instant::now();
    let (status, body) = api_post(
        &console,
        &token,
        &format!("/api/v1/defenders/{id}/decommission"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    let reason = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let LinkState::Disconnected { reason } = &*states.borrow_and_update() {
                return reason.clone();
            }
            states.changed().await.unwrap();
        }
    })
    .await
    .expect("the stream was not closed at once");
    assert!(asked.elapsed() < Duration::from_secs(3));
    assert!(reason.contains("decommissioned"), "reason: {reason}");
    link.stop();
    // Again: 200, nothing changes. Unknown: 404.
    let (status, body) = api_post(
        &console,
        &token,
        &format!("/api/v1/defenders/{id}/decommission"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(
        (status, &body["changed"]),
        (StatusCode::OK, &serde_json::json!(false))
    );
    let (status, _) = api_post(
        &console,
        &token,
        "/api/v1/defenders/no-such-defender/decommission",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 404);

    // It can never reconnect, renew or enroll its key again.
    let mut c = client(&bundle, &ident).await;
    let (tx, rx) = mpsc::channel(1);
    tx.send(hello()).await.unwrap();
    let err = c.connect(ReceiverStream::new(rx)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let err = c
        .renew(RenewRequest {
            csr_pem: csr_for(&KeyPair::generate().unwrap()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let old_key = KeyPair::from_pem(&ident.key_pem).unwrap();
    let fresh_token = console
        .store
        .create_token(defender_console::store::TokenKind::Enrollment, "t", None)
        .await
        .unwrap();
    let enroll = EnrollmentClient::new(defender::transport::channel(&bundle, None).await.unwrap())
        .enroll(EnrollRequest {
            token: fresh_token,
            csr_pem: csr_for(&old_key),
            metadata: Some(metadata("again")),
            agent_version: "test".into(),
            mode: Mode::Standalone as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(enroll.code(), tonic::Code::PermissionDenied);
    // It left Manage > Defenders.
    let list = defenders(&console, &token, "").await;
    assert!(find(&list, &id).is_none());

    // Bulk over REST: two live streams closed, one unknown id reported.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (ida, idb) = (
        identity::enroll(a.path(), &bundle, metadata("a"), Mode::Standalone)
            .await
            .unwrap(),
        identity::enroll(b.path(), &bundle, metadata("b"), Mode::Standalone)
            .await
            .unwrap(),
    );
    let (_ta, mut ina) = open_stream(&bundle, &ida).await;
    let (_tb, mut inb) = open_stream(&bundle, &idb).await;
    let (status, body) = api_post(
        &console,
        &token,
        "/api/v1/defenders/decommission",
        serde_json::json!({ "ids": [ida.defender_id, idb.defender_id, "nope"] }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decommissioned"].as_array().unwrap().len(), 2);
    assert_eq!(body["not_found"], serde_json::json!(["nope"]));
    for inbound in [&mut ina, &mut inb] {
        let s = end_status(inbound, Duration::from_secs(3)).await;
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        assert_eq!(s.message(), "this Defender is decommissioned");
    }
    let (status, _) = api_post(
        &console,
        &token,
        "/api/v1/defenders/decommission",
        serde_json::json!({ "ids": [] }),
    )
    .await;
    assert_eq!(status, 400);

    // The CLI works on the database; the running Console closes the stream within its poll.
    let c_dir = tempfile::tempdir().unwrap();
    let idc = identity::enroll(c_dir.path(), &bundle, metadata("c"), Mode::Standalone)
        .await
        .unwrap();
    let (_tc, mut inc) = open_stream(&bundle, &idc).await;
    let out = console_bin()
        .args(["defender", "decommission", &idc.defender_id, "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("decommissioned"));
    let s = end_status(&mut inc, Duration::from_secs(5)).await;
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    let out = console_bin()
        .args(["defender", "decommission", "no-such-id", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such Defender"));
}

#[tokio::test]
async fn decommission_from_the_ui_asks_first_and_needs_the_csrf_token() {
    let data = tempfile::tempdir().unwrap();
    let console = start(
        data.path(),
        Duration::from_secs(10),
        Duration::from_secs(3600),
        LifecycleConfig::default(),
    )
    .await;
    let bundle = InstallBundle::decode(&bundle_b64(data.path(), &console).await).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ident = identity::enroll(dir.path(), &bundle, metadata("ui"), Mode::Standalone)
        .await
        .unwrap();
    let (_tx, mut inbound) = open_stream(&bundle, &ident).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://{}", console.http_addr);
    let login = http
        .post(format!("{base}/login"))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| v.to_str().ok()?.strip_prefix("defender_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let cookie = format!("defender_session={cookie}");
    let page = http
        .get(format!("{base}/manage/defenders/decommission"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&ident.defender_id));
    let marker = "name=\"csrf-token\" content=\"";
    let start = page.find(marker).unwrap() + marker.len();
    let csrf = page[start..start + page[start..].find('"').unwrap()].to_owned();
    let post = |body: String| {
        http.post(format!("{base}/manage/defenders/decommission"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // Without the CSRF token: refused.
    let resp = post(format!("id={}&confirm=yes", ident.defender_id))
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // First step: a confirmation page; nothing happens yet.
    let resp = post(format!("csrf={csrf}&id={}", ident.defender_id))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("cannot be undone"), "{html}");
    assert!(html.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(
        console
            .store
            .defender_standing(&ident.defender_id)
            .await
            .unwrap(),
        defender_console::store::Standing::Active
    );
    // Confirmed: done, and the stream is closed.
    let resp = post(format!("csrf={csrf}&id={}&confirm=yes", ident.defender_id))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("Decommissioned 1 Defender")
    );
    let s = end_status(&mut inbound, Duration::from_secs(3)).await;
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
}

// ---- item 4: tokens ------------------------------------------------------------------------

#[tokio::test]
async fn tokens_expire_by_default_are_listed_named_and_revocable_everywhere() {
    let data = tempfile::tempdir().unwrap();
    let console = start(
        data.path(),
        Duration::from_secs(10),
        Duration::from_secs(3600),
        LifecycleConfig::default(),
    )
    .await;
    let admin = api_token(&console).await;
    let addr = format!("127.0.0.1:{}", console.grpc_addr.port());

    // `bundle` without --ttl: the token expires in 90 days, shown by `token list`.
    let out = console_bin()
        .args([
            "bundle",
            "--console-addr",
            &addr,
            "--description",
            "fleet-a",
            "--data-dir",
        ])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let bundle = InstallBundle::decode(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let out = console_bin()
        .args(["token", "list", "--json", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fleet = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fleet-a")
        .expect("bundle token listed")
        .clone();
    let expires = time::OffsetDateTime::parse(
        fleet["expires_at"].as_str().expect("the token expires"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let days = (expires - time::OffsetDateTime::now_utc()).whole_days();
    assert!((89..=90).contains(&days), "expires in {days} days");
    assert_eq!(fleet["state"], "active");
    // The table form shows the same token.
    let out = console_bin()
        .args(["token", "list", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(fleet["id"].as_str().unwrap()) && table.contains("fleet-a"));

    // "Generate protected task" mints tokens that expire too.
    let minted = defender_console::fargate::issue_bundle(
        &console.store,
        "-----BEGIN CERTIFICATE-----",
        std::slice::from_ref(&addr),
        "protected task web",
    )
    .await
    .unwrap();
    assert!(minted.token.starts_with("dfe_"));
    let tokens = console.store.list_tokens().await.unwrap();
    assert!(
        tokens
            .iter()
            .filter(|t| t.kind == "enrollment")
            .all(|t| t.expires_at.is_some()),
        "an enrollment token that never expires: {tokens:?}"
    );

    // Enrollment works, counts a use; revoked with the CLI, it enrolls nobody.
    let d1 = tempfile::tempdir().unwrap();
    identity::enroll(d1.path(), &bundle, metadata("t1"), Mode::Standalone)
        .await
        .unwrap();
    let out = console_bin()
        .args([
            "token",
            "revoke",
            fleet["id"].as_str().unwrap(),
            "--data-dir",
        ])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let d2 = tempfile::tempdir().unwrap();
    let err = identity::enroll(d2.path(), &bundle, metadata("t2"), Mode::Standalone)
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    let list = api_get(&console, &admin, "/api/v1/tokens").await;
    let fleet_now = find(&list, fleet["id"].as_str().unwrap()).unwrap();
    assert_eq!(fleet_now["state"], "revoked");
    assert_eq!(fleet_now["uses"], 1);
    assert!(fleet_now["last_used_at"].is_string());

    // API tokens: created over REST with a name, last use recorded, revoked over REST.
    let (status, created) = api_post(
        &console,
        &admin,
        "/api/v1/tokens",
        serde_json::json!({ "name": "ci-deploy" }),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let ci = created["token"].as_str().unwrap().to_owned();
    let ci_id = created["id"].as_str().unwrap().to_owned();
    assert!(created["last_used_at"].is_null());
    api_get(&console, &ci, "/api/v1/defenders").await;
    let list = api_get(&console, &admin, "/api/v1/tokens").await;
    let row = find(&list, &ci_id).unwrap();
    assert_eq!(row["name"], "ci-deploy");
    assert!(row["last_used_at"].is_string(), "{row}");
    assert!(
        row.get("token").is_none(),
        "a listed token must not carry the secret"
    );
    let (status, _) = api_post(
        &console,
        &admin,
        &format!("/api/v1/tokens/{ci_id}/revoke"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let resp = reqwest::Client::new()
        .get(format!("http://{}/api/v1/defenders", console.http_addr))
        .bearer_auth(&ci)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, _) = api_post(
        &console,
        &admin,
        &format!("/api/v1/tokens/{ci_id}/revoke"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 409);
    // Bad requests say what is wrong.
    for body in [
        serde_json::json!({ "name": "" }),
        serde_json::json!({ "name": "x", "kind": "root" }),
        serde_json::json!({ "name": "x", "ttl": "5d" }),
        serde_json::json!({ "name": "x", "kind": "enrollment", "ttl": "soon" }),
    ] {
        let (status, err) = api_post(&console, &admin, "/api/v1/tokens", body).await;
        assert_eq!(status, 400);
        assert!(err["error"].is_string());
    }
    // An enrollment token over REST with its own life.
    let (status, e) = api_post(
        &console,
        &admin,
        "/api/v1/tokens",
        serde_json::json!({ "name": "short", "kind": "enrollment", "ttl": "2h" }),
    )
    .await;
    assert_eq!(status, 201);
    assert!(e["token"].as_str().unwrap().starts_with("dfe_"));
    assert!(e["expires_at"].is_string());

    // The tokens page lists both kinds, never a secret.
    let page = {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let login = http
            .post(format!("http://{}/login", console.http_addr))
            .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
            .send()
            .await
            .unwrap();
        let cookie = login
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        http.get(format!("http://{}/manage/tokens", console.http_addr))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert!(page.contains("ci-deploy") && page.contains("fleet-a") && page.contains("Revoke"));
    assert!(!page.contains(&ci) && !page.contains(&bundle.token));
}

// ---- item 5: renewal over the existing identity ---------------------------------------------

#[tokio::test]
async fn a_defender_keeps_its_id_across_renewals_and_without_its_enrollment_token() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    // Certificates live 6 s: renewed after ~4 s, several times during the test.
    let life = Duration::from_secs(6);
    let console = start(
        data.path(),
        Duration::from_millis(200),
        life,
        LifecycleConfig::default(),
    )
    .await;
    let token = api_token(&console).await;
    let bundle_b64 = bundle_b64(data.path(), &console).await;
    let bundle = InstallBundle::decode(&bundle_b64).unwrap();
    let cfg = link_config(&bundle_b64, agent.path(), "long-running");
    let outbox = cfg.outbox.clone();
    let link = Link::spawn(cfg);
    let id = wait_connected(&link).await;
    let first = link.identity().borrow().clone().unwrap();

    // The enrollment token goes away: a running fleet does not need it any more.
    assert!(
        console
            .store
            .revoke_token(
                defender_console::store::TokenKind::Enrollment,
                &bundle.token
            )
            .await
            .unwrap()
    );

    // Two renewals: same id, new certificate and key each time, stored on disk.
    let mut ids = link.identity();
    let mut seen = vec![first.clone()];
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.len() < 3 {
            ids.changed().await.unwrap();
            if let Some(i) = ids.borrow_and_update().clone()
                && i.cert_pem != seen.last().unwrap().cert_pem
            {
                seen.push(i);
            }
        }
    })
    .await
    .expect("two renewals within 30 s");
    for i in &seen {
        assert_eq!(i.defender_id, id);
    }
    assert_ne!(
        seen[1].key_pem, seen[0].key_pem,
        "renewal must bring a new key"
    );
    assert_ne!(seen[2].key_pem, seen[1].key_pem);
    assert!(seen[2].not_after_ms > seen[0].not_after_ms);
    let (_, renewals, renewed_at) = console.store.cert_state(&id).await.unwrap().unwrap();
    assert!(renewals >= 2 && renewed_at.is_some());

    // Past the first certificate's expiry, a restarted Defender (same data dir) connects
    // with the renewed identity from disk: same id, no enrollment (its token is revoked).
    let wait = first.not_after_ms - defender_console::store::now_ms() + 500;
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    link.stop();
    // The same spool (its lock is held until the stopped link's tasks are gone).
    let link = Link::spawn(LinkConfig {
        bundle: bundle.clone(),
        data_dir: agent.path().to_owned(),
        mode: Mode::Standalone,
        metadata: metadata("long-running"),
        backoff: Backoff::default(),
        outbox,
        policy: None,
        waas: None,
        capture: None,
    });
    assert_eq!(wait_connected(&link).await, id);
    let list = defenders(&console, &token, "").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "one Defender, not several: {list}"
    );
    link.stop();

    // Renew refuses an old key and a caller without a client certificate.
    let current = identity::load(
        &agent.path().join("identity"),
        &bundle,
        defender_console::store::now_ms(),
    )
    .expect("identity stored");
    let mut c = client(&bundle, &current).await;
    let same_key = KeyPair::from_pem(&current.key_pem).unwrap();
    let err = c
        .renew(RenewRequest {
            csr_pem: csr_for(&same_key),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    let anonymous = defender::transport::channel(&bundle, None).await.unwrap();
    let err = DefenderServiceClient::new(anonymous)
        .renew(RenewRequest {
            csr_pem: csr_for(&KeyPair::generate().unwrap()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

// ---- item 6: rate limits -------------------------------------------------------------------

#[tokio::test]
async fn a_thousand_enrollments_with_one_token_are_mostly_refused() {
    let data = tempfile::tempdir().unwrap();
    let console = start(
        data.path(),
        Duration::from_secs(10),
        Duration::from_secs(3600),
        LifecycleConfig::default(),
    )
    .await;
    let bundle = InstallBundle::decode(&bundle_b64(data.path(), &console).await).unwrap();
    let csrs: Vec<String> = (0..1000)
        .map(|_| csr_for(&KeyPair::generate().unwrap()))
        .collect();
    let channel = defender::transport::channel(&bundle, None).await.unwrap();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let csrs = std::sync::Arc::new(std::sync::Mutex::new(csrs));
    for _ in 0..16 {
        let channel = channel.clone();
        let token = bundle.token.clone();
        let csrs = csrs.clone();
        tasks.spawn(async move {
            let mut codes = Vec::new();
            loop {
                let Some(csr) = csrs.lock().unwrap().pop() else {
                    return codes;
                };
                let res = EnrollmentClient::new(channel.clone())
                    .enroll(EnrollRequest {
                        token: token.clone(),
                        csr_pem: csr,
                        metadata: Some(metadata("flood")),
                        agent_version: "test".into(),
                        mode: Mode::Simulated as i32,
                    })
                    .await;
                codes.push(res.map(|_| ()).map_err(|s| s.code()));
            }
        });
    }
    let mut ok = 0u32;
    let mut exhausted = 0u32;
    while let Some(codes) = tasks.join_next().await {
        for c in codes.unwrap() {
            match c {
                Ok(()) => ok += 1,
                Err(tonic::Code::ResourceExhausted) => exhausted += 1,
                Err(other) => panic!("unexpected refusal {other:?}"),
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let limits = RateLimits::default();
    let allowed =
        f64::from(limits.enroll_per_token.burst) + limits.enroll_per_token.per_second * secs + 1.0;
    println!("1000 enrollments in {secs:.1} s: {ok} accepted, {exhausted} RESOURCE_EXHAUSTED");
    assert_eq!(ok + exhausted, 1000);
    assert!(ok >= 1);
    assert!(
        f64::from(ok) <= allowed,
        "{ok} accepted, at most {allowed:.0} allowed"
    );
    assert!(exhausted >= 700, "only {exhausted} refused");
    assert!(
        metric(
            &console,
            "defender_console_rate_limited_total{door=\"enroll\"} "
        )
        .await
            >= f64::from(exhausted)
    );
}

#[tokio::test]
async fn wrong_passwords_throttle_the_source_and_delay_the_user_for_a_bounded_time() {
    let data = tempfile::tempdir().unwrap();
    let max_delay = Duration::from_secs(2);
    let lifecycle = LifecycleConfig {
        rate_limits: RateLimits {
            login_failures_per_source: Rate::new(10, 1, Duration::from_secs(60)),
            login_free_failures: 5,
            login_base_delay: Duration::from_millis(250),
            login_max_delay: max_delay,
            ..RateLimits::default()
        },
        ..LifecycleConfig::default()
    };
    let console = start(
        data.path(),
        Duration::from_secs(10),
        Duration::from_secs(3600),
        lifecycle,
    )
    .await;
    let url = format!("http://{}/login", console.http_addr);
    let client_from = |ip: String| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let login = |client: reqwest::Client, user: String, password: String| {
        let url = url.clone();
        async move {
            let resp = client
                .post(&url)
                .form(&[("username", user), ("password", password)])
                .send()
                .await
                .unwrap();
            if resp.status() == StatusCode::TOO_MANY_REQUESTS {
                let retry: u64 = resp.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "Retry-After {retry}");
            }
            resp.status()
        }
    };

    // One source guessing 200 passwords (of 200 users, so that only the source limit is at
    // work): at most its burst of 10 is even checked.
    let attacker = client_from("127.0.0.1".into());
    let mut checked = 0;
    for i in 0..200 {
        match login(attacker.clone(), format!("user{i}"), "guess".into()).await {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(checked, 10, "passwords checked from one source");
    // Even the right password is refused from that source...
    assert_eq!(
        login(attacker.clone(), "admin".into(), ADMIN_PASSWORD.into()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...while the admin, from another source, is not affected.
    assert_eq!(
        login(
            client_from("127.0.0.2".into()),
            "admin".into(),
            ADMIN_PASSWORD.into()
        )
        .await,
        StatusCode::SEE_OTHER
    );

    // 200 wrong admin passwords from 200 sources (a distributed attacker): the admin account
    // gets a delay before each attempt, so the right password right after is refused...
    let mut checked = 0;
    for i in 0..200 {
        let source = format!("127.0.{}.{}", 1 + i / 200, 3 + i % 200);
        match login(client_from(source), "admin".into(), format!("guess-{i}")).await {
            StatusCode::UNAUTHORIZED => checked += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(checked < 50, "{checked} admin passwords checked");
    let admin = client_from("127.0.0.2".into());
    let started = Instant::now();
    assert_eq!(
        login(admin.clone(), "admin".into(), ADMIN_PASSWORD.into()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the right password was accepted at once after 200 failures"
    );
    // ...but only for a bounded time: the admin is never locked out.
    loop {
        match login(admin.clone(), "admin".into(), ADMIN_PASSWORD.into()).await {
            StatusCode::SEE_OTHER => break,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(
                    started.elapsed() < max_delay + Duration::from_secs(2),
                    "locked out"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(started.elapsed() <= max_delay + Duration::from_secs(2));
    assert!(
        metric(
            &console,
            "defender_console_rate_limited_total{door=\"login\"} "
        )
        .await
            >= 190.0
    );
}

// ---- item 8: retention ---------------------------------------------------------------------

fn exit_event(seq: u64) -> Event {
    Event {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        container: "app".into(),
        kind: Some(event::Kind::ProcessExit(ProcessExit {
            pid: 100 + seq as u32,
            exit_code: 0,
            signal: 0,
            status_known: true,
        })),
    }
}

fn audit_event(seq: u64) -> Event {
    Event {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        container: "app".into(),
        kind: Some(event::Kind::Audit(RuntimeAudit {
            rule: "no-shell".into(),
            effect: 1,
            message: format!("audit {seq}"),
            subject_seq: 0,
            pid: 1,
        })),
    }
}

async fn send_and_ack(
    tx: &mpsc::Sender<DefenderMessage>,
    inbound: &mut tonic::Streaming<ConsoleMessage>,
    events: Vec<Event>,
) {
    let last = events.iter().map(|e| e.seq).max().unwrap();
    tx.send(DefenderMessage {
        msg: Some(defender_message::Msg::Events(EventBatch { events })),
    })
    .await
    .unwrap();
    loop {
        match inbound.message().await.unwrap().expect("stream ended").msg {
            Some(console_message::Msg::Ack(a)) if a.up_to_seq >= last => return,
            _ => continue,
        }
    }
}

async fn count(console: &RunningConsole, sql: &str) -> i64 {
    defender_console::with_pool!(console.store.pool(), |p| sqlx::query_scalar(
        sqlx::AssertSqlSafe(sql.to_owned())
    )
    .fetch_one(p)
    .await
    .unwrap())
}

#[tokio::test]
async fn retention_deletes_old_events_and_retired_defenders_in_batches_while_ingest_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let lifecycle = LifecycleConfig {
        event_retention: Duration::from_secs(2),
        defender_purge_after: Duration::from_secs(2),
        retention_interval: Duration::from_millis(200),
        retention_batch: 50,
        ..LifecycleConfig::default()
    };
    let console = start(
        data.path(),
        Duration::from_secs(10),
        Duration::from_secs(3600),
        lifecycle,
    )
    .await;
    let bundle = InstallBundle::decode(&bundle_b64(data.path(), &console).await).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let live = identity::enroll(dir.path(), &bundle, metadata("live"), Mode::Standalone)
        .await
        .unwrap();
    let (tx, mut inbound) = open_stream(&bundle, &live).await;
    let events: Vec<Event> = (1..=300)
        .map(|s| {
            if s % 10 == 0 {
                audit_event(s)
            } else {
                exit_event(s)
            }
        })
        .collect();
    for chunk in events.chunks(100) {
        send_and_ack(&tx, &mut inbound, chunk.to_vec()).await;
    }
    console.store.sync_audit_index().await.unwrap();
    assert_eq!(
        count(&console, "SELECT COUNT(*) FROM audit_index").await,
        30
    );
    let max_before = count(&console, "SELECT MAX(rowid) FROM events").await;

    // Earlier streams of the live Defender: old session records, purged as history (the
    // live one is newest and stays).
    let mut older = Vec::new();
    for _ in 0..3 {
        older.push(open_stream(&bundle, &live).await);
    }
    drop((tx, inbound));
    let (tx, mut inbound) = open_stream(&bundle, &live).await;
    for (_t, mut i) in older {
        assert_eq!(end_status(&mut i, WAIT).await.code(), tonic::Code::Aborted);
    }
    assert!(
        count(
            &console,
            &format!(
                "SELECT COUNT(*) FROM sessions WHERE defender_id = '{}'",
                live.defender_id
            )
        )
        .await
            >= 5
    );

    // A Defender that enrolled and went away (never decommissioned).
    let gone_dir = tempfile::tempdir().unwrap();
    let gone = identity::enroll(gone_dir.path(), &bundle, metadata("gone"), Mode::Standalone)
        .await
        .unwrap();

    // A retired Defender (decommissioned) with events of its own.
    let old_dir = tempfile::tempdir().unwrap();
    let retired = identity::enroll(
        old_dir.path(),
        &bundle,
        metadata("retired"),
        Mode::Standalone,
    )
    .await
    .unwrap();
    {
        let (rtx, mut rin) = open_stream(&bundle, &retired).await;
        send_and_ack(&rtx, &mut rin, (1..=20).map(exit_event).collect()).await;
    }
    assert!(
        console
            .store
            .decommission_defender(&retired.defender_id)
            .await
            .unwrap()
    );

    // Meanwhile ingest goes on: every batch acked, every event stored, while retention runs.
    let mut seq = 300;
    let deadline = Instant::now() + WAIT;
    loop {
        seq += 1;
        tx.send(heartbeat()).await.unwrap();
        send_and_ack(&tx, &mut inbound, vec![exit_event(seq)]).await;
        let old_left = count(
            &console,
            &format!(
                "SELECT COUNT(*) FROM events WHERE defender_id = '{}' AND seq <= 300",
                live.defender_id
            ),
        )
        .await;
        let retired_gone = console
            .store
            .get_defender(&retired.defender_id)
            .await
            .unwrap()
            .is_none()
            && console
                .store
                .get_defender(&gone.defender_id)
                .await
                .unwrap()
                .is_none();
        if old_left == 0 && retired_gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not finish: {old_left} old events left, retired gone: {retired_gone}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Recent events stay (the newest always does); their rowids keep growing, so the audit
    // index and webhook cursors, which count in rowids, never skip one.
    let newest = count(&console, "SELECT MAX(rowid) FROM events").await;
    assert!(newest > max_before);
    send_and_ack(&tx, &mut inbound, vec![audit_event(seq + 1)]).await;
    assert!(count(&console, "SELECT MAX(rowid) FROM events").await > newest);
    console.store.sync_audit_index().await.unwrap();
    assert_eq!(
        count(
            &console,
            "SELECT COUNT(*) FROM audit_index a WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.rowid = a.id)"
        )
        .await,
        0,
        "audit index rows of deleted events"
    );
    assert_eq!(
        count(
            &console,
            &format!("SELECT COUNT(*) FROM audit_index WHERE seq = {}", seq + 1)
        )
        .await,
        1,
        "the audit stored after the purge is indexed"
    );
    // The retired Defender's sessions went with it, and its key still cannot enroll.
    assert_eq!(
        count(
            &console,
            &format!(
                "SELECT COUNT(*) FROM sessions WHERE defender_id = '{}'",
                retired.defender_id
            )
        )
        .await,
        0
    );
    let key = KeyPair::from_pem(&retired.key_pem).unwrap();
    let token = console
        .store
        .create_token(defender_console::store::TokenKind::Enrollment, "t", None)
        .await
        .unwrap();
    let err = EnrollmentClient::new(defender::transport::channel(&bundle, None).await.unwrap())
        .enroll(EnrollRequest {
            token,
            csr_pem: csr_for(&key),
            metadata: Some(metadata("zombie")),
            agent_version: "test".into(),
            mode: Mode::Standalone as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // The long-disconnected one is unknown now: its certificate gets UNAUTHENTICATED, which
    // tells a Defender to enroll again.
    let mut c = client(&bundle, &gone).await;
    let (gtx, grx) = mpsc::channel(1);
    gtx.send(hello()).await.unwrap();
    let err = c.connect(ReceiverStream::new(grx)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // Only the live stream's session is left of the live Defender's (old sessions go in a
    // retention pass of their own, which may come after the events'): poll with the deadline.
    let sessions_sql = format!(
        "SELECT COUNT(*) FROM sessions WHERE defender_id = '{}'",
        live.defender_id
    );
    loop {
        let left = count(&console, &sessions_sql).await;
        if left == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} sessions of the live Defender left, expected 1"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The live Defender is still there; the figures are on /metrics.
    assert!(
        console
            .store
            .get_defender(&live.defender_id)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        metric(
            &console,
            "defender_console_retention_purged_total{kind=\"events\"} "
        )
        .await
            >= 320.0
    );
    assert!(
        metric(
            &console,
            "defender_console_retention_purged_total{kind=\"defenders\"} "
        )
        .await
            >= 2.0
    );
    assert_eq!(
        metric(
            &console,
            "defender_console_retention_seconds{what=\"events\"} "
        )
        .await,
        2.0
    );
}

// ---- replicas sharing one database ---------------------------------------------------------

#[tokio::test]
async fn replicas_sharing_a_database_keep_one_stream_per_identity() {
    let data = tempfile::tempdir().unwrap();
    let hb = Duration::from_millis(200);
    let a = start(
        data.path(),
        hb,
        Duration::from_secs(3600),
        LifecycleConfig::default(),
    )
    .await;
    let b = start(
        data.path(),
        hb,
        Duration::from_secs(3600),
        LifecycleConfig::default(),
    )
    .await;
    let token = api_token(&a).await;
    let bundle_a = InstallBundle::decode(&bundle_b64(data.path(), &a).await).unwrap();
    let mut bundle_b = bundle_a.clone();
    bundle_b.console_addr = format!("127.0.0.1:{}", b.grpc_addr.port());
    let dir = tempfile::tempdir().unwrap();
    let id = identity::enroll(
        dir.path(),
        &bundle_a,
        metadata("replicated"),
        Mode::Standalone,
    )
    .await
    .unwrap();

    // A stream on replica A, then one on replica B: A's finds out at its next heartbeat.
    let (tx_a, mut in_a) = open_stream(&bundle_a, &id).await;
    let (tx_b, mut in_b) = open_stream(&bundle_b, &id).await;
    tx_a.send(heartbeat()).await.unwrap();
    let s = end_status(&mut in_a, Duration::from_secs(5)).await;
    assert_eq!(s.code(), tonic::Code::Aborted);
    assert_eq!(s.message(), "superseded by a newer stream");
    // Both replicas show the live stream on B as connected (it heartbeats every 100 ms).
    let beating = tokio::spawn(async move {
        while tx_b.send(heartbeat()).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    for console in [&a, &b] {
        let row = eventually("connected on both replicas", WAIT, || async {
            let list = defenders(console, &token, "").await;
            find(&list, &id.defender_id)
                .filter(|d| d["connected"] == true)
                .cloned()
        })
        .await;
        assert!(
            row["status"]
                .as_str()
                .unwrap()
                .starts_with("Connected for ")
        );
    }

    // Decommissioned through replica A: B closes its stream by itself.
    let (status, _) = api_post(
        &a,
        &token,
        &format!("/api/v1/defenders/{}/decommission", id.defender_id),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let s = end_status(&mut in_b, Duration::from_secs(5)).await;
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    beating.abort();
    drop(tx_a);
}
