//! The first hour of a new user (issue 14): resetting the admin password from the CLI, logs a
//! log collector can read, a real 404 page, one name per page, snake_case API fields.

mod db_support;
mod web_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use defender_console::web::NAV;
use reqwest::StatusCode;
use serde_json::Value;
use web_support::{ADMIN_PASSWORD, Web, hostile_metadata, location, session_cookie};

/// Runs `defender-console user set-password` on `web`'s data directory with `stdin` piped in.
fn set_password(web: &Web, stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_defender-console"))
        .args(["user", "set-password", "--data-dir"])
        .arg(web.data_dir())
        .envs(db_support::env(web.data_dir()))
        .env_remove("CONSOLE_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn set_password_reads_stdin_replaces_the_password_and_ends_sessions() {
    let web = Web::start().await;
    let old_cookie = web.login().await;

    // Too short: refused, nothing changes.
    let out = set_password(&web, "short\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"));
    assert_eq!(
        web.get_with_cookie("/manage/defenders", &old_cookie)
            .await
            .status(),
        StatusCode::OK
    );

    let new_password = "a brand new password";
    let out = set_password(&web, &format!("{new_password}\r\n"));
    assert!(out.status.success(), "{out:?}");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("password of admin changed"), "{printed}");
    assert!(
        !printed.contains(new_password),
        "the password is echoed: {printed}"
    );

    // The old session is over, the old password refused, the new one (without the line end)
    // accepted.
    let resp = web.get_with_cookie("/manage/defenders", &old_cookie).await;
    assert_eq!(location(&resp).as_deref(), Some("/login"));
    assert_eq!(
        web.post_login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = web.post_login("admin", new_password).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie(&resp).is_some());

    // Empty stdin is not a password.
    let out = set_password(&web, "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password given"));
}

#[test]
fn logs_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_defender-console"))
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .envs(db_support::env(dir.path()))
        .env_remove("CONSOLE_ADMIN_PASSWORD")
        .env_remove("CONSOLE_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // Read on a thread so that the deadline holds even if the Console prints nothing.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("console started"))
        || !seen
            .iter()
            .any(|l: &String| l.contains("shown only this once"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the Console did not start in time; it printed: {seen:#?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let all = seen.join("\n");
    assert!(!all.contains('\x1b'), "escape codes in the log: {all:?}");
    assert!(all.contains(" INFO "), "{all}");
}

#[tokio::test]
async fn unknown_urls_get_a_404_page_or_a_json_error() {
    let web = Web::start().await;
    let resp = web.get("/manage/nothing-here%3Cscript%3E").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = resp.text().await.unwrap();
    assert!(html.contains("<h1>Page not found</h1>"), "{html}");
    assert!(html.contains("/manage/nothing-here%3Cscript%3E"));
    assert!(!html.contains("<script>"));
    // Logged out: where to go, and a way to log in; no navigation bar or logout form.
    assert!(html.contains("href=\"/manage/defenders\""));
    assert!(html.contains("href=\"/login\""));
    assert!(!html.contains("action=\"/logout\""));

    let cookie = web.login().await;
    let resp = web.get_with_cookie("/no/such/page", &cookie).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let html = resp.text().await.unwrap();
    assert!(html.contains("<h1>Page not found</h1>"));
    assert!(
        html.contains("action=\"/logout\""),
        "logged in: the full frame"
    );

    let token = web.api_token().await;
    let resp = web.get_with_token("/api/v1/no-such-thing", &token).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"error": "not found"}));
}

#[tokio::test]
async fn every_navigation_label_is_its_page_heading_and_title() {
    let web = Web::start().await;
    let cookie = web.login().await;
    for item in NAV {
        let resp = web.get_with_cookie(item.href, &cookie).await;
        assert_eq!(resp.status(), StatusCode::OK, "{}", item.href);
        let html = resp.text().await.unwrap();
        let title = format!(
            "<title>{} › {} · Defender Console</title>",
            item.section, item.label
        );
        assert!(html.contains(&title), "{}: no {title}", item.href);
        let h1 = format!("<h1>{}</h1>", item.label);
        assert!(html.contains(&h1), "{}: no {h1}", item.href);
        // The navigation marks it, and the breadcrumb names its section.
        let active = format!("<a href=\"{}\" class=\"active\">", item.href);
        assert!(
            html.contains(&active),
            "{}: not active in the nav",
            item.href
        );
        let crumb = format!(
            "<p class=\"crumbs\">{} › <a href=\"{}\">{}</a></p>",
            item.section, item.href, item.label
        );
        assert!(html.contains(&crumb), "{}: no breadcrumb", item.href);
    }
    // The README calls every page by the same name.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    for item in NAV {
        let name = format!("{} › {}", item.section, item.label);
        assert!(readme.contains(&name), "README never names {name}");
    }
    for old in ["Manage > ", "Monitor > ", "Defend > ", "Deploy > "] {
        assert!(!readme.contains(old), "README still writes {old:?}");
    }
}

/// Every object key in `v`, with its path, that is not snake_case.
fn non_snake_keys(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let snake = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !snake {
                    out.push(format!("{path}.{k}"));
                }
                non_snake_keys(child, &format!("{path}.{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                non_snake_keys(child, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn api_field_names_are_snake_case() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let id = "0123456789abcdef0123456789abcdef";
    web.connected_defender(id, &hostile_metadata("host-1", "web"))
        .await;
    // A saved policy, so the policy document is a stored one, written with every key.
    let policy = r#"{"rules": [{"name": "r", "processes": {"effect": "alert", "crypto_miners": "prevent"},
        "network": {"denied_listening_ports": [22]}}]}"#;
    let resp = web
        .http
        .put(web.url("/api/v1/policies/runtime/app-embedded"))
        .bearer_auth(&token)
        .body(policy)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut bad = Vec::new();
    let paths = [
        "/api/v1/defenders".to_owned(),
        format!("/api/v1/defenders/{id}"),
        format!("/api/v1/defenders/{id}/events"),
        format!("/api/v1/defenders/{id}/observations"),
        format!("/api/v1/events?defender={id}"),
        "/api/v1/tokens".to_owned(),
        "/api/v1/policies/runtime/app-embedded".to_owned(),
        "/api/v1/audits".to_owned(),
        "/api/v1/images".to_owned(),
        format!("/api/v1/compliance?defender={id}"),
        "/api/v1/vulndb".to_owned(),
        "/api/v1/policies/compliance".to_owned(),
        "/api/v1/policies/waas".to_owned(),
        "/api/v1/waas/events".to_owned(),
    ];
    for path in &paths {
        let resp = web.get_with_token(path, &token).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let body: Value = resp.json().await.unwrap();
        non_snake_keys(&body, path, &mut bad);
    }
    assert!(bad.is_empty(), "keys that are not snake_case: {bad:#?}");
}
