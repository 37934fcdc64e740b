//! `dndm pub` and `dndm sub`: ephemeral mesh nodes that publish lines from standard input, or
//! print the messages of a pattern, using the [built-in types](dndm::builtin).
//!
//! Each command starts its own router and mesh endpoint, joins the mesh through `--bootstrap`
//! (or a `--config` file's `[mesh]` section, or mDNS when neither names a peer), and links to
//! its peers directly (the mesh does not forward between peers).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dndm::builtin::{Bytes, Json, Text};
use dndm::mesh::MeshEndpoint;
use dndm::{
    EventsError, Interest, LinkEvent, LinkEvents, Origin, Overflow, PublishOptions, Qos, Router,
    SubscribeOptions,
};
use dndm_cli::Config;
use dndm_cli::config::router_builder;
use futures::FutureExt as _;
use tokio::sync::mpsc;

use crate::terminal::escape_line;
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
    #[command(flatten)]
    audience: Audience,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Whom a publishing command (`pub`, `replay`) waits for before it sends.
#[derive(Debug, clap::Args)]
pub(crate) struct Audience {
    /// Wait for at least this many subscribers (local or on peers) before sending.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) subscribers: u32,
    /// How long to wait for the subscribers before giving up, in seconds.
    #[arg(long, default_value = "30", value_parser = crate::parse_seconds)]
    pub(crate) wait: Duration,
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
    /// The bytes to print for the message (escaped, then a newline).
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
pub(crate) struct Ephemeral {
    pub(crate) router: Router,
    pub(crate) mesh: MeshEndpoint,
    config: Config,
}

/// Starts the router and mesh endpoint described by `args`.
async fn join(args: &MeshArgs, name: &str) -> anyhow::Result<Ephemeral> {
    join_with(args, name, |_| {}).await
}

/// [`join`], with `tweak` applied to the mesh settings.
pub(crate) async fn join_with(
    args: &MeshArgs,
    name: &str,
    tweak: impl FnOnce(&mut dndm::mesh::MeshConfig),
) -> anyhow::Result<Ephemeral> {
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
    let router = router_builder(&config).build()?;
    let mesh = dndm_cli::config::mesh_endpoint_with(&config, tweak)?;
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
    // The first listener also gets the links made before it: every peer that subscribes at any
    // time is recorded.
    let mut events = intent.events();
    let mut linked = Linked::default();
    let want = args.audience.subscribers as usize;
    let mut lines = read_lines();
    let shutdown = signals::shutdown();
    tokio::pin!(shutdown);
    let subscribers = tokio::select! {
        waited = wait_for_subscribers(&intent, want, args.audience.wait) => match waited {
            Ok(count) => count,
            Err(seen) => bail!(
                "{seen} of {want} subscriber(s) for {route} after {} s: is a `dndm sub` for it running on the mesh you joined?",
                args.audience.wait.as_secs_f64()
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
    // Messages published (whether or not every subscriber took them), and those whose send
    // failed for some subscriber.
    let mut published = 0u64;
    let mut failed = 0u64;
    let mut number = 0u64;
    let mut listening = true;
    while args.count.is_none_or(|n| published < n) {
        let line = tokio::select! {
            line = lines.recv() => line,
            // Record links and losses while waiting for input too (the channel is bounded).
            event = events.recv(), if listening => {
                listening = linked.handle(event, node, intent.id(), published);
                continue;
            }
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
        linked.drain(&mut events, node, intent.id(), published);
        let sent = intent.send(message).await;
        published += 1;
        match sent {
            Ok(()) => {}
            // A subscriber stayed full or its peer away: the others got the message; it is
            // counted undelivered for that peer, and reported below.
            Err(e) if e.is_transient() => failed += 1,
            Err(e) => bail!("cannot publish line {number} on {route}: {e}"),
        }
    }
    let outcome = confirm_delivery(node, &intent, &mut events, &mut linked, published).await;
    eprintln!(
        "pub: sent {published} message(s) on {route}; {} of {} linked peer(s) confirmed, {} left",
        outcome.confirmed, outcome.peers, outcome.left
    );
    for (peer, count, why) in &outcome.unconfirmed {
        eprintln!("pub: peer {peer}: {count} message(s) not confirmed ({why})");
    }
    if outcome.unattributed > 0 {
        eprintln!(
            "pub: {} more message(s) reported undelivered to peers not told apart (link events were missed)",
            outcome.unattributed
        );
    }
    let messages =
        outcome.unconfirmed.iter().map(|(_, n, _)| n).sum::<u64>() + outcome.unattributed;
    if messages > 0 || failed > 0 || !outcome.unconfirmed.is_empty() {
        return Err(Unconfirmed {
            messages,
            peers: outcome.unconfirmed.len(),
            linked: outcome.peers,
            failed,
        }
        .into());
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

/// What `dndm pub` knows of one peer that subscribed to its route at some time.
#[derive(Debug, Default)]
struct PeerRecord {
    /// The peer's interests linked to the intent now.
    links: BTreeSet<dndm::HandleId>,
    /// Messages published before its latest link was made: they were not offered to it.
    linked_at: u64,
    /// Messages published when its last link went, if it has none now.
    unlinked_at: Option<u64>,
    /// Messages reported undelivered to it ([`LinkEvent::Undelivered`]), any cause.
    undelivered: u64,
    /// `undelivered` when its latest link was made.
    undelivered_at_link: u64,
}

/// Every peer linked to the intent at any time during a run, from the intent's link events.
#[derive(Debug, Default)]
struct Linked {
    peers: BTreeMap<dndm::PeerId, PeerRecord>,
}

impl Linked {
    /// Takes the events waiting in `events`, `published` messages into the run. When events
    /// were missed, re-reads the intent's links from a snapshot (undelivered counts missed with
    /// them still show in [`dndm::Intent::undelivered`]).
    fn drain(
        &mut self,
        events: &mut LinkEvents,
        node: &Ephemeral,
        intent: dndm::HandleId,
        published: u64,
    ) {
        while let Some(event) = events.recv().now_or_never() {
            if !self.handle(event, node, intent, published) {
                return;
            }
        }
    }

    /// Takes one result of [`LinkEvents::recv`]; returns whether more events may come.
    fn handle(
        &mut self,
        event: Result<LinkEvent, EventsError>,
        node: &Ephemeral,
        intent: dndm::HandleId,
        published: u64,
    ) -> bool {
        match event {
            Ok(event) => self.handle_event(event, published),
            Err(EventsError::Lagged(_)) => self.handle_snapshot(node, intent, published),
            Err(_) => return false,
        }
        true
    }

    fn handle_event(&mut self, event: LinkEvent, published: u64) {
        match event {
            LinkEvent::Linked {
                other,
                origin: Origin::Peer(peer),
                ..
            } => self.link(peer, other, published),
            LinkEvent::Unlinked {
                other,
                origin: Origin::Peer(peer),
            } => {
                if let Some(record) = self.peers.get_mut(&peer)
                    && record.links.remove(&other)
                    && record.links.is_empty()
                {
                    record.unlinked_at = Some(published);
                }
            }
            LinkEvent::Undelivered { peer, count, .. } => {
                self.peers.entry(peer).or_default().undelivered += count;
            }
            _ => {}
        }
    }

    fn handle_snapshot(&mut self, node: &Ephemeral, intent: dndm::HandleId, published: u64) {
        let snapshot = node.router.snapshot();
        let mut now: BTreeMap<dndm::PeerId, BTreeSet<dndm::HandleId>> = BTreeMap::new();
        for link in snapshot.links.iter().filter(|l| l.intent == intent) {
            let origin = snapshot
                .interests
                .iter()
                .find(|i| i.id == link.interest)
                .map(|i| i.origin);
            if let Some(Origin::Peer(peer)) = origin {
                now.entry(peer).or_default().insert(link.interest);
            }
        }
        for record in self.peers.values_mut() {
            let had = !record.links.is_empty();
            record
                .links
                .retain(|id| now.values().any(|ids| ids.contains(id)));
            if had && record.links.is_empty() {
                record.unlinked_at = Some(published);
            }
        }
        for (peer, ids) in now {
            for id in ids {
                self.link(peer, id, published);
            }
        }
    }

    fn link(&mut self, peer: dndm::PeerId, interest: dndm::HandleId, published: u64) {
        let record = self.peers.entry(peer).or_default();
        if record.links.is_empty() {
            record.linked_at = published;
            record.unlinked_at = None;
            record.undelivered_at_link = record.undelivered;
        }
        record.links.insert(interest);
    }
}

/// How [`confirm_delivery`] ended.
#[derive(Debug, Default)]
struct Confirmation {
    /// Peers linked at any time during the run.
    peers: usize,
    /// Peers that acknowledged everything published to them.
    confirmed: usize,
    /// Peers whose link ended after they had everything (a `dndm sub --count` that had
    /// enough, say).
    left: usize,
    /// Peers that did not confirm everything: how many messages, and why.
    unconfirmed: Vec<(dndm::PeerId, u64, String)>,
    /// Messages reported undelivered that no recorded peer accounts for (events were missed).
    unattributed: u64,
}

/// Waits until every peer linked to `intent` during the run has acknowledged everything
/// published to it (`MeshEndpoint::flush`), its link ended, or `remote.idle_timeout_ms` + 2 s
/// passed; then counts, per peer, the messages it did not confirm.
///
/// A peer confirms when its flush completes and nothing was reported undelivered to it. A peer
/// whose link ended confirmed unless messages were reported undelivered to it (a peer retired
/// or closed with unacknowledged messages reports them). For a peer still linked without
/// confirming, the count is what was published while it was linked less what it acknowledged
/// (`PeerLink::stats.acked`), plus what was reported undelivered before that link.
async fn confirm_delivery<T: dndm::Message>(
    node: &Ephemeral,
    intent: &dndm::Intent<T>,
    events: &mut LinkEvents,
    linked: &mut Linked,
    published: u64,
) -> Confirmation {
    linked.drain(events, node, intent.id(), published);
    let guard = Duration::from_millis(node.config.remote.idle_timeout_ms) + Duration::from_secs(2);
    let peers: Vec<dndm::PeerId> = linked.peers.keys().copied().collect();
    let flushes = peers
        .iter()
        .map(|peer| async move { tokio::time::timeout(guard, node.mesh.flush(peer)).await });
    let flushed = futures::future::join_all(flushes).await;
    // Read before the events: each loss is counted before its event is sent, so what the events
    // fall short of this total was missed (lagged), not yet to come.
    let undelivered = intent.undelivered();
    // Losses reported while waiting (a peer retired, a link closed) count too.
    linked.drain(events, node, intent.id(), published);
    let acked: BTreeMap<dndm::PeerId, u64> = node
        .mesh
        .links()
        .into_iter()
        .map(|l| (l.peer, l.stats.acked))
        .collect();
    let mut outcome = Confirmation {
        peers: peers.len(),
        ..Confirmation::default()
    };
    let mut attributed = 0;
    for (peer, result) in peers.into_iter().zip(flushed) {
        let Some(record) = linked.peers.get(&peer) else {
            continue;
        };
        attributed += record.undelivered;
        let (count, why) = match result {
            Ok(Ok(())) if record.undelivered == 0 => {
                outcome.confirmed += 1;
                continue;
            }
            Err(_) => {
                // Still linked (or retired just now), without acknowledging everything.
                let offered = record
                    .unlinked_at
                    .unwrap_or(published)
                    .saturating_sub(record.linked_at);
                let since_link = record.undelivered - record.undelivered_at_link;
                let pending = acked.get(&peer).map_or(since_link, |acked| {
                    offered.saturating_sub(*acked).max(since_link)
                });
                (
                    record.undelivered_at_link + pending,
                    format!("no acknowledgement within {} s", guard.as_secs_f64()),
                )
            }
            Ok(Err(_)) if record.undelivered == 0 => {
                outcome.left += 1;
                continue;
            }
            Ok(Err(_)) => (record.undelivered, "went away before confirming".to_owned()),
            Ok(Ok(())) => (record.undelivered, "reported undelivered".to_owned()),
        };
        outcome.unconfirmed.push((peer, count, why));
    }
    outcome.unattributed = undelivered.saturating_sub(attributed);
    outcome
}

/// `dndm pub` ends with this error (exit status [`UNCONFIRMED_EXIT`]) when not every message
/// was confirmed by every peer linked during the run.
#[derive(Debug)]
pub(crate) struct Unconfirmed {
    /// Messages not confirmed, summed over peers.
    messages: u64,
    /// Peers that did not confirm everything.
    peers: usize,
    /// Peers linked at any time during the run.
    linked: usize,
    /// Sends that failed for some subscriber.
    failed: u64,
}

impl std::fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "delivery not confirmed: {} message(s) not confirmed by {} of {} linked peer(s)",
            self.messages, self.peers, self.linked
        )?;
        if self.failed > 0 {
            write!(f, "; {} send(s) failed for some subscriber", self.failed)?;
        }
        Ok(())
    }
}

impl std::error::Error for Unconfirmed {}

/// Exit status of `dndm pub` when delivery was not confirmed ([`Unconfirmed`]).
pub(crate) const UNCONFIRMED_EXIT: u8 = 3;

/// The end of `dndm pub --help`: how the command confirms delivery and its exit statuses.
pub(crate) const PUB_EXIT_HELP: &str = "\
Delivery: at the end of input (or --count), pub waits for every peer that subscribed at any time
during the run to acknowledge every message published while it was linked, for at most
remote.idle_timeout_ms + 2 s (12 s by default). It prints, per peer, how many messages were not
confirmed and why (no acknowledgement in time, went away first, undelivered after a send
timeout).

Exit status: 0 when every linked peer confirmed every message; 1 on an error (no subscriber
within --wait, a bad line, a bad config...); 2 for bad arguments; 3 when delivery was not
confirmed (the last line says how many messages, for how many of the linked peers).";

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

/// Prints each message of `interest` on its own line, control characters escaped
/// ([`escape_line`]), until `count` messages (or the interest
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
        // A peer chose these bytes: escaped, they cannot drive the terminal or forge lines.
        let written = escape_line(&mut out, message.as_line()).and_then(|()| out.flush());
        if written.is_err() {
            // The reader went away (a closed pipe): nothing more to do.
            break;
        }
        printed += 1;
    }
    Ok(printed)
}
