//! Delivery of a peer's messages to local interests: the fan-in ([`PeerIntent`]) an endpoint
//! feeds with the peer's messages on one route, and the [`Inbox`] view of a local queue.
//!
//! A payload is decoded once per Rust type among the linked interests, and every interest of
//! that type gets the same `Arc<T>` (as in process): N subscribers of one type cost one decode.
//!
//! The fan-in never waits. A local `Block` subscriber three quarters full makes it
//! [`congested`](PayloadSink::congested), and the endpoint pauses the peer's route (flow control
//! on the wire) instead of stopping its whole link; what is still in flight fills the last
//! quarter. A subscriber that is full gets the message later: the fan-in holds it back (in
//! order, per subscriber) and reports its [`backlog`](PayloadSink::backlog). When the subscriber
//! drained, [`ready`](PayloadSink::ready) resolves and the endpoint [`pump`](PayloadSink::pump)s
//! the held messages on, then resumes the route.

use std::any::{Any, TypeId};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use bytes::Bytes;
use dndm_core::{Message, PayloadSink, Route, SinkError, SubscriberFeedback};

use crate::id::HandleId;
use crate::queue::{Push, Queue};
use crate::sync::lock;

/// A decoded message of some Rust type, shared by every interest of that type.
pub(crate) type Item = Arc<dyn Any + Send + Sync>;

/// A local interest's queue as a fan-in sees it: typed behind [`Any`], so that a payload is
/// decoded once per Rust type.
pub(crate) trait Inbox: Send + Sync + std::fmt::Debug {
    /// The Rust type of the queue's messages.
    fn item_type(&self) -> TypeId;
    /// Decodes a payload into the queue's type.
    fn decode(&self, payload: &Bytes) -> Result<Item, SinkError>;
    /// Counts a payload that did not decode (a message this interest lost).
    fn count_decode_error(&self);
    /// Offers a decoded item of the queue's type without waiting: what became of it (queued,
    /// or queued by evicting the oldest, or discarded as the newest), [`SinkError::Full`] from
    /// a full `Block` queue, [`SinkError::Closed`] from a closed one.
    fn offer(&self, item: &Item) -> Result<Offered, SinkError>;
    /// Messages waiting, and the capacity.
    fn depth(&self) -> (usize, usize);
    /// Whether an offer would be refused for want of room (so the caller need not decode).
    fn refuses(&self) -> bool;
    /// A `Block` queue three quarters full.
    fn congested(&self) -> bool;
    /// Resolves once the queue drained to its low-water mark, or closed.
    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

impl<T: Message> Inbox for Queue<T> {
    fn item_type(&self) -> TypeId {
        TypeId::of::<T>()
    }

    fn decode(&self, payload: &Bytes) -> Result<Item, SinkError> {
        match T::decode(payload.clone()) {
            Ok(message) => Ok(Arc::new(message)),
            Err(e) => Err(SinkError::Decode {
                type_name: T::type_name(),
                len: payload.len(),
                reason: e.to_string(),
            }),
        }
    }

    fn count_decode_error(&self) {
        Queue::count_decode_error(self);
    }

    fn offer(&self, item: &Item) -> Result<Offered, SinkError> {
        // Decoded for this queue's type (`item_type`), so the downcast holds.
        let Ok(item) = item.clone().downcast::<T>() else {
            return Err(SinkError::Closed);
        };
        match self.try_push(item) {
            Push::Closed => Err(SinkError::Closed),
            Push::Full(_) => Err(SinkError::Full),
            Push::Queued => Ok(Offered::Queued),
            Push::EvictedOldest => Ok(Offered::EvictedOldest),
            Push::DroppedNewest => Ok(Offered::DroppedNewest),
        }
    }

    fn depth(&self) -> (usize, usize) {
        (self.len(), self.capacity())
    }

    fn refuses(&self) -> bool {
        Queue::refuses(self)
    }

    fn congested(&self) -> bool {
        Queue::congested(self)
    }

    fn ready(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(Queue::ready(self))
    }
}

/// What became of an item offered to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued.
    Queued,
    /// Queued after evicting the oldest (`DropOldest`).
    EvictedOldest,
    /// Discarded: the queue was full (`DropNewest`).
    DroppedNewest,
}

/// The payload decoded for each Rust type met so far (usually one), or why it did not decode.
#[derive(Default)]
struct Decoded {
    first: Option<(TypeId, Result<Item, SinkError>)>,
    more: Vec<(TypeId, Result<Item, SinkError>)>,
}

impl Decoded {
    /// The payload as `inbox`'s type, decoded at the first inbox of that type.
    fn get(&mut self, inbox: &dyn Inbox, payload: &Bytes) -> &Result<Item, SinkError> {
        let ty = inbox.item_type();
        if self.first.as_ref().is_none_or(|(t, _)| *t == ty) {
            return &self
                .first
                .get_or_insert_with(|| (ty, inbox.decode(payload)))
                .1;
        }
        let at = match self.more.iter().position(|(t, _)| *t == ty) {
            Some(at) => at,
            None => {
                self.more.push((ty, inbox.decode(payload)));
                self.more.len() - 1
            }
        };
        &self.more[at].1
    }
}

/// Most messages held back for one subscriber. A peer that honours the pause sends at most its
/// window after it, so only a peer that ignores it reaches this; past it messages are dropped
/// for that subscriber and counted ([`PeerIntent::overruns`]).
pub(crate) const MAX_HELD: usize = 1 << 16;

type Sinks = Vec<(HandleId, Arc<dyn Inbox>)>;

/// The fan-in of one peer intent into every linked local interest.
#[derive(Debug)]
pub(crate) struct PeerIntent {
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
    /// Messages of this fan-in that `DropOldest` subscribers evicted older ones for, and that
    /// `DropNewest` subscribers discarded: reported back to the publisher.
    dropped_oldest: AtomicU64,
    dropped_newest: AtomicU64,
}

impl PeerIntent {
    pub(crate) fn new() -> Self {
        Self {
            sinks: ArcSwap::from_pointee(Vec::new()),
            held: Mutex::new(HashMap::new()),
            held_count: AtomicUsize::new(0),
            held_bytes: AtomicUsize::new(0),
            overruns: AtomicU64::new(0),
            dropped_oldest: AtomicU64::new(0),
            dropped_newest: AtomicU64::new(0),
        }
    }

    /// Counts what a subscriber did with an offered message.
    fn count(&self, offered: Result<Offered, SinkError>) -> Result<(), SinkError> {
        match offered? {
            Offered::Queued => {}
            Offered::EvictedOldest => {
                self.dropped_oldest.fetch_add(1, Ordering::Relaxed);
            }
            Offered::DroppedNewest => {
                self.dropped_newest.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
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
        lock(&self.held)
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

    /// Offers the message to every linked local interest, decoded once per Rust type; a full
    /// one holds it back (see the module docs). [`SinkError::Full`] only when a hold overflowed
    /// (the message is lost for that subscriber); a decode error is the peer's and is reported
    /// (the link decides).
    fn try_send(&self, _route: &Route, payload: Bytes) -> Result<(), SinkError> {
        let sinks = self.sinks.load();
        let mut result = Ok(());
        let mut held = (self.held_count.load(Ordering::Acquire) > 0).then(|| self.held());
        let mut decoded = Decoded::default();
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
            // A full `Block` queue would refuse it: do not decode only to hold it.
            let offered = if sink.refuses() {
                Err(SinkError::Full)
            } else {
                match decoded.get(&**sink, &payload) {
                    Ok(item) => self.count(sink.offer(item)),
                    Err(e) => {
                        sink.count_decode_error();
                        result = Err(e.clone());
                        continue;
                    }
                }
            };
            // A local interest that closed meanwhile is being unlinked; not an error.
            if let Err(SinkError::Full) = offered {
                let held = held.get_or_insert_with(|| self.held());
                if !self.hold(held.entry(*id).or_default(), payload.clone()) {
                    result = Err(SinkError::Full);
                }
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
                if sink.refuses() {
                    break;
                }
                let offered = match sink.decode(front) {
                    Ok(item) => self.count(sink.offer(&item)),
                    Err(e) => {
                        sink.count_decode_error();
                        Err(e)
                    }
                };
                if let Err(SinkError::Full) = offered {
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

    fn feedback(&self) -> SubscriberFeedback {
        let (lag, capacity) = self
            .sinks
            .load()
            .iter()
            .map(|(_, sink)| sink.depth())
            .max_by_key(|&(len, capacity)| (len * 1000) / capacity.max(1))
            .unwrap_or_default();
        SubscriberFeedback {
            dropped_oldest: self.dropped_oldest.load(Ordering::Relaxed),
            dropped_newest: self.dropped_newest.load(Ordering::Relaxed),
            lag: lag as u64,
            capacity: capacity as u64,
        }
    }

    async fn ready(&self) {
        let waiting: Vec<Arc<dyn Inbox>> = {
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
        let fan_in = PeerIntent::new();
        let (a, b): (Arc<dyn Inbox>, Arc<dyn Inbox>) = (full.clone(), roomy.clone());
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
        let fan_in = PeerIntent::new();
        let sink: Arc<dyn Inbox> = queue.clone();
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

    /// A fan-in into `n` roomy `DropOldest` queues of one type.
    fn fan_in_to(n: u64) -> (PeerIntent, Vec<Arc<Queue<Num>>>) {
        let fan_in = PeerIntent::new();
        let queues: Vec<Arc<Queue<Num>>> = (0..n)
            .map(|_| Arc::new(Queue::new(4, Overflow::DropOldest)))
            .collect();
        fan_in.update(|sinks| {
            for (i, q) in (0..).zip(&queues) {
                let q: Arc<dyn Inbox> = q.clone();
                sinks.push((HandleId(i), q));
            }
        });
        (fan_in, queues)
    }

    #[test]
    fn a_payload_is_decoded_once_for_all_subscribers_of_its_type() {
        let (fan_in, queues) = fan_in_to(3);
        fan_in.try_send(&route(), encoded(7)).unwrap();
        let got: Vec<Arc<Num>> = queues
            .iter()
            .map(|q| Receiver::new(q.clone()).try_pop().unwrap())
            .collect();
        assert_eq!(got[0].n, 7);
        assert!(
            got.iter().all(|m| Arc::ptr_eq(m, &got[0])),
            "every subscriber of the type shares one decoded message"
        );
    }

    #[test]
    fn a_payload_that_does_not_decode_is_counted_at_each_subscriber_and_reported() {
        let (fan_in, queues) = fan_in_to(2);
        let garbage = Bytes::from_static(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            fan_in.try_send(&route(), garbage),
            Err(SinkError::Decode { .. })
        ));
        for q in &queues {
            assert_eq!(q.stats().1.decode_errors, 1);
        }
    }
}
