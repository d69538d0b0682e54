//! The docker compose demo's own programs (not part of the product):
//!
//! - `app`: a small workload worth watching under the Defender. It serves HTTP, spawns a child
//!   process of itself now and then, and makes outbound HTTP connections.
//! - `child`: what `app` spawns: a little work, then exit.
//! - `ecs-metadata`: a local stand-in for the ECS task metadata endpoint v4
//!   (`ECS_CONTAINER_METADATA_URI_V4`), answering with realistic JSON for one task.
//!
//! Every flag is also an environment variable, as in the product.

use std::time::Duration;

use clap::{Parser, Subcommand};

pub mod app;
pub mod child;
pub mod ecs_metadata;
pub mod http;

/// `defender-demo`: demo workload and ECS task metadata stand-in.
#[derive(Debug, Parser)]
#[command(name = "defender-demo", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The demo application: HTTP server, periodic child processes and outbound connections.
    App(app::AppArgs),
    /// A short-lived child process (spawned by `app`).
    Child(child::ChildArgs),
    /// Stand-in for the ECS task metadata endpoint v4 of one task.
    EcsMetadata(ecs_metadata::MetadataArgs),
}

/// Parses `500ms`, `10s`, `5m` (a bare number means seconds); zero is refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 10s, 5m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s or m")),
    };
    if d.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    Ok(d)
}

/// Resolves on SIGTERM or SIGINT (`docker stop`, Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
