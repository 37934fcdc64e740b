//! A plain rust-libp2p node (no dndm): identify, ping and Kademlia on a chosen protocol id,
//! to look at a mesh from outside.

use std::collections::HashSet;

use futures::StreamExt as _;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{StreamProtocol, Swarm, identify, kad, noise, ping, yamux};

#[derive(NetworkBehaviour)]
pub struct Plain {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
}

/// A plain node on the memory transport whose Kademlia speaks `kad_protocol`.
pub fn node(kad_protocol: StreamProtocol) -> Swarm<Plain> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            use libp2p::Transport as _;
            let noise = noise::Config::new(key)
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            Ok(libp2p::core::transport::MemoryTransport::default()
                .upgrade(libp2p::core::upgrade::Version::V1)
                .authenticate(noise)
                .multiplex(yamux::Config::default()))
        })
        .unwrap()
        .with_behaviour(|key| {
            let peer = key.public().to_peer_id();
            Plain {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/plain/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                kad: kad::Behaviour::with_config(
                    peer,
                    kad::store::MemoryStore::new(peer),
                    kad::Config::new(kad_protocol),
                ),
            }
        })
        .unwrap()
        .build()
}

/// Runs a Kademlia provider lookup of `key` to its end and returns every provider found.
/// Other events are handed to `other`.
pub async fn providers(
    swarm: &mut Swarm<Plain>,
    key: kad::RecordKey,
    mut other: impl FnMut(SwarmEvent<PlainEvent>),
) -> HashSet<libp2p::PeerId> {
    let query = swarm.behaviour_mut().kad.get_providers(key);
    let mut found = HashSet::new();
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(PlainEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) if id == query => {
                if let kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) = result
                {
                    found.extend(providers);
                }
                if step.last {
                    return found;
                }
            }
            event => other(event),
        }
    }
}
