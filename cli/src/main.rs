//! The `dndm` command-line tool.
//!
//! - `dndm demo`: a local mesh of routers exchanging typed telemetry and calling a service,
//!   with a live summary and a final report. `cargo run --release -- demo`.
//! - `dndm keygen`: create or show an identity file.
//! - `dndm node --config node.toml`: a long-running node (mesh, remote links, `/metrics`).
//! - `dndm pub ROUTE` / `dndm sub PATTERN`: publish lines from stdin / print messages, using the
//!   built-in `dndm.Text`, `dndm.Json` and `dndm.Bytes` types.
//! - `dndm peers --node URL` / `dndm routes --node URL`: inspect a running node.
//! - `dndm status --node URL [--json]`: a node's summary and readiness, for people and probes.
//! - `dndm completions SHELL` / `dndm man [COMMAND]`: shell completions and manual pages.
//!
//! Errors print one line, `error: ...`, naming the cause, and exit with status 1 (2 for bad
//! arguments; 3 when `dndm pub` could not confirm that every linked subscriber acknowledged
//! every message; 4 when `dndm status` finds the node not ready).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod health;
mod http;
mod inspect;
mod keygen;
mod metrics;
mod node;
mod pubsub;
mod record;
mod replay;
mod shell;
mod status;
mod terminal;

/// Typed, decentralized publish/subscribe.
#[derive(Debug, Parser)]
#[command(name = "dndm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a local mesh demo (typed telemetry, a service, a live summary) and print a report.
    Demo(demo::Args),
    /// Create an identity file (ed25519, mode 0600) and print its PeerId, or show one's.
    Keygen(keygen::Args),
    /// Run a long-lived node from a TOML config: mesh, remote links, /metrics and /snapshot.
    Node(node::Args),
    /// Publish lines from standard input on a route (reliable), as an ephemeral mesh node.
    #[command(after_help = pubsub::PUB_EXIT_HELP)]
    Pub(pubsub::PubArgs),
    /// Print the messages matching a route pattern, one per line, as an ephemeral mesh node.
    Sub(pubsub::SubArgs),
    /// List a running node's peers: session state, RTT, traffic, addresses.
    Peers(inspect::PeersArgs),
    /// List a running node's routes, links, queue depths and drops.
    Routes(inspect::RoutesArgs),
    /// Summarise a running node (identity, listeners, peers, routes, breakers, drops) and say
    /// whether it is ready.
    #[command(after_help = status::STATUS_EXIT_HELP)]
    Status(status::Args),
    /// Measure throughput and round trip over in-process, remote and mesh links; print a table.
    Bench(bench::Args),
    /// Record the signed batches of route patterns into a file, as an ephemeral mesh node.
    Record(record::RecordArgs),
    /// Check every batch of recordings against its publisher's key, offline.
    #[command(after_help = record::VERIFY_EXIT_HELP)]
    Verify(record::FilesArgs),
    /// Summarise recordings: routes, publishers, message counts, durations and rates.
    Info(record::FilesArgs),
    /// Publish a recording's messages again (recorded pace, faster, or as fast as possible),
    /// on the recorded routes or renamed ones, as an ephemeral mesh node.
    Replay(replay::ReplayArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on standard output.
    Completions(shell::CompletionsArgs),
    /// Print the manual page (roff) of dndm, or of one of its commands, on standard output.
    Man(shell::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string();
        eprintln!(
            "error: internal error (please report): {}",
            text.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
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
            Command::Bench(args) => bench::run(args).await,
            Command::Keygen(args) => keygen::run(args),
            Command::Node(args) => node::run(args).await,
            Command::Pub(args) => pubsub::run_pub(args).await,
            Command::Sub(args) => pubsub::run_sub(args).await,
            Command::Peers(args) => inspect::peers(args).await,
            Command::Routes(args) => inspect::routes(args).await,
            Command::Status(args) => status::run(args).await,
            Command::Completions(args) => shell::completions(&args),
            Command::Man(args) => shell::man(&args),
            Command::Record(args) => record::run_record(args).await,
            Command::Verify(args) => record::run_verify(&args),
            Command::Info(args) => record::run_info(&args),
            Command::Replay(args) => replay::run(args).await,
        }
    });
    // Every command closes what it started; a thread blocked reading stdin must not hold the
    // exit.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            if e.downcast_ref::<pubsub::Unconfirmed>().is_some() {
                ExitCode::from(pubsub::UNCONFIRMED_EXIT)
            } else if e.downcast_ref::<status::NotReady>().is_some() {
                ExitCode::from(status::NOT_READY_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// An error and its causes on one line, leaving out causes the text already shows.
fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every problem of a configuration error from `path` (the environment when `None`), on one
/// line that names the file once.
pub(crate) fn config_error(
    path: Option<&std::path::Path>,
    error: &dndm_cli::ConfigError,
) -> anyhow::Error {
    let problems = error
        .problems()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    match path {
        Some(path) if !problems.contains(&path.display().to_string()) => {
            anyhow::anyhow!("config {}: {problems}", path.display())
        }
        _ => anyhow::anyhow!("{problems}"),
    }
}

/// A positive number of seconds, at most one day.
pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(seconds > 0.0 && seconds <= 86_400.0) {
        return Err(format!("{text} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Process signals that ask a command to stop.
mod signals {
    /// Resolves with the signal's name on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
    ///
    /// # Errors
    /// When the signal handlers cannot be installed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn shutdown() -> std::io::Result<&'static str> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "interrupted"),
                _ = term.recv() => Ok("terminated"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.map(|()| "interrupted")
        }
    }
}
