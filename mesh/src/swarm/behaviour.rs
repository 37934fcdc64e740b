//! The libp2p stack: which behaviours run, in which order, and how the swarm is built.
//!
//! Admission comes first. With an allow-list (`remote.allow_peers`), `allow_block_list` in
//! allow-list mode denies every other peer's connection as soon as Noise has authenticated it,
//! before any other behaviour creates a handler for it: such a peer gets no identify, ping,
//! Kademlia, relay or dndm service, and takes no `max_peers` slot (connection limits count only
//! connections every behaviour accepted). Then `connection_limits` bounds pending and
//! established connections.

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Swarm, allow_block_list, autonat, connection_limits, dcutr, identify, kad, ping, relay, tcp,
    yamux,
};

use super::IDLE_CONNECTION_TIMEOUT;
use super::secure::{Offered, SecureError};
use crate::{MAX_PENDING_INCOMING, MeshConfig, MeshError, Transport};

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Only the allowed peers, when there is an allow-list (see the module docs). First, so a
    /// denied connection reaches no other behaviour.
    pub(super) allow: Toggle<allow_block_list::Behaviour<allow_block_list::AllowedPeers>>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    pub(super) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) stream: libp2p_stream::Behaviour,
    /// Circuit relay v2 server ([`MeshConfig::relay_server`]).
    relay_server: Toggle<relay::Behaviour>,
    /// Circuit relay v2 client: reservations on relays, dials through them (TCP only).
    relay_client: Toggle<relay::client::Behaviour>,
    /// Hole punching over relayed connections ([`MeshConfig::hole_punching`]).
    dcutr: Toggle<dcutr::Behaviour>,
    /// Reachability probes and dial-backs ([`MeshConfig::autonat`]).
    autonat: Toggle<autonat::Behaviour>,
}

impl Behaviour {
    fn new(
        key: &libp2p::identity::Keypair,
        config: &MeshConfig,
        limits: connection_limits::ConnectionLimits,
        relay_client: Option<relay::client::Behaviour>,
    ) -> Self {
        let peer = key.public().to_peer_id();
        let identify = identify::Behaviour::new(identify::Config::new(
            "/dndm/id/1.0.0".to_owned(),
            key.public(),
        ));
        let mut kad_config = kad::Config::new(config.kad_protocol.clone());
        if config.multi_hop {
            // Trees need no DHT; its bootstrap dials would take the connection slots that
            // the membership policy's newcomers need.
            kad_config.set_periodic_bootstrap_interval(None);
        }
        let mut kad =
            kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
        // Answer queries like any Kademlia node, reachable or not yet confirmed (multi-hop
        // mode: a client, so no other node adds this one to its routing table and dials it).
        kad.set_mode(Some(if config.multi_hop {
            kad::Mode::Client
        } else {
            kad::Mode::Server
        }));
        let relay_server = config.relay_server.then(|| {
            let mut server = relay::Behaviour::new(peer, config.relay_limits.server_config());
            // Serve from the start: a relay is configured as one, not discovered to be one.
            server.set_status(Some(relay::Status::Enable));
            server
        });
        let punching = relay_client.is_some() && config.hole_punching && !config.relays.is_empty();
        Behaviour {
            allow: allowed_peers(config).into(),
            limits: connection_limits::Behaviour::new(limits),
            identify,
            ping: ping::Behaviour::default(),
            kad,
            stream: libp2p_stream::Behaviour::new(),
            relay_server: relay_server.into(),
            relay_client: relay_client.into(),
            dcutr: punching.then(|| dcutr::Behaviour::new(peer)).into(),
            autonat: config
                .autonat
                .then(|| autonat::Behaviour::new(peer, crate::nat::autonat_config()))
                .into(),
        }
    }
}

/// Builds the swarm for `config` with this identity.
pub(crate) fn build(
    keypair: &dndm_core::Keypair,
    config: &MeshConfig,
) -> Result<Swarm<Behaviour>, MeshError> {
    let identity = libp2p::identity::Keypair::ed25519_from_bytes(keypair.secret_seed())
        .map_err(|e| MeshError::Setup(e.to_string()))?;
    // dndm's Noise first (AES-GCM where both sides have it), libp2p's `/noise` for other nodes.
    let secure = Offered::new(keypair, &identity).map_err(|e| MeshError::Setup(e.to_string()))?;
    let keypair = identity;
    let offer = |secure: &Offered| {
        let secure = secure.clone();
        move |_: &libp2p::identity::Keypair| Ok::<_, SecureError>(secure)
    };
    // Two per peer: a relayed connection and the direct one hole punching opened, for the
    // moment it takes to move the dndm stream over.
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(u32::try_from(config.max_peers).unwrap_or(u32::MAX)))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_outgoing(Some(u32::try_from(config.max_peers).unwrap_or(u32::MAX)))
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING));
    let setup = |e: &dyn std::fmt::Display| MeshError::Setup(e.to_string());
    let swarm = match config.transport {
        // TCP, plus the relay client transport for `/p2p-circuit` addresses.
        Transport::Tcp => libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                offer(&secure),
                yamux::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_relay_client(offer(&secure), yamux::Config::default)
            .map_err(|e| setup(&e))?
            .with_behaviour(|key, relay_client| {
                Behaviour::new(key, config, limits, Some(relay_client))
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build(),
        Transport::Memory => libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|_| {
                use libp2p::Transport as _;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    libp2p::core::transport::MemoryTransport::default()
                        .upgrade(libp2p::core::upgrade::Version::V1)
                        .authenticate(secure)
                        .multiplex(yamux::Config::default()),
                )
            })
            .map_err(|e| setup(&e))?
            .with_behaviour(|key| Behaviour::new(key, config, limits, None))
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
            .build(),
    };
    Ok(swarm)
}

/// The libp2p allow-list: the session allow-list's peers plus the configured relays (a
/// reservation needs a libp2p connection; the relay still gets no dndm session unless it is on
/// the session allow-list). `None` without an allow-list.
fn allowed_peers(
    config: &MeshConfig,
) -> Option<allow_block_list::Behaviour<allow_block_list::AllowedPeers>> {
    let allowed = config.remote.session.allow_peers.as_ref()?;
    let mut behaviour = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
    for peer in allowed {
        match libp2p::PeerId::from_bytes(&peer.to_bytes()) {
            Ok(peer) => {
                behaviour.allow_peer(peer);
            }
            Err(e) => tracing::warn!(%peer, error = %e, "allow-list entry is not a libp2p PeerId"),
        }
    }
    for relay in &config.relays {
        if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = relay.iter().last() {
            behaviour.allow_peer(peer);
        }
    }
    Some(behaviour)
}
