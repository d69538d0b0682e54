//! `defender-demo`: the workload and the ECS task metadata stand-in of the docker compose demo.

use clap::Parser;
use defender_demo::{Cli, Command, app, child, ecs_metadata};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        // The child is a short-lived process: no runtime needed.
        Command::Child(args) => {
            child::run(&args);
            Ok(())
        }
        Command::App(args) => runtime()?.block_on(app::run(args)),
        Command::EcsMetadata(args) => runtime()?.block_on(ecs_metadata::run(args)),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}
