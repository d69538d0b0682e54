//! Issue 13, item 1 ("pagination everywhere"): Manage › Defenders and its refresh fragment show
//! at most 100 Defenders a page, whatever the fleet's size, against a real Console (keyset
//! cursors since issue 14).

mod db_support;
mod web_support;

use web_support::*;

/// Rows link to their Defender (ids d000…d129 here); other links (decommission…) do not count.
fn rows(html: &str) -> usize {
    html.split("href=\"/manage/defenders/d")
        .skip(1)
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defenders_list_is_paginated() {
    let web = Web::start().await;
    for i in 0..130 {
        web.connected_defender(
            &format!("d{i:03}"),
            &defender_proto::v1::TaskMetadata {
                hostname: format!("host-{i:03}"),
                ..Default::default()
            },
        )
        .await;
    }
    let cookie = web.login().await;
    let first = web
        .get_with_cookie("/manage/defenders", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&first), 100, "first page holds 100 rows");
    assert!(first.contains("Defenders 1–100 of 130"), "pager text");
    assert!(
        first.contains("data-refresh=\"/manage/defenders/rows?sort=last_seen&amp;order=desc\"")
    );
    // Issue 14: the next page is a keyset cursor, not an offset.
    let next = first
        .split("rel=\"next\" href=\"")
        .nth(1)
        .expect("a Next link")
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(
        next.contains("cursor=") && next.contains("start=101"),
        "{next}"
    );
    let second = web
        .get_with_cookie(&next, &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&second), 30);
    assert!(second.contains("Defenders 101–130 of 130"));
    assert!(!second.contains("rel=\"next\""), "the last page");
    let fragment = web
        .get_with_cookie(
            &next.replace("/manage/defenders?", "/manage/defenders/rows?"),
            &cookie,
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&fragment), 30, "the refresh keeps the page");
}
