//! Monitor > Vulnerabilities, Monitor > Compliance and Defend > Compliance in a real Console:
//! inventories with attacker-controlled package names reach the pages only escaped, a record's
//! non-http link is not made a link, the Defender page links to its image, and the compliance
//! policy form (with its CSRF token) changes what Monitor > Compliance shows.
//!
//! The OSV record here is made up by the test (its package name is hostile markup); real
//! records are exercised in `vulnerabilities.rs`.

mod db_support;
mod web_support;

use defender_console::store::now_ms;
use defender_proto::v1::{
    ComplianceReport, ComplianceResult, Event, Inventory, InventoryPackage, OsRelease, event,
};
use defender_vuln::Record;
use prost::Message;
use web_support::*;

const HOSTILE: &str = "<script>alert(1)</script>";

async fn store_event(web: &Web, defender: &str, seq: i64, kind: &str, e: Event) {
    defender_console::with_pool!(web.console.store.pool(), |p| {
        sqlx::query("INSERT INTO events (defender_id, seq, kind, time_ms, received_at, container, pid, body) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)")
        .bind(defender)
        .bind(seq)
        .bind(kind)
        .bind(e.time_ms)
        .bind(now_ms())
        .bind(&e.container)
        .bind(e.encode_to_vec())
        .execute(p)
        .await
        .unwrap();
    });
}

#[tokio::test]
async fn pages_escape_inventories_and_the_policy_form_applies() {
    let web = Web::start().await;
    web.connected_defender("d-vuln", &hostile_metadata("host-1", "fam<i>"))
        .await;
    let inv = Inventory {
        image_id: "sha256:abc".into(),
        image: format!("registry.example/{HOSTILE}:1"),
        os: Some(OsRelease {
            id: "alpine".into(),
            version_id: "3.18.4".into(),
            pretty_name: "Alpine <b>".into(),
        }),
        packages: vec![InventoryPackage {
            kind: "npm".into(),
            name: HOSTILE.into(),
            version: "1.0.0".into(),
            path: "/app/\"><x>".into(),
            ..Default::default()
        }],
        total_packages: 1,
        ..Default::default()
    };
    let now = now_ms();
    store_event(
        &web,
        "d-vuln",
        1,
        "inventory",
        Event {
            seq: 1,
            time_ms: now,
            container: "web".into(),
            kind: Some(event::Kind::Inventory(inv)),
        },
    )
    .await;
    let report = ComplianceReport {
        image_id: "sha256:abc".into(),
        results: vec![
            ComplianceResult {
                check_id: "defender-101".into(),
                title: "Container runs as root (uid 0)".into(),
                severity: "high".into(),
                passed: false,
                evidence: format!("uid 0 {HOSTILE}"),
                cis: "4.1".into(),
            },
            ComplianceResult {
                check_id: "defender-106".into(),
                title: "Package manager in the image".into(),
                severity: "low".into(),
                passed: true,
                evidence: "none".into(),
                cis: "4.3".into(),
            },
        ],
    };
    store_event(
        &web,
        "d-vuln",
        2,
        "compliance",
        Event {
            seq: 2,
            time_ms: now,
            container: "web".into(),
            kind: Some(event::Kind::Compliance(report)),
        },
    )
    .await;
    let record = format!(
        r#"{{"id":"TEST-0001","modified":"2024-01-01T00:00:00Z","summary":"summary {HOSTILE}","aliases":["CVE-2099-0001"],
           "references":[{{"type":"ADVISORY","url":"javascript:alert(3)"}}],
           "affected":[{{"package":{{"ecosystem":"npm","name":"{HOSTILE}"}},"ranges":[{{"type":"SEMVER","events":[{{"introduced":"0"}},{{"fixed":"1.0.1"}}]}}]}}]}}"#
    );
    let parsed = Record::parse(record.as_bytes()).unwrap();
    web.console
        .store
        .import_records(vec![(parsed, record)])
        .await
        .unwrap();

    let cookie = web.login().await;
    let list = web
        .get_with_cookie("/monitor/vulnerabilities/images", &cookie)
        .await;
    assert_eq!(list.status(), 200);
    let html = list.text().await.unwrap();
    assert!(
        html.contains("registry.example/&lt;script&gt;alert(1)&lt;/script&gt;:1"),
        "image name escaped"
    );
    assert!(!html.contains(HOSTILE));
    assert!(html.contains("/monitor/vulnerabilities/images/sha256%3Aabc"));

    let page = web
        .get_with_cookie("/monitor/vulnerabilities/images/sha256%3Aabc", &cookie)
        .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("TEST-0001") && html.contains("CVE-2099-0001") && html.contains("1.0.1"));
    assert!(!html.contains(HOSTILE) && !html.contains("<x>") && !html.contains("<b>"));
    assert!(
        !html.contains("javascript:"),
        "a non-http reference must not become a link"
    );

    let search = web
        .get_with_cookie("/monitor/vulnerabilities/search?id=cve-2099-0001", &cookie)
        .await;
    let html = search.text().await.unwrap();
    assert!(
        html.contains("found in") && html.contains("sha256:abc"),
        "{html}"
    );

    let defender = web
        .get_with_cookie("/manage/defenders/d-vuln", &cookie)
        .await;
    let html = defender.text().await.unwrap();
    assert!(
        html.contains("/monitor/vulnerabilities/images/sha256%3Aabc")
            && html.contains("/monitor/compliance?defender=d-vuln")
    );

    let compliance = web.get_with_cookie("/monitor/compliance", &cookie).await;
    let html = compliance.text().await.unwrap();
    assert!(!html.contains(HOSTILE));
    let failed_at = html.find("defender-101").unwrap();
    assert!(
        failed_at < html.find("defender-106").unwrap(),
        "failed checks first"
    );

    // Defend > Compliance: disable defender-101 (its box unchecked), keep defender-106 on.
    let csrf = web.csrf(&cookie).await;
    let form = [
        ("csrf", csrf.as_str()),
        ("enabled.defender-106", "on"),
        ("severity.defender-106", "medium"),
        ("severity.defender-101", ""),
    ];
    let saved = web
        .http
        .post(web.url("/defend/compliance"))
        .header("cookie", format!("defender_session={cookie}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 303, "{:?}", saved.text().await);
    let html = web
        .get_with_cookie("/monitor/compliance", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(!html.contains("defender-101"));
    assert!(html.contains("defender-106"));
    // Without the CSRF token the form is refused.
    let refused = web
        .http
        .post(web.url("/defend/compliance"))
        .header("cookie", format!("defender_session={cookie}"))
        .form(&[("enabled.defender-101", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}
