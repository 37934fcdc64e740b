//! Queues: overflow policies under bursts, receive variants, wake-ups on close.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_router::{
    Overflow, RecvError, RecvTimeoutError, Router, SendErrorKind, SubscribeOptions, TryRecvError,
};
use futures::StreamExt as _;
use support::{GUARD, Reading};
use tokio::time::Instant;

const BURST: u64 = 10_000;
const CAPACITY: usize = 16;

fn router() -> Router {
    Router::builder()
        .send_timeout(Duration::from_secs(3600))
        .build()
        .unwrap()
}

fn options(overflow: Overflow) -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(CAPACITY)
        .overflow(overflow)
}

#[tokio::test]
async fn burst_into_drop_oldest_keeps_the_newest_and_counts_the_rest() {
    let router = router();
    let mut sub = router
        .subscribe_with::<Reading>("burst", options(Overflow::DropOldest))
        .unwrap();
    let intent = router.publish::<Reading>("burst").unwrap();
    for seq in 0..BURST {
        intent.send(Reading::new(0, seq)).await.unwrap();
    }
    // Counted before anything is read, as a queue would.
    assert_eq!(sub.len(), CAPACITY);
    assert_eq!(sub.stats().dropped_oldest, BURST - CAPACITY as u64);
    assert_eq!(sub.stats().accepted, BURST);
    let kept: Vec<u64> = std::iter::from_fn(|| sub.try_recv().ok().map(|r| r.seq)).collect();
    assert_eq!(kept, (BURST - CAPACITY as u64..BURST).collect::<Vec<_>>());
    let stats = sub.stats();
    assert_eq!(stats.dropped_oldest, BURST - CAPACITY as u64);
    assert_eq!(stats.dropped_oldest, 9_984);
    assert_eq!(stats.dropped_newest, 0);
}

#[tokio::test]
async fn burst_into_drop_newest_keeps_the_first_and_counts_the_rest() {
    let router = router();
    let mut sub = router
        .subscribe_with::<Reading>("burst", options(Overflow::DropNewest))
        .unwrap();
    let intent = router.publish::<Reading>("burst").unwrap();
    for seq in 0..BURST {
        intent.send(Reading::new(0, seq)).await.unwrap();
    }
    let kept: Vec<u64> = std::iter::from_fn(|| sub.try_recv().ok().map(|r| r.seq)).collect();
    assert_eq!(kept, (0..CAPACITY as u64).collect::<Vec<_>>());
    assert_eq!(sub.stats().dropped_newest, 9_984);
    assert_eq!(sub.stats().dropped_oldest, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_into_block_loses_nothing() {
    let router = router();
    let mut sub = router
        .subscribe_with::<Reading>("burst", options(Overflow::Block))
        .unwrap();
    let intent = router.publish::<Reading>("burst").unwrap();
    let producer = tokio::spawn(async move {
        for seq in 0..BURST {
            intent.send(Reading::new(0, seq)).await.unwrap();
        }
    });
    for expected in 0..BURST {
        let got = tokio::time::timeout(GUARD, sub.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, expected);
    }
    producer.await.unwrap();
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(sub.stats().dropped(), 0);
    assert_eq!(sub.stats().delivered, BURST);
}

#[tokio::test(start_paused = true)]
async fn block_send_times_out_and_hands_the_message_back() {
    let router = Router::builder()
        .send_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut full = router
        .subscribe_with::<Reading>("t", options(Overflow::Block).capacity(1))
        .unwrap();
    let mut free = router.subscribe::<Reading>("t").unwrap();
    let intent = router.publish::<Reading>("t").unwrap();
    intent.send(Reading::new(0, 1)).await.unwrap();
    let start = Instant::now();
    let err = intent.send(Reading::new(0, 2)).await.unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Timeout { undelivered: 1 });
    assert!(err.is_transient());
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(50),
        "waited exactly the send timeout (virtual time)"
    );
    assert_eq!(err.into_message().seq, 2);
    // The non-blocking subscriber got both messages regardless.
    assert_eq!(free.try_recv().unwrap().seq, 1);
    assert_eq!(free.try_recv().unwrap().seq, 2);
    let err = intent.try_send(Reading::new(0, 3)).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Full { undelivered: 1 });
    // The full subscriber missed exactly the two it had no room for, and carries on in order.
    assert_eq!(full.try_recv().unwrap().seq, 1);
    intent.send(Reading::new(0, 4)).await.unwrap();
    assert_eq!(full.try_recv().unwrap().seq, 4);
    assert_eq!(full.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(free.try_recv().unwrap().seq, 3);
    assert_eq!(free.try_recv().unwrap().seq, 4);
}

#[tokio::test]
async fn messages_sent_before_the_publisher_left_stay_receivable() {
    let router = router();
    let mut subs = [Overflow::Block, Overflow::DropOldest, Overflow::DropNewest].map(|overflow| {
        router
            .subscribe_with::<Reading>("p", options(overflow))
            .unwrap()
    });
    let intent = router.publish::<Reading>("p").unwrap();
    for seq in 0..3 {
        intent.send(Reading::new(0, seq)).await.unwrap();
    }
    drop(intent);
    let later = router.publish::<Reading>("p").unwrap();
    later.send(Reading::new(1, 0)).await.unwrap();
    for sub in &mut subs {
        let mut got: Vec<(u32, u64)> =
            std::iter::from_fn(|| sub.try_recv().ok().map(|r| (r.publisher, r.seq))).collect();
        got.sort_unstable();
        assert_eq!(
            got,
            vec![(0, 0), (0, 1), (0, 2), (1, 0)],
            "{:?}",
            sub.stats()
        );
        assert!(!sub.is_closed());
    }
}

#[tokio::test]
async fn a_subscriber_with_many_publishers_gets_them_all_in_order_per_publisher() {
    const PUBLISHERS: u32 = 12;
    let router = router();
    // Room for everything: the first publishers reach it through their rings (a window of
    // `capacity` each), the rest through its queue (one window shared).
    let capacity = PUBLISHERS as usize * CAPACITY;
    let mut sub = router
        .subscribe_with::<Reading>("many.*", options(Overflow::Block).capacity(capacity))
        .unwrap();
    let intents: Vec<_> = (0..PUBLISHERS)
        .map(|p| router.publish::<Reading>(&format!("many.p{p}")).unwrap())
        .collect();
    for seq in 0..CAPACITY as u64 {
        for (p, intent) in intents.iter().enumerate() {
            intent.try_send(Reading::new(p as u32, seq)).unwrap();
        }
    }
    let mut next = vec![0u64; PUBLISHERS as usize];
    for _ in 0..PUBLISHERS as usize * CAPACITY {
        let r = sub.try_recv().unwrap();
        assert_eq!(r.seq, next[r.publisher as usize], "in order per publisher");
        next[r.publisher as usize] += 1;
    }
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(
        sub.stats().delivered,
        u64::from(PUBLISHERS) * CAPACITY as u64
    );
}

#[tokio::test]
async fn dropping_a_full_block_subscriber_releases_a_waiting_sender() {
    let router = router();
    let full = router
        .subscribe_with::<Reading>("d", options(Overflow::Block).capacity(1))
        .unwrap();
    let mut other = router.subscribe::<Reading>("d").unwrap();
    let intent = router.publish::<Reading>("d").unwrap();
    intent.send(Reading::new(0, 0)).await.unwrap();
    let sender = tokio::spawn(async move { intent.send(Reading::new(0, 1)).await.is_ok() });
    tokio::task::yield_now().await;
    drop(full);
    // The send timeout is an hour: the sender ends because the full subscriber went away.
    let sent = tokio::time::timeout(GUARD, sender)
        .await
        .expect("released, not waiting for the send timeout")
        .unwrap();
    assert!(sent);
    assert_eq!(other.try_recv().unwrap().seq, 0);
    assert_eq!(other.recv().await.unwrap().seq, 1);
}

#[tokio::test(start_paused = true)]
async fn recv_timeout_zero_returns_at_once_and_finite_times_out() {
    let router = router();
    let mut sub = router.subscribe::<Reading>("r").unwrap();
    let start = Instant::now();
    assert_eq!(
        sub.recv_timeout(Duration::ZERO).await.unwrap_err(),
        RecvTimeoutError::Timeout(Duration::ZERO)
    );
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no virtual time passed: it did not wait"
    );

    let err = sub
        .recv_timeout(Duration::from_millis(250))
        .await
        .unwrap_err();
    assert_eq!(err, RecvTimeoutError::Timeout(Duration::from_millis(250)));
    assert!(err.is_transient());
    assert_eq!(start.elapsed(), Duration::from_millis(250));

    let intent = router.publish::<Reading>("r").unwrap();
    intent.send(Reading::new(0, 5)).await.unwrap();
    assert_eq!(sub.recv_timeout(Duration::ZERO).await.unwrap().seq, 5);
    intent.send(Reading::new(0, 6)).await.unwrap();
    assert_eq!(
        sub.recv_timeout(Duration::MAX).await.unwrap().seq,
        6,
        "MAX waits forever, returns data"
    );
}

#[tokio::test]
async fn a_receiver_blocked_forever_is_woken_by_router_close() {
    let router = router();
    let mut sub = router.subscribe::<Reading>("w").unwrap();
    let mut forever = router.subscribe::<Reading>("w").unwrap();
    let waiter = tokio::spawn(async move { sub.recv().await });
    let forever_waiter = tokio::spawn(async move { forever.recv_timeout(Duration::MAX).await });
    tokio::task::yield_now().await;
    router.close().await;
    let result = tokio::time::timeout(GUARD, waiter)
        .await
        .expect("woken, not hung")
        .unwrap();
    assert_eq!(result.unwrap_err(), RecvError::Closed);
    let result = tokio::time::timeout(GUARD, forever_waiter)
        .await
        .expect("woken, not hung")
        .unwrap();
    assert_eq!(result.unwrap_err(), RecvTimeoutError::Closed);
}

#[tokio::test]
async fn interest_close_drains_then_reports_closed() {
    let router = router();
    let mut sub = router.subscribe::<Reading>("c").unwrap();
    let intent = router.publish::<Reading>("c").unwrap();
    intent.send(Reading::new(0, 1)).await.unwrap();
    sub.close();
    assert!(sub.is_closed());
    assert_eq!(intent.subscriber_count(), 0);
    assert_eq!(
        sub.recv().await.unwrap().seq,
        1,
        "queued messages stay receivable"
    );
    assert_eq!(sub.recv().await.unwrap_err(), RecvError::Closed);
    assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Closed);
}

#[tokio::test]
async fn interest_is_a_stream_that_ends_on_close() {
    let router = router();
    let sub = router.subscribe::<Reading>("s").unwrap();
    let intent = router.publish::<Reading>("s").unwrap();
    for seq in 0..3 {
        intent.send(Reading::new(0, seq)).await.unwrap();
    }
    let collector = tokio::spawn(sub.map(|r| r.seq).collect::<Vec<_>>());
    intent.interested().await.unwrap();
    router.close().await;
    let seqs = tokio::time::timeout(GUARD, collector)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seqs, vec![0, 1, 2]);
}

#[tokio::test]
async fn a_blocked_sender_is_woken_by_close() {
    let router = router();
    let _full = router
        .subscribe_with::<Reading>("b", options(Overflow::Block).capacity(1))
        .unwrap();
    let intent = router.publish::<Reading>("b").unwrap();
    intent.send(Reading::new(0, 0)).await.unwrap();
    let sender = tokio::spawn(async move {
        let outcome = intent.send(Reading::new(0, 1)).await.map_err(|e| e.kind());
        (outcome, intent.is_closed())
    });
    tokio::task::yield_now().await;
    router.close().await;
    // Whether the sender was parked or not yet, it ends: delivered nowhere, no hang.
    let (outcome, closed) = tokio::time::timeout(GUARD, sender)
        .await
        .expect("woken, not hung")
        .unwrap();
    assert!(
        matches!(outcome, Ok(()) | Err(SendErrorKind::Closed)),
        "{outcome:?}"
    );
    assert!(closed, "the intent reports closed");
}

#[tokio::test]
async fn try_send_says_when_nobody_subscribes() {
    let router = Router::builder().build().unwrap();
    let intent = router.publish::<Reading>("lonely").unwrap();
    let err = intent.try_send(Reading::new(0, 1)).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::NoSubscribers);
    assert!(err.is_transient(), "a subscriber may come");
    assert_eq!(err.into_message().seq, 1, "the message is handed back");
    let mut sub = router.subscribe::<Reading>("lonely").unwrap();
    intent.try_send(Reading::new(0, 2)).unwrap();
    assert_eq!(sub.try_recv().unwrap().seq, 2);
    drop(sub);
    assert_eq!(
        intent.try_send(Reading::new(0, 3)).unwrap_err().kind(),
        SendErrorKind::NoSubscribers,
        "and again once the subscriber left"
    );
    router.close().await;
}
