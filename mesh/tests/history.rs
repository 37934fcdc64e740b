//! History for late subscribers across the mesh (direct sessions): a node that joins and
//! subscribes with `history(100)` gets the publisher's last 100 messages, then the live ones.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_core::Qos;
use dndm_router::{Overflow, PublishOptions, SubscribeOptions};
use support::{Reading, node, port};

const GUARD: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_late_gets_the_last_messages_then_the_live_ones() {
    let a_port = port(71);
    let (a, _ea) = node(71, Some(a_port), None).await;
    let options = PublishOptions::default().history(100).qos(Qos::reliable());
    let intent = a.publish_with::<Reading>("mesh.status", options).unwrap();
    for seq in 0..1000 {
        intent.send(Reading { seq }).await.unwrap();
    }
    // The subscriber's node starts only now.
    let (b, _eb) = node(72, None, Some(a_port)).await;
    let options = SubscribeOptions::default()
        .history(100)
        .capacity(4096)
        .overflow(Overflow::Block);
    let mut late = b.subscribe_with::<Reading>("mesh.*", options).unwrap();
    intent.wait_for_interest(GUARD).await.unwrap();
    for seq in 1000..2000 {
        intent.send(Reading { seq }).await.unwrap();
    }
    for want in 900..2000 {
        let got = tokio::time::timeout(GUARD, late.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, want);
    }
    b.close().await;
    a.close().await;
}
