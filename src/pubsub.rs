//! `dndm pub` and `dndm sub`: ephemeral mesh nodes that publish lines from standard input, or
//! print the messages of a pattern, using the [built-in types](dndm::builtin).
//!
//! Each command starts its own router and mesh endpoint, joins the mesh through `--bootstrap`
//! (or a `--config` file's `[mesh]` section, or mDNS when neither names a peer), and links to
//! its peers directly (the mesh does not forward between peers).

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dndm::builtin::{Bytes, Json, Text};
use dndm::mesh::MeshEndpoint;
use dndm::{Config, Interest, Origin, Overflow, PublishOptions, Qos, Router, SubscribeOptions};
use tokio::sync::mpsc;

use crate::{config_error, signals};

/// Lines read ahead of publishing.
const LINES_AHEAD: usize = 64;

/// Queue of a `dndm sub` subscription; it blocks the publisher when full, so nothing is lost.
const SUB_QUEUE: usize = 1024;

/// Message type of `--type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// `dndm.Text`: one line of UTF-8 text.
    #[default]
    Text,
    /// `dndm.Json`: one JSON value per line.
    Json,
    /// `dndm.Bytes`: the line's bytes as they are.
    Bytes,
}

/// How the mesh node of `pub`/`sub` joins the mesh.
#[derive(Debug, clap::Args)]
pub(crate) struct MeshArgs {
    /// A mesh node to join, as printed by `dndm node`: a multiaddr ending in /p2p/<PeerId>.
    /// Repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// A TOML configuration for this node ([router], [mesh], [remote] sections); DNDM_*
    /// environment variables override it. Its mesh.bootstrap adds to --bootstrap.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where this node listens, so peers can reach it. Default: port 0 on 127.0.0.1 when every
    /// bootstrap address is on loopback, else on every interface.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Option<String>,
}

/// Arguments of `dndm pub`.
#[derive(Debug, clap::Args)]
pub(crate) struct PubArgs {
    /// The route path to publish on, e.g. chat.room1 (the route is <type>@<path>).
    route: String,
    /// Message type.
    #[arg(long = "type", value_enum, default_value_t)]
    kind: Kind,
    /// Most messages per second. Default: as fast as the subscribers take them.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: Option<u32>,
    /// Stop after this many messages. Default: at the end of the input.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Wait for at least this many subscribers (local or on peers) before sending.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    subscribers: u32,
    /// How long to wait for the subscribers before giving up, in seconds.
    #[arg(long, default_value = "30", value_parser = crate::parse_seconds)]
    wait: Duration,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Arguments of `dndm sub`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubArgs {
    /// The route pattern, e.g. chat.room1, chat.* or chat.** (the type comes from --type).
    pattern: String,
    /// Message type.
    #[arg(long = "type", value_enum, default_value_t)]
    kind: Kind,
    /// Exit after this many messages. Default: run until interrupted.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// A built-in type as lines of input and output.
pub(crate) trait Line: dndm::Message + Sized {
    /// The message for one input line (without its line ending).
    fn from_line(line: Vec<u8>) -> Result<Self, String>;
    /// The bytes to print for the message (a newline follows).
    fn as_line(&self) -> &[u8];
}

impl Line for Text {
    fn from_line(line: Vec<u8>) -> Result<Self, String> {
        String::from_utf8(line)
            .map(Text::from)
            .map_err(|_| "it is not UTF-8 text (use --type bytes)".to_owned())
    }

    fn as_line(&self) -> &[u8] {
        self.text.as_bytes()
    }
}

impl Line for Json {
    fn from_line(line: Vec<u8>) -> Result<Self, String> {
        let text = String::from_utf8(line).map_err(|_| "it is not UTF-8 text".to_owned())?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| format!("it is not JSON: {e}"))?;
        Ok(Json::from(text))
    }

    fn as_line(&self) -> &[u8] {
        self.json.as_bytes()
    }
}

impl Line for Bytes {
    fn from_line(line: Vec<u8>) -> Result<Self, String> {
        Ok(Bytes::from(line))
    }

    fn as_line(&self) -> &[u8] {
        &self.data
    }
}

/// A running ephemeral mesh node.
struct Ephemeral {
    router: Router,
    mesh: MeshEndpoint,
    config: Config,
}

/// Starts the router and mesh endpoint described by `args`.
async fn join(args: &MeshArgs, name: &str) -> anyhow::Result<Ephemeral> {
    let mut config = match &args.config {
        Some(path) => Config::load(Some(path)).map_err(|e| config_error(Some(path), &e))?,
        None => {
            let mut config = Config::load(None).map_err(|e| config_error(None, &e))?;
            config.node.name = name.to_owned();
            // Without a file, discover on the LAN only when no peer is named.
            config.mesh.mdns = args.bootstrap.is_empty() && config.mesh.bootstrap.is_empty();
            config
        }
    };
    for (i, address) in args.bootstrap.iter().enumerate() {
        let has_peer = address
            .split_once("/p2p/")
            .is_some_and(|(_, peer)| !peer.is_empty());
        if !address.starts_with('/') || !has_peer {
            bail!(
                "--bootstrap {address:?} (#{}) is not a multiaddr ending in /p2p/<PeerId>, such as the ones `dndm node` prints",
                i + 1
            );
        }
        config.mesh.bootstrap.push(address.clone());
    }
    if config.mesh.bootstrap.is_empty() && !config.mesh.mdns {
        bail!(
            "no mesh peer to join: give --bootstrap MULTIADDR (printed by `dndm node`), or a --config with mesh.bootstrap or mesh.mdns = true"
        );
    }
    config.mesh.enabled = true;
    if let Some(listen) = &args.listen {
        config.mesh.listen = vec![listen.clone()];
    } else if config.mesh.listen.is_empty() {
        let loopback = !config.mesh.bootstrap.is_empty()
            && config
                .mesh
                .bootstrap
                .iter()
                .all(|a| a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/"));
        let host = if loopback { "127.0.0.1" } else { "0.0.0.0" };
        config.mesh.listen = vec![format!("/ip4/{host}/tcp/0")];
    }
    config
        .validate()
        .map_err(|e| config_error(args.config.as_deref(), &e))?;
    let router = Router::builder().config(&config).build()?;
    let mesh = MeshEndpoint::from_config(&config)?;
    router
        .attach(Arc::new(mesh.clone()))
        .await
        .context("cannot join the mesh")?;
    Ok(Ephemeral {
        router,
        mesh,
        config,
    })
}

/// Runs `dndm pub`.
pub(crate) async fn run_pub(args: PubArgs) -> anyhow::Result<()> {
    match args.kind {
        Kind::Text => publish::<Text>(args).await,
        Kind::Json => publish::<Json>(args).await,
        Kind::Bytes => publish::<Bytes>(args).await,
    }
}

/// Runs `dndm sub`.
pub(crate) async fn run_sub(args: SubArgs) -> anyhow::Result<()> {
    match args.kind {
        Kind::Text => subscribe::<Text>(args).await,
        Kind::Json => subscribe::<Json>(args).await,
        Kind::Bytes => subscribe::<Bytes>(args).await,
    }
}

async fn publish<T: Line>(args: PubArgs) -> anyhow::Result<()> {
    let node = join(&args.mesh, "dndm-pub").await?;
    let result = publish_on::<T>(&node, &args).await;
    node.router.close().await;
    result
}

async fn publish_on<T: Line>(node: &Ephemeral, args: &PubArgs) -> anyhow::Result<()> {
    let intent = node
        .router
        .publish_with::<T>(&args.route, PublishOptions::default().qos(Qos::reliable()))?;
    let route = intent.route().clone();
    let want = args.subscribers as usize;
    let mut lines = read_lines();
    let shutdown = signals::shutdown();
    tokio::pin!(shutdown);
    let subscribers = tokio::select! {
        waited = wait_for_subscribers(&intent, want, args.wait) => match waited {
            Ok(count) => count,
            Err(seen) => bail!(
                "{seen} of {want} subscriber(s) for {route} after {} s: is a `dndm sub` for it running on the mesh you joined?",
                args.wait.as_secs_f64()
            ),
        },
        signal = &mut shutdown => {
            eprintln!("pub: {}; nothing sent", signal?);
            return Ok(());
        }
    };
    eprintln!("pub: {route} has {subscribers} subscriber(s); publishing");

    let mut tick = args.rate.map(|rate| {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    });
    let mut sent = 0u64;
    let mut number = 0u64;
    while args.count.is_none_or(|n| sent < n) {
        let line = tokio::select! {
            line = lines.recv() => line,
            signal = &mut shutdown => {
                eprintln!("pub: {}; stopping", signal?);
                break;
            }
        };
        let Some(line) = line else { break };
        number += 1;
        let line = line.context("cannot read standard input")?;
        let message = T::from_line(line).map_err(|e| anyhow::anyhow!("line {number}: {e}"))?;
        if let Some(tick) = tick.as_mut() {
            tick.tick().await;
        }
        intent
            .send(message)
            .await
            .map_err(|e| anyhow::anyhow!("cannot publish line {number} on {route}: {e}"))?;
        sent += 1;
    }
    let outcome = confirm_delivery(node, intent.id()).await;
    eprintln!(
        "pub: sent {sent} message(s) on {route}; {} peer(s) confirmed, {} left",
        outcome.confirmed, outcome.left
    );
    if outcome.unconfirmed > 0 {
        eprintln!(
            "pub: warning: delivery to {} peer(s) not confirmed before exit",
            outcome.unconfirmed
        );
    }
    Ok(())
}

/// Waits until `intent` has at least `want` subscribers (local and peer interests); returns
/// their count, or on timeout or close how many it had.
///
/// # Cancel safety
/// Cancel safe.
pub(crate) async fn wait_for_subscribers<T: dndm::Message>(
    intent: &dndm::Intent<T>,
    want: usize,
    timeout: Duration,
) -> Result<usize, usize> {
    let mut events = intent.events();
    let wait = async {
        while intent.subscriber_count() < want {
            match events.recv().await {
                Ok(_) | Err(dndm::EventsError::Lagged(_)) => {}
                Err(_) => return false,
            }
        }
        true
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(true) => Ok(intent.subscriber_count()),
        _ => Err(intent.subscriber_count()),
    }
}

/// Reads standard input on a thread, line by line (line endings removed), into a bounded
/// channel. The thread ends at end of input or when the receiver is gone.
fn read_lines() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(LINES_AHEAD);
    std::thread::spawn(move || {
        let mut input = std::io::stdin().lock();
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    rx
}

/// How [`confirm_delivery`] ended.
#[derive(Debug, Default)]
struct Confirmation {
    /// Peers that acknowledged everything sent.
    confirmed: usize,
    /// Peers whose session closed first (a `dndm sub --count` that had enough, say).
    left: usize,
    /// Peers that did not acknowledge in time.
    unconfirmed: usize,
}

/// Waits until every peer subscribed to intent `id` has acknowledged everything sent to it
/// (`MeshEndpoint::flush`), or its session ended.
async fn confirm_delivery(node: &Ephemeral, id: dndm::HandleId) -> Confirmation {
    let snapshot = node.router.snapshot();
    let linked: Vec<u64> = snapshot
        .links
        .iter()
        .filter(|l| l.intent == id)
        .map(|l| l.interest.get())
        .collect();
    let mut waiting: Vec<dndm::PeerId> = snapshot
        .interests
        .iter()
        .filter(|i| linked.contains(&i.id.get()))
        .filter_map(|i| match i.origin {
            Origin::Peer(peer) => Some(peer),
            _ => None,
        })
        .collect();
    waiting.sort();
    waiting.dedup();
    let mut outcome = Confirmation::default();
    let guard = Duration::from_millis(node.config.remote.idle_timeout_ms) + Duration::from_secs(2);
    let flushes = waiting
        .iter()
        .map(|peer| async move { tokio::time::timeout(guard, node.mesh.flush(peer)).await });
    for result in futures::future::join_all(flushes).await {
        match result {
            Ok(Ok(())) => outcome.confirmed += 1,
            Ok(Err(_)) => outcome.left += 1,
            Err(_) => outcome.unconfirmed += 1,
        }
    }
    outcome
}

async fn subscribe<T: Line>(args: SubArgs) -> anyhow::Result<()> {
    let node = join(&args.mesh, "dndm-sub").await?;
    let result = async {
        let interest = node.router.subscribe_with::<T>(
            &args.pattern,
            SubscribeOptions::default()
                .capacity(SUB_QUEUE)
                .overflow(Overflow::Block),
        )?;
        eprintln!(
            "sub: subscribed to {}; waiting for messages",
            interest.pattern()
        );
        tokio::select! {
            printed = print_messages(interest, args.count) => printed.map(|_| ()),
            signal = signals::shutdown() => {
                eprintln!("sub: {}; stopping", signal?);
                Ok(())
            }
        }
    }
    .await;
    node.router.close().await;
    result
}

/// Prints each message of `interest` on its own line until `count` messages (or the interest
/// closes, or stdout does); returns how many were printed.
///
/// # Cancel safety
/// Cancel safe: a message is lost only if cancelled between receiving and printing it.
pub(crate) async fn print_messages<T: Line>(
    mut interest: Interest<T>,
    count: Option<u64>,
) -> anyhow::Result<u64> {
    let mut printed = 0u64;
    while count.is_none_or(|n| printed < n) {
        let Ok(message) = interest.recv().await else {
            break;
        };
        let mut out = std::io::stdout().lock();
        let written = out
            .write_all(message.as_line())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        if written.is_err() {
            // The reader went away (a closed pipe): nothing more to do.
            break;
        }
        printed += 1;
    }
    Ok(printed)
}
