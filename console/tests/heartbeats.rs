//! Batched heartbeats (store::heartbeats): one batch records the health of every Defender whose
//! session is open and tells each beat whether its session is; a beat of an ended session
//! changes nothing. Through the writer task, concurrent beats share transactions.

mod common;
mod db_support;
mod runtime_support;

use std::time::Duration;

use defender_console::store::heartbeats::{Beat, HeartbeatWriter};
use defender_console::store::{Health, SessionRef};
use defender_proto::v1::{Hello, Mode};
use runtime_support::*;

fn health(dropped: u64) -> Health {
    Health {
        queue_depth: 1,
        spool_bytes: 2,
        dropped_events: dropped,
        rss_bytes: 3,
        cpu_centipercent: 4,
    }
}

fn beat(id: &str, session: SessionRef, dropped: u64) -> Beat {
    Beat {
        defender_id: id.to_owned(),
        session,
        health: health(dropped),
        alive_ms: Some(1_000),
    }
}

#[tokio::test]
async fn a_batch_records_open_sessions_and_reports_the_ended_ones() {
    let data = tempfile::tempdir().unwrap();
    let console = common::start_console(data.path(), Duration::from_secs(10)).await;
    let store = &console.store;
    let mut sessions = Vec::new();
    for i in 0..5 {
        let id = format!("d{i}");
        add_defender(store, &id, &metadata(&format!("host-{i}"), "shop")).await;
        let hello = Hello {
            mode: Mode::Standalone as i32,
            ..Default::default()
        };
        let s = store
            .start_session(&id, &hello, "standalone", "test", 10_000)
            .await
            .unwrap();
        sessions.push((id, s));
    }
    // d3's stream was superseded: its session ended.
    store.end_session(sessions[3].1).await.unwrap();
    let beats: Vec<Beat> = sessions
        .iter()
        .enumerate()
        .map(|(i, (id, s))| beat(id, *s, 100 + i as u64))
        .collect();
    let open = store.record_heartbeats(&beats).await.unwrap();
    assert_eq!(open, vec![true, true, true, false, true]);
    for (i, (id, _)) in sessions.iter().enumerate() {
        let d = store.get_defender(id).await.unwrap().unwrap();
        let want = if i == 3 { 0 } else { 100 + i as i64 };
        assert_eq!(d.dropped_events, want, "{id}");
    }

    // Through the writer: 200 concurrent beats, each answered for its own session.
    let writer = HeartbeatWriter::spawn(store.clone());
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200u64 {
        let (id, s) = sessions[(n % 5) as usize].clone();
        let writer = writer.clone();
        tasks.spawn(async move { (n % 5, writer.beat(beat(&id, s, n)).await.unwrap()) });
    }
    let mut answered = 0;
    while let Some(r) = tasks.join_next().await {
        let (i, open) = r.unwrap();
        assert_eq!(open, i != 3, "d{i}");
        answered += 1;
    }
    assert_eq!(answered, 200);
}
