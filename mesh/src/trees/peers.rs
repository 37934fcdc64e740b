//! The membership policy's glue: dials through the swarm, peer exchanges with addresses, and
//! the sweep of connections that carry no tree link.

use std::time::Instant;

use dndm_core::PeerId;
use libp2p::Multiaddr;

use super::{ADDRESS_BOOK, LINKLESS_GRACE, Trees};
use crate::overlay::membership::MembershipAction;
use crate::overlay::wire::Message;
use crate::swarm::Command;

impl Trees {
    /// A new peer's hello told us about peers.
    pub(super) fn learn(&mut self, peers: Vec<(PeerId, Vec<Multiaddr>)>) {
        let ids = self.remember_all(peers);
        self.membership.learned(ids);
    }

    /// A neighbour's exchange (answered unless it is a reply).
    pub(super) fn exchanged(
        &mut self,
        from: PeerId,
        peers: Vec<(PeerId, Vec<Multiaddr>)>,
        reply: bool,
    ) {
        let ids = self.remember_all(peers);
        self.membership.exchanged(from, ids, reply);
    }

    fn remember_all(&mut self, peers: Vec<(PeerId, Vec<Multiaddr>)>) -> Vec<PeerId> {
        let ids: Vec<PeerId> = peers.iter().map(|(p, _)| *p).collect();
        for (id, addrs) in peers {
            self.remember(id, addrs);
        }
        ids
    }

    pub(super) fn remember(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == self.me || addrs.is_empty() {
            return;
        }
        if self.addresses.len() >= ADDRESS_BOOK && !self.addresses.contains_key(&peer) {
            return;
        }
        self.addresses.insert(peer, addrs);
    }

    pub(super) fn on_membership(&mut self, action: MembershipAction<PeerId>) {
        match action {
            MembershipAction::Dial(peer) => {
                let addrs = self.addresses.get(&peer).cloned().unwrap_or_default();
                let Ok(peer_id) = libp2p::PeerId::from_bytes(&peer.to_bytes()) else {
                    return;
                };
                tracing::debug!(%peer, ?addrs, "tree dial");
                if addrs.is_empty()
                    || self
                        .commands
                        .try_send(Command::DialPeer(peer_id, addrs))
                        .is_err()
                {
                    self.membership.dial_failed(peer);
                }
            }
            MembershipAction::Disconnect(peer) => self.drop_neighbour(peer, true),
            MembershipAction::Exchange { to, peers, reply } => {
                let peers = self.with_addresses(peers);
                self.send(to, &Message::Peers { peers, reply });
            }
        }
    }

    /// Peers with the addresses to dial them on (this node's own listen addresses for itself);
    /// peers without a known address are left out.
    pub(super) fn with_addresses(&self, peers: Vec<PeerId>) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let mine = (self.listening)();
        peers
            .into_iter()
            .filter_map(|p| {
                let addrs = if p == self.me {
                    mine.clone()
                } else {
                    self.addresses.get(&p)?.clone()
                };
                (!addrs.is_empty()).then_some((p, addrs))
            })
            .collect()
    }

    /// Closes connections that carry no link that is up after [`LINKLESS_GRACE`]: a greeting
    /// that never finished, a stream that was never opened or was lost, a connection a refusal
    /// left behind. Each holds a connection slot a newcomer needs; whatever the cause, closing
    /// it leaves both sides in one clear state.
    pub(super) fn sweep(&mut self, now: Instant) {
        let connected = (self.connected)();
        self.linkless.retain(|peer, _| connected.contains(peer));
        for peer_id in connected {
            let peer = crate::swarm::dndm_peer(&peer_id);
            let up = peer
                .and_then(|p| self.neighbours.get(&p))
                .is_some_and(|n| n.up);
            if up {
                self.linkless.remove(&peer_id);
                continue;
            }
            let since = *self.linkless.entry(peer_id).or_insert(now);
            if now.duration_since(since) >= LINKLESS_GRACE {
                tracing::debug!(peer = %peer_id, "connection without a tree link; closing it");
                self.linkless.remove(&peer_id);
                self.stats.linkless_closed += 1;
                // A neighbour's link disconnects the peer itself once its queue is written.
                if !peer.is_some_and(|p| self.connection_gone(p)) {
                    let _ = self.commands.try_send(Command::Disconnect(peer_id));
                }
            }
        }
    }
}
