//! Mesh nodes over libp2p's memory transport: typed pub/sub and request/response across the
//! libp2p stack (Noise, Yamux, the `/dndm/1.0.0` stream), unsubscribe propagation, close.

#![allow(clippy::unwrap_used)]

mod support;
use dndm_test_support::{request_once_served, send_and_receive_in_order};

use std::sync::Arc;
use std::time::Duration;

use dndm_core::Keypair;
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::{HandlerError, Router};

use support::{Reading, node, port};

const GUARD: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_exchange_typed_messages_and_requests() {
    let a_port = port(1);
    let (a, ea) = node(1, Some(a_port), None).await;
    let (b, eb) = node(2, None, Some(a_port)).await;

    let publisher = a.publish::<Reading>("mesh.imu").unwrap();
    let mut subscriber = b.subscribe::<Reading>("mesh.*").unwrap();
    assert_eq!(publisher.wait_for_interest(GUARD).await.unwrap(), 1);
    send_and_receive_in_order(&publisher, &mut subscriber, 500, GUARD).await;
    assert_eq!(ea.peers(), vec![eb.peer_id()]);

    let _service = b
        .serve::<Reading, Reading, _, _>("mesh.double", |r: Reading| async move {
            Ok::<_, HandlerError>(Reading { seq: r.seq * 2 })
        })
        .unwrap();
    let answer =
        request_once_served::<Reading, Reading>(&a, "mesh.double", Reading { seq: 21 }, GUARD)
            .await;
    assert_eq!(answer.unwrap().seq, 42);

    // Unsubscribing propagates through the mesh.
    let mut events = publisher.events();
    drop(subscriber);
    tokio::time::timeout(GUARD, async {
        while publisher.subscriber_count() > 0 {
            let _ = events.recv().await;
        }
    })
    .await
    .expect("a sees b's interest withdrawn");

    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_in_a_full_mesh_each_hear_every_publisher() {
    if std::env::var("DNDM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
            .try_init();
    }
    const N: u64 = 5;
    let mut nodes = Vec::new();
    for i in 0..N {
        let router = Router::builder().name(format!("n{i}")).build().unwrap();
        let mut config = MeshConfig::default();
        config.transport = Transport::Memory;
        config.listen = vec![format!("/memory/{}", port(10 + i)).parse().unwrap()];
        config.dial = (0..i)
            .map(|j| format!("/memory/{}", port(10 + j)).parse().unwrap())
            .collect();
        let endpoint = MeshEndpoint::new(Keypair::from_seed([10 + i as u8; 32]), config).unwrap();
        router.attach(Arc::new(endpoint.clone())).await.unwrap();
        nodes.push((router, endpoint));
    }
    let mut subscribers: Vec<_> = nodes
        .iter()
        .map(|(r, _)| r.subscribe::<Reading>("fleet.**").unwrap())
        .collect();
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, (r, _))| r.publish::<Reading>(&format!("fleet.n{i}")).unwrap())
        .collect();
    for publisher in &publishers {
        // Its own node's subscriber plus the four others.
        tokio::time::timeout(GUARD, async {
            let mut events = publisher.events();
            while publisher.subscriber_count() < N as usize {
                let _ = events.recv().await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            let counts: Vec<usize> = publishers.iter().map(|p| p.subscriber_count()).collect();
            let peers: Vec<usize> = nodes.iter().map(|(_, e)| e.peers().len()).collect();
            panic!("every subscriber linked: counts {counts:?}, peers {peers:?}")
        });
    }
    for (i, publisher) in publishers.iter().enumerate() {
        publisher.send(Reading { seq: i as u64 }).await.unwrap();
    }
    for subscriber in &mut subscribers {
        let mut got: Vec<u64> = Vec::new();
        for _ in 0..N {
            got.push(
                tokio::time::timeout(GUARD, subscriber.recv())
                    .await
                    .unwrap()
                    .unwrap()
                    .seq,
            );
        }
        got.sort_unstable();
        assert_eq!(
            got,
            (0..N).collect::<Vec<_>>(),
            "one message from each publisher"
        );
    }
    for (router, _) in nodes.iter().rev() {
        router.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_delivery_survives_forced_disconnects() {
    if std::env::var("DNDM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
            .try_init();
    }
    use dndm_core::Qos;
    use dndm_router::{Overflow, PublishOptions, SubscribeOptions};
    // Messages between cuts, and a bound so a cut that is never seen fails the test.
    const SPACING: u64 = 5_000;
    const LIMIT: u64 = 2_000_000;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .try_init();
    let a_port = port(40);
    let (a, ea) = node(41, Some(a_port), None).await;
    let mut config = MeshConfig::default();
    config.transport = Transport::Memory;
    config.dial = vec![format!("/memory/{a_port}").parse().unwrap()];
    config.remote.backoff_initial = Duration::from_millis(10);
    config.remote.backoff_max = Duration::from_millis(100);
    let b = Router::builder().name("b").build().unwrap();
    let eb = MeshEndpoint::new(Keypair::from_seed([42; 32]), config).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();

    // Back-pressure through the cuts: the publisher may wait out a reconnect (a peer is
    // waited for at most the send timeout, then dropped for).
    let reliable = PublishOptions::default()
        .qos(Qos::reliable())
        .send_timeout(GUARD);
    let publisher = a.publish_with::<Reading>("stream", reliable).unwrap();
    let lossless = SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block);
    let mut subscriber = b.subscribe_with::<Reading>("stream", lossless).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    // The publisher sends until told to stop; the subscriber cuts the connection three times,
    // each cut only once the previous one was seen by b's link (a read-ahead batch can carry
    // thousands of messages, so "after N messages" alone may land while b is reconnecting).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut seq = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publisher.send(Reading { seq }).await.unwrap();
                seq += 1;
            }
            (publisher, seq)
        }
    });
    tokio::pin!(sender);
    enum Step {
        Got(u64),
        Sent(u64),
    }
    let failures = || eb.links().first().map_or(0, |l| l.stats.failures);
    // Cut only a live connection: one that came up after the previous cut was seen.
    let connected = || eb.links().first().is_some_and(|l| l.connected);
    let (mut cuts, mut next_cut, mut total, mut expected) = (0u64, SPACING, None, 0u64);
    while total != Some(expected) {
        let step = tokio::time::timeout(GUARD, async {
            tokio::select! {
                got = subscriber.recv() => Step::Got(got.expect("subscriber open").seq),
                sent = &mut sender, if total.is_none() => Step::Sent(sent.expect("sender task").1),
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no progress after message {expected}: {:?}",
                subscriber.stats()
            )
        });
        match step {
            Step::Got(seq) => {
                assert_eq!(seq, expected, "0 lost, 0 duplicated, in order");
                expected += 1;
            }
            Step::Sent(n) => {
                total = Some(n);
                continue;
            }
        }
        assert!(
            expected < LIMIT,
            "the cuts were not all seen after {LIMIT} messages"
        );
        let seen = failures();
        if cuts < 3 && expected >= next_cut && seen >= cuts && connected() {
            // Cut the libp2p connections from either side; b redials a with backoff.
            if cuts % 2 == 0 {
                eb.disconnect(ea.peer_id())
            } else {
                ea.disconnect(eb.peer_id())
            }
            cuts += 1;
            tracing::info!(cuts, expected, seen, "cut");
            next_cut = expected + SPACING;
        }
        if cuts == 3 && seen >= 3 && expected >= next_cut {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    // Each cut ended b's session connection once, and delivery resumed after each.
    assert!(failures() >= 3, "every cut ended b's connection");
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_patterns_of_one_peer_each_get_every_message_once() {
    let a_port = port(60);
    let (a, _ea) = node(61, Some(a_port), None).await;
    let (b, _eb) = node(62, None, Some(a_port)).await;
    let publisher = a.publish::<Reading>("robot.arm.imu").unwrap();
    let mut exact = b.subscribe::<Reading>("robot.arm.imu").unwrap();
    let mut wildcard = b.subscribe::<Reading>("robot.**").unwrap();
    tokio::time::timeout(GUARD, async {
        let mut events = publisher.events();
        while publisher.subscriber_count() < 2 {
            let _ = events.recv().await;
        }
    })
    .await
    .unwrap();
    for seq in 0..100 {
        publisher.send(Reading { seq }).await.unwrap();
    }
    for interest in [&mut exact, &mut wildcard] {
        for seq in 0..100 {
            let got = tokio::time::timeout(GUARD, interest.recv())
                .await
                .unwrap()
                .unwrap();
            // A second copy of any message would show up here as a repeated seq.
            assert_eq!(got.seq, seq, "each message once, in order");
        }
    }
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_stops_the_swarm_and_leaves_no_task() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let a_port = port(70);
    let (a, ea) = node(71, Some(a_port), None).await;
    let (b, eb) = node(72, None, Some(a_port)).await;
    let publisher = a.publish::<Reading>("close.me").unwrap();
    let mut subscriber = b.subscribe::<Reading>("close.me").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    publisher.send(Reading { seq: 1 }).await.unwrap();
    tokio::time::timeout(GUARD, subscriber.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(metrics.num_alive_tasks() > baseline, "the mesh runs tasks");
    assert_eq!(ea.mesh_peers().len(), 1);
    tokio::time::timeout(GUARD, b.close())
        .await
        .expect("b closes");
    tokio::time::timeout(GUARD, a.close())
        .await
        .expect("a closes");
    drop((publisher, subscriber, ea, eb));
    // libp2p's connection tasks end when the swarm is dropped; wait for that event (guarded).
    tokio::time::timeout(GUARD, async {
        while metrics.num_alive_tasks() > baseline {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("no task the mesh spawned is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_snapshot_shows_mesh_peers_and_their_routes() {
    let a_port = port(80);
    let (a, ea) = node(81, Some(a_port), None).await;
    let (b, eb) = node(82, None, Some(a_port)).await;
    let publisher = a.publish::<Reading>("snap.imu").unwrap();
    let _subscriber = b.subscribe::<Reading>("snap.*").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    let snapshot = a.snapshot();
    let peer = snapshot
        .peers
        .iter()
        .find(|p| p.peer == eb.peer_id())
        .expect("b in a's snapshot");
    assert!(peer.connected, "{peer:?}");
    assert_eq!(peer.path.as_deref(), Some("direct"));
    assert!(
        peer.addresses
            .iter()
            .any(|addr| addr.starts_with("/memory/")),
        "{peer:?}"
    );
    // The routes b declared are a's interests with b as their origin.
    assert!(snapshot.interests.iter().any(|i| {
        i.origin == dndm_router::Origin::Peer(eb.peer_id())
            && i.pattern.as_str() == "test.Reading@snap.*"
    }));
    let mesh_peer = &ea.mesh_peers()[0];
    assert_eq!(mesh_peer.peer, eb.peer_id());
    assert!(mesh_peer.session && mesh_peer.connections >= 1);
    b.close().await;
    a.close().await;
}
