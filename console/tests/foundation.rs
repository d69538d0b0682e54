//! End to end: real Console (gRPC mTLS + HTTP + SQLite file) and real Defender link code.

mod common;
mod db_support;

use std::time::Duration;

use common::*;
use defender::bundle::InstallBundle;
use defender::identity;
use defender::link::{Backoff, Link, LinkConfig, LinkState};
use defender::outbox::Outbox;
use defender::spool::SpoolConfig;
use defender_proto::v1::{
    ConsoleMessage, DefenderMessage, Event, EventBatch, Hello, Mode, ProcessExit, TaskMetadata,
    console_message, defender_message, defender_service_client::DefenderServiceClient, event,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const HEARTBEAT: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(20);

fn metadata(host: &str) -> TaskMetadata {
    TaskMetadata {
        hostname: host.into(),
        cluster: "demo-cluster".into(),
        family: "web".into(),
        revision: "7".into(),
        ..Default::default()
    }
}

fn link_config(bundle: &str, dir: &std::path::Path, host: &str) -> LinkConfig {
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

fn find<'a>(list: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?.iter().find(|d| d["id"] == id)
}

#[tokio::test]
async fn defender_connects_heartbeats_and_disconnects() {
    let data = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), HEARTBEAT).await;
    let token = api_token(&console).await;
    let bundle = bundle_b64(data.path(), &console).await;

    let before = defender_console::store::now_ms();
    let link = Link::spawn(link_config(&bundle, agent_dir.path(), "task-host-1"));
    let id = wait_connected(&link).await;

    // A heartbeat is stored (rss is only known from one).
    let row = eventually("heartbeat stored", WAIT, || async {
        let list = defenders(&console, &token, "").await;
        find(&list, &id)
            .filter(|d| d["rss_bytes"].as_u64().unwrap_or(0) > 0)
            .cloned()
    })
    .await;
    assert_eq!(row["connected"], true);
    assert_eq!(row["hostname"], "task-host-1");
    assert_eq!(row["cluster"], "demo-cluster");
    assert_eq!(row["mode"], "standalone");
    assert!(
        row["status"]
            .as_str()
            .unwrap()
            .starts_with("Connected for ")
    );
    let since = row["connected_since"].as_str().expect("connected_since");
    let since_ms =
        time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
            / 1_000_000;
    let now = defender_console::store::now_ms();
    assert!(
        since_ms as i64 >= before - 1000 && since_ms as i64 <= now,
        "connected_since {since} outside the test's window"
    );
    let connected = defenders(&console, &token, "?connected=true").await;
    assert!(find(&connected, &id).is_some());
    let disconnected = defenders(&console, &token, "?connected=false").await;
    assert!(find(&disconnected, &id).is_none());

    // The Defender dies: the Console reports it disconnected.
    link.stop();
    let row = eventually("reported disconnected", WAIT, || async {
        let list = defenders(&console, &token, "?connected=false").await;
        find(&list, &id).cloned()
    })
    .await;
    assert!(
        row["status"]
            .as_str()
            .unwrap()
            .starts_with("Disconnected for ")
    );
    assert!(row["connected_since"].is_null());
}

/// Enrolls through the real enrollment path and returns a raw client holding the identity.
async fn enrolled_client(
    bundle_b64: &str,
    dir: &std::path::Path,
) -> (
    identity::Identity,
    DefenderServiceClient<tonic::transport::Channel>,
) {
    let bundle = InstallBundle::decode(bundle_b64).unwrap();
    let id = identity::enroll(dir, &bundle, metadata("raw"), Mode::Standalone)
        .await
        .unwrap();
    let channel = defender::transport::channel(&bundle, Some(&id))
        .await
        .unwrap();
    (id, DefenderServiceClient::new(channel))
}

fn hello() -> DefenderMessage {
    DefenderMessage {
        msg: Some(defender_message::Msg::Hello(Hello {
            metadata: Some(metadata("raw")),
            agent_version: "test".into(),
            mode: Mode::Standalone as i32,
            last_acked_seq: 0,
            capture: None,
        })),
    }
}

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

async fn next_ack(inbound: &mut tonic::Streaming<ConsoleMessage>) -> u64 {
    loop {
        match inbound.message().await.unwrap().expect("stream ended").msg {
            Some(console_message::Msg::Ack(a)) => return a.up_to_seq,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn replayed_events_are_stored_once_and_acked_after_commit() {
    let data = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), HEARTBEAT).await;
    let bundle = bundle_b64(data.path(), &console).await;
    let (id, mut client) = enrolled_client(&bundle, agent_dir.path()).await;

    let (tx, rx) = mpsc::channel(8);
    tx.send(hello()).await.unwrap();
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match inbound.message().await.unwrap().unwrap().msg {
        Some(console_message::Msg::Welcome(w)) => {
            assert_eq!(w.last_stored_seq, 0);
            assert_eq!(w.defender_id, id.defender_id);
            assert_eq!(w.heartbeat_interval_ms, 200);
        }
        other => panic!("expected Welcome, got {other:?}"),
    }
    let batch = |seqs: &[u64]| DefenderMessage {
        msg: Some(defender_message::Msg::Events(EventBatch {
            events: seqs.iter().map(|s| exit_event(*s)).collect(),
        })),
    };
    tx.send(batch(&[1, 2, 3])).await.unwrap();
    assert_eq!(next_ack(&mut inbound).await, 3);
    // Acked means committed: the rows are there now, with no polling.
    assert_eq!(
        console.store.count_events(&id.defender_id).await.unwrap(),
        3
    );
    tx.send(batch(&[2, 3, 4])).await.unwrap();
    assert_eq!(next_ack(&mut inbound).await, 4);
    assert_eq!(
        console.store.count_events(&id.defender_id).await.unwrap(),
        4
    );
    let stored = console
        .store
        .list_events(&id.defender_id, None, 10)
        .await
        .unwrap();
    let seqs: Vec<i64> = stored.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![4, 3, 2, 1]);
    assert_eq!(stored[0].kind, "process_exit");
    assert_eq!(stored[0].pid, Some(104));

    // A new stream learns where the Console's data ends.
    drop(tx);
    let (tx, rx) = mpsc::channel(8);
    tx.send(hello()).await.unwrap();
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    match inbound.message().await.unwrap().unwrap().msg {
        Some(console_message::Msg::Welcome(w)) => assert_eq!(w.last_stored_seq, 4),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

#[tokio::test]
async fn silent_stream_is_disconnected_after_three_missed_heartbeats() {
    let data = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), HEARTBEAT).await;
    let token = api_token(&console).await;
    let bundle = bundle_b64(data.path(), &console).await;
    let (id, mut client) = enrolled_client(&bundle, agent_dir.path()).await;

    let (tx, rx) = mpsc::channel(8);
    tx.send(hello()).await.unwrap();
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    inbound.message().await.unwrap().unwrap();
    let started = tokio::time::Instant::now();
    let list = defenders(&console, &token, "").await;
    assert_eq!(find(&list, &id.defender_id).unwrap()["connected"], true);
    // The stream stays open but sends no heartbeat: disconnected after 3 intervals, not before.
    eventually("silent defender disconnected", WAIT, || async {
        let list = defenders(&console, &token, "?connected=false").await;
        find(&list, &id.defender_id).cloned()
    })
    .await;
    assert!(
        started.elapsed() >= HEARTBEAT * 3 - Duration::from_millis(50),
        "disconnected too early: {:?}",
        started.elapsed()
    );
    drop(tx);
}

#[tokio::test]
async fn refused_peers() {
    let data = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), HEARTBEAT).await;
    let bundle_text = bundle_b64(data.path(), &console).await;
    let bundle = InstallBundle::decode(&bundle_text).unwrap();

    // A bad enrollment token.
    let mut bad = bundle.clone();
    bad.token = "dfe_not-a-real-token".into();
    let dir = tempfile::tempdir().unwrap();
    let err = identity::enroll(dir.path(), &bad, metadata("x"), Mode::Standalone)
        .await
        .expect_err("bad token must be refused");
    assert!(err.is_permanent(), "{err}");

    // No client certificate: Connect is refused.
    let channel = defender::transport::channel(&bundle, None).await.unwrap();
    let (tx, rx) = mpsc::channel(1);
    tx.send(hello()).await.unwrap();
    let res = DefenderServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await;
    assert_eq!(
        res.expect_err("no cert must be refused").code(),
        tonic::Code::Unauthenticated
    );

    // A certificate from another CA (another Console's): the TLS handshake or first RPC fails.
    let other_data = tempfile::tempdir().unwrap();
    let other = start_console(other_data.path(), HEARTBEAT).await;
    let other_bundle = InstallBundle::decode(&bundle_b64(other_data.path(), &other).await).unwrap();
    let foreign = identity::enroll(dir.path(), &other_bundle, metadata("x"), Mode::Standalone)
        .await
        .unwrap();
    let result = async {
        let channel = defender::transport::channel(&bundle, Some(&foreign))
            .await
            .map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel(1);
        tx.send(hello()).await.unwrap();
        let mut inbound = DefenderServiceClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        inbound.message().await.map_err(|e| e.to_string())
    }
    .await;
    assert!(result.is_err(), "foreign certificate accepted: {result:?}");

    // A decommissioned Defender is refused even with a valid certificate.
    let good_dir = tempfile::tempdir().unwrap();
    let (id, mut client) = enrolled_client(&bundle_text, good_dir.path()).await;
    assert!(
        console
            .store
            .decommission_defender(&id.defender_id)
            .await
            .unwrap()
    );
    let (tx, rx) = mpsc::channel(1);
    tx.send(hello()).await.unwrap();
    let res = client.connect(ReceiverStream::new(rx)).await;
    assert_eq!(
        res.expect_err("decommissioned").code(),
        tonic::Code::PermissionDenied
    );
}

#[tokio::test]
async fn console_restart_keeps_ca_and_defender_reconnects_by_itself() {
    let data = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), HEARTBEAT).await;
    let ca_before = std::fs::read_to_string(data.path().join("ca.pem")).unwrap();
    let bundle = bundle_b64(data.path(), &console).await;
    let link = Link::spawn(link_config(&bundle, agent_dir.path(), "restart-host"));
    let id = wait_connected(&link).await;

    let port = console.grpc_addr.port();
    console.shutdown();
    console.wait().await.unwrap();
    let mut state = link.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, LinkState::Disconnected { .. })),
    )
    .await
    .expect("link noticed the Console going away")
    .unwrap();

    let console = restart_console(data.path(), HEARTBEAT, port).await;
    assert_eq!(
        std::fs::read_to_string(data.path().join("ca.pem")).unwrap(),
        ca_before
    );
    let again = wait_connected(&link).await;
    assert_eq!(
        again, id,
        "same identity after the restart, no re-enrollment"
    );
    let token = api_token(&console).await;
    let row = eventually("connected after restart", WAIT, || async {
        let list = defenders(&console, &token, "?connected=true").await;
        find(&list, &id).cloned()
    })
    .await;
    assert!(
        row["status"]
            .as_str()
            .unwrap()
            .starts_with("Connected for ")
    );
    link.stop();
}
