//! The reverse proxy: hyper server (HTTP/1.1 + h2c) in front, pooled hyper client behind.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use defender_proto::v1::{Event, WaasEvent, event};
use defender_waas::IpNet;
use defender_waas::{
    Admission, Effect, Engine, Finding, Guard, HttpRequest, Judged, Verdict, WaasPolicy,
    access_check, access_finding, client_ip, evaluate, trusted_nets,
};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::ProxyLimits;
use super::body::{PrefixError, PrefixedBody, read_prefix};
use crate::observe::EventSink;

/// Response body type of the proxy.
type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Counters of one proxy (monotonic since start).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests judged.
    pub requests: AtomicU64,
    /// Requests refused (403 / 429 / 503).
    pub refused: AtomicU64,
    /// Requests passed with an alert.
    pub alerted: AtomicU64,
    /// Requests whose upstream could not be reached (502).
    pub upstream_errors: AtomicU64,
    /// Inspections that failed internally and were let through (fail-open).
    pub fail_open: AtomicU64,
    /// Events not emitted because of the events-per-second bound.
    pub events_suppressed: AtomicU64,
    /// Requests whose body was longer than the inspection prefix.
    pub incomplete: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// The policy in force with what is derived from it.
struct Compiled {
    policy: WaasPolicy,
    trusted: Vec<IpNet>,
}

struct State {
    upstream: SocketAddr,
    listener: String,
    policy: RwLock<Arc<Compiled>>,
    engine: Engine,
    guard: Mutex<Guard>,
    sink: Arc<dyn EventSink>,
    client: Client<HttpConnector, PrefixedBody>,
    limits: ProxyLimits,
    stats: Stats,
    events: Mutex<(Instant, u32)>,
}

/// A running proxy (cheap to clone).
#[derive(Clone)]
pub struct Proxy {
    state: Arc<State>,
    local: SocketAddr,
}

/// Hop-by-hop headers, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Proxy {
    /// Serves `listener`, forwarding to `upstream`, under `policy` (replace it with
    /// [`Proxy::set_policy`]).
    pub fn start(
        listener: TcpListener,
        upstream: SocketAddr,
        policy: WaasPolicy,
        sink: Arc<dyn EventSink>,
        limits: ProxyLimits,
    ) -> Proxy {
        let local = listener.local_addr().unwrap_or(upstream);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(std::time::Duration::from_secs(5)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let state = Arc::new(State {
            upstream,
            listener: local.to_string(),
            policy: RwLock::new(Arc::new(compile(policy))),
            engine: Engine::new(),
            guard: Mutex::new(Guard::new()),
            sink,
            client,
            limits,
            stats: Stats::default(),
            events: Mutex::new((Instant::now(), 0)),
        });
        tokio::spawn(serve(listener, state.clone()));
        Proxy { state, local }
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Puts `policy` in force for the next requests.
    pub fn set_policy(&self, policy: WaasPolicy) {
        let c = Arc::new(compile(policy));
        *self.state.policy.write().unwrap_or_else(|e| e.into_inner()) = c;
    }

    /// The proxy's counters.
    pub fn stats(&self) -> &Stats {
        &self.state.stats
    }
}

fn compile(policy: WaasPolicy) -> Compiled {
    Compiled {
        trusted: trusted_nets(&policy),
        policy,
    }
}

/// Accepts connections (at most `max_connections` at once) and serves each with hyper.
async fn serve(listener: TcpListener, state: Arc<State>) {
    let permits = Arc::new(Semaphore::new(state.limits.max_connections.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning.
                tracing::warn!("WAAS accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        state.stats.connections.fetch_add(1, Ordering::Relaxed);
        let st = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // A client that connects and sends nothing is dropped after the head timeout
            // (hyper's header timeout starts with the first byte of HTTP/1, not before).
            let mut probe = [0u8; 1];
            match tokio::time::timeout(st.limits.header_read_timeout, stream.peek(&mut probe)).await
            {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let max_head = st
                .policy
                .read()
                .map(|p| p.policy.max_header_bytes)
                .unwrap_or(16 * 1024)
                .max(8192);
            let svc_state = st.clone();
            let svc = hyper::service::service_fn(move |req| {
                let st = svc_state.clone();
                async move { Ok::<_, Infallible>(handle(st, req, peer.ip()).await) }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(st.limits.header_read_timeout)
                .max_buf_size(max_head)
                .keep_alive(true);
            b.http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_head).unwrap_or(u32::MAX))
                .max_concurrent_streams(256);
            let _ = b
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A plain-text response (never echoes request content).
fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A random event id: 16 hex digits.
fn event_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Judges one request and forwards it or refuses it.
async fn handle(st: Arc<State>, mut req: Request<Incoming>, peer: IpAddr) -> Response<ProxyBody> {
    st.stats.requests.fetch_add(1, Ordering::Relaxed);
    let compiled = st
        .policy
        .read()
        .map(|p| p.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let p = &compiled.policy;
    let xff: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let client = client_ip(peer, &xff, &compiled.trusted);
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let method = req.method().as_str().to_owned();

    if p.enabled {
        let now = Instant::now();
        let admission = st
            .guard
            .lock()
            .map(|mut g| g.admit(client, p, now))
            .unwrap_or(Admission::Ok);
        match admission {
            Admission::Banned => {
                st.stats.refused.fetch_add(1, Ordering::Relaxed);
                return text(
                    StatusCode::FORBIDDEN,
                    "403 Forbidden: this client is temporarily banned by WAAS.\n".into(),
                );
            }
            Admission::RateLimited => {
                let f = access_finding("ratelimit-110", "client", &client.to_string());
                let j = Judged {
                    finding: f,
                    effect: p.rate_limit.effect,
                };
                let blocks = j.effect.blocks();
                let status = if blocks { 429 } else { 0 };
                let id = emit(
                    &st,
                    &j,
                    "rate_limit",
                    client,
                    &method,
                    &target,
                    status,
                    false,
                    1,
                );
                if blocks {
                    st.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return refused(&st, p, client, &j, &id, StatusCode::TOO_MANY_REQUESTS);
                }
                st.stats.alerted.fetch_add(1, Ordering::Relaxed);
            }
            Admission::Ok => {}
        }
        if let Some(f) = access_check(p, client, &method) {
            let j = Judged {
                finding: f,
                effect: p.access.effect,
            };
            if j.effect.blocks() {
                let id = emit(&st, &j, "access", client, &method, &target, 403, false, 1);
                st.stats.refused.fetch_add(1, Ordering::Relaxed);
                return refused(&st, p, client, &j, &id, StatusCode::FORBIDDEN);
            }
            emit(&st, &j, "access", client, &method, &target, 0, false, 1);
            st.stats.alerted.fetch_add(1, Ordering::Relaxed);
        }
    }

    // The WebSocket handshake is judged like any request; the upgrade follows if it passes.
    let client_upgrade = is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, incoming) = req.into_parts();
    let (body_bytes, complete, fwd_body) = if has_body(&parts.headers, &incoming) && p.enabled {
        match read_prefix(incoming, p.inspect_body_bytes, st.limits.body_read_timeout).await {
            Ok(pre) => (pre.bytes, pre.complete, pre.body),
            Err(PrefixError::Timeout) => {
                return text(StatusCode::REQUEST_TIMEOUT, "408 Request Timeout\n".into());
            }
            Err(PrefixError::Body(e)) => {
                tracing::debug!("WAAS client body failed: {e}");
                return text(StatusCode::BAD_REQUEST, "400 Bad Request: body\n".into());
            }
        }
    } else if has_body(&parts.headers, &incoming) {
        match read_prefix(incoming, 0, st.limits.body_read_timeout).await {
            Ok(pre) => (Vec::new(), pre.complete, pre.body),
            Err(_) => return text(StatusCode::BAD_REQUEST, "400 Bad Request\n".into()),
        }
    } else {
        (Vec::new(), true, PrefixedBody::empty())
    };

    if p.enabled {
        let req_model = HttpRequest {
            method: method.clone(),
            target: target.clone(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body_bytes,
            body_complete: complete,
        };
        let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if st.limits.fail_inspection_for_tests {
                panic!("inspection failure injected by a test");
            }
            evaluate(&st.engine, p, &req_model)
        }));
        match verdict {
            Ok(v) => {
                if v.incomplete {
                    st.stats.incomplete.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(resp) = judge(&st, p, client, &method, &target, &v) {
                    return resp;
                }
            }
            Err(_) => {
                st.stats.fail_open.fetch_add(1, Ordering::Relaxed);
                let j = Judged {
                    finding: access_finding("failopen-110", "", ""),
                    effect: if p.fail_open {
                        Effect::Alert
                    } else {
                        Effect::Prevent
                    },
                };
                let status = if p.fail_open { 0 } else { 503 };
                let id = emit(
                    &st, &j, "protocol", client, &method, &target, status, false, 0,
                );
                tracing::error!(event_id = %id, "WAAS inspection failed internally");
                if !p.fail_open {
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("503 Service Unavailable: inspection failed. Event id: {id}\n"),
                    );
                }
            }
        }
    }
    forward(&st, parts, fwd_body, peer, client_upgrade).await
}

/// Applies a verdict: `Some(response)` when the request is refused, `None` to forward it.
fn judge(
    st: &State,
    p: &WaasPolicy,
    client: IpAddr,
    method: &str,
    target: &str,
    v: &Verdict,
) -> Option<Response<ProxyBody>> {
    let d = v.decisive()?;
    let n = u32::try_from(v.findings.len()).unwrap_or(u32::MAX);
    let family = d.finding.family.as_str();
    if d.effect.blocks() {
        let id = emit(st, d, family, client, method, target, 403, v.incomplete, n);
        st.stats.refused.fetch_add(1, Ordering::Relaxed);
        return Some(refused(st, p, client, d, &id, StatusCode::FORBIDDEN));
    }
    emit(st, d, family, client, method, target, 0, v.incomplete, n);
    st.stats.alerted.fetch_add(1, Ordering::Relaxed);
    None
}

/// Builds the refusal and records the prevent verdict (bans on `ban` or after repeats).
fn refused(
    st: &State,
    p: &WaasPolicy,
    client: IpAddr,
    j: &Judged,
    id: &str,
    status: StatusCode,
) -> Response<ProxyBody> {
    let banned = st
        .guard
        .lock()
        .map(|mut g| g.record_prevent(client, j.effect == Effect::Ban, p, Instant::now()))
        .unwrap_or(false);
    if banned {
        tracing::warn!(client = %client, minutes = p.ban.minutes, "WAAS banned a client");
    }
    let mut r = text(
        status,
        format!(
            "{} {}: request blocked by WAAS (rule {}). Event id: {id}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            j.finding.rule_id
        ),
    );
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert("x-waas-event-id", v);
    }
    r
}

/// Sends one `WaasEvent` (within the events-per-second bound) and returns its id.
#[allow(clippy::too_many_arguments)]
fn emit(
    st: &State,
    j: &Judged,
    family: &str,
    client: IpAddr,
    method: &str,
    target: &str,
    status: u32,
    incomplete: bool,
    findings: u32,
) -> String {
    let id = event_id();
    let allowed = st
        .events
        .lock()
        .map(|mut w| {
            let now = Instant::now();
            if now.duration_since(w.0).as_secs() >= 1 {
                *w = (now, 0);
            }
            w.1 += 1;
            w.1 <= st.limits.max_events_per_second
        })
        .unwrap_or(true);
    if !allowed {
        st.stats.events_suppressed.fetch_add(1, Ordering::Relaxed);
        return id;
    }
    let f: &Finding = &j.finding;
    let cut = |s: &str, n: usize| defender_waas::request::cut(s, n).to_owned();
    let fam = if matches!(
        f.rule_id.as_str(),
        "access-110" | "access-120" | "access-130"
    ) {
        "access"
    } else if f.rule_id == "ratelimit-110" {
        "rate_limit"
    } else {
        family
    };
    st.sink.push_event(Event {
        seq: 0,
        time_ms: crate::unix_ms(),
        container: String::new(),
        kind: Some(event::Kind::Waas(WaasEvent {
            event_id: id.clone(),
            rule: f.rule_id.clone(),
            family: fam.to_owned(),
            effect: j.effect.as_str().to_owned(),
            client_ip: client.to_string(),
            method: cut(method, 32),
            path: cut(target, 1024),
            location: f.location.as_str().to_owned(),
            name: cut(&f.name, 256),
            matched: cut(&f.matched, 200),
            message: cut(&f.message, 200),
            status,
            incomplete,
            findings,
            listener: st.listener.clone(),
        })),
    });
    id
}

/// True when the request asks for a protocol upgrade (WebSocket).
fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// True when the request may carry a body.
fn has_body(h: &HeaderMap, b: &Incoming) -> bool {
    use hyper::body::Body;
    !b.is_end_stream() || h.contains_key(header::TRANSFER_ENCODING)
}

/// Forwards the request upstream (HTTP/1.1, pooled) and streams the response back; 502 when
/// the app cannot be reached.
async fn forward(
    st: &State,
    parts: hyper::http::request::Parts,
    body: PrefixedBody,
    peer: IpAddr,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let pq = parts
        .uri
        .path_and_query()
        .map(|x| x.as_str())
        .unwrap_or("/");
    let Ok(uri) = format!("http://{}{}", st.upstream, pq).parse::<Uri>() else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request: target\n".into());
    };
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 2);
    let listed: Vec<String> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (n, v) in &parts.headers {
        let name = n.as_str();
        if HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name) {
            continue;
        }
        if name == "x-forwarded-for" {
            continue;
        }
        headers.append(n.clone(), v.clone());
    }
    if client_upgrade.is_some() {
        if let Some(u) = parts.headers.get(header::UPGRADE) {
            headers.insert(header::UPGRADE, u.clone());
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // X-Forwarded-For: what came in, plus the peer we saw.
    let prior: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let xff = if prior.is_empty() {
        peer.to_string()
    } else {
        format!("{}, {peer}", prior.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
    }
    // HTTP/2 clients send :authority, not Host; HTTP/1.1 upstreams need Host.
    if !headers.contains_key(header::HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    let mut up = Request::new(body);
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.version_mut() = Version::HTTP_11;
    *up.headers_mut() = headers;
    let mut resp = match st.client.request(up).await {
        Ok(r) => r,
        Err(e) => {
            st.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("WAAS upstream error: {e}");
            return text(
                StatusCode::BAD_GATEWAY,
                "502 Bad Gateway: the application did not answer\n".into(),
            );
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_up) = client_upgrade
    {
        let server_up = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(s)) = (client_up.await, server_up.await) {
                let mut c = TokioIo::new(c);
                let mut s = TokioIo::new(s);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
            }
        });
        let (mut rp, _) = resp.into_parts();
        rp.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return Response::from_parts(
            rp,
            http_body_util::Empty::new().map_err(|e| match e {}).boxed(),
        );
    }
    let (mut rp, rb) = resp.into_parts();
    let listed: Vec<String> = rp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for h in HOP_BY_HOP.iter().map(|s| s.to_string()).chain(listed) {
        rp.headers.remove(h.as_str());
    }
    Response::from_parts(rp, rb.boxed())
}
