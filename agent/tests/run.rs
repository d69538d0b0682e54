//! `defender run` as a real process: the application's exit status, signal forwarding, and an
//! application that keeps running whatever the state of the Console link.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;

/// The real binary, with its state in a fresh directory (never the working tree).
fn defender() -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_defender"));
    c.env_remove("INSTALL_BUNDLE")
        .env("DEFENDER_DATA_DIR", dir.path());
    (c, dir)
}

/// A syntactically valid bundle whose Console is not listening.
fn unreachable_bundle() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = format!(
        r#"{{"console_addr":"127.0.0.1:{port}","ca_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n","token":"dfe_x"}}"#
    );
    base64::engine::general_purpose::STANDARD.encode(json)
}

#[test]
fn exits_with_the_applications_status() {
    let (mut cmd, _dir) = defender();
    let out = cmd
        .args([
            "run",
            "--install-bundle",
            &unreachable_bundle(),
            "--",
            "sh",
            "-c",
            "echo hi; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

/// The enrollment token in `INSTALL_BUNDLE` is the Defender's: the application does not
/// inherit it (the rest of the environment it does).
#[test]
fn the_application_does_not_inherit_the_install_bundle() {
    let (mut cmd, _dir) = defender();
    let out = cmd
        .env("INSTALL_BUNDLE", unreachable_bundle())
        .env("APP_SETTING", "kept")
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo \"${INSTALL_BUNDLE:-absent} $APP_SETTING\"",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "absent kept\n");
}

#[test]
fn killed_application_exits_128_plus_signal() {
    let (mut cmd, _dir) = defender();
    let out = cmd
        .args([
            "run",
            "--install-bundle",
            &unreachable_bundle(),
            "--",
            "sh",
            "-c",
            "kill -KILL $$",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137));
}

#[test]
fn bad_bundle_is_one_clear_line_and_the_app_still_runs() {
    let (mut cmd, _dir) = defender();
    let out = cmd
        .args([
            "run",
            "--install-bundle",
            "not-base64!",
            "--",
            "sh",
            "-c",
            "echo running; exit 0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "running\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("install bundle is not valid base64"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_program_exits_127() {
    let (mut cmd, _dir) = defender();
    let out = cmd
        .args(["run", "--", "/nonexistent/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot start /nonexistent/program"));
}

#[test]
fn sigterm_is_forwarded_to_the_application() {
    let (mut cmd, _dir) = defender();
    let mut child = cmd
        .args([
            "run",
            "--install-bundle",
            &unreachable_bundle(),
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // The app runs while the Defender reports the Console unreachable.
    let mut errs = BufReader::new(child.stderr.take().unwrap()).lines();
    let said_down = errs
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("Console link down"));
    assert!(said_down, "the Defender says the Console is unreachable");
    // Now stop it the way ECS does.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(lines.next().unwrap().unwrap(), "got-term");
    let status = wait_with_deadline(&mut child, Duration::from_secs(20));
    assert_eq!(status.code(), Some(42));
}

fn wait_with_deadline(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("defender did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
