//! WAAS proxy overhead on loopback, against the same app measured directly in the same run.
//!
//! Run: `cargo bench -p defender --bench waas_proxy` (release build). The proxy is the real
//! binary, `defender run --waas 127.0.0.1:P=127.0.0.1:U -- sleep 600` (no install bundle: the
//! Defender is disabled but WAAS forwards and inspects under the default policy), in its own
//! process so its memory is measured alone. The app is a minimal hyper server in this process.
//!
//! Prints: throughput of small GETs over keep-alive connections (direct, via WAAS, ratio),
//! latency p50/p99 at a paced 1,000 requests/s (direct, via WAAS, added), and the proxy's RSS
//! idle, holding 1,000 keep-alive connections, and under 1,000 slow-loris connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const CONNECTIONS: usize = 32;
const RUN: Duration = Duration::from_secs(4);

async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        b"hello, world\n",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let s = TcpStream::connect(addr).await.unwrap();
    let _ = s.set_nodelay(true);
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    tx
}

async fn get(tx: &mut Sender, path: &str) {
    tx.ready().await.unwrap();
    let r = tx
        .send_request(
            Request::get(path)
                .header("host", "bench")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let _ = r.into_body().collect().await.unwrap();
}

/// Requests per second over `CONNECTIONS` keep-alive connections for `RUN`.
async fn throughput(addr: SocketAddr) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = connect(addr).await;
            while start.elapsed() < RUN {
                get(&mut tx, "/api/items?id=42&q=hello").await;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Latencies (µs) at a paced total of 1,000 requests/s (10 connections × 100/s) for 3 s.
async fn paced(addr: SocketAddr) -> Vec<u64> {
    let mut tasks = Vec::new();
    for i in 0..10u64 {
        tasks.push(tokio::spawn(async move {
            let mut tx = connect(addr).await;
            let mut out = Vec::with_capacity(300);
            let start = tokio::time::Instant::now() + Duration::from_micros(i * 1000);
            for n in 0..300u32 {
                tokio::time::sleep_until(start + Duration::from_millis(10) * n).await;
                let t = Instant::now();
                get(&mut tx, "/api/items?id=42").await;
                out.push(t.elapsed().as_micros() as u64);
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn pct(v: &[u64], p: f64) -> u64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

/// CPU time (user + system) a process used so far, seconds; `None` for this process.
fn cpu_secs(pid: Option<u32>) -> f64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Pins every thread of process `pid` (`None`: this one) to `cpus`. False when the kernel
/// refused (a CPU outside the process's cpuset).
fn pin(pid: Option<u32>, cpus: &[usize]) -> bool {
    let dir = match pid {
        Some(p) => format!("/proc/{p}/task"),
        None => "/proc/self/task".to_owned(),
    };
    let Ok(tasks) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut ok = true;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for &c in cpus {
                libc::CPU_SET(c, &mut set);
            }
            ok &= libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0;
        }
    }
    ok
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Proxy(Child);

impl Drop for Proxy {
    /// SIGTERM first: the Defender passes it to its application (`sleep 600`) and exits with
    /// it; a SIGKILL alone would leave the `sleep` behind for ten minutes.
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_proxy(upstream: SocketAddr, dir: &std::path::Path) -> (Proxy, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_defender"))
        .args(["run", "--capture", "poll", "--waas"])
        .arg(format!("{listen}={upstream}"))
        .args(["--", "sleep", "600"])
        .env_remove("INSTALL_BUNDLE")
        .env("DEFENDER_DATA_DIR", dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start defender");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(listen).await.is_err() {
        assert!(Instant::now() < deadline, "proxy did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Proxy(child), listen)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // 1,000 connections need ~2,000 descriptors on each side: raise the soft limit (the child
    // inherits it).
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    let dir = std::env::temp_dir().join(format!("waas-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let upstream = app().await;
    let (proxy, via) = start_proxy(upstream, &dir).await;
    let pid = proxy.0.id();
    // Warm both paths (pool, caches).
    throughput_short(upstream).await;
    throughput_short(via).await;

    let c0 = cpu_secs(None);
    let direct = throughput(upstream).await;
    let c1 = cpu_secs(None);
    let p1 = cpu_secs(Some(pid));
    let proxied = throughput(via).await;
    let c2 = cpu_secs(None);
    let p2 = cpu_secs(Some(pid));
    let run = RUN.as_secs_f64();
    let per_req = |cpu: f64, rate: f64| cpu / (rate * run) * 1e6;
    println!(
        "throughput, small GETs, {CONNECTIONS} keep-alive connections, {} s each:",
        RUN.as_secs()
    );
    println!("  direct   {direct:>9.0} req/s");
    println!("  via WAAS {proxied:>9.0} req/s");
    println!("  ratio    {:>9.2}   (target >= 0.8)", proxied / direct);
    // On a machine with few cores the client, the app and the proxy share them: the ratio is
    // then bounded by CPU per request, which these figures show (client + app in this process).
    println!(
        "  CPU per request: client+app {:.1} us direct, {:.1} us via WAAS; proxy {:.1} us",
        per_req(c1 - c0, direct),
        per_req(c2 - c1, proxied),
        per_req(p2 - p1, proxied)
    );

    let d = paced(upstream).await;
    let p = paced(via).await;
    println!("latency at 1,000 req/s (10 connections x 100/s, 3 s):");
    println!(
        "  direct   p50 {:>6} us  p99 {:>6} us",
        pct(&d, 0.5),
        pct(&d, 0.99)
    );
    println!(
        "  via WAAS p50 {:>6} us  p99 {:>6} us",
        pct(&p, 0.5),
        pct(&p, 0.99)
    );
    println!(
        "  added    p50 {:>6} us  p99 {:>6} us   (target p99 < 1000 us)",
        pct(&p, 0.5).saturating_sub(pct(&d, 0.5)),
        pct(&p, 0.99).saturating_sub(pct(&d, 0.99))
    );

    let idle = rss_kib(pid);
    let mut keep = Vec::new();
    for _ in 0..1000 {
        let mut tx = connect(via).await;
        get(&mut tx, "/").await;
        keep.push(tx);
    }
    let held = rss_kib(pid);
    drop(keep);
    let mut loris = Vec::new();
    for _ in 0..1000 {
        let mut s = TcpStream::connect(via).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            .await
            .unwrap();
        loris.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow = rss_kib(pid);
    // The proxy still serves while the slow clients hang on.
    let mut tx = connect(via).await;
    let t = Instant::now();
    get(&mut tx, "/").await;
    let served = t.elapsed();
    drop(loris);
    // The same throughput with the proxy on a core of its own: the load generator and the app
    // pinned to CPU 0, the proxy to CPU 1 (what a deployment with a core for the proxy sees;
    // only with 2 CPUs or more).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = if cpus >= 2 && pin(None, &[0]) && pin(Some(pid), &[1]) {
        let d = throughput(upstream).await;
        let v = throughput(via).await;
        Some((d, v))
    } else {
        None
    };
    let all: Vec<usize> = (0..cpus).collect();
    pin(None, &all);
    println!("proxy RSS (defender process):");
    println!("  idle                                 {:>7} KiB", idle);
    println!("  1,000 keep-alive connections open    {:>7} KiB", held);
    println!(
        "  1,000 slow-loris connections         {:>7} KiB  (a normal request meanwhile: {} us)",
        slow,
        served.as_micros()
    );
    match pinned {
        Some((d, v)) => {
            println!(
                "throughput with the proxy on a core of its own (client+app on CPU 0, proxy on CPU 1):"
            );
            println!("  direct   {d:>9.0} req/s");
            println!("  via WAAS {v:>9.0} req/s");
            println!("  ratio    {:>9.2}", v / d);
        }
        None => println!("(fewer than 2 CPUs or affinity refused: no pinned measurement)"),
    }
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn throughput_short(addr: SocketAddr) {
    let mut tx = connect(addr).await;
    for _ in 0..2000 {
        get(&mut tx, "/").await;
    }
}
