//! `defender-demo app`: a workload worth watching. It serves HTTP, spawns a short-lived child
//! process of itself now and then, and makes outbound HTTP connections to its targets.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use clap::Args;

use crate::http::{self, Target};

/// Longest a `/slow` request is held open.
const MAX_SLOW: Duration = Duration::from_secs(10);

/// `app` options.
#[derive(Debug, Args)]
pub struct AppArgs {
    /// Address of the HTTP server.
    #[arg(long, env = "DEMO_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// Name shown in logs, in `GET /` and in the children's argv.
    #[arg(long, env = "DEMO_NAME", default_value = "demo")]
    pub name: String,
    /// URLs (`http://host:port/path`, comma-separated) to GET every --connect-every.
    #[arg(long = "target", env = "DEMO_TARGETS", value_delimiter = ',')]
    pub targets: Vec<Target>,
    /// Interval between rounds of outbound requests.
    #[arg(long, env = "DEMO_CONNECT_EVERY", default_value = "5s", value_parser = crate::parse_duration)]
    pub connect_every: Duration,
    /// Interval between child processes.
    #[arg(long, env = "DEMO_SPAWN_EVERY", default_value = "10s", value_parser = crate::parse_duration)]
    pub spawn_every: Duration,
    /// Lifetime of each child process.
    #[arg(long, env = "DEMO_CHILD_LIFETIME", default_value = "1500ms", value_parser = crate::parse_duration)]
    pub child_lifetime: Duration,
    /// Once, this long after start, run `sh -c 'sleep 2'`: a shell started by a non-shell
    /// parent, which the Defender's default runtime policy audits (so the quick start has an
    /// audit to show). Off unless given.
    #[arg(long, env = "DEMO_SHELL_AFTER", value_parser = crate::parse_duration)]
    pub shell_after: Option<Duration>,
}

/// Counters shown by `GET /`.
#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    children: AtomicU64,
    outbound_ok: AtomicU64,
    outbound_failed: AtomicU64,
}

struct AppState {
    name: String,
    started: Instant,
    stats: Stats,
}

/// Runs the app until SIGTERM or SIGINT.
pub async fn run(args: AppArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let state = Arc::new(AppState {
        name: args.name.clone(),
        started: Instant::now(),
        stats: Stats::default(),
    });
    println!(
        "[{}] pid {} serving http://{} (GET /, /healthz, /slow?ms=N); child every {:?}; {} target(s) every {:?}",
        args.name,
        std::process::id(),
        listener.local_addr()?,
        args.spawn_every,
        args.targets.len(),
        args.connect_every
    );
    let spawner = tokio::spawn(spawn_children(
        state.clone(),
        args.spawn_every,
        args.child_lifetime,
    ));
    let connector = tokio::spawn(connect_targets(
        state.clone(),
        args.targets.clone(),
        args.connect_every,
    ));
    let shell = args
        .shell_after
        .map(|after| tokio::spawn(run_shell_once(state.clone(), after)));
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    spawner.abort();
    connector.abort();
    if let Some(shell) = shell {
        shell.abort();
    }
    println!("[{}] stopping", args.name);
    Ok(())
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/slow", get(slow))
        .with_state(state)
}

async fn index(State(state): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    let s = &state.stats;
    let served = s.requests.fetch_add(1, Ordering::Relaxed) + 1;
    axum::Json(serde_json::json!({
        "name": state.name,
        "pid": std::process::id(),
        "uptime_s": state.started.elapsed().as_secs(),
        "requests": served,
        "children_spawned": s.children.load(Ordering::Relaxed),
        "outbound_ok": s.outbound_ok.load(Ordering::Relaxed),
        "outbound_failed": s.outbound_failed.load(Ordering::Relaxed),
    }))
}

#[derive(serde::Deserialize)]
struct SlowQuery {
    ms: Option<u64>,
}

/// Holds the connection open a while, so both ends' sockets are there to be seen.
async fn slow(State(state): State<Arc<AppState>>, Query(q): Query<SlowQuery>) -> &'static str {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let wait = Duration::from_millis(q.ms.unwrap_or(1000)).min(MAX_SLOW);
    tokio::time::sleep(wait).await;
    "ok\n"
}

async fn spawn_children(state: Arc<AppState>, every: Duration, lifetime: Duration) {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("[{}] cannot find my own executable: {e}", state.name);
            return;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let lifetime_ms = format!("{}ms", lifetime.as_millis());
        let child = tokio::process::Command::new(&exe)
            .args(["child", "--lifetime", &lifetime_ms, "--parent", &state.name])
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut child) => {
                let n = state.stats.children.fetch_add(1, Ordering::Relaxed) + 1;
                let pid = child.id().unwrap_or(0);
                match child.wait().await {
                    Ok(status) => println!("[{}] child #{n} (pid {pid}) {status}", state.name),
                    Err(e) => eprintln!("[{}] child #{n} (pid {pid}): {e}", state.name),
                }
            }
            Err(e) => eprintln!("[{}] cannot spawn a child: {e}", state.name),
        }
    }
}

/// Runs one shell from this (non-shell) process after `after`, for an audit to look at.
async fn run_shell_once(state: Arc<AppState>, after: Duration) {
    tokio::time::sleep(after).await;
    // The shell lives 2 s so that a polling Defender (1 s) sees it too.
    let status = tokio::process::Command::new("sh")
        .args(["-c", "sleep 2"])
        .kill_on_drop(true)
        .status()
        .await;
    match status {
        Ok(status) => println!(
            "[{}] ran `sh -c 'sleep 2'` (a shell started by a non-shell parent): {status}",
            state.name
        ),
        Err(e) => eprintln!("[{}] cannot run sh: {e}", state.name),
    }
}

async fn connect_targets(state: Arc<AppState>, targets: Vec<Target>, every: Duration) {
    if targets.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for target in &targets {
            let started = Instant::now();
            match http::get(target, Duration::from_secs(15)).await {
                Ok(status) => {
                    state.stats.outbound_ok.fetch_add(1, Ordering::Relaxed);
                    println!(
                        "[{}] GET {target} -> {status} in {} ms",
                        state.name,
                        started.elapsed().as_millis()
                    );
                }
                Err(e) => {
                    state.stats.outbound_failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("[{}] GET {target} failed: {e}", state.name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_its_endpoints() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AppState {
            name: "t".into(),
            started: Instant::now(),
            stats: Stats::default(),
        });
        let server = tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let url = |p: &str| -> Target { format!("http://{addr}{p}").parse().unwrap() };
        let timeout = Duration::from_secs(10);
        assert_eq!(http::get(&url("/healthz"), timeout).await, Ok(200));
        assert_eq!(http::get(&url("/"), timeout).await, Ok(200));
        let started = Instant::now();
        assert_eq!(http::get(&url("/slow?ms=200"), timeout).await, Ok(200));
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(http::get(&url("/nope"), timeout).await, Ok(404));
        server.abort();
    }
}
