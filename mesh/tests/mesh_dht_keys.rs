//! What the DHT holds for a route: keyed hashes of the route and its prefixes, never its text.
//! A private mesh (its own route key) still links a wildcard subscriber to a publisher it
//! only finds through provider records, while a plain libp2p node in the same DHT finds
//! providers for the private hash but nothing for the plain route text or the public key's
//! hash.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dndm_core::Route;
use dndm_mesh::{KAD_PROTOCOL, MeshConfig, RouteKey};
use libp2p::kad::RecordKey;

mod support;
use support::{Reading, libp2p_peer, memory, node_with, plain};

const GUARD: Duration = Duration::from_secs(60);
const SECRET: &str = "a private mesh secret, 32 bytes.";

/// Private key; sessions only with configured peers and providers found in the DHT.
fn private(config: &mut MeshConfig) {
    config.route_key = RouteKey::from_secret(SECRET);
    config.full_mesh_threshold = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_keys_are_keyed_hashes_and_wildcards_still_find_publishers() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .try_init();
    // A hub, a publisher and a subscriber that each know only the hub: the subscriber meets
    // the publisher through the provider record of `test.Reading@sensor` (its pattern's
    // prefix), keyed with the mesh's secret.
    let (hub, hub_mesh) = node_with(1, Some(support::port(1)), None, private).await;
    let (publisher, publisher_mesh) =
        node_with(2, Some(support::port(2)), Some(support::port(1)), private).await;
    let (subscriber, _subscriber) =
        node_with(3, Some(support::port(3)), Some(support::port(1)), private).await;
    let intent = publisher.publish::<Reading>("sensor.p1").unwrap();
    let mut interest = subscriber.subscribe::<Reading>("sensor.*").unwrap();
    assert_eq!(
        intent.wait_for_interest(GUARD).await.unwrap(),
        1,
        "the wildcard subscriber found the publisher"
    );
    intent.send(Reading { seq: 7 }).await.unwrap();
    assert_eq!(interest.recv_timeout(GUARD).await.unwrap().seq, 7);

    // A plain libp2p node joins the DHT through the hub and looks the route up.
    let mut observer = plain::node(KAD_PROTOCOL);
    let hub_peer = libp2p_peer(&hub_mesh);
    observer
        .behaviour_mut()
        .kad
        .add_address(&hub_peer, memory(1));
    let route: Route = "test.Reading@sensor.p1".parse().unwrap();
    let hidden = RecordKey::new(&RouteKey::from_secret(SECRET).route_hash(&route));
    let publisher_peer = libp2p_peer(&publisher_mesh);
    tokio::time::timeout(GUARD, async {
        // The records spread while the mesh forms: look again until the lookup finds it.
        while !plain::providers(&mut observer, hidden.clone(), |_| {})
            .await
            .contains(&publisher_peer)
        {}
    })
    .await
    .expect("the hashed route's provider record is in the DHT");
    for (what, key) in [
        (
            "the plain route text",
            RecordKey::new(&"/dndm/route/test.Reading@sensor.p1"),
        ),
        (
            "the plain prefix text",
            RecordKey::new(&"/dndm/route/test.Reading@sensor"),
        ),
        (
            "the public key's hash",
            RecordKey::new(&RouteKey::DEFAULT.route_hash(&route)),
        ),
    ] {
        let found = tokio::time::timeout(GUARD, plain::providers(&mut observer, key, |_| {}))
            .await
            .expect("the lookup ends");
        assert!(found.is_empty(), "{what} finds providers: {found:?}");
    }
    drop(interest);
    drop(intent);
    for router in [subscriber, publisher, hub] {
        router.close().await;
    }
}
