//! History for late subscribers over a remote link: the publisher sends what it kept before
//! its live messages, in order, with no duplicate and no gap at the seam.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_core::Qos;
use dndm_router::{Interest, LinkEvent, Overflow, PublishOptions, SubscribeOptions};
use support::{Reading, linked_pair};

const GUARD: Duration = Duration::from_secs(60);

async fn next(interest: &mut Interest<Reading>) -> u64 {
    tokio::time::timeout(GUARD, interest.recv())
        .await
        .unwrap()
        .unwrap()
        .seq
}

fn subscribe(history: usize) -> SubscribeOptions {
    SubscribeOptions::default()
        .history(history)
        .capacity(4096)
        .overflow(Overflow::Block)
}

/// The case over a link: 1,000 sent before the peer subscribes with history(100); it
/// gets 900..999, then the live 1,000..1,999.
#[tokio::test]
async fn a_late_subscriber_on_a_peer_gets_the_kept_messages_then_the_live_ones() {
    let (a, b) = linked_pair().await;
    let options = PublishOptions::default().history(100).qos(Qos::reliable());
    let intent = a.publish_with::<Reading>("fleet.status", options).unwrap();
    for seq in 0..1000 {
        intent.send(Reading { seq }).await.unwrap();
    }
    let mut late = b
        .subscribe_with::<Reading>("fleet.*", subscribe(100))
        .unwrap();
    intent.wait_for_interest(GUARD).await.unwrap();
    for seq in 1000..2000 {
        intent.send(Reading { seq }).await.unwrap();
    }
    for want in 900..2000 {
        assert_eq!(next(&mut late).await, want);
    }
    assert!(late.try_recv().is_err(), "nothing more");
    a.close().await;
    b.close().await;
}

/// The seam while the publisher never pauses: the peer's subscriber gets a contiguous run up
/// to the last message, whenever it links.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seam_holds_over_a_link_while_the_publisher_keeps_sending() {
    const TOTAL: u64 = 5_000;
    let (a, b) = linked_pair().await;
    let options = PublishOptions::default().history(100).qos(Qos::reliable());
    let intent = a.publish_with::<Reading>("fleet.status", options).unwrap();
    let sender = tokio::spawn(async move {
        for seq in 0..TOTAL {
            intent.send(Reading { seq }).await.unwrap();
            if seq % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        intent
    });
    let mut late = b
        .subscribe_with::<Reading>("fleet.status", subscribe(100))
        .unwrap();
    let intent = sender.await.unwrap();
    let mut want = next(&mut late).await + 1;
    while want < TOTAL {
        assert_eq!(next(&mut late).await, want);
        want += 1;
    }
    drop(intent);
    a.close().await;
    b.close().await;
}

/// A peer that already gets the publisher's messages is not sent its history again: the
/// subscriber there that asked for nothing sees each message once.
#[tokio::test]
async fn a_peer_that_already_receives_gets_no_history_twice() {
    let (a, b) = linked_pair().await;
    let options = PublishOptions::default().history(10).qos(Qos::reliable());
    let intent = a.publish_with::<Reading>("fleet.status", options).unwrap();
    let mut first = b
        .subscribe_with::<Reading>("fleet.*", subscribe(0))
        .unwrap();
    intent.wait_for_interest(GUARD).await.unwrap();
    for seq in 0..20 {
        intent.send(Reading { seq }).await.unwrap();
    }
    for want in 0..20 {
        assert_eq!(next(&mut first).await, want);
    }
    // A second pattern on the same node: declared, linked, but the peer already receives.
    let mut events = intent.events();
    let _second = b
        .subscribe_with::<Reading>("fleet.status", subscribe(10))
        .unwrap();
    let linked = tokio::time::timeout(GUARD, events.recv()).await.unwrap();
    assert!(matches!(linked, Ok(LinkEvent::Linked { .. })), "{linked:?}");
    intent.send(Reading { seq: 20 }).await.unwrap();
    assert_eq!(
        next(&mut first).await,
        20,
        "no history again at the old subscriber"
    );
    a.close().await;
    b.close().await;
}
