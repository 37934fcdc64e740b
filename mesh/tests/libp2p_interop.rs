//! A plain rust-libp2p node (not using dndm) dials a dndm mesh node and exercises the standard
//! protocols: identify (which lists `/dndm/1.0.0`), ping, and Kademlia FIND_NODE on the IPFS
//! protocol id, which a dndm node speaks only when configured to (`mesh.kad_protocol`); by
//! default it speaks `/dndm/kad/1.0.0` instead.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use dndm_core::Keypair;
use dndm_mesh::{KAD_PROTOCOL, MeshConfig, MeshEndpoint, PROTOCOL, Transport};
use dndm_router::Router;
use futures::StreamExt as _;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, identify, kad, ping};

mod support;

use support::plain::{self, PlainEvent};

const GUARD: Duration = Duration::from_secs(30);

/// A dndm node listening on a memory port, with `kad_protocol` (the default when `None`).
async fn dndm_node(
    offset: u64,
    kad_protocol: Option<libp2p::StreamProtocol>,
) -> (Router, libp2p::PeerId, Multiaddr) {
    let port = u64::from(std::process::id()) * 100 + offset;
    let addr: Multiaddr = format!("/memory/{port}").parse().unwrap();
    let router = Router::builder().name("dndm").build().unwrap();
    let mut config = MeshConfig::default();
    config.transport = Transport::Memory;
    config.listen = vec![addr.clone()];
    if let Some(protocol) = kad_protocol {
        config.kad_protocol = protocol;
    }
    let dndm_keys = Keypair::from_seed([42; 32]);
    let dndm_peer: libp2p::PeerId =
        libp2p::PeerId::from_bytes(&dndm_keys.peer_id().to_bytes()).unwrap();
    let endpoint = MeshEndpoint::new(dndm_keys, config).unwrap();
    router.attach(Arc::new(endpoint)).await.unwrap();
    (router, dndm_peer, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_libp2p_node_identifies_pings_and_queries_a_dndm_node_on_the_ipfs_dht() {
    let (router, dndm_peer, addr) = dndm_node(77, Some(kad::PROTOCOL_NAME)).await;
    let mut plain = plain::node(kad::PROTOCOL_NAME);
    plain
        .behaviour_mut()
        .kad
        .add_address(&dndm_peer, addr.clone());
    plain.dial(addr).unwrap();

    let (mut identified, mut pinged, mut queried) = (false, false, false);
    let mut query = None;
    tokio::time::timeout(GUARD, async {
        while !(identified && pinged && queried) {
            match plain.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. }
                    if peer_id == dndm_peer && query.is_none() =>
                {
                    query = Some(
                        plain
                            .behaviour_mut()
                            .kad
                            .get_closest_peers(libp2p::PeerId::random()),
                    );
                }
                SwarmEvent::Behaviour(PlainEvent::Identify(identify::Event::Received {
                    peer_id,
                    info,
                    ..
                })) => {
                    assert_eq!(peer_id, dndm_peer);
                    assert!(
                        info.protocols.contains(&PROTOCOL),
                        "dndm protocol listed: {:?}",
                        info.protocols
                    );
                    assert!(
                        info.protocols.contains(&kad::PROTOCOL_NAME),
                        "{:?}",
                        info.protocols
                    );
                    identified = true;
                }
                SwarmEvent::Behaviour(PlainEvent::Ping(ping::Event {
                    peer,
                    result: Ok(_),
                    ..
                })) if peer == dndm_peer => {
                    pinged = true;
                }
                SwarmEvent::Behaviour(PlainEvent::Kad(kad::Event::OutboundQueryProgressed {
                    id,
                    result: kad::QueryResult::GetClosestPeers(result),
                    ..
                })) if Some(id) == query => {
                    // The dndm node answered FIND_NODE (it knows only us, so the answer is small).
                    assert!(result.is_ok(), "{result:?}");
                    queried = true;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("identified {identified}, pinged {pinged}, queried {queried}"));
    router.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_dndm_node_speaks_its_own_dht_protocol_not_ipfs() {
    let (router, dndm_peer, addr) = dndm_node(78, None).await;
    let mut plain = plain::node(kad::PROTOCOL_NAME);
    plain.dial(addr).unwrap();
    let info = tokio::time::timeout(GUARD, async {
        loop {
            if let SwarmEvent::Behaviour(PlainEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) = plain.select_next_some().await
            {
                assert_eq!(peer_id, dndm_peer);
                return info;
            }
        }
    })
    .await
    .expect("the dndm node answers identify");
    assert!(info.protocols.contains(&PROTOCOL), "{:?}", info.protocols);
    assert!(
        info.protocols.contains(&KAD_PROTOCOL),
        "{:?}",
        info.protocols
    );
    assert!(
        !info.protocols.contains(&kad::PROTOCOL_NAME),
        "no /ipfs/kad/1.0.0 by default: {:?}",
        info.protocols
    );
    router.close().await;
}
