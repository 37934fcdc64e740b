//! Loom stand-ins for the primitives loom does not provide, built on loom's atomics and locks so
//! that loom sees (and explores) every access that orders them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicUsize, Ordering, fence};

/// crossbeam's `ArrayQueue`, same algorithm and orderings (slot stamps, `head` and `tail` laps,
/// the `SeqCst` fences of the full and empty checks), with each slot's value under a lock
/// instead of an `UnsafeCell` (the crate forbids `unsafe`): the value is only touched by the
/// thread that won the slot, after its stamp said so, so the lock adds no ordering the stamps do
/// not already give.
pub(crate) struct ArrayQueue<T> {
    head: AtomicUsize,
    tail: AtomicUsize,
    slots: Box<[Slot<T>]>,
    cap: usize,
    one_lap: usize,
}

struct Slot<T> {
    stamp: AtomicUsize,
    value: Mutex<Option<T>>,
}

impl<T> ArrayQueue<T> {
    pub(crate) fn new(cap: usize) -> Self {
        assert!(cap > 0, "capacity must be non-zero");
        Self {
            head: AtomicUsize::new(0),
            tail: AtomicUsize::new(0),
            slots: (0..cap)
                .map(|i| Slot {
                    stamp: AtomicUsize::new(i),
                    value: Mutex::new(None),
                })
                .collect(),
            cap,
            one_lap: (cap + 1).next_power_of_two(),
        }
    }

    fn push_or_else<F>(&self, mut value: T, f: F) -> Result<(), T>
    where
        F: Fn(T, usize, usize, &Slot<T>) -> Result<T, T>,
    {
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            let index = tail & (self.one_lap - 1);
            let lap = tail & !(self.one_lap - 1);
            let new_tail = if index + 1 < self.cap {
                tail + 1
            } else {
                lap.wrapping_add(self.one_lap)
            };
            let slot = &self.slots[index];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if tail == stamp {
                match self.tail.compare_exchange(
                    tail,
                    new_tail,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        *slot.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(t) => {
                        tail = t;
                        loom::thread::yield_now();
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                fence(Ordering::SeqCst);
                value = f(value, tail, new_tail, slot)?;
                loom::thread::yield_now();
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                loom::thread::yield_now();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn push(&self, value: T) -> Result<(), T> {
        self.push_or_else(value, |v, tail, _, _| {
            let head = self.head.load(Ordering::Relaxed);
            if head.wrapping_add(self.one_lap) == tail {
                Err(v)
            } else {
                Ok(v)
            }
        })
    }

    pub(crate) fn force_push(&self, value: T) -> Option<T> {
        self.push_or_else(value, |v, tail, new_tail, slot| {
            let head = tail.wrapping_sub(self.one_lap);
            let new_head = new_tail.wrapping_sub(self.one_lap);
            if self
                .head
                .compare_exchange(head, new_head, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                self.tail.store(new_tail, Ordering::SeqCst);
                let old = slot
                    .value
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(v);
                slot.stamp.store(tail + 1, Ordering::Release);
                Err(old.expect("a full slot holds a value"))
            } else {
                Ok(v)
            }
        })
        .err()
    }

    pub(crate) fn pop(&self) -> Option<T> {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let index = head & (self.one_lap - 1);
            let lap = head & !(self.one_lap - 1);
            let slot = &self.slots[index];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if head + 1 == stamp {
                let new = if index + 1 < self.cap {
                    head + 1
                } else {
                    lap.wrapping_add(self.one_lap)
                };
                match self
                    .head
                    .compare_exchange(head, new, Ordering::SeqCst, Ordering::Relaxed)
                {
                    Ok(_) => {
                        let value = slot.value.lock().unwrap_or_else(|e| e.into_inner()).take();
                        slot.stamp
                            .store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return value;
                    }
                    Err(h) => {
                        head = h;
                        loom::thread::yield_now();
                    }
                }
            } else if stamp == head {
                fence(Ordering::SeqCst);
                let tail = self.tail.load(Ordering::Relaxed);
                if tail == head {
                    return None;
                }
                loom::thread::yield_now();
                head = self.head.load(Ordering::Relaxed);
            } else {
                loom::thread::yield_now();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    pub(crate) fn is_full(&self) -> bool {
        let tail = self.tail.load(Ordering::SeqCst);
        let head = self.head.load(Ordering::SeqCst);
        head.wrapping_add(self.one_lap) == tail
    }

    pub(crate) fn len(&self) -> usize {
        loop {
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                let hix = head & (self.one_lap - 1);
                let tix = tail & (self.one_lap - 1);
                return if hix < tix {
                    tix - hix
                } else if hix > tix {
                    self.cap - hix + tix
                } else if tail == head {
                    0
                } else {
                    self.cap
                };
            }
            loom::thread::yield_now();
        }
    }
}

/// `futures`' `AtomicWaker` API over loom's.
#[derive(Debug)]
pub(crate) struct AtomicWaker(loom::future::AtomicWaker);

impl Default for AtomicWaker {
    fn default() -> Self {
        Self(loom::future::AtomicWaker::new())
    }
}

impl AtomicWaker {
    pub(crate) fn register(&self, waker: &Waker) {
        self.0.register_by_ref(waker);
    }

    pub(crate) fn wake(&self) {
        self.0.wake();
    }
}

/// The part of `tokio::sync::Notify` the ring and queue use: `notified()` (which counts as
/// waiting from its creation on, as tokio's does for `notify_waiters`), `enable` and
/// `notify_waiters`.
pub(crate) struct Notify {
    /// Calls of `notify_waiters` so far, and the wakers of the futures waiting.
    state: Mutex<(u64, Vec<Waker>)>,
}

impl std::fmt::Debug for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notify").finish_non_exhaustive()
    }
}

impl Notify {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new((0, Vec::new())),
        }
    }

    pub(crate) fn notified(&self) -> Notified<'_> {
        let calls = self.state.lock().unwrap_or_else(|e| e.into_inner()).0;
        Notified {
            notify: self,
            calls,
        }
    }

    pub(crate) fn notify_waiters(&self) {
        let wakers = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.0 += 1;
            std::mem::take(&mut state.1)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// A wait for the next `notify_waiters`.
pub(crate) struct Notified<'a> {
    notify: &'a Notify,
    calls: u64,
}

impl Notified<'_> {
    /// Nothing to do: the wait counts from `notified()` on.
    pub(crate) fn enable(self: Pin<&mut Self>) -> bool {
        false
    }
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.notify.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 != self.calls {
            return Poll::Ready(());
        }
        state.1.push(cx.waker().clone());
        Poll::Pending
    }
}

/// No time under loom: a wait never times out.
#[derive(Debug)]
pub(crate) struct Elapsed;

pub(crate) async fn timeout_at<F: Future>(
    _deadline: tokio::time::Instant,
    future: F,
) -> Result<F::Output, Elapsed> {
    Ok(future.await)
}
