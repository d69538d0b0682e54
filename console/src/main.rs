//! `defender-console` binary: parse the command line, set up logging and TLS, run the library.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use defender_console::cli::{Cli, Command, FargateCommand, LogFormat};
use defender_console::fargate;
use defender_console::server::{self, ServeConfig};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    defender_console::limits::return_large_buffers_to_os();
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Serve(args) => {
            // Before any socket exists: the connection caps are derived from it.
            defender_console::listen::raise_nofile_limit();
            let grpc = TcpListener::bind(&args.grpc_listen)
                .await
                .with_context(|| format!("binding gRPC listener {}", args.grpc_listen))?;
            let http = TcpListener::bind(&args.http_listen)
                .await
                .with_context(|| format!("binding HTTP listener {}", args.http_listen))?;
            let webhooks = defender_console::webhook::targets(
                &args.audit_webhooks,
                &args.audit_webhook_headers,
            )?;
            let cfg = ServeConfig {
                data_dir: args.data.data_dir,
                database_url: args.data.database_url,
                sans: args.sans,
                heartbeat_interval: args.heartbeat_interval,
                defender_retention: args.defender_retention,
                client_cert_validity: args.client_cert_validity,
                admin_password: args.admin_password,
            };
            let lifecycle = defender_console::lifecycle::LifecycleConfig {
                event_retention: args.event_retention,
                defender_purge_after: args.defender_purge_after,
                rate_limits: defender_console::ratelimit::RateLimits {
                    enroll_per_token: args.enroll_limit_per_token,
                    enroll_per_source: args.enroll_limit_per_source,
                    ..Default::default()
                },
                ..Default::default()
            };
            let http_limits = defender_console::listen::ListenerLimits {
                max_connections: args.http_max_connections,
                header_timeout: args.http_header_timeout,
                body_timeout: args.http_body_timeout,
            };
            let grpc_limits = defender_console::listen::ListenerLimits {
                max_connections: args.grpc_max_connections.unwrap_or_else(|| {
                    defender_console::listen::grpc_budget(args.http_max_connections)
                }),
                ..http_limits
            };
            let scheme = if args.http_tls_cert.is_some() || !args.http_tls_host.is_empty() {
                "https"
            } else {
                "http"
            };
            let edge = server::EdgeConfig {
                http: http_limits,
                grpc: grpc_limits,
                public_url: args.public_url,
                http_tls: args.http_tls_cert.zip(args.http_tls_key),
                http_tls_ca_hosts: args.http_tls_host,
            };
            let mut console = server::start_full(cfg, lifecycle, edge, grpc, http).await?;
            console.forward_audits(webhooks, Default::default()).await?;
            if let Some(pw) = &console.generated_admin_password {
                // Printed once, on the terminal only (never logged): only its hash is stored.
                eprintln!(
                    "\n  First start: log in at {scheme}://{} as user `admin` with password:\n\n      {pw}\n\n  It is shown only this once.\n",
                    console.http_addr
                );
            }
            let stop = tokio::spawn(async {
                shutdown_signal().await;
            });
            tokio::select! {
                _ = stop => {}
            }
            tracing::info!("shutting down");
            console.shutdown();
            console.wait().await?;
        }
        Command::Bundle(args) => {
            let bundle = server::create_bundle(
                &args.data.data_dir,
                args.data.database_url.as_deref(),
                &args.console_addr,
                &args.description,
                args.expires_in,
            )
            .await?;
            match &args.output {
                Some(path) => write_private_file(path, &format!("{}\n", bundle.encode()))
                    .with_context(|| format!("writing the install bundle to {}", path.display()))?,
                None => println!("{}", bundle.encode()),
            }
        }
        Command::Token { command } => exit_on_error(defender_console::admin::token(command).await),
        Command::Vulndb { command } => {
            if !defender_console::vulndb::run_command(command).await? {
                std::process::exit(1);
            }
        }
        Command::User { command } => exit_on_error(defender_console::admin::user(command).await),
        Command::Defender { command } => {
            exit_on_error(defender_console::admin::defender(command).await)
        }
        Command::Fargate {
            command: FargateCommand::Protect(args),
        } => {
            // Nothing reaches stdout unless the whole protected definition does. Refusals are
            // the operator's to fix: one plain line, never a backtrace.
            let protected = match fargate::protect_command(&args).await {
                Ok(protected) => protected,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            };
            for warning in &protected.warnings {
                eprintln!("warning: {warning}");
            }
            let json = fargate::to_pretty_json(&protected.task_definition);
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(json.as_bytes())
                .and_then(|()| stdout.flush())
                .context("writing the protected task definition to stdout")?;
        }
    }
    Ok(())
}

/// Administrative commands report a refusal as one plain line and exit status 1.
fn exit_on_error(result: Result<(), defender_console::admin::AdminError>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Writes `contents` to `path` with mode 0600 through a temporary file and a rename, so a
/// reader never sees half a secret.
fn write_private_file(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("bundle")
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // PostgreSQL's notices (e.g. "relation _sqlx_migrations already exists, skipping" at
        // every start) are the server talking to itself, not news for the operator.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
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
