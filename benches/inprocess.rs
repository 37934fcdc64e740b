//! In-process benchmark: dndm's router against tokio `mpsc` and `broadcast` doing the same work,
//! in one run. Prints a markdown table for `docs/benchmarks.md`.
//!
//! `cargo bench --bench inprocess` (add `-- --quick` for a short run; `-- --profile`,
//! `--profile-fanout` or `--profile-pingpong` run one part, for a profiler; `-- --history`
//! measures what a history costs the send path).
//!
//! - 1→1 and 1→8 throughput for 8 B, 1 KiB and 64 KiB payloads. Every message is built fresh
//!   by the producer (payload cloned from a template) and read by every consumer, for all three
//!   systems; dndm uses lossless `Block` queues of 1024, mpsc a channel of 1024. broadcast has no
//!   back-pressure, so it gets a ring as large as the run (its best case: it never waits and no
//!   receiver lags; lagged messages would be reported) and carries `Arc`s. 1→8 also runs dndm
//!   with queues as large as broadcast's ring, so both get the same room.
//! - Ping-pong round trip (8 B): p50 and p99 over many round trips.
#![allow(missing_docs, clippy::unwrap_used, unreachable_pub)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dndm::{Overflow, PublishOptions, Router, SubscribeOptions};
use tokio::sync::{broadcast, mpsc};

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(bytes = "vec", tag = "2")]
    payload: Vec<u8>,
}

impl prost::Name for Msg {
    const NAME: &'static str = "Msg";
    const PACKAGE: &'static str = "bench";
}
impl dndm::Message for Msg {}

const QUEUE: usize = 1024;
const ROUNDS: usize = 5;

fn lossless(capacity: usize) -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(capacity)
        .overflow(Overflow::Block)
}

fn messages_for(size: usize, quick: bool) -> u64 {
    let base: u64 = match size {
        0..=64 => 1_000_000,
        65..=4096 => 400_000,
        _ => 20_000,
    };
    if quick { base / 10 } else { base }
}

/// dndm: one publisher, `fanout` subscribers; returns msgs/s (messages published per second).
async fn dndm_throughput(size: usize, fanout: usize, n: u64, queue: usize) -> f64 {
    dndm_history_throughput(size, fanout, n, queue, (0, 0)).await
}

/// [`dndm_throughput`] with a publisher that keeps `history.0` messages and subscribers that
/// ask for `history.1` of them.
async fn dndm_history_throughput(
    size: usize,
    fanout: usize,
    n: u64,
    queue: usize,
    history: (usize, usize),
) -> f64 {
    let router = Router::builder()
        .send_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let subs: Vec<_> = (0..fanout)
        .map(|_| {
            let options = lossless(queue).history(history.1);
            router.subscribe_with::<Msg>("b", options).unwrap()
        })
        .collect();
    let publish = PublishOptions::default().history(history.0);
    let intent = router.publish_with::<Msg>("b", publish).unwrap();
    let template = vec![7u8; size];
    let consumers: Vec<_> = subs
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut sum = 0u64;
                for _ in 0..n {
                    sum = sum.wrapping_add(sub.recv().await.unwrap().seq);
                }
                sum
            })
        })
        .collect();
    let start = Instant::now();
    for seq in 0..n {
        intent
            .send(Msg {
                seq,
                payload: template.clone(),
            })
            .await
            .unwrap();
    }
    for c in consumers {
        std::hint::black_box(c.await.unwrap());
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    router.close().await;
    rate
}

async fn mpsc_throughput(size: usize, n: u64) -> f64 {
    let (tx, mut rx) = mpsc::channel::<Msg>(QUEUE);
    let template = vec![7u8; size];
    let consumer = tokio::spawn(async move {
        let mut sum = 0u64;
        for _ in 0..n {
            sum = sum.wrapping_add(rx.recv().await.unwrap().seq);
        }
        sum
    });
    let start = Instant::now();
    for seq in 0..n {
        tx.send(Msg {
            seq,
            payload: template.clone(),
        })
        .await
        .unwrap();
    }
    std::hint::black_box(consumer.await.unwrap());
    n as f64 / start.elapsed().as_secs_f64()
}

/// The broadcast ring for a run of `n` messages (every message fits), and the capacity of the
/// "ring-sized" dndm queues that get the same room.
fn ring_for(n: u64) -> usize {
    n.next_power_of_two() as usize
}

/// Returns (msgs/s, lagged messages summed over receivers).
async fn broadcast_throughput(size: usize, fanout: usize, n: u64) -> (f64, u64) {
    // Capacity for every message: broadcast has no back-pressure, so this is how it delivers
    // every message to every receiver (its best case: it never waits and never lags).
    let (tx, _) = broadcast::channel::<Arc<Msg>>(ring_for(n));
    let template = vec![7u8; size];
    let consumers: Vec<_> = (0..fanout)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let (mut sum, mut lagged) = (0u64, 0u64);
                loop {
                    match rx.recv().await {
                        Ok(m) => {
                            sum = sum.wrapping_add(m.seq);
                            if m.seq == n - 1 {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(k)) => lagged += k,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
                std::hint::black_box(sum);
                lagged
            })
        })
        .collect();
    let start = Instant::now();
    for seq in 0..n {
        tx.send(Arc::new(Msg {
            seq,
            payload: template.clone(),
        }))
        .unwrap();
    }
    // The ring keeps every message until the channel is gone; drop the sender here so the last
    // receiver releases them inside the timed region, as dndm's subscribers release theirs.
    drop(tx);
    let mut lagged = 0;
    for c in consumers {
        lagged += c.await.unwrap();
    }
    (n as f64 / start.elapsed().as_secs_f64(), lagged)
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    (at(0.50), at(0.99))
}

async fn dndm_pingpong(n: usize) -> (Duration, Duration) {
    let router = Router::builder().build().unwrap();
    let mut pings = router
        .subscribe_with::<Msg>("ping", lossless(QUEUE))
        .unwrap();
    let mut pongs = router
        .subscribe_with::<Msg>("pong", lossless(QUEUE))
        .unwrap();
    let ping = router.publish::<Msg>("ping").unwrap();
    let pong = router.publish::<Msg>("pong").unwrap();
    let echo = tokio::spawn(async move {
        while let Ok(m) = pings.recv().await {
            if pong.send_arc(m).await.is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(n);
    for seq in 0..n as u64 {
        let start = Instant::now();
        ping.send(Msg {
            seq,
            payload: vec![0; 8],
        })
        .await
        .unwrap();
        pongs.recv().await.unwrap();
        samples.push(start.elapsed());
    }
    router.close().await;
    echo.await.unwrap();
    percentiles(samples)
}

async fn mpsc_pingpong(n: usize) -> (Duration, Duration) {
    let (ping_tx, mut ping_rx) = mpsc::channel::<Msg>(QUEUE);
    let (pong_tx, mut pong_rx) = mpsc::channel::<Msg>(QUEUE);
    let echo = tokio::spawn(async move {
        while let Some(m) = ping_rx.recv().await {
            if pong_tx.send(m).await.is_err() {
                break;
            }
        }
    });
    let mut samples = Vec::with_capacity(n);
    for seq in 0..n as u64 {
        let start = Instant::now();
        ping_tx
            .send(Msg {
                seq,
                payload: vec![0; 8],
            })
            .await
            .unwrap();
        pong_rx.recv().await.unwrap();
        samples.push(start.elapsed());
    }
    drop(ping_tx);
    echo.await.unwrap();
    percentiles(samples)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else {
        format!("{:.0}k", r / 1e3)
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Everything runs in runtime tasks (as in an application), not on the `block_on` thread.
    if std::env::args().any(|a| a == "--profile") {
        runtime.block_on(async { tokio::spawn(profile_one_to_one()).await.unwrap() });
        return;
    }
    if std::env::args().any(|a| a == "--profile-pingpong") {
        runtime.block_on(async { tokio::spawn(profile_ping_pong()).await.unwrap() });
        return;
    }
    if std::env::args().any(|a| a == "--profile-fanout") {
        runtime.block_on(async { tokio::spawn(profile_fan_out()).await.unwrap() });
        return;
    }
    if std::env::args().any(|a| a == "--history") {
        runtime.block_on(async { tokio::spawn(history_main(quick)).await.unwrap() });
        return;
    }
    runtime.block_on(async { runtime_main(quick).await });
}

async fn runtime_main(quick: bool) {
    tokio::spawn(async move {
        println!("| size | 1→1 dndm | 1→1 mpsc | dndm/mpsc | 1→8 dndm | 1→8 dndm, ring-sized queues | 1→8 broadcast | dndm/broadcast | ring-sized/broadcast | broadcast lagged |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for size in [8usize, 1024, 65536] {
            let n = messages_for(size, quick);
            let (mut d1, mut m1, mut d8, mut r8, mut b8, mut lag) =
                (vec![], vec![], vec![], vec![], vec![], 0);
            for _ in 0..ROUNDS {
                d1.push(dndm_throughput(size, 1, n, QUEUE).await);
                m1.push(mpsc_throughput(size, n).await);
                d8.push(dndm_throughput(size, 8, n / 4, QUEUE).await);
                r8.push(dndm_throughput(size, 8, n / 4, ring_for(n / 4)).await);
                let (rate, lagged) = broadcast_throughput(size, 8, n / 4).await;
                b8.push(rate);
                lag += lagged;
            }
            let (d1, m1, d8, r8, b8) =
                (median(d1), median(m1), median(d8), median(r8), median(b8));
            println!(
                "| {size} B | {} | {} | {:.2} | {} | {} | {} | {:.2} | {:.2} | {lag} |",
                fmt_rate(d1),
                fmt_rate(m1),
                d1 / m1,
                fmt_rate(d8),
                fmt_rate(r8),
                fmt_rate(b8),
                d8 / b8,
                r8 / b8
            );
        }
        let n = if quick { 20_000 } else { 200_000 };
        let (dp50, dp99) = dndm_pingpong(n).await;
        let (mp50, mp99) = mpsc_pingpong(n).await;
        println!();
        println!("| ping-pong (8 B) | p50 | p99 |");
        println!("|---|---|---|");
        println!("| dndm | {:.2} µs | {:.2} µs |", dp50.as_secs_f64() * 1e6, dp99.as_secs_f64() * 1e6);
        println!("| tokio mpsc | {:.2} µs | {:.2} µs |", mp50.as_secs_f64() * 1e6, mp99.as_secs_f64() * 1e6);
        println!("| dndm / mpsc p50 | {:.2} | |", dp50.as_secs_f64() / mp50.as_secs_f64());
    })
    .await
    .unwrap();
}

/// `--history`: what a history costs the send path, 1→1 and 1→8: a plain intent; one that keeps
/// 1,000 messages with subscribers that ask for none (they read the ring); and the same with
/// subscribers that ask for 100 (they take the queue path, see router/src/history.rs).
async fn history_main(quick: bool) {
    println!("| size | fan-out | plain | history kept, not asked | history kept and asked |");
    println!("|---|---|---|---|---|");
    for size in [8usize, 1024] {
        for fanout in [1usize, 8] {
            let n = messages_for(size, quick) / fanout as u64;
            let (mut plain, mut kept, mut asked) = (vec![], vec![], vec![]);
            for _ in 0..ROUNDS {
                plain.push(dndm_history_throughput(size, fanout, n, QUEUE, (0, 0)).await);
                kept.push(dndm_history_throughput(size, fanout, n, QUEUE, (1000, 0)).await);
                asked.push(dndm_history_throughput(size, fanout, n, QUEUE, (1000, 100)).await);
            }
            println!(
                "| {size} B | 1→{fanout} | {} | {} | {} |",
                fmt_rate(median(plain)),
                fmt_rate(median(kept)),
                fmt_rate(median(asked))
            );
        }
    }
}

/// `--profile`: only dndm 1→1 at 8 B, for a profiler.
#[allow(dead_code)]
async fn profile_one_to_one() {
    for _ in 0..3 {
        let rate = dndm_throughput(8, 1, 1_000_000, QUEUE).await;
        let mpsc = mpsc_throughput(8, 1_000_000).await;
        println!("1→1 8 B: dndm {} mpsc {}", fmt_rate(rate), fmt_rate(mpsc));
    }
}

/// `--profile-pingpong`: only the ping-pong round trips, dndm and mpsc, for a profiler.
#[allow(dead_code)]
async fn profile_ping_pong() {
    for _ in 0..3 {
        let (dndm, _) = dndm_pingpong(200_000).await;
        let (mpsc, _) = mpsc_pingpong(200_000).await;
        println!(
            "ping-pong p50: dndm {:.2} µs mpsc {:.2} µs",
            dndm.as_secs_f64() * 1e6,
            mpsc.as_secs_f64() * 1e6
        );
    }
}

/// `--profile-fanout`: only 1→8 at 8 B, dndm and broadcast, for a profiler.
#[allow(dead_code)]
async fn profile_fan_out() {
    for _ in 0..3 {
        let rate = dndm_throughput(8, 8, 250_000, QUEUE).await;
        let ring = dndm_throughput(8, 8, 250_000, ring_for(250_000)).await;
        let (broadcast, _) = broadcast_throughput(8, 8, 250_000).await;
        println!(
            "1→8 8 B: dndm {} dndm (queues as broadcast's ring) {} broadcast {}",
            fmt_rate(rate),
            fmt_rate(ring),
            fmt_rate(broadcast)
        );
    }
}
