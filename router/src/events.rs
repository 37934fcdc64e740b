//! Link events: what handles learn about the other side of their links.

use dndm_core::{Compatibility, LinkError, Overflow, PeerId, Route, RoutePattern, Undelivered};
use tokio::sync::broadcast;

use crate::id::{HandleId, Origin};
use crate::sync::lock;

/// Capacity of each handle's event channel; a listener that falls further behind is told how
/// many events it missed ([`EventsError::Lagged`]).
pub(crate) const EVENT_CAPACITY: usize = 64;

/// Something that happened to a handle's links.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkEvent {
    /// A link was made.
    Linked {
        /// The handle on the other side.
        other: HandleId,
        /// The intent's route.
        route: Route,
        /// The interest's pattern.
        pattern: RoutePattern,
        /// Where the other side lives.
        origin: Origin,
        /// Whether the two sides use one schema, or two that read each other (fields only one
        /// side has are named).
        compatibility: Compatibility,
    },
    /// A link was removed (the other side closed or went away).
    Unlinked {
        /// The handle on the other side.
        other: HandleId,
        /// Where the other side lived.
        origin: Origin,
    },
    /// A match was refused (e.g. same type name, different schema fingerprint).
    Refused {
        /// The handle on the other side.
        other: HandleId,
        /// The intent's route.
        route: Route,
        /// The interest's pattern.
        pattern: RoutePattern,
        /// Where the other side lives.
        origin: Origin,
        /// Why.
        error: LinkError,
    },
    /// Messages of this intent did not reach a peer's subscriber (counted in
    /// [`Intent::undelivered`](crate::Intent::undelivered) too). A subscriber that stays full
    /// past the send timeout gets one event per missed message; losses inside a link (a peer
    /// retired after its grace period, a restart, a close) come as one event per cause.
    Undelivered {
        /// The peer that missed them.
        peer: PeerId,
        /// The intent's route.
        route: Route,
        /// How many.
        count: u64,
        /// Why.
        reason: Undelivered,
    },
    /// A peer's subscriber dropped messages of this intent after receiving them (its queue
    /// was full: `DropOldest` evicted older ones, `DropNewest` discarded new ones). Carried
    /// back over the session, at most every 100 ms per link; `count` is the increase since the
    /// last report, so the sum of the events is the exact total.
    Dropped {
        /// The subscriber's node.
        peer: PeerId,
        /// The intent's route.
        route: Route,
        /// How many since the last report.
        count: u64,
        /// The subscriber's overflow policy that dropped them.
        reason: Overflow,
    },
    /// A peer's subscriber falls behind: with each report that carries drops, or while its
    /// queue is at least half full.
    SlowConsumer {
        /// The subscriber's node.
        peer: PeerId,
        /// The intent's route.
        route: Route,
        /// Messages waiting in its queue.
        lag: u64,
        /// Its queue's capacity.
        capacity: u64,
    },
}

/// Why [`LinkEvents::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The handle is gone; no more events will come.
    #[error("event stream closed")]
    Closed,
    /// The listener fell behind and missed this many events; the next call resumes.
    #[error("missed {0} events")]
    Lagged(u64),
}

/// A handle's event channel. The first listener also gets what happened while the handle was
/// being declared (a refusal is often decided inside `publish`/`subscribe`, before the caller
/// could ask for events); later listeners get events from the moment they ask.
pub(crate) struct EventHub {
    sender: broadcast::Sender<LinkEvent>,
    /// Subscribed at creation; handed to the first listener. Bounded like every receiver: an
    /// untaken one only lags, the sender never waits.
    first: std::sync::Mutex<Option<broadcast::Receiver<LinkEvent>>>,
}

impl EventHub {
    pub(crate) fn new() -> Self {
        let sender = broadcast::Sender::new(EVENT_CAPACITY);
        let first = std::sync::Mutex::new(Some(sender.subscribe()));
        Self { sender, first }
    }

    pub(crate) fn send(&self, event: LinkEvent) {
        // No receiver is fine: events are for whoever listens.
        let _ = self.sender.send(event);
    }

    pub(crate) fn listen(&self) -> LinkEvents {
        let first = lock(&self.first).take();
        LinkEvents::new(first.unwrap_or_else(|| self.sender.subscribe()))
    }
}

/// A handle's stream of [`LinkEvent`]s (bounded; see [`EventsError::Lagged`]).
#[derive(Debug)]
pub struct LinkEvents {
    rx: broadcast::Receiver<LinkEvent>,
}

impl LinkEvents {
    pub(crate) fn new(rx: broadcast::Receiver<LinkEvent>) -> Self {
        Self { rx }
    }

    /// Waits for the next event.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// # Errors
    /// [`EventsError::Closed`] when the handle is gone, [`EventsError::Lagged`] when events were
    /// missed.
    pub async fn recv(&mut self) -> Result<LinkEvent, EventsError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Closed => EventsError::Closed,
            broadcast::error::RecvError::Lagged(n) => EventsError::Lagged(n),
        })
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<LinkEvent> {
        loop {
            match self.rx.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }
}
