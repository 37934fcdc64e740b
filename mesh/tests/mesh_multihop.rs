//! Multi-hop delivery (`MeshConfig::multi_hop`) on libp2p's memory transport: the whole libp2p
//! stack, trees of tree streams, in one process.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dndm_core::{Keypair, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::{Interest, Overflow, PublishOptions, Router, SubscribeOptions};
use dndm_test_support::Reading;

/// The 100-node tests take both cores; they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    node_at(i, i, dial, max_peers).await
}

/// Node `i` (its identity) listening on address `at`.
async fn node_at(
    i: usize,
    at: usize,
    dial: Option<usize>,
    max_peers: usize,
) -> (Router, MeshEndpoint) {
    let router = Router::builder()
        .name(format!("n{i}"))
        .send_timeout(GUARD)
        .build()
        .unwrap();
    let mut config = MeshConfig::default();
    config.transport = Transport::Memory;
    config.listen = vec![address(at)];
    config.dial = dial.map(bootstrap).into_iter().collect();
    config.mdns = false;
    config.max_peers = max_peers;
    config.full_mesh_threshold = max_peers;
    config.multi_hop = true;
    let endpoint = MeshEndpoint::new(Keypair::from_seed(seed(i)), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    (router, endpoint)
}

/// What a failing test shows about node `k`'s view of `origin`'s tree: its links, and the
/// path up toward the origin, hop by hop.
fn describe(nodes: &[&MeshEndpoint], k: usize, origin: dndm_core::PeerId) -> String {
    let index: std::collections::HashMap<_, _> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.peer_id(), i))
        .collect();
    let mut text = format!(
        "node {k} ({}): {:?}, {} connections\n",
        nodes[k].peer_id(),
        nodes[k].tree_stats(),
        nodes[k].connection_count()
    );
    for n in nodes[k].tree_neighbours() {
        text += &format!(
            "  neighbour {:?}: up {} queued {}\n",
            index.get(&n.peer),
            n.up,
            n.queued
        );
    }
    let mut at = k;
    for _ in 0..16 {
        let streams = nodes[at].tree_streams();
        let Some(s) = streams.iter().find(|s| s.origin == origin) else {
            text += &format!("  {at}: does not know the stream\n");
            break;
        };
        text += &format!("  {at}: {s:?}\n");
        match s.parent.and_then(|p| index.get(&p)) {
            Some(&parent) => {
                let me = nodes[at].peer_id();
                let link = nodes[parent]
                    .tree_neighbours()
                    .into_iter()
                    .find(|n| n.peer == me);
                text += &format!("    its parent {parent}'s link to it: {link:?}\n");
                at = parent;
            }
            None => break,
        }
    }
    text
}

/// The groups of nodes connected by tree links that are up (what a failing test shows: a
/// group cut off from the publisher, node 0, cannot receive), with each cut-off node's state.
fn components(nodes: &[&MeshEndpoint]) -> String {
    let index: std::collections::HashMap<_, _> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.peer_id(), i))
        .collect();
    let mut group = vec![usize::MAX; nodes.len()];
    let mut text = String::new();
    for start in 0..nodes.len() {
        if group[start] != usize::MAX {
            continue;
        }
        let mut members = vec![start];
        group[start] = start;
        let mut at = 0;
        while at < members.len() {
            let k = members[at];
            at += 1;
            for n in nodes[k].tree_neighbours().into_iter().filter(|n| n.up) {
                if let Some(&j) = index.get(&n.peer)
                    && group[j] == usize::MAX
                {
                    group[j] = start;
                    members.push(j);
                }
            }
        }
        members.sort_unstable();
        text += &format!("group of {}: {members:?}\n", members.len());
        if start != 0 {
            for &k in &members {
                let stats = nodes[k].tree_stats();
                text += &format!(
                    "  {k}: {} neighbours, {} known, {} dials ({} failed)\n",
                    stats.neighbours, stats.known_peers, stats.dials, stats.dial_failures
                );
            }
        }
    }
    text
}

fn reliable() -> PublishOptions {
    PublishOptions::default().qos(Qos::reliable())
}

fn lossless() -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block)
}

/// Waits until every subscriber (`(node, interest)`) has its one publisher, node 0, linked;
/// a failure describes the subscribers that did not.
async fn all_linked(
    nodes: &[&MeshEndpoint],
    routers: &[&Router],
    interests: &[(usize, &Interest<Reading>)],
) {
    let publishers = |k: usize, interest: &Interest<Reading>| {
        let snapshot = routers[k].snapshot();
        let info = snapshot.interests.iter().find(|i| i.id == interest.id());
        info.map_or(0, |i| i.publishers)
    };
    let waiting = async {
        for (k, interest) in interests {
            let mut events = interest.events();
            while publishers(*k, interest) == 0 {
                // Lagging behind the events is fine: the count is read again.
                let _ = events.recv().await;
            }
        }
    };
    if tokio::time::timeout(GUARD, waiting).await.is_err() {
        eprintln!("{}", components(nodes));
        let origin = nodes[0].peer_id();
        for (k, interest) in interests {
            if publishers(*k, interest) == 0 {
                eprintln!("not linked: {}", describe(nodes, *k, origin));
            }
        }
        panic!("some subscribers did not link in time");
    }
}

/// Waits until `count` publishers are linked to the interest.
async fn linked(router: &Router, interest: &Interest<Reading>, count: usize) {
    let mut events = interest.events();
    let publishers = || {
        let snapshot = router.snapshot();
        let info = snapshot.interests.iter().find(|i| i.id == interest.id());
        info.map_or(0, |i| i.publishers)
    };
    let linking = async {
        while publishers() < count {
            // Lagging behind the events is fine: the count is read again.
            let _ = events.recv().await;
        }
    };
    if tokio::time::timeout(GUARD, linking).await.is_err() {
        panic!("{} of {count} publishers linked in time", publishers());
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
    let _serial = SERIAL.lock().await;
    // The ends take one neighbour each (plus a newcomer's slot), the middle two.
    let a = node(9000, None, 2).await;
    let b = node(9001, Some(9000), 3).await;
    let c = node(9002, Some(9001), 2).await;
    let intent = a.0.publish_with::<Reading>("fleet.a", reliable()).unwrap();
    let interest =
        c.0.subscribe_with::<Reading>("fleet.*", lossless())
            .unwrap();
    linked(&c.0, &interest, 1).await;
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

/// Stops the connection watcher and checks that no node ever held more than the bound.
async fn assert_bound_held(watcher: tokio::task::JoinHandle<usize>, stop: &AtomicBool) {
    stop.store(true, Ordering::Relaxed);
    let most = watcher.await.unwrap();
    assert!(
        most <= MAX_PEERS,
        "a node held {most} connections (bound {MAX_PEERS})"
    );
}

const NODES: usize = 100;
const MAX_PEERS: usize = 8;

/// 100 nodes (numbered from `base`), each bootstrapped with one random earlier node, at most
/// 8 connections each.
async fn mesh(base: usize) -> Vec<(Router, MeshEndpoint)> {
    let mut rng = fastrand::Rng::with_seed(17);
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let dial = (i > 0).then(|| base + rng.usize(..i));
        nodes.push(node(base + i, dial, MAX_PEERS).await);
    }
    nodes
}

/// One publisher, 99 subscribers of a reliable route: all 99 receive all 10,000 messages in
/// order, exactly once, while no node holds more than 8 connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_nodes_one_publisher_ninety_nine_subscribers() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .with_test_writer()
        .try_init();
    const MESSAGES: u64 = 10_000;
    let _serial = SERIAL.lock().await;
    let nodes = mesh(0).await;
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
    let endpoints: Vec<&MeshEndpoint> = nodes.iter().map(|n| &n.1).collect();
    let routers: Vec<&Router> = nodes.iter().map(|n| &n.0).collect();
    let waiting: Vec<(usize, &Interest<Reading>)> = interests
        .iter()
        .enumerate()
        .map(|(k, i)| (k + 1, i))
        .collect();
    let start = std::time::Instant::now();
    all_linked(&endpoints, &routers, &waiting).await;
    eprintln!("all linked in {:?}", start.elapsed());
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
    eprintln!("all delivered {:?} after the start", start.elapsed());
    for &k in &failed {
        eprintln!("{}", describe(&endpoints, k, nodes[0].1.peer_id()));
    }
    assert!(
        failed.is_empty(),
        "subscribers {failed:?} did not get everything"
    );
    assert_bound_held(watcher, &stop).await;
    assert_eq!(intent.undelivered(), 0);
    let multi_hop = nodes
        .iter()
        .filter(|n| n.1.tree_stats().overlay.forwarded > 0)
        .count();
    assert!(
        multi_hop > 1,
        "relays other than the publisher carried the stream"
    );
    let mut degrees = [0usize; MAX_PEERS];
    let (mut dials, mut failures) = (0, 0);
    let mut connections = [0usize; MAX_PEERS + 1];
    let (mut duplicates, mut linkless) = (0, 0);
    for (_, endpoint) in &nodes {
        connections[endpoint.connection_count()] += 1;
        let peers = endpoint.mesh_peers();
        duplicates += peers.iter().filter(|p| p.connections > 1).count();
        let tree: Vec<_> = endpoint.tree_neighbours().iter().map(|n| n.peer).collect();
        linkless += peers
            .iter()
            .filter(|p| p.connections > 0 && !tree.contains(&p.peer))
            .count();
        let stats = endpoint.tree_stats();
        assert_eq!(stats.overlay.lost, 0, "{stats:?}");
        assert!(stats.max_neighbours < MAX_PEERS, "{stats:?}");
        degrees[stats.neighbours] += 1;
        (dials, failures) = (dials + stats.dials, failures + stats.dial_failures);
    }
    eprintln!(
        "nodes by neighbours {degrees:?}, by connections {connections:?} ({duplicates} second connections, {linkless} peers without a tree link); {dials} dials, {failures} failed"
    );
    for (router, _) in nodes.iter().rev() {
        router.close().await;
    }
}

/// 99 publishers, one `**` subscriber: it receives every message of every publisher, each
/// publisher's in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_nodes_ninety_nine_publishers_one_wildcard_subscriber() {
    const MESSAGES: u64 = 20;
    const BASE: usize = 1000;
    let _serial = SERIAL.lock().await;
    let nodes = mesh(BASE).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_connections(nodes.iter().map(|n| n.1.clone()).collect(), stop.clone());
    let mut interest = nodes[0]
        .0
        .subscribe_with::<Reading>("fleet.**", lossless())
        .unwrap();
    let mut intents = Vec::new();
    for (i, (router, _)) in nodes.iter().enumerate().skip(1) {
        let intent = router
            .publish_with::<Reading>(&format!("fleet.n{i}.status"), reliable())
            .unwrap();
        intents.push((i as u64, intent));
    }
    let waited = tokio::time::timeout(GUARD, linked(&nodes[0].0, &interest, NODES - 1));
    if waited.await.is_err() {
        let endpoints: Vec<&MeshEndpoint> = nodes.iter().map(|n| &n.1).collect();
        let known: Vec<_> = nodes[0]
            .1
            .tree_streams()
            .iter()
            .filter(|s| s.confirmed)
            .map(|s| s.origin)
            .collect();
        for (i, n) in nodes.iter().enumerate().skip(1) {
            if !known.contains(&n.1.peer_id()) {
                eprintln!(
                    "publisher {i} not linked:\n{}",
                    describe(&endpoints, 0, n.1.peer_id())
                );
            }
        }
        panic!("the wildcard subscriber did not link every publisher in time");
    }
    // Per publisher, the next sequence number expected (read by the test if it fails).
    let progress = Arc::new(std::sync::Mutex::new(vec![0u64; NODES]));
    let receiver = tokio::spawn({
        let progress = progress.clone();
        async move {
            for _ in 0..(NODES as u64 - 1) * MESSAGES {
                let got = interest.recv().await.unwrap();
                let (publisher, seq) = ((got.seq >> 32) as usize, got.seq & 0xffff_ffff);
                let mut next = progress.lock().unwrap();
                assert_eq!(
                    seq, next[publisher],
                    "publisher {publisher}: in order, exactly once"
                );
                next[publisher] += 1;
            }
            interest
        }
    });
    // Publishers take turns, so every tree carries traffic at once.
    for seq in 0..MESSAGES {
        for (i, intent) in &intents {
            intent
                .send(Reading {
                    seq: (i << 32) | seq,
                })
                .await
                .unwrap();
        }
    }
    if tokio::time::timeout(GUARD, receiver).await.is_err() {
        let endpoints: Vec<&MeshEndpoint> = nodes.iter().map(|n| &n.1).collect();
        let next = progress.lock().unwrap().clone();
        for (i, got) in next.iter().enumerate().skip(1) {
            if *got != MESSAGES {
                eprintln!(
                    "publisher {i}: {got} of {MESSAGES} received\n{}",
                    describe(&endpoints, 0, nodes[i].1.peer_id())
                );
            }
        }
        panic!("the wildcard subscriber did not receive everything in time");
    }
    assert_bound_held(watcher, &stop).await;
    for (_, intent) in &intents {
        assert_eq!(intent.undelivered(), 0);
    }
    for (router, _) in nodes.iter().rev() {
        router.close().await;
    }
}

/// As the one-publisher test, while ten nodes leave one after another and come back: every
/// subscriber that stayed still receives all messages, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_stay_lose_nothing_while_ten_nodes_leave_and_rejoin() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .with_test_writer()
        .try_init();
    const MESSAGES: u64 = 10_000;
    const BASE: usize = 2000;
    let _serial = SERIAL.lock().await;
    let mut nodes: Vec<Option<(Router, MeshEndpoint)>> =
        mesh(BASE).await.into_iter().map(Some).collect();
    let mut rng = fastrand::Rng::with_seed(99);
    let mut leaving: Vec<usize> = (1..NODES).collect();
    rng.shuffle(&mut leaving);
    leaving.truncate(NODES / 10);
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints = nodes.iter().flatten().map(|n| n.1.clone()).collect();
    let watcher = watch_connections(endpoints, stop.clone());
    let start = std::time::Instant::now();
    let publisher = nodes[0].as_ref().unwrap().0.clone();
    let intent = publisher
        .publish_with::<Reading>("fleet.status", reliable())
        .unwrap();
    let mut interests = Vec::new();
    for (k, node) in nodes.iter().enumerate().skip(1) {
        let interest = node
            .as_ref()
            .unwrap()
            .0
            .subscribe_with::<Reading>("fleet.status", lossless())
            .unwrap();
        interests.push((k, interest));
    }
    {
        let endpoints: Vec<&MeshEndpoint> = nodes.iter().flatten().map(|n| &n.1).collect();
        let routers: Vec<&Router> = nodes.iter().flatten().map(|n| &n.0).collect();
        let waiting: Vec<(usize, &Interest<Reading>)> =
            interests.iter().map(|(k, i)| (*k, i)).collect();
        all_linked(&endpoints, &routers, &waiting).await;
    }
    eprintln!("all linked in {:?}", start.elapsed());
    let mut receivers = Vec::new();
    for (k, interest) in interests {
        if leaving.contains(&k) {
            // Its node leaves; what it got is not checked.
            receivers.push((k, None));
            drop(interest);
        } else {
            receivers.push((k, Some(tokio::spawn(receive_in_order(interest, MESSAGES)))));
        }
    }
    let mut rejoined = Vec::new();
    for seq in 0..MESSAGES {
        // Every 800 messages a node leaves; 400 messages later it is back, bootstrapped with
        // a random node that is up.
        let step = (seq / 400) as usize;
        if seq % 400 == 0 && step.is_multiple_of(2) && step / 2 < leaving.len() {
            let k = leaving[step / 2];
            let (router, _) = nodes[k].take().unwrap();
            router.close().await;
        }
        if seq % 400 == 0 && step % 2 == 1 && step / 2 < leaving.len() {
            let k = leaving[step / 2];
            let up: Vec<usize> = (0..NODES).filter(|i| nodes[*i].is_some()).collect();
            // Same identity, a new address (as a restarted host may get).
            let bootstrap = Some(BASE + up[rng.usize(..up.len())]);
            let back = node_at(BASE + k, BASE + 500 + k, bootstrap, MAX_PEERS).await;
            // Back as a subscriber too: it joins the tree again (from now on). Its interest is
            // never read, on purpose: a subscriber that stops reading must not stall the
            // streams and children of its node.
            rejoined.push(
                back.0
                    .subscribe_with::<Reading>("fleet.status", lossless())
                    .unwrap(),
            );
            nodes[k] = Some(back);
        }
        intent.send(Reading { seq }).await.unwrap();
    }
    eprintln!("all sent {:?} after the start", start.elapsed());
    let mut failed = Vec::new();
    for (k, receiver) in receivers {
        if let Some(receiver) = receiver
            && !matches!(tokio::time::timeout(GUARD, receiver).await, Ok(Ok(_)))
        {
            failed.push(k);
        }
    }
    if !failed.is_empty() {
        let up: Vec<&MeshEndpoint> = nodes.iter().flatten().map(|n| &n.1).collect();
        // `describe` numbers the nodes that are up.
        let origin = up[0].peer_id();
        eprintln!("{}", components(&up));
        for &k in &failed {
            let at = nodes[..k].iter().flatten().count();
            eprintln!("subscriber {k}: {}", describe(&up, at, origin));
        }
        panic!("subscribers {failed:?} did not get everything");
    }
    eprintln!("all delivered {:?} after the start", start.elapsed());
    assert_bound_held(watcher, &stop).await;
    assert_eq!(intent.undelivered(), 0);
    for (k, node) in nodes.iter().enumerate() {
        let stats = node.as_ref().unwrap().1.tree_stats();
        if !leaving.contains(&k) {
            assert_eq!(stats.overlay.lost, 0, "node {k}: {stats:?}");
        }
    }
    drop(rejoined);
    for (router, _) in nodes.iter().flatten().rev() {
        router.close().await;
    }
}
