//! A subscriber's wake-up: what its publishers (a queue's producers, the cursors of local
//! intents' rings) need of it, and nothing else — whether it sleeps, how to wake it, whether it
//! closed, and the count of messages it lost as the oldest.

use std::task::Waker;

use crossbeam_utils::CachePadded;

use crate::sync::{AtomicBool, AtomicU64, AtomicWaker, Ordering, fence};

/// A subscriber's wake-up and closed flag, shared by its queue and its ring cursors.
#[derive(Debug)]
pub(crate) struct Signal {
    /// Set by the consumer before it sleeps; a producer that sees it wakes the consumer.
    parked: CachePadded<AtomicBool>,
    consumer: AtomicWaker,
    closed: AtomicBool,
    /// Messages lost as the oldest: evicted (`DropOldest` queue) or skipped by a cursor.
    dropped_oldest: AtomicU64,
}

impl Signal {
    pub(crate) fn new() -> Self {
        Self {
            parked: CachePadded::new(AtomicBool::new(false)),
            consumer: AtomicWaker::default(),
            closed: AtomicBool::new(false),
            dropped_oldest: AtomicU64::new(0),
        }
    }

    /// Wakes the consumer whether or not it sleeps.
    pub(crate) fn wake(&self) {
        fence(Ordering::SeqCst);
        self.parked.store(false, Ordering::Relaxed);
        self.consumer.wake();
    }

    /// Wakes the consumer if it sleeps. Call after a `fence(Ordering::SeqCst)` that follows
    /// the write of what it should find (one fence can serve a whole fan-out).
    pub(crate) fn wake_if_parked(&self) {
        if self.parked.load(Ordering::Relaxed) && self.parked.swap(false, Ordering::AcqRel) {
            self.consumer.wake();
        }
    }

    /// The consumer is about to sleep: it must look once more for messages after this (the
    /// fence pairs with the producers' fence between their write and `wake_if_parked`).
    pub(crate) fn park(&self, waker: &Waker) {
        self.consumer.register(waker);
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The consumer found something after [`Signal::park`] and does not sleep.
    pub(crate) fn unpark(&self) {
        self.parked.store(false, Ordering::Relaxed);
    }

    /// Marks the subscriber closed (producers are refused from now on) and wakes it.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Counts messages lost as the oldest.
    pub(crate) fn count_dropped_oldest(&self, n: u64) {
        self.dropped_oldest.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn dropped_oldest(&self) -> u64 {
        self.dropped_oldest.load(Ordering::Relaxed)
    }
}
