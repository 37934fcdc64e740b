//! `dndm status`: a running node in a few lines (identity, listeners, peers with RTT, routes,
//! breakers, drops, readiness), or as JSON for scripts, with an exit status a probe can use.

use std::fmt::Write as _;
use std::time::Duration;

use crate::health;
use crate::inspect;
use crate::metrics::NodeSnapshot;

/// Exit status of `dndm status` for a node that answers but is not ready.
pub(crate) const NOT_READY_EXIT: u8 = 4;

/// Help text on exit statuses.
pub(crate) const STATUS_EXIT_HELP: &str = "Exit status: 0 when the node is ready, 4 when it \
     answers but is not ready (the reasons on standard error), 1 when it cannot be reached.";

/// Arguments of `dndm status`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node's HTTP address, as printed by `dndm node` (http://127.0.0.1:9464).
    #[arg(long, value_name = "URL")]
    node: String,
    /// Print one JSON object (`ready`, `reasons`, `snapshot`) instead of the summary.
    #[arg(long)]
    json: bool,
    /// Ask again until the node is in this state (or --timeout passes), e.g. in a deploy script
    /// that waits for a restarted node; the exit status tells the state it ended in.
    #[arg(long, value_enum, value_name = "STATE")]
    wait_for: Option<Readiness>,
    /// Longest wait of --wait-for, in seconds.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    timeout: Duration,
}

/// A state `dndm status --wait-for` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Readiness {
    /// `/readyz` answers 200.
    Ready,
    /// `/readyz` answers 503.
    NotReady,
}

/// The node answered but is not ready; `main` exits with [`NOT_READY_EXIT`].
#[derive(Debug, thiserror::Error)]
#[error("node {node} is not ready: {}", reasons.join("; "))]
pub(crate) struct NotReady {
    node: String,
    reasons: Vec<String>,
}

/// Runs `dndm status`.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let mut answer = ask(&args.node).await;
    if let Some(wanted) = args.wait_for {
        let mut tick = tokio::time::interval(inspect::POLL);
        let started = tokio::time::Instant::now();
        // A node still starting may not answer yet: that is one more reason to ask again.
        let arrived = |answer: &anyhow::Result<(NodeSnapshot, Vec<String>)>| match answer {
            Ok((_, reasons)) => (reasons.is_empty()) == (wanted == Readiness::Ready),
            Err(_) => false,
        };
        while !arrived(&answer) && started.elapsed() < args.timeout {
            tick.tick().await;
            answer = ask(&args.node).await;
        }
    }
    let (snapshot, reasons) = answer?;
    if args.json {
        let report = serde_json::json!({
            "ready": reasons.is_empty(),
            "reasons": reasons,
            "snapshot": snapshot,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", summary(&snapshot, &reasons));
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(NotReady {
            node: snapshot.node,
            reasons,
        }
        .into())
    }
}

/// The node's snapshot and why it is not ready (empty when it is).
async fn ask(node: &str) -> anyhow::Result<(NodeSnapshot, Vec<String>)> {
    let snapshot = inspect::fetch(node).await?;
    // The node computes readiness from the snapshot it serves (it knows its required peers).
    if let Some(reasons) = &snapshot.not_ready {
        let reasons = reasons.clone();
        return Ok((snapshot, reasons));
    }
    // An older node: ask `/readyz` (a moment later than the snapshot).
    let readyz = crate::http::fetch(node, "/readyz").await?;
    let reasons: Vec<String> = if readyz.status.is_success() {
        Vec::new()
    } else {
        let reasons: Vec<String> = readyz
            .text
            .lines()
            .skip(1)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        if reasons.is_empty() {
            health::not_ready(Some(&snapshot), &[])
        } else {
            reasons
        }
    };
    Ok((snapshot, reasons))
}

/// The human summary of a snapshot and its readiness.
pub(crate) fn summary(snapshot: &NodeSnapshot, reasons: &[String]) -> String {
    let mut out = String::new();
    let state = if reasons.is_empty() {
        "ready"
    } else {
        "NOT READY"
    };
    let _ = writeln!(
        out,
        "node       {} {} {state}",
        snapshot.node, snapshot.peer_id
    );
    for reason in reasons {
        let _ = writeln!(out, "           - {reason}");
    }
    let listening = if snapshot.listening.is_empty() {
        "-".to_owned()
    } else {
        snapshot.listening.join(" ")
    };
    let _ = writeln!(out, "listening  {listening}");
    let connected = snapshot.peers.iter().filter(|p| p.connected).count();
    let _ = writeln!(
        out,
        "peers      {connected} connected of {} known",
        snapshot.peers.len()
    );
    for peer in &snapshot.peers {
        let rtt = peer
            .rtt_us
            .map_or_else(|| "-".to_owned(), |us| format!("{:.2} ms", us as f64 / 1e3));
        let _ = writeln!(
            out,
            "           {} {} {rtt} via {}",
            peer.peer,
            if peer.connected { "up" } else { "down" },
            peer.endpoint
        );
    }
    let local = |origin: &str| origin == "local";
    let _ = writeln!(
        out,
        "routes     {} intents ({} local), {} interests ({} local), {} links, {} services",
        snapshot.intents.len(),
        snapshot.intents.iter().filter(|i| local(&i.origin)).count(),
        snapshot.interests.len(),
        snapshot
            .interests
            .iter()
            .filter(|i| local(&i.origin))
            .count(),
        snapshot.links.len(),
        snapshot.services.len()
    );
    let open: Vec<String> = snapshot
        .breakers
        .iter()
        .filter(|b| b.open)
        .map(|b| format!("{} open after {} failures", b.target, b.failures))
        .collect();
    let breakers = if open.is_empty() {
        format!("none open ({} dial targets)", snapshot.breakers.len())
    } else {
        open.join("; ")
    };
    let _ = writeln!(out, "breakers   {breakers}");
    let queues = snapshot.interests.iter().filter_map(|i| i.queue.as_ref());
    let (mut oldest, mut newest, mut decode) = (0, 0, 0);
    for queue in queues {
        oldest += queue.dropped_oldest;
        newest += queue.dropped_newest;
        decode += queue.decode_errors;
    }
    let undelivered: u64 = snapshot.intents.iter().map(|i| i.undelivered).sum();
    let _ = writeln!(
        out,
        "drops      {} (dropped_oldest {oldest}, dropped_newest {newest}, decode_error {decode}); \
         undelivered {undelivered}",
        oldest + newest + decode
    );
    out
}
