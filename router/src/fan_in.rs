//! A peer's intent as seen by local interests: the fan-in an endpoint feeds with the peer's
//! messages on one route.
//!
//! The fan-in never waits. A local `Block` subscriber three quarters full makes it
//! [`congested`](PayloadSink::congested), and the endpoint pauses the peer's route (flow control
//! on the wire) instead of stopping its whole link; what is still in flight fills the last
//! quarter. A subscriber that is full gets the message later: the fan-in holds it back (in
//! order, per subscriber) and reports its [`backlog`](PayloadSink::backlog). When the subscriber
//! drained, [`ready`](PayloadSink::ready) resolves and the endpoint [`pump`](PayloadSink::pump)s
//! the held messages on, then resumes the route.

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
    /// Bytes of the messages in `held` (the endpoint bounds them per peer).
    held_bytes: AtomicUsize,
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
            held_bytes: AtomicUsize::new(0),
            overruns: AtomicU64::new(0),
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Sinks)) {
        let mut sinks = Vec::clone(&self.sinks.load());
        f(&mut sinks);
        self.sinks.store(Arc::new(sinks));
    }

    /// Messages dropped because a subscriber's hold was full (the peer ignored the pause).
    #[cfg(test)]
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
        self.held_bytes.fetch_add(payload.len(), Ordering::Relaxed);
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

    fn held_bytes(&self) -> usize {
        self.held_bytes.load(Ordering::Relaxed)
    }

    fn pump(&self) -> usize {
        if self.held_count.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let sinks = self.sinks.load();
        let mut held = self.held();
        let mut left = 0;
        let mut freed = 0;
        held.retain(|id, queue| {
            // Unlinked meanwhile: nobody left to deliver to.
            let Some((_, sink)) = sinks.iter().find(|(s, _)| s == id) else {
                freed += queue.iter().map(Bytes::len).sum::<usize>();
                return false;
            };
            while let Some(front) = queue.front() {
                if let Err(SinkError::Full) = sink.try_send(&self.route, front.clone()) {
                    break;
                }
                // Queued, or the subscriber closed, or it does not decode (counted there).
                freed += front.len();
                queue.pop_front();
            }
            left += queue.len();
            !queue.is_empty()
        });
        self.held_bytes.fetch_sub(freed, Ordering::Relaxed);
        self.held_count.store(left, Ordering::Release);
        left
    }

    fn congested(&self) -> bool {
        self.sinks.load().iter().any(|(_, sink)| sink.congested())
    }

    async fn ready(&self) {
        let waiting: Vec<Arc<dyn PayloadSink>> = {
            let held = self.held();
            let sinks = self.sinks.load();
            sinks
                .iter()
                .filter(|(id, sink)| {
                    held.get(id).is_some_and(|q| !q.is_empty()) || sink.congested()
                })
                .map(|(_, sink)| sink.clone())
                .collect()
        };
        if waiting.is_empty() {
            return;
        }
        futures::future::select_all(waiting.iter().map(|sink| sink.ready())).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use dndm_core::Overflow;
    use prost::Message as _;

    use super::*;
    use crate::queue::{Queue, Receiver};

    #[derive(Clone, PartialEq, prost::Message)]
    struct Num {
        #[prost(uint64, tag = "1")]
        n: u64,
    }

    impl prost::Name for Num {
        const NAME: &'static str = "Num";
        const PACKAGE: &'static str = "test";
    }
    impl dndm_core::Message for Num {}

    fn route() -> Route {
        "test.Num@x".parse().unwrap()
    }

    fn encoded(n: u64) -> Bytes {
        Bytes::from(Num { n }.encode_to_vec())
    }

    /// A fan-in into one `Block` queue of `capacity` and one roomy one.
    fn fan_in(capacity: usize) -> (PeerIntent, Receiver<Num>, Receiver<Num>) {
        let full = Arc::new(Queue::<Num>::new(capacity, Overflow::Block));
        let roomy = Arc::new(Queue::<Num>::new(2 * MAX_HELD, Overflow::Block));
        let fan_in = PeerIntent::new(route());
        let (a, b): (Arc<dyn PayloadSink>, Arc<dyn PayloadSink>) = (full.clone(), roomy.clone());
        fan_in.update(|sinks| {
            sinks.push((HandleId(1), a));
            sinks.push((HandleId(2), b));
        });
        (fan_in, Receiver::new(full), Receiver::new(roomy))
    }

    #[tokio::test]
    async fn a_full_subscriber_holds_messages_back_in_order_while_others_get_them() {
        let (fan_in, mut slow, mut fast) = fan_in(2);
        for n in 0..10 {
            fan_in.try_send(&route(), encoded(n)).unwrap();
        }
        assert_eq!(fan_in.backlog(), 8, "two fit, eight held");
        for n in 0..10 {
            assert_eq!(
                fast.try_pop().ok().map(|m| m.n),
                Some(n),
                "the other got all"
            );
        }
        // Nothing held moves while the subscriber is full.
        assert_eq!(fan_in.pump(), 8);
        let mut got = Vec::new();
        while fan_in.backlog() > 0 {
            while let Ok(m) = slow.try_pop() {
                got.push(m.n);
            }
            // Room was made: ready resolves at once, and pumping moves messages on.
            tokio::time::timeout(std::time::Duration::from_secs(5), fan_in.ready())
                .await
                .unwrap();
            fan_in.pump();
        }
        while let Ok(m) = slow.try_pop() {
            got.push(m.n);
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        assert_eq!(fan_in.overruns(), 0);
    }

    #[tokio::test]
    async fn a_hold_past_its_bound_drops_and_counts() {
        let (fan_in, _slow, _fast) = fan_in(1);
        for n in 0..(MAX_HELD as u64 + 1) {
            fan_in.try_send(&route(), encoded(n)).unwrap();
        }
        assert_eq!(fan_in.backlog(), MAX_HELD);
        assert_eq!(
            fan_in.try_send(&route(), encoded(0)),
            Err(SinkError::Full),
            "past the bound the message is lost for that subscriber, and said so"
        );
        assert_eq!(fan_in.overruns(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    /// A fan-in fed faster than its subscriber reads, on two threads: holding back, congestion
    /// and `ready` wake-ups never lose a message or hang.
    async fn ready_wakes_when_a_concurrent_consumer_drains() {
        let route = route();
        let queue = Arc::new(Queue::<Num>::new(1024, Overflow::Block));
        let fan_in = PeerIntent::new(route.clone());
        let sink: Arc<dyn PayloadSink> = queue.clone();
        fan_in.update(|sinks| sinks.push((HandleId(1), sink)));
        let mut rx = Receiver::new(queue.clone());
        const N: u64 = 200_000;
        let consumer = tokio::spawn(async move {
            for n in 0..N {
                let got = std::future::poll_fn(|cx| rx.poll_pop(cx)).await.unwrap();
                assert_eq!(got.n, n);
            }
        });
        let mut n = 0;
        while n < N {
            fan_in
                .try_send(&route, Bytes::from(Num { n }.encode_to_vec()))
                .unwrap();
            n += 1;
            if fan_in.backlog() > 0 || fan_in.congested() {
                loop {
                    tokio::time::timeout(std::time::Duration::from_secs(5), fan_in.ready())
                        .await
                        .expect("ready wakes");
                    fan_in.pump();
                    if fan_in.backlog() == 0 && !fan_in.congested() {
                        break;
                    }
                }
            }
        }
        consumer.await.unwrap();
    }
}
