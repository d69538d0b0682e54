//! The Defender sees the application: a real process tree under `defender run` and under
//! `fargate entrypoint` + `fargate sidecar` (real processes, real Unix socket, real mTLS to a
//! real Console), checked in what the Console stored.

mod common;
mod db_support;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use defender_console::store::StoredEvent;
use defender_proto::v1::{Direction, event::Kind};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);

/// A shell that spawns children: a TCP listener, a client of `server_port`, and a sleep; it
/// waits for them and exits 3. Its extra arguments are attacker-style strings.
fn workload(listen_port: u16, server_port: u16) -> Vec<OsString> {
    let script = format!(
        "python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", {listen_port})); s.listen(); time.sleep(2.5)' & \
         python3 -c 'import socket,time; c=socket.create_connection((\"127.0.0.1\", {server_port})); time.sleep(2.5)' & \
         sleep 2 & wait; exit 3"
    );
    vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "<script>alert(1)</script>".into(),
        OsString::from_vec(b"caf\xff\xfe".to_vec()),
    ]
}

/// A local server the workload connects to.
async fn server() -> (tokio::net::TcpListener, u16) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn events_of(console: &defender_console::server::RunningConsole) -> Vec<StoredEvent> {
    stored_events(console, None, 10_000).await
}

fn bytes_str(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Asserts what the Console stored of the workload.
fn check_workload(events: &[StoredEvent], listen_port: u16, server_port: u16, container: &str) {
    let starts: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event.kind {
            Some(Kind::ProcessStart(p)) => Some((e, p)),
            _ => None,
        })
        .collect();
    let (sh_event, sh) = starts
        .iter()
        .find(|(_, p)| p.argv.first().is_some_and(|a| a == b"sh"))
        .expect("the shell's start was stored");
    assert_eq!(sh_event.container, container);
    // argv arrives byte for byte, markup and invalid UTF-8 included.
    assert_eq!(sh.argv[3], b"<script>alert(1)</script>".to_vec());
    assert_eq!(sh.argv[4], b"caf\xff\xfe".to_vec());
    assert!(
        bytes_str(&sh.exe).ends_with("sh"),
        "exe {}",
        bytes_str(&sh.exe)
    );
    assert_eq!(sh.uid, unsafe { libc::getuid() });
    assert!(!sh.exe_sha256.is_empty(), "executable hashed");

    let sleep = starts
        .iter()
        .find(|(_, p)| p.argv.first().is_some_and(|a| a == b"sleep"))
        .expect("the sleep child's start was stored")
        .1;
    assert_eq!(sleep.ppid, sh.pid, "sleep is the shell's child");
    assert_eq!(sleep.argv, vec![b"sleep".to_vec(), b"2".to_vec()]);
    let listener_pid = starts
        .iter()
        .find(|(_, p)| p.argv.iter().any(|a| bytes_str(a).contains(".listen()")))
        .expect("the listener's start was stored")
        .1
        .pid;
    let client_pid = starts
        .iter()
        .find(|(_, p)| {
            p.argv
                .iter()
                .any(|a| bytes_str(a).contains("create_connection"))
        })
        .expect("the client's start was stored")
        .1
        .pid;

    let listen = events.iter().find_map(|e| match &e.event.kind {
        Some(Kind::NetworkListen(l)) if l.local_port == u32::from(listen_port) && !l.closed => {
            Some(l)
        }
        _ => None,
    });
    let listen = listen.expect("the listen event was stored");
    assert_eq!(listen.pid, listener_pid);
    assert_eq!(listen.local_addr, "127.0.0.1");

    let connect = events.iter().find_map(|e| match &e.event.kind {
        Some(Kind::NetworkConnection(c))
            if c.remote_port == u32::from(server_port) && !c.closed =>
        {
            Some(c)
        }
        _ => None,
    });
    let connect = connect.expect("the connect event was stored");
    assert_eq!(connect.remote_addr, "127.0.0.1");
    assert_eq!(connect.pid, client_pid);
    assert_eq!(connect.direction, Direction::Outbound as i32);

    // Exits: the shell's own status is known (the Defender reaped it); its children were
    // reaped by the shell, so theirs are reported as unknown.
    let exit_of = |pid: u32| {
        events.iter().find_map(|e| match &e.event.kind {
            Some(Kind::ProcessExit(x)) if x.pid == pid => Some(*x),
            _ => None,
        })
    };
    let sh_exit = exit_of(sh.pid).expect("the shell's exit was stored");
    assert!(sh_exit.status_known);
    assert_eq!(sh_exit.exit_code, 3);
    assert!(exit_of(sleep.pid).is_some(), "the sleep's exit was stored");
}

async fn exit_status(mut child: Child) -> std::process::ExitStatus {
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("process did not exit in time")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_run_reports_processes_sockets_and_exits() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), Duration::from_millis(500)).await;
    let bundle = bundle_b64(data.path(), &console).await;
    let (server, server_port) = server().await;
    let accept = tokio::spawn(async move {
        let _conn = server.accept().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let listen_port = free_port();

    let child = Command::new(defender_bin())
        .arg("run")
        .arg("--data-dir")
        .arg(agent.path())
        .args(["--poll-interval", "100ms", "--drain-timeout", "20s"])
        .arg("--")
        .args(workload(listen_port, server_port))
        .env("INSTALL_BUNDLE", &bundle)
        .env("DEFENDER_CONTAINER_NAME", "standalone-app")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = exit_status(child).await;
    assert_eq!(
        status.code(),
        Some(3),
        "the Defender exits with the app's status"
    );
    // The Defender drains before exiting, so everything is stored by now.
    let events = events_of(&console).await;
    check_workload(&events, listen_port, server_port, "standalone-app");
    accept.abort();
}

fn sidecar(bundle: &str, dir: &Path, socket: &Path) -> Child {
    Command::new(defender_bin())
        .args(["fargate", "sidecar", "--data-dir"])
        .arg(dir)
        .arg("--socket")
        .arg(socket)
        .env("INSTALL_BUNDLE", bundle)
        .env("FARGATE_TASK", "web-task")
        .env_remove("ECS_CONTAINER_METADATA_URI_V4")
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn healthcheck(socket: &Path) -> bool {
    Command::new(defender_bin())
        .args(["fargate", "healthcheck", "--socket"])
        .arg(socket)
        .stdout(Stdio::null())
        .status()
        .await
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fargate_entrypoint_and_sidecar_report_the_container() {
    let data = tempfile::tempdir().unwrap();
    let task = tempfile::tempdir().unwrap();
    let socket = task.path().join("run").join("defender.sock");
    let console = start_console(data.path(), Duration::from_millis(500)).await;
    let bundle = bundle_b64(data.path(), &console).await;

    // Before the sidecar exists the health check fails.
    assert!(!healthcheck(&socket).await);
    let mut sidecar = sidecar(&bundle, &task.path().join("data"), &socket);
    eventually("sidecar healthy", WAIT, || async {
        healthcheck(&socket).await.then_some(())
    })
    .await;

    let (server, server_port) = server().await;
    let accept = tokio::spawn(async move {
        let _conn = server.accept().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let listen_port = free_port();
    let app = Command::new(defender_bin())
        .args(["fargate", "entrypoint", "--socket"])
        .arg(&socket)
        .args([
            "--container",
            "web",
            "--image",
            "example/web:1",
            "--poll-interval",
            "100ms",
        ])
        .arg("--")
        .args(workload(listen_port, server_port))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = exit_status(app).await;
    assert_eq!(
        status.code(),
        Some(3),
        "the wrapper exits with the app's status"
    );

    // The sidecar spools and delivers; poll the Console until the shell's exit arrived.
    let events = eventually("the app's exit stored", WAIT, || async {
        let events = events_of(&console).await;
        events
            .iter()
            .any(|e| matches!(&e.event.kind, Some(Kind::ProcessExit(x)) if x.exit_code == 3))
            .then_some(events)
    })
    .await;
    check_workload(&events, listen_port, server_port, "web");
    // One task, one Defender, described by its sidecar.
    let token = api_token(&console).await;
    let list = defenders(&console, &token, "").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["mode"], "embedded");
    assert_eq!(list[0]["family"], "web-task");

    // SIGTERM stops the sidecar cleanly.
    unsafe { libc::kill(sidecar.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(WAIT, sidecar.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "sidecar exit: {status}");
    assert!(!healthcheck(&socket).await);
    accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_runs_when_the_sidecar_is_unreachable() {
    let task = tempfile::tempdir().unwrap();
    let out = Command::new(defender_bin())
        .args(["fargate", "entrypoint", "--socket"])
        .arg(task.path().join("nobody-here.sock"))
        .args(["--", "sh", "-c", "echo app-ran; exit 5"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app-ran\n");
}
