//! `defender` binary: parse the command line, set up logging and TLS, run the library.

use clap::Parser;
use defender::cli::{Cli, Command, FargateCommand, LogFormat};

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    defender::bundle::warn_if_in_argv();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let code = match cli.command {
        Command::Run(args) => defender::run::run(args).await,
        Command::Simulate(args) => simulate(args).await,
        Command::Fargate { command } => match command {
            FargateCommand::Sidecar(args) => defender::fargate::sidecar::run(args).await,
            FargateCommand::Entrypoint(args) => defender::fargate::entrypoint::run(args).await,
            FargateCommand::Healthcheck(args) => {
                defender::fargate::healthcheck::run(&args.socket).await
            }
        },
    };
    std::process::exit(code);
}

async fn simulate(args: defender::cli::SimulateArgs) -> i32 {
    let b64 = match defender::bundle::from_value_or_file(
        args.install_bundle.as_deref(),
        args.install_bundle_file.as_deref(),
    ) {
        Ok(b64) => b64,
        Err(e) => {
            eprintln!("defender simulate: cannot read the install bundle file: {e}");
            return 2;
        }
    };
    let bundle = match defender::bundle::InstallBundle::decode(&b64) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("defender simulate: {e}");
            return 2;
        }
    };
    let cfg = defender::simulate::SimulateConfig {
        bundle,
        data_dir: args.data_dir,
        defenders: args.defenders.max(1),
        events: args.events,
        rate: args.rate.max(0.0),
        spool: args.spool.config(),
        backoff: defender::link::Backoff {
            max: args.reconnect_max,
            ..Default::default()
        },
        hold: args.hold,
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("defender simulate: interrupted, summarising");
            let _ = stop_tx.send(true);
        }
    });
    match defender::simulate::simulate(cfg, stop).await {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(e) => {
            eprintln!("defender simulate: {e}");
            1
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DEFENDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: CloudWatch and files would show the escapes.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
