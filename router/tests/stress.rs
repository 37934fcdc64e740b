//! Stress on a multi-thread runtime: publishers, stable and churning subscribers, and closes,
//! all at once, for many iterations.
//!
//! Invariants: a `Block` subscriber linked for the whole run gets every message exactly once and
//! in order per publisher; a churning `Block` subscriber gets, per publisher, a gap-free run of
//! consecutive messages, never a duplicate, and that run covers every message whose send began
//! after the subscription was linked and returned before it was closed; a close in the middle
//! ends everything without panic or deadlock.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dndm_router::{Overflow, Router, SendErrorKind, SubscribeOptions, TryRecvError};
use support::{GUARD, Reading};

const PUBLISHERS: u32 = 8;
const STABLE: usize = 4;
const CHURN: usize = 4;
const MESSAGES: u64 = 300;
const ITERATIONS: usize = 48;

/// Per publisher: how many sends have begun, and how many have returned `Ok`.
struct Progress {
    begun: Vec<AtomicU64>,
    done: Vec<AtomicU64>,
}

impl Progress {
    fn new() -> Arc<Progress> {
        let counters = || (0..PUBLISHERS).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Progress {
            begun: counters(),
            done: counters(),
        })
    }

    fn load(counters: &[AtomicU64]) -> Vec<u64> {
        counters.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }
}

/// Every message of publisher `p` with sequence in `from[p]..to[p]` must be in `received`
/// (which `check_runs` has already found gap-free and duplicate-free).
fn check_window(received: &[(u32, u64)], from: &[u64], to: &[u64]) {
    for p in 0..PUBLISHERS {
        let (lo, hi) = (from[p as usize], to[p as usize]);
        if lo >= hi {
            continue;
        }
        let seqs: Vec<u64> = received
            .iter()
            .filter(|(publisher, _)| *publisher == p)
            .map(|&(_, seq)| seq)
            .collect();
        let (first, last) = (seqs.first().copied(), seqs.last().copied());
        assert!(
            first.is_some_and(|f| f <= lo) && last.is_some_and(|l| l + 1 >= hi),
            "publisher {p}: sent {lo}..{hi} while linked, received {first:?}..={last:?}"
        );
    }
}

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

/// One run; returns how many churn windows were checked.
async fn iteration(close_midway: bool) -> usize {
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

    let progress = Progress::new();
    let mut churn = Vec::new();
    for i in 0..CHURN {
        let router = router.clone();
        let stop = stop.clone();
        let progress = progress.clone();
        churn.push(tokio::spawn(async move {
            let mut round = 0usize;
            let mut windows_checked = 0usize;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let Ok(mut sub) = router.subscribe_with::<Reading>("s.**", block(4)) else {
                    break;
                };
                // Sends that begin from here on find this subscription linked.
                let from = Progress::load(&progress.begun);
                let mut got = Vec::new();
                for _ in 0..(round * 7 + i) % 50 {
                    match sub.try_recv() {
                        Ok(r) => got.push((r.publisher, r.seq)),
                        Err(TryRecvError::Empty) => tokio::task::yield_now().await,
                        Err(_) => break,
                    }
                }
                if round % 3 == 1 {
                    // Unsubscribe by drop, with messages still queued.
                    check_runs(&got, false);
                    continue;
                }
                // Sends that returned before the close delivered into this queue.
                let to = Progress::load(&progress.done);
                sub.close();
                // After close, what was queued is still delivered, in order.
                while let Ok(r) = sub.try_recv() {
                    got.push((r.publisher, r.seq));
                }
                check_runs(&got, false);
                if !close_midway {
                    check_window(&got, &from, &to);
                    windows_checked += 1;
                }
            }
            windows_checked
        }));
    }

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let intent = router.publish::<Reading>(&format!("s.p{p}")).unwrap();
        let progress = progress.clone();
        publishers.push(tokio::spawn(async move {
            let (begun, done) = (&progress.begun[p as usize], &progress.done[p as usize]);
            for seq in 0..MESSAGES {
                begun.store(seq + 1, Ordering::SeqCst);
                match intent.send(Reading::new(p, seq)).await {
                    Ok(()) => done.store(seq + 1, Ordering::SeqCst),
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
    let mut windows = 0;
    for task in churn {
        windows += tokio::time::timeout(GUARD, task)
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
    windows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publish_subscribe_unsubscribe_close() {
    let mut windows = 0;
    for i in 0..ITERATIONS {
        windows += iteration(i % 4 == 3).await;
    }
    // The window invariant was exercised, not skipped.
    assert!(windows > ITERATIONS, "{windows} churn windows checked");
}
