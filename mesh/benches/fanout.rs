//! Fan-out: one publisher, many subscribers, over dndm's multi-hop trees and over plain libp2p
//! gossipsub, in one process on libp2p's memory transport (issue #17).
//!
//! `cargo bench -p dndm-mesh --bench fanout` (add `-- --nodes N`, `-- --messages N`,
//! `-- --size N` (repeatable), `-- --only dndm` or `-- --only gossipsub`, `-- --gossip-window W`:
//! gossipsub's publisher waits while the subscribers' average is `W` messages behind, a flow
//! control gossipsub lacks; default 0, publish as fast as its queues take).
//!
//! Both systems get `--nodes` nodes (default 100) with Noise and Yamux over the memory
//! transport. dndm's nodes are bootstrapped with one random earlier node each and `max_peers`
//! = 8 (its membership policy picks the neighbours); gossipsub's nodes dial up to three random
//! earlier nodes that have fewer than seven connections (gossipsub has no peer discovery of its
//! own), so both run on graphs of degree about 6–7. Node 0 publishes `--messages` messages
//! (default 10,000) of each `--size` (default 8 B and 1 KiB); every other node subscribes. The
//! clock runs from the first publish until every subscriber has every message, or until
//! nothing arrived for 5 s (gossipsub may drop).
//!
//! Printed per system and size: messages delivered (of subscribers × messages), messages per
//! second per subscriber, and bytes sent per node:
//! - dndm: bytes written to tree streams (`TreeStats::bytes_sent`), without the Noise and Yamux
//!   framing (about 30 bytes per write);
//! - gossipsub: bytes written to the memory transport, Noise and Yamux framing included.
#![allow(missing_docs, clippy::unwrap_used, unreachable_pub)]

use std::error::Error;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dndm_core::{Keypair, Message, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::{Overflow, PublishOptions, Router, SubscribeOptions};
use futures::{AsyncRead, AsyncWrite, FutureExt as _, StreamExt as _};
use libp2p::gossipsub;
use libp2p::swarm::SwarmEvent;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// Stop waiting when no subscriber received anything for this long.
const QUIET: Duration = Duration::from_secs(5);
/// Longest wait for a mesh to form.
const FORMING: Duration = Duration::from_secs(120);
/// Most connections of a node (dndm's `max_peers`; gossipsub's dials stop below it).
const MAX_PEERS: usize = 8;
/// How often progress counters are read.
const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// dndm, `MeshConfig::multi_hop`, reliable route, blocking subscribers.
    Dndm,
    /// libp2p gossipsub, default configuration, signed messages.
    Gossipsub,
}

/// What one run measured.
#[derive(Debug)]
struct Outcome {
    delivered: u64,
    expected: u64,
    seconds: f64,
    /// Bytes sent, summed over the nodes.
    bytes_sent: u64,
}

/// The message dndm carries.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    /// The payload.
    #[prost(bytes = "bytes", tag = "1")]
    data: Bytes,
}

impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "fanout";
}

impl Message for Blob {}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let values = |name: &str| -> Vec<String> {
        args.windows(2)
            .filter(|w| w[0] == name)
            .map(|w| w[1].clone())
            .collect()
    };
    let number = |name: &str, default: u64| -> Result<u64> {
        match values(name).last() {
            Some(v) => v.parse().map_err(|e| format!("{name} {v}: {e}").into()),
            None => Ok(default),
        }
    };
    let nodes = usize::try_from(number("--nodes", 100)?)?;
    let messages = number("--messages", 10_000)?;
    let window = number("--gossip-window", 0)?;
    if nodes < 2 || messages == 0 {
        return Err("--nodes must be at least 2 and --messages at least 1".into());
    }
    let mut sizes = Vec::new();
    for v in values("--size") {
        let size: usize = v.parse().map_err(|e| format!("--size {v}: {e}"))?;
        if !(8..=60_000).contains(&size) {
            return Err(format!("--size {size}: must be 8 to 60000").into());
        }
        sizes.push(size);
    }
    if sizes.is_empty() {
        sizes = vec![8, 1024];
    }
    let mut systems = Vec::new();
    for v in values("--only") {
        systems.push(match v.as_str() {
            "dndm" => System::Dndm,
            "gossipsub" => System::Gossipsub,
            other => return Err(format!("--only {other}: dndm or gossipsub").into()),
        });
    }
    if systems.is_empty() {
        systems = vec![System::Dndm, System::Gossipsub];
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "| system | size | delivered | time (s) | msgs/s per subscriber | MB sent per node | bytes sent per payload byte delivered |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (run, &size) in sizes.iter().enumerate() {
        for (k, system) in systems.iter().enumerate() {
            // Memory addresses of every run apart.
            let base = (run * systems.len() + k) * 1000;
            eprintln!("{system:?}, {size} B: {nodes} nodes forming");
            let outcome = match system {
                System::Dndm => runtime.block_on(dndm(nodes, messages, size, base))?,
                System::Gossipsub => {
                    runtime.block_on(gossip(nodes, messages, size, base, window))?
                }
            };
            let subscribers = nodes as f64 - 1.0;
            let payload = outcome.delivered as f64 * size as f64;
            println!(
                "| {system:?} | {size} B | {} of {} | {:.2} | {:.0} | {:.2} | {:.2} |",
                outcome.delivered,
                outcome.expected,
                outcome.seconds,
                outcome.delivered as f64 / subscribers / outcome.seconds,
                outcome.bytes_sent as f64 / nodes as f64 / 1e6,
                outcome.bytes_sent as f64 / payload.max(1.0),
            );
        }
    }
    Ok(())
}

fn seed(i: usize) -> [u8; 32] {
    let mut seed = [7u8; 32];
    seed[0] = i as u8;
    seed[1] = (i >> 8) as u8;
    seed
}

fn memory(port: usize) -> Result<libp2p::Multiaddr> {
    let port = u64::from(std::process::id()) * 100_000 + port as u64;
    Ok(format!("/memory/{port}").parse()?)
}

fn payload(size: usize, seq: u64) -> Vec<u8> {
    let mut data = vec![0xa5; size];
    data[..8].copy_from_slice(&seq.to_le_bytes());
    data
}

/// Waits until `done` holds, checking every 50 ms, at most `guard`.
async fn wait_for(guard: Duration, what: &str, done: impl Fn() -> bool) -> Result<()> {
    let start = Instant::now();
    let mut poll = tokio::time::interval(POLL);
    while !done() {
        if start.elapsed() > guard {
            return Err(format!("{what} did not happen within {guard:?}").into());
        }
        poll.tick().await;
    }
    Ok(())
}

/// Waits until every counter reaches `target`, or none moved for [`QUIET`]; returns the
/// moment the last one arrived.
async fn wait_delivered(counts: &[Arc<AtomicU64>], target: u64) -> Instant {
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let mut last = (total(), Instant::now());
    let mut poll = tokio::time::interval(POLL);
    loop {
        let now = total();
        if now == target * counts.len() as u64 {
            return Instant::now();
        }
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > QUIET {
            return last.1;
        }
        poll.tick().await;
    }
}

async fn dndm(nodes: usize, messages: u64, size: usize, base: usize) -> Result<Outcome> {
    let mut rng = fastrand::Rng::with_seed(17);
    let mut peers: Vec<(Router, MeshEndpoint)> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let router = Router::builder().name(format!("n{i}")).build()?;
        let mut config = MeshConfig::default();
        config.transport = Transport::Memory;
        config.listen = vec![memory(base + i)?];
        if i > 0 {
            let j = rng.usize(..i);
            let peer = libp2p::PeerId::from_bytes(&peers[j].1.peer_id().to_bytes())?;
            config.dial = vec![memory(base + j)?.with(libp2p::multiaddr::Protocol::P2p(peer))];
        }
        config.mdns = false;
        config.max_peers = MAX_PEERS;
        config.full_mesh_threshold = MAX_PEERS;
        config.multi_hop = true;
        let endpoint = MeshEndpoint::new(Keypair::from_seed(seed(base + i)), config)?;
        router.attach(Arc::new(endpoint.clone())).await?;
        peers.push((router, endpoint));
    }
    let reliable = PublishOptions::default().qos(Qos::reliable());
    let intent = peers[0].0.publish_with::<Blob>("fanout.data", reliable)?;
    let counts: Vec<Arc<AtomicU64>> = (1..nodes).map(|_| Arc::default()).collect();
    let mut receivers = Vec::new();
    for ((router, _), count) in peers[1..].iter().zip(&counts) {
        let options = SubscribeOptions::default()
            .capacity(1024)
            .overflow(Overflow::Block);
        let mut interest = router.subscribe_with::<Blob>("fanout.data", options)?;
        let linked = || {
            let snapshot = router.snapshot();
            snapshot.interests.iter().any(|i| i.publishers > 0)
        };
        wait_for(FORMING, "a subscriber linking", linked).await?;
        let count = count.clone();
        receivers.push(tokio::spawn(async move {
            while interest.recv().await.is_ok() {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let sent_before: u64 = peers.iter().map(|p| p.1.tree_stats().bytes_sent).sum();
    let start = Instant::now();
    for seq in 0..messages {
        let data = Bytes::from(payload(size, seq));
        intent.send(Blob { data }).await?;
    }
    let end = wait_delivered(&counts, messages).await;
    let sent_after: u64 = peers.iter().map(|p| p.1.tree_stats().bytes_sent).sum();
    let delivered = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    drop(intent);
    for (router, _) in peers.iter().rev() {
        router.close().await;
    }
    for receiver in receivers {
        receiver.abort();
    }
    Ok(Outcome {
        delivered,
        expected: messages * (nodes as u64 - 1),
        seconds: (end - start).as_secs_f64(),
        bytes_sent: sent_after - sent_before,
    })
}

/// A byte stream that counts what is written to it.
struct Counted<S> {
    inner: S,
    sent: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            self.sent.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

type GossipSwarm = libp2p::Swarm<gossipsub::Behaviour>;

fn gossip_node(i: usize, sent: Arc<AtomicU64>) -> Result<GossipSwarm> {
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(seed(i))?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(|key| {
            use libp2p::Transport as _;
            let noise = libp2p::noise::Config::new(key)
                .map_err(|e| -> Box<dyn Error + Send + Sync> { Box::new(e) })?;
            Ok(libp2p::core::transport::MemoryTransport::default()
                .map(move |channel, _| Counted {
                    inner: channel,
                    sent: sent.clone(),
                })
                .upgrade(libp2p::core::upgrade::Version::V1)
                .authenticate(noise)
                .multiplex(libp2p::yamux::Config::default()))
        })?
        .with_behaviour(|key| {
            let config = gossipsub::Config::default();
            let authenticity = gossipsub::MessageAuthenticity::Signed(key.clone());
            gossipsub::Behaviour::new(authenticity, config)
                .map_err(|e| -> Box<dyn Error + Send + Sync> { e.into() })
        })
        .map_err(|e| format!("{e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    Ok(swarm)
}

/// Per node: subscribed, messages received, peers in its topic mesh.
#[derive(Default)]
struct GossipProgress {
    /// Distinct messages received.
    received: Arc<AtomicU64>,
    /// Messages delivered again (gossipsub forgets ids after its duplicate cache time).
    duplicates: AtomicU64,
    seen: std::sync::Mutex<std::collections::HashSet<u64>>,
    mesh: AtomicUsize,
}

async fn gossip(
    nodes: usize,
    messages: u64,
    size: usize,
    base: usize,
    window: u64,
) -> Result<Outcome> {
    let topic = gossipsub::IdentTopic::new("fanout.data");
    let sent: Vec<Arc<AtomicU64>> = (0..nodes).map(|_| Arc::default()).collect();
    let mut swarms = Vec::with_capacity(nodes);
    for (i, sent) in sent.iter().enumerate() {
        let mut swarm = gossip_node(base + i, sent.clone())?;
        swarm.listen_on(memory(base + i)?)?;
        swarm
            .behaviour_mut()
            .subscribe(&topic)
            .map_err(|e| format!("subscribe: {e}"))?;
        swarms.push(swarm);
    }
    // Up to three random earlier nodes with fewer than 7 connections each.
    let mut rng = fastrand::Rng::with_seed(17);
    let mut degree = vec![0usize; nodes];
    for i in 1..nodes {
        let mut chosen = Vec::new();
        for _ in 0..8 {
            let j = rng.usize(..i);
            if chosen.len() < 3 && !chosen.contains(&j) && degree[j] < MAX_PEERS - 1 {
                chosen.push(j);
            }
        }
        if chosen.is_empty() {
            chosen.push(rng.usize(..i));
        }
        for j in chosen {
            degree[i] += 1;
            degree[j] += 1;
            let peer = *swarms[j].local_peer_id();
            let address = memory(base + j)?.with(libp2p::multiaddr::Protocol::P2p(peer));
            swarms[i].dial(address)?;
        }
    }
    let progress: Vec<Arc<GossipProgress>> = (0..nodes).map(|_| Arc::default()).collect();
    let stop = tokio_util::sync::CancellationToken::new();
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let received: Vec<Arc<AtomicU64>> = progress[1..].iter().map(|p| p.received.clone()).collect();
    for (i, swarm) in swarms.into_iter().enumerate() {
        let progress = progress[i].clone();
        let stop = stop.clone();
        let topic = topic.clone();
        let start = start_rx.clone();
        let to_publish = if i == 0 { messages } else { 0 };
        let window = (i == 0 && window > 0).then(|| (window, received.clone()));
        tasks.push(tokio::spawn(run_gossip(
            swarm, topic, progress, stop, start, to_publish, size, window,
        )));
    }
    let formed = || {
        progress[1..]
            .iter()
            .all(|p| p.mesh.load(Ordering::Relaxed) > 0)
    };
    wait_for(FORMING, "the gossipsub mesh forming", formed).await?;
    // A few heartbeats (1 s each) for the meshes to reach their size: part of the set-up, not
    // a synchronisation the measurement depends on.
    let settle = Instant::now();
    wait_for(FORMING, "three heartbeats", || {
        settle.elapsed() >= Duration::from_secs(3)
    })
    .await?;
    let sent_before: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let start = Instant::now();
    start_tx.send(true)?;
    let counts: Vec<Arc<AtomicU64>> = progress[1..].iter().map(|p| p.received.clone()).collect();
    let end = wait_delivered(&counts, messages).await;
    let sent_after: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let delivered = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    let duplicates: u64 = progress[1..]
        .iter()
        .map(|p| p.duplicates.load(Ordering::Relaxed))
        .sum();
    eprintln!("gossipsub: {duplicates} messages delivered again (not counted)");
    stop.cancel();
    for task in tasks {
        task.await??;
    }
    Ok(Outcome {
        delivered,
        expected: messages * (nodes as u64 - 1),
        seconds: (end - start).as_secs_f64(),
        bytes_sent: sent_after - sent_before,
    })
}

/// Drives one gossipsub node; the publisher publishes `to_publish` messages once started, as
/// fast as its queues take them (a full queue makes it let the swarm run first).
#[allow(clippy::too_many_arguments)] // one task's whole set-up, passed once
async fn run_gossip(
    mut swarm: GossipSwarm,
    topic: gossipsub::IdentTopic,
    progress: Arc<GossipProgress>,
    stop: tokio_util::sync::CancellationToken,
    mut start: tokio::sync::watch::Receiver<bool>,
    to_publish: u64,
    size: usize,
    window: Option<(u64, Vec<Arc<AtomicU64>>)>,
) -> Result<()> {
    let hash = topic.hash();
    let mut published = 0u64;
    let mut recheck = tokio::time::interval(Duration::from_millis(1));
    loop {
        // With a window, publish only while the subscribers' average is less than `window`
        // messages behind (an application-level flow control gossipsub itself lacks).
        let room = window.as_ref().is_none_or(|(window, counts)| {
            let total: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
            published < total / counts.len().max(1) as u64 + window
        });
        let unfinished = *start.borrow() && published < to_publish;
        let publishing = unfinished && room;
        if publishing {
            for _ in 0..64 {
                match swarm
                    .behaviour_mut()
                    .publish(topic.clone(), payload(size, published))
                {
                    Ok(_) => published += 1,
                    Err(gossipsub::PublishError::AllQueuesFull(_)) => break,
                    Err(e) => return Err(format!("publish: {e}").into()),
                }
                if published == to_publish {
                    break;
                }
            }
            // Let the swarm carry what was queued, then publish more.
            while let Some(event) = swarm.next().now_or_never() {
                on_gossip_event(event, &progress);
            }
            progress.mesh.store(
                swarm.behaviour().mesh_peers(&hash).count(),
                Ordering::Relaxed,
            );
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = start.changed() => {}
            _ = recheck.tick(), if unfinished => {}
            event = swarm.next() => on_gossip_event(event, &progress),
        }
        progress.mesh.store(
            swarm.behaviour().mesh_peers(&hash).count(),
            Ordering::Relaxed,
        );
    }
}

fn on_gossip_event(event: Option<SwarmEvent<gossipsub::Event>>, progress: &GossipProgress) {
    if let Some(SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. })) = event {
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&message.data[..8]);
        let fresh = progress
            .seen
            .lock()
            .unwrap()
            .insert(u64::from_le_bytes(seq));
        let counter = if fresh {
            &*progress.received
        } else {
            &progress.duplicates
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
