//! Manage › Defenders at fleet size: the list page and `GET /api/v1/defenders` with 10,000
//! Defenders (9,000 connected), searched, filtered, sorted and paged by cursor, over real HTTP
//! against a real Console. Baseline, measured in the same run: reading every visible Defender
//! (`Store::list_defenders`), which the list page and the API did on every request (and every
//! 5-second refresh) before issue 14.
//!
//! Run: cargo bench -p defender-console --bench fleet   (FLEET_DEFENDERS to change the size)

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/db_support/mod.rs"]
mod db_support;

use std::time::{Duration, Instant};

use defender_console::store::{Health, NewDefender, TokenKind, now_ms};
use defender_proto::v1::{Hello, Mode, TaskMetadata};

/// Requests per measured case.
const SAMPLES: usize = 100;

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

struct Figures {
    p50: Duration,
    p99: Duration,
}

async fn measure<F, Fut>(mut f: F) -> Figures
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..5 {
        f().await;
    }
    let mut times = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        f().await;
        times.push(t.elapsed());
    }
    times.sort();
    Figures {
        p50: percentile(&times, 0.50),
        p99: percentile(&times, 0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run() {
    let size: usize = std::env::var("FLEET_DEFENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let console = common::start_console(&tmp.path().join("console"), Duration::from_secs(10)).await;
    let store = console.store.clone();
    let enroll = store
        .create_token(TokenKind::Enrollment, "bench", None)
        .await
        .expect("token");
    let enroll_id = store
        .check_token(TokenKind::Enrollment, &enroll)
        .await
        .expect("check")
        .expect("token id");

    let t = Instant::now();
    for i in 0..size {
        let id = format!("{i:08x}{:024x}", i * 7919);
        let cluster = ["prod", "staging", "dev", "batch"][i % 4];
        let family = ["web", "api", "worker", "cron", "auth"][i % 5];
        let metadata = TaskMetadata {
            hostname: format!("ip-10-{}-{}-{}", i / 65536, i / 256 % 256, i % 256),
            cluster: format!("arn:aws:ecs:eu-west-1:123456789012:cluster/{cluster}"),
            task_arn: format!("arn:aws:ecs:eu-west-1:123456789012:task/{cluster}/{i:032x}"),
            family: family.into(),
            revision: format!("{}", i % 9 + 1),
            ..Default::default()
        };
        let version = ["0.1.0", "0.1.1", "0.2.0"][i % 3];
        let mode = if i % 2 == 0 { "embedded" } else { "sidecar" };
        store
            .insert_defender(&NewDefender {
                id: &id,
                metadata: &metadata,
                agent_version: version,
                mode,
                enrollment_token: enroll_id,
                cert_not_after_ms: now_ms() + 3_600_000,
            })
            .await
            .expect("insert");
        if i % 10 != 0 {
            let hello = Hello {
                metadata: Some(metadata),
                agent_version: version.into(),
                mode: Mode::Embedded as i32,
                last_acked_seq: 0,
                capture: None,
            };
            let session = store
                .start_session(&id, &hello, mode, "bench", 600_000)
                .await
                .expect("session");
            let health = Health {
                dropped_events: (i % 7) as u64,
                ..Default::default()
            };
            store.heartbeat(&id, session, &health).await.expect("hb");
        }
    }
    eprintln!(
        "{size} Defenders stored in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let base = format!("http://{}", console.http_addr);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let token = store
        .create_token(TokenKind::Api, "bench", None)
        .await
        .expect("api token");
    let login = http
        .post(format!("{base}/login"))
        .form(&[("username", "admin"), ("password", common::ADMIN_PASSWORD)])
        .send()
        .await
        .expect("login");
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("defender_session="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_owned();

    // A cursor into the middle of the list, for the "next page" cases.
    let first = http
        .get(format!(
            "{base}/api/v1/defenders?limit=100&sort=name&order=asc"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("first page");
    let cursor = first
        .headers()
        .get("x-next-cursor")
        .and_then(|v| v.to_str().ok())
        .expect("a next cursor")
        .to_owned();

    let retention_ms = 3_600_000;
    let baseline = measure(|| {
        let store = store.clone();
        async move {
            let all = store
                .list_defenders(now_ms() - retention_ms)
                .await
                .expect("list");
            assert_eq!(all.len(), size);
        }
    })
    .await;
    println!(
        "baseline: read every Defender (the pre-issue-14 list, each request): p50 {:.1} ms, p99 {:.1} ms",
        ms(baseline.p50),
        ms(baseline.p99)
    );

    let cases: Vec<(&str, String, bool)> = vec![
        ("page: first 100, newest first", "/manage/defenders".into(), true),
        ("page: search \"worker\" + connected, by name", "/manage/defenders?q=worker&status=connected&sort=name&order=asc".into(), true),
        ("page: next page by cursor (by name)", format!("/manage/defenders?sort=name&order=asc&cursor={cursor}&start=101"), true),
        ("page: refresh fragment (one page)", "/manage/defenders/rows?sort=last_seen&order=desc".into(), true),
        ("api: limit=100", "/api/v1/defenders?limit=100".into(), false),
        ("api: cluster=…prod, version=0.2.0, by audits", "/api/v1/defenders?limit=100&cluster=arn:aws:ecs:eu-west-1:123456789012:cluster/prod&version=0.2.0&sort=audits".into(), false),
        ("api: next page by cursor", format!("/api/v1/defenders?limit=100&sort=name&order=asc&cursor={cursor}"), false),
        ("api: search by task id", "/api/v1/defenders?q=00000000000000000000000000001f40".into(), false),
    ];
    let mut worst = Duration::ZERO;
    for (name, path, page) in &cases {
        let url = format!("{base}{path}");
        let f = measure(|| {
            let req = if *page {
                http.get(&url)
                    .header("Cookie", format!("defender_session={cookie}"))
            } else {
                http.get(&url).bearer_auth(&token)
            };
            async move {
                let resp = req.send().await.expect("request");
                assert!(resp.status().is_success(), "{}", resp.status());
                let _ = resp.bytes().await.expect("body");
            }
        })
        .await;
        worst = worst.max(f.p99);
        println!(
            "{name:<48} p50 {:>6.1} ms  p99 {:>6.1} ms  ({:.2} x baseline p99)",
            ms(f.p50),
            ms(f.p99),
            f.p99.as_secs_f64() / baseline.p99.as_secs_f64()
        );
    }
    println!(
        "worst p99 over the cases: {:.1} ms at {size} Defenders",
        ms(worst)
    );
    console.shutdown();
    let _ = console.wait().await;
}
