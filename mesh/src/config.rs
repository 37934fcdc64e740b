//! The mesh's settings: [`MeshConfig`].

use dndm_core::EndpointError;
use dndm_remote::endpoint::RemoteConfig;
use libp2p::{Multiaddr, StreamProtocol};

use crate::{KAD_PROTOCOL, RelayLimits, RouteKey};

/// Which libp2p transport the swarm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// TCP (listen on `/ip4/…/tcp/…`).
    #[default]
    Tcp,
    /// libp2p's in-process memory transport (`/memory/N`), for tests. No mDNS.
    Memory,
}

/// Settings of a [`MeshEndpoint`](crate::MeshEndpoint).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MeshConfig {
    /// The transport.
    pub transport: Transport,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (static bootstrap), redialed with backoff when lost. An address
    /// ending in `/p2p/<PeerId>` also protects that peer from eviction at the connection bound.
    pub dial: Vec<Multiaddr>,
    /// Discover and announce on the LAN with DNS-SD over mDNS (TCP transport only). Default on.
    pub mdns: bool,
    /// Most peers connected at once. Default 50.
    pub max_peers: usize,
    /// Below this many connected peers, every peer learned of is dialed (a full mesh); above
    /// it only providers of wanted routes are. Default 16.
    pub full_mesh_threshold: usize,
    /// The session settings of the dndm streams (listen/dial targets there are ignored; the
    /// node name there is the one announced over mDNS).
    pub remote: RemoteConfig,
    /// Serve as a circuit relay (v2) for peers behind NAT, within [`Self::relay_limits`]
    /// (TCP transport only). Default off.
    pub relay_server: bool,
    /// What a relay server hands out. See [`RelayLimits`] for the defaults.
    pub relay_limits: RelayLimits,
    /// Relays to reserve a slot on, each `/…/p2p/<relay PeerId>` (TCP transport only): the
    /// node listens on `<relay>/p2p-circuit`, so peers that cannot dial it can reach it at
    /// `<relay>/p2p-circuit/p2p/<this node>`. Default none.
    pub relays: Vec<Multiaddr>,
    /// Upgrade relayed connections to direct ones by hole punching (DCUtR). Default on; only
    /// takes effect when [`Self::relays`] is not empty.
    pub hole_punching: bool,
    /// Learn whether this node is reachable (AutoNAT v1: connected peers dial it back), and
    /// answer other nodes' dial-back requests. See [`MeshEndpoint::reachability`](crate::MeshEndpoint::reachability). Default off.
    pub autonat: bool,
    /// Addresses this node is known to be reachable at (a public relay's address, say), added
    /// as confirmed external addresses at start. Default none: a relay server without any
    /// confirms its non-loopback listen addresses instead.
    pub external: Vec<Multiaddr>,
    /// The Kademlia protocol id. Default [`KAD_PROTOCOL`] (`/dndm/kad/1.0.0`); set
    /// `libp2p::kad::PROTOCOL_NAME` (`/ipfs/kad/1.0.0`) to join a standard libp2p/IPFS DHT on
    /// purpose.
    pub kad_protocol: StreamProtocol,
    /// The key of the hashes that stand for routes in DHT provider records. Default
    /// [`RouteKey::DEFAULT`] (public); every node of a mesh needs the same key.
    pub route_key: RouteKey,
    /// Multi-hop delivery: publish/subscribe runs over per-publisher trees across the mesh
    /// (`/dndm/tree/1.0.0`, see [`crate::overlay`]) instead of a dndm session with every
    /// matching peer, and a membership policy keeps each node at most `max_peers` connections
    /// (one slot stays free for newcomers). Every route reaches every matching subscriber
    /// however large the mesh; no Kademlia lookups, provider records or per-peer sessions.
    /// Services (request/response) are not carried in this mode. Default false.
    pub multi_hop: bool,
    /// Tuning of the trees in multi-hop mode (repair caches, refresh period, longest path).
    pub tree: crate::overlay::OverlayConfig,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            transport: Transport::Tcp,
            listen: Vec::new(),
            dial: Vec::new(),
            mdns: true,
            max_peers: 50,
            full_mesh_threshold: 16,
            remote: RemoteConfig::default(),
            relay_server: false,
            relay_limits: RelayLimits::default(),
            relays: Vec::new(),
            hole_punching: true,
            autonat: false,
            external: Vec::new(),
            kad_protocol: KAD_PROTOCOL,
            route_key: RouteKey::DEFAULT,
            multi_hop: false,
            tree: crate::overlay::OverlayConfig::default(),
        }
    }
}

impl MeshConfig {
    /// Checks the settings; [`MeshEndpoint::new`](crate::MeshEndpoint::new) calls it.
    ///
    /// # Errors
    /// [`EndpointError::Config`] naming the field and value that cannot work.
    pub fn validate(&self) -> Result<(), EndpointError> {
        let bad = |reason: String| EndpointError::Config {
            endpoint: "mesh".into(),
            reason,
        };
        if self.max_peers == 0 {
            return Err(bad("max_peers = 0 is invalid: must be at least 1".into()));
        }
        if self.full_mesh_threshold == 0 || self.full_mesh_threshold > self.max_peers {
            return Err(bad(format!(
                "full_mesh_threshold = {} is invalid: must be between 1 and max_peers ({})",
                self.full_mesh_threshold, self.max_peers
            )));
        }
        for (i, relay) in self.relays.iter().enumerate() {
            if !matches!(
                relay.iter().last(),
                Some(libp2p::multiaddr::Protocol::P2p(_))
            ) {
                return Err(bad(format!(
                    "relays[{i}] = \"{relay}\" is invalid: must end with /p2p/<relay PeerId>"
                )));
            }
        }
        if self.multi_hop && self.max_peers < 2 {
            return Err(bad(format!(
                "max_peers = {} is invalid with multi_hop: must be at least 2 (one slot stays free for newcomers)",
                self.max_peers
            )));
        }
        let tree = &self.tree;
        if tree.cache_batches == 0 || tree.cache_bytes == 0 {
            return Err(bad(format!(
                "tree.cache_batches = {}, tree.cache_bytes = {} is invalid: both must be at least 1",
                tree.cache_batches, tree.cache_bytes
            )));
        }
        if tree.refresh < std::time::Duration::from_millis(100) || tree.max_hops < 2 {
            return Err(bad(format!(
                "tree.refresh = {:?}, tree.max_hops = {} is invalid: at least 100 ms and 2 hops",
                tree.refresh, tree.max_hops
            )));
        }
        let limits = &self.relay_limits;
        if self.relay_server && (limits.max_reservations == 0 || limits.max_circuits == 0) {
            return Err(bad(format!(
                "relay_limits (max_reservations = {}, max_circuits = {}) is invalid: a relay server needs at least 1 of each",
                limits.max_reservations, limits.max_circuits
            )));
        }
        Ok(())
    }
}
