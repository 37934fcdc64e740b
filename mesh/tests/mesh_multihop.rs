//! Multi-hop delivery (`MeshConfig::multi_hop`) on libp2p's memory transport: the whole libp2p
//! stack, trees of tree streams, in one process.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dndm_core::{Keypair, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::{Interest, LinkEvent, Overflow, PublishOptions, Router, SubscribeOptions};
use dndm_test_support::Reading;

/// Only a failure guard: every wait ends as soon as its event happens.
const GUARD: Duration = Duration::from_secs(120);

fn seed(i: usize) -> [u8; 32] {
    let mut seed = [42u8; 32];
    seed[0] = i as u8;
    seed[1] = (i >> 8) as u8;
    seed
}

/// Node `i`'s memory address; tests number their nodes apart (`i` = test * 1000 + node).
fn address(i: usize) -> libp2p::Multiaddr {
    let port = u64::from(std::process::id()) * 10_000 + i as u64;
    format!("/memory/{port}").parse().unwrap()
}

/// Node `i`'s address with its PeerId, as a bootstrap entry.
fn bootstrap(i: usize) -> libp2p::Multiaddr {
    let peer =
        libp2p::PeerId::from_bytes(&Keypair::from_seed(seed(i)).peer_id().to_bytes()).unwrap();
    address(i).with(libp2p::multiaddr::Protocol::P2p(peer))
}

async fn node(i: usize, dial: Option<usize>, max_peers: usize) -> (Router, MeshEndpoint) {
    let router = Router::builder()
        .name(format!("n{i}"))
        .send_timeout(GUARD)
        .build()
        .unwrap();
    let mut config = MeshConfig::default();
    config.transport = Transport::Memory;
    config.listen = vec![address(i)];
    config.dial = dial.map(bootstrap).into_iter().collect();
    config.mdns = false;
    config.max_peers = max_peers;
    config.full_mesh_threshold = max_peers;
    config.multi_hop = true;
    let endpoint = MeshEndpoint::new(Keypair::from_seed(seed(i)), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    (router, endpoint)
}

fn reliable() -> PublishOptions {
    PublishOptions::default().qos(Qos::reliable())
}

fn lossless() -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block)
}

/// Waits until `count` publishers are linked to the interest.
async fn linked(interest: &Interest<Reading>, count: usize) {
    let mut events = interest.events();
    let mut seen = 0;
    while seen < count {
        let event = tokio::time::timeout(GUARD, events.recv())
            .await
            .expect("linked in time")
            .expect("events");
        if matches!(event, LinkEvent::Linked { .. }) {
            seen += 1;
        }
    }
}

/// Receives `count` readings and checks they are `0..count` in order, exactly once.
async fn receive_in_order(mut interest: Interest<Reading>, count: u64) -> Interest<Reading> {
    for want in 0..count {
        let got = tokio::time::timeout(GUARD, interest.recv())
            .await
            .unwrap_or_else(|_| panic!("reading {want} of {count} in time"))
            .unwrap();
        assert_eq!(got.seq, want, "in order, exactly once");
    }
    interest
}

/// Three nodes in a line (each allows one neighbour besides a newcomer's slot): the subscriber
/// at one end hears the publisher at the other through the middle node, which subscribes to
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_hears_a_publisher_it_is_not_connected_to() {
    let a = node(9000, None, 3).await;
    let b = node(9001, Some(9000), 3).await;
    let c = node(9002, Some(9001), 3).await;
    let intent = a.0.publish_with::<Reading>("fleet.a", reliable()).unwrap();
    let interest =
        c.0.subscribe_with::<Reading>("fleet.*", lossless())
            .unwrap();
    linked(&interest, 1).await;
    assert_eq!(c.1.connection_count(), 1, "c is connected to b only");
    let receiver = tokio::spawn(receive_in_order(interest, 500));
    for seq in 0..500 {
        intent.send(Reading { seq }).await.unwrap();
    }
    tokio::time::timeout(GUARD, receiver)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(intent.undelivered(), 0);
    let relay = b.1.tree_stats();
    assert!(relay.overlay.forwarded > 0, "b relayed: {relay:?}");
    assert_eq!(relay.bad_signatures + relay.bad_messages, 0);
    for (router, _) in [c, b, a] {
        router.close().await;
    }
}

/// Samples every node's connection count until stopped; returns the largest seen.
fn watch_connections(
    endpoints: Vec<MeshEndpoint>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let most = AtomicUsize::new(0);
        let mut every = tokio::time::interval(Duration::from_millis(20));
        while !stop.load(Ordering::Relaxed) {
            every.tick().await;
            for endpoint in &endpoints {
                most.fetch_max(endpoint.connection_count(), Ordering::Relaxed);
            }
        }
        most.into_inner()
    })
}

const NODES: usize = 100;
const MAX_PEERS: usize = 8;

/// 100 nodes, each bootstrapped with one random earlier node, at most 8 connections each.
async fn mesh() -> Vec<(Router, MeshEndpoint)> {
    let mut rng = fastrand::Rng::with_seed(17);
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let dial = (i > 0).then(|| rng.usize(..i));
        nodes.push(node(i, dial, MAX_PEERS).await);
    }
    nodes
}

/// One publisher, 99 subscribers of a reliable route: all 99 receive all 10,000 messages in
/// order, exactly once, while no node holds more than 8 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_nodes_one_publisher_ninety_nine_subscribers() {
    const MESSAGES: u64 = 10_000;
    let nodes = mesh().await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_connections(nodes.iter().map(|n| n.1.clone()).collect(), stop.clone());
    let intent = nodes[0]
        .0
        .publish_with::<Reading>("fleet.status", reliable())
        .unwrap();
    let mut interests = Vec::new();
    for (router, _) in &nodes[1..] {
        interests.push(
            router
                .subscribe_with::<Reading>("fleet.status", lossless())
                .unwrap(),
        );
    }
    for (k, interest) in interests.iter().enumerate() {
        if tokio::time::timeout(GUARD, linked(interest, 1))
            .await
            .is_err()
        {
            let n = &nodes[k + 1].1;
            panic!(
                "DBG node {} not linked: {:?} conns {} streams {:?}",
                k + 1,
                n.tree_stats(),
                n.connection_count(),
                n.tree_streams()
            );
        }
    }
    let receivers: Vec<_> = interests
        .into_iter()
        .map(|i| tokio::spawn(receive_in_order(i, MESSAGES)))
        .collect();
    for seq in 0..MESSAGES {
        intent.send(Reading { seq }).await.unwrap();
    }
    let mut failed = Vec::new();
    for (k, receiver) in receivers.into_iter().enumerate() {
        if !matches!(tokio::time::timeout(GUARD, receiver).await, Ok(Ok(_))) {
            failed.push(k + 1);
        }
    }
    let index: std::collections::HashMap<_, _> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.1.peer_id(), i))
        .collect();
    for &k in &failed {
        eprintln!(
            "DBG node {k} failed: {:?} conns {}",
            nodes[k].1.tree_stats(),
            nodes[k].1.connection_count()
        );
        for n in nodes[k].1.tree_neighbours() {
            let other = &nodes[index[&n.peer]].1;
            let back = other
                .tree_neighbours()
                .into_iter()
                .find(|m| m.peer == nodes[k].1.peer_id());
            let conns = nodes[k]
                .1
                .mesh_peers()
                .into_iter()
                .find(|p| p.peer == n.peer)
                .map(|p| p.connections);
            eprintln!(
                "DBG   neighbour {} {:?} conns {:?} back {:?}",
                index[&n.peer], n, conns, back
            );
        }
        let mut at = k;
        for _ in 0..12 {
            let streams = nodes[at].1.tree_streams();
            let Some(s) = streams.first() else { break };
            eprintln!(
                "DBG   {at}: {:?} parent {:?}",
                s,
                s.parent.map(|p| index[&p])
            );
            let Some(p) = s.parent else { break };
            at = index[&p];
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
    stop.store(true, Ordering::Relaxed);
    let most = watcher.await.unwrap();
    assert!(
        most <= MAX_PEERS,
        "a node held {most} connections (bound {MAX_PEERS})"
    );
    assert_eq!(intent.undelivered(), 0);
    let multi_hop = nodes
        .iter()
        .filter(|n| n.1.tree_stats().overlay.forwarded > 0)
        .count();
    assert!(
        multi_hop > 1,
        "relays other than the publisher carried the stream"
    );
    for (_, endpoint) in &nodes {
        let stats = endpoint.tree_stats();
        assert_eq!(stats.overlay.lost, 0, "{stats:?}");
        assert!(stats.max_neighbours < MAX_PEERS, "{stats:?}");
    }
    for (router, _) in nodes.iter().rev() {
        router.close().await;
    }
}
