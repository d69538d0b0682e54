//! Forwarding of runtime audits to webhooks (`serve --audit-webhook URL`).
//!
//! One forwarder task per URL reads the audits stored after its cursor (`webhook_cursor`, the
//! rowid in `events` of the last audit it delivered), oldest first, and POSTs each as one JSON
//! document ([`audit_json`]). A delivery succeeds on a 2xx answer within
//! [`Timing::request_timeout`]; anything else is retried with capped exponential backoff and
//! jitter, and the cursor moves only after a success, one audit at a time.
//!
//! Guarantee: **at least once, in order, per URL.** An audit is delivered once even if its first
//! delivery failed; the cursor survives Console restarts. It may be delivered twice when the
//! Console stops between the receiver's 2xx and the cursor's commit: every request carries the
//! header [`AUDIT_ID_HEADER`] (`<defender id>/<seq>`, unique per audit) for receivers to
//! deduplicate. A URL seen for the first time starts at the audits stored from then on (history
//! is not replayed into a new receiver). Console replicas sharing one database may all be
//! given the same webhooks: a lease in the database (`webhook_cursor.lease_holder`) lets one
//! replica at a time forward each URL, and another takes over once the holder's lease lapses
//! ([`Timing::lease`] after it stopped renewing it). A holder renews before every read and
//! every delivery attempt and moves the cursor only while it still holds the lease, so two
//! replicas never forward the same URL at once.
//!
//! Bounded: one request in flight per URL, a request timeout, a bounded body (long attacker-
//! influenced strings are cut, see [`MAX_TEXT_CHARS`]) and at most [`MAX_RESPONSE_BYTES`] of
//! the answer read. Configured header values (credentials) and URL paths and queries (which
//! often hold a token) are never logged nor stored: logs name the URL's origin only, and the
//! cursor's key is the origin plus a SHA-256 of the whole URL.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::secrets::{random_bytes, token_hash};
use crate::store::audits::{AuditRecord, EFFECT_ALERT, EFFECT_PREVENT};
use crate::store::{Store, StoreError};

/// Header carrying the audit's unique id (`<defender id>/<seq>`), for deduplication.
pub const AUDIT_ID_HEADER: &str = "x-defender-audit-id";
/// Header carrying a WAAS event's unique id (`<defender id>/<seq>`), for deduplication.
pub const WAAS_ID_HEADER: &str = "x-defender-waas-id";

/// What a forwarder delivers: a runtime audit or a WAAS event (each stream in order, with its
/// own cursor).
enum Item<'a> {
    Audit(&'a AuditRecord),
    Waas(&'a crate::store::waas::WaasRecord),
}

impl Item<'_> {
    fn body(&self) -> Value {
        match self {
            Item::Audit(a) => audit_json(a, true),
            Item::Waas(w) => crate::web::waas::waas_json(w),
        }
    }

    fn id_header(&self) -> (&'static str, String) {
        match self {
            Item::Audit(a) => (AUDIT_ID_HEADER, format!("{}/{}", a.defender_id, a.seq)),
            Item::Waas(w) => (WAAS_ID_HEADER, format!("{}/{}", w.defender_id, w.seq)),
        }
    }

    fn who(&self) -> (&str, i64) {
        match self {
            Item::Audit(a) => (&a.defender_id, a.seq),
            Item::Waas(w) => (&w.defender_id, w.seq),
        }
    }
}
/// Longest text field of a forwarded audit (characters); longer ones are cut and marked `…`.
pub const MAX_TEXT_CHARS: usize = 4096;
/// Longest metadata field (hostname, ARNs, rule, container) of a forwarded audit (characters).
pub const MAX_NAME_CHARS: usize = 1024;
/// Most bytes of a receiver's answer read (then the connection is dropped).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Audits read from the database per round.
const BATCH: i64 = 100;

/// Why a webhook setting is refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("audit webhook URL {shown:?}: {reason}")]
    Url { shown: String, reason: String },
    #[error("audit webhook header #{index}: {reason} (expected 'Name: value')")]
    Header { index: usize, reason: String },
    #[error("TLS setup for audit webhooks failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Pace of a forwarder.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// How often the database is checked for new audits when the last check found none.
    pub poll: Duration,
    /// First wait after a failed delivery; doubles per failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Whole-request limit: connect, send, and read the answer.
    pub request_timeout: Duration,
    /// How long a replica's lease on a webhook lasts without renewal; the holder renews it
    /// before every read and at least every third of it while it waits to retry, so this is how
    /// long the others wait after the holder died (a Console that stops hands it back).
    pub lease: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
        }
    }
}

/// One webhook: where audits go and with which extra headers.
#[derive(Clone)]
pub struct Target {
    uri: Uri,
    headers: HeaderMap,
    /// `scheme://host:port`, the only part of the URL ever logged.
    origin: String,
    /// Key of its row in `webhook_cursor`: the origin and a SHA-256 of the whole URL.
    cursor_key: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("origin", &self.origin)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// `scheme://host:port` of the URL (what logs show).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Key of this webhook's cursor in `webhook_cursor.url`.
    pub fn cursor_key(&self) -> &str {
        &self.cursor_key
    }
}

/// Checks and parses webhook URLs (http or https, a host, no credentials in the URL) and the
/// `Name: value` headers sent to every one of them. Empty entries are skipped.
pub fn targets(urls: &[String], headers: &[String]) -> Result<Vec<Target>, WebhookError> {
    let mut map = HeaderMap::new();
    for (i, h) in headers.iter().enumerate() {
        if h.trim().is_empty() {
            continue;
        }
        let index = i + 1;
        let (name, value) = h.split_once(':').ok_or_else(|| WebhookError::Header {
            index,
            reason: "no ':' between name and value".into(),
        })?;
        let name =
            HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| WebhookError::Header {
                index,
                reason: "invalid header name".into(),
            })?;
        if name == CONTENT_TYPE || name == hyper::header::HOST || name == AUDIT_ID_HEADER {
            return Err(WebhookError::Header {
                index,
                reason: format!("{name} is set by the Console"),
            });
        }
        // The value is a secret: never part of an error message.
        let mut value = HeaderValue::from_str(value.trim()).map_err(|_| WebhookError::Header {
            index,
            reason: "invalid characters in the value".into(),
        })?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    let mut out: Vec<Target> = Vec::new();
    for url in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
        let target = parse_target(url, &map)?;
        if !out.iter().any(|t| t.cursor_key == target.cursor_key) {
            out.push(target);
        }
    }
    Ok(out)
}

fn parse_target(url: &str, headers: &HeaderMap) -> Result<Target, WebhookError> {
    let refuse = |reason: &str| WebhookError::Url {
        shown: shown_url(url),
        reason: reason.to_owned(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|_| refuse("not a URL (expected http://host[:port]/path or https://…)"))?;
    let scheme = match uri.scheme_str() {
        Some(s @ ("http" | "https")) => s.to_owned(),
        _ => return Err(refuse("the scheme must be http or https")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| refuse("the URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(refuse(
            "credentials in the URL are not supported; send them with --audit-webhook-header",
        ));
    }
    if authority.host().is_empty() {
        return Err(refuse("the URL has no host"));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let origin = format!("{scheme}://{}:{port}", authority.host());
    let cursor_key = format!("{origin} sha256={}", token_hash(url));
    Ok(Target {
        uri,
        headers: headers.clone(),
        origin,
        cursor_key,
    })
}

/// A URL as error messages may show it: scheme and host only.
fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = host.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}/…")
        }
        None => "(not a URL)".to_owned(),
    }
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// An HTTP/1 client for http and https URLs: rustls with the ring provider, the webpki
/// (Mozilla) roots.
fn client() -> Result<HttpsClient, WebhookError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(https))
}

/// `text` cut to `max` characters, marked with `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// RFC 3339 UTC of unix milliseconds.
fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// The name of an audit effect: `alert`, `prevent`, or `unspecified`.
pub fn effect_name(effect: i64) -> &'static str {
    match effect {
        EFFECT_ALERT => "alert",
        EFFECT_PREVENT => "prevent",
        _ => "unspecified",
    }
}

/// An audit as forwarded (and as `/api/v1/audits` lists it):
/// `{"defender": {id, hostname, family, cluster, task_arn}, "audit": {seq, time, container,
/// rule, effect, message, pid, subject_seq}}`. With `bound`, text fields are cut to
/// [`MAX_NAME_CHARS`] / [`MAX_TEXT_CHARS`] characters. Values are plain strings, not escaped
/// for any markup: receivers that render them must escape them.
pub fn audit_json(a: &AuditRecord, bound: bool) -> Value {
    let name = |s: &str| {
        if bound {
            bounded(s, MAX_NAME_CHARS)
        } else {
            s.to_owned()
        }
    };
    let text = |s: &str| {
        if bound {
            bounded(s, MAX_TEXT_CHARS)
        } else {
            s.to_owned()
        }
    };
    json!({
        "defender": {
            "id": name(&a.defender_id),
            "hostname": name(&a.hostname),
            "family": name(&a.family),
            "cluster": name(&a.cluster),
            "task_arn": name(&a.task_arn),
        },
        "audit": {
            "seq": a.seq,
            "time": rfc3339(a.time_ms),
            "container": name(&a.container),
            "rule": name(&a.rule),
            "effect": effect_name(a.effect),
            "message": text(&a.message),
            "pid": a.pid,
            "subject_seq": a.subject_seq,
        },
    })
}

/// Starts one forwarder per target, each until `stop` turns true. Creates the cursors of new
/// targets first (at the newest stored audit), so every audit stored after this returns is
/// forwarded.
pub async fn start(
    store: Store,
    instance: &str,
    targets: Vec<Target>,
    timing: Timing,
    stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let client = client()?;
    store.sync_audit_index().await?;
    let newest = store.last_audit_rowid().await?;
    let newest_waas = store.last_waas_rowid().await?;
    let mut handles = Vec::with_capacity(targets.len());
    for target in targets {
        let cursor = store
            .init_webhook_cursor(&target.cursor_key, newest)
            .await?;
        let waas_cursor = store
            .init_webhook_cursor(&waas_key(&target.cursor_key), newest_waas)
            .await?;
        tracing::info!(webhook = %target.origin, cursor, waas_cursor, "forwarding runtime audits and WAAS events");
        let forwarder = Forwarder {
            store: store.clone(),
            client: client.clone(),
            target: Arc::new(target),
            timing,
            cursor,
            waas_cursor,
            instance: instance.to_owned(),
            leased: false,
        };
        handles.push(tokio::spawn(forwarder.run(stop.clone())));
    }
    Ok(handles)
}

/// Why the forwarders could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rustls::Error> for StartError {
    fn from(e: rustls::Error) -> Self {
        Self::Webhook(WebhookError::Tls(e))
    }
}

struct Forwarder {
    store: Store,
    client: HttpsClient,
    target: Arc<Target>,
    timing: Timing,
    /// Rowid of the last delivered audit (as committed in `webhook_cursor`).
    cursor: i64,
    /// Rowid of the last delivered WAAS event (committed under [`waas_key`]).
    waas_cursor: i64,
    /// This Console replica's id: the holder name of its leases.
    instance: String,
    /// Whether this replica held the lease at its last renewal.
    leased: bool,
}

/// The `webhook_cursor` key of a target's WAAS stream.
fn waas_key(cursor_key: &str) -> String {
    format!("waas {cursor_key}")
}

/// Resolves when `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Waits `d`; false when `stop` turned true first.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = stopped(stop) => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// `d` plus or minus up to a fifth, at random.
fn jitter(d: Duration) -> Duration {
    let r = u32::from_le_bytes(random_bytes::<4>());
    let fraction = f64::from(r) / f64::from(u32::MAX); // 0..=1
    d.mul_f64(0.8 + 0.4 * fraction)
}

impl Forwarder {
    /// Forwards until `stop`, then hands the lease back so that a replica (or this Console
    /// restarted) takes the webhook over at once instead of after the lease lapses.
    async fn run(mut self, stop: watch::Receiver<bool>) {
        self.forward(stop).await;
        if self.leased
            && let Err(e) = self
                .store
                .release_webhook_lease(&self.target.cursor_key, &self.instance)
                .await
        {
            tracing::warn!(webhook = %self.target.origin, error = %e, "releasing the webhook lease failed");
        }
    }

    async fn forward(&mut self, mut stop: watch::Receiver<bool>) {
        let origin = self.target.origin.clone();
        let mut read_backoff = self.timing.backoff_initial;
        loop {
            if *stop.borrow() {
                return;
            }
            // Renewing the lease is the first read: an unreachable database fails both alike.
            let read = async {
                if !self.renew_lease().await? {
                    return Ok(None);
                }
                let a = self.store.audits_after(self.cursor, BATCH).await?;
                let w = self.store.waas_after(self.waas_cursor, BATCH).await?;
                Ok::<_, crate::store::StoreError>(Some((a, w)))
            };
            let (batch, waas) = match read.await {
                Ok(Some(b)) => {
                    read_backoff = self.timing.backoff_initial;
                    b
                }
                Ok(None) => {
                    // Another replica holds the lease and forwards this webhook.
                    if !pause(&mut stop, self.timing.poll).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(webhook = %origin, error = %e, "reading audits to forward failed");
                    if !pause(&mut stop, jitter(read_backoff)).await {
                        return;
                    }
                    read_backoff = (read_backoff * 2).min(self.timing.backoff_max);
                    continue;
                }
            };
            if batch.is_empty() && waas.is_empty() {
                if !pause(&mut stop, self.timing.poll).await {
                    return;
                }
                continue;
            }
            let items = batch
                .iter()
                .map(Item::Audit)
                .chain(waas.iter().map(Item::Waas));
            for item in items {
                let delivered = tokio::select! {
                    _ = stopped(&mut stop) => return,
                    d = self.deliver_until_accepted(&item) => d,
                };
                if !delivered {
                    break; // the lease went to another replica: it delivers from the cursor
                }
                let (waas, rowid) = match &item {
                    Item::Audit(a) => (false, a.id),
                    Item::Waas(w) => (true, w.id),
                };
                match self.commit(waas, rowid, &mut stop).await {
                    Some(true) => {}
                    Some(false) => break,
                    None => return,
                }
            }
        }
    }

    /// Takes or renews this replica's lease on the webhook; when it newly gets it (first start
    /// or after another replica stopped), reloads the cursors the previous holder moved.
    async fn renew_lease(&mut self) -> Result<bool, crate::store::StoreError> {
        let ttl = i64::try_from(self.timing.lease.as_millis()).unwrap_or(i64::MAX);
        let held = self
            .store
            .take_webhook_lease(&self.target.cursor_key, &self.instance, ttl)
            .await?;
        if held && !self.leased {
            let key = &self.target.cursor_key;
            self.cursor = self.store.webhook_cursor(key).await?.unwrap_or(self.cursor);
            self.waas_cursor = self
                .store
                .webhook_cursor(&waas_key(key))
                .await?
                .unwrap_or(self.waas_cursor);
            tracing::info!(webhook = %self.target.origin, cursor = self.cursor, waas_cursor = self.waas_cursor, "this Console replica forwards the webhook");
        }
        self.leased = held;
        Ok(held)
    }

    /// Posts `audit` until a 2xx, waiting with capped exponential backoff and jitter between
    /// tries, renewing the lease before each try: true once delivered, false when the lease
    /// went to another replica. Cancelled (by the caller's `select!`) when the Console stops.
    async fn deliver_until_accepted(&mut self, audit: &Item<'_>) -> bool {
        let (defender_id, seq) = audit.who();
        let mut backoff = self.timing.backoff_initial;
        let mut attempt: u32 = 1;
        loop {
            match self.post(audit).await {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(webhook = %self.target.origin, defender_id = %defender_id, seq, attempt, "delivered after retries");
                    }
                    return true;
                }
                Err(why) => {
                    let wait = jitter(backoff);
                    tracing::warn!(
                        webhook = %self.target.origin,
                        defender_id = %defender_id,
                        seq,
                        attempt,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "audit webhook delivery failed: {why}"
                    );
                    // Wait in slices, renewing the lease, so a long backoff does not let it lapse
                    // and another replica deliver the same audit meanwhile.
                    let until = tokio::time::Instant::now() + wait;
                    while tokio::time::Instant::now() < until {
                        tokio::time::sleep_until(
                            until.min(tokio::time::Instant::now() + self.timing.lease / 3),
                        )
                        .await;
                        if !matches!(self.renew_lease().await, Ok(true)) {
                            return false;
                        }
                    }
                    backoff = (backoff * 2).min(self.timing.backoff_max);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Saves the cursor after a delivery, retrying until the database takes it: `Some(true)`
    /// saved, `Some(false)` not saved because another replica holds the lease now, `None` when
    /// the Console stops first (the audit is then delivered again after the restart).
    async fn commit(
        &mut self,
        waas: bool,
        rowid: i64,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<bool> {
        let mut backoff = self.timing.backoff_initial;
        let key = if waas {
            waas_key(&self.target.cursor_key)
        } else {
            self.target.cursor_key.clone()
        };
        loop {
            match self
                .store
                .set_webhook_cursor(&key, &self.target.cursor_key, &self.instance, rowid)
                .await
            {
                Ok(false) => {
                    self.leased = false;
                    return Some(false);
                }
                Ok(true) => {
                    if waas {
                        self.waas_cursor = rowid;
                    } else {
                        self.cursor = rowid;
                    }
                    return Some(true);
                }
                Err(e) => {
                    tracing::warn!(webhook = %self.target.origin, error = %e, "saving the webhook cursor failed");
                    if !pause(stop, jitter(backoff)).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(self.timing.backoff_max);
                }
            }
        }
    }

    /// One delivery: POST, then a 2xx within the timeout (the answer's body is read, bounded,
    /// and dropped). The error text never holds header values or the URL's path.
    async fn post(&self, audit: &Item<'_>) -> Result<(), String> {
        let body = serde_json::to_vec(&audit.body()).map_err(|e| e.to_string())?;
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.target.uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("defender-console/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("building the request: {e}"))?;
        let (id_name, id_value) = audit.id_header();
        let id = HeaderValue::from_str(&id_value)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let headers = req.headers_mut();
        headers.insert(id_name, id);
        for (name, value) in &self.target.headers {
            headers.append(name, value.clone());
        }
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| describe_client_error(&e))?;
            let status = res.status();
            // Read (bounded) so the connection can be reused; the content is not used.
            let _ = Limited::new(res.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("the receiver answered HTTP {}", status.as_u16()))
            }
        };
        match tokio::time::timeout(self.timing.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {} s",
                self.timing.request_timeout.as_secs_f32()
            )),
        }
    }
}

/// A client error with its causes (connect refused, TLS, DNS…); hyper's errors do not carry
/// the request's URL or headers.
fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn targets_accept_http_and_https_and_hide_paths() {
        let t = targets(
            &urls(&[
                "https://hooks.example.com/services/T0/B0/SECRET?x=1",
                "http://127.0.0.1:9000/audits",
                "",
            ]),
            &urls(&["Authorization: Bearer s3cret", "X-Team: sec"]),
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].origin(), "https://hooks.example.com:443");
        assert!(
            t[0].cursor_key()
                .starts_with("https://hooks.example.com:443 sha256=")
        );
        assert!(!t[0].cursor_key().contains("SECRET"));
        assert_eq!(t[1].origin(), "http://127.0.0.1:9000");
        assert_ne!(t[0].cursor_key(), t[1].cursor_key());
        let debug = format!("{:?}", t[0]);
        assert!(
            !debug.contains("s3cret") && !debug.contains("SECRET"),
            "{debug}"
        );
        assert!(t[0].headers.get("authorization").unwrap().is_sensitive());
    }

    #[test]
    fn duplicate_urls_are_one_target() {
        let t = targets(&urls(&["http://a/x", "http://a/x"]), &[]).unwrap();
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bad_urls_and_headers_are_refused_without_leaking_secrets() {
        for bad in [
            "ftp://host/x",
            "host/x",
            "http://user:pw@host/x",
            "https:///nohost",
        ] {
            let e = targets(&urls(&[bad]), &[]).unwrap_err().to_string();
            assert!(!e.contains("pw"), "{e}");
        }
        let e = targets(
            &urls(&["http://a/"]),
            &urls(&["Authorization Bearer s3cret"]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("#1") && !e.contains("s3cret"), "{e}");
        let e = targets(&urls(&["http://a/"]), &urls(&["X: a\u{7f}s3cret"]))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(targets(&urls(&["http://a/"]), &urls(&["Content-Type: text/plain"])).is_err());
    }

    #[test]
    fn text_is_bounded_by_characters() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("ééééé", 2), "éé…");
        let a = AuditRecord {
            id: 1,
            defender_id: "d".into(),
            seq: 7,
            time_ms: 1_714_521_600_000,
            container: "app".into(),
            rule: "r".repeat(5000),
            effect: EFFECT_PREVENT,
            message: "m".repeat(100_000),
            pid: 42,
            subject_seq: 6,
            hostname: "h".into(),
            task_arn: String::new(),
            family: "web".into(),
            revision: "1".into(),
            cluster: "c".into(),
        };
        let v = audit_json(&a, true);
        assert_eq!(v["audit"]["effect"], "prevent");
        assert_eq!(v["audit"]["time"], "2024-05-01T00:00:00Z");
        assert_eq!(
            v["audit"]["message"].as_str().unwrap().chars().count(),
            MAX_TEXT_CHARS + 1
        );
        assert_eq!(
            v["audit"]["rule"].as_str().unwrap().chars().count(),
            MAX_NAME_CHARS + 1
        );
        assert!(serde_json::to_vec(&v).unwrap().len() < 16 * 1024);
        let full = audit_json(&a, false);
        assert_eq!(full["audit"]["message"].as_str().unwrap().len(), 100_000);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10));
            assert!(
                j >= Duration::from_secs(8) && j <= Duration::from_secs(12),
                "{j:?}"
            );
        }
    }
}
