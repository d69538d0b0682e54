//! The reverse proxy: hyper server (HTTP/1.1 + h2c) in front, pooled hyper client behind.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use defender_proto::v1::{Event, WaasEvent, event};
use defender_waas::IpNet;
use defender_waas::{
    Admission, Effect, Engine, Family, Finding, Guard, HttpRequest, Judged, OVERSIZED_HEAD,
    Verdict, WaasPolicy, access_check, access_finding, client_ip, evaluate, oversized_head,
    trusted_nets,
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
use super::tap::{HeadTap, Tapped};
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
    /// Bans started (the event of the request that started each has effect `ban`).
    pub bans: AtomicU64,
    /// Requests refused because their client was banned.
    pub banned: AtomicU64,
    /// Request heads over hyper's buffer (twice `max_header_bytes`), answered 431 by hyper.
    pub oversized_heads: AtomicU64,
}

/// The policy in force with what is derived from it.
struct Compiled {
    policy: WaasPolicy,
    trusted: Vec<IpNet>,
}

struct State {
    /// The upstream as a URI authority (`127.0.0.1:80`), for the forwarded requests.
    authority: hyper::http::uri::Authority,
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

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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
        let authority = upstream
            .to_string()
            .parse()
            .expect("a socket address is a valid authority");
        let state = Arc::new(State {
            authority,
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
                .unwrap_or(16 * 1024);
            // hyper's buffer holds twice the policy's limit, so that a head over the limit
            // still reaches `handle`, which answers 431 with an event id; beyond it hyper
            // answers 431 itself and the event is sent below.
            let hyper_buf = (2 * max_head).max(8192);
            let tap = HeadTap::new(hyper_buf);
            let svc_state = st.clone();
            let svc_tap = tap.clone();
            let svc = hyper::service::service_fn(move |req| {
                let st = svc_state.clone();
                let tap = svc_tap.clone();
                async move { Ok::<_, Infallible>(handle(st, req, peer.ip(), &tap).await) }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(st.limits.header_read_timeout)
                .max_buf_size(hyper_buf)
                .keep_alive(true);
            b.http2()
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(hyper_buf).unwrap_or(u32::MAX))
                .max_concurrent_streams(256);
            let served = b
                .serve_connection_with_upgrades(TokioIo::new(Tapped::new(stream, tap)), svc)
                .await;
            if let Err(e) = served
                && e.downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_parse_too_large)
            {
                oversized_by_hyper(&st, peer.ip(), hyper_buf);
            }
        });
    }
}

/// A head over hyper's buffer: hyper answered 431 and closed; the request was never parsed,
/// so the event names only the client (the TCP peer) and the limit.
fn oversized_by_hyper(st: &State, peer: IpAddr, buffer: usize) {
    st.stats.oversized_heads.fetch_add(1, Ordering::Relaxed);
    let p = st
        .policy
        .read()
        .map(|c| c.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let effect = p.policy.effect(Family::Protocol);
    if effect == Effect::Disable {
        return;
    }
    let mut finding = oversized_head(buffer + 1, p.policy.max_header_bytes);
    finding.matched = format!(
        "more than {buffer} bytes (limit {})",
        p.policy.max_header_bytes
    );
    let j = Judged {
        finding,
        effect: Effect::Prevent,
    };
    emit(st, &j, "protocol", peer, "", "", 431, true, 1);
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
async fn handle(
    st: Arc<State>,
    mut req: Request<Incoming>,
    peer: IpAddr,
    tap: &HeadTap,
) -> Response<ProxyBody> {
    st.stats.requests.fetch_add(1, Ordering::Relaxed);
    let compiled = st
        .policy
        .read()
        .map(|p| p.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    let p = &compiled.policy;
    let client = if compiled.trusted.is_empty() {
        peer
    } else {
        let xff: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        client_ip(peer, &xff, &compiled.trusted)
    };
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let method = req.method().as_str().to_owned();
    // The raw head (HTTP/1): hyper hides a Content-Length sent beside Transfer-Encoding.
    let raw_lengths = if req.version() == Version::HTTP_2 {
        tap.stop();
        Vec::new()
    } else {
        // The request target as sent: the path and query (origin form) or, for the
        // absolute and authority forms, the whole URI.
        let sent = if req.uri().authority().is_none() {
            std::borrow::Cow::Borrowed(target.as_str())
        } else {
            std::borrow::Cow::Owned(req.uri().to_string())
        };
        let line = [method.as_bytes(), b" ", sent.as_bytes(), b" HTTP/1."].concat();
        tap.take_head(&line, req.headers().contains_key(header::TRANSFER_ENCODING))
    };

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
                st.stats.banned.fetch_add(1, Ordering::Relaxed);
                return text(
                    StatusCode::FORBIDDEN,
                    "403 Forbidden: this client is temporarily banned by WAAS.\n".into(),
                );
            }
            Admission::RateLimited => {
                let blocks = p.rate_limit.effect.blocks();
                // An alert over the events bound costs nothing more (this runs for every
                // request of a client over its rate).
                if blocks || event_allowed(&st) {
                    let j = Judged {
                        finding: access_finding("ratelimit-110", "client", &client.to_string()),
                        effect: p.rate_limit.effect,
                    };
                    if blocks {
                        return refuse(
                            &st,
                            p,
                            &j,
                            "rate_limit",
                            client,
                            &method,
                            &target,
                            StatusCode::TOO_MANY_REQUESTS,
                            false,
                            1,
                        );
                    }
                    emit_counted(
                        &st,
                        &j,
                        "rate_limit",
                        client,
                        &method,
                        &target,
                        0,
                        false,
                        1,
                        true,
                    );
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
                return refuse(
                    &st,
                    p,
                    &j,
                    "access",
                    client,
                    &method,
                    &target,
                    StatusCode::FORBIDDEN,
                    false,
                    1,
                );
            }
            emit(&st, &j, "access", client, &method, &target, 0, false, 1);
            st.stats.alerted.fetch_add(1, Ordering::Relaxed);
        }
        // Oversized head: measured as sent (request line, headers, line ends).
        let protocol = p.effect(Family::Protocol);
        if protocol != Effect::Disable {
            let size = head_size(&req, &target, &method);
            if size > p.max_header_bytes {
                let j = Judged {
                    finding: oversized_head(size, p.max_header_bytes),
                    effect: protocol,
                };
                let v = Verdict {
                    findings: vec![j],
                    incomplete: false,
                };
                if let Some(resp) = judge(&st, p, client, &method, &target, &v) {
                    return resp;
                }
            }
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
        let mut headers: Vec<(String, String)> =
            Vec::with_capacity(parts.headers.len() + raw_lengths.len());
        headers.extend(parts.headers.iter().map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        }));
        // What hyper dropped: the detectors judge the head as it was sent (protocol-110).
        headers.extend(
            raw_lengths
                .into_iter()
                .map(|v| ("content-length".to_owned(), v)),
        );
        let req_model = HttpRequest {
            method,
            target,
            headers,
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
                let (m, t) = (&req_model.method, &req_model.target);
                if let Some(resp) = judge(&st, p, client, m, t, &v) {
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
                let (m, t) = (&req_model.method, &req_model.target);
                let id = emit(&st, &j, "protocol", client, m, t, status, false, 0);
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
    let resp = forward(&st, parts, fwd_body, peer, client_upgrade).await;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // The connection now carries another protocol: no more HTTP/1 heads to keep.
        tap.stop();
    }
    resp
}

/// Applies a verdict: `Some(response)` when the request is refused, `None` to forward it.
/// A refusal is 431 for an oversized head, 400 for another protocol finding (malformed,
/// smuggling), 403 otherwise.
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
        let status = if d.finding.rule_id == OVERSIZED_HEAD {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        } else if d.finding.family == Family::Protocol {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::FORBIDDEN
        };
        return Some(refuse(
            st,
            p,
            d,
            family,
            client,
            method,
            target,
            status,
            v.incomplete,
            n,
        ));
    }
    emit(st, d, family, client, method, target, 0, v.incomplete, n);
    st.stats.alerted.fetch_add(1, Ordering::Relaxed);
    None
}

/// Refuses a request: records the prevent verdict (which may start a ban), sends the event
/// and answers `status` with the event id. The event of the request that starts a ban carries
/// effect `ban` and says for how long and why, so each ban is one event and each refused
/// request is counted once (the requests refused during the ban are counted in
/// [`Stats::banned`], not each reported).
#[allow(clippy::too_many_arguments)]
fn refuse(
    st: &State,
    p: &WaasPolicy,
    j: &Judged,
    family: &str,
    client: IpAddr,
    method: &str,
    target: &str,
    status: StatusCode,
    incomplete: bool,
    findings: u32,
) -> Response<ProxyBody> {
    st.stats.refused.fetch_add(1, Ordering::Relaxed);
    let banned = st
        .guard
        .lock()
        .map(|mut g| g.record_prevent(client, j.effect == Effect::Ban, p, Instant::now()))
        .unwrap_or(false);
    let code = u32::from(status.as_u16());
    let id = if banned {
        tracing::warn!(client = %client, minutes = p.ban.minutes, "WAAS banned a client");
        st.stats.bans.fetch_add(1, Ordering::Relaxed);
        let cause = if j.effect == Effect::Ban {
            "the rule's effect is ban".to_owned()
        } else {
            format!(
                "{} prevent verdicts within {} s",
                p.ban.after_prevents, p.ban.window_seconds
            )
        };
        let mut ban = j.clone();
        ban.effect = Effect::Ban;
        ban.finding.message = format!(
            "client banned for {} minutes ({cause}): {}",
            p.ban.minutes, j.finding.message
        );
        emit(
            st, &ban, family, client, method, target, code, incomplete, findings,
        )
    } else {
        emit(
            st, j, family, client, method, target, code, incomplete, findings,
        )
    };
    let mut r = text(
        status,
        format!(
            "{} {}: request blocked by WAAS (rule {}). Event id: {id}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            j.finding.rule_id
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert("x-waas-event-id", v);
    }
    r
}

/// Takes one event from the events-per-second bound; false (counted as suppressed) when
/// the second's budget is spent.
fn event_allowed(st: &State) -> bool {
    let allowed = st
        .events
        .lock()
        .map(|mut w| {
            let now = Instant::now();
            if now.duration_since(w.0).as_secs() >= 1 {
                *w = (now, 0);
            }
            w.1 = w.1.saturating_add(1);
            w.1 <= st.limits.max_events_per_second
        })
        .unwrap_or(true);
    if !allowed {
        st.stats.events_suppressed.fetch_add(1, Ordering::Relaxed);
    }
    allowed
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
    emit_counted(
        st, j, family, client, method, target, status, incomplete, findings, false,
    )
}

/// [`emit`], where `budget_taken` says the caller already took the event from the bound
/// ([`event_allowed`]).
#[allow(clippy::too_many_arguments)]
fn emit_counted(
    st: &State,
    j: &Judged,
    family: &str,
    client: IpAddr,
    method: &str,
    target: &str,
    status: u32,
    incomplete: bool,
    findings: u32,
    budget_taken: bool,
) -> String {
    let id = event_id();
    if !budget_taken && !event_allowed(st) {
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

/// Size of a request head as sent on HTTP/1.1: request line, `name: value` lines, line ends.
fn head_size(req: &Request<Incoming>, target: &str, method: &str) -> usize {
    let line = method.len() + 1 + target.len() + " HTTP/1.1\r\n".len();
    req.headers()
        .iter()
        .fold(line + 2, |n, (k, v)| n + k.as_str().len() + 2 + v.len() + 2)
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1) and those the `Connection` header lists.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// Forwards the request upstream (HTTP/1.1, pooled) and streams the response back; 502 when
/// the app cannot be reached. The client's head is reused in place (no copy of its headers).
async fn forward(
    st: &State,
    parts: hyper::http::request::Parts,
    body: PrefixedBody,
    peer: IpAddr,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    let hyper::http::request::Parts {
        method,
        uri,
        mut headers,
        ..
    } = parts;
    let mut up_uri = hyper::http::uri::Parts::default();
    up_uri.scheme = Some(hyper::http::uri::Scheme::HTTP);
    up_uri.authority = Some(st.authority.clone());
    up_uri.path_and_query = Some(
        uri.path_and_query()
            .cloned()
            .unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")),
    );
    let Ok(up_uri) = Uri::from_parts(up_uri) else {
        return text(StatusCode::BAD_REQUEST, "400 Bad Request: target\n".into());
    };
    let upgrade = client_upgrade
        .as_ref()
        .and_then(|_| headers.get(header::UPGRADE).cloned());
    strip_hop_by_hop(&mut headers);
    if client_upgrade.is_some() {
        if let Some(u) = upgrade {
            headers.insert(header::UPGRADE, u);
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // X-Forwarded-For: what came in, plus the peer we saw.
    let xff = match headers.get(X_FORWARDED_FOR) {
        None => HeaderValue::from_str(&peer.to_string()).ok(),
        Some(_) => {
            let prior: Vec<&str> = headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            HeaderValue::from_str(&format!("{}, {peer}", prior.join(", "))).ok()
        }
    };
    headers.remove(X_FORWARDED_FOR);
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    // HTTP/2 clients send :authority, not Host; HTTP/1.1 upstreams need Host.
    if !headers.contains_key(header::HOST)
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    let mut up = Request::new(body);
    *up.method_mut() = method;
    *up.uri_mut() = up_uri;
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
    strip_hop_by_hop(&mut rp.headers);
    Response::from_parts(rp, rb.boxed())
}
