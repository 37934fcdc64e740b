//! The bounded per-interest queue and its overflow policies.
//!
//! One queue per interest, many producers (the intents linked to it), one consumer (the
//! interest). Items are `Arc<T>`, so fan-out shares one allocation. The consumer parks its waker
//! in the queue state (taken by the next push); producers blocked by the `Block` policy park on a
//! [`Notify`]. Every wait is woken by `close`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use dndm_core::{Message, Overflow, PayloadSink, Route, SinkError};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;

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

/// Counters of one queue, kept under the queue lock (no extra atomics on the hot path).
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

/// A bounded multi-producer, single-consumer queue of `Arc<T>`.
pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    overflow: Overflow,
    /// Producers waiting for space (`Block` only), woken after pops and on close.
    space: Notify,
    /// Number of producers waiting on `space`; pops skip the notify when zero.
    blocked: AtomicUsize,
    /// Mirror of `State::closed` readable without the lock.
    closed: AtomicBool,
    /// Blocked producers are woken once the queue has drained to this depth, not on every pop:
    /// one wake-up then admits a batch of sends.
    low_water: usize,
}

struct State<T> {
    items: VecDeque<Arc<T>>,
    closed: bool,
    /// The consumer's waker, set only while it waits on an empty queue; taken by the next push
    /// or by close. Kept under the lock so registering and checking for items are one step.
    consumer: Option<Waker>,
    counters: Counters,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<T> Queue<T> {
    pub(crate) fn new(capacity: usize, overflow: Overflow) -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
                consumer: None,
                counters: Counters::default(),
            }),
            capacity,
            overflow,
            space: Notify::new(),
            blocked: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            low_water: capacity - capacity.div_ceil(4),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn overflow(&self) -> Overflow {
        self.overflow
    }

    /// Queue depth and counters, read together.
    pub(crate) fn stats(&self) -> (usize, Counters) {
        let state = self.lock();
        (state.items.len(), state.counters)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn count_decode_error(&self) {
        self.lock().counters.decode_errors += 1;
    }

    /// Offers an item without waiting.
    pub(crate) fn try_push(&self, item: Arc<T>) -> Push<T> {
        let (outcome, waker) = {
            let mut state = self.lock();
            if state.closed {
                return Push::Closed;
            }
            let outcome = if state.items.len() < self.capacity {
                state.items.push_back(item);
                state.counters.accepted += 1;
                Push::Queued
            } else {
                match self.overflow {
                    Overflow::DropOldest => {
                        state.items.pop_front();
                        state.items.push_back(item);
                        state.counters.accepted += 1;
                        state.counters.dropped_oldest += 1;
                        Push::EvictedOldest
                    }
                    Overflow::DropNewest => {
                        state.counters.dropped_newest += 1;
                        return Push::DroppedNewest;
                    }
                    Overflow::Block => return Push::Full(item),
                }
            };
            (outcome, state.consumer.take())
        };
        // Wake outside the lock, so the consumer does not wake into a held lock.
        if let Some(waker) = waker {
            waker.wake();
        }
        outcome
    }

    /// Offers an item, waiting for space until `deadline` when the policy is `Block`.
    /// Returns `Push::Full` only when the deadline passed.
    ///
    /// # Cancel safety
    /// Cancelling loses the item; the queue is unaffected.
    pub(crate) async fn push(&self, mut item: Arc<T>, deadline: Option<Instant>) -> Push<T> {
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            // Register before re-checking, so a pop between the check and the wait wakes us.
            notified.as_mut().enable();
            self.blocked.fetch_add(1, Ordering::SeqCst);
            let outcome = self.try_push(item);
            let full = match outcome {
                Push::Full(back) => back,
                other => {
                    self.blocked.fetch_sub(1, Ordering::SeqCst);
                    return other;
                }
            };
            let timed_out = match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, notified).await.is_err(),
                None => {
                    notified.await;
                    false
                }
            };
            self.blocked.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                return Push::Full(full);
            }
            item = full;
        }
    }

    /// Takes the oldest item; with `cx`, registers the consumer's waker when there is none.
    /// `Err(true)` when closed and drained, `Err(false)` when empty.
    fn pop(&self, cx: Option<&mut Context<'_>>) -> Result<Arc<T>, bool> {
        let mut low = false;
        let popped = {
            let mut state = self.lock();
            match state.items.pop_front() {
                Some(item) => {
                    state.counters.delivered += 1;
                    low = state.items.len() <= self.low_water;
                    Ok(item)
                }
                None => {
                    if let (Some(cx), false) = (cx, state.closed) {
                        match &mut state.consumer {
                            Some(waker) => waker.clone_from(cx.waker()),
                            slot @ None => *slot = Some(cx.waker().clone()),
                        }
                    }
                    Err(state.closed)
                }
            }
        };
        if low && self.blocked.load(Ordering::SeqCst) > 0 {
            self.space.notify_waiters();
        }
        popped
    }

    /// Takes the oldest item without waiting. `Err(true)` when closed and drained.
    pub(crate) fn try_pop(&self) -> Result<Arc<T>, bool> {
        self.pop(None)
    }

    /// Polls for the oldest item; `Ready(None)` when closed and drained.
    pub(crate) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<Arc<T>>> {
        match self.pop(Some(cx)) {
            Ok(item) => Poll::Ready(Some(item)),
            Err(true) => Poll::Ready(None),
            Err(false) => Poll::Pending,
        }
    }

    /// Closes the queue: producers are refused from now on and every waiter is woken. Items
    /// already queued stay receivable.
    pub(crate) fn close(&self) {
        self.close_with(false);
    }

    /// Closes the queue and discards what it holds.
    pub(crate) fn close_and_clear(&self) {
        self.close_with(true);
    }

    fn close_with(&self, clear: bool) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            if clear {
                state.items.clear();
            }
            state.consumer.take()
        };
        self.closed.store(true, Ordering::Release);
        if let Some(waker) = waker {
            waker.wake();
        }
        self.space.notify_waiters();
    }
}

/// Decodes payloads from peers into `T` and queues them: how a peer's intent feeds a local
/// interest.
#[async_trait::async_trait]
impl<T: Message> PayloadSink for Queue<T> {
    async fn send(&self, _route: &Route, payload: Bytes) -> Result<(), SinkError> {
        let item = Arc::new(self.decode(payload)?);
        match self.push(item, None).await {
            Push::Closed => Err(SinkError::Closed),
            _ => Ok(()),
        }
    }

    fn try_send(&self, _route: &Route, payload: Bytes) -> Result<(), SinkError> {
        let item = Arc::new(self.decode(payload)?);
        match self.try_push(item) {
            Push::Closed => Err(SinkError::Closed),
            Push::Full(_) => Err(SinkError::Full),
            _ => Ok(()),
        }
    }
}

impl<T: Message> Queue<T> {
    fn decode(&self, payload: Bytes) -> Result<T, SinkError> {
        let len = payload.len();
        T::decode(payload).map_err(|e| {
            self.count_decode_error();
            SinkError::Decode {
                type_name: T::type_name(),
                len,
                reason: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_oldest_keeps_newest() {
        let q = Queue::new(2, Overflow::DropOldest);
        for i in 0..5 {
            q.try_push(Arc::new(i));
        }
        assert_eq!(*q.try_pop().unwrap(), 3);
        assert_eq!(*q.try_pop().unwrap(), 4);
        assert!(!q.try_pop().unwrap_err(), "empty, not closed");
        assert_eq!(q.stats().1.dropped_oldest, 3);
    }

    #[test]
    fn drop_newest_keeps_first() {
        let q = Queue::new(2, Overflow::DropNewest);
        for i in 0..5 {
            q.try_push(Arc::new(i));
        }
        assert_eq!(*q.try_pop().unwrap(), 0);
        assert_eq!(*q.try_pop().unwrap(), 1);
        assert_eq!(q.stats().1.dropped_newest, 3);
    }

    #[test]
    fn block_refuses_when_full_and_close_drains_then_ends() {
        let q = Queue::new(1, Overflow::Block);
        assert!(matches!(q.try_push(Arc::new(1)), Push::Queued));
        assert!(matches!(q.try_push(Arc::new(2)), Push::Full(_)));
        q.close();
        assert!(matches!(q.try_push(Arc::new(3)), Push::Closed));
        assert_eq!(*q.try_pop().unwrap(), 1);
        assert!(q.try_pop().unwrap_err(), "closed and drained");
    }

    #[tokio::test(start_paused = true)]
    async fn blocked_push_times_out_and_resumes_after_pop() {
        let q = Arc::new(Queue::new(1, Overflow::Block));
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
        assert_eq!(*q.try_pop().unwrap(), 1);
        assert!(pusher.await.unwrap());
        assert_eq!(*q.try_pop().unwrap(), 2);
    }
}
