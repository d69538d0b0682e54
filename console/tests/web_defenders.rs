//! Manage > Defenders, the Defender page and the Defender API, with hostile metadata and events.

mod db_support;
mod web_support;

use defender_console::store::{EventWriter, now_ms};
use defender_proto::v1::event::Kind;
use defender_proto::v1::{Direction, Event, NetworkConnection, ProcessStart, Protocol};
use reqwest::StatusCode;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use web_support::{Web, find, health, hostile_metadata};

const RAW_SCRIPT: &str = "<script>alert(1)</script>";
const ESCAPED_SCRIPT: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";
const FAMILY: &str = "shop\"front&'back";
const ESCAPED_FAMILY: &str = "shop&quot;front&amp;'back";
const RAW_IMG: &str = "<img src=x onerror=alert(2)>";

fn parse_time(s: &str) -> i64 {
    let t = OffsetDateTime::parse(s, &Rfc3339).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap()
}

fn assert_escaped(html: &str, what: &str) {
    assert!(!html.contains(RAW_SCRIPT), "{what} contains the raw script");
    assert!(!html.contains(RAW_IMG), "{what} contains the raw img tag");
    assert!(
        html.contains(ESCAPED_SCRIPT),
        "{what} lacks the escaped hostname"
    );
    assert!(
        html.contains(ESCAPED_FAMILY),
        "{what} lacks the escaped family"
    );
}

#[tokio::test]
async fn defender_lifecycle_shows_in_api_and_pages_escaped() {
    let web = Web::start().await;
    let token = web.api_token().await;
    let cookie = web.login().await;
    let id = "d3f3nd3r-0001";
    let meta = hostile_metadata(RAW_SCRIPT, FAMILY);
    let before = now_ms();
    let session = web.connected_defender(id, &meta).await;
    let after = now_ms();

    // API: connected, with everything the brief lists.
    let resp = web
        .get_with_token(&format!("/api/v1/defenders/{id}"), &token)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let d: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(d["id"], id);
    assert_eq!(d["hostname"], meta.hostname);
    assert_eq!(d["family"], meta.family);
    assert_eq!(d["revision"], meta.revision);
    assert_eq!(d["cluster"], meta.cluster);
    assert_eq!(d["task_arn"], meta.task_arn);
    assert_eq!(d["availability_zone"], meta.availability_zone);
    assert_eq!(d["launch_type"], meta.launch_type);
    assert_eq!(d["containers"][0]["name"], meta.containers[0].name);
    assert_eq!(d["containers"][0]["image"], meta.containers[0].image);
    assert_eq!(d["agent_version"], "9.8.7-test");
    assert_eq!(d["mode"], "standalone");
    assert_eq!(d["connected"], true);
    assert!(d["status"].as_str().unwrap().starts_with("Connected for "));
    let since = parse_time(d["connected_since"].as_str().expect("connected_since"));
    assert!(
        (before..=after).contains(&since),
        "connected_since {since} not in [{before}, {after}]"
    );
    let seen = parse_time(d["last_seen"].as_str().unwrap());
    assert!((before..=after).contains(&seen));
    let h = health();
    assert_eq!(d["dropped_events"], h.dropped_events);
    assert_eq!(d["queue_depth"], h.queue_depth);
    assert_eq!(d["spool_bytes"], h.spool_bytes);
    assert_eq!(d["rss_bytes"], h.rss_bytes);
    assert_eq!(
        d["cpu_percent"].as_f64().unwrap(),
        f64::from(h.cpu_centipercent) / 100.0
    );

    // The list agrees, and the filter sorts it.
    let list = |query: &'static str| {
        let web = &web;
        let token = token.clone();
        async move {
            let resp = web
                .get_with_token(&format!("/api/v1/defenders{query}"), &token)
                .await;
            assert_eq!(resp.status(), StatusCode::OK);
            resp.json::<serde_json::Value>().await.unwrap()
        }
    };
    assert_eq!(find(&list("").await, id).unwrap(), &d);
    assert!(find(&list("?connected=true").await, id).is_some());
    assert!(find(&list("?connected=false").await, id).is_none());

    // HTML: the page and its refresh fragment show the row, escaped.
    let page = web.get_with_cookie("/manage/defenders", &cookie).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert_escaped(&html, "list page");
    assert!(html.contains("Connected for "));
    assert!(html.contains(&format!("href=\"/manage/defenders/{id}\"")));
    let rows = web.get_with_cookie("/manage/defenders/rows", &cookie).await;
    assert_eq!(rows.status(), StatusCode::OK);
    let rows = rows.text().await.unwrap();
    assert!(
        rows.starts_with("<tbody"),
        "fragment is the tbody: {rows:.60}"
    );
    assert_escaped(&rows, "rows fragment");
    assert!(rows.contains("Connected for "));
    assert!(rows.contains(&format!(">{}<", h.dropped_events)));

    // The stream ends: disconnected everywhere.
    web.console.store.end_session(session).await.unwrap();
    let d = list("").await;
    let d = find(&d, id).unwrap();
    assert_eq!(d["connected"], false);
    assert!(
        d["status"]
            .as_str()
            .unwrap()
            .starts_with("Disconnected for ")
    );
    assert!(d["connected_since"].is_null());
    assert!(find(&list("?connected=false").await, id).is_some());
    assert!(find(&list("?connected=true").await, id).is_none());
    let rows = web
        .get_with_cookie("/manage/defenders/rows", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(rows.contains("Disconnected for "));
    assert!(!rows.contains("Connected for "));
}

#[tokio::test]
async fn empty_list_explains_how_to_deploy() {
    let web = Web::start().await;
    let cookie = web.login().await;
    let html = web
        .get_with_cookie("/manage/defenders", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("defender-console bundle"));
    assert!(html.contains("defender run --install-bundle-file"));
    let token = web.api_token().await;
    let list: serde_json::Value = web
        .get_with_token("/api/v1/defenders", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
}

fn hostile_events() -> Vec<Event> {
    let now = now_ms();
    vec![
        Event {
            seq: 1,
            time_ms: now,
            container: "web<b>".into(),
            kind: Some(Kind::ProcessStart(ProcessStart {
                pid: 4242,
                ppid: 1,
                exe: b"/usr/bin/<img src=x onerror=alert(2)>".to_vec(),
                argv: vec![
                    b"curl".to_vec(),
                    b"<script>alert(1)</script>".to_vec(),
                    b"\xff\xfe".to_vec(),
                    "evil\u{202e}txt.exe".as_bytes().to_vec(),
                ],
                user: "root".into(),
                ..Default::default()
            })),
        },
        Event {
            seq: 2,
            time_ms: now + 1,
            container: "web".into(),
            kind: Some(Kind::NetworkConnection(NetworkConnection {
                protocol: Protocol::Tcp as i32,
                direction: Direction::Outbound as i32,
                local_addr: "10.1.2.3".into(),
                local_port: 45678,
                remote_addr: "198.51.100.7".into(),
                remote_port: 443,
                pid: 4242,
                closed: false,
                blocked: false,
            })),
        },
    ]
}

#[tokio::test]
async fn defender_page_shows_metadata_health_and_escaped_events() {
    let web = Web::start().await;
    let cookie = web.login().await;
    let id = "d3f3nd3r-0002";
    let meta = hostile_metadata(RAW_SCRIPT, FAMILY);
    web.connected_defender(id, &meta).await;
    let events = hostile_events();
    EventWriter::spawn(web.console.store.clone())
        .write(id, events.clone())
        .await
        .unwrap();

    let resp = web
        .get_with_cookie(&format!("/manage/defenders/{id}"), &cookie)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert_escaped(&html, "defender page");
    assert!(html.contains(id));
    assert!(html.contains("Connected for "));
    assert!(html.contains(&meta.task_arn));
    assert!(html.contains(&meta.containers[0].image));
    assert!(html.contains("web&lt;b&gt;"));
    assert!(!html.contains("web<b>"));
    // Health figures.
    assert!(html.contains(&health().dropped_events.to_string()));
    assert!(html.contains("2.50 %"));
    // Events: both, newest first, summarised; bidi override made visible, not applied.
    assert!(html.contains(&format!("of {})", events.len())));
    assert!(html.contains("process_start") && html.contains("network_connection"));
    assert!(html.contains("4242"));
    assert!(html.contains("outbound tcp 10.1.2.3:45678 → 198.51.100.7:443"));
    assert!(html.contains("curl"));
    assert!(html.contains("\u{fffd}"));
    assert!(!html.contains('\u{202e}'));
    assert!(html.contains("\\u{202e}"));
    let net = html.find("network_connection").unwrap();
    let proc_ = html.find("process_start").unwrap();
    assert!(net < proc_, "newest event first");

    let missing = web
        .get_with_cookie("/manage/defenders/no-such-defender", &cookie)
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The same events through the API, raw (JSON-encoded) rather than HTML-escaped.
    let token = web.api_token().await;
    let resp = web
        .get_with_token(&format!("/api/v1/defenders/{id}/events"), &token)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let list: serde_json::Value = resp.json().await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), events.len());
    assert_eq!(list[0]["seq"], 2);
    assert_eq!(list[1]["kind"], "process_start");
    assert_eq!(list[1]["detail"]["argv"][1], RAW_SCRIPT);
    assert_eq!(list[1]["pid"], 4242);
    assert_eq!(
        parse_time(list[1]["time"].as_str().unwrap()),
        events[0].time_ms
    );
    let only: serde_json::Value = web
        .get_with_token(
            &format!("/api/v1/defenders/{id}/events?kind=network_connection&limit=5"),
            &token,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["detail"]["remote_port"], 443);
    for bad in ["?kind=bogus", "?limit=0", "?limit=100000", "?limit=x"] {
        let resp = web
            .get_with_token(&format!("/api/v1/defenders/{id}/events{bad}"), &token)
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}
