//! Issue 13, item 9: steps of the Console host's wall clock. A real Console (gRPC mTLS, SQLite)
//! and a real Defender link; the step is simulated on the Console's clock
//! (`defender_console::clock::step_for_tests`), the monotonic clock runs on, as on a host whose
//! clock NTP steps. Neither a false disconnect nor a wrong duration may outlast one heartbeat
//! interval. One test in this binary: the step applies to the whole process.

mod common;
mod db_support;

use std::time::Duration;

use common::*;
use defender::bundle::InstallBundle;
use defender::link::{Backoff, Link, LinkConfig, LinkState};
use defender::outbox::Outbox;
use defender::spool::SpoolConfig;
use defender_proto::v1::{Mode, TaskMetadata};

const HEARTBEAT: Duration = Duration::from_millis(500);
const HOUR_MS: i64 = 3_600_000;

/// The Defender's entry in the API list, if listed.
async fn entry(
    console: &defender_console::server::RunningConsole,
    token: &str,
    id: &str,
) -> Option<serde_json::Value> {
    defenders(console, token, "")
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
}

/// Seconds of "Connected for …" (None when disconnected or not listed).
fn connected_secs(d: Option<&serde_json::Value>) -> Option<u64> {
    let d = d?;
    if d["connected"] != true {
        return None;
    }
    let text = d["status"].as_str().unwrap();
    let rest = text.strip_prefix("Connected for ")?;
    let mut secs = 0;
    for part in rest.split(' ') {
        let (n, unit) = part.split_at(part.len() - 1);
        let n: u64 = n.parse().unwrap();
        secs += n * match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => panic!("unit in {text}"),
        };
    }
    Some(secs)
}

/// Reads the status repeatedly for `window`: it must say connected, for at least `min_secs`
/// and less than `max_secs`, every time once `grace` has passed.
async fn stays_connected(
    console: &defender_console::server::RunningConsole,
    token: &str,
    id: &str,
    grace: Duration,
    window: Duration,
    (min_secs, max_secs): (u64, u64),
) {
    let start = tokio::time::Instant::now();
    while start.elapsed() < window {
        let d = entry(console, token, id).await;
        let secs = connected_secs(d.as_ref());
        let ok = secs.is_some_and(|s| (min_secs..max_secs).contains(&s));
        assert!(
            ok || start.elapsed() < grace,
            "{:?} after the step: {:?}",
            start.elapsed(),
            d.map(|d| d["status"].clone())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_steps_neither_disconnect_nor_misdate_a_live_defender() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), HEARTBEAT).await;
    let token = api_token(&console).await;
    let bundle = bundle_b64(data.path(), &console).await;
    let link = Link::spawn(LinkConfig {
        bundle: InstallBundle::decode(&bundle).unwrap(),
        data_dir: agent.path().to_owned(),
        mode: Mode::Standalone,
        metadata: TaskMetadata {
            hostname: "clock".into(),
            ..Default::default()
        },
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        },
        outbox: Outbox::open(&agent.path().join("spool"), SpoolConfig::default()).unwrap(),
        policy: None,
        waas: None,
        capture: None,
    });
    let mut state = link.state();
    let id = match tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| matches!(s, LinkState::Connected { .. })),
    )
    .await
    .expect("connected")
    .unwrap()
    .clone()
    {
        LinkState::Connected { defender_id } => defender_id,
        _ => unreachable!(),
    };
    eventually("connected for 2 s", Duration::from_secs(20), || async {
        connected_secs(entry(&console, &token, &id).await.as_ref()).filter(|s| *s >= 2)
    })
    .await;

    // 1 h back: the stream never looks disconnected, and "Connected for" keeps counting from
    // the stream's real start (it read "0s" for the whole hour before).
    defender_console::clock::step_for_tests(-HOUR_MS);
    stays_connected(
        &console,
        &token,
        &id,
        Duration::ZERO,
        HEARTBEAT * 4,
        (2, 60),
    )
    .await;

    // 1 h forward (back to the real time, then an hour past it): a false "disconnected" and a
    // wrong duration last at most until the next heartbeat. Before, the Defender dropped out of
    // the list, then read "Connected for 1h 0m".
    defender_console::clock::step_for_tests(2 * HOUR_MS);
    stays_connected(
        &console,
        &token,
        &id,
        HEARTBEAT + Duration::from_millis(300),
        HEARTBEAT * 4,
        (2, 60),
    )
    .await;
    link.stop();
}
