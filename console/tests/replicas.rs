//! Console replicas on one database (issue 16): two Consoles started on the same data directory
//! share its database (SQLite file, or, under `deploy/test-postgres.sh`, one PostgreSQL
//! database), as replicas behind a load balancer share PostgreSQL. A webhook configured on both
//! is delivered once, by the replica holding its lease, and taken over when that replica dies;
//! a policy saved on one reaches the other's Defender streams (within a second on PostgreSQL,
//! by LISTEN/NOTIFY).

mod common;
mod db_support;
mod runtime_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use defender_console::webhook::{self, Timing};
use runtime_support::*;
use tokio::net::TcpListener;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Deliveries per audit id (`X-Defender-Audit-Id`), and how many arrived in all.
#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<watch::Sender<usize>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("x-defender-audit-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned();
    *r.seen.lock().unwrap().entry(id).or_default() += 1;
    r.total.send_modify(|n| *n += 1);
    StatusCode::NO_CONTENT
}

async fn start_receiver() -> (String, Receiver) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/audits", listener.local_addr().unwrap());
    let r = Receiver::default();
    let app = Router::new()
        .route("/audits", post(receive))
        .with_state(r.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

impl Receiver {
    /// Waits until `n` deliveries arrived in all.
    async fn wait_total(&self, n: usize) {
        let mut rx = self.total.subscribe();
        tokio::time::timeout(WAIT, rx.wait_for(|t| *t >= n))
            .await
            .unwrap_or_else(|_| panic!("{n} deliveries did not arrive in time"))
            .unwrap();
    }

    fn counts(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().clone()
    }
}

fn timing(lease: Duration) -> Timing {
    Timing {
        poll: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        request_timeout: Duration::from_secs(5),
        lease,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_delivered_once_across_replicas_and_taken_over_when_its_holder_dies() {
    let data = tempfile::tempdir().unwrap();
    let (url, receiver) = start_receiver().await;
    let targets = || webhook::targets(std::slice::from_ref(&url), &[]).unwrap();
    // Long enough that a loaded test machine never stalls the holder past it (a lapse would
    // let the other replica deliver what the holder was delivering: at least once, not once).
    let lease = Duration::from_secs(5);
    let mut a = common::start_console(data.path(), HEARTBEAT).await;
    let mut b = common::start_console(data.path(), HEARTBEAT).await;
    a.forward_audits(targets(), timing(lease)).await.unwrap();
    b.forward_audits(targets(), timing(lease)).await.unwrap();
    add_defender(&a.store, "d1", &metadata("shop-1", "shop")).await;

    // Ten audits, stored through both replicas: each delivered exactly once.
    for seq in 1..=10u64 {
        let via = if seq % 2 == 0 { &a.store } else { &b.store };
        store_events(
            via,
            "d1",
            vec![audit(seq, 1_000 + seq as i64, "r", 1, "m", 0)],
        )
        .await;
    }
    receiver.wait_total(10).await;
    // One more after them: had a second replica been forwarding too, its copies of 1..=10
    // would be in by the time this one (queued behind them) arrives.
    store_events(&a.store, "d1", vec![audit(11, 2_000, "r", 1, "m", 0)]).await;
    receiver.wait_total(11).await;
    // Delivered is not yet committed: wait for the holder's cursor to reach audit 11, or the
    // replica taking over would rightly deliver 11 again (at least once).
    let key = targets()[0].cursor_key().to_owned();
    let last: i64 = defender_console::with_pool!(a.store.pool(), |p| {
        sqlx::query_scalar("SELECT rowid FROM events WHERE defender_id = 'd1' AND seq = 11")
            .fetch_one(p)
            .await
            .unwrap()
    });
    common::eventually("the cursor committed", WAIT, || async {
        (a.store.webhook_cursor(&key).await.unwrap() == Some(last)).then_some(())
    })
    .await;
    let counts = receiver.counts();
    assert_eq!(counts.len(), 11, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "delivered twice: {counts:?}"
    );

    // The holder dies without handing the lease back: the other replica takes over once the
    // lease lapses, from the cursor the dead one committed.
    let holder = a.console_instance.clone();
    let (survivor, dead) = {
        let lease_holder: Option<String> = defender_console::with_pool!(b.store.pool(), |p| {
            sqlx::query_scalar("SELECT lease_holder FROM webhook_cursor WHERE url = $1")
                .bind(&key)
                .fetch_one(p)
                .await
                .unwrap()
        });
        if lease_holder.as_deref() == Some(holder.as_str()) {
            (b, a)
        } else {
            (a, b)
        }
    };
    dead.abort();
    let t = Instant::now();
    store_events(
        &survivor.store,
        "d1",
        vec![audit(12, 3_000, "r", 1, "m", 0)],
    )
    .await;
    receiver.wait_total(12).await;
    let took = t.elapsed();
    let counts = receiver.counts();
    assert_eq!(counts.get("d1/12"), Some(&1), "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "delivered twice: {counts:?}"
    );
    println!("webhook taken over {took:?} after its holder died (lease {lease:?})");
    survivor.shutdown();
    survivor.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_saved_on_one_replica_reaches_the_others_streams() {
    let data = tempfile::tempdir().unwrap();
    let a = common::start_console(data.path(), HEARTBEAT).await;
    let b = common::start_console(data.path(), HEARTBEAT).await;
    let mut on_a = a.policy.subscribe();
    let rules = r#"{"rules": []}"#;
    let t = Instant::now();
    let saved = b.store.save_policy(rules, "replica-b").await.unwrap();
    b.policy.publish(&saved);
    // PostgreSQL notifies the other replicas at once; SQLite (one Console per file in
    // production, two here only because they share the file) relies on the 5 s poll.
    let limit = if a.store.is_postgres() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(10)
    };
    tokio::time::timeout(
        limit,
        on_a.wait_for(|p| {
            p.as_ref()
                .is_some_and(|p| p.version as i64 == saved.version)
        }),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "replica A did not get version {} within {limit:?}",
            saved.version
        )
    })
    .unwrap();
    println!("policy reached the other replica in {:?}", t.elapsed());
}
