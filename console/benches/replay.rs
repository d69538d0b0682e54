//! End-to-end ingest benchmark, on each store: 100k events spooled while the Console was away,
//! then delivered over the real mTLS stream and acked after commit, compared with two baselines
//! measured in the same run on the same database: the same events through the Console's event
//! writer alone (no network), and the same rows written by plain multi-row `INSERT … ON
//! CONFLICT DO NOTHING` statements (500 rows each, 2,000 per transaction: the writer's shape,
//! without its batching and its PostgreSQL advisory lock).
//!
//! Run: cargo bench -p defender-console --bench replay           (SQLite)
//!      deploy/with-postgres.sh cargo bench -p defender-console --bench replay
//!                                                              (SQLite, then PostgreSQL)

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/db_support/mod.rs"]
mod db_support;

use std::path::Path;
use std::time::{Duration, Instant};

use defender::bundle::InstallBundle;
use defender::link::{Backoff, Link, LinkConfig};
use defender::outbox::Outbox;
use defender::simulate::synthetic_event;
use defender::spool::SpoolConfig;
use defender_console::server;
use defender_console::store::{EventWriter, NewDefender, Store, TokenKind, kind_name};
use defender_proto::v1::{Event, Mode, TaskMetadata};
use prost::Message;
use rand::SeedableRng;
use tokio::net::TcpListener;

const EVENTS: u64 = 100_000;

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Read before any thread exists; the PostgreSQL run gets its URL explicitly.
    let postgres = std::env::var("CONSOLE_TEST_DATABASE_URL").ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "ingest benchmark ({EVENTS} events per run; each line's ratio is to the raw INSERT of the same store)"
    );
    rt.block_on(run("SQLite", None));
    match postgres {
        Some(admin) => rt.block_on(run("PostgreSQL", Some(admin))),
        None => println!(
            "\n(PostgreSQL not measured: run under deploy/with-postgres.sh, or set CONSOLE_TEST_DATABASE_URL)"
        ),
    }
    println!("\nreproduce: deploy/with-postgres.sh cargo bench -p defender-console --bench replay");
}

/// A Console on `data_dir`, on SQLite or on a fresh database of the server `postgres`.
async fn start(data_dir: &Path, postgres: Option<&str>) -> server::RunningConsole {
    let mut cfg = common::config(data_dir, Duration::from_secs(10));
    cfg.database_url = console_db(data_dir, postgres);
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    server::start(cfg, grpc, http).await.expect("console")
}

/// The database URL of the Console on `data_dir` (None: SQLite in it).
fn console_db(data_dir: &Path, postgres: Option<&str>) -> Option<String> {
    postgres.map(|admin| db_support::database_url_in(admin, data_dir))
}

/// Writes `events` of `defender` as plain multi-row INSERTs, the writer's statement shape.
async fn raw_insert(store: &Store, defender: &str, events: &[Event]) {
    let received = defender_console::store::now_ms();
    defender_console::with_pool!(store.pool(), |p| {
        for tx_rows in events.chunks(2000) {
            let mut tx = p.begin().await.expect("begin");
            for rows in tx_rows.chunks(500) {
                let mut qb = sqlx::QueryBuilder::<Db>::new(
                    "INSERT INTO events (defender_id, seq, kind, time_ms, received_at, container, pid, body) ",
                );
                qb.push_values(rows, |mut b, e| {
                    b.push_bind(defender)
                        .push_bind(e.seq as i64)
                        .push_bind(kind_name(e))
                        .push_bind(e.time_ms)
                        .push_bind(received)
                        .push_bind(e.container.clone())
                        .push_bind(None::<i64>)
                        .push_bind(e.encode_to_vec());
                });
                qb.push(" ON CONFLICT (defender_id, seq) DO NOTHING");
                qb.build().execute(&mut *tx).await.expect("insert");
            }
            tx.commit().await.expect("commit");
        }
    })
}

async fn add_defender(console: &server::RunningConsole, id: &str, token_id: i64) {
    console
        .store
        .insert_defender(&NewDefender {
            id,
            metadata: &TaskMetadata::default(),
            agent_version: "bench",
            mode: "simulated",
            enrollment_token: token_id,
            cert_not_after_ms: 0,
        })
        .await
        .expect("defender");
}

async fn run(store_name: &str, postgres: Option<String>) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("console");
    let console = start(&data_dir, postgres.as_deref()).await;
    let bundle = InstallBundle::decode(
        &server::create_bundle(
            &data_dir,
            console_db(&data_dir, postgres.as_deref()).as_deref(),
            &format!("127.0.0.1:{}", console.grpc_addr.port()),
            "bench",
            None,
        )
        .await
        .expect("bundle")
        .encode(),
    )
    .expect("bundle");
    // Spool 100k events as if the Console had been unreachable.
    let agent_dir = tmp.path().join("agent");
    let outbox = Outbox::open(&agent_dir.join("spool"), SpoolConfig::default()).expect("spool");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let t = Instant::now();
    for n in 0..EVENTS {
        outbox.push(synthetic_event(&mut rng, n));
    }
    let spool_secs = t.elapsed().as_secs_f64();
    let spool_bytes = outbox.stats().bytes;

    // Replay: connect, deliver everything, wait for the last ack.
    let t = Instant::now();
    let link = Link::spawn(LinkConfig {
        bundle: bundle.clone(),
        data_dir: agent_dir,
        mode: Mode::Simulated,
        metadata: TaskMetadata {
            hostname: "bench".into(),
            ..Default::default()
        },
        backoff: Backoff::default(),
        outbox: outbox.clone(),
        policy: None,
        waas: None,
        capture: None,
    });
    let last = outbox.stats().last_seq;
    while outbox.stats().acked_seq < last {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let replay_secs = t.elapsed().as_secs_f64();
    link.stop();

    // Baseline 1: the same number of events through the Console's writer alone.
    let writer = EventWriter::spawn(console.store.clone());
    let token_id = console
        .store
        .check_token(TokenKind::Enrollment, &bundle.token)
        .await
        .expect("token")
        .expect("token exists");
    add_defender(&console, "baseline", token_id).await;
    add_defender(&console, "raw", token_id).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let batches: Vec<Vec<_>> = (0..EVENTS)
        .map(|n| {
            let mut e = synthetic_event(&mut rng, n);
            e.seq = n + 1;
            e
        })
        .collect::<Vec<_>>()
        .chunks(defender_proto::MAX_BATCH_EVENTS)
        .map(<[_]>::to_vec)
        .collect();
    let t = Instant::now();
    for b in batches {
        writer.write("baseline", b).await.expect("write");
    }
    let baseline_secs = t.elapsed().as_secs_f64();

    // Baseline 2: the same rows as plain multi-row INSERTs.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let rows: Vec<Event> = (0..EVENTS)
        .map(|n| {
            let mut e = synthetic_event(&mut rng, n);
            e.seq = n + 1;
            e
        })
        .collect();
    let t = Instant::now();
    raw_insert(&console.store, "raw", &rows).await;
    let raw_secs = t.elapsed().as_secs_f64();

    let line = |what: &str, secs: f64, note: &str| {
        println!(
            "  {what:<24} {secs:>8.3} s  {:>9.0} events/s  {:>5.2}x  {note}",
            EVENTS as f64 / secs,
            raw_secs / secs
        );
    };
    println!(
        "\n{store_name} ({:.1} MiB spooled; spool append {:.0} events/s)",
        spool_bytes as f64 / 1_048_576.0,
        EVENTS as f64 / spool_secs
    );
    line(
        "end to end (mTLS)",
        replay_secs,
        "spooled, streamed, acked after commit",
    );
    line("event writer alone", baseline_secs, "no network");
    line(
        "raw multi-row INSERT",
        raw_secs,
        "the same rows, plain statements",
    );
    console.shutdown();
}
