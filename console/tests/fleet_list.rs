//! Manage › Defenders at fleet size (issue 14): search, filters, sorting by every column,
//! cursor pagination in the page and the API, counts, CSV export and names, against a real
//! Console with Defenders written into its store.

mod db_support;
mod web_support;

use std::collections::HashSet;

use defender_console::store::{NewDefender, TokenKind, now_ms};
use defender_proto::v1::{Hello, Mode, TaskMetadata};
use reqwest::StatusCode;
use serde_json::Value;
use web_support::{INTERVAL_MS, Web, health};

const FLEET: usize = 30;
/// Defenders 0..CONNECTED hold a live session; the others enrolled and never connected.
const CONNECTED: usize = 20;

fn cluster(i: usize) -> &'static str {
    if i.is_multiple_of(2) { "prod" } else { "dev" }
}

fn family(i: usize) -> &'static str {
    if i.is_multiple_of(3) { "web" } else { "api" }
}

/// Enrolls Defender `i` of the test fleet (ids `f000`…), connected when `i < CONNECTED`.
async fn enroll(web: &Web, enrollment_token: i64, i: usize) {
    let store = &web.console.store;
    let id = format!("f{i:03}");
    let metadata = TaskMetadata {
        hostname: if i == 29 {
            "=cmd|' /C calc'!A0".into()
        } else {
            format!("ip-10-0-0-{i}")
        },
        cluster: cluster(i).into(),
        task_arn: format!(
            "arn:aws:ecs:eu-west-1:123456789012:task/{}/task{i:04}",
            cluster(i)
        ),
        family: family(i).into(),
        revision: format!("{}", i % 4 + 1),
        ..Default::default()
    };
    let mode = if i.is_multiple_of(2) {
        "embedded"
    } else {
        "sidecar"
    };
    let version = format!("1.0.{}", i % 2);
    store
        .insert_defender(&NewDefender {
            id: &id,
            metadata: &metadata,
            agent_version: &version,
            mode,
            enrollment_token,
            cert_not_after_ms: now_ms() + 3_600_000,
        })
        .await
        .unwrap();
    if i < CONNECTED {
        let hello = Hello {
            metadata: Some(metadata),
            agent_version: version.clone(),
            mode: Mode::Embedded as i32,
            last_acked_seq: 0,
            capture: None,
        };
        let session = store
            .start_session(&id, &hello, mode, "fleet-test", INTERVAL_MS)
            .await
            .unwrap();
        let mut h = health();
        h.dropped_events = (i as u64 * 7) % 5;
        store.heartbeat(&id, session, &h).await.unwrap();
    }
}

async fn fleet() -> (Web, String) {
    let web = Web::start().await;
    let store = &web.console.store;
    let token = store
        .create_token(TokenKind::Enrollment, "fleet test", None)
        .await
        .unwrap();
    let token_id = store
        .check_token(TokenKind::Enrollment, &token)
        .await
        .unwrap()
        .unwrap();
    for i in 0..FLEET {
        enroll(&web, token_id, i).await;
    }
    let api = web.api_token().await;
    (web, api)
}

async fn api(web: &Web, token: &str, query: &str) -> (reqwest::header::HeaderMap, Value) {
    let resp = web
        .get_with_token(&format!("/api/v1/defenders{query}"), token)
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    let headers = resp.headers().clone();
    (headers, resp.json().await.unwrap())
}

fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_filters_counts_and_names() {
    let (web, token) = fleet().await;

    let (h, all) = api(&web, &token, "").await;
    assert_eq!(all.as_array().unwrap().len(), FLEET);
    assert_eq!(header(&h, "x-total-count"), "30");
    assert_eq!(header(&h, "x-connected-count"), "20");
    assert_eq!(header(&h, "x-disconnected-count"), "10");

    // Names: family/task id for ECS tasks.
    let (_, one) = api(&web, &token, "?q=TASK0007").await;
    assert_eq!(
        ids(&one),
        ["f007"],
        "search is case-insensitive, on the task ARN"
    );
    assert_eq!(one[0]["name"], "api/task0007");
    for (q, want) in [
        ("?q=ip-10-0-0-12", vec!["f012"]),
        (
            "?q=f02",
            vec![
                "f020", "f021", "f022", "f023", "f024", "f025", "f026", "f027", "f028", "f029",
            ],
        ),
        ("?q=100%25", vec![]),
    ] {
        let (_, list) = api(&web, &token, &format!("{q}&sort=name&order=asc")).await;
        let mut got = ids(&list);
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{q}");
    }

    // Filters combine; counts describe the other filters.
    let (h, list) = api(&web, &token, "?status=disconnected&cluster=prod").await;
    let got: HashSet<String> = ids(&list).into_iter().collect();
    let want: HashSet<String> = (CONNECTED..FLEET)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("f{i:03}"))
        .collect();
    assert_eq!(got, want);
    assert_eq!(header(&h, "x-total-count"), "5");
    assert_eq!(header(&h, "x-connected-count"), "10");
    assert_eq!(header(&h, "x-disconnected-count"), "5");
    let (h, list) = api(&web, &token, "?version=1.0.1&mode=sidecar&status=connected").await;
    assert_eq!(header(&h, "x-total-count"), "10");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|d| d["agent_version"] == "1.0.1"
                && d["mode"] == "sidecar"
                && d["connected"] == true)
    );
    // The older `connected=` still works.
    let (h, _) = api(&web, &token, "?connected=false").await;
    assert_eq!(header(&h, "x-total-count"), "10");

    for bad in [
        "?status=up",
        "?sort=color",
        "?order=up",
        "?limit=0",
        "?limit=1001",
        "?cursor=x",
    ] {
        let resp = web
            .get_with_token(&format!("/api/v1/defenders{bad}"), &token)
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

/// The key a list is sorted by, read back from the API's JSON, for the columns the JSON shows
/// as such.
fn json_key(sort: &str, d: &Value) -> Option<String> {
    Some(match sort {
        "name" => d["name"].as_str()?.to_lowercase(),
        "cluster" => d["cluster"].as_str()?.to_lowercase(),
        "version" => d["agent_version"].as_str()?.to_owned(),
        "last_seen" => {
            // RFC 3339 with the milliseconds' trailing zeros cut: pad them back to compare.
            let t = d["last_seen"].as_str()?.trim_end_matches('Z');
            let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
            format!("{secs}.{frac:0<3}")
        }
        "status" => d["connected"].to_string(),
        "dropped" => format!("{:020}", d["dropped_events"].as_i64()?),
        _ => return None,
    })
}

#[tokio::test]
async fn every_column_sorts_both_ways_and_cursors_walk_it_whole() {
    let (web, token) = fleet().await;
    for sort in [
        "name",
        "task",
        "cluster",
        "version",
        "mode",
        "last_seen",
        "status",
        "dropped",
        "audits",
    ] {
        for order in ["asc", "desc"] {
            let (_, full) = api(&web, &token, &format!("?sort={sort}&order={order}")).await;
            let full_ids = ids(&full);
            assert_eq!(full_ids.len(), FLEET);
            // Sorted by the column (then id), in the asked direction.
            let keys: Vec<(Option<String>, String)> = full
                .as_array()
                .unwrap()
                .iter()
                .map(|d| (json_key(sort, d), d["id"].as_str().unwrap().to_owned()))
                .collect();
            if keys[0].0.is_some() {
                let mut sorted = keys.clone();
                sorted.sort();
                if order == "desc" {
                    sorted.reverse();
                }
                assert_eq!(keys, sorted, "sort={sort} order={order}");
            }
            // Walking with cursors, 7 a page, gives the same rows in the same order.
            let mut walked = Vec::new();
            let mut next = format!("/api/v1/defenders?sort={sort}&order={order}&limit=7");
            for _ in 0..10 {
                let resp = web.get_with_token(&next, &token).await;
                assert_eq!(resp.status(), StatusCode::OK, "{next}");
                let link = header(resp.headers(), "link");
                let page: Value = resp.json().await.unwrap();
                assert!(page.as_array().unwrap().len() <= 7);
                walked.extend(ids(&page));
                if link.is_empty() {
                    break;
                }
                assert!(link.contains("cursor="), "{link}");
                next = link
                    .trim_start_matches('<')
                    .split_once('>')
                    .unwrap()
                    .0
                    .to_owned();
            }
            assert_eq!(walked, full_ids, "cursor walk, sort={sort} order={order}");
        }
    }
}

#[tokio::test]
async fn csv_export_has_every_matching_defender_and_defuses_formulas() {
    let (web, token) = fleet().await;
    let resp = web
        .get_with_token("/api/v1/defenders?format=csv&sort=name&order=asc", &token)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = resp.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), FLEET + 1);
    assert!(lines[0].starts_with("id,name,status,connected,last_seen,cluster,family"));
    let hostile = lines.iter().find(|l| l.starts_with("f029,")).unwrap();
    assert!(hostile.contains(",'=cmd|' /C calc'!A0,"), "{hostile}");
    // Filters apply; Accept: text/csv works as well as format=csv.
    let resp = web
        .http
        .get(web.url("/api/v1/defenders?status=connected"))
        .bearer_auth(&token)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap().lines().count(), CONNECTED + 1);
}

#[tokio::test]
async fn the_page_searches_sorts_pages_by_cursor_and_refreshes_only_its_page() {
    let (web, _) = fleet().await;
    let cookie = web.login().await;
    let html = web
        .get_with_cookie(
            "/manage/defenders?status=connected&sort=name&order=asc&limit=8",
            &cookie,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("20 connected</span> · <span class=\"off\">10 disconnected"),
        "counts"
    );
    assert!(html.contains("Defenders 1–8 of 20"), "pager");
    assert!(html.contains("<option value=\"connected\" selected>"));
    // Every column heading sorts.
    for sort in [
        "name",
        "task",
        "cluster",
        "version",
        "mode",
        "last_seen",
        "status",
        "dropped",
        "audits",
    ] {
        assert!(
            html.contains(&format!("sort={sort}&amp;order=")),
            "no sort link for {sort}"
        );
    }
    // Rows: the first 8 connected Defenders by name: api/task0001, api/task0002, …
    assert!(html.contains(">api/task0001</a>"));
    assert!(!html.contains(">web/task0021</a>"), "a disconnected one");
    // The export link keeps the filters.
    assert!(html.contains(
        "href=\"/api/v1/defenders?format=csv&amp;status=connected&amp;sort=name&amp;order=asc"
    ));
    let next = html
        .split("rel=\"next\" href=\"")
        .nth(1)
        .expect("a Next link")
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(
        next.contains("cursor=") && next.contains("start=9"),
        "{next}"
    );
    let second = web
        .get_with_cookie(&next, &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(second.contains("Defenders 9–16 of 20"));
    assert!(second.contains("rel=\"first\""));
    // The refresh fragment of page 2 is page 2, not the whole list.
    let refresh = second
        .split("data-refresh=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(refresh.starts_with("/manage/defenders/rows?") && refresh.contains("cursor="));
    let fragment = web
        .get_with_cookie(&refresh, &cookie)
        .await
        .text()
        .await
        .unwrap();
    let rows = |h: &str| h.matches("<tr>").count();
    assert_eq!(rows(&fragment), 8);
    let body = |h: &str| {
        h.split("<tbody")
            .nth(1)
            .unwrap()
            .split("</tbody>")
            .next()
            .unwrap()
            .split_once('>')
            .unwrap()
            .1
            .to_owned()
    };
    // The same rows in the same order (relative times such as "0s ago" may have ticked
    // between the two requests, so the Defenders' links are compared, not the whole HTML).
    let links = |h: &str| -> Vec<String> {
        h.split("<a href=\"")
            .skip(1)
            .map(|a| a.split('"').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        links(&body(&fragment)),
        links(&body(&second)),
        "the fragment is the same page"
    );
    // The stale banner is there, hidden until a refresh fails.
    assert!(second.contains("<p id=\"stale-banner\" role=\"alert\" hidden></p>"));
}

#[tokio::test]
async fn the_defender_page_refreshes_its_status() {
    let (web, _) = fleet().await;
    let cookie = web.login().await;
    let html = web
        .get_with_cookie("/manage/defenders/f003", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("data-refresh=\"/manage/defenders/f003/status\""));
    let fragment = web
        .get_with_cookie("/manage/defenders/f003/status", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(fragment.starts_with("<span class=\"live-status\""));
    assert!(fragment.contains("Connected for"));
    let gone = web
        .get_with_cookie("/manage/defenders/f003/status", &cookie)
        .await;
    assert_eq!(gone.status(), StatusCode::OK);
    web.console
        .store
        .decommission_defender("f025")
        .await
        .unwrap();
    let fragment = web
        .get_with_cookie("/manage/defenders/f025/status", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(fragment.contains("Disconnected for"));
    let missing = web
        .get_with_cookie("/manage/defenders/nope/status", &cookie)
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
