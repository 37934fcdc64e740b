//! A publisher's ring: how a local intent reaches its local `Block` and `DropOldest`
//! subscribers.
//!
//! Each message is written once into the intent's ring; every such subscriber reads it through
//! its own [`Cursor`] (a position in the ring, a window of `capacity` messages and the policy).
//! Compared with pushing an `Arc` into one queue per subscriber, a send touches one slot instead
//! of one queue per subscriber, subscribers read a slot that stays in shared cache state, and the
//! ring drops old messages on the publisher's thread.
//!
//! Invariants:
//! - Sequence numbers only grow; slot `seq & mask` holds message `seq` once its stamp is `seq`
//!   (stored before the tail), until the publisher writes `seq + capacity` or releases it after
//!   every reader, linked or still draining, has passed it.
//! - A `Block` cursor is never overwritten while it has not read a message: the publisher waits
//!   (up to its deadline) until every linked `Block` cursor has room in its window, and never
//!   writes a slot a `Block` cursor has not read (a cursor stuck for a whole ring of timed-out
//!   sends is the one exception; it then loses its oldest messages, counted as dropped).
//! - A `DropOldest` cursor never holds the publisher back: a reader more than its window
//!   behind jumps to the newest `capacity` messages and counts the rest as dropped; one lapped
//!   while it reads sees another sequence number in the slot and jumps too.
//! - The cursor set lives under the writer lock, so a send sees a cursor either linked or not.

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use tokio::time::Instant;

use crate::id::HandleId;
use crate::signal::Signal;
use crate::sync::{
    AtomicU64, AtomicUsize, Mutex, Notify, Ordering, RwLock, Waiting, fence, lock, timeout_at,
};

/// Marks a cursor still linked: it reads up to the tail.
const LINKED: u64 = u64::MAX;

/// Rings one subscriber reads at most; its further publishers push into its queue.
pub(crate) const MAX_CURSORS: usize = 8;

/// The publisher looks at how far its readers are every this many sends.
const SCAN_EVERY: u64 = 32;

/// Read messages a ring keeps alive at most, in bytes (see `Writer::keep`).
const RETAIN_BYTES: usize = 1 << 20;

/// Messages the publisher drops at most per send (see [`Ring::release_read`]).
const RELEASE_PER_SEND: u64 = 2;

/// Largest ring; also the largest queue capacity a router accepts, so that every `Block` and
/// `DropOldest` subscriber's window fits a ring.
pub(crate) const MAX_RING: usize = 1 << 20;

/// Bytes a message takes besides its encoded length (the `Arc`, the struct, its allocations),
/// roughly, for sizing `Writer::keep`.
const MESSAGE_OVERHEAD: usize = 64;

/// A slot and, outside its lock, the sequence number last written to it (stored after the
/// write), so a reader can see without taking the lock whether its next message is there.
struct SlotCell<T> {
    stamp: AtomicU64,
    slot: RwLock<Slot<T>>,
}

impl<T> std::ops::Deref for SlotCell<T> {
    type Target = RwLock<Slot<T>>;
    fn deref(&self) -> &Self::Target {
        &self.slot
    }
}

/// Messages a write replaced or released: up to [`RELEASE_PER_SEND`] plus the overwritten one.
struct Freed<T>([Option<Arc<T>>; RELEASE_PER_SEND as usize + 1], usize);

impl<T> Default for Freed<T> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| None), 0)
    }
}

impl<T> Freed<T> {
    fn push(&mut self, message: Option<Arc<T>>) {
        if let Some(slot) = self.0.get_mut(self.1) {
            *slot = message;
            self.1 += 1;
        }
    }
}

/// One slot: the sequence number of the message it holds.
struct Slot<T> {
    seq: u64,
    value: Option<Arc<T>>,
}

/// Writer state: the linked cursors and the first sequence number a `Block` cursor has no room
/// for (cached; recomputed when reached or when the cursor set changed).
struct Writer<T> {
    cursors: Vec<(HandleId, Arc<Cursor<T>>)>,
    /// Unlinked cursors still reading what came before: nothing they have not read is
    /// released (they do not hold the publisher back; one a whole lap behind is lapped).
    draining: Vec<Arc<Cursor<T>>>,
    limit: u64,
    /// Slots below this sequence number hold no message (released after every reader passed).
    released: u64,
    /// Every linked reader had passed this sequence number when last looked at.
    passed: u64,
    /// Read messages the ring may keep behind the tail: about [`RETAIN_BYTES`] of them, by the
    /// size of a recent message (the whole ring for small messages, whose early release costs
    /// more than it saves).
    keep: u64,
}

/// The slots and the mask that maps a sequence number to its slot.
struct Buffer<T> {
    slots: Box<[SlotCell<T>]>,
    mask: u64,
}

/// The ring of one local intent.
pub(crate) struct Ring<T> {
    /// Read-only after creation; on its own cache line, apart from what the publisher writes.
    buf: CachePadded<Buffer<T>>,
    /// Next sequence number to write; stored (Release) after the slot is written.
    tail: CachePadded<AtomicU64>,
    writer: CachePadded<Mutex<Writer<T>>>,
    /// Publishers waiting for room in a `Block` cursor.
    space: Notify,
    /// A message's size in bytes (its encoded length), sampled to size `Writer::keep`.
    size_of: fn(&T) -> usize,
    /// Number of publishers waiting on `space`; readers skip the notify when zero.
    blocked: CachePadded<AtomicUsize>,
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("capacity", &self.buf.slots.len())
            .field("tail", &self.tail.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A subscriber's position in a ring.
pub(crate) struct Cursor<T> {
    ring: Arc<Ring<T>>,
    /// The subscriber's wake-up, closed flag and drop counter.
    signal: Arc<Signal>,
    /// Next sequence number to read. Written by the reader, read by the publisher.
    next: CachePadded<AtomicU64>,
    /// The subscriber's capacity.
    window: u64,
    block: bool,
    /// Tail when the cursor was unlinked: it reads up to there and is then done.
    end: AtomicU64,
    /// `Block` only: messages a send left out because this subscriber stayed full (ascending).
    skips: Mutex<VecDeque<u64>>,
    skip_count: AtomicUsize,
}

impl<T> std::fmt::Debug for Cursor<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("next", &self.next.load(Ordering::Relaxed))
            .field("window", &self.window)
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl<T> Ring<T> {
    /// A ring of `capacity` slots, rounded up to a power of two, at most [`MAX_RING`];
    /// `size_of` tells a message's size in bytes.
    pub(crate) fn new(capacity: usize, size_of: fn(&T) -> usize) -> Self {
        let capacity = capacity.clamp(1, MAX_RING).next_power_of_two();
        Self {
            buf: CachePadded::new(Buffer {
                slots: (0..capacity)
                    .map(|_| SlotCell {
                        stamp: AtomicU64::new(u64::MAX),
                        slot: RwLock::new(Slot {
                            seq: u64::MAX,
                            value: None,
                        }),
                    })
                    .collect(),
                mask: capacity as u64 - 1,
            }),
            tail: CachePadded::new(AtomicU64::new(0)),
            writer: CachePadded::new(Mutex::new(Writer {
                cursors: Vec::new(),
                draining: Vec::new(),
                limit: 0,
                released: 0,
                passed: 0,
                keep: capacity as u64,
            })),
            space: Notify::new(),
            size_of,
            blocked: CachePadded::new(AtomicUsize::new(0)),
        }
    }

    fn capacity(&self) -> u64 {
        self.buf.mask + 1
    }

    /// Whether a window of `window` messages fits the ring.
    pub(crate) fn holds(&self, window: usize) -> bool {
        window as u64 <= self.capacity()
    }

    /// Links a subscriber with a window of `window` messages (`block`: the publisher waits for
    /// room; otherwise the reader loses its oldest): it reads every message written from now
    /// on. `register` hands the new cursor to the subscriber's receiver.
    pub(crate) fn link(
        self: &Arc<Self>,
        id: HandleId,
        signal: Arc<Signal>,
        window: usize,
        block: bool,
        register: impl FnOnce(Arc<Cursor<T>>),
    ) {
        let mut writer = lock(&*self.writer);
        let cursor = Arc::new(Cursor {
            ring: self.clone(),
            next: CachePadded::new(AtomicU64::new(self.tail.load(Ordering::Relaxed))),
            window: window as u64,
            block,
            end: AtomicU64::new(LINKED),
            skips: Mutex::new(VecDeque::new()),
            skip_count: AtomicUsize::new(0),
            signal,
        });
        writer.limit = 0;
        writer.cursors.push((id, cursor.clone()));
        // Under the writer lock: a message written once the cursor is linked must find the
        // receiver knowing about it, or the wake-up for it would be lost.
        register(cursor);
    }

    /// Unlinks a subscriber: it still reads what was written before. False if not linked here.
    pub(crate) fn unlink(&self, id: HandleId) -> bool {
        let mut writer = lock(&*self.writer);
        let Some(at) = writer.cursors.iter().position(|(c, _)| *c == id) else {
            return false;
        };
        let (_, cursor) = writer.cursors.remove(at);
        cursor
            .end
            .store(self.tail.load(Ordering::Relaxed), Ordering::Release);
        writer.limit = 0;
        writer.draining.retain(|c| !c.is_done());
        writer.draining.push(cursor.clone());
        drop(writer);
        // The reader may be parked waiting for more; it now sees its end.
        cursor.signal.wake();
        // A publisher waiting for this subscriber's room need not wait any more.
        self.space.notify_waiters();
        true
    }

    /// Unlinks every subscriber (the intent closed: nothing more is written, so nothing is
    /// released either, and the ring forgets its cursors, which refer back to it).
    pub(crate) fn unlink_all(&self) {
        let ids: Vec<HandleId> = lock(&*self.writer)
            .cursors
            .iter()
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.unlink(id);
        }
        lock(&*self.writer).draining.clear();
    }

    /// Number of linked subscribers.
    pub(crate) fn linked(&self) -> usize {
        lock(&*self.writer).cursors.len()
    }

    /// Writes a message for every linked cursor if every `Block` cursor has room; hands the
    /// message back otherwise.
    pub(crate) fn offer(&self, message: Arc<T>) -> Result<(), Arc<T>> {
        let mut writer = lock(&*self.writer);
        if writer.cursors.is_empty() {
            return Ok(());
        }
        let tail = self.tail.load(Ordering::Relaxed);
        if tail >= writer.limit {
            writer.limit = self.limit(&writer.cursors);
        }
        if tail < writer.limit {
            let freed = self.write(&mut writer, tail, message);
            drop(writer);
            drop(freed);
            Ok(())
        } else {
            Err(message)
        }
    }

    /// Writes a message without waiting: `Block` cursors without room do not get it. Returns
    /// how many were left out.
    pub(crate) fn force(&self, message: Arc<T>) -> usize {
        let mut writer = lock(&*self.writer);
        if writer.cursors.is_empty() {
            // Unlinked meanwhile (maybe closed): nobody to write for, and a write could release
            // what draining readers have not read.
            return 0;
        }
        let tail = self.tail.load(Ordering::Relaxed);
        let left_out = self.skip_full(&writer, tail);
        let freed = self.write(&mut writer, tail, message);
        drop(writer);
        drop(freed);
        left_out
    }

    /// Writes a message, waiting up to `timeout` (from the first wait; `deadline` keeps it,
    /// so one send shares one deadline) for every `Block` cursor to have room. Returns how many
    /// `Block` subscribers were still full and do not get the message.
    ///
    /// # Cancel safety
    /// Cancelling while waiting loses the message for every cursor.
    pub(crate) async fn send(
        &self,
        mut message: Arc<T>,
        timeout: Duration,
        deadline: &mut Option<Instant>,
    ) -> usize {
        loop {
            match self.offer(message) {
                Ok(()) => return 0,
                Err(back) => message = back,
            }
            let until = *deadline.get_or_insert_with(|| Instant::now() + timeout);
            if Instant::now() >= until {
                return self.force(message);
            }
            let notified = self.space.notified();
            tokio::pin!(notified);
            // Register before re-checking, so room made after the check wakes us.
            notified.as_mut().enable();
            let _waiting = Waiting::new(&self.blocked);
            match self.offer(message) {
                Ok(()) => return 0,
                Err(back) => message = back,
            }
            // On timeout the next round finds the deadline passed and writes without waiting.
            let _ = timeout_at(until, notified).await;
        }
    }

    /// The first sequence number some linked `Block` cursor has no room for.
    fn limit(&self, cursors: &[(HandleId, Arc<Cursor<T>>)]) -> u64 {
        cursors
            .iter()
            .filter(|(_, c)| c.block && !c.signal.is_closed())
            .map(|(_, c)| c.room_until())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Marks message `seq` as left out for every full `Block` cursor; returns how many.
    fn skip_full(&self, writer: &Writer<T>, seq: u64) -> usize {
        let mut left_out = 0;
        for (_, cursor) in &writer.cursors {
            if cursor.block && !cursor.signal.is_closed() && seq >= cursor.room_until() {
                // Only while the ring still holds its unread messages; a cursor stuck for a
                // whole ring is lapped instead and loses its oldest (counted by the reader).
                // (It may then still read this message: not counted as left out.)
                if seq < cursor.next.load(Ordering::SeqCst) + self.capacity() {
                    lock(&cursor.skips).push_back(seq);
                    cursor.skip_count.fetch_add(1, Ordering::Release);
                    left_out += 1;
                }
            }
        }
        left_out
    }

    /// Writes message `seq` (the tail) and wakes the readers that sleep. Returns the messages
    /// it replaced or released, for the caller to drop after unlocking (a message's destructor
    /// never runs under the writer lock).
    #[must_use]
    fn write(&self, writer: &mut Writer<T>, seq: u64, message: Arc<T>) -> Freed<T> {
        if seq.is_multiple_of(SCAN_EVERY) {
            writer.draining.retain(|c| !c.is_done());
            writer.passed = self.passed(writer);
            let size = (self.size_of)(&message) + MESSAGE_OVERHEAD;
            writer.keep = (RETAIN_BYTES / size).min(self.buf.slots.len()) as u64;
        }
        let mut freed = self.release_read(writer, seq);
        let cell = &self.buf.slots[(seq & self.buf.mask) as usize];
        let old = {
            let mut slot = cell.write().unwrap_or_else(PoisonError::into_inner);
            slot.seq = seq;
            slot.value.replace(message)
        };
        cell.stamp.store(seq, Ordering::Release);
        // The publisher frees old messages, not the readers.
        freed.push(old);
        self.tail.store(seq + 1, Ordering::Release);
        // Pairs with the fence in the reader's park: either it sees the new tail, or we see it
        // parked.
        fence(Ordering::SeqCst);
        for (_, cursor) in &writer.cursors {
            cursor.signal.wake_if_parked();
        }
        freed
    }

    /// The smallest position among the readers, linked and draining.
    fn passed(&self, writer: &Writer<T>) -> u64 {
        writer
            .cursors
            .iter()
            .map(|(_, c)| c)
            .chain(&writer.draining)
            .map(|c| c.next.load(Ordering::Relaxed))
            .min()
            .unwrap_or_else(|| self.tail.load(Ordering::Relaxed))
    }

    /// Drops up to [`RELEASE_PER_SEND`] messages every linked reader has passed, on the
    /// publisher's thread: the ring does not keep read messages alive for a whole lap, and the
    /// frees come one or two per send, as the allocations do (glibc's per-thread cache holds
    /// only a few blocks of a size; freeing in batches spills them to the shared arena).
    fn release_read(&self, writer: &mut Writer<T>, tail: u64) -> Freed<T> {
        let mut freed = Freed::default();
        let passed = writer.passed.min(tail.saturating_sub(writer.keep));
        // Never more than a lap back: older slots were overwritten already.
        let mut seq = writer.released.max(passed.saturating_sub(self.capacity()));
        let until = passed.min(seq + RELEASE_PER_SEND);
        while seq < until {
            let mut slot = self.buf.slots[(seq & self.buf.mask) as usize]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            // The slot may hold a newer message already (a lap ahead of `seq`): keep that one.
            let old = if slot.seq < passed {
                slot.value.take()
            } else {
                None
            };
            drop(slot);
            freed.push(old);
            seq += 1;
        }
        writer.released = writer.released.max(seq);
        freed
    }
}

impl<T> Cursor<T> {
    /// The first sequence number this `Block` cursor has no room for: its window plus the
    /// messages left out for it, and never a whole ring ahead of it.
    fn room_until(&self) -> u64 {
        let next = self.next.load(Ordering::SeqCst);
        let skipped = self.skip_count.load(Ordering::Acquire) as u64;
        (next + self.window + skipped).min(next + self.ring.capacity())
    }

    /// The last sequence number (exclusive) this cursor reads now.
    fn readable_until(&self) -> u64 {
        self.ring
            .tail
            .load(Ordering::Acquire)
            .min(self.end.load(Ordering::Acquire))
    }

    /// The reader is gone: it reads nothing more, and holds nothing back.
    pub(crate) fn abandon(&self) {
        self.end.store(0, Ordering::Release);
    }

    /// Whether the cursor was unlinked and has read everything written before.
    pub(crate) fn is_done(&self) -> bool {
        let end = self.end.load(Ordering::Acquire);
        end != LINKED && self.next.load(Ordering::Relaxed) >= end
    }

    /// Messages waiting for the reader and messages it will find dropped (`DropOldest`).
    pub(crate) fn pending(&self) -> (u64, u64) {
        let lag = self
            .readable_until()
            .saturating_sub(self.next.load(Ordering::Relaxed));
        let skipped = self.skip_count.load(Ordering::Relaxed) as u64;
        let lag = lag.saturating_sub(skipped);
        if self.block {
            (lag, 0)
        } else {
            (lag.min(self.window), lag.saturating_sub(self.window))
        }
    }

    /// Wakes publishers waiting for room (the subscriber closed).
    pub(crate) fn release_publishers(&self) {
        self.ring.space.notify_waiters();
    }

    /// Reads the next message, if any. Only the subscriber's receiver calls this.
    ///
    /// Neither policy loads the publisher's tail (a cache line written on every send) in the
    /// common case: the stamp of slot `next` says whether message `next` is there, and for
    /// `DropOldest` the stamp of slot `next + window` says whether the reader fell behind.
    pub(crate) fn pop(&self) -> Option<Arc<T>> {
        let mut next = self.next.load(Ordering::Relaxed);
        let slots = &self.ring.buf.slots;
        let mask = self.ring.buf.mask;
        loop {
            if next >= self.end.load(Ordering::Acquire) {
                return None;
            }
            if !self.block {
                let ahead = next + self.window;
                let stamp = slots[(ahead & mask) as usize].stamp.load(Ordering::Acquire);
                if stamp != u64::MAX && stamp >= ahead {
                    // Message `next + window` exists: more than a window behind.
                    let until = self.readable_until();
                    if until - next > self.window {
                        self.signal.count_dropped_oldest(until - self.window - next);
                        next = until - self.window;
                    }
                }
            }
            let cell = &slots[(next & mask) as usize];
            let stamp = cell.stamp.load(Ordering::Acquire);
            if stamp == u64::MAX || stamp < next {
                // Not written yet.
                return None;
            }
            let slot = cell.read().unwrap_or_else(PoisonError::into_inner);
            if slot.seq == next
                && let Some(value) = slot.value.clone()
            {
                drop(slot);
                // Checked after the slot: a skip is recorded before its message is written.
                if self.block && self.skip_count.load(Ordering::Acquire) > 0 && self.take_skip(next)
                {
                    next += 1;
                    self.advance(next);
                    continue;
                }
                self.advance(next + 1);
                return Some(value);
            }
            let seq = slot.seq;
            drop(slot);
            if seq == u64::MAX || seq < next {
                // Not written yet.
                return None;
            }
            // Lapped while behind: the publisher overwrote it. Skip to what the ring still holds.
            let until = self.readable_until();
            let resume = (next + 1).max(until.saturating_sub(self.window.min(mask)));
            // Messages left out for this reader were reported to the publisher already.
            let skipped = self.forget_skips_below(resume);
            self.signal
                .count_dropped_oldest((resume - next).saturating_sub(skipped));
            next = resume;
            self.advance(next);
        }
    }

    /// Removes the skips below `seq`; returns how many.
    fn forget_skips_below(&self, seq: u64) -> u64 {
        if self.skip_count.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut skips = lock(&self.skips);
        let before = skips.len();
        skips.retain(|&s| s >= seq);
        let removed = before - skips.len();
        self.skip_count.fetch_sub(removed, Ordering::Release);
        removed as u64
    }

    /// Removes `seq` from the skip list if it is the next skip. Drops stale entries.
    fn take_skip(&self, seq: u64) -> bool {
        let mut skips = lock(&self.skips);
        while let Some(&front) = skips.front() {
            if front > seq {
                return false;
            }
            skips.pop_front();
            self.skip_count.fetch_sub(1, Ordering::Release);
            if front == seq {
                return true;
            }
        }
        false
    }

    /// Publishes the reader's position; wakes a publisher waiting for room once a quarter of
    /// the window is free.
    fn advance(&self, next: u64) {
        // Release: what the reader read happens before the publisher reuses its slot.
        self.next.store(next, Ordering::Release);
        if !self.block {
            return;
        }
        // Keeps the load of `blocked` from passing the store of `next` (store-load), pairing
        // with the fence a waiting publisher issues after counting itself: either it sees the
        // room, or we see it waiting. (loom found the wait that never ended without it.)
        fence(Ordering::SeqCst);
        if self.ring.blocked.load(Ordering::SeqCst) > 0 {
            let until = self.readable_until();
            if until.saturating_sub(next) <= self.window - self.window.div_ceil(4) {
                self.ring.space.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod model;
