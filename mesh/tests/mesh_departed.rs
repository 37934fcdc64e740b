//! Over the mesh too, a subscriber that vanishes (its runtime dies, no Close) never blocks its
//! publisher: each send returns within the send timeout, the other subscribers get everything,
//! and after the grace period the peer is retired with what it missed reported.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use dndm_core::{Keypair, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::{Overflow, PublishOptions, Router, SubscribeOptions};

use support::Reading;

const GUARD: Duration = Duration::from_secs(60);
/// Ten times the old limit (a link's 1,024-command queue).
const MESSAGES: u64 = 12_000;

fn tcp(listen: bool, dial: Vec<libp2p::Multiaddr>) -> MeshConfig {
    let mut config = MeshConfig::default();
    config.transport = Transport::Tcp;
    config.mdns = false;
    if listen {
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    }
    config.dial = dial;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_mesh_subscriber_does_not_block_the_publisher_and_is_retired() {
    let timeout = Duration::from_millis(200);
    let a = Router::builder()
        .name("a")
        .send_timeout(timeout)
        .build()
        .unwrap();
    let mut config = tcp(true, Vec::new());
    config.remote.peer_grace = Duration::from_millis(500);
    let ea = MeshEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let listening = tokio::time::timeout(GUARD, ea.wait_listening())
        .await
        .unwrap();
    let dial: Vec<libp2p::Multiaddr> = listening;

    // b lives in a runtime of its own, which dies without closing anything in order.
    let runtime_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (ready, ready_rx) = tokio::sync::oneshot::channel();
    runtime_b.spawn(async move {
        let b = Router::builder().name("b").build().unwrap();
        let eb = MeshEndpoint::new(Keypair::from_seed([2; 32]), tcp(false, dial)).unwrap();
        b.attach(Arc::new(eb)).await.unwrap();
        let subscriber = b.subscribe::<Reading>("robot.imu").unwrap();
        let _ = ready.send(());
        let _keep = (b, subscriber);
        std::future::pending::<()>().await;
    });
    ready_rx.await.unwrap();
    let publisher = a
        .publish_with::<Reading>("robot.imu", PublishOptions::default().qos(Qos::reliable()))
        .unwrap();
    let lossless = SubscribeOptions::default()
        .capacity(MESSAGES as usize + 1)
        .overflow(Overflow::Block);
    let mut local = a.subscribe_with::<Reading>("robot.imu", lossless).unwrap();
    tokio::time::timeout(GUARD, async {
        while publisher.subscriber_count() < 2 {
            publisher.interested().await.unwrap();
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("b subscribed over the mesh");
    runtime_b.shutdown_background();

    for seq in 0..MESSAGES {
        tokio::time::timeout(timeout + GUARD, publisher.send(Reading { seq }))
            .await
            .expect("a send never hangs on a peer that is gone")
            .ok();
    }
    for seq in 0..MESSAGES {
        let got = tokio::time::timeout(GUARD, local.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            got.seq, seq,
            "the local subscriber gets every message, in order"
        );
    }
    let mut changes = ea.link_changes();
    tokio::time::timeout(GUARD, async {
        while ea.stats().retired_peers == 0 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("b retired after its grace period");
    assert_eq!(publisher.subscriber_count(), 1, "b's interest is unlinked");
    let offered = ea.links().remove(0).stats.acked + publisher.undelivered();
    assert!(offered > 0 && offered <= MESSAGES, "{offered}");
    a.close().await;
}
