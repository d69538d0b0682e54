//! WAAS end to end: a real Console, a real Defender link, the real WAAS proxy in front of a
//! real app, real HTTP clients. The policy saved through the API reaches the proxy; an SQL
//! injection gets 403 with an event id; the event reaches the Console and shows (escaped) on
//! Monitor > Events > WAAS and in `GET /api/v1/waas/events`; Defend > WAAS lists every problem
//! of an invalid policy.

mod common;
mod db_support;
mod runtime_support;
mod web_support;

use std::time::Duration;

use defender::bundle::InstallBundle;
use defender::link::{Backoff, Link, LinkConfig, LinkState};
use defender::outbox::Outbox;
use defender::spool::SpoolConfig;
use defender_proto::v1::{Mode, TaskMetadata};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::watch;
use web_support::Web;

const WAIT: Duration = Duration::from_secs(20);

/// The app behind the proxy: answers "app" to everything.
async fn app() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let router = axum::Router::new().fallback(|| async { "app" });
    tokio::spawn(async move { axum::serve(l, router).await });
    addr
}

#[tokio::test]
async fn policy_push_403_with_event_id_and_the_event_on_the_waas_page() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let agent_dir = tempfile::tempdir().unwrap();
    let bundle = common::bundle_b64(web.data_dir(), &web.console).await;

    // An invalid policy: every problem listed, nothing saved.
    let resp = web
        .http
        .put(web.url("/api/v1/policies/waas"))
        .bearer_auth(&token)
        .body(r#"{"access":{"denied_cidrs":["nope"]},"ban":{"minutes":0}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    let paths: Vec<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["access.denied_cidrs[0]", "ban.minutes"]);

    // The Defender: link + WAAS proxy in front of the app.
    let (waas_tx, waas_rx) = watch::channel(None);
    let mut seen = waas_rx.clone();
    let outbox = Outbox::open(&agent_dir.path().join("spool"), SpoolConfig::default()).unwrap();
    let link = Link::spawn(LinkConfig {
        bundle: InstallBundle::decode(&bundle).unwrap(),
        data_dir: agent_dir.path().to_owned(),
        mode: Mode::Standalone,
        metadata: TaskMetadata {
            hostname: "waas-host".into(),
            family: "web-shop".into(),
            ..TaskMetadata::default()
        },
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        },
        outbox: outbox.clone(),
        policy: None,
        waas: Some(waas_tx),
        capture: None,
    });
    let mut state = link.state();
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, LinkState::Connected { .. })),
    )
    .await
    .expect("link connected")
    .unwrap();
    let upstream = app().await;
    let spec: defender::waas::WaasSpec = format!("127.0.0.1:0={upstream}").parse().unwrap();
    let proxies = defender::waas::start(&[spec], outbox.clone(), waas_rx, None).await;
    let proxy = format!("http://{}", proxies[0].local_addr());

    // Save a policy: XSS alert only; SQLi prevent (the default). It is pushed at once.
    let resp = web
        .http
        .put(web.url("/api/v1/policies/waas"))
        .bearer_auth(&token)
        .body(json!({"protections": {"xss": "alert"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["version"], 1);
    tokio::time::timeout(
        Duration::from_secs(4),
        seen.wait_for(|p| p.as_ref().is_some_and(|p| p.version >= 1)),
    )
    .await
    .expect("WAAS policy pushed")
    .unwrap();
    // The proxy applies it once its follower has run: poll with a deadline.
    let client = reqwest::Client::new();
    let xss = format!("{proxy}/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = client.get(&xss).send().await.unwrap().status();
        if s == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "XSS still refused: policy not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // An SQL injection: 403 with an event id.
    let resp = client
        .get(format!("{proxy}/products?id=1%27%20OR%20%271%27%3D%271"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let text = resp.text().await.unwrap();
    let id = text.rsplit("Event id: ").next().unwrap().trim().to_owned();
    assert_eq!(id.len(), 16, "{text}");

    // The event reaches the Console.
    let events = common::eventually("WAAS event stored", WAIT, || {
        let http = web.http.clone();
        let url = web.url(&format!("/api/v1/waas/events?event_id={id}"));
        let token = token.clone();
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let list = v["events"].as_array()?.clone();
            (!list.is_empty()).then_some(list)
        }
    })
    .await;
    let w = &events[0]["waas"];
    assert_eq!(w["family"], "sqli");
    assert_eq!(w["effect"], "prevent");
    assert_eq!(w["status"], 403);
    assert_eq!(w["location"], "query");
    assert_eq!(w["name"], "id");
    assert_eq!(w["client_ip"], "127.0.0.1");
    assert_eq!(events[0]["defender"]["hostname"], "waas-host");

    // The alert too, and the page shows both, escaped.
    let cookie = web.login().await;
    let html = common::eventually("both events on the page", WAIT, || {
        let web = &web;
        let cookie = cookie.clone();
        let id = id.clone();
        async move {
            let html = web
                .get_with_cookie("/monitor/events/waas", &cookie)
                .await
                .text()
                .await
                .ok()?;
            (html.contains("xss-") && html.contains(&id)).then_some(html)
        }
    })
    .await;
    assert!(!html.contains("<script>alert(1)"), "raw markup on the page");
    assert!(
        html.contains("&lt;script&gt;alert(1)"),
        "matched part shown escaped"
    );
    assert!(html.contains("href=\"/monitor/events/waas\""), "navigation");
    assert!(
        html.contains("id=\"waas-overview\" data-total=\"2\" data-refused=\"1\""),
        "overview counts"
    );
    // Counts on the Defender's row and in the API.
    let list = common::defenders(&web.console, &token, "").await;
    let d = list
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["hostname"] == "waas-host")
        .expect("the Defender is listed");
    assert_eq!(d["waas_events"], 2, "{d}");
    assert_eq!(d["waas_refused"], 1, "{d}");
    let rows = web
        .get_with_cookie("/manage/defenders", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        rows.contains("data-waas=\"2\" data-refused=\"1\""),
        "WAAS cell on the row"
    );
    // Filter by the quoted event id.
    let one = web
        .get_with_cookie(&format!("/monitor/events/waas?event_id={id}"), &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(one.contains(&id) && !one.contains("xss-"));
    link.stop();
}

#[tokio::test]
async fn waas_policy_page_lists_every_problem_escaped_and_saves() {
    let web = Web::start().await;
    let cookie = web.login().await;
    let csrf = web.csrf(&cookie).await;
    let page = web.get_with_cookie("/defend/waas", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("built-in default"));
    assert!(html.contains("sqli-100"), "rule catalogue");
    let typed =
        r#"{"exceptions":[{"rule_id":"<b>x</b>","path_prefix":"api"}],"max_header_bytes":1}"#;
    let resp = web
        .http
        .post(web.url("/defend/waas"))
        .header("Cookie", format!("defender_session={cookie}"))
        .form(&[("csrf", csrf.as_str()), ("policy", typed)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = resp.text().await.unwrap();
    assert!(!html.contains("<b>x</b>"));
    for p in [
        "exceptions[0].rule_id",
        "exceptions[0].path_prefix",
        "max_header_bytes",
    ] {
        assert!(html.contains(&format!("<code>{p}</code>")), "{p} missing");
    }
    assert!(
        web.console
            .store
            .current_waas_policy()
            .await
            .unwrap()
            .is_none()
    );
    let resp = web
        .http
        .post(web.url("/defend/waas"))
        .header("Cookie", format!("defender_session={cookie}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("policy", r#"{"protections":{"scanner":"prevent"}}"#),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let saved = web
        .console
        .store
        .current_waas_policy()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.version, 1);
    assert_eq!(saved.saved_by, "admin");
    assert!(saved.rules_json.contains("\"scanner\": \"prevent\""));
}

#[tokio::test]
async fn webhooks_forward_waas_events_with_their_id_header() {
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let sink = got.clone();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let id = headers
                    .get("x-defender-waas-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                sink.lock()
                    .unwrap()
                    .push((id, serde_json::from_str(&body).unwrap()));
                StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move { axum::serve(l, router).await });
    let data = tempfile::tempdir().unwrap();
    let mut console = common::start_console(data.path(), Duration::from_secs(10)).await;
    let target = defender_console::webhook::targets(&[url], &[])
        .unwrap()
        .remove(0);
    console
        .forward_audits(
            vec![target],
            defender_console::webhook::Timing {
                poll: Duration::from_millis(50),
                backoff_initial: Duration::from_millis(100),
                backoff_max: Duration::from_millis(400),
                request_timeout: Duration::from_secs(5),
                lease: Duration::from_secs(90),
            },
        )
        .await
        .unwrap();
    runtime_support::add_defender(
        &console.store,
        "d1",
        &runtime_support::metadata("shop-1", "shop"),
    )
    .await;
    let writer = defender_console::store::EventWriter::spawn(console.store.clone());
    let waas = |seq: u64, rule: &str| defender_proto::v1::Event {
        seq,
        time_ms: 1_700_000_000_000 + seq as i64,
        container: String::new(),
        kind: Some(defender_proto::v1::event::Kind::Waas(
            defender_proto::v1::WaasEvent {
                event_id: format!("{seq:016x}"),
                rule: rule.into(),
                family: "xss".into(),
                effect: "prevent".into(),
                client_ip: "203.0.113.9".into(),
                method: "GET".into(),
                path: "/?q=<script>".into(),
                location: "query".into(),
                name: "q".into(),
                matched: "<script>".into(),
                status: 403,
                ..Default::default()
            },
        )),
    };
    writer
        .write("d1", vec![waas(1, "xss-110"), waas(2, "xss-120")])
        .await
        .unwrap();
    let list = common::eventually("two WAAS deliveries", WAIT, || {
        let got = got.clone();
        async move {
            let g = got.lock().unwrap().clone();
            (g.len() >= 2).then_some(g)
        }
    })
    .await;
    assert_eq!(list[0].0, "d1/1");
    assert_eq!(list[1].0, "d1/2");
    assert_eq!(list[0].1["waas"]["rule"], "xss-110");
    assert_eq!(
        list[1].1["waas"]["matched"], "<script>",
        "plain data, receivers escape"
    );
    assert_eq!(list[0].1["waas"]["client_ip"], "203.0.113.9");
}

/// One event from `GET /api/v1/waas/events?event_id=`, once the Console has it.
async fn stored_event(web: &Web, token: &str, id: &str) -> Value {
    let events = common::eventually("WAAS event stored", WAIT, || {
        let http = web.http.clone();
        let url = web.url(&format!("/api/v1/waas/events?event_id={id}"));
        let token = token.to_owned();
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let list = v["events"].as_array()?.clone();
            (!list.is_empty()).then_some(list)
        }
    })
    .await;
    events[0]["waas"].clone()
}

#[tokio::test]
async fn smuggling_oversized_heads_and_bans_reach_the_console() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let agent_dir = tempfile::tempdir().unwrap();
    let bundle = common::bundle_b64(web.data_dir(), &web.console).await;
    let (waas_tx, waas_rx) = watch::channel(None);
    let outbox = Outbox::open(&agent_dir.path().join("spool"), SpoolConfig::default()).unwrap();
    let link = Link::spawn(LinkConfig {
        bundle: InstallBundle::decode(&bundle).unwrap(),
        data_dir: agent_dir.path().to_owned(),
        mode: Mode::Standalone,
        metadata: TaskMetadata {
            hostname: "waas-protocol".into(),
            ..TaskMetadata::default()
        },
        backoff: Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
        },
        outbox: outbox.clone(),
        policy: None,
        waas: Some(waas_tx),
        capture: None,
    });
    // The proxy starts with the policy it kept from before (as after a restart): SQLi bans,
    // heads above 4 KiB are refused.
    let saved = agent_dir.path().join("waas-policy.json");
    std::fs::write(
        &saved,
        r#"{"protections":{"sqli":"ban"},"max_header_bytes":4096}"#,
    )
    .unwrap();
    let upstream = app().await;
    let spec: defender::waas::WaasSpec = format!("127.0.0.1:0={upstream}").parse().unwrap();
    let proxies = defender::waas::start(&[spec], outbox.clone(), waas_rx, Some(saved)).await;
    let proxy = proxies[0].local_addr();
    let id_of = |text: &str| text.rsplit("Event id: ").next().unwrap().trim().to_owned();

    // Request smuggling (Content-Length with Transfer-Encoding): 400 with an event id.
    let mut s = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"POST /cart HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read_to_end(&mut s, &mut raw))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw}");
    let smuggling = id_of(&raw);

    // An oversized head: 431 with an event id.
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://{proxy}/big"))
        .header("x-big", "a".repeat(6000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let oversized = id_of(&resp.text().await.unwrap());

    // An SQL injection under effect ban: 403, then the client is banned.
    let resp = client
        .get(format!(
            "http://{proxy}/products?id=1%27%20OR%20%271%27%3D%271"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let banned = id_of(&resp.text().await.unwrap());
    let resp = client.get(format!("http://{proxy}/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.text().await.unwrap().contains("banned"));

    let w = stored_event(&web, &token, &smuggling).await;
    assert_eq!(
        (&w["rule"], &w["family"], &w["effect"], &w["status"]),
        (
            &json!("protocol-110"),
            &json!("protocol"),
            &json!("prevent"),
            &json!(400)
        )
    );
    assert_eq!(
        (&w["method"], &w["path"]),
        (&json!("POST"), &json!("/cart"))
    );
    let w = stored_event(&web, &token, &oversized).await;
    assert_eq!(
        (&w["rule"], &w["effect"], &w["status"]),
        (&json!("protocol-150"), &json!("prevent"), &json!(431))
    );
    let w = stored_event(&web, &token, &banned).await;
    assert_eq!(
        (&w["family"], &w["effect"], &w["status"]),
        (&json!("sqli"), &json!("ban"), &json!(403))
    );
    assert!(
        w["message"]
            .as_str()
            .unwrap()
            .starts_with("client banned for 10 minutes"),
        "{w}"
    );
    // On Monitor > WAAS, filtered by effect: the ban, styled as such.
    let cookie = web.login().await;
    let html = web
        .get_with_cookie("/monitor/events/waas?effect=ban", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains(&banned), "the ban's event on the page");
    assert!(!html.contains(&smuggling), "filtered by effect");
    assert!(html.contains("class=\"effect ban\""), "{html}");
    link.stop();
}
