//! `dndm replay`: publishes a recording's messages again, as an ephemeral mesh node, at the
//! recorded pace (or faster, or as fast as the subscribers take them), on the recorded routes
//! or renamed ones. It moves the encoded messages as they are ([`Router::publish_raw`]): no
//! schema is needed.
//!
//! [`Router::publish_raw`]: dndm::Router::publish_raw

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dndm::{Intent, PublishOptions, Qos, RawMessage, Route};
use dndm_codec::record::messages;
use tokio::time::Instant;

use crate::pubsub::{Audience, MeshArgs, join_with};

/// How long replay waits for its links to acknowledge what it published.
const FLUSH_GUARD: Duration = Duration::from_secs(60);

/// Arguments of `dndm replay`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// The recording.
    file: PathBuf,
    /// Pace: 1 replays at the recorded speed, 2 twice as fast, 0 as fast as the subscribers
    /// take the messages.
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    speed: f64,
    /// Publish the routes whose path starts with FROM on TO instead (`robot=replay.robot`).
    /// Repeatable; the first that matches applies.
    #[arg(long, value_name = "FROM=TO", value_parser = parse_rename)]
    rename: Vec<(String, String)>,
    #[command(flatten)]
    audience: Audience,
    #[command(flatten)]
    mesh: MeshArgs,
}

fn parse_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed >= 0.0 => Ok(speed),
        _ => Err(format!(
            "{text:?} is not a speed: give 0 (as fast as possible) or a positive factor"
        )),
    }
}

fn parse_rename(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((from, to)) if !from.is_empty() && !to.is_empty() => {
            Ok((from.to_owned(), to.to_owned()))
        }
        _ => Err(format!("{text:?} is not FROM=TO (path prefixes)")),
    }
}

/// `route`, renamed by the first rule whose prefix its path has (whole segments).
fn renamed(route: &Route, rules: &[(String, String)]) -> anyhow::Result<Route> {
    let path = route.path();
    for (from, to) in rules {
        let rest = if path == from {
            Some("")
        } else {
            path.strip_prefix(from.as_str())
                .filter(|rest| rest.starts_with('.'))
        };
        if let Some(rest) = rest {
            let new = format!("{to}{rest}");
            return Route::new(route.type_name(), &new)
                .with_context(|| format!("--rename {from}={to} makes {new:?} of {route}"));
        }
    }
    Ok(route.clone())
}

/// Runs `dndm replay`.
pub(crate) async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let data = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let recorded = messages(&data).with_context(|| args.file.display().to_string())?;
    if recorded.is_empty() {
        bail!("{}: no verified message to replay", args.file.display());
    }
    let node = join_with(&args.mesh, "dndm-replay", |_| {}).await?;
    let result = replay(&node, &args, &recorded).await;
    node.router.close().await;
    result
}

async fn replay(
    node: &crate::pubsub::Ephemeral,
    args: &ReplayArgs,
    recorded: &[dndm_codec::record::RecordedMessage],
) -> anyhow::Result<()> {
    let mut intents: BTreeMap<Route, Intent<RawMessage>> = BTreeMap::new();
    let mut routes = Vec::with_capacity(recorded.len());
    for m in recorded {
        let route = renamed(&m.route, &args.rename)?;
        if !intents.contains_key(&route) {
            let options = PublishOptions::default().qos(Qos::reliable());
            let intent = node
                .router
                .publish_raw(route.clone(), m.fingerprint, None, options)
                .with_context(|| format!("cannot publish on {route}"))?;
            intents.insert(route.clone(), intent);
        }
        routes.push(route);
    }
    let want = args.audience.subscribers as usize;
    for (route, intent) in &intents {
        if let Err(seen) =
            crate::pubsub::wait_for_subscribers(intent, want, args.audience.wait).await
        {
            bail!(
                "{seen} of {want} subscriber(s) for {route} after {} s",
                args.audience.wait.as_secs_f64()
            );
        }
    }
    eprintln!(
        "replay: {} message(s) on {} route(s)",
        recorded.len(),
        intents.len()
    );
    let start = Instant::now();
    let first = recorded[0].arrived;
    let mut failed = 0u64;
    for (m, route) in recorded.iter().zip(&routes) {
        if args.speed > 0.0 {
            let offset = m.arrived.duration_since(first).unwrap_or_default();
            // Pacing, not synchronisation: the recorded time between messages.
            #[allow(clippy::disallowed_methods)]
            tokio::time::sleep_until(start + offset.div_f64(args.speed)).await;
        }
        let Some(intent) = intents.get(route) else {
            continue;
        };
        if let Err(e) = intent.send(RawMessage::new(m.payload.clone())).await {
            if !e.is_transient() {
                bail!("cannot publish on {route}: {e}");
            }
            failed += 1;
        }
    }
    for peer in node.mesh.peers() {
        match tokio::time::timeout(FLUSH_GUARD, node.mesh.flush(&peer)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("replay: peer {peer}: {e}"),
            Err(_) => eprintln!("replay: peer {peer}: not acknowledged within {FLUSH_GUARD:?}"),
        }
    }
    let undelivered: u64 = intents.values().map(Intent::undelivered).sum();
    eprintln!(
        "replay: published {} message(s); {undelivered} undelivered",
        recorded.len()
    );
    if failed > 0 || undelivered > 0 {
        bail!("{failed} send(s) failed, {undelivered} message(s) undelivered");
    }
    Ok(())
}
