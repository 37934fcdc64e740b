//! History for late subscribers in one process: what a publisher kept comes first, then the
//! live messages, in order, with no duplicate and no gap at the seam.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dndm_core::Overflow;
use dndm_router::{
    Interest, MAX_HISTORY, PublishError, PublishOptions, Router, SubscribeError, SubscribeOptions,
    TryRecvError,
};
use support::{GUARD, Reading};

fn router() -> Router {
    Router::builder().name("history").build().unwrap()
}

async fn next(interest: &mut Interest<Reading>) -> u64 {
    tokio::time::timeout(GUARD, interest.recv())
        .await
        .unwrap()
        .unwrap()
        .seq
}

/// The case: 1,000 sent before the subscriber, which asks for 100: it gets 900..999,
/// then the live 1,000..1,999.
#[tokio::test]
async fn a_late_subscriber_gets_the_last_messages_then_the_live_ones() {
    for overflow in [Overflow::Block, Overflow::DropOldest, Overflow::DropNewest] {
        let router = router();
        let intent = router
            .publish_with::<Reading>("a.b", PublishOptions::default().history(100))
            .unwrap();
        for seq in 0..1000 {
            intent.send(Reading::new(0, seq)).await.unwrap();
        }
        let options = SubscribeOptions::default()
            .history(100)
            .capacity(2048)
            .overflow(overflow);
        let mut late = router.subscribe_with::<Reading>("a.*", options).unwrap();
        for seq in 1000..2000 {
            intent.send(Reading::new(0, seq)).await.unwrap();
        }
        for want in 900..2000 {
            assert_eq!(next(&mut late).await, want, "{overflow:?}");
        }
        assert_eq!(late.try_recv().unwrap_err(), TryRecvError::Empty);
    }
}

/// A subscriber that asks for nothing gets nothing from before it linked; one that asks for
/// more than was kept gets what was kept.
#[tokio::test]
async fn history_is_only_for_those_who_ask_and_only_what_was_kept() {
    let router = router();
    let intent = router
        .publish_with::<Reading>("a.b", PublishOptions::default().history(10))
        .unwrap();
    for seq in 0..50 {
        // Kept even though nobody subscribes yet (and `try_send` says sent).
        intent.try_send(Reading::new(0, seq)).unwrap();
    }
    let mut plain = router.subscribe::<Reading>("a.b").unwrap();
    let mut greedy = router
        .subscribe_with::<Reading>("a.b", SubscribeOptions::default().history(1000))
        .unwrap();
    intent.send(Reading::new(0, 50)).await.unwrap();
    assert_eq!(next(&mut plain).await, 50);
    for want in 40..=50 {
        assert_eq!(next(&mut greedy).await, want);
    }
}

/// The seam under a publisher that never pauses: a subscriber joining at any moment gets a
/// contiguous run that ends with the last message (nothing twice, nothing skipped), starting
/// at most 100 before the first live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seam_holds_while_the_publisher_keeps_sending() {
    const TOTAL: u64 = 20_000;
    let router = router();
    let intent = router
        .publish_with::<Reading>("a.b", PublishOptions::default().history(100))
        .unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for seq in 0..TOTAL {
                intent.send(Reading::new(0, seq)).await.unwrap();
                sent.store(seq + 1, Ordering::Release);
                if seq % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            intent
        })
    };
    let mut joined = Vec::new();
    for _ in 0..8 {
        let options = SubscribeOptions::default()
            .history(100)
            .capacity(1 << 16)
            .overflow(Overflow::Block);
        let at = sent.load(Ordering::Acquire);
        joined.push((
            at,
            router.subscribe_with::<Reading>("a.b", options).unwrap(),
        ));
        tokio::task::yield_now().await;
    }
    let intent = sender.await.unwrap();
    drop(intent);
    for (at, mut interest) in joined {
        let first = next(&mut interest).await;
        // It linked after `at` were sent: its history starts at most 100 before that.
        assert!(
            first + 100 >= at,
            "joined after {at} sent, history starts at {first}"
        );
        let mut want = first + 1;
        while want < TOTAL {
            assert_eq!(next(&mut interest).await, want, "joined after {at}");
            want += 1;
        }
    }
}

#[tokio::test]
async fn history_options_out_of_range_name_the_value() {
    let router = router();
    let too_many = PublishOptions::default().history(MAX_HISTORY + 1);
    let err = router.publish_with::<Reading>("a.b", too_many).unwrap_err();
    assert_eq!(
        err,
        PublishError::History {
            value: MAX_HISTORY + 1,
            max: MAX_HISTORY
        }
    );
    assert!(err.to_string().contains(&(MAX_HISTORY + 1).to_string()));
    let no_bytes = PublishOptions::default().history(5).history_bytes(0);
    assert_eq!(
        router.publish_with::<Reading>("a.b", no_bytes).unwrap_err(),
        PublishError::HistoryBytes { value: 0 }
    );
    let ask = SubscribeOptions::default().history(MAX_HISTORY + 1);
    assert_eq!(
        router.subscribe_with::<Reading>("a.b", ask).unwrap_err(),
        SubscribeError::History {
            value: MAX_HISTORY + 1,
            max: MAX_HISTORY
        }
    );
}
