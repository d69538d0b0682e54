//! WAAS: the Defender as a reverse proxy in front of the application.
//!
//! `defender run --waas LISTEN=UPSTREAM` (and `fargate sidecar --waas`) listens on LISTEN and
//! forwards to UPSTREAM (the app on localhost: every container of a task shares the network
//! namespace). Each request head and at most `inspect_body_bytes` of its body are judged by
//! [`defender_waas`] under the WAAS policy pushed by the Console; findings become `WaasEvent`s on
//! the spool, like every other event.
//!
//! Protocols: HTTP/1.1 (keep-alive, chunked) and HTTP/2 cleartext (h2c with prior knowledge)
//! from clients; HTTP/1.1 with a pooled keep-alive client to the app. TLS is not terminated
//! here and cannot be passed through (a proxy that inspects must see plaintext): on AWS the
//! load balancer terminates TLS and talks HTTP to the task. WebSocket upgrades are inspected as
//! requests, then the two upgraded connections are spliced.

mod body;
mod proxy;
mod tap;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use defender_proto::v1::Policy;
use defender_waas::WaasPolicy;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::observe::EventSink;

pub use proxy::{Proxy, Stats};

/// One `LISTEN=UPSTREAM` pair from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaasSpec {
    /// Where clients connect (`0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// Where the app listens (`127.0.0.1:80`).
    pub upstream: SocketAddr,
}

impl FromStr for WaasSpec {
    type Err = String;

    /// Parses `LISTEN=UPSTREAM`, each `IP:PORT` (`0.0.0.0:8080=127.0.0.1:80`); a bare port
    /// means `0.0.0.0:PORT` for LISTEN and `127.0.0.1:PORT` for UPSTREAM.
    fn from_str(s: &str) -> Result<Self, String> {
        let (l, u) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: expected LISTEN=UPSTREAM, e.g. 0.0.0.0:8080=127.0.0.1:80")
        })?;
        let addr = |v: &str, default_ip: &str| -> Result<SocketAddr, String> {
            let v = v.trim();
            if let Ok(port) = v.parse::<u16>() {
                return format!("{default_ip}:{port}")
                    .parse()
                    .map_err(|e| format!("{v:?}: {e}"));
            }
            v.parse()
                .map_err(|_| format!("{v:?} is not IP:PORT (e.g. 127.0.0.1:80)"))
        };
        Ok(WaasSpec {
            listen: addr(l, "0.0.0.0")?,
            upstream: addr(u, "127.0.0.1")?,
        })
    }
}

/// An event sink set once the Defender's spool is open: the proxy starts with the app (it must
/// forward even when the Defender cannot protect), events before that are counted and dropped
/// (logged once: a log line per event would cost more than the proxying).
#[derive(Default)]
pub struct LateSink(
    std::sync::OnceLock<Arc<dyn EventSink>>,
    std::sync::atomic::AtomicU64,
);

impl LateSink {
    /// Sets the real sink (later calls are ignored).
    pub fn set(&self, sink: Arc<dyn EventSink>) {
        let _ = self.0.set(sink);
    }
}

impl EventSink for LateSink {
    fn push_event(&self, event: defender_proto::v1::Event) -> Option<u64> {
        match self.0.get() {
            Some(s) => s.push_event(event),
            None => {
                if self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        "WAAS events are dropped until the Defender has a spool (it has none: \
                         no install bundle or the spool failed)"
                    );
                }
                None
            }
        }
    }
}

/// Limits of the proxy that are not policy (they protect the Defender itself).
#[derive(Debug, Clone)]
pub struct ProxyLimits {
    /// Most client connections open at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A client must send a complete request head within this (slow-loris bound).
    pub header_read_timeout: Duration,
    /// A client must send the inspected body prefix within this.
    pub body_read_timeout: Duration,
    /// Most WAAS events per second (beyond: counted as suppressed, the verdict still applies).
    pub max_events_per_second: u32,
    /// Makes every inspection fail (panic) so tests can check fail-open and fail-closed; never
    /// set outside tests (no flag or variable sets it).
    #[doc(hidden)]
    pub fail_inspection_for_tests: bool,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        ProxyLimits {
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_events_per_second: 200,
            fail_inspection_for_tests: false,
        }
    }
}

/// Binds every spec and starts its proxy; a spec whose address cannot be bound is logged and
/// skipped (the Defender and the app keep running). `policy` follows the Console's WAAS
/// policy; `saved` is where the last valid one is kept across restarts.
pub async fn start(
    specs: &[WaasSpec],
    sink: Arc<dyn EventSink>,
    policy: watch::Receiver<Option<Policy>>,
    saved: Option<PathBuf>,
) -> Vec<Proxy> {
    let initial = saved
        .as_deref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|j| WaasPolicy::from_json(&j).ok())
        .unwrap_or_default();
    let mut out = Vec::new();
    for spec in specs {
        match TcpListener::bind(spec.listen).await {
            Ok(l) => {
                tracing::info!(listen = %spec.listen, upstream = %spec.upstream, "WAAS proxy listening");
                let p = Proxy::start(
                    l,
                    spec.upstream,
                    initial.clone(),
                    sink.clone(),
                    ProxyLimits::default(),
                );
                follow_policy(p.clone(), policy.clone(), saved.clone());
                out.push(p);
            }
            Err(e) => tracing::error!(listen = %spec.listen, "WAAS proxy cannot listen: {e}"),
        }
    }
    out
}

/// Applies every WAAS policy version received; an invalid one is refused (logged) and the
/// previous stays in force.
pub fn follow_policy(
    proxy: Proxy,
    mut rx: watch::Receiver<Option<Policy>>,
    saved: Option<PathBuf>,
) {
    tokio::spawn(async move {
        loop {
            let p = rx.borrow_and_update().clone();
            if let Some(p) = p {
                match WaasPolicy::from_json(&p.rules_json) {
                    Ok(w) => {
                        tracing::info!(version = p.version, "WAAS policy applied");
                        proxy.set_policy(w);
                        if let Some(path) = &saved {
                            let tmp = path.with_extension("tmp");
                            if std::fs::write(&tmp, &p.rules_json).is_ok() {
                                let _ = std::fs::rename(&tmp, path);
                            }
                        }
                    }
                    Err(errs) => tracing::error!(
                        version = p.version,
                        "WAAS policy refused: {}",
                        errs.iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        let s: WaasSpec = "0.0.0.0:8080=127.0.0.1:80".parse().unwrap();
        assert_eq!(s.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.upstream, "127.0.0.1:80".parse().unwrap());
        let s: WaasSpec = "8080=3000".parse().unwrap();
        assert_eq!(s.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.upstream, "127.0.0.1:3000".parse().unwrap());
        assert!("8080".parse::<WaasSpec>().is_err());
        assert!("a=b".parse::<WaasSpec>().is_err());
    }
}
