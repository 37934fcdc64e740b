//! Hashed routes end to end over a remote link: a hashed intent links only to a peer that knows
//! the type and the whole path (an exact interest, plain or hashed, declared before or after);
//! a peer with only a wildcard neither links nor learns the route; a hashed interest links to a
//! plain intent of its route.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_router::{SendErrorKind, SubscribeError};
use dndm_test_support::send_and_receive_in_order;
use support::{Reading, linked_pair};

const GUARD: Duration = Duration::from_secs(60);

const SECRET: &str = "fleet.robot7.pose";

#[tokio::test(start_paused = true)]
async fn a_hashed_intent_links_to_a_peer_that_knows_the_path() {
    let (a, b) = linked_pair().await;
    let publisher = a.publish_hashed::<Reading>(SECRET, 1).unwrap();
    let mut subscriber = b.subscribe::<Reading>(SECRET).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    send_and_receive_in_order(&publisher, &mut subscriber, 50, GUARD).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_late_subscriber_that_knows_the_path_resolves_the_waiting_declaration() {
    let (a, b) = linked_pair().await;
    let publisher = a.publish_hashed::<Reading>(SECRET, 0).unwrap();
    // Something plain after it, so that B surely has the hashed declaration when it links.
    let sentinel = a.publish::<Reading>("status").unwrap();
    let _watch = b.subscribe::<Reading>("status").unwrap();
    sentinel.wait_for_interest(GUARD).await.unwrap();
    assert_eq!(publisher.subscriber_count(), 0);
    let mut subscriber = b.subscribe_hashed::<Reading>(SECRET, 0).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    send_and_receive_in_order(&publisher, &mut subscriber, 10, GUARD).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_without_the_path_neither_links_nor_learns_it() {
    let (a, b) = linked_pair().await;
    let publisher = a.publish_hashed::<Reading>(SECRET, 1).unwrap();
    let mut wildcard = b.subscribe::<Reading>("fleet.**").unwrap();
    let sentinel = a.publish::<Reading>("status").unwrap();
    let _watch = b.subscribe::<Reading>("status").unwrap();
    // The hashed declaration went before the sentinel, on the same ordered session.
    sentinel.wait_for_interest(GUARD).await.unwrap();

    assert_eq!(publisher.subscriber_count(), 0);
    let refused = publisher.try_send(Reading { seq: 1 }).unwrap_err();
    assert_eq!(refused.kind(), SendErrorKind::NoSubscribers);
    assert!(wildcard.try_recv().is_err());
    // B's router never saw the route: its snapshot has only the sentinel from A.
    let snapshot = b.snapshot();
    let routes: Vec<String> = snapshot
        .intents
        .iter()
        .map(|i| i.route.to_string())
        .collect();
    assert_eq!(routes, ["test.Reading@status"]);
    assert!(!format!("{snapshot:?}").contains("robot7"), "{snapshot:?}");
    a.close().await;
    b.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_hashed_interest_links_to_a_plain_intent_of_its_route() {
    let (a, b) = linked_pair().await;
    let mut subscriber = b.subscribe_hashed::<Reading>(SECRET, 2).unwrap();
    let publisher = a.publish::<Reading>(SECRET).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    send_and_receive_in_order(&publisher, &mut subscriber, 10, GUARD).await;
    a.close().await;
    b.close().await;
}

#[test]
fn a_hashed_interest_needs_an_exact_route() {
    let router = dndm_router::Router::builder().build().unwrap();
    let error = router
        .subscribe_hashed::<Reading>("fleet.*.pose", 1)
        .unwrap_err();
    assert!(
        matches!(&error, SubscribeError::HashedPattern { pattern } if pattern.ends_with("fleet.*.pose")),
        "{error}"
    );
}
