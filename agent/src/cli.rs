//! Command line of `defender`; every flag is also an environment variable (ECS passes config that way).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::spool::{DropPolicy, FsyncPolicy, SpoolConfig};

/// `defender`: the App-Embedded Defender.
#[derive(Debug, Parser)]
#[command(name = "defender", version, about)]
pub struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "DEFENDER_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// Output format of the logs.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Standalone mode: run ARGV under the Defender (wrapper and sidecar in one process).
    Run(RunArgs),
    /// Simulated Defenders producing synthetic events: load generator and fault-test producer.
    Simulate(SimulateArgs),
    /// Fargate modes: sidecar, app-container entrypoint wrapper, health check.
    Fargate {
        #[command(subcommand)]
        command: FargateCommand,
    },
}

/// `defender fargate …`
#[derive(Debug, Subcommand)]
pub enum FargateCommand {
    /// The task's Defender: identity, Console stream, spool, local socket for wrappers.
    Sidecar(SidecarArgs),
    /// Run ARGV (an app container's original entrypoint and command) under the Defender.
    Entrypoint(EntrypointArgs),
    /// Exit 0 when the sidecar is enrolled and connected to the Console.
    Healthcheck(HealthcheckArgs),
}

/// How a protected task is protected (set by the generated task definition).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FargateMode {
    /// App containers run under `fargate entrypoint`; the sidecar relays their events.
    Embedded,
    /// `pidMode: task`: the sidecar observes every process of the task itself.
    Sidecar,
}

impl std::fmt::Display for FargateMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FargateMode::Embedded => "embedded",
            FargateMode::Sidecar => "sidecar",
        })
    }
}

/// `fargate sidecar` options.
#[derive(Debug, Args)]
pub struct SidecarArgs {
    /// Install bundle (base64), usually from the task definition's secrets. Prefer the
    /// INSTALL_BUNDLE variable or --install-bundle-file: a flag's value shows in /proc/*/cmdline.
    #[arg(long, env = "INSTALL_BUNDLE", hide_env_values = true)]
    pub install_bundle: Option<String>,
    /// File holding the install bundle (Docker and Kubernetes secrets are files); used when
    /// INSTALL_BUNDLE is not set.
    #[arg(long, env = "INSTALL_BUNDLE_FILE")]
    pub install_bundle_file: Option<PathBuf>,
    /// Directory for the identity (private key) and the spool. Deliberately outside the
    /// `/var/lib/defender` volume, which app containers mount: they must not read the key.
    #[arg(
        long,
        env = "DEFENDER_DATA_DIR",
        default_value = "/var/lib/defender-state"
    )]
    pub data_dir: PathBuf,
    /// Unix socket between the sidecar and the app-container wrappers.
    #[arg(long, env = "DEFENDER_SOCKET", default_value = crate::local::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// `embedded` (app containers wrapped) or `sidecar` (pidMode task, observe from here).
    #[arg(long, env = "DEFENDER_MODE", default_value = "embedded")]
    pub mode: FargateMode,
    /// How often processes and sockets are polled (sidecar mode).
    #[arg(long, env = "DEFENDER_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// On SIGTERM, how long to wait for the Console to ack what is spooled.
    #[arg(long, env = "DEFENDER_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// WAAS reverse proxy in front of the app: LISTEN=UPSTREAM (e.g. 0.0.0.0:8080=127.0.0.1:80;
    /// a bare port means 0.0.0.0 / 127.0.0.1). Repeatable; comma-separated in DEFENDER_WAAS.
    #[arg(
        long,
        env = "DEFENDER_WAAS",
        value_delimiter = ',',
        value_name = "LISTEN=UPSTREAM"
    )]
    pub waas: Vec<crate::waas::WaasSpec>,
    #[command(flatten)]
    pub spool: SpoolArgs,
}

/// `fargate entrypoint` options.
#[derive(Debug, Args)]
pub struct EntrypointArgs {
    /// Unix socket of the task's sidecar.
    #[arg(long, env = "DEFENDER_SOCKET", default_value = crate::local::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// This container's name in the task definition.
    #[arg(long, env = "DEFENDER_CONTAINER_NAME", default_value = "app")]
    pub container: String,
    /// This container's image.
    #[arg(long, env = "DEFENDER_CONTAINER_IMAGE", default_value = "")]
    pub image: String,
    /// How often processes and sockets are polled.
    #[arg(long, env = "DEFENDER_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How the application's processes and connections are captured: `exact` (seccomp user
    /// notification: every exec/connect/listen/DNS query, judged before it runs; falls back to
    /// polling where the kernel refuses) or `poll` (/proc every --poll-interval).
    #[arg(long, env = "DEFENDER_CAPTURE", default_value = "exact")]
    pub capture: crate::capture::Requested,
    /// The application's command line (after `--`).
    #[arg(last = true, required = true, value_name = "ARGV")]
    pub argv: Vec<OsString>,
}

/// `fargate healthcheck` options.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Unix socket of the task's sidecar.
    #[arg(long, env = "DEFENDER_SOCKET", default_value = crate::local::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Options of the on-disk event spool.
#[derive(Debug, Args, Clone)]
pub struct SpoolArgs {
    /// Cap on the spool's disk use (e.g. 64MiB, 512KiB, or bytes).
    #[arg(long, env = "DEFENDER_SPOOL_MAX_BYTES", default_value = "64MiB", value_parser = parse_size)]
    pub spool_max_bytes: u64,
    /// What to drop when the spool is full: `oldest` or `newest`.
    #[arg(long, env = "DEFENDER_SPOOL_DROP", default_value = "oldest")]
    pub spool_drop: DropPolicy,
    /// When to fsync the spool: `always`, `never`, or an interval like `1s`.
    #[arg(long, env = "DEFENDER_SPOOL_FSYNC", default_value = "1s")]
    pub spool_fsync: FsyncPolicy,
}

impl SpoolArgs {
    /// The spool configuration these flags describe.
    pub fn config(&self) -> SpoolConfig {
        SpoolConfig {
            max_bytes: self.spool_max_bytes,
            drop_policy: self.spool_drop,
            fsync: self.spool_fsync,
            ..SpoolConfig::default()
        }
    }
}

/// `simulate` options.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Install bundle (base64) from `defender-console bundle`; prefer the INSTALL_BUNDLE
    /// variable or --install-bundle-file (a flag's value shows in /proc/*/cmdline).
    #[arg(long, env = "INSTALL_BUNDLE", hide_env_values = true)]
    pub install_bundle: Option<String>,
    /// File holding the install bundle; used when INSTALL_BUNDLE is not set.
    #[arg(long, env = "INSTALL_BUNDLE_FILE")]
    pub install_bundle_file: Option<PathBuf>,
    /// Directory holding one sub-directory (identity, spool) per simulated Defender.
    #[arg(long, env = "DEFENDER_DATA_DIR", default_value = "./defender-sim-data")]
    pub data_dir: PathBuf,
    /// Number of simulated Defenders.
    #[arg(long, default_value_t = 1)]
    pub defenders: usize,
    /// Events each simulated Defender produces.
    #[arg(long, default_value_t = 1000)]
    pub events: u64,
    /// Events per second over all Defenders (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Longest wait between reconnection attempts.
    #[arg(long, env = "DEFENDER_RECONNECT_MAX", default_value = "30s", value_parser = parse_duration)]
    pub reconnect_max: Duration,
    /// After every event is acknowledged, keep all streams open (heartbeating at the Console's
    /// interval) this long, e.g. `10m`, then exit; prints how many streams dropped meanwhile.
    /// Ctrl-C ends the hold early, with the summary.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub hold: Duration,
    #[command(flatten)]
    pub spool: SpoolArgs,
}

/// Parses `64MiB`, `512KiB`, `1GiB`, `10MB` or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 64MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(format!("invalid size unit in {s:?}: use KiB, MiB or GiB")),
    };
    Ok(n.saturating_mul(mult))
}

/// Parses `500ms`, `10s`, `5m` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    }
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Install bundle (base64) from `defender-console bundle`. Prefer the INSTALL_BUNDLE
    /// variable or --install-bundle-file: a flag's value is readable by every local user in
    /// /proc/*/cmdline (the Defender warns when this flag is used).
    #[arg(long, env = "INSTALL_BUNDLE", hide_env_values = true)]
    pub install_bundle: Option<String>,
    /// File holding the install bundle (e.g. `defender-console bundle -o FILE`, a Docker or
    /// Kubernetes secret); used when INSTALL_BUNDLE is not set.
    #[arg(long, env = "INSTALL_BUNDLE_FILE")]
    pub install_bundle_file: Option<PathBuf>,
    /// Directory for the Defender's identity and state.
    #[arg(
        long,
        env = "DEFENDER_DATA_DIR",
        default_value = "./defender-agent-data"
    )]
    pub data_dir: PathBuf,
    /// How often processes and sockets are polled.
    #[arg(long, env = "DEFENDER_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How the application's processes and connections are captured: `exact` (seccomp user
    /// notification: every exec/connect/listen/DNS query, judged before it runs; falls back to
    /// polling where the kernel refuses) or `poll` (/proc every --poll-interval).
    #[arg(long, env = "DEFENDER_CAPTURE", default_value = "exact")]
    pub capture: crate::capture::Requested,
    /// After the application exits, how long to wait for the Console to ack what is spooled.
    #[arg(long, env = "DEFENDER_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// WAAS reverse proxy in front of the app: LISTEN=UPSTREAM (e.g. 0.0.0.0:8080=127.0.0.1:80;
    /// a bare port means 0.0.0.0 / 127.0.0.1). Repeatable; comma-separated in DEFENDER_WAAS.
    #[arg(
        long,
        env = "DEFENDER_WAAS",
        value_delimiter = ',',
        value_name = "LISTEN=UPSTREAM"
    )]
    pub waas: Vec<crate::waas::WaasSpec>,
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// The application's command line (after `--`).
    #[arg(last = true, required = true, value_name = "ARGV")]
    pub argv: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
