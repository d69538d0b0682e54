//! Issue 13, items 1 and 2, against a real Console process (the `defender-console` binary, real
//! mTLS, real SQLite): oversized strings are cut at ingest and the Console's memory and pages
//! stay bounded; batches with an impossible seq or timestamp are refused with a clear status,
//! nothing of them is stored or acked, and the Defender's state is not poisoned.

mod common;
mod db_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use defender::bundle::InstallBundle;
use defender::identity;
use defender_proto::v1::{
    ConsoleMessage, DefenderMessage, Event, EventBatch, Hello, Mode, ProcessStart, TaskMetadata,
    console_message, defender_message, defender_service_client::DefenderServiceClient, event,
};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const ADMIN_PASSWORD: &str = "hard-limits-test";
/// The attack of issue 13 item 1.
const ARGV_ATTACK_EVENTS: usize = 50;
const ARGV_ATTACK_BYTES: usize = 3_600 * 1024;
const HOSTNAME_ATTACK_DEFENDERS: usize = 20;
const HOSTNAME_ATTACK_BYTES: usize = 3_800 * 1024;
/// Largest page or API response accepted after the attack.
const PAGE_BUDGET: usize = 1024 * 1024;

fn console_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_defender-console"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct ConsoleProc {
    child: Child,
    grpc: String,
    http: String,
}

impl ConsoleProc {
    async fn start(data: &Path) -> Self {
        let (grpc, http) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let child = Command::new(console_bin())
            .args(["serve", "--data-dir"])
            .arg(data)
            .envs(db_support::env(data))
            .args(["--grpc-listen", &grpc, "--http-listen", &http])
            .args(["--heartbeat-interval", "5s"])
            .env("CONSOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let c = Self { child, grpc, http };
        let url = c.url("/healthz");
        common::eventually("console healthy", Duration::from_secs(30), || async {
            reqwest::get(&url)
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        c
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Resident memory of the Console process, bytes.
    fn rss(&self) -> u64 {
        let pid = self.child.id().expect("console running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb * 1024
    }
}

fn bundle(data: &Path, grpc: &str) -> InstallBundle {
    let out = std::process::Command::new(console_bin())
        .args(["bundle", "--data-dir"])
        .arg(data)
        .envs(db_support::env(data))
        .args(["--console-addr", grpc])
        .output()
        .unwrap();
    assert!(out.status.success());
    InstallBundle::decode(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

fn api_token(data: &Path) -> String {
    let out = std::process::Command::new(console_bin())
        .args(["token", "create", "--data-dir"])
        .arg(data)
        .envs(db_support::env(data))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn metadata(host: &str) -> TaskMetadata {
    TaskMetadata {
        hostname: host.into(),
        family: "limits".into(),
        revision: "1".into(),
        ..Default::default()
    }
}

fn hello(metadata: TaskMetadata) -> DefenderMessage {
    DefenderMessage {
        msg: Some(defender_message::Msg::Hello(Hello {
            metadata: Some(metadata),
            agent_version: "test".into(),
            mode: Mode::Standalone as i32,
            last_acked_seq: 0,
            capture: None,
        })),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn process_event(seq: u64, time_ms: i64, argv: Vec<Vec<u8>>) -> Event {
    Event {
        seq,
        time_ms,
        container: "app".into(),
        kind: Some(event::Kind::ProcessStart(ProcessStart {
            pid: 100,
            ppid: 1,
            exe: b"/bin/sh".to_vec(),
            argv,
            ..Default::default()
        })),
    }
}

fn batch(events: Vec<Event>) -> DefenderMessage {
    DefenderMessage {
        msg: Some(defender_message::Msg::Events(EventBatch { events })),
    }
}

/// An open Connect stream of an enrolled Defender.
struct RawStream {
    tx: mpsc::Sender<DefenderMessage>,
    inbound: tonic::Streaming<ConsoleMessage>,
    last_stored_seq: u64,
}

async fn enroll(bundle: &InstallBundle, dir: &Path) -> identity::Identity {
    identity::enroll(dir, bundle, metadata("limits"), Mode::Standalone)
        .await
        .unwrap()
}

async fn open_stream(
    bundle: &InstallBundle,
    id: &identity::Identity,
    metadata: TaskMetadata,
) -> RawStream {
    try_open_stream(bundle, id, metadata).await.unwrap()
}

async fn try_open_stream(
    bundle: &InstallBundle,
    id: &identity::Identity,
    metadata: TaskMetadata,
) -> Result<RawStream, tonic::Status> {
    let channel = defender::transport::channel(bundle, Some(id))
        .await
        .unwrap();
    let mut client = DefenderServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello(metadata)).await.unwrap();
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    let last_stored_seq = match inbound.message().await?.unwrap().msg {
        Some(console_message::Msg::Welcome(w)) => w.last_stored_seq,
        other => panic!("expected Welcome, got {other:?}"),
    };
    Ok(RawStream {
        tx,
        inbound,
        last_stored_seq,
    })
}

/// The next Ack's seq, or the status that ended the stream.
async fn next_ack(inbound: &mut tonic::Streaming<ConsoleMessage>) -> Result<u64, tonic::Status> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), inbound.message())
            .await
            .expect("console answered")?
        {
            Some(ConsoleMessage {
                msg: Some(console_message::Msg::Ack(a)),
            }) => return Ok(a.up_to_seq),
            Some(_) => continue,
            None => return Err(tonic::Status::unknown("stream ended without status")),
        }
    }
}

async fn login(http: &reqwest::Client, console: &ConsoleProc) -> String {
    let resp = http
        .post(console.url("/login"))
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("defender_session="))
        .map(|rest| rest.split(';').next().unwrap().to_owned())
        .expect("session cookie")
}

/// GETs `path` with the session cookie or the API token; returns the body (status 200 asserted).
async fn fetch(http: &reqwest::Client, console: &ConsoleProc, path: &str, auth: &Auth) -> String {
    let req = http.get(console.url(path));
    let req = match auth {
        Auth::Cookie(c) => req.header("Cookie", format!("defender_session={c}")),
        Auth::Token(t) => req.bearer_auth(t),
    };
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.text().await.unwrap()
}

enum Auth {
    Cookie(String),
    Token(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn string_size_attack_keeps_memory_and_pages_bounded() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let console = ConsoleProc::start(data.path()).await;
    let bundle = bundle(data.path(), &console.grpc);
    let token = Auth::Token(api_token(data.path()));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = Auth::Cookie(login(&http, &console).await);

    // The argv attacker: an enrolled Defender, connected before the idle figure is taken.
    let argv_dir = tempfile::tempdir().unwrap();
    let argv_id = enroll(&bundle, argv_dir.path()).await;
    let mut argv_stream = open_stream(&bundle, &argv_id, metadata("argv-attacker")).await;
    let pages = [
        "/manage/defenders".to_owned(),
        "/manage/defenders/rows".to_owned(),
        format!("/manage/defenders/{}", argv_id.defender_id),
    ];
    let apis = [
        "/api/v1/defenders".to_owned(),
        format!(
            "/api/v1/defenders/{}/events?limit=1000",
            argv_id.defender_id
        ),
        format!("/api/v1/events?defender={}&limit=1000", argv_id.defender_id),
    ];
    for p in &pages {
        fetch(&http, &console, p, &cookie).await;
    }
    for p in &apis {
        fetch(&http, &console, p, &token).await;
    }
    let idle = console.rss();

    for i in 0..ARGV_ATTACK_EVENTS {
        let seq = i as u64 + 1;
        let argv = vec![b"sh".to_vec(), vec![b'A'; ARGV_ATTACK_BYTES]];
        argv_stream
            .tx
            .send(batch(vec![process_event(seq, now_ms(), argv)]))
            .await
            .unwrap();
        assert_eq!(next_ack(&mut argv_stream.inbound).await.unwrap(), seq);
    }
    let mut streams = Vec::new();
    let mut hostile_ids = Vec::new();
    for i in 0..HOSTNAME_ATTACK_DEFENDERS {
        let dir = tempfile::tempdir().unwrap();
        let id = enroll(&bundle, dir.path()).await;
        // A Hello that large is refused outright (its stream's buffer would stay that large)...
        let host = format!("h{i}-{}", "x".repeat(HOSTNAME_ATTACK_BYTES));
        let refused = try_open_stream(&bundle, &id, metadata(&host))
            .await
            .err()
            .expect("a 3.8 MiB Hello is refused");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().contains("exceeds the limit"),
            "{refused:?}"
        );
        // ...and one within the Hello limit is stored with its hostname cut and marked.
        let host = format!("h{i}-{}", "x".repeat(60 * 1024));
        streams.push(open_stream(&bundle, &id, metadata(&host)).await);
        hostile_ids.push(id.defender_id);
    }

    // What was stored is cut and marked.
    let list: serde_json::Value =
        serde_json::from_str(&fetch(&http, &console, "/api/v1/defenders", &token).await).unwrap();
    for id in &hostile_ids {
        let d = list
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id.as_str())
            .expect("hostile Defender listed");
        let host = d["hostname"].as_str().unwrap();
        assert!(host.len() <= 256, "hostname of {} bytes stored", host.len());
        assert!(host.ends_with("…[truncated]"), "cut not marked: {host:.40}");
    }
    let events: serde_json::Value = serde_json::from_str(
        &fetch(
            &http,
            &console,
            &format!(
                "/api/v1/defenders/{}/events?limit=1000",
                argv_id.defender_id
            ),
            &token,
        )
        .await,
    )
    .unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), ARGV_ATTACK_EVENTS, "every event stored");
    for e in events {
        let argv = e["detail"]["argv"]
            .as_array()
            .or_else(|| e["argv"].as_array())
            .unwrap_or_else(|| panic!("argv in {e:.200}"));
        let bytes: usize = argv.iter().map(|a| a.as_str().unwrap().len() + 1).sum();
        assert!(
            bytes <= defender_proto::MAX_ARGV_BYTES,
            "argv of {bytes} bytes stored"
        );
        let flagged = e["detail"]["argv_truncated"]
            .as_bool()
            .or_else(|| e["argv_truncated"].as_bool());
        assert_eq!(flagged, Some(true), "cut argv flagged");
    }

    // Every page and API response stays small, and so does the Console.
    for p in &pages {
        let body = fetch(&http, &console, p, &cookie).await;
        eprintln!("{p}: {} bytes", body.len());
        assert!(body.len() <= PAGE_BUDGET, "{p} is {} bytes", body.len());
    }
    for p in &apis {
        let body = fetch(&http, &console, p, &token).await;
        eprintln!("{p}: {} bytes", body.len());
        assert!(body.len() <= PAGE_BUDGET, "{p} is {} bytes", body.len());
    }
    // The list is paginated: a page holds `limit` Defenders and says where the next one is.
    let Auth::Token(t) = &token else {
        unreachable!()
    };
    let page = http
        .get(console.url("/api/v1/defenders?limit=5&offset=5"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_eq!(page.headers()["x-total-count"], "21");
    assert_eq!(
        page.headers()["link"],
        "</api/v1/defenders?limit=5&offset=10>; rel=\"next\""
    );
    let page: serde_json::Value = page.json().await.unwrap();
    assert_eq!(page.as_array().unwrap().len(), 5);
    let after = console.rss();
    eprintln!(
        "console RSS: idle {} KiB, after the attack {} KiB ({:.2}x)",
        idle / 1024,
        after / 1024,
        after as f64 / idle as f64
    );
    assert!(
        after <= 2 * idle,
        "RSS grew from {idle} to {after} bytes under the string-size attack"
    );
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_seq_and_time_are_refused_and_do_not_poison_the_defender() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let console = ConsoleProc::start(data.path()).await;
    let bundle = bundle(data.path(), &console.grpc);
    let token = api_token(data.path());
    let dir = tempfile::tempdir().unwrap();
    let id = enroll(&bundle, dir.path()).await;
    let argv = || vec![b"true".to_vec()];

    let mut s = open_stream(&bundle, &id, metadata("seq")).await;
    s.tx.send(batch(vec![process_event(1, now_ms(), argv())]))
        .await
        .unwrap();
    assert_eq!(next_ack(&mut s.inbound).await.unwrap(), 1);

    // Each bad batch (a good event beside the bad one) ends the stream with INVALID_ARGUMENT
    // naming the problem, and neither event is stored or acked.
    let bad_batches: [(&str, Vec<Event>); 4] = [
        (
            "outside the allowed range",
            vec![
                process_event(2, now_ms(), argv()),
                process_event((1 << 63) + 5, now_ms(), argv()),
            ],
        ),
        (
            "outside the allowed range",
            vec![process_event(u64::MAX, now_ms(), argv())],
        ),
        (
            "outside the plausible range",
            vec![
                process_event(2, now_ms(), argv()),
                process_event(3, -5, argv()),
            ],
        ),
        (
            "outside the plausible range",
            vec![process_event(2, now_ms() + 30 * 86_400_000, argv())],
        ),
    ];
    for (why, events) in bad_batches {
        let mut s = open_stream(&bundle, &id, metadata("seq")).await;
        assert_eq!(s.last_stored_seq, 1, "state unchanged by the refused batch");
        s.tx.send(batch(events)).await.unwrap();
        let status = next_ack(&mut s.inbound)
            .await
            .expect_err("a bad batch is not acked");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(why), "{}", status.message());
    }

    // The Defender carries on where it was: its next good event is stored and acked.
    let mut s = open_stream(&bundle, &id, metadata("seq")).await;
    assert_eq!(s.last_stored_seq, 1);
    s.tx.send(batch(vec![process_event(2, now_ms(), argv())]))
        .await
        .unwrap();
    assert_eq!(next_ack(&mut s.inbound).await.unwrap(), 2);
    let events: serde_json::Value = reqwest::Client::new()
        .get(console.url(&format!("/api/v1/defenders/{}/events", id.defender_id)))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seqs: Vec<i64> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 1], "only the good events are stored");
}

/// Item 2, the Defender's side: a batch the Console refuses (here an event whose clock reads
/// 1970) is kept in the spool and retried with growing backoff, not in a tight reconnect loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batch_backs_off_instead_of_reconnecting_in_a_tight_loop() {
    use defender::link::{Backoff, Link, LinkConfig, LinkState};
    use defender::outbox::Outbox;
    use defender::spool::SpoolConfig;

    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let console = common::start_console(data.path(), Duration::from_millis(200)).await;
    let bundle = InstallBundle::decode(&common::bundle_b64(data.path(), &console).await).unwrap();
    let outbox = Outbox::open(&agent.path().join("spool"), SpoolConfig::default()).unwrap();
    outbox
        .push(process_event(0, 5, vec![b"true".to_vec()]))
        .expect("spooled");
    let link = Link::spawn(LinkConfig {
        bundle,
        data_dir: agent.path().to_owned(),
        mode: Mode::Standalone,
        metadata: metadata("refused"),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
        },
        outbox: outbox.clone(),
        policy: None,
        waas: None,
        capture: None,
    });
    let mut state = link.state();
    let reason = tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(
            |s| matches!(s, LinkState::Disconnected { reason } if reason.contains("refused")),
        ),
    )
    .await
    .expect("the refusal reaches the link")
    .unwrap()
    .clone();
    assert!(
        format!("{reason:?}").contains("plausible range"),
        "{reason:?}"
    );
    let sessions = || async {
        defender_console::with_pool!(console.store.pool(), |p| sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sessions"
        )
        .fetch_one(p)
        .await
        .unwrap())
    };
    // Measure the reconnect rate over a window: doubling from 50 ms allows about 6 streams in
    // 4 s; the old behaviour (backoff reset after every Welcome) made about 40.
    let before = sessions().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let streams = sessions().await - before;
    assert!(
        streams <= 8,
        "{streams} streams in 4 s: a tight reconnect loop"
    );
    // Nothing was stored or acked; the event is still spooled for when the cause is fixed.
    let stored: i64 = defender_console::with_pool!(console.store.pool(), |p| sqlx::query_scalar(
        "SELECT COUNT(*) FROM events"
    )
    .fetch_one(p)
    .await
    .unwrap());
    assert_eq!(stored, 0);
    assert_eq!(outbox.stats().pending, 1, "the refused event stays spooled");
    link.stop();
}
