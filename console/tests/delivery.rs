//! The delivery guarantee under faults, with real processes: the `defender-console` binary and
//! the `defender simulate` binary, SIGKILLed, cut off by a TCP proxy, and restarted. Every test
//! ends by checking the Console's SQLite file: exactly the expected seqs, once each.

mod common;
mod db_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use defender_console::store::Store;
use defender_console::with_pool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(180);

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

/// Seed for the fault point, printed so a failing run can be reproduced.
fn seed() -> u64 {
    let s = std::env::var("DELIVERY_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as u64
        });
    eprintln!("fault point seed: DELIVERY_SEED={s}");
    s
}

struct ConsoleProc {
    child: Child,
    data: PathBuf,
    grpc_port: u16,
    http_port: u16,
}

impl ConsoleProc {
    async fn start(data: &Path, grpc_port: u16) -> Self {
        let http_port = free_port();
        let child = Command::new(console_bin())
            .args(["serve", "--data-dir"])
            .arg(data)
            .envs(db_support::env(data))
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
            .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
            .args(["--heartbeat-interval", "1s"])
            .env("CONSOLE_ADMIN_PASSWORD", "delivery-test")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let c = Self {
            child,
            data: data.to_owned(),
            grpc_port,
            http_port,
        };
        c.wait_healthy().await;
        c
    }

    async fn wait_healthy(&self) {
        // reqwest is built with rustls and no default provider (oci-client's feature): a
        // client needs the process provider installed first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = format!("http://127.0.0.1:{}/healthz", self.http_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "console did not come up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    async fn restart(self) -> Self {
        let (data, port) = (self.data.clone(), self.grpc_port);
        self.kill9().await;
        Self::start(&data, port).await
    }
}

fn bundle(data: &Path, addr: &str) -> String {
    let out = std::process::Command::new(console_bin())
        .args(["bundle", "--data-dir"])
        .arg(data)
        .envs(db_support::env(data))
        .args(["--console-addr", addr])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A running `defender simulate`, with its stderr watched line by line.
struct Sim {
    child: Child,
    spooled: watch::Receiver<bool>,
    /// Turns true once `--hold` began (every event acked, streams held).
    holding: watch::Receiver<bool>,
    link_down: Arc<AtomicUsize>,
    damage_reports: Arc<AtomicUsize>,
    stdout: JoinHandle<String>,
}

impl Sim {
    fn start(bundle: &str, dir: &Path, events: u64, extra: &[&str]) -> Self {
        let mut child = Command::new(common::defender_bin())
            .args([
                "simulate",
                "--defenders",
                "1",
                "--rate",
                "0",
                "--reconnect-max",
                "300ms",
            ])
            .args(["--events", &events.to_string()])
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .env("INSTALL_BUNDLE", bundle)
            .env("DEFENDER_LOG", "warn")
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, spooled) = watch::channel(false);
        let (hold_tx, holding) = watch::channel(false);
        let link_down = Arc::new(AtomicUsize::new(0));
        let damage_reports = Arc::new(AtomicUsize::new(0));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (down, damage) = (link_down.clone(), damage_reports.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("events spooled") {
                    let _ = tx.send(true);
                }
                if line.starts_with("simulate: holding") {
                    let _ = hold_tx.send(true);
                }
                if line.contains("Console link down") {
                    down.fetch_add(1, Ordering::SeqCst);
                }
                if line.contains("spool damage repaired") {
                    damage.fetch_add(1, Ordering::SeqCst);
                }
                eprintln!("[simulate] {line}");
            }
        });
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdout = tokio::spawn(async move {
            let mut all = String::new();
            while let Ok(Some(line)) = out.next_line().await {
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        Self {
            child,
            spooled,
            holding,
            link_down,
            damage_reports,
            stdout,
        }
    }

    async fn wait_spooled(&mut self) {
        tokio::time::timeout(DEADLINE, self.spooled.wait_for(|s| *s))
            .await
            .expect("simulate did not finish spooling")
            .unwrap();
    }

    /// Waits for a clean exit and returns the summary figures.
    async fn finish(mut self) -> Summary {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("simulate did not finish")
            .unwrap();
        assert!(status.success(), "simulate failed: {status}");
        Summary::parse(&self.stdout.await.unwrap())
    }

    async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    async fn wait_holding(&mut self) {
        tokio::time::timeout(DEADLINE, self.holding.wait_for(|s| *s))
            .await
            .expect("simulate did not begin its hold")
            .unwrap();
    }

    /// Ends the hold early, as Ctrl-C does, and returns the hold figures.
    async fn interrupt(mut self) -> HoldFigures {
        let pid = i32::try_from(self.child.id().unwrap()).unwrap();
        // SAFETY: kill only sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("simulate did not exit on SIGINT")
            .unwrap();
        assert!(status.success(), "simulate failed: {status}");
        HoldFigures::parse(&self.stdout.await.unwrap())
    }

    /// Waits for the end of the hold and returns its figures.
    async fn finish_hold(mut self) -> HoldFigures {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("simulate did not finish")
            .unwrap();
        assert!(status.success(), "simulate failed: {status}");
        HoldFigures::parse(&self.stdout.await.unwrap())
    }
}

/// The hold line of `defender simulate --hold`.
#[derive(Debug, PartialEq, Eq)]
struct HoldFigures {
    connected_at_start: u64,
    connected_at_end: u64,
    disconnects: u64,
    defenders_disconnected: u64,
}

impl HoldFigures {
    fn parse(out: &str) -> Self {
        let line = out
            .lines()
            .find(|l| l.starts_with("simulate: hold="))
            .unwrap_or_else(|| panic!("no hold line in {out:?}"));
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .parse()
                .unwrap()
        };
        Self {
            connected_at_start: field("connected_at_start"),
            connected_at_end: field("connected_at_end"),
            disconnects: field("disconnects"),
            defenders_disconnected: field("defenders_disconnected"),
        }
    }
}

/// `simulate --hold` keeps the stream open after the last ack (heartbeating every second
/// here) and counts nothing while the Console stays up; a Console restart during the hold is
/// counted as a drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_hold_counts_only_real_stream_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("console");
    let console = ConsoleProc::start(&data, free_port()).await;
    let b = bundle(&data, &format!("127.0.0.1:{}", console.grpc_port));

    let quiet = Sim::start(&b, &tmp.path().join("sim"), 10, &["--hold", "3s"]);
    assert_eq!(
        quiet.finish_hold().await,
        HoldFigures {
            connected_at_start: 1,
            connected_at_end: 1,
            disconnects: 0,
            defenders_disconnected: 0,
        }
    );

    let mut held = Sim::start(&b, &tmp.path().join("sim"), 10, &["--hold", "10m"]);
    held.wait_holding().await;
    let console = console.restart().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while held.link_down.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no drop seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let figures = held.interrupt().await;
    assert_eq!(figures.connected_at_start, 1);
    assert_eq!(figures.defenders_disconnected, 1, "{figures:?}");
    assert!(figures.disconnects >= 1, "{figures:?}");
    console.kill9().await;
}

#[derive(Debug)]
struct Summary {
    produced: u64,
    acked: u64,
    dropped: u64,
    peak_rss_mib: f64,
}

impl Summary {
    fn parse(out: &str) -> Self {
        let line = out
            .lines()
            .find(|l| l.starts_with("simulate:"))
            .unwrap_or_else(|| panic!("no summary line in {out:?}"));
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name} in {line}"))
                .to_owned()
        };
        Self {
            produced: field("produced").parse().unwrap(),
            acked: field("acked").parse().unwrap(),
            dropped: field("dropped").parse().unwrap(),
            peak_rss_mib: field("peak_rss").trim_end_matches("MiB").parse().unwrap(),
        }
    }
}

/// What the Console's database holds for the one simulated Defender.
#[derive(Debug, PartialEq)]
struct Stored {
    count: i64,
    min: i64,
    max: i64,
}

/// The database of the Console on `data` (SQLite in it, or the test's PostgreSQL database).
async fn db(data: &Path) -> Store {
    match db_support::database_url(data) {
        Some(url) => Store::connect_postgres(&url).await.unwrap(),
        None => Store::open(data).await.unwrap(),
    }
}

async fn stored(data: &Path) -> Stored {
    let pool = db(data).await;
    let (count, min, max): (i64, Option<i64>, Option<i64>) = with_pool!(pool.pool(), |p| {
        sqlx::query_as("SELECT COUNT(*), MIN(seq), MAX(seq) FROM events")
            .fetch_one(p)
            .await
            .unwrap()
    });
    let defenders: i64 = with_pool!(pool.pool(), |p| {
        sqlx::query_scalar("SELECT COUNT(*) FROM defenders")
            .fetch_one(p)
            .await
            .unwrap()
    });
    assert_eq!(defenders, 1, "one simulated Defender, enrolled once");
    pool.close().await;
    Stored {
        count,
        min: min.unwrap_or(0),
        max: max.unwrap_or(0),
    }
}

async fn wait_stored_at_least(data: &Path, n: i64) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let pool = db(data).await;
        let count: i64 = with_pool!(pool.pool(), |p| {
            sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(p)
                .await
                .unwrap_or(0)
        });
        pool.close().await;
        if count >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {n} events stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Exactly seq 1..=n, once each (the primary key rules out duplicates; count = max = n rules
/// out gaps).
fn assert_exactly(stored: &Stored, n: i64) {
    assert_eq!(
        stored,
        &Stored {
            count: n,
            min: 1,
            max: n
        },
        "stored events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_sigkill_mid_stream_loses_and_duplicates_nothing() {
    const N: u64 = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("console");
    let console = ConsoleProc::start(&data, free_port()).await;
    let b = bundle(&data, &format!("127.0.0.1:{}", console.grpc_port));
    let sim = Sim::start(&b, &tmp.path().join("sim"), N, &[]);

    let kill_at = 2_000 + (seed() % 60_000) as i64;
    wait_stored_at_least(&data, kill_at).await;
    let console = console.restart().await;
    let summary = sim.finish().await;
    assert_eq!(
        (summary.produced, summary.acked, summary.dropped),
        (N, N, 0)
    );
    assert_exactly(&stored(&data).await, N as i64);
    console.kill9().await;
}

/// A TCP proxy that can cut every connection and refuse new ones.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, list) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(inbound); // refused: closed at once
                    continue;
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                list.lock().unwrap().push(task);
            }
        });
        Self { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_cut_mid_stream_loses_and_duplicates_nothing() {
    const N: u64 = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("console");
    let console = ConsoleProc::start(&data, free_port()).await;
    let proxy = Proxy::start(console.grpc_port).await;
    let b = bundle(&data, &format!("127.0.0.1:{}", proxy.port));
    let sim = Sim::start(&b, &tmp.path().join("sim"), N, &[]);

    let cut_at = 2_000 + (seed() % 60_000) as i64;
    wait_stored_at_least(&data, cut_at).await;
    let downs_before = sim.link_down.load(Ordering::SeqCst);
    proxy.cut();
    // Stay cut until the Defender has failed to reconnect a few times.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while sim.link_down.load(Ordering::SeqCst) < downs_before + 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "defender never noticed the cut"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.restore();
    let summary = sim.finish().await;
    assert_eq!(
        (summary.produced, summary.acked, summary.dropped),
        (N, N, 0)
    );
    assert_exactly(&stored(&data).await, N as i64);
    console.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defender_sigkill_and_restart_continues_seq_without_loss() {
    const FIRST: u64 = 100_000;
    const SECOND: u64 = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("console");
    let sim_dir = tmp.path().join("sim");
    let console = ConsoleProc::start(&data, free_port()).await;
    let b = bundle(&data, &format!("127.0.0.1:{}", console.grpc_port));
    let sim = Sim::start(&b, &sim_dir, FIRST, &[]);

    let kill_at = 2_000 + (seed() % 40_000) as i64;
    wait_stored_at_least(&data, kill_at).await;
    sim.kill9().await;
    // What the killed Defender had spooled (acked or not) is what must reach the Console.
    let spooled = {
        let (spool, _) = defender::spool::Spool::open(
            &sim_dir.join("sim-0").join("spool"),
            defender::spool::SpoolConfig::default(),
        )
        .unwrap();
        spool.last_seq()
    };
    assert!(spooled >= kill_at as u64, "spool lost records: {spooled}");
    let summary = Sim::start(&b, &sim_dir, SECOND, &[]).finish().await;
    assert_eq!(summary.produced, SECOND);
    assert_exactly(&stored(&data).await, (spooled + SECOND) as i64);
    console.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_cap_while_console_down_counts_drops_exactly() {
    const N: u64 = 200_000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("console");
    let port = free_port();
    // The bundle is made offline; the Console is not running while the Defender spools.
    let b = bundle(&data, &format!("127.0.0.1:{port}"));
    let mut sim = Sim::start(
        &b,
        &tmp.path().join("sim"),
        N,
        &["--spool-max-bytes", "1MiB"],
    );
    sim.wait_spooled().await;
    let console = ConsoleProc::start(&data, port).await;
    let summary = sim.finish().await;

    assert_eq!(summary.produced, N);
    assert!(
        summary.dropped > 0,
        "the cap must have forced drops: {summary:?}"
    );
    assert_eq!(
        summary.acked + summary.dropped,
        N,
        "stored + dropped = produced"
    );
    // Oldest-first drops keep the newest events, contiguous.
    let s = stored(&data).await;
    assert_eq!(
        s,
        Stored {
            count: summary.acked as i64,
            min: summary.dropped as i64 + 1,
            max: N as i64
        }
    );
    // The drop count reached the Console in the first heartbeat.
    let pool = db(&data).await;
    let reported: i64 = with_pool!(pool.pool(), |p| {
        sqlx::query_scalar("SELECT dropped_events FROM defenders")
            .fetch_one(p)
            .await
            .unwrap()
    });
    assert_eq!(reported as u64, summary.dropped);
    // 200k events (~30 MB encoded) went through a 1 MiB spool without growing memory.
    assert!(
        summary.peak_rss_mib < 64.0,
        "peak RSS {} MiB",
        summary.peak_rss_mib
    );
    console.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_spool_tail_keeps_the_good_prefix_and_reports_once() {
    const N: u64 = 5_000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("console");
    let sim_dir = tmp.path().join("sim");
    let port = free_port();
    let b = bundle(&data, &format!("127.0.0.1:{port}"));
    let mut sim = Sim::start(&b, &sim_dir, N, &["--spool-fsync", "always"]);
    sim.wait_spooled().await;
    sim.kill9().await;

    // Power loss mid-write: the last segment loses its last few bytes.
    let spool_dir = sim_dir.join("sim-0").join("spool");
    let last = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a segment file");
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let console = ConsoleProc::start(&data, port).await;
    let sim = Sim::start(&b, &sim_dir, 0, &[]);
    let damage = sim.damage_reports.clone();
    sim.finish().await;
    assert_eq!(
        damage.load(Ordering::SeqCst),
        1,
        "the damage is reported once"
    );
    // Records 1..N-1 survived; the damage notice took seq N.
    assert_exactly(&stored(&data).await, N as i64);
    let pool = db(&data).await;
    let (kind, body): (String, Vec<u8>) = with_pool!(pool.pool(), |p| {
        sqlx::query_as("SELECT kind, body FROM events WHERE seq = $1")
            .bind(N as i64)
            .fetch_one(p)
            .await
            .unwrap()
    });
    assert_eq!(kind, "notice");
    assert!(String::from_utf8_lossy(&body).contains("damage"));
    console.kill9().await;
}
