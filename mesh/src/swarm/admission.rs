//! Refused connections: who may connect (the allow-list, see `behaviour.rs`), what a refusal
//! counts as, and when a refusal frees a slot.
//!
//! An incoming connection is refused for one of two reasons, each counted in
//! [`MeshStats`](crate::MeshStats): its peer is not on the allow-list (after Noise, before any
//! behaviour serves it), or a connection limit is reached (`MAX_PENDING_INCOMING` handshakes,
//! or `max_peers` established). Only the second, once the peer is known (the established bound),
//! makes the actor close an idle connection so the peer's retry can get in: a refused outsider
//! never costs an admitted peer its slot.

use libp2p::swarm::{ConnectionDenied, DialError};
use libp2p::{allow_block_list, connection_limits};

use super::{Actor, EVICT_SPACING};

impl Actor {
    /// Whether `peer` may connect at all: on the libp2p allow-list (see `behaviour.rs`), or
    /// any peer without one.
    pub(super) fn allowed(&self, peer: &libp2p::PeerId) -> bool {
        self.swarm
            .behaviour()
            .allow
            .as_ref()
            .is_none_or(|allow| allow.allowed_peers().contains(peer))
    }

    /// A behaviour refused an incoming connection: count it, and at the established bound free
    /// a slot for the peer's retry.
    pub(super) fn on_incoming_denied(
        &mut self,
        peer: Option<libp2p::PeerId>,
        cause: &ConnectionDenied,
    ) {
        if cause
            .downcast_ref::<allow_block_list::NotAllowed>()
            .is_some()
        {
            tracing::debug!(?peer, "connection refused: peer not on remote.allow_peers");
            self.inner.stats.send_modify(|s| s.refused_not_allowed += 1);
            return;
        }
        if cause
            .downcast_ref::<connection_limits::Exceeded>()
            .is_some()
        {
            tracing::debug!(?peer, %cause, "connection refused");
            self.inner.stats.send_modify(|s| s.refused_over_limit += 1);
            // A known peer passed the handshake and met the established bound: someone wants
            // us. A pending refusal (peer unknown) is a handshake flood: no eviction for it.
            if peer.is_some()
                && self
                    .last_eviction
                    .is_none_or(|t| t.elapsed() >= EVICT_SPACING)
            {
                self.evict_idle();
            }
        }
    }

    /// A dial failed; if the allow-list refused it (Kademlia dials peers other nodes named),
    /// count it.
    pub(super) fn on_dial_error(&mut self, peer: Option<libp2p::PeerId>, error: &DialError) {
        if let DialError::Denied { cause } = error
            && cause
                .downcast_ref::<allow_block_list::NotAllowed>()
                .is_some()
        {
            tracing::debug!(?peer, "dial refused: peer not on remote.allow_peers");
            self.inner.stats.send_modify(|s| s.dials_not_allowed += 1);
        }
    }
}
