//! Webhook forwarding of audits: a receiver in the test fails the first delivery; every audit
//! arrives exactly once, in order, after the retry; the cursor is persisted; a restarted Console
//! re-sends nothing and goes on with new audits; a webhook added later starts at new audits.

mod common;
mod db_support;
mod runtime_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use defender_console::server::RunningConsole;
use defender_console::webhook::{self, Target, Timing};
use runtime_support::*;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);
const SECRET_HEADER: &str = "Authorization: Bearer webhook-test-secret";

/// Fast pace for tests (the defaults are 1 s poll, 1 s → 60 s backoff, 10 s timeout).
fn timing() -> Timing {
    Timing {
        poll: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        request_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(90),
    }
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    body: Value,
    authorization: Option<String>,
    audit_id: Option<String>,
    content_type: Option<String>,
    accepted: bool,
}

#[derive(Clone)]
struct Receiver {
    /// How many requests to refuse (500) before accepting.
    fail_first: usize,
    log: Arc<Mutex<Vec<Delivery>>>,
    accepted: Arc<watch::Sender<usize>>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut log = r.log.lock().unwrap();
    let accepted = log.len() >= r.fail_first;
    log.push(Delivery {
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        authorization: header("authorization"),
        audit_id: header("x-defender-audit-id"),
        content_type: header("content-type"),
        accepted,
    });
    if accepted {
        r.accepted.send_modify(|n| *n += 1);
        StatusCode::NO_CONTENT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

struct Running {
    url: String,
    log: Arc<Mutex<Vec<Delivery>>>,
    accepted: watch::Receiver<usize>,
}

async fn start_receiver(fail_first: usize) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks/audits?token=in-the-url",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = watch::channel(0);
    let state = Receiver {
        fail_first,
        log: Arc::default(),
        accepted: Arc::new(tx),
    };
    let log = state.log.clone();
    let app = Router::new()
        .route("/hooks/audits", post(receive))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Running {
        url,
        log,
        accepted: rx,
    }
}

impl Running {
    async fn wait_accepted(&mut self, n: usize) {
        tokio::time::timeout(WAIT, self.accepted.wait_for(|got| *got >= n))
            .await
            .unwrap_or_else(|_| panic!("the receiver did not accept {n} audits in time"))
            .unwrap();
    }

    /// Seqs of the accepted deliveries, in arrival order.
    fn accepted_seqs(&self) -> Vec<i64> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.accepted)
            .map(|d| d.body["audit"]["seq"].as_i64().unwrap())
            .collect()
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().unwrap().clone()
    }
}

fn target(url: &str) -> Target {
    let mut t = webhook::targets(&[url.to_owned()], &[SECRET_HEADER.to_owned()]).unwrap();
    assert_eq!(t.len(), 1);
    t.remove(0)
}

async fn rowid_of(console: &RunningConsole, defender: &str, seq: i64) -> i64 {
    defender_console::with_pool!(console.store.pool(), |p| sqlx::query_scalar(
        "SELECT rowid FROM events WHERE defender_id = $1 AND seq = $2"
    )
    .bind(defender)
    .bind(seq)
    .fetch_one(p)
    .await
    .unwrap())
}

#[tokio::test]
async fn audits_are_delivered_once_after_a_failure_and_not_again_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let heartbeat = Duration::from_secs(10);
    let mut receiver = start_receiver(1).await;
    let mut console = common::start_console(data.path(), heartbeat).await;
    console
        .forward_audits(vec![target(&receiver.url)], timing())
        .await
        .unwrap();
    let store = console.store.clone();
    add_defender(&store, "d1", &metadata("shop-1", "shop")).await;
    store_events(
        &store,
        "d1",
        vec![
            process(1, T0),
            audit(2, T0 + 1, "no-shell", ALERT, "sh started by node", 1),
            process(3, T0 + 2),
            audit(4, T0 + 3, "no-miners", PREVENT, "<b>xmrig</b> killed", 3),
        ],
    )
    .await;
    store_events(
        &store,
        "d1",
        vec![audit(5, T0 + 4, "no-nc", PREVENT, "nc killed", 0)],
    )
    .await;

    receiver.wait_accepted(3).await;
    let last = rowid_of(&console, "d1", 5).await;
    let key = target(&receiver.url).cursor_key().to_owned();
    assert!(
        !key.contains("in-the-url"),
        "the URL's query is not stored: {key}"
    );
    common::eventually("cursor committed", WAIT, || async {
        (store.webhook_cursor(&key).await.unwrap() == Some(last)).then_some(())
    })
    .await;
    assert_eq!(
        receiver.accepted_seqs(),
        vec![2, 4, 5],
        "each audit once, in order"
    );
    let deliveries = receiver.deliveries();
    assert_eq!(
        deliveries.len(),
        4,
        "one refused delivery, then three accepted"
    );
    assert!(!deliveries[0].accepted);
    assert_eq!(
        deliveries[0].body["audit"]["seq"], 2,
        "the refused one was retried"
    );
    for d in &deliveries {
        assert_eq!(
            d.authorization.as_deref(),
            Some("Bearer webhook-test-secret")
        );
        assert_eq!(d.content_type.as_deref(), Some("application/json"));
    }
    assert_eq!(deliveries[1].audit_id.as_deref(), Some("d1/2"));
    let doc = &deliveries[2].body;
    assert_eq!(doc["defender"]["id"], "d1");
    assert_eq!(doc["defender"]["hostname"], "shop-1");
    assert_eq!(doc["defender"]["family"], "shop");
    assert_eq!(doc["defender"]["cluster"], "prod");
    assert_eq!(
        doc["defender"]["task_arn"],
        "arn:aws:ecs:eu-west-1:123456789012:task/prod/shop-1"
    );
    assert_eq!(doc["audit"]["seq"], 4);
    assert_eq!(doc["audit"]["rule"], "no-miners");
    assert_eq!(doc["audit"]["effect"], "prevent");
    assert_eq!(doc["audit"]["message"], "<b>xmrig</b> killed");
    assert_eq!(doc["audit"]["pid"], 4004);
    assert_eq!(doc["audit"]["subject_seq"], 3);
    assert_eq!(doc["audit"]["container"], "app");
    assert_eq!(doc["audit"]["time"], "2024-05-01T00:00:00.003Z");

    // Restart on the same data directory: nothing is sent again; new audits are.
    console.shutdown();
    console.wait().await.unwrap();
    let mut late = start_receiver(0).await;
    let mut console = common::start_console(data.path(), heartbeat).await;
    console
        .forward_audits(vec![target(&receiver.url), target(&late.url)], timing())
        .await
        .unwrap();
    let store = console.store.clone();
    store_events(
        &store,
        "d1",
        vec![audit(6, T0 + 5, "no-shell", ALERT, "after restart", 0)],
    )
    .await;
    receiver.wait_accepted(4).await;
    late.wait_accepted(1).await;
    assert_eq!(receiver.accepted_seqs(), vec![2, 4, 5, 6]);
    assert_eq!(receiver.deliveries().len(), 5);
    // A webhook configured later starts with the audits stored from then on.
    assert_eq!(late.accepted_seqs(), vec![6]);
    let last = rowid_of(&console, "d1", 6).await;
    common::eventually("cursor committed after restart", WAIT, || async {
        (store.webhook_cursor(&key).await.unwrap() == Some(last)).then_some(())
    })
    .await;
    console.shutdown();
    console.wait().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_receiver_delays_but_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    // Reserve a port, then free it: nothing listens there until the receiver starts.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/hooks/audits");
    let mut console = common::start_console(data.path(), Duration::from_secs(10)).await;
    console
        .forward_audits(vec![target(&url)], timing())
        .await
        .unwrap();
    let store = console.store.clone();
    add_defender(&store, "d2", &metadata("shop-2", "shop")).await;
    store_events(
        &store,
        "d2",
        vec![
            audit(1, T0, "r", ALERT, "one", 0),
            audit(2, T0 + 1, "r", ALERT, "two", 0),
        ],
    )
    .await;
    let key = target(&url).cursor_key().to_owned();
    // Connection refused: the cursor stays where it was (before both audits).
    let first = rowid_of(&console, "d2", 1).await;
    assert!(store.webhook_cursor(&key).await.unwrap().unwrap() < first);

    // The receiver comes up on that port; both audits arrive, once each.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let (tx, mut accepted) = watch::channel(0);
    let state = Receiver {
        fail_first: 0,
        log: Arc::default(),
        accepted: Arc::new(tx),
    };
    let log = state.log.clone();
    let app = Router::new()
        .route("/hooks/audits", post(receive))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    tokio::time::timeout(WAIT, accepted.wait_for(|n| *n >= 2))
        .await
        .expect("delivered once the receiver is up")
        .unwrap();
    let seqs: Vec<i64> = log
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.body["audit"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    console.shutdown();
    console.wait().await.unwrap();
}
