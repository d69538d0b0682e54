//! Command line of `defender-console`; every flag is also an environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// `defender-console`: the management Console for App-Embedded Defenders.
#[derive(Debug, Parser)]
#[command(name = "defender-console", version, about)]
pub struct Cli {
    /// Log format: `text` or `json`.
    #[arg(
        long,
        env = "CONSOLE_LOG_FORMAT",
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
    /// Run the Console: gRPC for Defenders, HTTP for the UI and API.
    Serve(ServeArgs),
    /// Create an enrollment token and print the install bundle (base64) on stdout.
    Bundle(BundleArgs),
    /// Manage tokens: API tokens (for scripts) and enrollment tokens (in install bundles).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage operator accounts of the UI (`admin`).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage Defenders.
    Defender {
        #[command(subcommand)]
        command: DefenderCommand,
    },
    /// AWS Fargate: protect ECS task definitions with the Defender.
    Fargate {
        #[command(subcommand)]
        command: FargateCommand,
    },
    /// The vulnerability database (OSV records) images are matched against.
    Vulndb {
        #[command(subcommand)]
        command: VulndbCommand,
    },
}

/// `vulndb` subcommands.
#[derive(Debug, Subcommand)]
pub enum VulndbCommand {
    /// Import OSV records: JSON files, directories of them, and osv.dev's per-ecosystem
    /// `all.zip` files. Re-importing updates records in place; running images are re-matched.
    Import(VulndbImportArgs),
    /// Print what is loaded: records per ecosystem and the newest `modified`.
    Status(DataDirArgs),
}

/// `vulndb import` options.
#[derive(Debug, Args, Clone)]
pub struct VulndbImportArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Files (`.json`, `.zip`) and directories to import.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

/// Fargate subcommands.
#[derive(Debug, Subcommand)]
pub enum FargateCommand {
    /// Print a protected copy of an ECS task definition (Defender sidecar added, every container
    /// started under the Defender), ready for `aws ecs register-task-definition --cli-input-json`.
    ///
    /// The protected JSON goes to stdout; warnings and errors go to stderr. On any error nothing
    /// is printed on stdout and the exit status is non-zero.
    Protect(ProtectArgs),
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new API token for `Authorization: Bearer`.
    Create(TokenCreateArgs),
    /// List enrollment and API tokens (id, name, created, expiry, last use, state); never the
    /// tokens themselves, which only exist as hashes.
    List(TokenListArgs),
    /// Revoke tokens, by id (`enroll-3`, `api-5`, as `token list` shows) or by the token itself.
    Revoke(TokenRevokeArgs),
}

/// `token create` options.
#[derive(Debug, Args, Clone)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Name of the token, shown in `token list` and Manage > Tokens.
    #[arg(long, default_value = "cli")]
    pub name: String,
}

/// `token list` options.
#[derive(Debug, Args, Clone)]
pub struct TokenListArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Print JSON (as `GET /api/v1/tokens`) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `token revoke` options.
#[derive(Debug, Args, Clone)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Token ids (`enroll-3`, `api-5`) or tokens (`dfe_…`, `dfa_…`).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
}

/// `user` subcommands.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Set (or reset) an account's password and end its open sessions. The password is read
    /// from the terminal (twice, not echoed) or, when stdin is not a terminal, from the first
    /// line of stdin; never from the command line, where other local users could read it.
    SetPassword(UserSetPasswordArgs),
}

/// `user set-password` options.
#[derive(Debug, Args, Clone)]
pub struct UserSetPasswordArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// The account; created if it does not exist.
    #[arg(long, default_value = "admin")]
    pub username: String,
}

/// Defender subcommands.
#[derive(Debug, Subcommand)]
pub enum DefenderCommand {
    /// Decommission Defenders: refused from now on (a running Console closes their streams
    /// within seconds), they can never reconnect, renew or enroll their keys again.
    Decommission(DecommissionArgs),
}

/// `defender decommission` options.
#[derive(Debug, Args, Clone)]
pub struct DecommissionArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Defender ids (as Manage > Defenders and `GET /api/v1/defenders` show them).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
}

/// Where the Console keeps its state.
#[derive(Debug, Args, Clone)]
pub struct DataDirArgs {
    /// Directory holding the database, the CA and the server certificate.
    #[arg(long, env = "CONSOLE_DATA_DIR", default_value = "./defender-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL database to use instead of the SQLite file in the data directory
    /// (`postgres://USER:PASSWORD@HOST:5432/DB`, libpq parameters such as
    /// `?sslmode=verify-full&sslrootcert=FILE` allowed; user and password may come from
    /// `PGUSER`/`PGPASSWORD` instead). Console replicas that share one database share
    /// everything, the CA included. Keep passwords out of argv (every local user can read it):
    /// use the environment.
    #[arg(long, env = "CONSOLE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// `serve` options.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Address of the gRPC (mTLS) listener for Defenders.
    #[arg(long, env = "CONSOLE_GRPC_LISTEN", default_value = "0.0.0.0:8084")]
    pub grpc_listen: String,
    /// Address of the HTTP listener for the UI and REST API.
    #[arg(long, env = "CONSOLE_HTTP_LISTEN", default_value = "127.0.0.1:8083")]
    pub http_listen: String,
    /// Extra subject alternative names of the gRPC server certificate (DNS names or IPs).
    #[arg(long = "san", env = "CONSOLE_SAN", value_delimiter = ',')]
    pub sans: Vec<String>,
    /// Heartbeat interval told to Defenders; 3 missed heartbeats mean disconnected.
    #[arg(long, env = "CONSOLE_HEARTBEAT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long a disconnected Defender stays in Manage > Defenders.
    #[arg(long, env = "CONSOLE_DEFENDER_RETENTION", default_value = "1h", value_parser = parse_duration)]
    pub defender_retention: Duration,
    /// Lifetime of the client certificates issued to Defenders.
    #[arg(long, env = "CONSOLE_CLIENT_CERT_VALIDITY", default_value = "7d", value_parser = parse_duration)]
    pub client_cert_validity: Duration,
    /// Events received longer ago than this are deleted (in small batches that never hold
    /// up ingest).
    #[arg(long, env = "CONSOLE_EVENT_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub event_retention: Duration,
    /// Decommissioned Defenders, and Defenders disconnected for longer than this, are deleted
    /// with their sessions and events. Keep it above --client-cert-validity.
    #[arg(long, env = "CONSOLE_DEFENDER_PURGE_AFTER", default_value = "30d", value_parser = parse_duration)]
    pub defender_purge_after: Duration,
    /// Enrollments allowed with one token: `BURST:PER_SECOND` (a burst at once, then so many a
    /// second). Over it, enrollment answers RESOURCE_EXHAUSTED and Defenders retry with backoff.
    #[arg(long, env = "CONSOLE_ENROLL_LIMIT_PER_TOKEN", default_value = "100:5", value_parser = parse_rate)]
    pub enroll_limit_per_token: crate::ratelimit::Rate,
    /// Enrollment attempts allowed from one source address, `BURST:PER_SECOND` (tasks behind
    /// one NAT gateway share an address).
    #[arg(long, env = "CONSOLE_ENROLL_LIMIT_PER_SOURCE", default_value = "200:10", value_parser = parse_rate)]
    pub enroll_limit_per_source: crate::ratelimit::Rate,
    /// Password of the `admin` account on first start (otherwise one is generated and printed once).
    #[arg(long, env = "CONSOLE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Forward every new runtime audit as JSON (one POST per audit) to this http or https URL;
    /// repeatable or comma-separated. At least once, in order, retried with backoff until a 2xx.
    #[arg(
        long = "audit-webhook",
        env = "CONSOLE_AUDIT_WEBHOOK",
        value_name = "URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub audit_webhooks: Vec<String>,
    /// Header sent with every audit webhook request, as `Name: value` (e.g. `Authorization:
    /// Bearer …`); repeatable; in the environment, one per line. Never logged.
    #[arg(
        long = "audit-webhook-header",
        env = "CONSOLE_AUDIT_WEBHOOK_HEADER",
        value_name = "NAME: VALUE",
        value_delimiter = '\n',
        hide_env_values = true
    )]
    pub audit_webhook_headers: Vec<String>,
    /// Connections the UI/API listener serves at once; more are answered `503` and closed.
    #[arg(long, env = "CONSOLE_HTTP_MAX_CONNECTIONS", default_value_t = crate::listen::DEFAULT_HTTP_MAX_CONNECTIONS)]
    pub http_max_connections: usize,
    /// Connections the gRPC listener serves at once (one per Defender); more are closed.
    /// Default: the file descriptor limit less the HTTP cap and 64 reserved descriptors.
    #[arg(long, env = "CONSOLE_GRPC_MAX_CONNECTIONS")]
    pub grpc_max_connections: Option<usize>,
    /// Time an HTTP client has to send a request's headers (and the TLS handshake).
    #[arg(long, env = "CONSOLE_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,
    /// Time an HTTP client has to send a request's body.
    #[arg(long, env = "CONSOLE_HTTP_BODY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,
    /// URL operators reach the UI at, e.g. `https://console.example.com` behind a TLS proxy;
    /// with `https://`, the session cookie is marked `Secure`.
    #[arg(long, env = "CONSOLE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Serve the UI/API over HTTPS with this PEM certificate chain (needs --http-tls-key).
    #[arg(long, env = "CONSOLE_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key of --http-tls-cert.
    #[arg(long, env = "CONSOLE_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// Serve the UI/API over HTTPS with a certificate from the Console's own CA for this host
    /// name or IP (repeatable, comma-separated); browsers must trust the CA (`ca.pem` in the
    /// data directory). Without --http-tls-cert only.
    #[arg(
        long,
        env = "CONSOLE_HTTP_TLS_HOST",
        value_delimiter = ',',
        conflicts_with = "http_tls_cert"
    )]
    pub http_tls_host: Vec<String>,
}

/// `bundle` options.
#[derive(Debug, Args, Clone)]
pub struct BundleArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// `host:port` Defenders use to reach the gRPC listener; host must be a SAN of the server
    /// certificate. Several Console replicas: comma-separated (`a:8084,b:8084`, at most 16);
    /// each Defender picks one at random and fails over to the next. One load balancer name
    /// (an AWS NLB passing TCP through) needs only one.
    #[arg(long, env = "CONSOLE_ADDR", value_name = "HOST:PORT[,HOST:PORT…]")]
    pub console_addr: String,
    /// Lifetime of the enrollment token (e.g. `30d`, `12h`); default 90 days. Running
    /// Defenders renew their certificates themselves: the token only matters for enrolling.
    #[arg(long, visible_alias = "ttl", value_parser = parse_duration)]
    pub expires_in: Option<Duration>,
    /// Free text stored with the token.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Write the bundle to this file (mode 0600, replaced atomically) instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `fargate protect` options.
#[derive(Debug, Args, Clone)]
pub struct ProtectArgs {
    /// Task definition JSON (ECS console JSON tab, `describe-task-definition` output, or
    /// `register-task-definition` input); `-` reads stdin. At most 1 MiB.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Console address `host:port` handed to the sidecar as DEFENDER_CONSOLE_ADDR
    /// (informational); with --new-bundle, the address put in the bundle. Several Console
    /// replicas: comma-separated (`a:8084,b:8084`, at most 16).
    #[arg(long, env = "CONSOLE_ADDR", value_name = "HOST:PORT[,HOST:PORT…]")]
    pub console_addr: Option<String>,
    /// Image of the Defender sidecar container.
    #[arg(long, env = "DEFENDER_IMAGE", default_value = defender_taskdef::DEFAULT_DEFENDER_IMAGE)]
    pub defender_image: String,
    /// Install bundle (base64, from `defender-console bundle`) put in the sidecar as the plain
    /// INSTALL_BUNDLE environment variable. Without a bundle option, add INSTALL_BUNDLE yourself.
    #[arg(
        long,
        env = "INSTALL_BUNDLE",
        hide_env_values = true,
        value_name = "B64",
        conflicts_with = "bundle_secret"
    )]
    pub install_bundle: Option<String>,
    /// Secrets Manager secret ARN, SSM parameter ARN or SSM parameter name holding the install
    /// bundle; the sidecar gets it as the ECS secret INSTALL_BUNDLE (needs executionRoleArn).
    #[arg(long, env = "INSTALL_BUNDLE_SECRET", value_name = "ARN")]
    pub bundle_secret: Option<String>,
    /// Create a new enrollment token in the Console's data directory (--data-dir) and embed
    /// its install bundle as plain INSTALL_BUNDLE; needs --console-addr.
    #[arg(
        long,
        env = "DEFENDER_NEW_BUNDLE",
        requires = "console_addr",
        conflicts_with_all = ["install_bundle", "bundle_secret"]
    )]
    pub new_bundle: bool,
    /// Directory of the Console's database and CA; used by --new-bundle only.
    #[arg(long, env = "CONSOLE_DATA_DIR", default_value = "./defender-data")]
    pub data_dir: PathBuf,
    /// The Console's PostgreSQL database, when it uses one (see `serve --database-url`); used
    /// by --new-bundle only.
    #[arg(long, env = "CONSOLE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// `embedded`: every container starts under the Defender (full protection);
    /// `sidecar`: containers are left alone, the sidecar watches the task's processes.
    #[arg(long, env = "DEFENDER_MODE", value_enum, default_value = "embedded")]
    pub mode: ProtectMode,
    /// Name of the Defender sidecar container.
    #[arg(long, env = "DEFENDER_SIDECAR_NAME", default_value = defender_taskdef::DEFAULT_SIDECAR_NAME)]
    pub sidecar_name: String,
    /// The image ENTRYPOINT of a container whose definition has no entryPoint, as
    /// `NAME='["/docker-entrypoint.sh"]'` (`NAME='[]'` if the image has none). Repeatable; in
    /// the environment, one per line.
    #[arg(long, env = "DEFENDER_ENTRYPOINTS", value_name = "NAME=JSON_ARRAY")]
    pub entrypoint: Vec<String>,
    /// Read the ENTRYPOINT and CMD of containers that state no entryPoint from their images:
    /// `--resolve-images` (or `=registry`) over the OCI distribution API,
    /// `--resolve-images=docker` from the local Docker engine (`docker image inspect`).
    #[arg(
        long,
        env = "DEFENDER_RESOLVE_IMAGES",
        value_name = "SOURCE",
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "registry"
    )]
    pub resolve_images: Option<crate::image_resolve::ImageSource>,
    /// User name for registries (Amazon ECR: `AWS`); the password is read from the
    /// REGISTRY_PASSWORD environment variable or --registry-password-file, never from argv.
    #[arg(long, env = "REGISTRY_USERNAME", requires = "resolve_images")]
    pub registry_username: Option<String>,
    /// File holding the registry password (e.g. `aws ecr get-login-password > f`).
    #[arg(long, env = "REGISTRY_PASSWORD_FILE", requires = "registry_username")]
    pub registry_password_file: Option<PathBuf>,
    /// Docker's `config.json` with `auths` entries, for registry credentials.
    #[arg(long, env = "REGISTRY_AUTH_FILE", requires = "resolve_images")]
    pub registry_auth_file: Option<PathBuf>,
    /// PEM file of a CA to trust for registries (a private registry's CA), besides the system's
    /// and Mozilla's roots.
    #[arg(long, env = "REGISTRY_CA_FILE", requires = "resolve_images")]
    pub registry_ca_file: Option<PathBuf>,
    /// Registry (`host:port`) to reach over plain HTTP, e.g. a local registry; repeatable.
    #[arg(
        long,
        env = "DEFENDER_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_name = "HOST:PORT"
    )]
    pub insecure_registry: Vec<String>,
    /// Put the Defender's WAAS reverse proxy in front of APP_CONTAINER: the sidecar takes over
    /// EXPOSED_PORT (the load balancer's container port) and forwards to the app, which moves to
    /// an internal port; warnings say what to change in the service / target group.
    #[arg(
        long,
        env = "DEFENDER_WAAS_TARGET",
        value_name = "APP_CONTAINER:EXPOSED_PORT"
    )]
    pub waas: Option<String>,
}

/// `--mode` of `fargate protect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtectMode {
    Embedded,
    Sidecar,
}

impl From<ProtectMode> for defender_taskdef::Mode {
    fn from(mode: ProtectMode) -> Self {
        match mode {
            ProtectMode::Embedded => Self::Embedded,
            ProtectMode::Sidecar => Self::Sidecar,
        }
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h`, `7d` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 10s, 5m, 1h, 7d"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.saturating_mul(1000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?}: use ms, s, m, h or d"
            ));
        }
    };
    if ms == 0 {
        return Err("duration must be greater than zero".into());
    }
    Ok(Duration::from_millis(ms))
}

/// Parses a rate limit `BURST:PER_SECOND` (e.g. `100:5`; the rate may be fractional, `10:0.1`).
pub fn parse_rate(s: &str) -> Result<crate::ratelimit::Rate, String> {
    let bad = || format!("invalid rate limit {s:?}: expected BURST:PER_SECOND, e.g. 100:5");
    let (burst, rate) = s.trim().split_once(':').ok_or_else(bad)?;
    let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
    let per_second: f64 = rate.trim().parse().map_err(|_| bad())?;
    if burst == 0 || !per_second.is_finite() || per_second <= 0.0 {
        return Err(format!(
            "invalid rate limit {s:?}: the burst and the rate must be greater than zero"
        ));
    }
    Ok(crate::ratelimit::Rate { burst, per_second })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_parse_as_burst_and_rate() {
        let r = parse_rate("100:5").unwrap();
        assert_eq!((r.burst, r.per_second), (100, 5.0));
        assert_eq!(parse_rate(" 10:0.1 ").unwrap().per_second, 0.1);
        for bad in ["100", "0:5", "10:0", "10:-1", "x:1", "10:inf", "10:NaN"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("").is_err());
    }
}
