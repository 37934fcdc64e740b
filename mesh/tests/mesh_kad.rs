//! Thirty mesh nodes over libp2p's memory transport, each bootstrapped with one other node only:
//! subscribers find their publishers through Kademlia provider records and connect to them,
//! while no node holds more connections than its bound.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dndm_core::{Keypair, Message, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::{PublishOptions, Router};

const NODES: usize = 30;
const MAX_PEERS: usize = 12;
const FULL_MESH: usize = 4;
const GUARD: Duration = Duration::from_secs(90);

#[derive(Clone, PartialEq, prost::Message)]
struct Reading {
    #[prost(uint64, tag = "1")]
    from: u64,
}

impl prost::Name for Reading {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "test";
}
impl Message for Reading {}

fn addr(i: usize) -> libp2p::Multiaddr {
    let port = u64::from(std::process::id()) * 100 + i as u64;
    format!("/memory/{port}").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_bootstrapped_with_one_peer_each_link_through_kademlia() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .try_init();
    let started = Instant::now();
    let mut nodes = Vec::new();
    for i in 0..NODES {
        let router = Router::builder().name(format!("n{i}")).build().unwrap();
        let mut config = MeshConfig::default();
        config.transport = Transport::Memory;
        config.listen = vec![addr(i)];
        // A tree: node i knows only node (i - 1) / 2.
        if i > 0 {
            config.dial = vec![addr((i - 1) / 2)];
        }
        config.max_peers = MAX_PEERS;
        config.full_mesh_threshold = FULL_MESH;
        let endpoint = MeshEndpoint::new(Keypair::from_seed([i as u8 + 1; 32]), config).unwrap();
        router.attach(Arc::new(endpoint.clone())).await.unwrap();
        tracing::info!(node = i, peer = %endpoint.peer_id(), "node");
        nodes.push((router, endpoint));
    }
    // Publishers at the first leaves of the tree, subscribers at the far end: none of them
    // is the other's bootstrap peer.
    let publishers: Vec<usize> = (15..20).collect();
    let subscribers: Vec<usize> = (25..30).collect();
    let mut intents = Vec::new();
    for &p in &publishers {
        let intent = nodes[p]
            .0
            .publish_with::<Reading>(
                &format!("sensor.n{p}"),
                PublishOptions::default().qos(Qos::reliable()),
            )
            .unwrap();
        intents.push((p, intent));
    }
    // Each subscriber wants one publisher's exact route; the last also wants every sensor.
    let mut interests = Vec::new();
    for (k, &s) in subscribers.iter().enumerate() {
        let exact = nodes[s]
            .0
            .subscribe::<Reading>(&format!("sensor.n{}", publishers[k]))
            .unwrap();
        interests.push((vec![publishers[k] as u64], exact));
    }
    let all = nodes[subscribers[0]]
        .0
        .subscribe::<Reading>("sensor.*")
        .unwrap();
    interests.push((publishers.iter().map(|&p| p as u64).collect(), all));

    // Converged when every publisher sees all its subscribers (one exact, one pattern).
    for (p, intent) in &intents {
        let want = 2;
        let waited = Instant::now();
        tokio::time::timeout(GUARD, async {
            let mut events = intent.events();
            while intent.subscriber_count() < want {
                // Lagging behind the events is fine: the count is read again.
                let _ = events.recv().await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "publisher n{p} sees {} of {want} subscribers",
                intent.subscriber_count()
            )
        });
        tracing::info!(publisher = p, at = ?started.elapsed(), waited = ?waited.elapsed(), "linked");
    }
    let converged = started.elapsed();
    for (p, intent) in &intents {
        intent.send(Reading { from: *p as u64 }).await.unwrap();
    }
    for (want, interest) in &mut interests {
        let mut got = Vec::new();
        while got.len() < want.len() {
            let reading = tokio::time::timeout(GUARD, interest.recv())
                .await
                .expect("a message from every publisher")
                .unwrap();
            got.push(reading.from);
        }
        got.sort_unstable();
        assert_eq!(&got, want, "one message from each matching publisher");
    }
    for (i, (_, endpoint)) in nodes.iter().enumerate() {
        let connections = endpoint.connection_count();
        assert!(
            connections <= MAX_PEERS,
            "node {i} holds {connections} connections, bound {MAX_PEERS}"
        );
    }
    println!(
        "{NODES} nodes converged in {:.2} s (publishers saw all subscribers)",
        converged.as_secs_f64()
    );
    drop(interests);
    drop(intents);
    for (router, _) in nodes.iter().rev() {
        router.close().await;
    }
}
