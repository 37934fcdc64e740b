//! Publisher feedback over a remote link: a peer's `DropOldest` subscriber that falls behind
//! makes the publisher see `SlowConsumer` and `Dropped` events whose counts add up to exactly
//! what the subscriber dropped; `try_send` with nobody subscribed says `NoSubscribers`.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_core::Overflow;
use dndm_router::{LinkEvent, SendErrorKind, SubscribeOptions};
use support::{Reading, linked_pair};

const GUARD: Duration = Duration::from_secs(60);

/// Queue capacity of the slow subscriber.
const CAPACITY: usize = 4;

/// Messages published: all but `CAPACITY` are evicted at the subscriber.
const SENT: u64 = 50;

#[tokio::test(start_paused = true)]
async fn a_slow_remote_subscriber_reports_its_drops_to_the_publisher_exactly() {
    let (a, b) = linked_pair().await;
    let publisher = a.publish::<Reading>("telemetry").unwrap();
    let mut events = publisher.events();
    let refused = publisher.try_send(Reading { seq: 0 }).unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::NoSubscribers);

    let options = SubscribeOptions::default()
        .capacity(CAPACITY)
        .overflow(Overflow::DropOldest);
    // Never read while the publisher sends.
    let subscriber = b.subscribe_with::<Reading>("telemetry", options).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    for seq in 0..SENT {
        publisher.send(Reading { seq }).await.unwrap();
    }

    let expected = SENT - CAPACITY as u64;
    let (mut dropped, mut slow) = (0, false);
    while dropped < expected || !slow {
        let event = tokio::time::timeout(GUARD, events.recv())
            .await
            .expect("feedback within the guard")
            .unwrap();
        match event {
            LinkEvent::Dropped {
                count,
                reason,
                route,
                ..
            } => {
                assert_eq!(reason, Overflow::DropOldest);
                assert_eq!(route, *publisher.route());
                dropped += count;
            }
            LinkEvent::SlowConsumer { lag, capacity, .. } => {
                assert_eq!(capacity, CAPACITY as u64);
                assert!(lag <= capacity, "{lag} of {capacity}");
                slow = true;
            }
            _ => {}
        }
    }
    assert_eq!(dropped, expected);
    assert_eq!(subscriber.stats().dropped_oldest, expected);
    assert_eq!(publisher.dropped_by_subscribers(), expected);
    a.close().await;
    b.close().await;
}
