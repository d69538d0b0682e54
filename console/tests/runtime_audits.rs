//! Monitor > Events > App-Embedded audits and `/api/v1/audits`: filters (Defender, rule,
//! effect, time), keyset pagination, escaping of hostile rule names and messages, the link to
//! the forensics timeline, and access control.

mod db_support;
mod runtime_support;
mod web_support;

use std::collections::BTreeSet;

use reqwest::StatusCode;
use runtime_support::*;
use serde_json::Value;
use web_support::{Web, location};

const PAGE: &str = "/monitor/events/app-embedded";
const RAW_SCRIPT: &str = "<script>alert(1)</script>";
const ESCAPED_SCRIPT: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

/// Two Defenders, six audits and some other events:
///
/// | defender | seq | time     | rule        | effect  |
/// |----------|-----|----------|-------------|---------|
/// | alpha    | 10  | T0       | no-shell    | alert   |
/// | alpha    | 11  | T0+1000  | RAW_SCRIPT  | prevent |
/// | alpha    | 12  | T0+2000  | no-miners   | prevent |
/// | beta     | 1   | T0+500   | no-shell    | alert   |
/// | beta     | 2   | T0+1500  | no-shell    | prevent |
/// | beta     | 4   | T0+3000  | no-miners   | alert   |
async fn setup() -> (Web, String, String) {
    let web = Web::start().await;
    let store = &web.console.store;
    add_defender(store, "alpha", &metadata("alpha-host", "web-shop")).await;
    add_defender(store, "beta", &metadata("beta-host", "api")).await;
    store_events(
        store,
        "alpha",
        vec![
            process(5, T0 - 10),
            audit(
                10,
                T0,
                "no-shell",
                ALERT,
                "shell /bin/sh started by node",
                5,
            ),
            audit(
                11,
                T0 + 1000,
                RAW_SCRIPT,
                PREVENT,
                "<script>alert(2)</script> killed pid 4011",
                0,
            ),
            audit(12, T0 + 2000, "no-miners", PREVENT, "xmrig killed", 5),
        ],
    )
    .await;
    store_events(
        store,
        "beta",
        vec![
            audit(1, T0 + 500, "no-shell", ALERT, "sh", 0),
            audit(2, T0 + 1500, "no-shell", PREVENT, "sh killed", 0),
            process(3, T0 + 2500),
        ],
    )
    .await;
    // Stored in a later transaction than the rest: still in time order.
    store_events(
        store,
        "beta",
        vec![audit(4, T0 + 3000, "no-miners", ALERT, "minerd", 0)],
    )
    .await;
    let token = web.api_token().await;
    let cookie = web.login().await;
    (web, token, cookie)
}

async fn api(web: &Web, token: &str, query: &str) -> Value {
    let resp = web
        .get_with_token(&format!("/api/v1/audits{query}"), token)
        .await;
    assert_eq!(resp.status(), StatusCode::OK, "{query}");
    resp.json().await.unwrap()
}

/// `(defender, seq)` of the audits the API lists for `query`.
async fn only(web: &Web, token: &str, query: &str) -> Vec<(String, i64)> {
    ids(&api(web, token, query).await)
}

/// `(defender, seq)` of a page of the API, in order.
fn ids(page: &Value) -> Vec<(String, i64)> {
    page["audits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["defender"]["id"].as_str().unwrap().to_owned(),
                a["audit"]["seq"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(d, s)| (d.to_string(), *s)).collect()
}

#[tokio::test]
async fn api_lists_audits_newest_first_with_filters() {
    let (web, token, _) = setup().await;
    let all = api(&web, &token, "").await;
    assert_eq!(
        ids(&all),
        pairs(&[
            ("beta", 4),
            ("alpha", 12),
            ("beta", 2),
            ("alpha", 11),
            ("beta", 1),
            ("alpha", 10)
        ])
    );
    assert_eq!(all["older_before"], Value::Null);
    assert_eq!(all["newer_after"], Value::Null);
    // The document of one audit.
    let a = &all["audits"][1];
    assert_eq!(a["defender"]["id"], "alpha");
    assert_eq!(a["defender"]["hostname"], "alpha-host");
    assert_eq!(a["defender"]["family"], "web-shop");
    assert_eq!(a["defender"]["cluster"], "prod");
    assert_eq!(
        a["defender"]["task_arn"],
        "arn:aws:ecs:eu-west-1:123456789012:task/prod/alpha-host"
    );
    assert_eq!(a["audit"]["rule"], "no-miners");
    assert_eq!(a["audit"]["effect"], "prevent");
    assert_eq!(a["audit"]["message"], "xmrig killed");
    assert_eq!(a["audit"]["container"], "app");
    assert_eq!(a["audit"]["pid"], 4012);
    assert_eq!(a["audit"]["subject_seq"], 5);
    assert_eq!(a["audit"]["time"], "2024-05-01T00:00:02Z");
    assert_eq!(a["timeline"], "/manage/defenders/alpha?before=55#timeline");
    // Hostile text comes back as data, unchanged.
    assert_eq!(all["audits"][3]["audit"]["rule"], RAW_SCRIPT);

    assert_eq!(
        only(&web, &token, "?defender=alpha").await,
        pairs(&[("alpha", 12), ("alpha", 11), ("alpha", 10)])
    );
    assert_eq!(
        only(&web, &token, "?rule=no-shell").await,
        pairs(&[("beta", 2), ("beta", 1), ("alpha", 10)])
    );
    assert_eq!(
        only(&web, &token, "?effect=prevent").await,
        pairs(&[("alpha", 12), ("beta", 2), ("alpha", 11)])
    );
    assert_eq!(
        only(&web, &token, "?effect=alert&defender=beta").await,
        pairs(&[("beta", 4), ("beta", 1)])
    );
    // since is inclusive, until exclusive; RFC 3339 or unix ms.
    assert_eq!(
        only(
            &web,
            &token,
            "?since=2024-05-01T00:00:01Z&until=1714521603000"
        )
        .await,
        pairs(&[("alpha", 12), ("beta", 2), ("alpha", 11)])
    );
    let script_rule = format!("?rule={}", urlencode(RAW_SCRIPT));
    assert_eq!(
        only(&web, &token, &script_rule).await,
        pairs(&[("alpha", 11)])
    );
    assert!(only(&web, &token, "?defender=nobody").await.is_empty());

    // Mistakes are 400s that say what is expected.
    for bad in [
        "?effect=block",
        "?since=yesterday",
        "?limit=0",
        "?before=12",
        "?bogus=1",
    ] {
        let resp = web
            .get_with_token(&format!("/api/v1/audits{bad}"), &token)
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty());
    }
    // Authentication is required.
    let resp = web.get("/api/v1/audits").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn api_pages_by_keyset_without_gaps_or_repeats() {
    let (web, token, _) = setup().await;
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = Vec::new();
    loop {
        let page = api(&web, &token, &query).await;
        let got = ids(&page);
        assert!(got.len() <= 2);
        seen.extend(got);
        pages.push(page.clone());
        match page["older_before"].as_str() {
            Some(c) => query = format!("?limit=2&before={c}"),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3);
    assert_eq!(seen, ids(&api(&web, &token, "").await));
    assert_eq!(pages[0]["newer_after"], Value::Null);
    // Back from the last page to the middle one, then to the first.
    let newer = pages[2]["newer_after"].as_str().expect("newer cursor");
    let back = api(&web, &token, &format!("?limit=2&after={newer}")).await;
    assert_eq!(ids(&back), ids(&pages[1]));
    let newer = back["newer_after"].as_str().expect("newer cursor");
    let first = api(&web, &token, &format!("?limit=2&after={newer}")).await;
    assert_eq!(ids(&first), ids(&pages[0]));
    assert_eq!(first["newer_after"], Value::Null);
    // Pages keep their filters.
    let p1 = api(&web, &token, "?effect=prevent&limit=2").await;
    let c = p1["older_before"].as_str().unwrap();
    let p2 = api(&web, &token, &format!("?effect=prevent&limit=2&before={c}")).await;
    assert_eq!(ids(&p2), pairs(&[("alpha", 11)]));
    assert_eq!(p2["older_before"], Value::Null);
}

async fn page(web: &Web, cookie: &str, path: &str) -> String {
    let resp = web.get_with_cookie(path, cookie).await;
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.text().await.unwrap()
}

#[tokio::test]
async fn page_escapes_hostile_text_and_links_to_the_timeline() {
    let (web, _, cookie) = setup().await;
    let resp = web.get(PAGE).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp).as_deref(), Some("/login"));

    let html = page(&web, &cookie, PAGE).await;
    assert!(!html.contains(RAW_SCRIPT), "raw script tag on the page");
    assert!(
        !html.contains("<script>alert(2)"),
        "raw script tag on the page"
    );
    assert_eq!(
        audit_rows(&html),
        pairs(&[
            ("beta", 4),
            ("alpha", 12),
            ("beta", 2),
            ("alpha", 11),
            ("beta", 1),
            ("alpha", 10)
        ])
    );
    let row = audit_row(&html, "alpha", 11);
    assert!(row.contains(ESCAPED_SCRIPT), "{row}");
    assert!(
        row.contains("&lt;script&gt;alert(2)&lt;/script&gt; killed pid 4011"),
        "{row}"
    );
    assert!(
        row.contains("<span class=\"effect prevent\">Prevent</span>"),
        "{row}"
    );
    assert!(row.contains("2024-05-01T00:00:01Z"), "{row}");
    assert!(row.contains("href=\"/manage/defenders/alpha\""), "{row}");
    assert!(row.contains("alpha-host"), "{row}");
    assert!(row.contains(">4011<"), "pid shown: {row}");
    // No subject: the link centres on the audit itself.
    assert!(
        row.contains("href=\"/manage/defenders/alpha?before=61#timeline\""),
        "{row}"
    );
    let row = audit_row(&html, "alpha", 12);
    assert!(
        row.contains("href=\"/manage/defenders/alpha?before=55#timeline\""),
        "{row}"
    );
    assert!(
        row.contains("<span class=\"effect prevent\">Prevent</span>"),
        "{row}"
    );
    let row = audit_row(&html, "beta", 1);
    assert!(
        row.contains("<span class=\"effect alert\">Alert</span>"),
        "{row}"
    );
    assert!(html.contains("6 matching"));
    // The filter menu offers the hostile rule escaped too.
    assert!(html.contains(&format!("<option value=\"{ESCAPED_SCRIPT}\">")));

    // The link leads to the Defender's timeline with the violating event and the audit on it.
    let timeline = page(&web, &cookie, "/manage/defenders/alpha?before=55").await;
    assert!(
        timeline.contains("data-seq=\"5\""),
        "the subject event is shown"
    );
    assert!(timeline.contains("data-seq=\"12\""), "the audit is shown");
}

#[tokio::test]
async fn page_filters_and_pages() {
    let (web, _, cookie) = setup().await;
    let html = page(&web, &cookie, &format!("{PAGE}?defender=beta&effect=alert")).await;
    assert_eq!(audit_rows(&html), pairs(&[("beta", 4), ("beta", 1)]));
    assert!(html.contains("<option value=\"beta\" selected>beta-host</option>"));
    assert!(html.contains("<option value=\"alert\" selected>"));
    let html = page(&web, &cookie, &format!("{PAGE}?rule=no-miners")).await;
    assert_eq!(audit_rows(&html), pairs(&[("beta", 4), ("alpha", 12)]));
    let html = page(
        &web,
        &cookie,
        &format!("{PAGE}?since=2024-05-01T00%3A00%3A01&until=2024-05-01T00%3A00%3A02"),
    )
    .await;
    assert_eq!(audit_rows(&html), pairs(&[("beta", 2), ("alpha", 11)]));
    assert!(html.contains("value=\"2024-05-01T00:00:01\""));
    let resp = web
        .get_with_cookie(&format!("{PAGE}?effect=block"), &cookie)
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("effect must be"));

    // 60 more audits of one Defender: 50 per page, then the rest, filters kept.
    let store = &web.console.store;
    let many: Vec<_> = (100..160)
        .map(|s| audit(s, T0 + 10_000 + s as i64, "bulk", ALERT, "m", 0))
        .collect();
    store_events(store, "alpha", many).await;
    let first = page(&web, &cookie, &format!("{PAGE}?rule=bulk")).await;
    let rows1 = audit_rows(&first);
    assert_eq!(rows1.len(), 50);
    assert_eq!(rows1[0], ("alpha".to_owned(), 159));
    assert!(pager_link(&first, "newer").is_none());
    let older = pager_link(&first, "older").expect("older link");
    assert!(older.contains("rule=bulk"), "{older}");
    let second = page(&web, &cookie, &older).await;
    let rows2 = audit_rows(&second);
    assert_eq!(rows2.len(), 10);
    assert_eq!(rows2.last().unwrap(), &("alpha".to_owned(), 100));
    assert!(pager_link(&second, "older").is_none());
    let all: BTreeSet<_> = rows1.iter().chain(&rows2).collect();
    assert_eq!(all.len(), 60);
    let newer = pager_link(&second, "newer").expect("newer link");
    assert_eq!(audit_rows(&page(&web, &cookie, &newer).await), rows1);
}

#[tokio::test]
async fn defenders_list_and_api_count_audits() {
    let (web, token, cookie) = setup().await;
    add_defender(
        &web.console.store,
        "gamma",
        &metadata("gamma-host", "quiet"),
    )
    .await;
    let list: Value = web
        .get_with_token("/api/v1/defenders", &token)
        .await
        .json()
        .await
        .unwrap();
    let counts = |id: &str| {
        let d = web_support::find(&list, id).unwrap_or_else(|| panic!("{id} listed"));
        (
            d["audits"].as_i64().unwrap(),
            d["audits_prevented"].as_i64().unwrap(),
        )
    };
    assert_eq!(counts("alpha"), (3, 2));
    assert_eq!(counts("beta"), (3, 1));
    assert_eq!(counts("gamma"), (0, 0));
    let one: Value = web
        .get_with_token("/api/v1/defenders/beta", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (one["audits"].as_i64(), one["audits_prevented"].as_i64()),
        (Some(3), Some(1))
    );

    // New audits count at once.
    store_events(
        &web.console.store,
        "gamma",
        vec![audit(1, T0, "no-nc", PREVENT, "nc killed", 0)],
    )
    .await;
    let one: Value = web
        .get_with_token("/api/v1/defenders/gamma", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (one["audits"].as_i64(), one["audits_prevented"].as_i64()),
        (Some(1), Some(1))
    );

    // Manage > Defenders: a column with the total (linked to the Defender's audits) and the
    // prevented count, in the page and in its refresh fragment.
    for path in ["/manage/defenders", "/manage/defenders/rows"] {
        let html = page(&web, &cookie, path).await;
        assert!(
            html.contains(
                "data-audits=\"3\" data-prevented=\"2\"><a href=\"/monitor/events/app-embedded?defender=alpha\""
            ),
            "{path}: alpha's counts"
        );
        assert!(html.contains("(2 prevented)"), "{path}");
        assert!(
            html.contains("data-audits=\"3\" data-prevented=\"1\""),
            "{path}: beta"
        );
        assert!(
            html.contains("data-audits=\"1\" data-prevented=\"1\""),
            "{path}: gamma"
        );
    }
    let html = page(&web, &cookie, "/manage/defenders").await;
    // A sortable heading since issue 14.
    assert!(html.contains(">Audits</a></th>"));
}
