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
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

/// Token subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new API token for `Authorization: Bearer`.
    Create(DataDirArgs),
}

/// Where the Console keeps its state.
#[derive(Debug, Args, Clone)]
pub struct DataDirArgs {
    /// Directory holding the database, the CA and the server certificate.
    #[arg(long, env = "CONSOLE_DATA_DIR", default_value = "./defender-data")]
    pub data_dir: PathBuf,
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
    /// Password of the `admin` account on first start (otherwise one is generated and printed once).
    #[arg(long, env = "CONSOLE_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
}

/// `bundle` options.
#[derive(Debug, Args, Clone)]
pub struct BundleArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// `host:port` Defenders use to reach the gRPC listener; host must be a SAN of the server certificate.
    #[arg(long, env = "CONSOLE_ADDR")]
    pub console_addr: String,
    /// Token lifetime (e.g. `30d`); default never expires.
    #[arg(long, value_parser = parse_duration)]
    pub expires_in: Option<Duration>,
    /// Free text stored with the token.
    #[arg(long, default_value = "")]
    pub description: String,
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

#[cfg(test)]
mod tests {
    use super::*;

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
