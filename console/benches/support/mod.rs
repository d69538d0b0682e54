//! What the Console benchmarks share: a Console on 127.0.0.1 port 0 with its data in a
//! temporary directory, and an install bundle for it.

use std::path::Path;
use std::time::Duration;

use defender_console::bundle::InstallBundle;
use defender_console::server::{self, RunningConsole, ServeConfig};
use tokio::net::TcpListener;

/// Starts a Console whose data directory is `dir/console`, heartbeats every `heartbeat`, admin
/// password `password`. Panics on failure (a benchmark has nothing to measure then).
pub async fn start_console(dir: &Path, heartbeat: Duration, password: &str) -> RunningConsole {
    let cfg = ServeConfig {
        data_dir: dir.join("console"),
        sans: vec![],
        heartbeat_interval: heartbeat,
        defender_retention: Duration::from_secs(3600),
        client_cert_validity: Duration::from_secs(3600),
        admin_password: Some(password.into()),
    };
    let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    server::start(cfg, grpc, http).await.expect("console")
}

/// An install bundle (enrollment token included) for the Console started in `dir`.
#[allow(dead_code)] // not every benchmark enrolls real Defenders
pub async fn bundle(dir: &Path, console: &RunningConsole) -> InstallBundle {
    server::create_bundle(
        &dir.join("console"),
        &format!("127.0.0.1:{}", console.grpc_addr.port()),
        "bench",
        None,
    )
    .await
    .expect("bundle")
}
