//! Remote-link benchmark: two processes on loopback TCP.
//!
//! `cargo bench -p dndm-remote --bench link` (add `-- --quick` for a short run).
//!
//! The bench binary spawns itself as the receiving process. For each configuration (batch
//! signing on/off × zstd on/off) it measures one-way throughput of a reliable route for 8 B,
//! 1 KiB and 64 KiB payloads (publisher to subscriber, until the subscriber has them all) and
//! ping-pong round trips (p50/p99). A raw TCP baseline does the same transfer in the same run:
//! tokio, 4-byte length prefix, buffered writes, no encryption. Payloads are random bytes;
//! `-- --payload compressible` sends one repeated byte instead (zstd's best case).
#![allow(missing_docs, clippy::unwrap_used, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dndm_core::{Keypair, Message, Qos};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{Overflow, PublishOptions, Router, SubscribeOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader as TokioBufReader, BufWriter};

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(bytes = "bytes", tag = "2")]
    data: bytes::Bytes,
}

impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "bench";
}
impl Message for Blob {}

const SIZES: [usize; 3] = [8, 1024, 65536];

/// `--payload compressible`: one repeated byte (zstd's best case). Default: random bytes.
static COMPRESSIBLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Payloads for messages of `size` bytes: slices of a pool of pseudo-random bytes at varying
/// offsets (so no two neighbours repeat), or one repeated byte with `--payload compressible`.
struct Payloads {
    pool: bytes::Bytes,
    size: usize,
    next: usize,
}

impl Payloads {
    fn new(size: usize) -> Self {
        let len = 8 << 20;
        let pool = if COMPRESSIBLE.get().copied().unwrap_or(false) {
            vec![0x5a; len]
        } else {
            // xorshift64*: fast, and incompressible for zstd.
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            (0..len / 8)
                .flat_map(|_| {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
                })
                .collect()
        };
        Self {
            pool: pool.into(),
            size,
            next: 0,
        }
    }

    fn next(&mut self) -> bytes::Bytes {
        // Past the last slice plus a prime: neighbours never overlap (zstd would find them),
        // and offsets do not line up with the size.
        let span = self.pool.len() - self.size;
        self.next = (self.next + self.size + 7919) % span;
        self.pool.slice(self.next..self.next + self.size)
    }
}

/// Payload sizes selected with `--size` (all of [`SIZES`] when unset).
static SIZE_FILTER: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

fn selected(size: usize) -> bool {
    SIZE_FILTER.get().is_none_or(|s| s.contains(&size))
}

fn count_for(size: usize, quick: bool) -> u64 {
    let n = match size {
        8 => 1_000_000,
        1024 => 300_000,
        _ => {
            10_000
                * std::env::var("DNDM_BENCH_SCALE")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1)
        }
    };
    if quick { n / 10 } else { n }
}

fn lossless() -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(4096)
        .overflow(Overflow::Block)
}

fn session_config(sign: bool, zstd: bool) -> RemoteConfig {
    let mut config = RemoteConfig::default();
    config.session.signing = if sign {
        dndm_core::Signing::Batch
    } else {
        dndm_core::Signing::OnRequest
    };
    if !zstd {
        config.session.compression = None;
    }
    config
}

/// Child process: serves one configuration until stdin closes.
async fn child(mode: String) {
    if mode == "raw" {
        return raw_child().await;
    }
    let sign = mode.contains("sign");
    let zstd = mode.contains("zstd");
    let router = Router::builder().name("sink").build().unwrap();
    let mut config = session_config(sign, zstd);
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    let endpoint = RemoteEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    let mut data = router
        .subscribe_with::<Blob>("bench.data", lossless())
        .unwrap();
    let done = router
        .publish_with::<Blob>("bench.done", PublishOptions::default().qos(Qos::reliable()))
        .unwrap();
    let mut ping = router
        .subscribe_with::<Blob>("bench.ping", lossless())
        .unwrap();
    let pong = router
        .publish_with::<Blob>("bench.pong", PublishOptions::default().qos(Qos::reliable()))
        .unwrap();
    println!("LISTEN {}", endpoint.bound()[0]);
    let echo = tokio::spawn(async move {
        while let Ok(m) = ping.recv().await {
            if pong.send_arc(m).await.is_err() {
                break;
            }
        }
    });
    let counter = tokio::spawn(async move {
        // Each run: the first message says how many follow (its seq), then the run's messages.
        while let Ok(header) = data.recv().await {
            for _ in 0..header.seq {
                if data.recv().await.is_err() {
                    return;
                }
            }
            if done
                .send(Blob {
                    seq: header.seq,
                    data: bytes::Bytes::new(),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    wait_stdin_closed().await;
    router.close().await;
    let _ = tokio::join!(echo, counter);
}

async fn raw_child() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("LISTEN {}", listener.local_addr().unwrap());
    let (socket, _) = listener.accept().await.unwrap();
    socket.set_nodelay(true).unwrap();
    let (rd, wr) = socket.into_split();
    let mut rd = TokioBufReader::with_capacity(256 * 1024, rd);
    let mut wr = BufWriter::new(wr);
    let mut body = vec![0u8; 1 << 20];
    // Frames: u32 length, u8 kind (0 header with count in body, 1 data, 2 ping), body.
    loop {
        let Ok(len) = rd.read_u32().await else { return };
        let kind = rd.read_u8().await.unwrap();
        let len = len as usize;
        rd.read_exact(&mut body[..len]).await.unwrap();
        match kind {
            0 => {
                let count = u64::from_be_bytes(body[..8].try_into().unwrap());
                for _ in 0..count {
                    let len = rd.read_u32().await.unwrap() as usize;
                    let _kind = rd.read_u8().await.unwrap();
                    rd.read_exact(&mut body[..len]).await.unwrap();
                }
                wr.write_u8(1).await.unwrap();
                wr.flush().await.unwrap();
            }
            _ => {
                wr.write_u32(len as u32).await.unwrap();
                wr.write_all(&body[..len]).await.unwrap();
                wr.flush().await.unwrap();
            }
        }
    }
}

async fn wait_stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
        let _ = tx.send(());
    });
    let _ = rx.await;
}

fn spawn_child(mode: &str) -> (Child, std::net::SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("DNDM_BENCH_CHILD", mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .trim_start_matches("LISTEN ")
        .trim_start_matches("tcp:")
        .parse()
        .unwrap();
    (child, addr)
}

fn stop_child(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

struct Row {
    name: String,
    rates: Vec<f64>,
    /// Average messages per batch sent, per size (dndm only).
    batches: Vec<f64>,
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    (
        samples[samples.len() / 2],
        samples[(samples.len() - 1) * 99 / 100],
    )
}

fn mode_name(sign: bool, zstd: bool) -> String {
    format!(
        "dndm{}{}",
        if sign { "+sign" } else { "" },
        if zstd { "+zstd" } else { "" }
    )
}

async fn bench_dndm(sign: bool, zstd: bool, quick: bool) -> Row {
    let mode = mode_name(sign, zstd);
    let (child, addr) = spawn_child(&mode);
    let router = Router::builder().name("source").build().unwrap();
    let mut config = session_config(sign, zstd);
    config.dial = vec![Target::Tcp(addr)];
    let endpoint = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    let sent = |endpoint: &RemoteEndpoint| {
        endpoint
            .links()
            .first()
            .map(|l| (l.stats.messages_sent, l.stats.batches_sent))
            .unwrap_or_default()
    };
    let mut batches = Vec::new();
    let reliable = PublishOptions::default().qos(Qos::reliable());
    let data = router
        .publish_with::<Blob>("bench.data", reliable.clone())
        .unwrap();
    let mut done = router
        .subscribe_with::<Blob>("bench.done", lossless())
        .unwrap();
    let ping = router.publish_with::<Blob>("bench.ping", reliable).unwrap();
    let mut pong = router
        .subscribe_with::<Blob>("bench.pong", lossless())
        .unwrap();
    let guard = Duration::from_secs(60);
    data.wait_for_interest(guard).await.unwrap();
    ping.wait_for_interest(guard).await.unwrap();
    let mut rates = Vec::new();
    for size in SIZES {
        if !selected(size) {
            rates.push(f64::NAN);
            batches.push(f64::NAN);
            continue;
        }
        let n = count_for(size, quick);
        let mut payloads = Payloads::new(size);
        let before = sent(&endpoint);
        let start = Instant::now();
        data.send(Blob {
            seq: n,
            data: bytes::Bytes::new(),
        })
        .await
        .unwrap();
        for seq in 0..n {
            data.send(Blob {
                seq,
                data: payloads.next(),
            })
            .await
            .unwrap();
        }
        tokio::time::timeout(guard, done.recv())
            .await
            .unwrap()
            .unwrap();
        rates.push(n as f64 / start.elapsed().as_secs_f64());
        let after = sent(&endpoint);
        batches.push((after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64);
    }
    let rounds = if quick || SIZE_FILTER.get().is_some() {
        2_000
    } else {
        20_000
    };
    let mut samples = Vec::with_capacity(rounds);
    for seq in 0..rounds as u64 {
        let start = Instant::now();
        ping.send(Blob {
            seq,
            data: bytes::Bytes::from_static(&[0; 8]),
        })
        .await
        .unwrap();
        tokio::time::timeout(guard, pong.recv())
            .await
            .unwrap()
            .unwrap();
        samples.push(start.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    router.close().await;
    stop_child(child);
    Row {
        name: mode,
        rates,
        batches,
        p50,
        p99,
    }
}

async fn bench_raw(quick: bool) -> Row {
    let (child, addr) = spawn_child("raw");
    let socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let (rd, wr) = socket.into_split();
    let mut rd = TokioBufReader::new(rd);
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    let mut rates = Vec::new();
    for size in SIZES {
        let n = count_for(size, quick);
        let payload = vec![0x5a; size];
        let start = Instant::now();
        wr.write_u32(8).await.unwrap();
        wr.write_u8(0).await.unwrap();
        wr.write_all(&n.to_be_bytes()).await.unwrap();
        for _ in 0..n {
            wr.write_u32(size as u32).await.unwrap();
            wr.write_u8(1).await.unwrap();
            wr.write_all(&payload).await.unwrap();
        }
        wr.flush().await.unwrap();
        rd.read_u8().await.unwrap();
        rates.push(n as f64 / start.elapsed().as_secs_f64());
    }
    let rounds = if quick { 2_000 } else { 20_000 };
    let mut samples = Vec::with_capacity(rounds);
    let mut body = [0u8; 8];
    for _ in 0..rounds {
        let start = Instant::now();
        wr.write_u32(8).await.unwrap();
        wr.write_u8(2).await.unwrap();
        wr.write_all(&[0; 8]).await.unwrap();
        wr.flush().await.unwrap();
        let len = rd.read_u32().await.unwrap() as usize;
        rd.read_exact(&mut body[..len]).await.unwrap();
        samples.push(start.elapsed());
    }
    let (p50, p99) = percentiles(samples);
    drop(wr);
    stop_child(child);
    Row {
        name: "raw tcp".into(),
        rates,
        batches: Vec::new(),
        p50,
        p99,
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else {
        format!("{:.1}k", r / 1e3)
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(mode) = std::env::var("DNDM_BENCH_CHILD") {
        runtime.block_on(child(mode));
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    // `-- --only dndm+sign` (repeatable) runs just the named rows, e.g. under a profiler.
    let args: Vec<String> = std::env::args().collect();
    let only: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--only")
        .map(|w| w[1].clone())
        .collect();
    let wanted = move |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    // `-- --size 65536` (repeatable) measures only those payload sizes.
    let sizes: Vec<usize> = args
        .windows(2)
        .filter(|w| w[0] == "--size")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    if !sizes.is_empty() {
        let _ = SIZE_FILTER.set(sizes);
    }
    // `-- --payload compressible`: one repeated byte instead of random bytes.
    let _ = COMPRESSIBLE.set(
        args.windows(2)
            .any(|w| w[0] == "--payload" && w[1] == "compressible"),
    );
    let rows = runtime.block_on(async move {
        tokio::spawn(async move {
            let mut rows = Vec::new();
            if wanted("raw") {
                rows.push(bench_raw(quick).await);
            }
            for (sign, zstd) in [(false, false), (true, false), (false, true), (true, true)] {
                if wanted(&mode_name(sign, zstd)) {
                    rows.push(bench_dndm(sign, zstd, quick).await);
                }
            }
            rows
        })
        .await
        .unwrap()
    });
    println!(
        "| link | 8 B msgs/s | 1 KiB msgs/s | 1 KiB MB/s | 64 KiB msgs/s | 64 KiB MB/s | RTT p50 | RTT p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {} | {:.0} | {:.0} µs | {:.0} µs |",
            row.name,
            fmt_rate(row.rates[0]),
            fmt_rate(row.rates[1]),
            row.rates[1] * 1024.0 / 1e6,
            fmt_rate(row.rates[2]),
            row.rates[2] * 65536.0 / 1e6,
            row.p50.as_secs_f64() * 1e6,
            row.p99.as_secs_f64() * 1e6
        );
    }
    println!();
    println!("| link | messages per batch at 8 B | at 1 KiB | at 64 KiB |");
    println!("|---|---|---|---|");
    for row in rows.iter().filter(|r| !r.batches.is_empty()) {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} |",
            row.name, row.batches[0], row.batches[1], row.batches[2]
        );
    }
}
