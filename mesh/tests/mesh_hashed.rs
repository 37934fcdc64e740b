//! Hashed routes across the mesh (libp2p memory transport, Noise, Yamux): a hashed intent
//! reaches a node that subscribed to its exact route, while a node with only a wildcard
//! neither links nor sees the route in its router.

#![allow(clippy::unwrap_used)]

mod support;
use dndm_test_support::send_and_receive_in_order;

use std::time::Duration;

use support::{Reading, node, port};

const GUARD: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hashed_route_links_only_where_the_path_is_known() {
    let a_port = port(61);
    let (a, _ea) = node(61, Some(a_port), None).await;
    let (b, _eb) = node(62, None, Some(a_port)).await;
    let (c, _ec) = node(63, None, Some(a_port)).await;

    let publisher = a.publish_hashed::<Reading>("fleet.robot7.pose", 1).unwrap();
    let mut wildcard = c.subscribe::<Reading>("fleet.**").unwrap();
    let sentinel = a.publish::<Reading>("status").unwrap();
    let _watch = c.subscribe::<Reading>("status").unwrap();
    sentinel.wait_for_interest(GUARD).await.unwrap();

    let mut subscriber = b.subscribe::<Reading>("fleet.robot7.pose").unwrap();
    assert_eq!(publisher.wait_for_interest(GUARD).await.unwrap(), 1);
    send_and_receive_in_order(&publisher, &mut subscriber, 100, GUARD).await;

    // C knows only `fleet.**`: nothing reached it and its router never saw the route.
    assert!(wildcard.try_recv().is_err());
    let snapshot = c.snapshot();
    assert!(
        snapshot
            .intents
            .iter()
            .all(|i| !i.route.to_string().contains("robot7")),
        "{snapshot:?}"
    );
    assert!(!format!("{snapshot:?}").contains("robot7"));
    c.close().await;
    b.close().await;
    a.close().await;
}
