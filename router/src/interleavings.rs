//! Interleaving checks of the ring and the queue under loom: every interleaving of the threads
//! below (up to a bound on preemptions), with loom's model of weak memory for the atomics and
//! fences. Built only with `--cfg dndm_loom` (`.ci/run` runs them):
//!
//! ```text
//! RUSTFLAGS="--cfg dndm_loom" cargo test -p dndm-router --lib --release interleavings
//! ```
//!
//! Each test names the bug it guards against; each of those was once in this code (see the
//! commit named), and each test fails when its bug is put back.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use dndm_core::Overflow;
use loom::future::block_on;
use loom::thread;

use crate::id::HandleId;
use crate::queue::{Push, Queue, Receiver};
use crate::ring::Ring;

/// Explores every interleaving with at most this many preemptions (loom's bound; 3 finds the
/// bugs below and keeps each test to seconds).
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(PREEMPTIONS);
    builder.check(f);
}

/// Waits for the next message as an interest does; `None` once closed and drained.
fn recv(rx: &mut Receiver<u64>) -> Option<u64> {
    block_on(poll_fn(|cx| rx.poll_pop(cx))).map(|m| *m)
}

fn ring(capacity: usize) -> Arc<Ring<u64>> {
    Arc::new(Ring::new(capacity, |_| 8))
}

/// A subscriber of `window` and `overflow` linked to a ring of two slots, and its receiver.
fn linked(window: usize, overflow: Overflow) -> (Arc<Ring<u64>>, Arc<Queue<u64>>, Receiver<u64>) {
    let ring = ring(2);
    let queue = Arc::new(Queue::new(window, overflow));
    queue.link_to(&ring, HandleId(1));
    let rx = Receiver::new(queue.clone());
    (ring, queue, rx)
}

/// What closing the intent and the interest does: the ring and the cursors, which refer to each
/// other, let go (loom checks that nothing leaks).
fn release(ring: &Ring<u64>, queue: &Queue<u64>) {
    ring.unlink_all();
    queue.close_and_clear();
}

/// c5b92a9: a consumer that frees a slot must fence before it looks for waiting producers, or
/// a `Block` producer that found the queue full waits forever for room that exists.
#[test]
fn a_blocked_producer_is_woken_by_the_pop_that_makes_room() {
    model(|| {
        let queue = Arc::new(Queue::new(1, Overflow::Block));
        let mut rx = Receiver::new(queue.clone());
        assert!(matches!(queue.try_push(Arc::new(1)), Push::Queued));
        let producer = {
            let queue = queue.clone();
            thread::spawn(move || matches!(block_on(queue.push(Arc::new(2), None)), Push::Queued))
        };
        assert_eq!(recv(&mut rx), Some(1));
        assert_eq!(recv(&mut rx), Some(2));
        assert!(
            producer.join().unwrap(),
            "the producer's message was queued"
        );
    });
}

/// c779f52: a cursor must become visible to its receiver under the ring's writer lock; made
/// visible after it, a message written in between woke a receiver that did not know the cursor
/// yet, and it slept on with the message unread.
#[test]
fn a_message_written_as_a_subscriber_links_wakes_it() {
    model(|| {
        let ring = ring(2);
        let queue = Arc::new(Queue::new(2, Overflow::Block));
        let mut rx = Receiver::new(queue.clone());
        let linker = {
            let (ring, queue) = (ring.clone(), queue.clone());
            thread::spawn(move || queue.link_to(&ring, HandleId(1)))
        };
        let publisher = {
            let ring = ring.clone();
            thread::spawn(move || {
                // The send that follows the link: the message is the subscriber's.
                while ring.linked() == 0 {
                    thread::yield_now();
                }
                assert!(ring.offer(Arc::new(7)).is_ok());
            })
        };
        assert_eq!(recv(&mut rx), Some(7));
        linker.join().unwrap();
        publisher.join().unwrap();
        release(&ring, &queue);
    });
}

/// c779f52: a receiver must read the closed flag before it looks at its sources; read after,
/// a message written, unlinked and closed while it looked was reported as closed and lost.
#[test]
fn a_message_written_before_close_is_received_before_closed() {
    model(|| {
        let (ring, queue, mut rx) = linked(2, Overflow::Block);
        let closer = {
            let (ring, queue) = (ring.clone(), queue.clone());
            thread::spawn(move || {
                assert!(ring.offer(Arc::new(7)).is_ok());
                // What closing the router does: the intent's ring unlinks, then the queue closes.
                assert!(ring.unlink(HandleId(1)));
                queue.close();
            })
        };
        let mut got = Vec::new();
        while let Some(m) = recv(&mut rx) {
            got.push(m);
        }
        assert_eq!(got, [7], "written before close, so received");
        closer.join().unwrap();
        release(&ring, &queue);
    });
}

/// The ring's own wake-up pair: a publisher waiting for room in a `Block` reader's window is
/// woken by the read that makes room.
#[test]
fn a_ring_publisher_waiting_for_a_block_reader_is_woken_when_it_reads() {
    model(|| {
        let (ring, queue, mut rx) = linked(1, Overflow::Block);
        assert!(ring.offer(Arc::new(1)).is_ok());
        let publisher = {
            let ring = ring.clone();
            thread::spawn(move || {
                block_on(ring.send(Arc::new(2), Duration::from_secs(3600), &mut None))
            })
        };
        assert_eq!(recv(&mut rx), Some(1));
        assert_eq!(recv(&mut rx), Some(2));
        assert_eq!(publisher.join().unwrap(), 0, "nobody was left out");
        release(&ring, &queue);
    });
}

/// A publisher waiting for room in a `Block` reader's window is let go when that reader
/// unlinks (the subscriber closed), instead of waiting out its send timeout.
#[test]
fn a_waiting_publisher_is_released_when_its_block_reader_unlinks() {
    model(|| {
        let (ring, queue, _rx) = linked(1, Overflow::Block);
        assert!(ring.offer(Arc::new(1)).is_ok());
        let publisher = {
            let ring = ring.clone();
            thread::spawn(move || {
                block_on(ring.send(Arc::new(2), Duration::from_secs(3600), &mut None))
            })
        };
        // What removing the interest does: its cursor unlinks, then its queue closes.
        assert!(ring.unlink(HandleId(1)));
        queue.close();
        assert_eq!(publisher.join().unwrap(), 0, "nobody linked was left out");
        release(&ring, &queue);
    });
}

/// A `DropOldest` reader lapped while it reads: it never returns a message twice, out of order,
/// or older than the newest window when it caught up.
#[test]
fn a_lapped_drop_oldest_reader_stays_in_order() {
    model(|| {
        let (ring, queue, mut rx) = linked(1, Overflow::DropOldest);
        let publisher = {
            let ring = ring.clone();
            thread::spawn(move || {
                for n in 1..=3 {
                    assert!(ring.offer(Arc::new(n)).is_ok());
                }
            })
        };
        let mut got = Vec::new();
        while got.last() != Some(&3) {
            match rx.try_pop() {
                Ok(m) => got.push(*m),
                Err(_) => thread::yield_now(),
            }
        }
        publisher.join().unwrap();
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "in order, once: {got:?}"
        );
        let (_, counters) = queue.stats();
        assert_eq!(
            counters.delivered + counters.dropped_oldest,
            3,
            "every message delivered or counted dropped: {got:?}"
        );
    });
}
