//! Starts a whole Console (database, CA, gRPC and HTTP servers) on listeners the caller bound,
//! so `main` and the tests run exactly the same code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bundle::InstallBundle;
use crate::grpc::{self, GrpcState};
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::pki::{CertAuthority, PkiError};
use crate::policy_feed::PolicyFeed;
use crate::store::{EventWriter, Store, StoreError, TokenKind};
use crate::web::{self, WebState};

/// Why the Console could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("creating data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("HTTPS listener: {0}")]
    HttpTls(#[from] crate::listen::TlsFilesError),
    #[error("invalid Console address: {0}")]
    ConsoleAddr(#[from] crate::bundle::AddrError),
}

/// Settings of a running Console.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`--database-url`); `None`: the SQLite database in `data_dir`.
    pub database_url: Option<String>,
    pub sans: Vec<String>,
    pub heartbeat_interval: Duration,
    pub defender_retention: Duration,
    pub client_cert_validity: Duration,
    pub admin_password: Option<String>,
}

/// The Console's network edge: connection caps and timeouts of both listeners, HTTPS on the
/// UI/API listener, cookie security. [`start`] uses the defaults.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub http: crate::listen::ListenerLimits,
    pub grpc: crate::listen::ListenerLimits,
    /// The URL operators reach the UI at (`--public-url`); `https://…` marks cookies `Secure`
    /// (a TLS-terminating proxy in front of a plain HTTP listener).
    pub public_url: Option<String>,
    /// Certificate chain and key (PEM files) to serve the UI/API over HTTPS directly.
    pub http_tls: Option<(PathBuf, PathBuf)>,
    /// Serve the UI/API over HTTPS with a certificate from the Console's own CA for these host
    /// names or IPs (issued at every start; browsers must trust the CA, `ca.pem`). Ignored when
    /// `http_tls` is given.
    pub http_tls_ca_hosts: Vec<String>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            http: crate::listen::ListenerLimits::http_default(),
            grpc: crate::listen::ListenerLimits::grpc_default(),
            public_url: None,
            http_tls: None,
            http_tls_ca_hosts: Vec::new(),
        }
    }
}

/// A started Console.
pub struct RunningConsole {
    /// This Console's id among replicas of one database (sessions' `console_instance`, the
    /// webhook leases' holder).
    pub console_instance: String,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The admin password when it was generated at this first start (print it once).
    pub generated_admin_password: Option<String>,
    pub store: Store,
    /// The runtime policy feed (publish a saved version to push it to every stream).
    pub policy: PolicyFeed,
    /// Live streams, rate limits, decommissioning and retention figures.
    pub lifecycle: Arc<Lifecycle>,
    /// Connection counters of both listeners (also on `/metrics`).
    pub edge: Arc<crate::listen::EdgeStats>,
    shutdown: watch::Sender<bool>,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<std::io::Result<()>>,
    /// Audit webhook forwarders ([`RunningConsole::forward_audits`]).
    webhooks: Vec<JoinHandle<()>>,
}

/// SANs every server certificate carries, so local Defenders can always connect.
pub const DEFAULT_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Opens the data directory: creates it, the CA and the database when missing. The directory
/// is made 0700 and the database files 0600 (they hold the CA key, password and token hashes,
/// and everything Defenders reported), whatever the umask.
///
/// With `database_url` (PostgreSQL) the database is that one and the CA lives in it
/// (`console_pki`): the first Console to start on the database creates it, every replica after
/// uses the same, so Defenders trust whichever replica answers. The data directory then holds
/// only the public `ca.pem`.
pub async fn open_data_dir(
    dir: &Path,
    database_url: Option<&str>,
) -> Result<(Store, CertAuthority), ServerError> {
    let data_dir_err = |source| ServerError::DataDir {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(data_dir_err)?;
    if let Err(e) = restrict(dir, 0o700) {
        // A directory owned by another user (a mounted volume) cannot be chmod-ed by us; the
        // files in it still are private.
        tracing::warn!(path = %dir.display(), error = %e, "could not make the data directory 0700");
    }
    if let Some(url) = database_url {
        let store = Store::connect_postgres(url).await?;
        let (cert_pem, key_pem) = CertAuthority::generate()?;
        let (cert_pem, key_pem) = store.shared_ca(&cert_pem, &key_pem).await?;
        let ca = CertAuthority::from_pem(&cert_pem, &key_pem)?;
        crate::pki::write_public(&dir.join("ca.pem"), &cert_pem)?;
        return Ok((store, ca));
    }
    let db = dir.join(crate::store::DB_FILE);
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600 before SQLite opens it; SQLite gives its -wal and -shm files the
        // database file's mode.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&db)
            .map_err(data_dir_err)?;
    }
    let ca = CertAuthority::load_or_create(dir)?;
    let store = Store::open(dir).await?;
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("{}{suffix}", crate::store::DB_FILE));
        if path.exists() {
            restrict(&path, 0o600).map_err(data_dir_err)?;
        }
    }
    Ok((store, ca))
}

/// Sets `path`'s permission bits to `mode`.
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Creates an enrollment token and returns the install bundle for it. `console_addr` is
/// `host:port`, or several comma-separated (Console replicas; see
/// [`crate::bundle::parse_console_addrs`]), checked before anything is created. The token
/// expires after `expires_in`, or [`crate::store::DEFAULT_ENROLLMENT_TTL`] when `None`.
pub async fn create_bundle(
    dir: &Path,
    database_url: Option<&str>,
    console_addr: &str,
    description: &str,
    expires_in: Option<Duration>,
) -> Result<InstallBundle, ServerError> {
    let addrs = crate::bundle::parse_console_addrs(console_addr)?;
    let (store, ca) = open_data_dir(dir, database_url).await?;
    // Enrollment tokens always expire: a leaked bundle stops working by itself.
    let ttl = expires_in.unwrap_or(crate::store::DEFAULT_ENROLLMENT_TTL);
    let expires_at = Some(
        crate::store::now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
    );
    let token = store
        .create_token(TokenKind::Enrollment, description, expires_at)
        .await?;
    Ok(InstallBundle::new(&addrs, ca.cert_pem(), token))
}

/// Starts the Console on already-bound listeners, with the default lifecycle settings and the
/// default [`EdgeConfig`].
pub async fn start(
    cfg: ServeConfig,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
) -> Result<RunningConsole, ServerError> {
    start_full(
        cfg,
        LifecycleConfig::default(),
        EdgeConfig::default(),
        grpc_listener,
        http_listener,
    )
    .await
}

/// Starts the Console on already-bound listeners with the given lifecycle settings (rate
/// limits, retention, token life) and the default [`EdgeConfig`].
pub async fn start_with(
    cfg: ServeConfig,
    lifecycle: LifecycleConfig,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
) -> Result<RunningConsole, ServerError> {
    start_full(
        cfg,
        lifecycle,
        EdgeConfig::default(),
        grpc_listener,
        http_listener,
    )
    .await
}

/// Starts the Console on already-bound listeners with the given network edge.
pub async fn start_with_edge(
    cfg: ServeConfig,
    edge: EdgeConfig,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
) -> Result<RunningConsole, ServerError> {
    start_full(
        cfg,
        LifecycleConfig::default(),
        edge,
        grpc_listener,
        http_listener,
    )
    .await
}

/// Starts the Console on already-bound listeners with the given lifecycle settings and edge.
pub async fn start_full(
    cfg: ServeConfig,
    lifecycle: LifecycleConfig,
    edge: EdgeConfig,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
) -> Result<RunningConsole, ServerError> {
    let lifecycle = Arc::new(Lifecycle::new(lifecycle));
    let (store, ca) = open_data_dir(&cfg.data_dir, cfg.database_url.as_deref()).await?;
    let tls = match &edge.http_tls {
        Some((cert, key)) => Some(crate::listen::tls_acceptor(cert, key)?),
        None if !edge.http_tls_ca_hosts.is_empty() => {
            let id = ca.server_identity(&edge.http_tls_ca_hosts)?;
            Some(
                crate::listen::tls_acceptor_from_pem(id.cert_pem.as_bytes(), id.key_pem.as_bytes())
                    .map_err(crate::listen::TlsFilesError::Invalid)?,
            )
        }
        None => None,
    };
    let secure_cookies = tls.is_some()
        || edge
            .public_url
            .as_deref()
            .is_some_and(|u| u.to_ascii_lowercase().starts_with("https://"));
    let edge_stats = Arc::new(crate::listen::EdgeStats::default());
    let generated_admin_password = store.ensure_admin(cfg.admin_password.as_deref()).await?;
    let mut sans: Vec<String> = DEFAULT_SANS.iter().map(|s| s.to_string()).collect();
    for s in &cfg.sans {
        if !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    let identity = ca.server_identity(&sans)?;
    let grpc_addr = grpc_listener.local_addr().map_err(ServerError::Http)?;
    let http_addr = http_listener.local_addr().map_err(ServerError::Http)?;
    let (shutdown, watch_rx) = watch::channel(false);
    let policy = PolicyFeed::new(store.current_policy().await?.as_ref());
    tokio::spawn(
        policy
            .clone()
            .follow(store.clone(), wait_for(watch_rx.clone())),
    );
    let waas = PolicyFeed::of_kind(
        crate::policy_feed::PolicyKind::Waas,
        store.current_waas_policy().await?.as_ref(),
    );
    tokio::spawn(
        waas.clone()
            .follow(store.clone(), wait_for(watch_rx.clone())),
    );
    let ca_pem: Arc<str> = Arc::from(ca.cert_pem());

    let console_instance = crate::secrets::new_id();
    let grpc_state = Arc::new(GrpcState {
        store: store.clone(),
        writer: EventWriter::spawn(store.clone()),
        heartbeats: crate::store::heartbeats::HeartbeatWriter::spawn(store.clone()),
        ca: Arc::new(ca),
        console_instance: console_instance.clone(),
        heartbeat_interval: cfg.heartbeat_interval,
        client_cert_validity: cfg.client_cert_validity,
        stopping: watch_rx.clone(),
        policy: policy.clone(),
        waas: waas.clone(),
        lifecycle: lifecycle.clone(),
    });
    tokio::spawn(crate::lifecycle::run_retention(
        store.clone(),
        lifecycle.clone(),
        watch_rx.clone(),
    ));
    tokio::spawn(crate::lifecycle::watch_decommissions(
        store.clone(),
        lifecycle.clone(),
        watch_rx.clone(),
    ));
    let grpc = tokio::spawn(grpc::serve(
        grpc_listener,
        grpc_state,
        identity,
        edge.grpc,
        edge_stats.clone(),
        wait_for(watch_rx.clone()),
    ));
    let web_state = WebState {
        store: store.clone(),
        defender_retention: cfg.defender_retention,
        ca_pem,
        grpc_port: grpc_addr.port(),
        sans: Arc::from(sans.clone()),
        policy: policy.clone(),
        waas: waas.clone(),
        lifecycle: lifecycle.clone(),
        edge: edge_stats.clone(),
    };
    let http_tls = tls.is_some();
    let http_edge = web::HttpEdge {
        limits: edge.http,
        tls,
        secure_cookies,
    };
    let http = tokio::spawn(web::serve(
        http_listener,
        web_state,
        http_edge,
        wait_for(watch_rx),
    ));
    tracing::info!(
        %grpc_addr,
        %http_addr,
        sans = ?sans,
        http_max_connections = edge.http.max_connections,
        grpc_max_connections = edge.grpc.max_connections,
        https = http_tls,
        "console started"
    );
    Ok(RunningConsole {
        console_instance,
        grpc_addr,
        http_addr,
        generated_admin_password,
        store,
        policy,
        lifecycle,
        edge: edge_stats,
        shutdown,
        grpc,
        http,
        webhooks: Vec::new(),
    })
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl RunningConsole {
    /// Asks both servers to stop.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Starts forwarding runtime audits to `targets` (`serve --audit-webhook`), one forwarder
    /// per URL, until the Console stops. Returns once every new webhook's cursor exists, so
    /// every audit stored from then on is forwarded. See [`crate::webhook`].
    pub async fn forward_audits(
        &mut self,
        targets: Vec<crate::webhook::Target>,
        timing: crate::webhook::Timing,
    ) -> Result<(), crate::webhook::StartError> {
        let handles = crate::webhook::start(
            self.store.clone(),
            &self.console_instance,
            targets,
            timing,
            self.shutdown.subscribe(),
        )
        .await?;
        self.webhooks.extend(handles);
        Ok(())
    }

    /// Stops abruptly, as a crash would: open streams are cut, not closed.
    pub fn abort(self) {
        self.grpc.abort();
        self.http.abort();
        for w in &self.webhooks {
            w.abort();
        }
    }

    /// Waits until both servers (and the audit forwarders) have stopped.
    pub async fn wait(self) -> Result<(), ServerError> {
        for w in self.webhooks {
            let _ = w.await;
        }
        let grpc = self.grpc.await;
        let http = self.http.await;
        if let Ok(Err(e)) = grpc {
            return Err(e.into());
        }
        if let Ok(Err(e)) = http {
            return Err(ServerError::Http(e));
        }
        Ok(())
    }
}
