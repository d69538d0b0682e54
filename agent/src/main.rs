//! `defender` binary: parse the command line, set up logging and TLS, run the library.

use clap::Parser;
use defender::cli::{Cli, Command, LogFormat};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let code = match cli.command {
        Command::Run(args) => defender::run::run(args).await,
    };
    std::process::exit(code);
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEFENDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
