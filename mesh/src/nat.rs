//! Reaching peers behind NAT: circuit relay v2 (server and client), hole punching (DCUtR) and
//! reachability (AutoNAT v1).
//!
//! A node behind a NAT cannot be dialed. It keeps a connection to a public relay and reserves a
//! slot there (it listens on `<relay>/p2p-circuit`); a peer then dials
//! `<relay>/p2p-circuit/p2p/<node>` and the relay splices the two connections into a circuit.
//! dndm sessions run over circuits like over any connection. Once a relayed connection is up,
//! DCUtR has both ends dial each other's observed addresses at the same moment (TCP simultaneous
//! open), which opens a direct path through most NATs (not through symmetric NATs, which map
//! each destination to a new port). When the direct connection is up, the actor closes the
//! relayed one: the dndm stream is opened again on the direct connection and the session
//! resumes (reliable routes resend what was not acknowledged, and drop what arrives twice).
//!
//! AutoNAT asks connected peers to dial this node back on its candidate addresses (identify's
//! observed addresses): a successful dial-back confirms an external address (which the relay
//! server then advertises in its reservations), failures make the node private.

use std::fmt;
use std::time::Duration;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// How much a relay server hands out ([`crate::MeshConfig::relay_limits`]).
///
/// libp2p's own defaults (2 minutes and 128 KiB per circuit) would cut a dndm session every few
/// seconds of traffic; these defaults let a session live on a circuit until hole punching
/// replaces it, or for an hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayLimits {
    /// Reservations held at once (clients that can be reached through this relay). Default 128.
    pub max_reservations: usize,
    /// Reservations one peer may hold at once. Default 4.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts before the client must renew it. Default 1 hour.
    pub reservation_duration: Duration,
    /// Circuits relayed at once. Default 64.
    pub max_circuits: usize,
    /// Circuits one peer may hold at once. Default 8.
    pub max_circuits_per_peer: usize,
    /// A circuit is closed after this long (the session resumes on a new one). Default 1 hour.
    pub circuit_duration: Duration,
    /// A circuit is closed after relaying this many bytes each way. Default 1 GiB.
    pub circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            circuit_duration: Duration::from_secs(3600),
            circuit_bytes: 1 << 30,
        }
    }
}

impl RelayLimits {
    /// The relay server's configuration (libp2p's rate limiters kept).
    pub(crate) fn server_config(&self) -> libp2p::relay::Config {
        libp2p::relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.circuit_duration,
            max_circuit_bytes: self.circuit_bytes,
            ..libp2p::relay::Config::default()
        }
    }
}

/// How a peer is reached ([`crate::MeshPeer::path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Path {
    /// At least one connection goes straight to the peer.
    #[default]
    Direct,
    /// Every connection runs through a relay's circuit.
    Relayed,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Relayed => "relayed",
        })
    }
}

/// Whether other nodes can dial this one, as AutoNAT found ([`crate::MeshEndpoint::reachability`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Reachability {
    /// Not probed yet, or AutoNAT is off ([`crate::MeshConfig::autonat`]).
    #[default]
    Unknown,
    /// A peer dialed this node back on this address.
    Public(Multiaddr),
    /// Dial-backs failed: this node is behind a NAT or firewall (reach it through a relay).
    Private,
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown => f.write_str("unknown"),
            Self::Public(addr) => write!(f, "public {addr}"),
            Self::Private => f.write_str("private"),
        }
    }
}

/// A slot on a configured relay ([`crate::MeshEndpoint::relay_reservations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayReservation {
    /// The relay, as configured.
    pub relay: Multiaddr,
    /// Whether the relay accepted the reservation (peers can reach us through it).
    pub reserved: bool,
    /// Why the last reservation attempt failed or ended, e.g. `reservation refused by relay:
    /// remote reported resource limit exceeded` when the relay is full.
    pub error: Option<String>,
}

/// Whether an address runs through a relay.
pub(crate) fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The listen address that reserves a slot on `relay`.
pub(crate) fn circuit_listen_addr(relay: &Multiaddr) -> Multiaddr {
    relay.clone().with(Protocol::P2pCircuit)
}

/// An error with its causes, `outer: inner: innermost` (libp2p's messages are terse on top).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The AutoNAT configuration: probes start soon and repeat often enough for a test bed or a
/// robot that moves between networks; private (RFC 1918) addresses count, since meshes of
/// dndm nodes often live on private networks behind one another's NATs.
pub(crate) fn autonat_config() -> libp2p::autonat::Config {
    libp2p::autonat::Config {
        boot_delay: Duration::from_secs(1),
        retry_interval: Duration::from_secs(5),
        refresh_interval: Duration::from_secs(60),
        throttle_server_period: Duration::from_secs(1),
        confidence_max: 1,
        only_global_ips: false,
        timeout: Duration::from_secs(10),
        ..libp2p::autonat::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_addresses_are_recognised() {
        let relayed: Multiaddr =
            "/ip4/203.0.113.10/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
                .parse()
                .unwrap();
        let direct: Multiaddr = "/ip4/203.0.113.10/tcp/4001".parse().unwrap();
        assert!(is_relayed(&relayed));
        assert!(!is_relayed(&direct));
        assert!(is_relayed(&circuit_listen_addr(&direct)));
        assert_eq!(Path::Relayed.to_string(), "relayed");
        assert_eq!(Reachability::Private.to_string(), "private");
    }
}
