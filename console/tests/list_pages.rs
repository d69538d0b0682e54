//! Issue 13, item 1 ("pagination everywhere"): Manage > Defenders and its refresh fragment show
//! at most 100 Defenders a page, whatever the fleet's size, against a real Console.

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
    assert!(first.contains("href=\"/manage/defenders?page=2\""));
    assert!(first.contains("data-refresh=\"/manage/defenders/rows?page=1\""));
    let second = web
        .get_with_cookie("/manage/defenders?page=2", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&second), 30);
    assert!(second.contains("Defenders 101–130 of 130"));
    let fragment = web
        .get_with_cookie("/manage/defenders/rows?page=2", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&fragment), 30, "the refresh keeps the page");
    // Past the end: the last page.
    let past = web
        .get_with_cookie("/manage/defenders?page=99", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(rows(&past), 30);
}
