//! The Console's two TCP listeners under hostile load: a connection cap per listener (a
//! connection above it is refused at once, counted on `/metrics` and logged once per minute),
//! accept errors (`EMFILE`, `ENFILE`, …) backed off and logged instead of retried in a busy
//! loop, header and body read timeouts on the HTTP listener (a client that sends half a request
//! and waits is cut), optional HTTPS on that listener, and `RLIMIT_NOFILE` raised at start with
//! descriptors reserved for the database and files.
//!
//! Before this, 300 half-sent HTTP requests held 300 descriptors forever, and at the descriptor
//! limit the gRPC accept loop retried `EMFILE` at once, forever (121 % CPU, nothing logged).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tower::ServiceExt as _;

/// Descriptors kept free for the database, the CA and data files, webhooks and logs: never
/// handed to connections.
pub const RESERVED_FDS: u64 = 64;
/// Default cap of the HTTP (UI/API) listener.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: usize = 256;
/// gRPC cap used when the descriptor limit cannot be read.
pub const FALLBACK_GRPC_MAX_CONNECTIONS: usize = 4096;
/// Default time a client has to send a request's headers (and between requests on a kept-alive
/// connection).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a client has to send a request's body once its headers arrived.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits of one listener.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// Connections served at once; more are refused (HTTP: `503` and close; gRPC: close).
    pub max_connections: usize,
    /// HTTP only: time to send a request's headers (also the TLS handshake's deadline).
    pub header_timeout: Duration,
    /// HTTP only: time to send a request's body.
    pub body_timeout: Duration,
}

impl ListenerLimits {
    /// The defaults for the HTTP listener.
    pub fn http_default() -> Self {
        Self {
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }

    /// The defaults for the gRPC listener: every descriptor not reserved and not the HTTP
    /// listener's (see [`grpc_budget`]).
    pub fn grpc_default() -> Self {
        Self {
            max_connections: grpc_budget(DEFAULT_HTTP_MAX_CONNECTIONS),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// Counters of one listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections refused because the cap was reached.
    pub refused: AtomicU64,
    /// `accept()` failures (descriptor exhaustion and the like).
    pub accept_errors: AtomicU64,
    /// HTTP requests cut because their headers or body did not arrive in time.
    pub timeouts: AtomicU64,
    /// Minute (since the epoch) of the last refusal log line, so it is logged once a minute.
    last_refusal_log: AtomicU64,
}

/// Counters of both listeners.
#[derive(Debug, Default)]
pub struct EdgeStats {
    pub http: ListenerStats,
    pub grpc: ListenerStats,
}

impl ListenerStats {
    fn refused_one(&self, listener: &str, cap: usize) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let minute = crate::clock::wall_ms().max(0) as u64 / 60_000;
        if self.last_refusal_log.swap(minute, Ordering::Relaxed) != minute {
            tracing::warn!(
                listener,
                max_connections = cap,
                refused_total = total,
                "connection cap reached: refusing new connections (logged once a minute)"
            );
        }
    }
}

/// `RLIMIT_NOFILE` after [`raise_nofile_limit`], for the connection budget.
fn nofile_soft() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given; nothing else is touched.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the default soft limit, often 1024, is
/// far below what a fleet of Defenders needs), and logs the result. Returns the limit in force.
pub fn raise_nofile_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(
            "reading RLIMIT_NOFILE failed: {}",
            std::io::Error::last_os_error()
        );
        return None;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(
                "raising RLIMIT_NOFILE failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    tracing::info!(
        before,
        now = lim.rlim_cur,
        hard = lim.rlim_max,
        "file descriptor limit (RLIMIT_NOFILE)"
    );
    Some(lim.rlim_cur)
}

/// The gRPC listener's share of the descriptor limit: all of it but [`RESERVED_FDS`] and the
/// HTTP listener's cap (at least 16).
pub fn grpc_budget(http_cap: usize) -> usize {
    match nofile_soft() {
        Some(n) => n
            .saturating_sub(RESERVED_FDS)
            .saturating_sub(http_cap as u64)
            .max(16)
            .min(usize::MAX as u64) as usize,
        None => FALLBACK_GRPC_MAX_CONNECTIONS,
    }
}

/// Waits before the next `accept()` after a failure: 10 ms doubling to 1 s, so a process out
/// of descriptors neither spins nor stops serving once descriptors free up.
struct AcceptBackoff {
    delay: Duration,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self { delay: Self::FIRST }
    }

    fn reset(&mut self) {
        self.delay = Self::FIRST;
    }

    async fn failed(&mut self, listener: &str, stats: &ListenerStats, e: &std::io::Error) {
        let n = stats.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
        // Logged on the first failure of a run, then about once a minute while it lasts.
        if self.delay == Self::FIRST || n.is_multiple_of(60) {
            tracing::error!(
                listener,
                error = %e,
                accept_errors_total = n,
                retry_in_ms = self.delay.as_millis() as u64,
                "accepting a connection failed"
            );
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }
}

/// A TCP connection holding one slot of its listener's cap until it is dropped.
pub struct CappedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    stats: Arc<EdgeStats>,
}

impl Drop for CappedStream {
    fn drop(&mut self) {
        self.stats.grpc.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for CappedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// The gRPC listener's connections, capped: a stream for `Server::serve_with_incoming`. A
/// connection above the cap is closed at once (the Defender sees the Console unavailable and
/// backs off); accept errors are backed off.
pub fn grpc_incoming(
    listener: TcpListener,
    limits: ListenerLimits,
    stats: Arc<EdgeStats>,
) -> impl tokio_stream::Stream<Item = std::io::Result<CappedStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let mut backoff = AcceptBackoff::new();
        loop {
            let sock = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            match sock {
                Ok((sock, _)) => {
                    backoff.reset();
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            stats.grpc.open.fetch_add(1, Ordering::Relaxed);
                            let _ = sock.set_nodelay(true);
                            let io = CappedStream {
                                inner: sock,
                                _permit: permit,
                                stats: stats.clone(),
                            };
                            if tx.send(Ok(io)).await.is_err() {
                                return;
                            }
                        }
                        Err(_) => {
                            stats.grpc.refused_one("grpc", limits.max_connections);
                            drop(sock);
                        }
                    }
                }
                Err(e) => backoff.failed("grpc", &stats.grpc, &e).await,
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Answer to a connection above the HTTP cap.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 44\r\nRetry-After: 5\r\nConnection: close\r\n\r\nToo many connections to the Console; retry.\n";

/// Serves `app` on the HTTP listener until `shutdown` resolves: HTTP/1.1 with the header and
/// body timeouts and connection cap of `limits`, over TLS when `tls` is given.
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: ListenerLimits,
    stats: Arc<EdgeStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut backoff = AcceptBackoff::new();
    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        read_body_within(limits.body_timeout, req, next)
    }));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (sock, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                backoff.failed("http", &stats.http, &e).await;
                continue;
            }
        };
        backoff.reset();
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            stats.http.refused_one("http", limits.max_connections);
            tokio::spawn(refuse(sock));
            continue;
        };
        stats.http.open.fetch_add(1, Ordering::Relaxed);
        let app = app.clone();
        let stats = stats.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let served = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(sock), service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => {
                            let conn = builder.serve_connection(TokioIo::new(tls), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            Ok(())
                        }
                        Err(_) => {
                            stats.http.timeouts.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        }
                    }
                }
            };
            if let Err(e) = served
                && e.is_timeout()
            {
                stats.http.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            stats.http.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    drop(listener);
    // Open connections finish their request; idle ones close now.
    let _ = tokio::time::timeout(Duration::from_secs(10), graceful.shutdown()).await;
    Ok(())
}

async fn refuse(mut sock: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = sock.write_all(REFUSAL).await;
        let _ = sock.shutdown().await;
    })
    .await;
}

/// Reads a request's whole body within `timeout` before the handler runs (a `408` otherwise).
/// The body limits of the routes still apply: the largest route limit bounds what is read.
async fn read_body_within(
    timeout: Duration,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_READ_BODY)).await;
    match read {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(
                parts,
                axum::body::Body::from(bytes),
            ))
            .await
        }
        Ok(Err(_)) => (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
        )
            .into_response(),
        Err(_) => {
            let mut res = (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
            )
                .into_response();
            res.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            res
        }
    }
}

/// Most body bytes [`read_body_within`] reads: the largest route body limit (the REST API's
/// task definition and policy documents), with room to spare; each route's own limit is
/// enforced again by its extractor.
const MAX_READ_BODY: usize = 8 * 1024 * 1024;

/// Adds `Secure` to every `Set-Cookie` of a response: the Console is reached over HTTPS (its
/// own TLS listener, or `--public-url https://…` behind a TLS proxy), so the session cookie
/// must never travel in clear.
pub async fn secure_cookies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut res = next.run(req).await;
    let cookies: Vec<_> = res
        .headers()
        .get_all(axum::http::header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    if cookies.is_empty() {
        return res;
    }
    res.headers_mut().remove(axum::http::header::SET_COOKIE);
    for c in cookies {
        let secured = match c.to_str() {
            Ok(s) if !s.to_ascii_lowercase().contains("; secure") => {
                axum::http::HeaderValue::from_str(&format!("{s}; Secure")).unwrap_or(c)
            }
            _ => c,
        };
        res.headers_mut()
            .append(axum::http::header::SET_COOKIE, secured);
    }
    res
}

/// Loads the HTTPS listener's certificate chain and key (PEM files).
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, TlsFilesError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| TlsFilesError::Read {
            path: p.to_owned(),
            source,
        })
    };
    tls_acceptor_from_pem(&read(cert)?, &read(key)?)
        .map_err(|e| TlsFilesError::Invalid(format!("{} / {}: {e}", cert.display(), key.display())))
}

/// The HTTPS listener's acceptor from a PEM certificate chain and key (HTTP/1.1 only).
pub fn tls_acceptor_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| e.to_string())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Why the HTTPS listener's certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFilesError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TLS certificate or key: {0}")]
    Invalid(String),
}

/// Appends the listeners' counters to a `/metrics` answer (Prometheus text format).
pub fn write_metrics(out: &mut String, stats: &EdgeStats) {
    use std::fmt::Write as _;
    let each = |f: fn(&ListenerStats) -> &AtomicU64| {
        (
            f(&stats.http).load(Ordering::Relaxed),
            f(&stats.grpc).load(Ordering::Relaxed),
        )
    };
    for (name, kind, help, (http, grpc)) in [
        (
            "defender_console_connections_open",
            "gauge",
            "Connections open now, by listener.",
            each(|s| &s.open),
        ),
        (
            "defender_console_connections_refused_total",
            "counter",
            "Connections refused because the listener's connection cap was reached.",
            each(|s| &s.refused),
        ),
        (
            "defender_console_accept_errors_total",
            "counter",
            "accept() failures (e.g. out of file descriptors), by listener.",
            each(|s| &s.accept_errors),
        ),
        (
            "defender_console_http_timeouts_total",
            "counter",
            "HTTP connections cut because a request's headers or TLS handshake did not arrive in time.",
            each(|s| &s.timeouts),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{listener=\"http\"}} {http}\n{name}{{listener=\"grpc\"}} {grpc}"
        );
    }
}
