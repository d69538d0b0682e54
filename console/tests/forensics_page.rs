//! The Defender page's forensics: escaping of attacker-controlled process data, the process
//! tree, kind and time filters, keyset pagination, observations, and the drop counter.

mod db_support;
mod forensics_support;
mod web_support;

use std::collections::BTreeSet;

use defender_console::store::Health;
use defender_proto::v1::{Direction, Event, Protocol};
use forensics_support::*;
use reqwest::StatusCode;
use web_support::{Web, hostile_metadata};

const RAW_SCRIPT: &str = "<script>alert(1)</script>";
const ESCAPED_SCRIPT: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

async fn page(web: &Web, cookie: &str, path: &str) -> String {
    let resp = web.get_with_cookie(path, cookie).await;
    assert_eq!(resp.status(), StatusCode::OK, "{path}");
    resp.text().await.unwrap()
}

async fn setup(id: &str) -> (Web, String) {
    let web = Web::start().await;
    let cookie = web.login().await;
    web.connected_defender(id, &hostile_metadata("host-1", "shop"))
        .await;
    (web, cookie)
}

#[tokio::test]
async fn hostile_process_data_is_escaped_on_the_page() {
    let id = "forensics-escape";
    let (web, cookie) = setup(id).await;
    store_events(
        &web,
        id,
        vec![event(
            1,
            T0,
            start(
                4242,
                1,
                b"/tmp/<img src=x onerror=alert(2)>",
                &[b"sh", b"-c", RAW_SCRIPT.as_bytes(), b"\xff\xfe"],
            ),
        )],
    )
    .await;
    let html = page(&web, &cookie, &format!("/manage/defenders/{id}")).await;
    assert!(!html.contains(RAW_SCRIPT), "raw script on the page");
    assert!(!html.contains("<img src=x"), "raw img tag on the page");
    let row = row_html(&html, 1);
    assert!(row.contains(ESCAPED_SCRIPT), "{row}");
    assert!(row.contains("&lt;img src=x onerror=alert(2)&gt;"), "{row}");
    // The two invalid bytes show as replacement characters, not as something else.
    assert!(row.contains("\u{fffd}\u{fffd}"), "{row}");
    assert!(
        row.contains("ppid 1") && row.contains("app (uid 1000)"),
        "{row}"
    );
    assert!(row.contains("/srv"), "{row}");
    // The observations show the executable, escaped as well.
    let exes = section(&html, "obs-executables");
    assert!(
        exes.contains("/tmp/&lt;img src=x onerror=alert(2)&gt;"),
        "{exes}"
    );
}

#[tokio::test]
async fn children_are_listed_indented_under_their_parent() {
    let id = "forensics-tree";
    let (web, cookie) = setup(id).await;
    store_events(
        &web,
        id,
        vec![
            event(1, T0, start(100, 1, b"/usr/bin/bash", &[b"bash"])),
            event(
                2,
                T0 + 1,
                listen(100, Protocol::Tcp, "0.0.0.0", 8080, false),
            ),
            event(3, T0 + 2, start(101, 100, b"/usr/bin/curl", &[b"curl"])),
            event(4, T0 + 3, start(200, 1, b"/usr/bin/other", &[b"other"])),
            event(5, T0 + 4, start(102, 100, b"/usr/bin/wget", &[b"wget"])),
            event(6, T0 + 5, start(103, 102, b"/usr/bin/tar", &[b"tar"])),
            event(7, T0 + 6, exit(101, 3, true)),
            event(8, T0 + 7, exit(102, -1, false)),
        ],
    )
    .await;
    let html = page(&web, &cookie, &format!("/manage/defenders/{id}")).await;
    // Newest first, except that children follow their parent (oldest child first), deeper.
    assert_eq!(
        rows(&html),
        vec![
            (8, 0),
            (7, 0),
            (4, 0),
            (2, 0),
            (1, 0),
            (3, 1),
            (5, 1),
            (6, 2)
        ]
    );
    assert!(row_html(&html, 3).contains("class=\"detail tree d1\""));
    assert!(row_html(&html, 6).contains("class=\"detail tree d2\""));
    assert!(!row_html(&html, 1).contains("tree"));
    // Exit statuses, with the exited process's executable when its start is on the page.
    let exited = row_html(&html, 7);
    assert!(exited.contains("exited with code 3") && exited.contains("/usr/bin/curl"));
    assert!(row_html(&html, 8).contains("status unknown"));

    // A parent on another page: the child is a root of its own page.
    let html = page(&web, &cookie, &format!("/manage/defenders/{id}?before=3")).await;
    assert_eq!(rows(&html), vec![(2, 0), (1, 0)]);
    let html = page(&web, &cookie, &format!("/manage/defenders/{id}?after=2")).await;
    assert_eq!(
        rows(&html),
        vec![(8, 0), (7, 0), (5, 0), (6, 1), (4, 0), (3, 0)]
    );
}

/// 250 events, seq 1..=250, one second apart; the kind cycles by seq % 5.
fn mixed_events() -> Vec<Event> {
    (1..=250u64)
        .map(|seq| {
            let t = T0 + seq as i64 * 1000;
            let pid = 1000 + seq as u32;
            let kind = match seq % 5 {
                0 => outbound(pid, "198.51.100.7", 443, false),
                1 => start(pid, 1, b"/bin/job", &[b"job"]),
                2 => exit(pid - 1, 0, true),
                3 => listen(pid, Protocol::Udp, "0.0.0.0", 5000 + seq as u32, false),
                _ if seq % 2 == 0 => notice("note"),
                _ => audit(pid, "rule"),
            };
            event(seq, t, kind)
        })
        .collect()
}

fn kind_seqs(rems: &[u64]) -> BTreeSet<i64> {
    (1..=250i64)
        .filter(|s| rems.contains(&((*s as u64) % 5)))
        .collect()
}

/// Follows "Older" links from `path`; returns every page's seqs.
async fn walk_older(web: &Web, cookie: &str, path: &str) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_owned());
    while let Some(path) = next {
        let html = page(web, cookie, &path).await;
        pages.push(seqs(&html));
        next = pager_link(&html, "older");
        assert!(pages.len() <= 10, "pager does not end");
    }
    pages
}

#[tokio::test]
async fn pages_follow_each_other_without_gaps_or_overlap() {
    let id = "forensics-pages";
    let (web, cookie) = setup(id).await;
    store_events(&web, id, mixed_events()).await;
    let base = format!("/manage/defenders/{id}");

    let first = page(&web, &cookie, &base).await;
    assert!(first.contains("(100 shown of 250)"));
    assert_eq!(
        pager_link(&first, "newer"),
        None,
        "newest page has no Newer"
    );
    let pages = walk_older(&web, &cookie, &base).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0], (151..=250).rev().collect::<Vec<i64>>());
    assert_eq!(pages[1], (51..=150).rev().collect::<Vec<i64>>());
    assert_eq!(pages[2], (1..=50).rev().collect::<Vec<i64>>());

    // And back with "Newer" from the oldest page: the same pages, then the newest.
    let oldest = page(&web, &cookie, &format!("{base}?before=51")).await;
    assert_eq!(pager_link(&oldest, "older"), None);
    let newer = pager_link(&oldest, "newer").expect("oldest page links newer");
    let middle = page(&web, &cookie, &newer).await;
    assert_eq!(seqs(&middle), pages[1]);
    let newest = page(&web, &cookie, &pager_link(&middle, "newer").unwrap()).await;
    assert_eq!(seqs(&newest), pages[0]);
    assert_eq!(pager_link(&newest, "newer"), None);
    assert_eq!(
        pager_link(&newest, "newest").as_deref(),
        Some(base.as_str())
    );
}

#[tokio::test]
async fn kind_and_time_filters_select_events_and_survive_paging() {
    let id = "forensics-filters";
    let (web, cookie) = setup(id).await;
    store_events(&web, id, mixed_events()).await;
    let base = format!("/manage/defenders/{id}");

    // Network only: listen (3) and connection (0), 100 events, one page.
    let html = page(&web, &cookie, &format!("{base}?kind=network")).await;
    let got: BTreeSet<i64> = seqs(&html).into_iter().collect();
    assert_eq!(got, kind_seqs(&[0, 3]));
    assert!(!html.contains(">process_start<") && !html.contains(">notice<"));
    assert_eq!(pager_link(&html, "older"), None);
    assert!(
        html.contains("value=\"network\" checked"),
        "checkbox stays ticked"
    );

    // Two kinds (125 events): two pages, the filter carried by the Older link.
    let pages = walk_older(&web, &cookie, &format!("{base}?kind=process&kind=notice")).await;
    assert_eq!(pages.len(), 2);
    assert_eq!((pages[0].len(), pages[1].len()), (100, 25));
    let got: BTreeSet<i64> = pages.concat().into_iter().collect();
    let mut want = kind_seqs(&[1, 2]);
    want.extend((1..=250).filter(|s| s % 5 == 4 && s % 2 == 0));
    assert_eq!(got, want);

    // Since (inclusive) the event of seq 200 (T0 + 200 s = 00:03:20 UTC).
    let html = page(
        &web,
        &cookie,
        &format!("{base}?since=2024-05-01T00%3A03%3A20"),
    )
    .await;
    assert_eq!(seqs(&html), (200..=250).rev().collect::<Vec<i64>>());
    assert!(
        html.contains("value=\"2024-05-01T00:03:20\""),
        "since stays filled in"
    );
    assert!(html.contains("as UTC"), "the page says times are UTC");
    // A window: since 00:01:40 (seq 100) until 00:01:50 (seq 110, excluded), minute precision
    // too (00:01 = seq 60 on).
    let html = page(
        &web,
        &cookie,
        &format!("{base}?since=2024-05-01T00:01:40&until=2024-05-01T00:01:50"),
    )
    .await;
    assert_eq!(seqs(&html), (100..=109).rev().collect::<Vec<i64>>());
    let html = page(
        &web,
        &cookie,
        &format!("{base}?kind=network&since=2024-05-01T00:01&until=2024-05-01T00:02"),
    )
    .await;
    let want: Vec<i64> = (60..120)
        .rev()
        .filter(|s| [0, 3].contains(&(s % 5)))
        .collect();
    assert_eq!(seqs(&html), want);

    // Bad parameters: said so, nothing listed.
    for bad in ["since=yesterday", "kind=bogus", "before=x"] {
        let resp = web.get_with_cookie(&format!("{base}?{bad}"), &cookie).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("role=\"alert\""), "{bad}");
        assert!(seqs(&html).is_empty(), "{bad}");
    }
}

#[tokio::test]
async fn observations_summarise_executables_ports_and_destinations() {
    let id = "forensics-observations";
    let (web, cookie) = setup(id).await;
    let sha = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    let mut events = Vec::new();
    let mut push = |kind| {
        let seq = events.len() as u64 + 1;
        events.push(event(seq, T0 + seq as i64 * 1000, kind));
    };
    for pid in [10, 11, 12] {
        let mut s = start(pid, 1, b"/usr/bin/python3", &[b"python3", b"app.py"]);
        if let defender_proto::v1::event::Kind::ProcessStart(p) = &mut s {
            p.exe_sha256 = sha.into();
        }
        push(s);
    }
    push(start(20, 10, b"/bin/sh", &[b"sh"]));
    push(start(21, 10, b"/bin/sh", &[b"sh"]));
    push(listen(12, Protocol::Tcp, "0.0.0.0", 8080, false));
    push(listen(20, Protocol::Udp, "127.0.0.1", 5353, false));
    push(listen(20, Protocol::Udp, "127.0.0.1", 5353, true));
    push(outbound(12, "198.51.100.7", 443, false));
    push(outbound(12, "198.51.100.7", 443, false));
    push(outbound(12, "198.51.100.7", 443, true)); // a close, not a new connection
    push(outbound(21, "2001:db8::5", 5432, false));
    push(outbound(12, "198.51.100.7", 443, false));
    push(connection(
        12,
        Direction::Inbound,
        "203.0.113.50",
        51000,
        false,
    ));
    let last = events.len() as i64;
    store_events(&web, id, events).await;

    let html = page(&web, &cookie, &format!("/manage/defenders/{id}")).await;
    assert!(html.contains(&format!("Computed over all {last} stored events.")));
    let exes = section(&html, "obs-executables");
    let python = table_row(exes, "/usr/bin/python3");
    assert!(python.contains("<td class=\"num\">3</td>"), "{python}");
    assert!(python.contains("abcdef012345<") && !python.contains(">abcdef0123456<"));
    assert!(table_row(exes, "/bin/sh").contains("<td class=\"num\">2</td>"));
    let ports = section(&html, "obs-listening");
    let web_port = table_row(ports, ">8080<");
    assert!(web_port.contains(">tcp<") && web_port.contains("0.0.0.0"));
    assert!(web_port.contains("/usr/bin/python3") && web_port.contains("listening"));
    let dns = table_row(ports, ">5353<");
    assert!(dns.contains(">udp<") && dns.contains("/bin/sh") && dns.contains("closed"));
    let dests = section(&html, "obs-destinations");
    assert!(table_row(dests, "198.51.100.7:443").contains("<td class=\"num\">3</td>"));
    assert!(table_row(dests, "[2001:db8::5]:5432").contains("<td class=\"num\">1</td>"));
    assert!(
        !dests.contains("203.0.113.50"),
        "inbound peers are no destinations"
    );

    // The API agrees.
    let token = web.api_token().await;
    let resp = web
        .get_with_token(&format!("/api/v1/defenders/{id}/observations"), &token)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let o: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(o["truncated"], false);
    assert_eq!(o["events_examined"], last);
    assert_eq!(o["window"], 50_000);
    let exes = o["executables"].as_array().unwrap();
    assert_eq!(exes.len(), 2);
    assert_eq!(exes[0]["exe"], "/usr/bin/python3");
    assert_eq!(exes[0]["starts"], 3);
    assert_eq!(exes[0]["sha256"], sha);
    assert_eq!(exes[1]["exe"], "/bin/sh");
    assert_eq!(exes[1]["starts"], 2);
    assert_eq!(exes[1]["last_seen"], "2024-05-01T00:00:05Z");
    let ports = o["listening"].as_array().unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0]["port"], 5353);
    assert_eq!(ports[0]["protocol"], "udp");
    assert_eq!(ports[0]["open"], false);
    assert_eq!(ports[0]["exe"], "/bin/sh");
    assert_eq!(ports[1]["port"], 8080);
    assert_eq!(ports[1]["address"], "0.0.0.0");
    assert_eq!(ports[1]["open"], true);
    assert_eq!(ports[1]["exe"], "/usr/bin/python3");
    let dests = o["destinations"].as_array().unwrap();
    assert_eq!(dests.len(), 2);
    assert_eq!(dests[0]["address"], "198.51.100.7");
    assert_eq!(dests[0]["port"], 443);
    assert_eq!(dests[0]["connections"], 3);
    assert_eq!(dests[0]["last_seen"], "2024-05-01T00:00:13Z");
    assert_eq!(dests[1]["address"], "2001:db8::5");
    assert_eq!(dests[1]["connections"], 1);

    let missing = web
        .get_with_token("/api/v1/defenders/nope/observations", &token)
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dropped_events_show_with_thousands_separators() {
    let id = "forensics-drops";
    let web = Web::start().await;
    let cookie = web.login().await;
    let session = web
        .connected_defender(id, &hostile_metadata("host-2", "shop"))
        .await;
    let store = &web.console.store;
    let health = |dropped_events| Health {
        dropped_events,
        ..web_support::health()
    };
    store.heartbeat(id, session, &health(0)).await.unwrap();
    let detail = format!("/manage/defenders/{id}");
    for path in [
        "/manage/defenders",
        "/manage/defenders/rows",
        detail.as_str(),
    ] {
        let html = page(&web, &cookie, path).await;
        assert!(!html.contains("events dropped"), "{path}");
    }

    store.heartbeat(id, session, &health(12_345)).await.unwrap();
    for path in [
        "/manage/defenders",
        "/manage/defenders/rows",
        detail.as_str(),
    ] {
        let html = page(&web, &cookie, path).await;
        assert!(html.contains("12,345 events dropped"), "{path}");
    }
}
