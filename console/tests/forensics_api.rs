//! `GET /api/v1/events`: validation, filters, keyset paging, decoded fields (raw bytes exact).

mod db_support;
mod forensics_support;
mod web_support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use defender_proto::v1::{Event, Protocol};
use forensics_support::*;
use reqwest::StatusCode;
use serde_json::Value;
use web_support::{Web, hostile_metadata};

const RAW_SCRIPT: &str = "<script>alert(1)</script>";

async fn get_json(web: &Web, token: &str, path: &str) -> Value {
    let resp = web.get_with_token(path, token).await;
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.json().await.unwrap()
}

fn seqs_of(page: &Value) -> Vec<i64> {
    page["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

/// 30 events, seq 1..=30, one second apart: process start, network, notice in turn.
fn events() -> Vec<Event> {
    (1..=30u64)
        .map(|seq| {
            let kind = match seq % 3 {
                1 => start(seq as u32, 1, b"/bin/job", &[b"job"]),
                2 => listen(seq as u32, Protocol::Tcp, "0.0.0.0", 9000, false),
                _ => notice("n"),
            };
            event(seq, T0 + seq as i64 * 1000, kind)
        })
        .collect()
}

#[tokio::test]
async fn events_api_checks_its_parameters() {
    let web = Web::start().await;
    let id = "api-validation";
    web.connected_defender(id, &hostile_metadata("h", "f"))
        .await;
    store_events(&web, id, events()).await;
    let token = web.api_token().await;

    for path in [
        format!("/api/v1/events?defender={id}"),
        format!("/api/v1/defenders/{id}/observations"),
    ] {
        let resp = web.get(&path).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        let resp = web.get_with_token(&path, "not-a-token").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }

    for (query, status) in [
        ("", StatusCode::BAD_REQUEST),
        ("?kind=process", StatusCode::BAD_REQUEST),
        ("?defender=", StatusCode::BAD_REQUEST),
        ("?defender={id}&kind=bogus", StatusCode::BAD_REQUEST),
        ("?defender={id}&kind=process,bogus", StatusCode::BAD_REQUEST),
        ("?defender={id}&limit=0", StatusCode::BAD_REQUEST),
        ("?defender={id}&limit=1001", StatusCode::BAD_REQUEST),
        ("?defender={id}&limit=-5", StatusCode::BAD_REQUEST),
        ("?defender={id}&limit=ten", StatusCode::BAD_REQUEST),
        ("?defender={id}&since=yesterday", StatusCode::BAD_REQUEST),
        (
            "?defender={id}&until=2024-13-01T00:00:00Z",
            StatusCode::BAD_REQUEST,
        ),
        ("?defender={id}&before=x", StatusCode::BAD_REQUEST),
        ("?defender=no-such-defender", StatusCode::NOT_FOUND),
        ("?defender={id}&limit=1", StatusCode::OK),
        ("?defender={id}&limit=1000", StatusCode::OK),
        ("?defender={id}&kind=network_listen", StatusCode::OK),
    ] {
        let path = format!("/api/v1/events{}", query.replace("{id}", id));
        let resp = web.get_with_token(&path, &token).await;
        assert_eq!(resp.status(), status, "{path}");
        let body: Value = resp.json().await.unwrap();
        if status != StatusCode::OK {
            assert!(
                body["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{path}"
            );
        }
    }

    let all = get_json(&web, &token, &format!("/api/v1/events?defender={id}")).await;
    assert_eq!(all["defender_id"], id);
    assert_eq!(
        seqs_of(&all),
        (1..=30).rev().collect::<Vec<i64>>(),
        "default limit 100"
    );
    let one = get_json(
        &web,
        &token,
        &format!("/api/v1/events?defender={id}&limit=1"),
    )
    .await;
    assert_eq!(seqs_of(&one), vec![30]);
    assert_eq!(one["older_before"], 30);
    assert!(one["newer_after"].is_null());
}

#[tokio::test]
async fn events_api_filters_and_pages() {
    let web = Web::start().await;
    let id = "api-filters";
    web.connected_defender(id, &hostile_metadata("h", "f"))
        .await;
    store_events(&web, id, events()).await;
    let token = web.api_token().await;
    let q = |query: &str| format!("/api/v1/events?defender={id}&{query}");

    // Kinds: a group, a stored kind, a list.
    let page = get_json(&web, &token, &q("kind=process")).await;
    assert_eq!(
        seqs_of(&page),
        (1..=30).rev().filter(|s| s % 3 == 1).collect::<Vec<_>>()
    );
    assert!(
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] == "process_start")
    );
    let page = get_json(&web, &token, &q("kind=network_listen,notice")).await;
    assert_eq!(
        seqs_of(&page),
        (1..=30).rev().filter(|s| s % 3 != 1).collect::<Vec<_>>()
    );

    // Since, inclusive: RFC 3339, unix ms and a zone-less UTC time agree.
    let want: Vec<i64> = (25..=30).rev().collect();
    for since in [
        "2024-05-01T00:00:25Z".to_owned(),
        "2024-05-01T02:00:25%2B02:00".to_owned(),
        (T0 + 25_000).to_string(),
        "2024-05-01T00:00:25".to_owned(),
    ] {
        let page = get_json(&web, &token, &q(&format!("since={since}"))).await;
        assert_eq!(seqs_of(&page), want, "since={since}");
    }
    let page = get_json(
        &web,
        &token,
        &q(&format!("since={}&until={}", T0 + 10_000, T0 + 12_000)),
    )
    .await;
    assert_eq!(seqs_of(&page), vec![11, 10]);

    // Paging with before=older_before: every event once, in order.
    let mut seen = Vec::new();
    let mut path = q("limit=7");
    loop {
        let page = get_json(&web, &token, &path).await;
        let s = seqs_of(&page);
        assert!(s.len() <= 7);
        seen.extend(s);
        match page["older_before"].as_i64() {
            Some(before) => path = q(&format!("limit=7&before={before}")),
            None => break,
        }
    }
    assert_eq!(seen, (1..=30).rev().collect::<Vec<i64>>());
    // And after= walks back up.
    let page = get_json(&web, &token, &q("limit=7&after=9")).await;
    assert_eq!(seqs_of(&page), (10..=16).rev().collect::<Vec<i64>>());
    assert_eq!(page["newer_after"], 16);
    assert_eq!(page["older_before"], 10);

    // The per-Defender endpoint shares the filters and keeps its array shape.
    let resp = web
        .get_with_token(
            &format!("/api/v1/defenders/{id}/events?kind=network&before=9&limit=2"),
            &token,
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let list: Value = resp.json().await.unwrap();
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 2);
    assert_eq!(
        (list[0]["seq"].as_i64(), list[1]["seq"].as_i64()),
        (Some(8), Some(5))
    );
}

#[tokio::test]
async fn events_api_returns_raw_bytes_exactly() {
    let web = Web::start().await;
    let id = "api-bytes";
    web.connected_defender(id, &hostile_metadata("h", "f"))
        .await;
    let argv: [&[u8]; 4] = [b"sh", b"-c", RAW_SCRIPT.as_bytes(), b"\xff\xfe"];
    let mut s = start(4242, 1, b"/tmp/\x80evil", &argv);
    let mut clean = start(4243, 1, b"/bin/true", &[b"true"]);
    if let defender_proto::v1::event::Kind::ProcessStart(p) = &mut s {
        p.argv_truncated = true;
        p.exe_sha256 = "00ff".into();
    }
    if let defender_proto::v1::event::Kind::ProcessStart(p) = &mut clean {
        p.cwd = b"/".to_vec();
    }
    store_events(
        &web,
        id,
        vec![
            event(1, T0, s),
            event(2, T0 + 1, clean),
            event(3, T0 + 2, exit(4242, -1, false)),
        ],
    )
    .await;
    let token = web.api_token().await;
    let page = get_json(
        &web,
        &token,
        &format!("/api/v1/events?defender={id}&kind=process"),
    )
    .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);

    let exit = &events[0];
    assert_eq!(exit["kind"], "process_exit");
    assert_eq!(exit["detail"]["status_known"], false);
    assert!(exit["summary"].as_str().unwrap().contains("status unknown"));

    let clean = &events[1]["detail"];
    assert_eq!(clean["argv"], serde_json::json!(["true"]));
    assert!(clean.get("argv_b64").is_none() && clean.get("exe_b64").is_none());

    let e = &events[2];
    assert_eq!(e["defender_id"], id);
    assert_eq!(e["container"], "app");
    assert_eq!(e["time"], "2024-05-01T00:00:00Z");
    let d = &e["detail"];
    assert_eq!(d["pid"], 4242);
    assert_eq!(d["ppid"], 1);
    assert_eq!(d["user"], "app");
    assert_eq!(d["uid"], 1000);
    assert_eq!(d["cwd"], "/srv");
    assert_eq!(d["exe_sha256"], "00ff");
    assert_eq!(d["argv_truncated"], true);
    assert_eq!(d["argv"][2], RAW_SCRIPT);
    assert_eq!(d["argv"][3], "\u{fffd}\u{fffd}");
    assert_eq!(d["exe"], "/tmp/\u{fffd}evil");
    let decoded: Vec<Vec<u8>> = d["argv_b64"]
        .as_array()
        .expect("argv_b64 when an argument is not UTF-8")
        .iter()
        .map(|a| STANDARD.decode(a.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(decoded, argv.iter().map(|a| a.to_vec()).collect::<Vec<_>>());
    assert_eq!(
        STANDARD.decode(d["exe_b64"].as_str().unwrap()).unwrap(),
        b"/tmp/\x80evil"
    );
}
