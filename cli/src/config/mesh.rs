//! The `[mesh]` section: the libp2p mesh.

use super::*;

/// The `[mesh]` section: the libp2p mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MeshSection {
    /// Whether the node joins the mesh. Default false.
    pub enabled: bool,
    /// Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/0`. Default none (dial out only).
    pub listen: Vec<String>,
    /// Whether peers on the local network are discovered with mDNS. Default true.
    pub mdns: bool,
    /// Multiaddrs of peers to dial at start, each ending in `/p2p/<PeerId>`. Default none.
    pub bootstrap: Vec<String>,
    /// Most peers connected at once. Default 50; 1 to 10 000.
    pub max_peers: usize,
    /// Below this many connected peers, every peer learned of is dialed and gets a session (a
    /// full mesh); above it only LAN, configured and wanted peers (providers of routes this node
    /// subscribes to) do. Default 16; 1 to `max_peers`.
    pub full_mesh_threshold: usize,
    /// Carry publish/subscribe over per-publisher trees through neighbours (multi-hop) instead
    /// of a session with every publisher. For meshes larger than `max_peers`; every node of a
    /// mesh must use the same mode. Services are not carried in this mode. Default false.
    pub multi_hop: bool,
    /// Whether this node relays circuits for others (circuit relay v2 server). Default false.
    pub relay_server: bool,
    /// Most reservations the relay server holds at once. Default 128; 1 to 100 000.
    pub relay_max_reservations: usize,
    /// Most circuits the relay server runs at once. Default 64; 1 to 100 000.
    pub relay_max_circuits: usize,
    /// A relayed circuit closes after this long, in milliseconds (the session resumes on a new
    /// one). Default 3 600 000 (1 hour); 1000 to 86 400 000.
    pub relay_circuit_duration_ms: u64,
    /// A relayed circuit closes after this many bytes each way. Default 1 GiB; at least 65 536.
    pub relay_circuit_bytes: u64,
    /// Relays to reserve a slot on, so peers behind other NATs can reach this node: multiaddrs
    /// ending in `/p2p/<PeerId>`. Default none.
    pub relays: Vec<String>,
    /// Upgrade relayed connections to direct ones by hole punching (DCUtR) when `relays` is
    /// set. Default true.
    pub hole_punching: bool,
    /// Ask peers whether this node is reachable (AutoNAT). Default false.
    pub autonat: bool,
    /// Addresses this node is known to be reachable on from outside (e.g. a port forward),
    /// announced to peers. Default none.
    pub external: Vec<String>,
    /// The Kademlia (DHT) protocol id. Default `/dndm/kad/1.0.0`: dndm nodes form their own
    /// DHT. `/ipfs/kad/1.0.0` joins the public IPFS DHT on purpose (route provider records are
    /// then stored by IPFS nodes, hashed with `route_key`). Must start with `/`, at most 140
    /// bytes, printable ASCII without spaces.
    pub kad_protocol: String,
    /// The mesh-wide secret that keys the hashes of route names in DHT provider records.
    /// Default empty: a public default key, so default meshes find each other's routes, and a
    /// DHT participant can confirm a route name it guesses. Set the same secret (at least 16
    /// bytes, e.g. `openssl rand -hex 32`) on every node of a private mesh: outsiders then
    /// cannot tell which routes the records stand for.
    pub route_key: String,
}

impl Default for MeshSection {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: Vec::new(),
            mdns: true,
            bootstrap: Vec::new(),
            max_peers: 50,
            full_mesh_threshold: 16,
            multi_hop: false,
            relay_server: false,
            relay_max_reservations: 128,
            relay_max_circuits: 64,
            relay_circuit_duration_ms: 3_600_000,
            relay_circuit_bytes: 1 << 30,
            relays: Vec::new(),
            hole_punching: true,
            autonat: false,
            external: Vec::new(),
            kad_protocol: "/dndm/kad/1.0.0".to_owned(),
            route_key: String::new(),
        }
    }
}

impl MeshSection {
    pub(super) fn check(&self, problems: &mut Problems) {
        check_multiaddrs(problems, "mesh.listen", &self.listen, Ends::Anywhere);
        check_multiaddrs(problems, "mesh.bootstrap", &self.bootstrap, Ends::AtPeer);
        check_multiaddrs(problems, "mesh.relays", &self.relays, Ends::AtPeer);
        check_multiaddrs(problems, "mesh.external", &self.external, Ends::Anywhere);
        problems.range(
            "mesh.relay_max_reservations",
            self.relay_max_reservations,
            1,
            100_000,
        );
        problems.range(
            "mesh.relay_max_circuits",
            self.relay_max_circuits,
            1,
            100_000,
        );
        problems.range(
            "mesh.relay_circuit_duration_ms",
            self.relay_circuit_duration_ms,
            1000,
            86_400_000,
        );
        problems.range(
            "mesh.relay_circuit_bytes",
            self.relay_circuit_bytes,
            65_536,
            u64::MAX,
        );
        let protocol = &self.kad_protocol;
        if !protocol.starts_with('/')
            || protocol.len() > MAX_PROTOCOL_LEN
            || !protocol.bytes().all(|b| b.is_ascii_graphic())
        {
            problems.invalid(
                "mesh.kad_protocol",
                quoted(protocol),
                format!(
                    "must start with / and be at most {MAX_PROTOCOL_LEN} printable ASCII characters without spaces, e.g. /dndm/kad/1.0.0 or /ipfs/kad/1.0.0"
                ),
            );
        }
        if !self.route_key.is_empty() && self.route_key.len() < MIN_ROUTE_KEY_LEN {
            // The value is a secret: the error shows its length, never its text.
            problems.invalid(
                "mesh.route_key",
                format!("<secret of {} bytes>", self.route_key.len()),
                format!(
                    "must be empty (the public default key) or a secret of at least {MIN_ROUTE_KEY_LEN} bytes"
                ),
            );
        }
        problems.range("mesh.max_peers", self.max_peers, 1, MAX_PEERS);
        if !(1..=MAX_PEERS).contains(&self.max_peers) {
            // Compare against max_peers only when it is itself valid, to report one problem.
            problems.range(
                "mesh.full_mesh_threshold",
                self.full_mesh_threshold,
                1,
                MAX_PEERS,
            );
        } else if self.full_mesh_threshold == 0 || self.full_mesh_threshold > self.max_peers {
            problems.invalid(
                "mesh.full_mesh_threshold",
                self.full_mesh_threshold,
                format!("must be between 1 and mesh.max_peers ({})", self.max_peers),
            );
        }
    }
}

/// Whether a multiaddr must name its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// Any multiaddr.
    Anywhere,
    /// A multiaddr ending in `/p2p/<PeerId>`.
    AtPeer,
}

/// Checks that every entry of the list `field` parses as a multiaddr (ending in `/p2p/<PeerId>`
/// when `ends` says so).
fn check_multiaddrs(problems: &mut Problems, field: &str, entries: &[String], ends: Ends) {
    for (index, entry) in entries.iter().enumerate() {
        let reason = match entry.parse::<dndm::mesh::Multiaddr>() {
            Err(error) => format!("must be a multiaddr such as /ip4/10.0.0.5/tcp/4001: {error}"),
            // Printed in canonical form, the last component is `/p2p/<PeerId>` or not.
            Ok(address)
                if ends == Ends::AtPeer
                    && address.to_string().rsplit('/').nth(1) != Some("p2p") =>
            {
                "must be a multiaddr ending in /p2p/<PeerId>".to_owned()
            }
            Ok(_) => continue,
        };
        problems.invalid(format!("{field}[{index}]"), quoted(entry), reason);
    }
}
