//! Issue 14: a Defender's event counts are maintained at ingest (migration 0011's triggers, in
//! the writer's and the purges' transactions) and always equal a count of its events.

mod db_support;
mod forensics_support;
mod web_support;

use defender_console::store::forensics::EventQuery;
use defender_proto::v1::Protocol;
use forensics_support::*;
use web_support::{Web, hostile_metadata};

/// The kind-only count (from `event_counts`) and the same count made over `events` (a time
/// filter covering everything forces the scan).
async fn both(web: &Web, id: &str, kinds: Vec<&'static str>) -> (i64, i64) {
    let store = &web.console.store;
    let maintained = store
        .count_matching_events(
            id,
            &EventQuery {
                kinds: kinds.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let scanned = store
        .count_matching_events(
            id,
            &EventQuery {
                kinds,
                since_ms: Some(i64::MIN),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (maintained, scanned)
}

#[tokio::test]
async fn counts_follow_ingest_replays_and_purges() {
    let web = Web::start().await;
    for id in ["old", "new"] {
        web.connected_defender(id, &hostile_metadata(id, "web"))
            .await;
    }
    let store = &web.console.store;
    // "old" first, so that "new" holds the newest event (purges keep it).
    let old: Vec<_> = (1..=20)
        .map(|s| event(s, T0 + s as i64, notice("n")))
        .collect();
    store_events(&web, "old", old).await;
    let mut events = Vec::new();
    for s in 1..=30u64 {
        let kind = match s % 3 {
            0 => start(100 + s as u32, 1, b"/bin/sh", &[b"sh"]),
            1 => listen(7, Protocol::Tcp, "0.0.0.0", 8000 + s as u32, false),
            _ => notice("hello"),
        };
        events.push(event(s, T0 + 1000 + s as i64, kind));
    }
    store_events(&web, "new", events.clone()).await;
    // A replay of what is stored (and a little more) counts only the new events.
    let mut replay = events[20..].to_vec();
    replay.push(event(31, T0 + 2000, notice("late")));
    store_events(&web, "new", replay).await;

    assert_eq!(store.count_events("new").await.unwrap(), 31);
    assert_eq!(store.count_events("old").await.unwrap(), 20);
    assert_eq!(both(&web, "new", vec![]).await, (31, 31));
    assert_eq!(both(&web, "new", vec!["process_start"]).await, (10, 10));
    assert_eq!(
        both(&web, "new", vec!["notice", "network_listen"]).await,
        (21, 21)
    );

    // Retention removes old events in batches: the counts go down with them.
    let removed = store.purge_events_before(i64::MAX, 25).await.unwrap();
    assert_eq!(removed, 25);
    assert_eq!(store.count_events("old").await.unwrap(), 0);
    assert_eq!(both(&web, "new", vec![]).await, (26, 26));
    assert_eq!(
        both(&web, "new", vec!["notice"]).await.0,
        both(&web, "new", vec!["notice"]).await.1
    );

    // A purged Defender leaves no counters behind.
    store.decommission_defender("old").await.unwrap();
    let purged = store
        .purge_defenders(defender_console::store::now_ms() + 1, 10, 1000)
        .await
        .unwrap();
    assert!(purged.defenders >= 1);
    assert_eq!(store.count_events("old").await.unwrap(), 0);
    assert_eq!(both(&web, "new", vec![]).await, (26, 26));
}
