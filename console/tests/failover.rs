//! One install bundle naming several Console addresses: Defenders connect although some
//! addresses are dead, each dead one tried at most once before a live one, and when the
//! replica a Defender is connected to is killed (SIGKILL) it fails over to another, its events
//! stored exactly once across the kill.
//!
//! The replicas here are Console processes on one data directory: one SQLite database (WAL
//! serves several processes on one host), or, under `deploy/test-postgres.sh`, one PostgreSQL
//! database, the production form of the same thing (the CA then comes from the database).

mod common;
mod db_support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ADMIN_PASSWORD, defenders, eventually, start_console};
use defender::bundle::InstallBundle;
use defender::link::{Backoff, Link, LinkConfig, LinkState};
use defender::outbox::Outbox;
use defender::spool::SpoolConfig;
use defender_console::server;
use defender_proto::v1::{Mode, TaskMetadata};
use serde_json::Value;
use tokio::net::TcpListener;

const HEARTBEAT: Duration = Duration::from_secs(1);
/// Longest a Defender may take to connect, or to fail over after its replica died.
const DEADLINE: Duration = Duration::from_secs(30);

fn link_config(bundle: &InstallBundle, dir: &Path, host: &str) -> LinkConfig {
    LinkConfig {
        bundle: bundle.clone(),
        data_dir: dir.to_owned(),
        mode: Mode::Standalone,
        metadata: TaskMetadata {
            hostname: host.into(),
            ..Default::default()
        },
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

/// A port nothing listens on (connections are refused).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A listener that is not a Console: it accepts each connection and closes it at once (the
/// TLS handshake fails), counting the connections.
async fn slamming_door() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(sock);
        }
    });
    (port, count)
}

#[tokio::test]
async fn defenders_connect_past_dead_addresses_trying_each_at_most_once() {
    let data = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), HEARTBEAT).await;
    let (door_a, knocks_a) = slamming_door().await;
    let (door_b, knocks_b) = slamming_door().await;
    let refused = closed_port();
    let live = console.grpc_addr.port();
    let list =
        format!("127.0.0.1:{door_a},127.0.0.1:{refused}, 127.0.0.1:{door_b},127.0.0.1:{live}");
    let b64 = server::create_bundle(
        data.path(),
        db_support::database_url(data.path()).as_deref(),
        &list,
        "failover",
        None,
    )
    .await
    .unwrap()
    .encode();
    let bundle = InstallBundle::decode(&b64).unwrap();
    assert_eq!(bundle.addrs().len(), 4);
    assert_eq!(bundle.console_addr, format!("127.0.0.1:{door_a}"));

    // Each Defender starts at a random address: with 6 of them, some start at a dead one
    // (all six at the live one: (1/4)^6). A link that kept to its first address would never
    // connect.
    const N: usize = 6;
    let dirs: Vec<_> = (0..N).map(|_| tempfile::tempdir().unwrap()).collect();
    let links: Vec<Link> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| Link::spawn(link_config(&bundle, d.path(), &format!("multi-{i}"))))
        .collect();
    let mut ids = Vec::new();
    for link in &links {
        let mut state = link.state();
        let connected = tokio::time::timeout(
            DEADLINE,
            state.wait_for(|s| matches!(s, LinkState::Connected { .. })),
        )
        .await
        .expect("a Defender did not get past the dead addresses in time")
        .unwrap()
        .clone();
        if let LinkState::Connected { defender_id } = connected {
            ids.push(defender_id);
        }
    }
    // Round robin from a random start: before reaching the live address a Defender knocks at
    // each dead one at most once, so never more knocks than Defenders.
    let (a, b) = (
        knocks_a.load(Ordering::SeqCst),
        knocks_b.load(Ordering::SeqCst),
    );
    eprintln!("knocks on the dead addresses before all {N} connected: {a} and {b}");
    assert!(a <= N && b <= N, "a dead address was hammered: {a}, {b}");

    let token = common::api_token(&console).await;
    eventually("every Defender listed as connected", DEADLINE, || async {
        let list = defenders(&console, &token, "?connected=true").await;
        let listed = list.as_array().map_or(0, |l| {
            l.iter()
                .filter(|d| ids.iter().any(|id| d["id"] == id.as_str()))
                .count()
        });
        (listed == N).then_some(())
    })
    .await;
    for link in links {
        link.stop();
    }
}

// ---- real processes: two Console replicas, simulated Defenders, SIGKILL ---------------------

/// A child process whose output (JSON log lines on stderr, anything on stdout) is collected as
/// it comes, a line that is not JSON as `{"raw": line}`; killed on drop.
struct Proc {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let out: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for stream in out {
            let sink = Arc::clone(&lines);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let v = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                    sink.lock().unwrap().push(v);
                }
            }));
        }
        Self {
            child,
            lines,
            readers,
        }
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Log lines with this message, from index `from` on.
    fn messages(&self, message: &str, from: usize) -> Vec<(usize, Value)> {
        self.lines()
            .into_iter()
            .enumerate()
            .skip(from)
            .filter(|(_, l)| l["fields"]["message"] == message)
            .map(|(i, l)| (i, l["fields"].clone()))
            .collect()
    }

    /// Polls until `check` returns Some, the process exits, or `within` passes.
    fn wait_for<T>(
        &mut self,
        what: &str,
        within: Duration,
        check: impl Fn(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check(self) {
                return v;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Everything it wrote is read once the reader ends: look one last time.
                if !self.readers.is_empty() {
                    for reader in self.readers.drain(..) {
                        let _ = reader.join();
                    }
                    continue;
                }
                panic!(
                    "{what}: the process exited ({status}); log: {:#?}",
                    self.lines()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log: {:#?}",
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn console_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_defender-console"))
}

/// Console processes see only what the test gives them.
fn clean(cmd: &mut Command) {
    for var in [
        "RUST_LOG",
        "CONSOLE_ADDR",
        "CONSOLE_DATA_DIR",
        "CONSOLE_DATABASE_URL",
        "INSTALL_BUNDLE",
        "INSTALL_BUNDLE_FILE",
        "DEFENDER_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
}

/// A Console process on `data` with JSON logs; returns it and its gRPC and HTTP addresses.
fn start_replica(data: &Path) -> (Proc, String, String) {
    let mut cmd = Command::new(console_bin());
    cmd.args([
        "serve",
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ])
    .arg("--data-dir")
    .arg(data);
    clean(&mut cmd);
    cmd.envs(db_support::env(data));
    cmd.env("CONSOLE_LOG_FORMAT", "json")
        .env("CONSOLE_ADMIN_PASSWORD", ADMIN_PASSWORD);
    let mut proc = Proc::spawn(cmd);
    let (grpc, http) = proc.wait_for("the Console to start", Duration::from_secs(60), |p| {
        let started = p.messages("console started", 0);
        let (_, fields) = started.first()?;
        Some((
            fields["grpc_addr"].as_str()?.to_owned(),
            fields["http_addr"].as_str()?.to_owned(),
        ))
    });
    (proc, grpc, http)
}

fn cli(data: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new(console_bin());
    cmd.args(args).arg("--data-dir").arg(data);
    clean(&mut cmd);
    cmd.envs(db_support::env(data));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_bundle_command_names_a_bad_address_and_creates_nothing() {
    let data = tempfile::tempdir().unwrap();
    for (list, named) in [
        (
            "a.example.com:8084,b.example.com",
            "\"b.example.com\" has no port",
        ),
        ("a.example.com:8084,,b.example.com:8084", "empty entry"),
        ("a.example.com:8084,A.example.com:8084", "given twice"),
    ] {
        let mut cmd = Command::new(console_bin());
        cmd.args(["bundle", "--console-addr", list, "--data-dir"])
            .arg(data.path());
        clean(&mut cmd);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{list}");
        assert!(out.stdout.is_empty(), "{list}");
        assert!(err.contains(named), "{list}: {err}");
    }
    let seventeen: Vec<String> = (1..=17).map(|p| format!("h:{p}")).collect();
    let mut cmd = Command::new(console_bin());
    cmd.args([
        "bundle",
        "--console-addr",
        &seventeen.join(","),
        "--data-dir",
    ])
    .arg(data.path());
    clean(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 16"));
    assert!(
        !data.path().join("ca.pem").exists(),
        "a refused bundle must not create a CA or a token"
    );
}

/// The latest "connected to the Console" address of each Defender (by id).
fn connected_to(defender: &Proc) -> std::collections::BTreeMap<String, String> {
    defender
        .messages("connected to the Console", 0)
        .into_iter()
        .filter_map(|(_, f)| {
            Some((
                f["defender_id"].as_str()?.to_owned(),
                f["console"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn defenders_fail_over_when_their_replica_is_killed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data = tempfile::tempdir().unwrap();
    let sim = tempfile::tempdir().unwrap();
    let (replica_a, grpc_a, http_a) = start_replica(data.path());
    let (replica_b, grpc_b, http_b) = start_replica(data.path());
    let bundle_file = sim.path().join("bundle.b64");
    cli(
        data.path(),
        &[
            "bundle",
            "--console-addr",
            &format!("{grpc_a},{grpc_b}"),
            "-o",
            bundle_file.to_str().unwrap(),
        ],
    );

    // 200 simulated Defenders (one real `defender` process) sending events for about 20 s,
    // across the kill (connecting all of them takes a few seconds of that on a loaded
    // machine); the process exits once the Console acked every event.
    const N: usize = 200;
    const EVENTS: u64 = 30;
    const RATE: u64 = N as u64 * EVENTS / 20;
    let mut cmd = Command::new(common::defender_bin());
    cmd.args(["simulate", "--defenders", &N.to_string()])
        .args(["--events", &EVENTS.to_string(), "--rate", &RATE.to_string()])
        .args(["--reconnect-max", "1s"])
        .arg("--install-bundle-file")
        .arg(&bundle_file)
        .arg("--data-dir")
        .arg(sim.path().join("defenders"));
    clean(&mut cmd);
    cmd.env("DEFENDER_LOG_FORMAT", "json");
    let mut defender = Proc::spawn(cmd);
    let before = defender.wait_for("every Defender to connect", DEADLINE, |p| {
        let now = connected_to(p);
        (now.len() == N).then_some(now)
    });
    let on_a = before.values().filter(|c| **c == grpc_a).count();
    let on_b = before.values().filter(|c| **c == grpc_b).count();
    eprintln!("before the kill: {on_a} Defenders on replica A, {on_b} on replica B");
    assert_eq!(on_a + on_b, N, "connected elsewhere: {before:?}");

    // Kill the replica holding more Defenders (SIGKILL: no goodbye on the streams).
    let (mut victim, survivor, survivor_http, moved) = if on_a >= on_b {
        (replica_a, replica_b, http_b, on_a)
    } else {
        (replica_b, replica_a, http_a, on_b)
    };
    let survivor_grpc = if on_a >= on_b { &grpc_b } else { &grpc_a };
    let mark = defender.lines().len();
    let killed_at = Instant::now();
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    defender.wait_for("every Defender on the survivor", DEADLINE, |p| {
        let now = connected_to(p);
        (now.len() == N && now.values().all(|c| c == survivor_grpc)).then_some(())
    });
    let failover = killed_at.elapsed();
    eprintln!(
        "all {moved} Defenders of the killed replica connected to the survivor {:.2} s after SIGKILL",
        failover.as_secs_f64()
    );
    // Only the Defenders of the killed replica reconnected: those on the survivor kept their
    // streams.
    let reconnects = defender.messages("connected to the Console", mark).len();
    assert_eq!(
        reconnects, moved,
        "Defenders on the survivor reconnected too"
    );

    // The survivor lists all of them as connected.
    let token = cli(data.path(), &["token", "create"]);
    let get = |path: String| {
        let token = token.clone();
        let url = format!("http://{survivor_http}{path}");
        async move {
            let resp = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            resp.json::<Value>().await.ok()
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(eventually(
        "the survivor lists every Defender",
        // The failover itself is held to DEADLINE above; this only waits for the API, which a
        // loaded test machine can slow down.
        2 * DEADLINE,
        || async {
            let list = get("/api/v1/defenders?connected=true".into()).await?;
            let listed = list.as_array().map_or(0, |l| {
                l.iter()
                    .filter(|d| before.keys().any(|id| d["id"] == id.as_str()))
                    .count()
            });
            (listed == N).then_some(())
        },
    ));

    // Every event arrived exactly once, across the kill: the simulation ends once all are
    // acked, and the database holds each Defender's seqs 1..=EVENTS once each.
    let summary = defender.wait_for("the simulation to finish", Duration::from_secs(60), |p| {
        p.lines()
            .iter()
            .filter_map(|l| l["raw"].as_str())
            .find(|l| l.starts_with("simulate: defenders="))
            .map(str::to_owned)
    });
    let total = N as u64 * EVENTS;
    assert!(
        summary.contains(&format!("produced={total} acked={total} dropped=0")),
        "{summary}"
    );
    for id in before.keys() {
        let page = rt
            .block_on(get(format!("/api/v1/events?defender={id}&limit=1000")))
            .expect("events of a Defender");
        let mut seqs: Vec<u64> = page["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=EVENTS).collect::<Vec<_>>(), "Defender {id}");
    }
    drop(survivor);
}
