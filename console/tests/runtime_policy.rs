//! Defend > Runtime > App-Embedded policy: the REST resource (default, validation, versions,
//! who saved), the push to a connected Defender (real agent link), and the page (login, inline
//! problems with the input kept and escaped, CSRF, saving, history, viewing an old version).

mod common;
mod db_support;
mod runtime_support;
mod web_support;

use std::time::Duration;

use defender::bundle::InstallBundle;
use defender::link::{Backoff, Link, LinkConfig, LinkState};
use defender::outbox::Outbox;
use defender::spool::SpoolConfig;
use defender_policy::RuntimePolicy;
use defender_proto::v1::{Mode, Policy};
use reqwest::StatusCode;
use runtime_support::{textarea, unescape};
use serde_json::{Value, json};
use tokio::sync::watch;
use web_support::{Web, location};

const API: &str = "/api/v1/policies/runtime/app-embedded";
const PAGE: &str = "/defend/runtime/app-embedded";
const WAIT: Duration = Duration::from_secs(20);
/// The Console pushes a saved version at once; its fallback poll runs every 5 s, so a version
/// that arrives sooner than this came from the push.
const PUSH_WAIT: Duration = Duration::from_secs(4);

fn valid_policy(name: &str) -> Value {
    json!({
        "rules": [{
            "name": name,
            "collection": { "families": ["web-*"] },
            "processes": { "effect": "prevent", "denied": ["nc", "/tmp/*"], "crypto_miners": "prevent" },
            "network": { "effect": "alert", "denied_outbound_ports": [25, "6660-6669"] }
        }]
    })
}

async fn put(http: &reqwest::Client, base: &str, token: &str, body: String) -> reqwest::Response {
    http.put(format!("{base}{API}"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn get_json(http: &reqwest::Client, base: &str, token: &str) -> Value {
    let resp = http
        .get(format!("{base}{API}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.json().await.unwrap()
}

fn link_config(
    bundle: &str,
    dir: &std::path::Path,
    policy: watch::Sender<Option<Policy>>,
) -> LinkConfig {
    LinkConfig {
        bundle: InstallBundle::decode(bundle).unwrap(),
        data_dir: dir.to_owned(),
        mode: Mode::Standalone,
        metadata: runtime_support::metadata("policy-host", "web-shop"),
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        },
        outbox: Outbox::open(&dir.join("spool"), SpoolConfig::default()).unwrap(),
        policy: Some(policy),
        waas: None,
        capture: None,
    }
}

async fn wait_for_version(rx: &mut watch::Receiver<Option<Policy>>, version: u64) -> Policy {
    tokio::time::timeout(
        PUSH_WAIT,
        rx.wait_for(|p| p.as_ref().is_some_and(|p| p.version >= version)),
    )
    .await
    .unwrap_or_else(|_| panic!("the Defender did not receive version {version} in time"))
    .unwrap()
    .clone()
    .unwrap()
}

#[tokio::test]
async fn api_validates_versions_and_pushes_to_a_connected_defender() {
    let data = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let console = common::start_console(data.path(), Duration::from_millis(500)).await;
    let base = format!("http://{}", console.http_addr);
    let http = reqwest::Client::new();
    let token = common::api_token(&console).await;
    let token_id = console
        .store
        .check_token(defender_console::store::TokenKind::Api, &token)
        .await
        .unwrap()
        .unwrap();

    // A real Defender link, connected before any version exists.
    let bundle = common::bundle_b64(data.path(), &console).await;
    let (policy_tx, mut policy_rx) = watch::channel(None);
    let link = Link::spawn(link_config(&bundle, agent_dir.path(), policy_tx));
    let mut state = link.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, LinkState::Connected { .. })),
    )
    .await
    .expect("link connected")
    .unwrap();
    assert!(policy_rx.borrow().is_none(), "no version saved yet");

    // No version yet: the built-in default, version null.
    let doc = get_json(&http, &base, &token).await;
    assert_eq!(doc["version"], Value::Null);
    assert_eq!(doc["saved_at"], Value::Null);
    assert_eq!(doc["saved_by"], Value::Null);
    assert_eq!(
        doc["policy"],
        serde_json::to_value(RuntimePolicy::default_policy()).unwrap()
    );

    // Invalid: every problem with its path, nothing saved.
    let invalid = json!({
        "rules": [
            { "name": "dup" },
            { "name": "dup", "network": { "denied_listening_ports": [70000] },
              "processes": { "shell_from_non_shell": "prevent" } }
        ]
    });
    let resp = put(&http, &base, &token, invalid.to_string()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert!(err["error"].as_str().unwrap().contains("invalid"), "{err}");
    let paths: Vec<&str> = err["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    for expected in [
        "rules[1].name",
        "rules[1].network.denied_listening_ports[0]",
        "rules[1].processes.shell_from_non_shell",
    ] {
        assert!(paths.contains(&expected), "{expected} missing in {err}");
    }
    assert!(
        err["problems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| !p["message"].as_str().unwrap().is_empty())
    );
    // Not JSON / not the policy's shape: one problem with the place.
    let resp = put(
        &http,
        &base,
        &token,
        r#"{"rules": [{"name": "a", "nope": 1}]}"#.into(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["problems"][0]["path"], "rules[0].nope", "{err}");
    let resp = put(&http, &base, &token, "{".into()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(get_json(&http, &base, &token).await["version"], Value::Null);
    assert!(console.store.current_policy().await.unwrap().is_none());
    assert!(console.policy.current().is_none());

    // Valid: version 1, saved by the token, pushed to the Defender.
    let resp = put(&http, &base, &token, valid_policy("first").to_string()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let saved: Value = resp.json().await.unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["saved_by"], format!("api-token:{token_id}"));
    assert!(saved["saved_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(saved["policy"]["rules"][0]["name"], "first");
    // Stored canonically: defaults written out.
    assert_eq!(
        saved["policy"]["rules"][0]["processes"]["modified_binary"],
        "disable"
    );
    let received = wait_for_version(&mut policy_rx, 1).await;
    assert_eq!(received.version, 1);
    let rules = RuntimePolicy::parse(&received.rules_json).unwrap();
    assert_eq!(rules.rules[0].name, "first");

    // Version 2 replaces it everywhere.
    let resp = put(&http, &base, &token, valid_policy("second").to_string()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let saved: Value = resp.json().await.unwrap();
    assert_eq!(saved["version"], 2);
    let doc = get_json(&http, &base, &token).await;
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["policy"]["rules"][0]["name"], "second");
    assert_eq!(doc["policy"], saved["policy"]);
    assert_eq!(console.policy.current().map(|p| p.version), Some(2));
    let received = wait_for_version(&mut policy_rx, 2).await;
    assert_eq!(
        RuntimePolicy::parse(&received.rules_json).unwrap().rules[0].name,
        "second"
    );

    // A refused version after that changes nothing.
    let resp = put(&http, &base, &token, r#"{"rules": [{"name": ""}]}"#.into()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(get_json(&http, &base, &token).await["version"], 2);

    // Without credentials: 401.
    let resp = http
        .put(format!("{base}{API}"))
        .body(valid_policy("x").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(get_json(&http, &base, &token).await["version"], 2);
    link.stop();
}

#[tokio::test]
async fn api_with_a_session_needs_csrf_and_records_the_user() {
    let web = Web::start().await;
    let cookie = web.login().await;
    let csrf = web.csrf(&cookie).await;
    let body = valid_policy("from the browser").to_string();
    let without = web
        .http
        .put(web.url(API))
        .header("Cookie", format!("defender_session={cookie}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    assert!(web.console.store.current_policy().await.unwrap().is_none());
    let with = web
        .http
        .put(web.url(API))
        .header("Cookie", format!("defender_session={cookie}"))
        .header("X-CSRF-Token", &csrf)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), StatusCode::OK);
    let saved: Value = with.json().await.unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["saved_by"], "admin");
}

async fn post_form(web: &Web, cookie: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    web.http
        .post(web.url(PAGE))
        .header("Cookie", format!("defender_session={cookie}"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

async fn page(web: &Web, cookie: &str, path: &str) -> String {
    let resp = web.get_with_cookie(path, cookie).await;
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.text().await.unwrap()
}

#[tokio::test]
async fn page_needs_a_login_and_shows_the_default() {
    let web = Web::start().await;
    let resp = web.get(PAGE).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp).as_deref(), Some("/login"));
    let resp = web
        .http
        .post(web.url(PAGE))
        .form(&[("policy", "{}")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);

    let cookie = web.login().await;
    let html = page(&web, &cookie, PAGE).await;
    assert!(html.contains("built-in default, no version saved yet"));
    // The editor holds the default policy.
    let text = unescape(textarea(&html));
    assert_eq!(
        RuntimePolicy::parse(&text).unwrap(),
        RuntimePolicy::default_policy()
    );
    // The summary names the default rule and its effects.
    assert!(html.contains("Default - alert on suspicious activity"));
    assert!(html.contains("crypto-miners <span class=\"effect alert\">"));
    assert!(html.contains("No version saved yet"));
    // Navigation has the new pages.
    assert!(html.contains("href=\"/defend/runtime/app-embedded\""));
    assert!(html.contains("href=\"/monitor/events/app-embedded\""));
}

#[tokio::test]
async fn page_lists_problems_inline_escaped_and_keeps_the_input() {
    let web = Web::start().await;
    let cookie = web.login().await;
    let csrf = web.csrf(&cookie).await;
    let hostile = "<img src=x onerror=alert(1)>";
    let typed = format!(
        r#"{{"rules": [{{"name": "{hostile}"}}, {{"name": "{hostile}", "network": {{"denied_listening_ports": [70000]}}}}]}}"#
    );
    let resp = post_form(&web, &cookie, &[("csrf", &csrf), ("policy", &typed)]).await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        !html.contains(hostile),
        "raw markup from the input on the page"
    );
    assert!(html.contains("Not saved"));
    // Each problem as `path: message`, escaped.
    let problems = &html[html.find("<ul class=\"problems\">").expect("problem list")..];
    let problems = &problems[..problems.find("</ul>").unwrap()];
    assert!(
        problems.contains("<code>rules[1].name</code>: duplicate rule name"),
        "{problems}"
    );
    assert!(
        problems.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{problems}"
    );
    assert!(
        problems.contains("<code>rules[1].network.denied_listening_ports[0]</code>: port 70000"),
        "{problems}"
    );
    // The input is kept exactly.
    assert_eq!(unescape(textarea(&html)), typed);
    assert!(html.contains("aria-invalid=\"true\""));
    // Nothing saved.
    assert!(web.console.store.current_policy().await.unwrap().is_none());

    // Not JSON at all: the position is named.
    let resp = post_form(
        &web,
        &cookie,
        &[("csrf", &csrf), ("policy", "{\"rules\": [")],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("line 1, column"),
        "no position in the problem"
    );
    assert_eq!(unescape(textarea(&html)), "{\"rules\": [");

    // Without the CSRF token: refused, nothing saved.
    let resp = post_form(&web, &cookie, &[("policy", &valid_policy("x").to_string())]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(web.console.store.current_policy().await.unwrap().is_none());
}

#[tokio::test]
async fn page_saves_versions_shows_history_and_old_versions() {
    let web = Web::start().await;
    let cookie = web.login().await;
    let csrf = web.csrf(&cookie).await;
    let first = valid_policy("<b>web</b> rule").to_string();
    let resp = post_form(&web, &cookie, &[("csrf", &csrf), ("policy", &first)]).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let to = location(&resp).unwrap();
    assert_eq!(to, format!("{PAGE}?saved=1"));
    assert_eq!(web.console.policy.current().map(|p| p.version), Some(1));

    let html = page(&web, &cookie, &to).await;
    assert!(html.contains("Saved version <strong>1</strong>"));
    let in_force = &html[html.find("id=\"in-force\"").unwrap()..];
    let in_force = &in_force[..in_force.find("</dl>").unwrap()];
    assert!(in_force.contains("<strong>1</strong>"), "{in_force}");
    assert!(in_force.contains("admin"), "{in_force}");
    // The summary shows the rule escaped, with its collection and effects.
    assert!(!html.contains("<b>web</b>"));
    assert!(html.contains("&lt;b&gt;web&lt;/b&gt; rule"));
    assert!(html.contains("families: <code>web-*</code>"));
    assert!(html.contains("denied <span class=\"effect prevent\">prevent</span>"));
    assert!(html.contains("<code>6660-6669</code>"));
    let editor = RuntimePolicy::parse(&unescape(textarea(&html))).unwrap();
    assert_eq!(editor.rules[0].name, "<b>web</b> rule");

    let second = valid_policy("second").to_string();
    let resp = post_form(&web, &cookie, &[("csrf", &csrf), ("policy", &second)]).await;
    assert_eq!(
        location(&resp).as_deref(),
        Some("/defend/runtime/app-embedded?saved=2")
    );
    let html = page(&web, &cookie, PAGE).await;
    let history = &html[html.find("id=\"history\"").unwrap()..];
    let history = &history[..history.find("</table>").unwrap()];
    let v2 = history.find("?version=2").expect("version 2 listed");
    let v1 = history.find("?version=1").expect("version 1 listed");
    assert!(v2 < v1, "history is newest first");
    assert!(history.contains("(in force)"));

    // Viewing version 1 puts it into the editor, for a restore.
    let html = page(&web, &cookie, &format!("{PAGE}?version=1")).await;
    let viewing = &html[html.find("id=\"viewing\"").expect("viewing section")..];
    assert!(viewing.contains("Version 1"));
    assert!(viewing.contains("a restore"));
    let editor = RuntimePolicy::parse(&unescape(textarea(&html))).unwrap();
    assert_eq!(editor.rules[0].name, "<b>web</b> rule");
    // The version in force is still 2.
    let in_force = &html[html.find("id=\"in-force\"").unwrap()..];
    assert!(in_force[..in_force.find("</dl>").unwrap()].contains("<strong>2</strong>"));

    let resp = web
        .get_with_cookie(&format!("{PAGE}?version=99"), &cookie)
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
