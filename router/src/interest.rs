//! The subscriber handle [`Interest`].

use std::any::Any;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dndm_core::{Fingerprint, Message, Overflow, RoutePattern};
use futures::Stream;

use crate::delivery::Inbox;
use crate::error::{RecvError, RecvTimeoutError, TryRecvError};
use crate::events::{EventHub, LinkEvent, LinkEvents};
use crate::id::HandleId;
use crate::linker::InterestSlot;
use crate::queue::{Queue, Receiver};
use crate::shared::Inner;
use crate::snapshot::QueueStats;

/// Subscriber state shared between the handle and the linker.
pub(crate) struct InterestShared<T> {
    pub(crate) queue: Arc<Queue<T>>,
    events: EventHub,
}

impl<T: Message> InterestShared<T> {
    /// A subscriber's state; `history` is how many kept messages of each local publisher it
    /// asked for.
    pub(crate) fn new(capacity: usize, overflow: Overflow, history: usize) -> Self {
        Self {
            queue: Arc::new(Queue::new(capacity, overflow).with_history(history)),
            events: EventHub::new(),
        }
    }
}

impl<T: Message> InterestSlot for InterestShared<T> {
    fn queue_any(&self) -> Arc<dyn Any + Send + Sync> {
        self.queue.clone()
    }

    fn inbox(&self) -> Arc<dyn Inbox> {
        self.queue.clone()
    }

    fn event(&self, event: LinkEvent) {
        self.events.send(event);
    }

    fn close(&self) {
        self.queue.close();
    }

    fn stats(&self) -> QueueStats {
        let (len, c) = self.queue.stats();
        QueueStats {
            len,
            capacity: self.queue.capacity(),
            overflow: self.queue.overflow(),
            accepted: c.accepted,
            delivered: c.delivered,
            dropped_oldest: c.dropped_oldest,
            dropped_newest: c.dropped_newest,
            decode_errors: c.decode_errors,
        }
    }
}

/// A subscriber of `T` on a route pattern.
///
/// Each interest has its own bounded queue with an overflow policy. Receive with
/// [`Interest::recv`], [`Interest::try_recv`], [`Interest::recv_timeout`] or as a [`Stream`].
/// Dropping the interest (or [`Interest::close`]) unlinks it everywhere.
pub struct Interest<T: Message> {
    pub(crate) id: HandleId,
    pub(crate) pattern: RoutePattern,
    pub(crate) shared: Arc<InterestShared<T>>,
    /// The consuming end of the queue (with its local buffer).
    pub(crate) rx: Receiver<T>,
    pub(crate) router: Arc<Inner>,
}

impl<T: Message> Interest<T> {
    /// Waits for the next message.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is removed from the queue only when this returns it.
    ///
    /// # Errors
    /// [`RecvError::Closed`] once the interest or router is closed and the queue is drained.
    pub async fn recv(&mut self) -> Result<Arc<T>, RecvError> {
        std::future::poll_fn(|cx| self.rx.poll_pop(cx))
            .await
            .ok_or(RecvError::Closed)
    }

    /// Takes the next message if one is queued.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when nothing is queued; [`TryRecvError::Closed`] once closed and
    /// drained.
    pub fn try_recv(&mut self) -> Result<Arc<T>, TryRecvError> {
        self.rx.try_pop().map_err(|closed| {
            if closed {
                TryRecvError::Closed
            } else {
                TryRecvError::Empty
            }
        })
    }

    /// Waits up to `timeout` for the next message. A zero timeout never waits; a timeout too
    /// large to represent (such as [`Duration::MAX`]) waits forever.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when nothing arrived in time; [`RecvTimeoutError::Closed`]
    /// once closed and drained.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<Arc<T>, RecvTimeoutError> {
        if timeout.is_zero() {
            return self.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout(timeout),
                _ => RecvTimeoutError::Closed,
            });
        }
        let Some(deadline) = tokio::time::Instant::now().checked_add(timeout) else {
            return self.recv().await.map_err(|_| RecvTimeoutError::Closed);
        };
        match tokio::time::timeout_at(deadline, self.recv()).await {
            Ok(result) => result.map_err(|_| RecvTimeoutError::Closed),
            Err(_) => Err(RecvTimeoutError::Timeout(timeout)),
        }
    }

    /// Number of messages queued now.
    pub fn len(&self) -> usize {
        self.shared.queue.len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queue depth, capacity, policy and counters (accepted, delivered, drops by reason).
    pub fn stats(&self) -> QueueStats {
        self.shared.stats()
    }

    /// A stream of link events (linked, unlinked, refused). The first call also returns the
    /// events since this handle was declared (so a refusal decided while declaring it is not
    /// missed), as many as fit the bounded channel; later calls get events from now on.
    pub fn events(&self) -> LinkEvents {
        self.shared.events.listen()
    }

    /// The pattern this interest subscribes to.
    pub fn pattern(&self) -> &RoutePattern {
        &self.pattern
    }

    /// The schema fingerprint advertised for this interest.
    pub fn fingerprint(&self) -> Fingerprint {
        T::fingerprint()
    }

    /// This interest's id in snapshots and link events.
    pub fn id(&self) -> HandleId {
        self.id
    }

    /// Whether the interest (or its router) is closed. Queued messages may still be received.
    pub fn is_closed(&self) -> bool {
        self.shared.queue.is_closed()
    }

    /// Unlinks the interest everywhere and wakes a waiting receiver, which gets the queued
    /// messages and then [`RecvError::Closed`]. (Messages waiting in a local publisher's ring
    /// stay receivable until that publisher has written a whole ring more; older ones are then
    /// counted as dropped.)
    pub fn close(&self) {
        self.router.remove_handle(self.id);
    }
}

impl<T: Message> Stream for Interest<T> {
    type Item = Arc<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_pop(cx)
    }
}

impl<T: Message> Drop for Interest<T> {
    fn drop(&mut self) {
        self.router.remove_handle(self.id);
        // Nobody can receive any more: free what is queued now.
        self.rx.queue().close_and_clear();
    }
}

impl<T: Message> std::fmt::Debug for Interest<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interest")
            .field("id", &self.id)
            .field("pattern", &self.pattern)
            .field("queued", &self.len())
            .finish_non_exhaustive()
    }
}
