//! Health, metrics, security headers and request limits of the HTTP listener.

mod db_support;
mod web_support;

use defender_console::store::{EventWriter, now_ms};
use defender_proto::v1::event::Kind;
use defender_proto::v1::{AgentNotice, Event};
use reqwest::{Response, StatusCode};
use web_support::{Web, hostile_metadata};

fn header<'a>(resp: &'a Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

fn nonce_of(csp: &str) -> String {
    let start = csp.find("'nonce-").expect("CSP has a nonce") + "'nonce-".len();
    let end = start + csp[start..].find('\'').unwrap();
    csp[start..end].to_owned()
}

fn assert_hardened(resp: &Response) {
    assert_eq!(header(resp, "x-content-type-options"), "nosniff");
    assert_eq!(header(resp, "x-frame-options"), "DENY");
    assert_eq!(header(resp, "referrer-policy"), "no-referrer");
    let csp = header(resp, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
}

#[tokio::test]
async fn healthz_is_open() {
    let web = Web::start().await;
    let resp = web.get("/healthz").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "ok");
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_defenders_and_events() {
    let web = Web::start().await;
    let text = web.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("# TYPE defender_console_defenders gauge"));
    assert_eq!(
        metric(&text, "defender_console_defenders{status=\"connected\"}"),
        0.0
    );
    assert_eq!(
        metric(&text, "defender_console_defenders{status=\"disconnected\"}"),
        0.0
    );
    assert_eq!(metric(&text, "defender_console_events_stored_total"), 0.0);

    let meta = hostile_metadata("metrics-host", "fam");
    web.connected_defender("metrics-a", &meta).await;
    let gone = web.connected_defender("metrics-b", &meta).await;
    web.console.store.end_session(gone).await.unwrap();
    let events: Vec<Event> = (1..=5)
        .map(|seq| Event {
            seq,
            time_ms: now_ms(),
            container: String::new(),
            kind: Some(Kind::Notice(AgentNotice {
                message: "hello".into(),
                ..Default::default()
            })),
        })
        .collect();
    EventWriter::spawn(web.console.store.clone())
        .write("metrics-a", events.clone())
        .await
        .unwrap();

    let resp = web.get("/metrics").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "content-type").starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    assert_eq!(
        metric(&text, "defender_console_defenders{status=\"connected\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "defender_console_defenders{status=\"disconnected\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "defender_console_events_stored_total"),
        events.len() as f64
    );
    // Counts only: nothing about the Defenders themselves.
    assert!(!text.contains("metrics-host") && !text.contains("metrics-a"));
}

#[tokio::test]
async fn responses_carry_security_headers_and_a_fresh_nonce() {
    let web = Web::start().await;
    let first = web.get("/login").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_hardened(&first);
    let csp = header(&first, "content-security-policy").to_owned();
    assert!(csp.contains("script-src 'nonce-"), "{csp}");
    let nonce = nonce_of(&csp);
    let html = first.text().await.unwrap();
    assert!(html.contains(&format!("<style nonce=\"{nonce}\">")));

    let second = web.get("/login").await;
    assert_ne!(nonce_of(header(&second, "content-security-policy")), nonce);

    // The logged-in page's inline script runs only under its response's nonce.
    let cookie = web.login().await;
    let page = web.get_with_cookie("/manage/defenders", &cookie).await;
    assert_hardened(&page);
    let nonce = nonce_of(header(&page, "content-security-policy"));
    let html = page.text().await.unwrap();
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains(&format!("<script nonce=\"{nonce}\">")));

    // JSON, redirects and errors are hardened too.
    let api = web.get("/api/v1/defenders").await;
    assert_hardened(&api);
    let redirect = web.get("/manage/defenders").await;
    assert_hardened(&redirect);
    let missing = web.get("/no/such/page").await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_hardened(&missing);
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let web = Web::start().await;
    let huge = "x".repeat(2 * 1024 * 1024);
    let resp = web
        .http
        .post(web.url("/login"))
        .form(&[("username", "admin"), ("password", huge.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The same through the CSRF check of a logged-in form.
    let cookie = web.login().await;
    let resp = web
        .http
        .post(web.url("/logout"))
        .header("Cookie", format!("defender_session={cookie}"))
        .form(&[("csrf", huge.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
