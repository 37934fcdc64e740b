//! The bounded per-interest queue and its overflow policies.
//!
//! One queue per interest, many producers (the intents linked to it), one consumer (the
//! interest). Items are `Arc<T>`, so fan-out shares one allocation. The ring is lock-free
//! (`crossbeam_queue::ArrayQueue`; its `force_push` is `DropOldest`), so producers and consumer on
//! different cores do not contend on a lock. The consumer parks on its [`Signal`] (producers
//! touch its waker only when it sleeps); producers blocked by the `Block` policy park on a
//! [`Notify`]. Every wait is woken by `close`. Decoding a peer's payloads is not the queue's
//! job (see [`crate::delivery`]): it holds `Arc<T>`s.
//!
//! Local intents reach `Block` and `DropOldest` subscribers through their rings instead (see
//! [`crate::ring`]): the queue then lists the subscriber's cursors, and its receiver reads both.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use crossbeam_utils::CachePadded;
use dndm_core::Overflow;
use tokio::time::Instant;

use crate::id::HandleId;
use crate::ring::{Cursor, MAX_CURSORS, Ring};
use crate::signal::Signal;
use crate::sync::{
    ArrayQueue, AtomicBool, AtomicU64, AtomicUsize, Mutex, Notify, Ordering, Waiting, fence, lock,
    timeout_at,
};

/// What happened to an item offered to a queue.
#[derive(Debug)]
pub(crate) enum Push<T> {
    /// Queued.
    Queued,
    /// Queued after evicting the oldest item (`DropOldest`).
    EvictedOldest,
    /// Discarded because the queue was full (`DropNewest`).
    DroppedNewest,
    /// Not queued: the queue is full and its policy is `Block`.
    Full(Arc<T>),
    /// Not queued: the queue is closed.
    Closed,
}

/// A copy of a queue's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    /// Items accepted (queued), including those later evicted.
    pub(crate) accepted: u64,
    /// Items handed to the consumer.
    pub(crate) delivered: u64,
    /// Items evicted by `DropOldest`.
    pub(crate) dropped_oldest: u64,
    /// Items discarded by `DropNewest`.
    pub(crate) dropped_newest: u64,
    /// Encoded payloads from peers that did not decode.
    pub(crate) decode_errors: u64,
}

/// Counters written by producers (kept apart from the consumer's, so they share no cache line).
/// `accepted` is derived: every accepted item is delivered, queued or evicted (the evictions
/// are counted in the [`Signal`], with the messages cursors skip).
#[derive(Debug, Default)]
struct ProducerCounters {
    dropped_newest: AtomicU64,
    decode_errors: AtomicU64,
}

/// A bounded multi-producer, single-consumer queue of `Arc<T>`.
pub(crate) struct Queue<T> {
    items: ArrayQueue<Arc<T>>,
    overflow: Overflow,
    /// The consumer's wake-up and closed flag, shared with its ring cursors.
    signal: Arc<Signal>,
    /// Producers waiting for space (`Block` only).
    space: Notify,
    /// Number of producers waiting on `space`; pops skip the notify when zero.
    blocked: CachePadded<AtomicUsize>,
    /// Blocked producers are woken once the queue drains to this depth (a quarter free), so one
    /// wake-up admits a batch of sends; a producer whose deadline passes retries once.
    low_water: usize,
    produced: CachePadded<ProducerCounters>,
    delivered: CachePadded<AtomicU64>,
    /// Cursors in local intents' rings; the receiver reads them besides `items`.
    sources: Mutex<Vec<Arc<Cursor<T>>>>,
    /// Bumped when `sources` changes, so the receiver refreshes its copy.
    sources_version: AtomicU64,
    /// How many of each local publisher's kept messages this subscriber asked for.
    history_wanted: usize,
    /// Publishers' kept messages handed over at link time: read before anything else, so they
    /// come before the live messages of their publisher.
    prefix: Mutex<VecDeque<Arc<T>>>,
    /// Whether `prefix` may hold something (the receiver skips its lock otherwise).
    has_prefix: AtomicBool,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.items.capacity())
            .field("overflow", &self.overflow)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> Queue<T> {
    /// A queue of `capacity` (at least 1; the router validates it) items.
    pub(crate) fn new(capacity: usize, overflow: Overflow) -> Self {
        Self {
            items: ArrayQueue::new(capacity.max(1)),
            overflow,
            signal: Arc::new(Signal::new()),
            space: Notify::new(),
            blocked: CachePadded::new(AtomicUsize::new(0)),
            low_water: capacity - capacity.div_ceil(4),
            produced: CachePadded::new(ProducerCounters::default()),
            delivered: CachePadded::new(AtomicU64::new(0)),
            sources: Mutex::new(Vec::new()),
            sources_version: AtomicU64::new(0),
            history_wanted: 0,
            prefix: Mutex::new(VecDeque::new()),
            has_prefix: AtomicBool::new(false),
        }
    }

    /// Asks for the latest `n` kept messages of each local publisher it links to.
    pub(crate) fn with_history(mut self, n: usize) -> Self {
        self.history_wanted = n;
        self
    }

    /// How many kept messages of each publisher this subscriber asked for.
    pub(crate) fn history_wanted(&self) -> usize {
        self.history_wanted
    }

    /// Hands the subscriber a publisher's kept messages: the receiver reads them before any
    /// message queued from now on.
    pub(crate) fn preload(&self, items: Vec<Arc<T>>) {
        if items.is_empty() || self.signal.is_closed() {
            return;
        }
        lock(&self.prefix).extend(items);
        self.has_prefix.store(true, Ordering::Release);
        // Pairs with the fence in `poll_pop`, as a push's does.
        fence(Ordering::SeqCst);
        self.wake_if_parked();
    }

    /// Takes the oldest handed-over kept message.
    fn pop_prefix(&self) -> Option<Arc<T>> {
        if !self.has_prefix.load(Ordering::Acquire) {
            return None;
        }
        let mut prefix = lock(&self.prefix);
        let item = prefix.pop_front();
        if prefix.is_empty() {
            self.has_prefix.store(false, Ordering::Release);
        }
        drop(prefix);
        if item.is_some() {
            self.count_delivered();
        }
        item
    }

    pub(crate) fn capacity(&self) -> usize {
        self.items.capacity()
    }

    pub(crate) fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Queue depth and counters (each read atomically; together they are a close snapshot).
    pub(crate) fn stats(&self) -> (usize, Counters) {
        let p = &self.produced;
        let (ring_len, ring_dropped) = self.ring_pending();
        let len = self.items.len() + ring_len as usize + lock(&self.prefix).len();
        let delivered = self.delivered.load(Ordering::Relaxed);
        // Messages a cursor will find dropped count as dropped now, as a queue's would.
        let dropped_oldest = self.signal.dropped_oldest() + ring_dropped;
        let counters = Counters {
            accepted: delivered + len as u64 + dropped_oldest,
            delivered,
            dropped_oldest,
            dropped_newest: p.dropped_newest.load(Ordering::Relaxed),
            decode_errors: p.decode_errors.load(Ordering::Relaxed),
        };
        (len, counters)
    }

    /// Messages waiting, in the queue and in rings.
    pub(crate) fn len(&self) -> usize {
        self.items.len() + self.ring_pending().0 as usize + lock(&self.prefix).len()
    }

    /// Messages waiting in rings, and messages the cursors will find dropped.
    fn ring_pending(&self) -> (u64, u64) {
        lock(&self.sources)
            .iter()
            .map(|c| c.pending())
            .fold((0, 0), |(l, d), (cl, cd)| (l + cl, d + cd))
    }

    /// Adds a ring cursor for the receiver to read.
    fn add_source(&self, cursor: Arc<Cursor<T>>) {
        let mut sources = lock(&self.sources);
        sources.push(cursor);
        self.sources_version.fetch_add(1, Ordering::Release);
    }

    /// Whether this subscriber reads `ring` through a cursor (otherwise its queue gets the
    /// messages): `Block` or `DropOldest`, with a window the ring holds, and fewer than
    /// [`MAX_CURSORS`] rings read already (a receiver polls each of them when it looks for a
    /// message).
    pub(crate) fn fits(&self, ring: &Ring<T>) -> bool {
        matches!(self.overflow, Overflow::Block | Overflow::DropOldest)
            && ring.holds(self.capacity())
            && lock(&self.sources).len() < MAX_CURSORS
    }

    /// Links this subscriber to `ring` as `id`: its receiver reads every message written from
    /// now on.
    pub(crate) fn link_to(self: &Arc<Self>, ring: &Arc<Ring<T>>, id: HandleId) {
        let block = self.overflow == Overflow::Block;
        ring.link(id, self.signal.clone(), self.capacity(), block, |cursor| {
            self.add_source(cursor);
        });
    }

    /// Forgets a cursor that is done.
    fn remove_source(&self, cursor: &Arc<Cursor<T>>) {
        let mut sources = lock(&self.sources);
        sources.retain(|c| !Arc::ptr_eq(c, cursor));
        self.sources_version.fetch_add(1, Ordering::Release);
    }

    /// Number of ring cursors the receiver reads.
    #[cfg(test)]
    pub(crate) fn source_count(&self) -> usize {
        lock(&self.sources).len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.signal.is_closed()
    }

    pub(crate) fn count_decode_error(&self) {
        self.produced.decode_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Offers an item without waiting.
    pub(crate) fn try_push(&self, item: Arc<T>) -> Push<T> {
        let outcome = self.offer(item);
        if matches!(outcome, Push::Queued | Push::EvictedOldest) {
            // Pairs with the fence in `poll_pop`: either the consumer sees this item, or we
            // see it parked.
            fence(Ordering::SeqCst);
            self.wake_if_parked();
        }
        outcome
    }

    /// Offers an item without waking the consumer: the caller must issue
    /// `fence(Ordering::SeqCst)` and then call [`Queue::wake_if_parked`] if the item was
    /// queued (so one fence serves a whole fan-out).
    pub(crate) fn offer(&self, item: Arc<T>) -> Push<T> {
        if self.signal.is_closed() {
            return Push::Closed;
        }
        match self.overflow {
            Overflow::DropOldest => match self.items.force_push(item) {
                None => Push::Queued,
                Some(_evicted) => {
                    self.signal.count_dropped_oldest(1);
                    Push::EvictedOldest
                }
            },
            Overflow::DropNewest => match self.items.push(item) {
                Ok(()) => Push::Queued,
                Err(_) => {
                    self.produced.dropped_newest.fetch_add(1, Ordering::Relaxed);
                    Push::DroppedNewest
                }
            },
            Overflow::Block => match self.items.push(item) {
                Ok(()) => Push::Queued,
                Err(back) => Push::Full(back),
            },
        }
    }

    /// Wakes the consumer if it sleeps. Call after a `fence(Ordering::SeqCst)` that follows
    /// the push.
    pub(crate) fn wake_if_parked(&self) {
        self.signal.wake_if_parked();
    }

    /// Offers an item, waiting for space until `deadline` when the policy is `Block`.
    /// Returns `Push::Full` only when the deadline passed and there is still no space.
    ///
    /// # Cancel safety
    /// Cancelling loses the item; the queue is unaffected.
    pub(crate) async fn push(&self, mut item: Arc<T>, deadline: Option<Instant>) -> Push<T> {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            // Register before re-checking, so a pop between the check and the wait wakes us.
            notified.as_mut().enable();
            let waiting = Waiting::new(&self.blocked);
            let full = match self.try_push(item) {
                Push::Full(back) => back,
                other => return other,
            };
            let timed_out = match deadline {
                Some(deadline) => timeout_at(deadline, notified).await.is_err(),
                None => {
                    notified.await;
                    false
                }
            };
            drop(waiting);
            if timed_out {
                // Wake-ups come in batches: make sure no space went unnoticed.
                return self.try_push(full);
            }
            item = full;
        }
    }

    /// Takes the oldest queued item without waiting (the receiver decides what empty means).
    fn pop(&self) -> Option<Arc<T>> {
        let item = self.items.pop()?;
        self.popped();
        Some(item)
    }

    /// Counts one item handed to the consumer. Only the consumer writes `delivered` (the
    /// `Receiver` is `&mut`), so a load and a store do, without a read-modify-write.
    fn count_delivered(&self) {
        let delivered = self.delivered.load(Ordering::Relaxed);
        self.delivered.store(delivered + 1, Ordering::Relaxed);
    }

    fn popped(&self) {
        self.count_delivered();
        // The pop frees its slot with a plain store; the fence keeps the load of `blocked` from
        // passing it (store-load reordering), pairing with the producer's increment before its
        // push: either the producer sees the free slot, or we see it waiting. (Without it a
        // producer could wait forever for room that exists.)
        fence(Ordering::SeqCst);
        if self.blocked.load(Ordering::SeqCst) > 0 && self.items.len() <= self.low_water {
            self.space.notify_waiters();
        }
    }

    /// Closes the queue: producers are refused from now on and every waiter is woken. Items
    /// already queued stay receivable.
    pub(crate) fn close(&self) {
        self.signal.close();
        self.space.notify_waiters();
        // Publishers waiting for room in this subscriber's cursors stop counting it.
        let sources = lock(&self.sources);
        for cursor in sources.iter() {
            cursor.release_publishers();
        }
    }

    /// Closes the queue and discards what it holds (also its cursors, which refer back to it).
    pub(crate) fn close_and_clear(&self) {
        self.close();
        while self.items.pop().is_some() {}
        lock(&self.prefix).clear();
        self.has_prefix.store(false, Ordering::Release);
        let cursors = std::mem::take(&mut *lock(&self.sources));
        self.sources_version.fetch_add(1, Ordering::Release);
        for cursor in &cursors {
            cursor.abandon();
        }
    }
}

/// The consuming end of a [`Queue`] and of its ring cursors, held by the interest.
pub(crate) struct Receiver<T> {
    queue: Arc<Queue<T>>,
    /// The queue's cursors as of `version`.
    cursors: Vec<Arc<Cursor<T>>>,
    version: u64,
    /// Where the next read starts among the cursors, so no publisher starves the others.
    turn: usize,
}

impl<T> Receiver<T> {
    pub(crate) fn new(queue: Arc<Queue<T>>) -> Self {
        Self {
            queue,
            cursors: Vec::new(),
            version: 0,
            turn: 0,
        }
    }

    /// Takes the oldest item of one source without waiting. `Err(true)` when closed and
    /// drained.
    pub(crate) fn try_pop(&mut self) -> Result<Arc<T>, bool> {
        let version = self.queue.sources_version.load(Ordering::Acquire);
        if version != self.version {
            self.version = version;
            self.cursors = lock(&self.queue.sources).clone();
        }
        // Read before looking at any source: the queue closes only after its cursors were
        // unlinked, so if it was closed already, empty sources stay empty.
        let closed = self.queue.is_closed();
        if let Some(item) = self.queue.pop_prefix() {
            return Ok(item);
        }
        // Sources in turns: the cursors, then the queue (index `n`).
        let n = self.cursors.len();
        let start = self.turn;
        for i in 0..=n {
            let at = (start + i) % (n + 1);
            self.turn = at + 1;
            if at == n {
                if let Some(item) = self.queue.pop() {
                    return Ok(item);
                }
                continue;
            }
            let cursor = &self.cursors[at];
            if let Some(item) = cursor.pop() {
                self.queue.count_delivered();
                return Ok(item);
            }
            if cursor.is_done() {
                self.queue.remove_source(cursor);
            }
        }
        Err(closed)
    }

    /// Polls for the oldest item; `Ready(None)` when closed and drained. Takes part in tokio's
    /// cooperative budget, like tokio's own channels, so a busy receiver yields now and then.
    pub(crate) fn poll_pop(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<T>>> {
        let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
        let polled = self.poll_pop_inner(cx);
        if polled.is_ready() {
            coop.made_progress();
        }
        polled
    }

    fn poll_pop_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<T>>> {
        match self.try_pop() {
            Ok(item) => return Poll::Ready(Some(item)),
            Err(true) => return Poll::Ready(None),
            Err(false) => {}
        }
        // Pairs with the fence in `try_push`, the ring's `write` and `close`.
        self.queue.signal.park(cx.waker());
        match self.try_pop() {
            Ok(item) => {
                self.queue.signal.unpark();
                Poll::Ready(Some(item))
            }
            Err(true) => Poll::Ready(None),
            Err(false) => Poll::Pending,
        }
    }

    /// The shared queue.
    pub(crate) fn queue(&self) -> &Arc<Queue<T>> {
        &self.queue
    }
}

impl<T> Queue<T> {
    /// Whether an offer would be refused for want of room (`Block` and full), so a caller can
    /// skip preparing the item.
    pub(crate) fn refuses(&self) -> bool {
        self.overflow == Overflow::Block && self.items.is_full()
    }

    /// A `Block` queue past its low-water mark (three quarters full) is congested.
    pub(crate) fn congested(&self) -> bool {
        self.overflow == Overflow::Block && self.items.len() > self.low_water
    }

    /// Resolves once the queue drained to its low-water mark (where blocked pushes are woken,
    /// in batches) or closed.
    pub(crate) async fn ready(&self) {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            // Register before checking, so a pop between the check and the wait wakes us.
            notified.as_mut().enable();
            let _waiting = Waiting::new(&self.blocked);
            if self.is_closed() || self.items.len() <= self.low_water {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_keeps_newest() {
        let q = Arc::new(Queue::new(2, Overflow::DropOldest));
        let mut rx = Receiver::new(q.clone());
        for i in 0..5 {
            q.try_push(Arc::new(i));
        }
        assert_eq!(*rx.try_pop().unwrap(), 3);
        assert_eq!(*rx.try_pop().unwrap(), 4);
        assert!(!rx.try_pop().unwrap_err(), "empty, not closed");
        assert_eq!(q.stats().1.dropped_oldest, 3);
    }

    #[test]
    fn drop_newest_keeps_first() {
        let q = Arc::new(Queue::new(2, Overflow::DropNewest));
        let mut rx = Receiver::new(q.clone());
        for i in 0..5 {
            q.try_push(Arc::new(i));
        }
        assert_eq!(*rx.try_pop().unwrap(), 0);
        assert_eq!(*rx.try_pop().unwrap(), 1);
        assert_eq!(q.stats().1.dropped_newest, 3);
    }

    #[test]
    fn block_refuses_when_full_and_close_drains_then_ends() {
        let q = Arc::new(Queue::new(1, Overflow::Block));
        let mut rx = Receiver::new(q.clone());
        assert!(matches!(q.try_push(Arc::new(1)), Push::Queued));
        assert!(matches!(q.try_push(Arc::new(2)), Push::Full(_)));
        q.close();
        assert!(matches!(q.try_push(Arc::new(3)), Push::Closed));
        assert_eq!(*rx.try_pop().unwrap(), 1);
        assert!(rx.try_pop().unwrap_err(), "closed and drained");
    }

    #[tokio::test(start_paused = true)]
    async fn blocked_push_times_out_and_resumes_after_pop() {
        let q = Arc::new(Queue::new(1, Overflow::Block));
        let mut rx = Receiver::new(q.clone());
        q.try_push(Arc::new(1));
        let deadline = Instant::now() + std::time::Duration::from_millis(10);
        assert!(matches!(
            q.push(Arc::new(2), Some(deadline)).await,
            Push::Full(_)
        ));

        let pusher = {
            let q = q.clone();
            tokio::spawn(async move { matches!(q.push(Arc::new(2), None).await, Push::Queued) })
        };
        // Wait until the pusher is parked, then make room.
        while q.blocked.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*rx.try_pop().unwrap(), 1);
        assert!(pusher.await.unwrap());
        assert_eq!(*rx.try_pop().unwrap(), 2);
    }
}
