//! `defender simulate`: N simulated Defenders, each with its own identity and spool, producing
//! realistic synthetic events. The deterministic producer for fault tests, the load generator
//! for benchmarks, and a way to fill a demo Console. With a hold ([`SimulateConfig::hold`]) the
//! streams stay open after the last ack, heartbeating like real Defenders, and every stream the
//! Defender side sees drop during the hold is counted: the fleet-scale benchmark's "false
//! disconnects" (deploy/bench-fleet.sh).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use defender_proto::v1::{
    ContainerInfo, Direction, Event, Mode, NetworkConnection, NetworkListen, ProcessExit,
    ProcessStart, Protocol, TaskMetadata, event,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::bundle::InstallBundle;
use crate::link::{Backoff, Link, LinkConfig, LinkState};
use crate::outbox::Outbox;
use crate::spool::SpoolConfig;
use crate::unix_ms;

/// What to simulate.
#[derive(Clone)]
pub struct SimulateConfig {
    pub bundle: InstallBundle,
    pub data_dir: PathBuf,
    pub defenders: usize,
    /// Events each simulated Defender produces.
    pub events: u64,
    /// Events per second over all Defenders; 0 means as fast as possible.
    pub rate: f64,
    pub spool: SpoolConfig,
    pub backoff: Backoff,
    /// How long to keep every stream open after all events are acknowledged (zero: stop at
    /// once). The links heartbeat at the Console's interval meanwhile, as real Defenders do.
    pub hold: Duration,
}

/// What a run did, printed as one line.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub defenders: usize,
    pub produced: u64,
    pub acked: u64,
    pub dropped: u64,
    pub elapsed: Duration,
    pub peak_rss_bytes: u64,
    /// What the hold saw, when there was one.
    pub hold: Option<HoldSummary>,
}

/// The streams held after the last ack ([`SimulateConfig::hold`]), seen from the Defenders.
#[derive(Clone, Debug, Default)]
pub struct HoldSummary {
    /// How long the hold lasted (shorter than asked when interrupted).
    pub held_for: Duration,
    /// Simulated Defenders whose stream was up when the hold began, and when it ended.
    pub connected_at_start: usize,
    pub connected_at_end: usize,
    /// Streams lost during the hold (each link state change to Disconnected: a stream that
    /// ended, or a connection attempt that failed), over all Defenders. With a Console that
    /// stayed up, every one is a false disconnect.
    pub disconnects: u64,
    /// Simulated Defenders that lost their stream at least once during the hold.
    pub defenders_disconnected: u64,
    /// Resident memory of this process at the end of the hold, bytes (VmRSS).
    pub rss_bytes: u64,
}

impl std::fmt::Display for HoldSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = self.rss_bytes as f64 / self.connected_at_start.max(1) as f64 / 1024.0;
        write!(
            f,
            "simulate: hold={:.1}s connected_at_start={} connected_at_end={} disconnects={} defenders_disconnected={} rss={:.1}MiB rss_per_defender={per:.1}KiB",
            self.held_for.as_secs_f64(),
            self.connected_at_start,
            self.connected_at_end,
            self.disconnects,
            self.defenders_disconnected,
            self.rss_bytes as f64 / 1_048_576.0,
        )
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "simulate: defenders={} produced={} acked={} dropped={} elapsed={:.2}s rate={:.0} events/s peak_rss={:.1}MiB",
            self.defenders,
            self.produced,
            self.acked,
            self.dropped,
            secs,
            if secs > 0.0 {
                self.produced as f64 / secs
            } else {
                0.0
            },
            self.peak_rss_bytes as f64 / 1_048_576.0
        )?;
        if let Some(hold) = &self.hold {
            write!(f, "\n{hold}")?;
        }
        Ok(())
    }
}

/// Runs the simulation until every produced event is acknowledged (or dropped by the cap), then
/// holds the streams for [`SimulateConfig::hold`], or until `stop` turns true; either way the
/// summary covers what was done.
pub async fn simulate(
    cfg: SimulateConfig,
    stop: watch::Receiver<bool>,
) -> Result<Summary, crate::spool::SpoolError> {
    let started = Instant::now();
    let fds = raise_nofile_limit();
    // Each simulated Defender keeps its stream's socket and its spool's lock file open, and
    // briefly more (enrollment connection, spool segment): short of descriptors, streams fail
    // with EMFILE and would be counted as disconnects.
    let needed = cfg.defenders as u64 * FDS_PER_DEFENDER + 64;
    if fds.is_some_and(|limit| limit < needed) {
        eprintln!(
            "simulate: warning: {} Defenders need about {needed} file descriptors, RLIMIT_NOFILE is {}; split them over several processes",
            cfg.defenders,
            fds.unwrap_or(0)
        );
    }
    let mut producers = Vec::new();
    for i in 0..cfg.defenders {
        let dir = cfg.data_dir.join(format!("sim-{i}"));
        let outbox = Outbox::open(&dir.join("spool"), cfg.spool)?;
        let link = Link::spawn(LinkConfig {
            bundle: cfg.bundle.clone(),
            data_dir: dir,
            mode: Mode::Simulated,
            metadata: metadata(i),
            backoff: cfg.backoff,
            outbox: outbox.clone(),
            policy: None,
            waas: None,
            capture: None,
        });
        let rate = cfg.rate / cfg.defenders.max(1) as f64;
        let before = outbox.stats();
        let handle = tokio::spawn(produce(i, outbox.clone(), cfg.events, rate, stop.clone()));
        producers.push((outbox, link, before, handle));
    }
    let mut produced = Vec::new();
    for (outbox, link, before, handle) in producers {
        let n = handle.await.unwrap_or(0);
        produced.push((outbox, link, before, n));
    }
    let total: u64 = produced.iter().map(|p| p.3).sum();
    // Tests and operators watch for this line: everything is in the spools now.
    eprintln!("simulate: all {total} events spooled");
    let mut summary = Summary {
        defenders: cfg.defenders,
        produced: total,
        ..Default::default()
    };
    let mut held = Vec::new();
    for (outbox, link, before, n) in produced {
        let last_seq = outbox.stats().last_seq;
        let mut stop = stop.clone();
        let stats = loop {
            let stats = outbox.stats();
            if stats.acked_seq >= last_seq || *stop.borrow() {
                break stats;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = stop.changed() => {}
            }
        };
        if cfg.hold.is_zero() {
            link.stop();
        } else {
            held.push(link);
        }
        let dropped = stats.dropped - before.dropped;
        // Seqs this run assigned (a refused event gets none), those the cap deleted, and those
        // at or below the Console's ack: the rest reached the Console.
        let assigned = last_seq - before.last_seq;
        let dropped_with_seq = dropped.saturating_sub(n - assigned);
        let acked_range = stats
            .acked_seq
            .saturating_sub(before.last_seq)
            .min(assigned);
        summary.dropped += dropped;
        summary.acked += acked_range.saturating_sub(dropped_with_seq);
    }
    summary.elapsed = started.elapsed();
    if !held.is_empty() && !*stop.borrow() {
        summary.hold = Some(hold(held, cfg.hold, stop).await);
    } else {
        held.into_iter().for_each(Link::stop);
    }
    summary.peak_rss_bytes = peak_rss_bytes();
    Ok(summary)
}

/// Descriptors one simulated Defender may hold at once (stream socket, spool lock, enrollment
/// socket, spool segment), for the warning above.
const FDS_PER_DEFENDER: u64 = 4;

/// Keeps `links` up for `duration` (or until `stop`), counting every change to Disconnected,
/// then stops them. One small watcher task per link; the links heartbeat on their own.
async fn hold(
    links: Vec<Link>,
    duration: Duration,
    mut stop: watch::Receiver<bool>,
) -> HoldSummary {
    let connected = |links: &[Link]| {
        links
            .iter()
            .filter(|l| matches!(*l.state().borrow(), LinkState::Connected { .. }))
            .count()
    };
    let disconnects = Arc::new(AtomicU64::new(0));
    let defenders_disconnected = Arc::new(AtomicU64::new(0));
    let watchers: Vec<_> = links
        .iter()
        .map(|link| {
            let mut state = link.state();
            state.borrow_and_update();
            let disconnects = Arc::clone(&disconnects);
            let defenders_disconnected = Arc::clone(&defenders_disconnected);
            tokio::spawn(async move {
                let mut mine = 0u64;
                while state.changed().await.is_ok() {
                    if matches!(*state.borrow_and_update(), LinkState::Disconnected { .. }) {
                        if mine == 0 {
                            defenders_disconnected.fetch_add(1, Ordering::Relaxed);
                        }
                        mine += 1;
                        disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let connected_at_start = connected(&links);
    eprintln!(
        "simulate: holding {} streams ({connected_at_start} connected) for {:.0}s",
        links.len(),
        duration.as_secs_f64()
    );
    let started = Instant::now();
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let summary = HoldSummary {
        held_for: started.elapsed(),
        connected_at_start,
        connected_at_end: connected(&links),
        disconnects: disconnects.load(Ordering::Relaxed),
        defenders_disconnected: defenders_disconnected.load(Ordering::Relaxed),
        rss_bytes: crate::selfstats::rss_bytes(),
    };
    watchers.iter().for_each(tokio::task::JoinHandle::abort);
    links.into_iter().for_each(Link::stop);
    summary
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (thousands of streams need thousands of
/// descriptors; the usual soft limit is 1024) and returns the limit in force.
fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Some(lim.rlim_cur)
}

async fn produce(
    i: usize,
    outbox: Arc<Outbox>,
    events: u64,
    rate: f64,
    stop: watch::Receiver<bool>,
) -> u64 {
    let mut rng = StdRng::seed_from_u64(0x5eed ^ i as u64);
    let started = Instant::now();
    let mut produced = 0u64;
    while produced < events && !*stop.borrow() {
        if rate > 0.0 {
            // Pace against the wall clock so bursts after a stall catch up to the rate.
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if produced >= due {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        } else if produced.is_multiple_of(512) {
            tokio::task::yield_now().await;
        }
        outbox.push(synthetic_event(&mut rng, produced));
        produced += 1;
    }
    produced
}

fn metadata(i: usize) -> TaskMetadata {
    TaskMetadata {
        hostname: format!("sim-{i}"),
        cluster: "simulated".into(),
        task_arn: format!("arn:aws:ecs:us-east-1:000000000000:task/simulated/{i:032x}"),
        family: "simulated-app".into(),
        revision: "1".into(),
        availability_zone: "us-east-1a".into(),
        launch_type: "FARGATE".into(),
        containers: vec![ContainerInfo {
            name: "app".into(),
            image: "example/app:1.0".into(),
            ..Default::default()
        }],
    }
}

const PROGRAMS: [(&str, &[&str], &str); 6] = [
    (
        "/usr/bin/python3",
        &["python3", "app.py", "--port", "8080"],
        "app",
    ),
    (
        "/bin/sh",
        &["sh", "-c", "curl -s http://api.internal/health"],
        "app",
    ),
    (
        "/usr/bin/curl",
        &["curl", "-s", "https://example.com/"],
        "app",
    ),
    (
        "/usr/sbin/nginx",
        &["nginx", "-g", "daemon off;"],
        "www-data",
    ),
    (
        "/usr/bin/java",
        &["java", "-Xmx512m", "-jar", "/srv/api.jar"],
        "app",
    ),
    ("/bin/ls", &["ls", "-la", "/tmp"], "root"),
];

/// One plausible event; `n` spreads pids.
pub fn synthetic_event(rng: &mut StdRng, n: u64) -> Event {
    let pid = 100 + (n % 30_000) as u32;
    let kind = match rng.random_range(0..10) {
        0..=3 => {
            let (exe, argv, user) = PROGRAMS[rng.random_range(0..PROGRAMS.len())];
            event::Kind::ProcessStart(ProcessStart {
                pid,
                ppid: 1,
                exe: exe.as_bytes().to_vec(),
                argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
                argv_truncated: false,
                uid: if user == "root" { 0 } else { 1000 },
                user: user.into(),
                cwd: b"/srv".to_vec(),
                start_time_ms: unix_ms(),
                exe_sha256: String::new(),
                euid: if user == "root" { 0 } else { 1000 },
                ..Default::default()
            })
        }
        4..=5 => event::Kind::ProcessExit(ProcessExit {
            pid,
            exit_code: rng.random_range(0..2),
            signal: 0,
            status_known: true,
        }),
        6 => event::Kind::NetworkListen(NetworkListen {
            protocol: Protocol::Tcp as i32,
            local_addr: "0.0.0.0".into(),
            local_port: [80, 443, 8080, 9090][rng.random_range(0..4)],
            pid,
            closed: false,
            pids: vec![pid],
            blocked: false,
        }),
        _ => event::Kind::NetworkConnection(NetworkConnection {
            protocol: Protocol::Tcp as i32,
            direction: Direction::Outbound as i32,
            local_addr: "10.0.1.15".into(),
            local_port: rng.random_range(32768..60999),
            remote_addr: format!(
                "10.0.{}.{}",
                rng.random_range(0..4),
                rng.random_range(2..250)
            ),
            remote_port: [443, 5432, 6379, 80][rng.random_range(0..4)],
            pid,
            closed: false,
            blocked: false,
        }),
    };
    Event {
        seq: 0,
        time_ms: unix_ms(),
        container: "app".into(),
        kind: Some(kind),
    }
}

/// Highest resident memory of this process so far (VmHWM), bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}
