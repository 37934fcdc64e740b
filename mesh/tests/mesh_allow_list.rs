//! With an allow-list, a peer outside it gets no service at the libp2p layer: its connection
//! is closed right after Noise, before identify, ping, Kademlia or a dndm stream serve it; the
//! refusal is counted; it takes no connection slot and learns no route name. An allowed peer
//! is served as before.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use dndm_core::Route;
use dndm_mesh::{KAD_PROTOCOL, MeshConfig, MeshEndpoint, RouteKey};
use futures::StreamExt as _;
use libp2p::kad::RecordKey;
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, ping};

mod support;
use support::plain::PlainEvent;
use support::{Reading, libp2p_peer, memory, node, node_with, plain};

const GUARD: Duration = Duration::from_secs(30);
const SECRET_ROUTE: &str = "test.Reading@vault.keys";

/// Waits until `mesh` has refused at least `n` connections of peers outside its allow-list.
async fn refused(mesh: &MeshEndpoint, n: u64) {
    let mut stats = mesh.mesh_stats_changes();
    tokio::time::timeout(GUARD, stats.wait_for(|s| s.refused_not_allowed >= n))
        .await
        .unwrap_or_else(|_| panic!("{n} refusals counted: {:?}", mesh.mesh_stats()))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_outside_the_allow_list_gets_no_service_and_learns_no_route() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .try_init();
    // `b` is allowed on `a`; the plain node and `c` are not.
    let b_id = dndm_core::Keypair::from_seed([12; 32]).peer_id();
    let allow_b = |config: &mut MeshConfig| {
        config.remote.session.allow_peers = Some(HashSet::from([b_id]));
    };
    let (a, a_mesh) = node_with(11, Some(support::port(11)), None, allow_b).await;
    let intent = a.publish::<Reading>("vault.keys").unwrap();

    // The allowed peer still gets its session and its messages.
    let (b, b_mesh) = node(12, None, Some(support::port(11))).await;
    assert_eq!(b_mesh.peer_id(), b_id);
    let mut interest = b.subscribe::<Reading>("vault.keys").unwrap();
    assert_eq!(intent.wait_for_interest(GUARD).await.unwrap(), 1);
    intent.send(Reading { seq: 1 }).await.unwrap();
    assert_eq!(interest.recv_timeout(GUARD).await.unwrap().seq, 1);

    // A plain libp2p node dials `a`: Noise completes, then `a` closes the connection.
    let a_peer = libp2p_peer(&a_mesh);
    let mut outsider = plain::node(KAD_PROTOCOL);
    let outsider_peer = *outsider.local_peer_id();
    outsider
        .behaviour_mut()
        .kad
        .add_address(&a_peer, memory(11));
    outsider.dial(memory(11)).unwrap();
    let mut served = Vec::new();
    let mut note = |event: SwarmEvent<PlainEvent>| match event {
        SwarmEvent::Behaviour(PlainEvent::Identify(identify::Event::Received { .. })) => {
            served.push("identify");
        }
        SwarmEvent::Behaviour(PlainEvent::Ping(ping::Event { result: Ok(_), .. })) => {
            served.push("ping");
        }
        _ => {}
    };
    tokio::time::timeout(GUARD, async {
        loop {
            match outsider.select_next_some().await {
                SwarmEvent::ConnectionClosed { peer_id, .. } if peer_id == a_peer => break,
                SwarmEvent::OutgoingConnectionError { .. } => break,
                event => note(event),
            }
        }
    })
    .await
    .expect("a closes the outsider's connection");
    refused(&a_mesh, 1).await;

    // Kademlia does not answer it either: no provider record for the route's hash (nor its
    // text), whatever the key.
    let route: Route = SECRET_ROUTE.parse().unwrap();
    for key in [
        RecordKey::new(&RouteKey::DEFAULT.route_hash(&route)),
        RecordKey::new(&format!("/dndm/route/{SECRET_ROUTE}")),
    ] {
        let found = tokio::time::timeout(GUARD, plain::providers(&mut outsider, key, &mut note))
            .await
            .expect("the lookup ends");
        assert!(found.is_empty(), "{found:?}");
    }
    assert!(served.is_empty(), "the outsider was served: {served:?}");

    // A dndm node outside the list gets no session, so no hello: no route of `a`'s.
    let (c, c_mesh) = node(13, None, Some(support::port(11))).await;
    let before = a_mesh.mesh_stats().refused_not_allowed;
    refused(&a_mesh, before + 1).await;
    assert!(c_mesh.peers().is_empty(), "{:?}", c_mesh.peers());
    assert!(
        c_mesh
            .links()
            .iter()
            .all(|l| l.peer_intents.is_empty() && l.peer_interests.is_empty()),
        "{:?}",
        c_mesh.links()
    );

    // The outsiders never held a slot on `a`: only `b` is connected.
    let peers: Vec<_> = a_mesh.mesh_peers().into_iter().map(|p| p.peer).collect();
    assert_eq!(peers, [b_id], "outsider {outsider_peer} and c hold no slot");
    assert!(a_mesh.links().iter().all(|l| l.peer == b_id));
    assert_eq!(
        a_mesh.stats().handshake_failures,
        0,
        "refused before any session"
    );

    drop(interest);
    drop(intent);
    for router in [c, b, a] {
        router.close().await;
    }
}
