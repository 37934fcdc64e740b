//! The `dndm` command-line tool.
//!
//! `dndm demo` runs the in-process demo: typed telemetry from several sensors to a lossless
//! fusion subscriber, a lossy dashboard and an exact-route monitor, plus a request/response
//! status service, then prints a final report. `cargo run --release -- demo`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;

/// Typed, decentralized publish/subscribe.
#[derive(Debug, Parser)]
#[command(name = "dndm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the in-process demo and print a report.
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DNDM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
