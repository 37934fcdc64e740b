//! A peer's intent as seen by local interests: the fan-in an endpoint feeds with the peer's
//! messages on one route.
//!
//! The fan-in never waits. A local `Block` subscriber that is full gets the message later: the
//! fan-in holds it back (in order, per subscriber) and reports its [`backlog`](PayloadSink::backlog)
//! to the endpoint, which pauses the peer's route (flow control on the wire) instead of stopping
//! its whole link. When the subscriber makes room, [`ready`](PayloadSink::ready) resolves and the
//! endpoint [`pump`](PayloadSink::pump)s the held messages on, then resumes the route.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;
use dndm_core::{PayloadSink, Route, SinkError};

use crate::snapshot::HandleId;

/// Most messages held back for one subscriber. A peer that honours the pause sends at most its
/// window after it, so only a peer that ignores it reaches this; past it messages are dropped
/// for that subscriber and counted ([`PeerIntent::overruns`]).
pub(crate) const MAX_HELD: usize = 1 << 16;

type Sinks = Vec<(HandleId, Arc<dyn PayloadSink>)>;

/// The fan-in of one peer intent into every linked local interest.
#[derive(Debug)]
pub(crate) struct PeerIntent {
    route: Route,
    sinks: ArcSwap<Sinks>,
    /// Messages held back per full subscriber, oldest first. Written only by the link that owns
    /// this fan-in (one producer), so the mutex is uncontended.
    held: Mutex<HashMap<HandleId, VecDeque<Bytes>>>,
    /// Messages in `held`, so a send skips the mutex while nothing is held.
    held_count: AtomicUsize,
    /// Messages dropped because a subscriber's hold was full.
    overruns: AtomicU64,
}

impl PeerIntent {
    pub(crate) fn new(route: Route) -> Self {
        Self {
            route,
            sinks: ArcSwap::from_pointee(Vec::new()),
            held: Mutex::new(HashMap::new()),
            held_count: AtomicUsize::new(0),
            overruns: AtomicU64::new(0),
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Sinks)) {
        let mut sinks = Vec::clone(&self.sinks.load());
        f(&mut sinks);
        self.sinks.store(Arc::new(sinks));
    }

    /// Messages dropped because a subscriber's hold was full (the peer ignored the pause).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn overruns(&self) -> u64 {
        self.overruns.load(Ordering::Relaxed)
    }

    fn held(&self) -> MutexGuard<'_, HashMap<HandleId, VecDeque<Bytes>>> {
        // Nothing that can panic runs under this lock, so a poisoned one is consistent.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds `payload` back for one subscriber; false when its hold is full (dropped, counted).
    fn hold(&self, queue: &mut VecDeque<Bytes>, payload: Bytes) -> bool {
        if queue.len() >= MAX_HELD {
            self.overruns.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        queue.push_back(payload);
        self.held_count.fetch_add(1, Ordering::Release);
        true
    }
}

#[async_trait::async_trait]
impl PayloadSink for PeerIntent {
    /// As [`PayloadSink::try_send`]: a fan-in never waits.
    async fn send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.try_send(route, payload)
    }

    /// Offers the message to every linked local interest; a full one holds it back (see the
    /// module docs). [`SinkError::Full`] only when a hold overflowed (the message is lost for
    /// that subscriber); a decode error is the peer's and is reported (the link decides).
    fn try_send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        let sinks = self.sinks.load();
        let mut result = Ok(());
        let mut held = (self.held_count.load(Ordering::Acquire) > 0).then(|| self.held());
        for (id, sink) in sinks.iter() {
            // Behind messages already held for this subscriber: keep the order.
            if let Some(queue) = held.as_mut().and_then(|h| h.get_mut(id))
                && !queue.is_empty()
            {
                if !self.hold(queue, payload.clone()) {
                    result = Err(SinkError::Full);
                }
                continue;
            }
            match sink.try_send(route, payload.clone()) {
                Err(SinkError::Full) => {
                    let held = held.get_or_insert_with(|| self.held());
                    if !self.hold(held.entry(*id).or_default(), payload.clone()) {
                        result = Err(SinkError::Full);
                    }
                }
                Err(e @ SinkError::Decode { .. }) => result = Err(e),
                // A local interest that closed meanwhile is being unlinked; not an error.
                _ => {}
            }
        }
        result
    }

    fn backlog(&self) -> usize {
        self.held_count.load(Ordering::Acquire)
    }

    fn pump(&self) -> usize {
        if self.held_count.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let sinks = self.sinks.load();
        let mut held = self.held();
        let mut left = 0;
        held.retain(|id, queue| {
            // Unlinked meanwhile: nobody left to deliver to.
            let Some((_, sink)) = sinks.iter().find(|(s, _)| s == id) else {
                return false;
            };
            while let Some(front) = queue.front() {
                if let Err(SinkError::Full) = sink.try_send(&self.route, front.clone()) {
                    break;
                }
                // Queued, or the subscriber closed, or it does not decode (counted there).
                queue.pop_front();
            }
            left += queue.len();
            !queue.is_empty()
        });
        self.held_count.store(left, Ordering::Release);
        left
    }

    async fn ready(&self) {
        let waiting: Vec<Arc<dyn PayloadSink>> = {
            let held = self.held();
            let sinks = self.sinks.load();
            sinks
                .iter()
                .filter(|(id, _)| held.get(id).is_some_and(|q| !q.is_empty()))
                .map(|(_, sink)| sink.clone())
                .collect()
        };
        if waiting.is_empty() {
            return;
        }
        futures::future::select_all(waiting.iter().map(|sink| sink.ready())).await;
    }
}
