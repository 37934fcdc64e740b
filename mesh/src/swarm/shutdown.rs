//! Leaving in order: the actor closes its libp2p connections before the swarm goes.
//!
//! Dropping a `Swarm` aborts its connection tasks: whatever the dndm streams had handed to
//! yamux and yamux had not written yet is lost, and the peer sees the connection drop. When
//! the mesh closes, those are the sessions' last frames (acknowledgements, then Close), written
//! by the links just before (`MeshEndpoint::close` closes the links while the swarm runs).
//! Closing each connection instead makes yamux write what its streams queued, then its GoAway,
//! then close the socket; the peer reads the Close before the end of the stream.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt as _;
use libp2p::swarm::{ConnectionId, SwarmEvent};

use super::Actor;

impl Actor {
    /// Closes every established connection in order and waits until libp2p reports each
    /// closed, for at most `bound` (a peer that stopped reading cannot hold the close longer):
    /// then the swarm can be dropped. Other events are dropped: the actor is stopping.
    pub(super) async fn close_connections(&mut self, bound: Duration) {
        let mut open: HashSet<ConnectionId> = self.established.keys().copied().collect();
        open.retain(|&id| self.swarm.close_connection(id));
        let closed = async {
            while !open.is_empty() {
                if let SwarmEvent::ConnectionClosed { connection_id, .. } =
                    self.swarm.select_next_some().await
                {
                    open.remove(&connection_id);
                }
            }
        };
        if tokio::time::timeout(bound, closed).await.is_err() {
            tracing::debug!(
                left = open.len(),
                ?bound,
                "connections still closing; dropped with the swarm"
            );
        }
    }
}
