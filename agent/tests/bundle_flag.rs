//! The install bundle holds an enrollment token: `--install-bundle` puts it in
//! `/proc/*/cmdline`, readable by every local user, so the Defender warns when the flag is
//! used, and `--install-bundle-file` / `INSTALL_BUNDLE` are the quiet ways.

use std::process::Command;

use base64::Engine;

const WARNING: &str = "--install-bundle puts the enrollment token in this process's command line";

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

fn run(args: &[&str], env_bundle: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_defender"));
    c.env_remove("INSTALL_BUNDLE")
        .env_remove("INSTALL_BUNDLE_FILE")
        .env("DEFENDER_DATA_DIR", dir.path())
        .env("DEFENDER_DRAIN_TIMEOUT", "100ms");
    if let Some(b) = env_bundle {
        c.env("INSTALL_BUNDLE", b);
    }
    let out = c.args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_flag_warns_and_the_file_and_environment_do_not() {
    let bundle = unreachable_bundle();
    let stderr = run(&["run", "--install-bundle", &bundle, "--", "true"], None);
    assert!(stderr.contains(WARNING), "no warning: {stderr}");
    // The token itself is never logged.
    assert!(!stderr.contains("dfe_x"), "{stderr}");

    let stderr = run(
        &["run", &format!("--install-bundle={bundle}"), "--", "true"],
        None,
    );
    assert!(
        stderr.contains(WARNING),
        "no warning for --install-bundle=: {stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.b64");
    std::fs::write(&file, format!("{bundle}\n")).unwrap();
    let stderr = run(
        &[
            "run",
            "--install-bundle-file",
            file.to_str().unwrap(),
            "--",
            "true",
        ],
        None,
    );
    assert!(!stderr.contains(WARNING), "{stderr}");
    // The bundle was read from the file: the Defender tried its Console, it did not run
    // the application unprotected for want of a bundle.
    assert!(!stderr.contains("no install bundle"), "{stderr}");
    assert!(!stderr.contains("unprotected"), "{stderr}");

    let stderr = run(&["run", "--", "true"], Some(&bundle));
    assert!(!stderr.contains(WARNING), "{stderr}");
    assert!(!stderr.contains("unprotected"), "{stderr}");

    // Without any bundle the application runs unprotected, and the message names the file flag.
    let stderr = run(&["run", "--", "true"], None);
    assert!(stderr.contains("--install-bundle-file"), "{stderr}");
}
