//! What a mesh node tells about delivery to its peers, and how it leaves them: the router
//! snapshot carries each mesh peer's delivery figures (acknowledged, undelivered, batches...),
//! and a node that closes says so to its peers (its last acknowledgements, then its Close)
//! before its libp2p connections go. Two nodes on libp2p's memory transport.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_core::Qos;
use dndm_router::{Overflow, PublishOptions, SubscribeOptions};

use support::{Reading, node, port};

/// Only a failure guard: every wait ends as soon as its event happens.
const GUARD: Duration = Duration::from_secs(30);

fn reliable() -> PublishOptions {
    PublishOptions::default().qos(Qos::reliable())
}

fn lossless(capacity: usize) -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(capacity)
        .overflow(Overflow::Block)
}

async fn receive_in_order(subscriber: &mut dndm_router::Interest<Reading>, count: u64) {
    for seq in 0..count {
        let got = tokio::time::timeout(GUARD, subscriber.recv())
            .await
            .expect("the message arrived")
            .expect("subscriber open");
        assert_eq!(got.seq, seq, "every message once, in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_shows_a_mesh_peers_delivery_figures() {
    const SENT: u64 = 7;
    let a_port = port(1);
    let (a, ea) = node(1, Some(a_port), None).await;
    let (b, eb) = node(2, None, Some(a_port)).await;
    let publisher = a
        .publish_with::<Reading>("figures.imu", reliable())
        .unwrap();
    let mut subscriber = b
        .subscribe_with::<Reading>("figures.imu", lossless(64))
        .unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    for seq in 0..SENT {
        publisher.send(Reading { seq }).await.unwrap();
    }
    receive_in_order(&mut subscriber, SENT).await;
    let mut changes = ea.link_changes();
    tokio::time::timeout(GUARD, ea.flush(&eb.peer_id()))
        .await
        .expect("b acknowledged everything")
        .expect("the link to b is up");
    // The flush may answer before the link republishes its figures; that it has everything
    // acknowledged is a link change of its own.
    tokio::time::timeout(GUARD, async {
        while !ea
            .links()
            .iter()
            .any(|l| l.peer == eb.peer_id() && l.unacked == 0)
        {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("a's link to b shows everything acknowledged");

    let snapshot = a.snapshot();
    let peer = snapshot
        .peers
        .iter()
        .find(|p| p.peer == eb.peer_id())
        .expect("b in a's snapshot");
    // The link's delivery figures, not zeros.
    assert_eq!(peer.acked, SENT, "{peer:?}");
    assert_eq!(peer.unacked, 0, "{peer:?}");
    assert_eq!(peer.undelivered, 0, "{peer:?}");
    assert!(peer.messages_sent >= SENT, "{peer:?}");
    assert!(peer.batches_sent > 0 && peer.bytes_sent > 0, "{peer:?}");
    // And what only the mesh knows.
    assert!(peer.connected, "{peer:?}");
    assert_eq!(peer.path.as_deref(), Some("direct"));
    assert!(
        peer.addresses
            .iter()
            .any(|addr| addr.starts_with("/memory/")),
        "{peer:?}"
    );
    b.close().await;
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_node_acknowledges_and_closes_its_sessions_in_order() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .try_init();
    const SENT: u64 = 200;
    let a_port = port(10);
    let (a, ea) = node(11, Some(a_port), None).await;
    let (b, eb) = node(12, None, Some(a_port)).await;
    let b_id = eb.peer_id();
    let publisher = a.publish_with::<Reading>("bye.imu", reliable()).unwrap();
    let mut subscriber = b
        .subscribe_with::<Reading>("bye.imu", lossless(SENT as usize))
        .unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    let before = ea.stats();
    for seq in 0..SENT {
        publisher.send(Reading { seq }).await.unwrap();
    }
    receive_in_order(&mut subscriber, SENT).await;

    let mut changes = ea.link_changes();
    tokio::time::timeout(GUARD, b.close())
        .await
        .expect("b closes");
    // Either b's Close retires a's link to b at once, or a loses the connection (a failure;
    // the link would then wait out the peer's grace period).
    tokio::time::timeout(GUARD, async {
        while ea.links().iter().any(|l| l.peer == b_id)
            && ea.stats().link_failures == before.link_failures
        {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("a saw b leave");
    let after = ea.stats();
    assert_eq!(
        after.link_failures, before.link_failures,
        "b's Close reached a: an orderly close, not a lost connection"
    );
    assert!(
        !ea.links().iter().any(|l| l.peer == b_id),
        "the Close retired a's link to b"
    );
    assert_eq!(publisher.subscriber_count(), 0, "b's interest is gone");
    // A Close ends the session: whatever b had not acknowledged by then would be undelivered.
    assert_eq!(
        (after.undelivered, publisher.undelivered()),
        (0, 0),
        "b acknowledged every message before its Close"
    );
    a.close().await;
}
