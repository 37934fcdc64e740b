//! Unit tests of the ring.

use super::*;
use crate::queue::{Queue, Receiver};
use dndm_core::Overflow;

fn linked(ring: &Arc<Ring<u64>>, capacity: usize, overflow: Overflow) -> Receiver<u64> {
    let queue = Arc::new(Queue::new(capacity, overflow));
    queue.link_to(ring, HandleId(1));
    Receiver::new(queue)
}

fn drain(rx: &mut Receiver<u64>) -> Vec<u64> {
    std::iter::from_fn(|| rx.try_pop().ok().map(|v| *v)).collect()
}

#[test]
fn a_drop_oldest_reader_lapped_between_reads_gets_the_newest_window_and_counts_the_rest() {
    let ring = Arc::new(Ring::new(4, |_| 8));
    let mut rx = linked(&ring, 4, Overflow::DropOldest);
    for seq in 0..2 {
        assert!(
            ring.offer(Arc::new(seq)).is_ok(),
            "DropOldest never holds back"
        );
    }
    assert_eq!(*rx.try_pop().unwrap(), 0);
    for seq in 2..12 {
        assert!(ring.offer(Arc::new(seq)).is_ok());
    }
    // The ring wrapped twice since: the reader sees it is behind without loading the tail
    // for every read, and gets exactly the newest window, as a queue would hold.
    assert_eq!(rx.queue().len(), 4);
    assert_eq!(drain(&mut rx), vec![8, 9, 10, 11]);
    let (len, counters) = rx.queue().stats();
    assert_eq!(len, 0);
    assert_eq!(counters.dropped_oldest, 7, "seqs 1 to 7");
    assert_eq!(counters.delivered, 5);
    assert_eq!(counters.accepted, 12, "delivered + dropped");
}

#[test]
fn a_full_block_reader_holds_the_writer_back_then_is_left_out_by_force() {
    let ring = Arc::new(Ring::new(8, |_| 8));
    let mut rx = linked(&ring, 2, Overflow::Block);
    assert!(ring.offer(Arc::new(0)).is_ok());
    assert!(ring.offer(Arc::new(1)).is_ok());
    let back = ring.offer(Arc::new(2)).unwrap_err();
    assert_eq!(*back, 2, "no room: the message comes back");
    assert_eq!(ring.force(back), 1, "the full reader is left out");
    assert_eq!(ring.force(Arc::new(3)), 1);
    assert_eq!(rx.queue().len(), 2, "left-out messages are not waiting");
    assert_eq!(*rx.try_pop().unwrap(), 0);
    assert!(ring.offer(Arc::new(4)).is_ok(), "room again");
    assert_eq!(drain(&mut rx), vec![1, 4], "2 and 3 skipped, order kept");
    assert_eq!(rx.queue().stats().1.dropped_oldest, 0);
}

#[test]
fn an_unlinked_reader_reads_what_came_before_then_is_done() {
    let ring = Arc::new(Ring::new(8, |_| 8));
    let mut rx = linked(&ring, 8, Overflow::Block);
    assert!(ring.offer(Arc::new(0)).is_ok());
    assert!(ring.unlink(HandleId(1)));
    assert!(!ring.unlink(HandleId(1)), "unlinked once");
    assert_eq!(ring.linked(), 0);
    assert!(
        ring.offer(Arc::new(1)).is_ok(),
        "no reader: nothing to wait for"
    );
    assert_eq!(drain(&mut rx), vec![0]);
    assert_eq!(rx.queue().source_count(), 0, "a done cursor is forgotten");
}

#[test]
fn the_publisher_releases_read_messages_but_not_what_an_unlinked_reader_still_reads() {
    let ring = Arc::new(Ring::new(1024, |_| RETAIN_BYTES / 16));
    let mut kept = linked(&ring, 8, Overflow::DropOldest);
    let leaving = Arc::new(Queue::new(8, Overflow::Block));
    leaving.link_to(&ring, HandleId(2));
    let mut leaving_rx = Receiver::new(leaving);
    let first = Arc::new(0);
    let weak = Arc::downgrade(&first);
    assert!(ring.offer(first).is_ok());
    for seq in 1..3 {
        assert!(ring.offer(Arc::new(seq)).is_ok());
    }
    assert!(ring.unlink(HandleId(2)));
    for seq in 3..3 + 4 * SCAN_EVERY {
        assert!(ring.offer(Arc::new(seq)).is_ok());
        drain(&mut kept);
    }
    assert_eq!(
        drain(&mut leaving_rx),
        vec![0, 1, 2],
        "unlinked: still reads its own, though the other reader moved on"
    );
    assert!(weak.upgrade().is_some(), "not released while unread");
    for seq in 3 + 4 * SCAN_EVERY..3 + 8 * SCAN_EVERY {
        assert!(ring.offer(Arc::new(seq)).is_ok());
        drain(&mut kept);
    }
    assert!(
        weak.upgrade().is_none(),
        "read by every reader: released long before the ring laps"
    );
}

/// Spawns a send with an hour's timeout and returns once it waits for room.
async fn waiting_send(ring: &Arc<Ring<u64>>, seq: u64) -> tokio::task::JoinHandle<usize> {
    let sender = {
        let ring = ring.clone();
        tokio::spawn(async move {
            ring.send(Arc::new(seq), Duration::from_secs(3600), &mut None)
                .await
        })
    };
    while ring.blocked.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    sender
}

#[test]
fn force_without_readers_writes_nothing() {
    let ring = Arc::new(Ring::new(8, |_| 8));
    let rx = linked(&ring, 1, Overflow::Block);
    assert!(ring.offer(Arc::new(0)).is_ok());
    let back = ring.offer(Arc::new(1)).unwrap_err();
    ring.unlink_all();
    assert_eq!(ring.force(back), 0);
    assert_eq!(
        ring.tail.load(Ordering::Relaxed),
        1,
        "nothing written after close"
    );
    drop(rx);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_is_no_longer_counted() {
    let ring = Arc::new(Ring::new(8, |_| 8));
    let _rx = linked(&ring, 1, Overflow::Block);
    assert!(ring.offer(Arc::new(0)).is_ok());
    let sender = waiting_send(&ring, 1).await;
    sender.abort();
    assert!(sender.await.unwrap_err().is_cancelled());
    assert_eq!(ring.blocked.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_send_waits_for_room_until_the_deadline_and_close_releases_it() {
    let ring = Arc::new(Ring::new(8, |_| 8));
    let rx = linked(&ring, 1, Overflow::Block);
    assert!(ring.offer(Arc::new(0)).is_ok());
    let timeout = Duration::from_millis(40);
    let start = Instant::now();
    let left_out = ring.send(Arc::new(1), timeout, &mut None).await;
    assert_eq!(left_out, 1);
    assert_eq!(
        start.elapsed(),
        timeout,
        "waited the timeout (virtual time)"
    );

    let sender = waiting_send(&ring, 2).await;
    rx.queue().close();
    assert_eq!(
        sender.await.unwrap(),
        0,
        "a closed reader holds nobody back"
    );
    assert_eq!(start.elapsed(), timeout, "released at once");
}
