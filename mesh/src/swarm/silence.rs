//! Silent connections: how the actor learns that a libp2p connection stopped carrying bytes.
//!
//! A path that goes dead without a FIN or an RST (a black hole, a NAT mapping that expired, a
//! cable pulled between two switches) leaves the libp2p connection "established": yamux has no
//! keepalive of its own, libp2p's ping only reports its failures, and Kademlia's queries keep
//! the connection from ever going idle. The dndm session is what notices: nothing arrives for
//! the session's idle timeout despite the peer's keepalives, so the link declares the
//! connection lost and drops its stream. A new stream on the same libp2p connection would only
//! wait behind the silence, so the actor must give that connection up and dial a new one.
//!
//! The actor learns of it through the streams it hands to the links: each is a [`Watched`]
//! stream that remembers when it last read a byte. When the link drops one that read nothing
//! for at least the idle timeout, and saw neither an end nor an error (the peer did not close
//! it, the connection did not fail under it), it reports the peer to [`Silent`], and the actor
//! closes that peer's connections older than the silence and redials it with backoff
//! (`Actor::replace_silent`).

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::Actor;

/// Peers whose dndm stream went silent, for the actor. Bounded by the number of peers.
#[derive(Debug, Default)]
pub(crate) struct Silent {
    peers: Mutex<HashSet<libp2p::PeerId>>,
    notify: Notify,
}

impl Silent {
    /// Waits until a peer was reported since the last [`Silent::take`].
    ///
    /// # Cancel safety
    /// Cancel safe: a report stays until taken.
    pub(crate) async fn reported(&self) {
        self.notify.notified().await;
    }

    /// The peers reported since the last call.
    pub(crate) fn take(&self) -> Vec<libp2p::PeerId> {
        self.lock().drain().collect()
    }

    fn report(&self, peer: libp2p::PeerId) {
        self.lock().insert(peer);
        // Stores a permit when the actor is not waiting: no report is missed.
        self.notify.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<libp2p::PeerId>> {
        // No code that can panic runs under this lock, so a poisoned one is consistent.
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A dndm stream that reports its peer to [`Silent`] when dropped after reading nothing for
/// at least `idle` without seeing an end or an error.
#[derive(Debug)]
pub(crate) struct Watched<S> {
    io: S,
    peer: libp2p::PeerId,
    silent: Arc<Silent>,
    idle: Duration,
    /// When a byte last arrived (or the stream was handed over).
    last_read: Instant,
    /// The stream ended or failed under the link: the connection's fate is known elsewhere.
    ended: bool,
}

impl<S> Watched<S> {
    /// Watches `io`, a stream to `peer` whose session declares silence after `idle`.
    pub(crate) fn new(io: S, peer: libp2p::PeerId, silent: Arc<Silent>, idle: Duration) -> Self {
        Self {
            io,
            peer,
            silent,
            idle,
            last_read: Instant::now(),
            ended: false,
        }
    }

    fn note<T>(&mut self, result: &Poll<std::io::Result<T>>) {
        if let Poll::Ready(Err(_)) = result {
            self.ended = true;
        }
    }
}

impl<S> Drop for Watched<S> {
    fn drop(&mut self) {
        if !self.ended && self.last_read.elapsed() >= self.idle {
            tracing::debug!(peer = %self.peer, "dndm stream dropped after a silence");
            self.silent.report(self.peer);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) if buf.filled().len() > before => self.last_read = Instant::now(),
            // The end of the stream: the peer closed it.
            Poll::Ready(Ok(())) if buf.remaining() > 0 => self.ended = true,
            _ => self.note(&result),
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.note(&result);
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_flush(cx);
        self.note(&result);
        result
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let result = Pin::new(&mut self.io).poll_shutdown(cx);
        self.note(&result);
        result
    }
}

impl Actor {
    /// `peer`'s dndm stream went silent: close the peer's connections that may have carried
    /// it and treat them as lost now (a configured address is redialed with backoff, and a LAN
    /// peer or wanted provider left with no connection too), without waiting for libp2p's
    /// `ConnectionClosed`: closing flushes the connection first, and a dead path can hold that
    /// flush up for good.
    ///
    /// The silent stream lived on its connection for at least the idle timeout, so a connection
    /// younger than that did not carry it (the peer may have reached us again already): those
    /// younger than half of it are spared, the other half absorbing how late this actor learns
    /// of a new connection.
    pub(super) fn replace_silent(&mut self, peer: libp2p::PeerId) {
        let spare = self.inner.config.remote.session.idle_timeout / 2;
        let connections: Vec<ConnectionId> = self
            .inner
            .state()
            .connections
            .get(&peer)
            .map(|c| {
                c.keys()
                    .filter(|id| {
                        !self.closing.contains(id)
                            && self
                                .established
                                .get(id)
                                .is_none_or(|t| t.elapsed() >= spare)
                    })
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        if connections.is_empty() {
            // Closed already (`ConnectionClosed` took care of the redial), or replaced.
            return;
        }
        tracing::info!(
            %peer,
            connections = connections.len(),
            "dndm session went silent; closing its connection and dialing anew"
        );
        for id in &connections {
            self.closing.insert(*id);
            self.swarm.close_connection(*id);
        }
        for id in connections {
            self.on_dial_closed(peer, id);
        }
        if !self.live(&peer) {
            self.since.remove(&peer);
            self.redial_peer_later(peer);
        }
    }

    /// Connection `id` to `peer` closed or is being closed: if it came from a configured
    /// address, redial that with backoff, or, while another connection to the peer lives on,
    /// once that one closes too. Also redials an address waiting for the peer's last
    /// connection, when that was it.
    pub(super) fn on_dial_closed(&mut self, peer: libp2p::PeerId, id: ConnectionId) {
        let live = self.live(&peer);
        if let Some(addr) = self.dials.remove(&id) {
            if live {
                self.dial_fallback.insert(peer, addr);
            } else {
                self.redial_address(addr);
            }
        }
        if !live && let Some(addr) = self.dial_fallback.remove(&peer) {
            self.redial_address(addr);
        }
    }

    /// Whether `peer` has a connection that is not being closed for silence.
    pub(super) fn live(&self, peer: &libp2p::PeerId) -> bool {
        self.inner
            .state()
            .connections
            .get(peer)
            .is_some_and(|c| c.keys().any(|id| !self.closing.contains(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn peer() -> libp2p::PeerId {
        libp2p::identity::Keypair::ed25519_from_bytes([7; 32])
            .unwrap()
            .public()
            .to_peer_id()
    }

    #[tokio::test]
    async fn a_stream_dropped_after_a_silence_reports_its_peer() {
        let silent = Arc::new(Silent::default());
        let (ours, _theirs) = tokio::io::duplex(64);
        // Idle zero: any drop without an end or an error counts as silent.
        drop(Watched::new(ours, peer(), silent.clone(), Duration::ZERO));
        tokio::time::timeout(Duration::from_secs(10), silent.reported())
            .await
            .expect("reported");
        assert_eq!(silent.take(), vec![peer()]);
        assert!(silent.take().is_empty(), "taken once");
    }

    #[tokio::test]
    async fn a_stream_that_ended_or_just_read_reports_nothing() {
        let silent = Arc::new(Silent::default());
        // The peer closed it: its end was read.
        let (ours, theirs) = tokio::io::duplex(64);
        let mut watched = Watched::new(ours, peer(), silent.clone(), Duration::ZERO);
        drop(theirs);
        assert_eq!(watched.read(&mut [0u8; 8]).await.unwrap(), 0);
        drop(watched);
        // Bytes arrived within the idle time.
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut watched = Watched::new(ours, peer(), silent.clone(), Duration::from_secs(3600));
        theirs.write_all(b"hi").await.unwrap();
        assert_eq!(watched.read(&mut [0u8; 8]).await.unwrap(), 2);
        drop(watched);
        assert!(silent.take().is_empty());
    }
}
