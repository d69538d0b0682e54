//! Runtime defense end to end: a real workload under `defender run` violates each rule type;
//! the Console stores the audits and, under `prevent`, the process is gone within a bounded
//! time. Policies travel the real way: saved in the Console, pushed over the mTLS stream.

mod common;
mod db_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use defender_console::server::RunningConsole;
use defender_proto::v1::{Effect, RuntimeAudit, event::Kind};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);

/// Starts `defender run` with `script` as the workload (via sh), its cwd `dir`. These tests
/// exercise enforcement after the fact (polling: prevent kills with SIGKILL, status 137);
/// exact capture's refusal before exec is tested in `capture.rs`.
fn run_defender(bundle: &str, agent: &Path, dir: &Path, script: &str) -> Child {
    Command::new(defender_bin())
        .arg("run")
        .args(["--capture", "poll"])
        .arg("--data-dir")
        .arg(agent)
        .args([
            "--poll-interval",
            "100ms",
            "--drain-timeout",
            "20s",
            "--",
            "sh",
            "-c",
            script,
        ])
        .current_dir(dir)
        .env("INSTALL_BUNDLE", bundle)
        .env("DEFENDER_CONTAINER_NAME", "app")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn audits(console: &RunningConsole) -> Vec<RuntimeAudit> {
    stored_events(console, Some("audit"), 10_000)
        .await
        .into_iter()
        .filter_map(|e| match e.event.kind {
            Some(Kind::Audit(a)) => Some(a),
            _ => None,
        })
        .collect()
}

/// Whether the Console stored a process start of an executable whose path contains `name`.
async fn started(console: &RunningConsole, name: &str) -> bool {
    stored_events(console, Some("process_start"), 10_000)
        .await
        .into_iter()
        .any(|e| {
            matches!(e.event.kind, Some(Kind::ProcessStart(s))
                if String::from_utf8_lossy(&s.exe).contains(name))
        })
}

async fn wait_audit(
    console: &RunningConsole,
    what: &str,
    pred: impl Fn(&RuntimeAudit) -> bool,
) -> RuntimeAudit {
    eventually(what, WAIT, || async {
        audits(console).await.into_iter().find(|a| pred(a))
    })
    .await
}

/// A copy of /bin/sleep under another name: a "tool" the policy can name.
fn tool(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(which("sleep"), &path).unwrap();
    path
}

fn touch(path: &Path) {
    std::fs::write(path, b"go").unwrap();
}

const PREVENT_POLICY: &str = r#"{"rules": [{
  "name": "no forbidden tools",
  "processes": {"effect": "prevent", "denied": ["forbidden-tool"], "crypto_miners": "prevent",
                "modified_binary": "alert"},
  "network": {"effect": "prevent", "denied_listening_ports": [LISTEN_PORT]}
}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prevent_kills_denied_process_miner_and_listener_and_audits_them() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), Duration::from_millis(500)).await;
    let bundle = bundle_b64(data.path(), &console).await;
    let listen_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let version = save_policy(
        &console,
        &PREVENT_POLICY.replace("LISTEN_PORT", &listen_port.to_string()),
    )
    .await;
    tool(work.path(), "forbidden-tool");
    tool(work.path(), "xmrig");
    // Each violation runs only once the policy is in force, and records how it ended.
    let script = format!(
        "while [ ! -f go ]; do sleep 0.05; done; \
         ./forbidden-tool 30; echo \"tool=$?\" >> log; \
         ./xmrig 30; echo \"miner=$?\" >> log; \
         python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", {listen_port})); s.listen(); time.sleep(30)'; \
         echo \"listener=$?\" >> log"
    );
    let started = tokio::time::Instant::now();
    let child = run_defender(&bundle, agent.path(), work.path(), &script);
    policy_in_force(agent.path(), version).await;
    touch(&work.path().join("go"));
    let status = tokio::time::timeout(WAIT, wait_child(child))
        .await
        .expect("workload ran to the end");
    assert_eq!(status.code(), Some(0));
    // Three 30 s processes, each killed at once: far from 90 s.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let log = std::fs::read_to_string(work.path().join("log")).unwrap();
    assert!(log.contains("tool=137"), "{log}");
    assert!(log.contains("miner=137"), "{log}");
    assert!(log.contains("listener=137"), "{log}");

    let denied = wait_audit(&console, "denied-process audit", |a| {
        a.message.contains("forbidden-tool")
    })
    .await;
    assert_eq!(denied.rule, "no forbidden tools");
    assert_eq!(denied.effect, Effect::Prevent as i32);
    assert!(denied.pid > 0);
    let miner = wait_audit(&console, "miner audit", |a| a.message.contains("xmrig")).await;
    assert_eq!(miner.effect, Effect::Prevent as i32);
    let listener = wait_audit(&console, "listening-port audit", |a| {
        a.message.contains(&listen_port.to_string())
    })
    .await;
    assert_eq!(listener.effect, Effect::Prevent as i32);
    // Audits point at the event that violated the rule.
    assert!(denied.subject_seq > 0);
}

async fn wait_child(mut child: Child) -> std::process::ExitStatus {
    child.wait().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_for_allow_list_modified_binary_outbound_port_and_ip() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), Duration::from_millis(500)).await;
    let bundle = bundle_b64(data.path(), &console).await;
    // Servers the workload connects to: a denied port on 127.0.0.1, and any port on a denied IP.
    let denied_port_server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let denied_port = denied_port_server.local_addr().unwrap().port();
    let denied_ip_server = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let denied_ip_port = denied_ip_server.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        let _a = denied_port_server.accept().await;
        let _b = denied_ip_server.accept().await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let policy = format!(
        r#"{{"rules": [{{
          "name": "tight",
          "processes": {{"effect": "alert", "allowed": ["sh", "dash", "bash", "sleep", "python3*", "tool", "cp"],
                         "modified_binary": "alert"}},
          "network": {{"effect": "alert", "denied_outbound_ports": [{denied_port}],
                       "denied_outbound_ips": ["127.0.0.2/32"]}}
        }}]}}"#
    );
    let version = save_policy(&console, &policy).await;
    tool(work.path(), "tool");
    tool(work.path(), "unlisted-tool");
    // The second version of ./tool is another program (cat, fed for a second by sleep).
    let cat = which("cat");
    let script = format!(
        "while [ ! -f go ]; do sleep 0.05; done; \
         ./unlisted-tool 3; \
         ./tool 3; cp {cat} ./tool; sleep 3 | ./tool; \
         python3 -c 'import socket,time; a=socket.create_connection((\"127.0.0.1\", {denied_port})); b=socket.create_connection((\"127.0.0.2\", {denied_ip_port})); time.sleep(1.5)'",
        cat = cat.display()
    );
    let child = run_defender(&bundle, agent.path(), work.path(), &script);
    policy_in_force(agent.path(), version).await;
    touch(&work.path().join("go"));
    let status = tokio::time::timeout(WAIT, wait_child(child))
        .await
        .expect("workload ended");
    assert_eq!(status.code(), Some(0), "alerts never kill");

    let not_allowed = wait_audit(&console, "allow-list audit", |a| {
        a.message.contains("unlisted-tool")
    })
    .await;
    assert_eq!(not_allowed.effect, Effect::Alert as i32);
    let modified = wait_audit(&console, "modified-binary audit", |a| {
        a.message.to_lowercase().contains("modified")
    })
    .await;
    assert_eq!(modified.effect, Effect::Alert as i32);
    let port = wait_audit(&console, "outbound-port audit", |a| {
        a.message.contains(&format!("{denied_port}")) && a.message.contains("127.0.0.1")
    })
    .await;
    assert_eq!(port.effect, Effect::Alert as i32);
    wait_audit(&console, "outbound-ip audit", |a| {
        a.message.contains("127.0.0.2")
    })
    .await;
    accept.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_update_applies_live_and_survives_a_console_restart() {
    let data = tempfile::tempdir().unwrap();
    let agent = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let console = start_console(data.path(), Duration::from_millis(500)).await;
    let bundle = bundle_b64(data.path(), &console).await;
    tool(work.path(), "forbidden-tool");
    // Runs the tool each time a trigger file appears (briefly the first time), logging how it
    // ended.
    let script = "for n in 1 2 3; do \
                    while [ ! -f go$n ]; do sleep 0.05; done; \
                    if [ $n = 1 ]; then t=1; else t=30; fi; \
                    ./forbidden-tool $t; echo \"run$n=$?\" >> log; \
                  done";
    let child = run_defender(&bundle, agent.path(), work.path(), script);
    let token = api_token(&console).await;
    eventually("defender connected", WAIT, || async {
        let list = defenders(&console, &token, "?connected=true").await;
        (!list.as_array()?.is_empty()).then_some(())
    })
    .await;
    // 1. The built-in default policy lets the tool run to its end.
    touch(&work.path().join("go1"));
    let log = work.path().join("log");
    eventually("run 1 completed", WAIT, || async {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("run1=0")
            .then_some(())
    })
    .await;
    // ... and judged by the Defender under that policy: its start is stored. (Polling may see
    // a process late on a loaded machine; judged after the next step's policy arrived, run 1
    // would be audited under the new policy.)
    eventually("run 1's start reported", WAIT, || async {
        started(&console, "forbidden-tool").await.then_some(())
    })
    .await;
    // 2. A policy saved while connected takes effect without reconnecting.
    let version = save_policy(
        &console,
        PREVENT_POLICY.replace("LISTEN_PORT", "1").as_str(),
    )
    .await;
    policy_in_force(agent.path(), version).await;
    touch(&work.path().join("go2"));
    eventually("run 2 killed", WAIT, || async {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("run2=137")
            .then_some(())
    })
    .await;
    // 3. The Console goes away; the Defender keeps enforcing the last policy.
    let port = console.grpc_addr.port();
    console.shutdown();
    console.wait().await.unwrap();
    touch(&work.path().join("go3"));
    eventually("run 3 killed with the Console down", WAIT, || async {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("run3=137")
            .then_some(())
    })
    .await;
    let console = restart_console(data.path(), Duration::from_millis(500), port).await;
    let status = tokio::time::timeout(WAIT, wait_child(child))
        .await
        .expect("workload ended");
    assert_eq!(status.code(), Some(0));
    // Both prevented runs were audited, the second one delivered after the restart.
    let prevented = eventually("two prevent audits", WAIT, || async {
        let n = audits(&console)
            .await
            .iter()
            .filter(|a| a.effect == Effect::Prevent as i32 && a.message.contains("forbidden-tool"))
            .count();
        (n >= 2).then_some(n)
    })
    .await;
    let all = audits(&console).await;
    assert_eq!(prevented, 2, "{all:#?}");
}
