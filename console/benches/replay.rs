//! End-to-end replay benchmark: 100k events spooled while the Console was away, then delivered
//! over the real mTLS stream into SQLite, compared with a baseline measured in the same run
//! (the same events written straight through the Console's event writer, no network).
//!
//! Run: cargo bench -p defender-console --bench replay

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/db_support/mod.rs"]
mod db_support;

use std::time::{Duration, Instant};

use defender::bundle::InstallBundle;
use defender::link::{Backoff, Link, LinkConfig};
use defender::outbox::Outbox;
use defender::simulate::synthetic_event;
use defender::spool::SpoolConfig;
use defender_console::store::{EventWriter, NewDefender, TokenKind};
use defender_proto::v1::{Mode, TaskMetadata};
use rand::SeedableRng;

const EVENTS: u64 = 100_000;

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data_dir = tmp.path().join("console");
    let console = common::start_console(&data_dir, Duration::from_secs(10)).await;
    let bundle =
        InstallBundle::decode(&common::bundle_b64(&data_dir, &console).await).expect("bundle");

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

    // Baseline: the same number of events through the Console's writer alone.
    let writer = EventWriter::spawn(console.store.clone());
    let token_id = console
        .store
        .check_token(TokenKind::Enrollment, &bundle.token)
        .await
        .expect("token")
        .expect("token exists");
    console
        .store
        .insert_defender(&NewDefender {
            id: "baseline",
            metadata: &TaskMetadata::default(),
            agent_version: "bench",
            mode: "simulated",
            enrollment_token: token_id,
            cert_not_after_ms: 0,
        })
        .await
        .expect("baseline defender");
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

    println!(
        "replay benchmark ({EVENTS} events, {:.1} MiB spooled)",
        spool_bytes as f64 / 1_048_576.0
    );
    println!(
        "  spool append           {:>8.3} s  {:>9.0} events/s",
        spool_secs,
        EVENTS as f64 / spool_secs
    );
    println!(
        "  replay end to end      {:>8.3} s  {:>9.0} events/s  (mTLS stream, acked after commit)",
        replay_secs,
        EVENTS as f64 / replay_secs
    );
    println!(
        "  baseline: writer only  {:>8.3} s  {:>9.0} events/s  (same SQLite, no network)",
        baseline_secs,
        EVENTS as f64 / baseline_secs
    );
    println!(
        "  replay / baseline time ratio: {:.2}",
        replay_secs / baseline_secs
    );
    println!("  reproduce: cargo bench -p defender-console --bench replay");
    console.shutdown();
}
