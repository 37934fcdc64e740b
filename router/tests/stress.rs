//! Stress on a multi-thread runtime: publishers, stable and churning subscribers, and closes,
//! all at once, for many iterations.
//!
//! Invariants: a `Block` subscriber linked for the whole run gets every message exactly once and
//! in order per publisher; a churning `Block` subscriber gets, per publisher, a gap-free run of
//! consecutive messages (everything sent while it was linked), never a duplicate; a close in the
//! middle ends everything without panic or deadlock.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use dndm_router::{Overflow, Router, SendErrorKind, SubscribeOptions, TryRecvError};
use support::{GUARD, Reading};

const PUBLISHERS: u32 = 8;
const STABLE: usize = 4;
const CHURN: usize = 4;
const MESSAGES: u64 = 300;
const ITERATIONS: usize = 24;

fn block(capacity: usize) -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(capacity)
        .overflow(Overflow::Block)
}

/// Checks per-publisher runs: consecutive from the first seen, no duplicates. Returns counts.
fn check_runs(received: &[(u32, u64)], require_from_zero: bool) -> HashMap<u32, u64> {
    let mut next: HashMap<u32, u64> = HashMap::new();
    for &(publisher, seq) in received {
        let expected = next
            .entry(publisher)
            .or_insert(if require_from_zero { 0 } else { seq });
        assert_eq!(
            seq, *expected,
            "publisher {publisher}: got {seq}, expected {expected}"
        );
        *expected += 1;
    }
    next
}

async fn iteration(close_midway: bool) {
    let router = Router::builder().send_timeout(GUARD).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));

    let mut stable = Vec::new();
    for i in 0..STABLE {
        let pattern = if i % 2 == 0 { "s.*" } else { "s.**" };
        let mut sub = router.subscribe_with::<Reading>(pattern, block(8)).unwrap();
        stable.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < (u64::from(PUBLISHERS) * MESSAGES) as usize {
                match sub.recv().await {
                    Ok(r) => got.push((r.publisher, r.seq)),
                    Err(_) => break,
                }
            }
            got
        }));
    }

    let mut churn = Vec::new();
    for i in 0..CHURN {
        let router = router.clone();
        let stop = stop.clone();
        churn.push(tokio::spawn(async move {
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let Ok(mut sub) = router.subscribe_with::<Reading>("s.**", block(4)) else {
                    break;
                };
                let mut got = Vec::new();
                for _ in 0..(round * 7 + i) % 50 {
                    match sub.try_recv() {
                        Ok(r) => got.push((r.publisher, r.seq)),
                        Err(TryRecvError::Empty) => tokio::task::yield_now().await,
                        Err(_) => break,
                    }
                }
                if round.is_multiple_of(3) {
                    sub.close();
                    // After close, what was queued is still delivered, in order.
                    while let Ok(r) = sub.try_recv() {
                        got.push((r.publisher, r.seq));
                    }
                }
                check_runs(&got, false);
            }
        }));
    }

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let intent = router.publish::<Reading>(&format!("s.p{p}")).unwrap();
        publishers.push(tokio::spawn(async move {
            for seq in 0..MESSAGES {
                match intent.send(Reading::new(p, seq)).await {
                    Ok(()) => {}
                    Err(e) if e.kind() == SendErrorKind::Closed => return false,
                    Err(e) => panic!("publisher {p}: {e}"),
                }
                if seq.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            true
        }));
    }

    if close_midway {
        tokio::task::yield_now().await;
        router.close().await;
    }
    for publisher in publishers {
        tokio::time::timeout(GUARD, publisher)
            .await
            .expect("publisher finished")
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for task in churn {
        tokio::time::timeout(GUARD, task)
            .await
            .expect("churn finished")
            .unwrap();
    }
    if !close_midway {
        // Publishers are done; only now may stable subscribers end early.
        router.close().await;
    }
    for task in stable {
        let got = tokio::time::timeout(GUARD, task)
            .await
            .expect("subscriber finished")
            .unwrap();
        let counts = check_runs(&got, true);
        if !close_midway {
            assert_eq!(counts.len(), PUBLISHERS as usize);
            assert!(
                counts.values().all(|&n| n == MESSAGES),
                "every message exactly once: {counts:?}"
            );
        }
    }
    tokio::time::timeout(GUARD, router.close())
        .await
        .expect("close returns");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publish_subscribe_unsubscribe_close() {
    for i in 0..ITERATIONS {
        iteration(i % 4 == 3).await;
    }
}
