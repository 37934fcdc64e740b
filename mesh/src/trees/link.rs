//! A tree link's two tasks: the reader (decodes and checks messages) and the writer (drains
//! the neighbour's queue, then closes; disconnects the peer when the link was refused).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use dndm_core::PeerId;
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{HIGH_WATER, TreeEvent, WireBytes};
use crate::overlay::wire::{self, MAX_MESSAGE};
use crate::swarm::Command;

/// Reads a neighbour's stream.
pub(super) struct Reader {
    pub(super) peer: PeerId,
    pub(super) link: u64,
    pub(super) events: mpsc::Sender<TreeEvent>,
    /// Counts the bytes read.
    pub(super) received: Arc<WireBytes>,
}

impl Reader {
    /// Reads length-prefixed messages until the stream ends, a message is bad, or the mesh
    /// closes.
    pub(super) async fn run(
        self,
        mut read: futures::io::ReadHalf<libp2p::Stream>,
        cancel: CancellationToken,
    ) {
        let Self {
            peer,
            link,
            events,
            received,
        } = self;
        let bad = loop {
            let mut prefix = [0u8; 4];
            match read_or_cancel(&mut read, &mut prefix, &cancel).await {
                None => return,
                Some(Err(_)) => break None,
                Some(Ok(())) => {}
            }
            let len = u32::from_be_bytes(prefix) as usize;
            if len > MAX_MESSAGE {
                break Some(wire::WireError::TooLong(len).to_string());
            }
            let mut body = vec![0; len];
            match read_or_cancel(&mut read, &mut body, &cancel).await {
                None => return,
                Some(Err(_)) => break None,
                Some(Ok(())) => {}
            }
            received
                .received
                .fetch_add(4 + len as u64, Ordering::Relaxed);
            match wire::decode(Bytes::from(body)) {
                Ok(message) => {
                    if events
                        .send(TreeEvent::Message {
                            peer,
                            link,
                            message,
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => break Some(e.to_string()),
            }
        };
        let _ = events.send(TreeEvent::Closed { peer, link, bad }).await;
    }
}

/// Fills `buf` from the stream; `None` when the mesh closes first.
async fn read_or_cancel(
    read: &mut futures::io::ReadHalf<libp2p::Stream>,
    buf: &mut [u8],
    cancel: &CancellationToken,
) -> Option<std::io::Result<()>> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => None,
        read = read.read_exact(buf) => Some(read),
    }
}

/// Writes a neighbour's queue to its stream.
pub(super) struct Writer {
    pub(super) peer: PeerId,
    pub(super) link: u64,
    /// Told when the stream fails: the link is dropped, not left up with a dead stream.
    pub(super) events: mpsc::Sender<TreeEvent>,
    pub(super) rx: mpsc::UnboundedReceiver<Bytes>,
    pub(super) queued: Arc<AtomicUsize>,
    pub(super) drained: Arc<Notify>,
    /// Counts the bytes written.
    pub(super) sent: Arc<WireBytes>,
    pub(super) disconnect: Arc<AtomicBool>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) peer_id: libp2p::PeerId,
}

impl Writer {
    pub(super) async fn run(
        mut self,
        mut write: futures::io::WriteHalf<libp2p::Stream>,
        cancel: CancellationToken,
    ) {
        let mut failed = false;
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = self.rx.recv() => next,
            };
            let Some(bytes) = next else { break };
            let written = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                written = write.write_all(&bytes) => written,
            };
            if written.is_err() {
                failed = true;
                break;
            }
            self.sent
                .sent
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let before = self.queued.fetch_sub(bytes.len(), Ordering::Relaxed);
            if before > HIGH_WATER && before - bytes.len() <= HIGH_WATER {
                self.drained.notify_one();
            }
            if self.rx.is_empty() {
                let flushed = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    flushed = write.flush() => flushed,
                };
                if flushed.is_err() {
                    failed = true;
                    break;
                }
            }
        }
        // The queue is written (or the stream failed): close our half, then the connection if
        // the link was refused or evicted.
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = write.close() => {}
        }
        self.queued.store(0, Ordering::Relaxed);
        self.drained.notify_one();
        if failed {
            let closed = TreeEvent::Closed {
                peer: self.peer,
                link: self.link,
                bad: None,
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                _ = self.events.send(closed) => {}
            }
        }
        if self.disconnect.load(Ordering::Relaxed) {
            let _ = self.commands.send(Command::Disconnect(self.peer_id)).await;
        }
    }
}
