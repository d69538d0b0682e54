//! Issue 13, items 7 and 11, with real sockets: slow HTTP clients are cut by the header
//! timeout, each listener has a connection cap (refused cleanly above it, counted on
//! /metrics), accept errors at the descriptor limit are backed off instead of spun on, the UI
//! can be served over HTTPS with `Secure` cookies, and the data files are private.

mod common;
mod db_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use defender_console::listen::ListenerLimits;
use defender_console::server::{self, EdgeConfig, RunningConsole};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(data: &Path, edge: EdgeConfig) -> RunningConsole {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::start_with_edge(
        common::config(data, Duration::from_secs(10)),
        edge,
        grpc,
        http,
    )
    .await
    .unwrap()
}

fn limits(max_connections: usize, header_timeout: Duration) -> ListenerLimits {
    ListenerLimits {
        max_connections,
        header_timeout,
        body_timeout: header_timeout,
    }
}

/// Reads until EOF or `within`; None when the peer kept the connection open that long.
async fn read_to_close(sock: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(within, sock.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

/// A metric's value from `/metrics`.
async fn metric(console: &RunningConsole, name: &str, listener: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", console.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let key = format!("{name}{{listener=\"{listener}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("{key} in /metrics:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_capped_and_cut_and_healthz_still_answers() {
    const CAP: usize = 50;
    const SLOW: usize = 300;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
    let data = tempfile::tempdir().unwrap();
    let console = start(
        data.path(),
        EdgeConfig {
            http: limits(CAP, HEADER_TIMEOUT),
            ..EdgeConfig::default()
        },
    )
    .await;

    // 300 clients send half a request and wait.
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(console.http_addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: console\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(s);
    }
    // Every connection ends, and soon: those above the cap at once with a 503, the others when
    // their header timeout expires (they never see a response to the half request).
    let started = tokio::time::Instant::now();
    let ends = futures_join(
        slow.iter_mut()
            .map(|s| read_to_close(s, Duration::from_secs(10))),
    )
    .await;
    let refused = ends
        .iter()
        .filter(|e| e.as_deref().is_some_and(|t| t.starts_with("HTTP/1.1 503")))
        .count();
    let still_open = ends.iter().filter(|e| e.is_none()).count();
    assert_eq!(still_open, 0, "half-sent requests held connections open");
    assert!(
        refused >= SLOW - CAP,
        "{refused} of {SLOW} refused with 503 above a cap of {CAP}"
    );
    assert!(
        started.elapsed() < HEADER_TIMEOUT * 5,
        "slow clients were cut after {:?}",
        started.elapsed()
    );
    // The Console answers again at once, and the refusals and timeouts are counted.
    let health = reqwest::get(format!("http://{}/healthz", console.http_addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(
        metric(
            &console,
            "defender_console_connections_refused_total",
            "http"
        )
        .await
            >= (SLOW - CAP) as u64
    );
    assert!(metric(&console, "defender_console_http_timeouts_total", "http").await >= 1);
    // A slow body is cut too (408), and the connection with it.
    let mut s = TcpStream::connect(console.http_addr).await.unwrap();
    s.write_all(
        b"POST /login HTTP/1.1\r\nHost: console\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s, HEADER_TIMEOUT * 5)
        .await
        .expect("slow body cut");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:.80}");
}

/// Awaits all futures concurrently (no extra dependency).
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out = Vec::with_capacity(set.len());
    for f in set {
        out.push(f.await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_listener_refuses_connections_above_its_cap() {
    let data = tempfile::tempdir().unwrap();
    let console = start(
        data.path(),
        EdgeConfig {
            grpc: limits(3, Duration::from_secs(10)),
            ..EdgeConfig::default()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(console.grpc_addr).await.unwrap());
    }
    common::eventually(
        "3 gRPC connections open",
        Duration::from_secs(10),
        || async {
            (metric(&console, "defender_console_connections_open", "grpc").await == 3).then_some(())
        },
    )
    .await;
    // The 4th is closed at once, without a byte.
    let mut fourth = TcpStream::connect(console.grpc_addr).await.unwrap();
    let end = read_to_close(&mut fourth, Duration::from_secs(5)).await;
    assert_eq!(
        end.as_deref(),
        Some(""),
        "connection above the cap not closed"
    );
    assert!(
        metric(
            &console,
            "defender_console_connections_refused_total",
            "grpc"
        )
        .await
            >= 1
    );
    // A held one closing frees its slot: a Defender can enroll again.
    drop(held);
    common::eventually("slots freed", Duration::from_secs(10), || async {
        (metric(&console, "defender_console_connections_open", "grpc").await == 0).then_some(())
    })
    .await;
    let bundle =
        defender::bundle::InstallBundle::decode(&common::bundle_b64(data.path(), &console).await)
            .unwrap();
    let agent = tempfile::tempdir().unwrap();
    defender::identity::enroll(
        agent.path(),
        &bundle,
        Default::default(),
        defender_proto::v1::Mode::Standalone,
    )
    .await
    .expect("enrollment works below the cap");
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_is_backed_off_logged_and_survived() {
    use std::process::Stdio;
    let data = tempfile::tempdir().unwrap();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (grpc_port, http_port) = (free_port(), free_port());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_defender-console"));
    cmd.args(["serve", "--data-dir"])
        .arg(data.path())
        .envs(db_support::env(data.path()))
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        // Caps above what the descriptor limit allows, so accept() itself fails.
        .args(["--grpc-max-connections", "10000"])
        .env("CONSOLE_ADMIN_PASSWORD", "edge-test")
        .env("RUST_LOG", "info")
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's descriptor limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 96,
                rlim_max: 96,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(std::sync::Mutex::new(String::new()));
    let log_w = log.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            log_w.lock().unwrap().push_str(&l);
            log_w.lock().unwrap().push('\n');
        }
    });
    let health = format!("http://127.0.0.1:{http_port}/healthz");
    common::eventually("console healthy", Duration::from_secs(30), || async {
        reqwest::get(&health)
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    assert!(
        log.lock().unwrap().contains("RLIMIT_NOFILE"),
        "descriptor limit logged at start"
    );

    // Exhaust the descriptors with gRPC connections that do nothing.
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(2),
            TcpStream::connect(("127.0.0.1", grpc_port)),
        )
        .await
        {
            held.push(s);
        }
    }
    common::eventually("accept failure logged", Duration::from_secs(20), || async {
        log.lock()
            .unwrap()
            .contains("accepting a connection failed")
            .then_some(())
    })
    .await;
    // At the limit the accept loop waits instead of spinning: under half a core.
    let ticks_per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    let before = cpu_ticks(pid);
    let window = Duration::from_secs(2);
    tokio::time::sleep(window).await;
    let used = cpu_ticks(pid) - before;
    assert!(
        used * 2 < ticks_per_sec * window.as_secs(),
        "{used} ticks of CPU in {window:?} at the descriptor limit: a busy accept loop"
    );
    // Descriptors freed: the Console serves again.
    drop(held);
    common::eventually("healthy again", Duration::from_secs(30), || async {
        reqwest::get(&health)
            .await
            .ok()
            .filter(|r| r.status().is_success())
    })
    .await;
    let metrics = reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("defender_console_accept_errors_total{listener=\"grpc\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(errors >= 1, "accept errors counted");
    child.start_kill().unwrap();
}

/// A raw HTTP/1.1 request over TLS, trusting `ca_der`; returns the whole answer.
async fn https_request(addr: std::net::SocketAddr, ca_der: &[u8], request: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.to_vec().into()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("TLS handshake with the Console's HTTPS listener");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn set_cookie_lines(answer: &str) -> Vec<&str> {
    answer
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .collect()
}

fn login_request(password: &str) -> String {
    let body = format!("username=admin&password={password}");
    format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_listener_and_public_url_make_cookies_secure() {
    let data = tempfile::tempdir().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (certs.path().join("ui.pem"), certs.path().join("ui-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let console = start(
        data.path(),
        EdgeConfig {
            http_tls: Some((cert_path, key_path)),
            ..EdgeConfig::default()
        },
    )
    .await;
    let health = https_request(
        console.http_addr,
        cert.der(),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health:.80}");
    let login = https_request(
        console.http_addr,
        cert.der(),
        &login_request(common::ADMIN_PASSWORD),
    )
    .await;
    let cookies = set_cookie_lines(&login);
    assert!(!cookies.is_empty(), "{login:.300}");
    assert!(
        cookies.iter().all(|c| c.contains("; Secure")),
        "{cookies:?}"
    );
    // Plain HTTP on that listener gets no answer.
    let mut plain = TcpStream::connect(console.http_addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut plain, Duration::from_secs(15)).await;
    assert!(
        !answer.unwrap_or_default().contains("200 OK"),
        "plain HTTP served on the HTTPS listener"
    );

    // Or with a certificate from the Console's own CA for a named host (trust ca.pem).
    let ca_data = tempfile::tempdir().unwrap();
    let console = start(
        ca_data.path(),
        EdgeConfig {
            http_tls_ca_hosts: vec!["localhost".to_owned()],
            ..EdgeConfig::default()
        },
    )
    .await;
    let ca_der = {
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_file(ca_data.path().join("ca.pem")).unwrap()
    };
    let login = https_request(
        console.http_addr,
        &ca_der,
        &login_request(common::ADMIN_PASSWORD),
    )
    .await;
    let cookies = set_cookie_lines(&login);
    assert!(
        !cookies.is_empty() && cookies.iter().all(|c| c.contains("; Secure")),
        "{login:.300}"
    );

    // Behind a TLS proxy: --public-url https://… marks the cookie Secure on plain HTTP too;
    // without it, a plain-HTTP Console does not (the browser would drop a Secure cookie).
    for (public_url, secure) in [(Some("https://console.example.com"), true), (None, false)] {
        let data = tempfile::tempdir().unwrap();
        let console = start(
            data.path(),
            EdgeConfig {
                public_url: public_url.map(str::to_owned),
                ..EdgeConfig::default()
            },
        )
        .await;
        let resp = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("http://{}/login", console.http_addr))
            .form(&[("username", "admin"), ("password", common::ADMIN_PASSWORD)])
            .send()
            .await
            .unwrap();
        let cookie = resp
            .headers()
            .get("set-cookie")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            cookie.contains("; Secure"),
            secure,
            "{public_url:?}: {cookie}"
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_are_private() {
    // SAFETY: umask only changes this process's default file mode; 0o022 is the usual one.
    unsafe { libc::umask(0o022) };
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("console-data");
    let console = start(&data, EdgeConfig::default()).await;
    let bundle = common::bundle_b64(&data, &console).await;
    assert_eq!(mode(&data), 0o700, "data dir");
    if db_support::database_url(&data).is_some() {
        // On PostgreSQL the database and the CA key live in the database: no secret file at
        // all is written, only the public CA certificate.
        for f in ["console.db", "ca-key.pem"] {
            assert!(
                !data.join(f).exists(),
                "{f} written beside a PostgreSQL database"
            );
        }
        assert_eq!(mode(&data.join("ca.pem")), 0o644, "ca.pem");
    } else {
        for f in [
            "console.db",
            "console.db-wal",
            "console.db-shm",
            "ca-key.pem",
        ] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
    }
    // The Defender's identity and spool.
    let agent = parent.path().join("agent");
    let b = defender::bundle::InstallBundle::decode(&bundle).unwrap();
    defender::identity::enroll(
        &agent.join("identity"),
        &b,
        Default::default(),
        defender_proto::v1::Mode::Standalone,
    )
    .await
    .unwrap();
    let outbox = defender::outbox::Outbox::open(&agent.join("spool"), Default::default()).unwrap();
    outbox.push(defender_proto::v1::Event {
        time_ms: 1_800_000_000_000,
        ..Default::default()
    });
    assert_eq!(mode(&agent.join("identity")), 0o700, "identity dir");
    // Key and certificate live in one file (see agent/src/identity.rs).
    assert_eq!(mode(&agent.join("identity").join("identity.json")), 0o600);
    assert_eq!(mode(&agent.join("spool")), 0o700, "spool dir");
    for entry in std::fs::read_dir(agent.join("spool")).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}
