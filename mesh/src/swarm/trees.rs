//! The swarm actor's side of multi-hop mode: tree streams opened on new connections, and
//! the tree actor told about peers (addresses, failed dials, closed connections).

use super::{Actor, Command, dndm_peer};
use dndm_core::PeerId;
use libp2p::swarm::DialError;

impl Actor {
    /// In multi-hop mode, the side with the lower PeerId opens the tree stream of a new
    /// connection; the tree actor decides whether the peer becomes a neighbour.
    pub(super) fn open_tree_stream(&mut self, peer_id: libp2p::PeerId) {
        let Some(tree) = self.inner.tree.get() else {
            return;
        };
        if self.local > peer_id || self.inner.closing.is_cancelled() {
            return;
        }
        let mut control = self.control.clone();
        let events = tree.events.clone();
        let closing = self.inner.closing.clone();
        let commands = self.commands_tx.clone();
        self.inner.tracker.spawn(async move {
            let opened = tokio::select! {
                biased;
                () = closing.cancelled() => return,
                opened = control.open_stream(peer_id, crate::TREE_PROTOCOL) => opened,
            };
            match opened {
                Ok(stream) => {
                    let _ = events
                        .send(crate::trees::TreeEvent::Stream(peer_id, stream))
                        .await;
                }
                Err(e) => {
                    // A connection without a tree link has no use (and would hold a slot).
                    tracing::debug!(%peer_id, error = %e, "tree stream not opened");
                    let _ = commands.send(Command::Disconnect(peer_id)).await;
                }
            }
        });
    }

    /// Tells the tree actor (multi-hop mode) that a dial to `peer` failed: a fault of the peer
    /// (unreachable), or of this side only (busy: already connected or dialing, this node's
    /// connection limit, the dial cancelled).
    pub(super) fn tell_trees_dial_failed(&self, peer: &libp2p::PeerId, error: &DialError) {
        tracing::debug!(%peer, %error, "dial failed");
        let busy = matches!(
            error,
            DialError::Denied { .. } | DialError::Aborted | DialError::DialPeerConditionFalse(_)
        );
        if busy {
            self.tell_trees(crate::trees::TreeEvent::DialBusy, peer);
        } else {
            self.tell_trees(crate::trees::TreeEvent::DialFailed, peer);
        }
    }

    /// Tells the tree actor (multi-hop mode) about a peer.
    pub(super) fn tell_trees(
        &self,
        event: impl FnOnce(PeerId) -> crate::trees::TreeEvent,
        peer: &libp2p::PeerId,
    ) {
        if let (Some(tree), Some(peer)) = (self.inner.tree.get(), dndm_peer(peer)) {
            let _ = tree.notices.send(event(peer));
        }
    }
}
