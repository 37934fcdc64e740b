//! Synchronisation primitives of the delivery machinery (signal, ring, queue), and small helpers:
//! a poison-tolerant lock and an RAII count of waiting publishers.
//!
//! Built with `--cfg dndm_loom`, the atomics, locks, fences, the waker cell and the
//! publishers' `Notify` are loom's (or built on loom's), and `ArrayQueue` is a loom port of
//! crossbeam's algorithm, so `interleavings.rs` can explore every interleaving of the ring and
//! the queue; otherwise they are std's, futures', tokio's and crossbeam's.

use std::sync::PoisonError;

#[cfg(not(dndm_loom))]
pub(crate) use crossbeam_queue::ArrayQueue;
#[cfg(not(dndm_loom))]
pub(crate) use futures::task::AtomicWaker;
#[cfg(not(dndm_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(not(dndm_loom))]
pub(crate) use std::sync::{Mutex, RwLock};
#[cfg(not(dndm_loom))]
pub(crate) use tokio::sync::Notify;
#[cfg(not(dndm_loom))]
pub(crate) use tokio::time::timeout_at;

#[cfg(dndm_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
#[cfg(dndm_loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard, RwLock};
#[cfg(dndm_loom)]
pub(crate) use model::{ArrayQueue, AtomicWaker, Notify, timeout_at};

/// Locks a mutex of the router. Nothing that can panic runs while one of these is held, so a
/// poisoned lock still holds consistent data.
pub(crate) fn lock<M: Lockable>(m: &M) -> M::Guard<'_> {
    m.lock_consistent()
}

/// A mutex [`lock`] takes: std's, and under loom also loom's (the delivery machinery's).
pub(crate) trait Lockable {
    type Guard<'a>
    where
        Self: 'a;
    fn lock_consistent(&self) -> Self::Guard<'_>;
}

impl<G> Lockable for std::sync::Mutex<G> {
    type Guard<'a>
        = std::sync::MutexGuard<'a, G>
    where
        G: 'a;
    fn lock_consistent(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(dndm_loom)]
impl<G> Lockable for Mutex<G> {
    type Guard<'a>
        = MutexGuard<'a, G>
    where
        G: 'a;
    fn lock_consistent(&self) -> Self::Guard<'_> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a publisher waiting for room for as long as it lives, so a cancelled wait does not
/// leave the count raised.
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Counts one more waiter. The fence keeps the waiter's next look at the queue from passing
    /// the increment (store-load), pairing with the fence readers issue after making room and
    /// before reading the count: either the reader sees the waiter, or the waiter sees the room.
    pub(crate) fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(dndm_loom)]
mod model;
