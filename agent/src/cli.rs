//! Command line of `defender`; every flag is also an environment variable (ECS passes config that way).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Install bundle (base64) from `defender-console bundle`.
    #[arg(long, env = "INSTALL_BUNDLE", hide_env_values = true)]
    pub install_bundle: Option<String>,
    /// Directory for the Defender's identity and state.
    #[arg(
        long,
        env = "DEFENDER_DATA_DIR",
        default_value = "./defender-agent-data"
    )]
    pub data_dir: PathBuf,
    /// The application's command line (after `--`).
    #[arg(last = true, required = true, value_name = "ARGV")]
    pub argv: Vec<OsString>,
}
