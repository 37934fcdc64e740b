//! Mesh benchmark: dndm over libp2p against libp2p gossipsub, two processes on loopback.
//!
//! `cargo bench -p dndm-mesh --bench mesh` (add `-- --quick` for a short run, `-- --json` to
//! print JSON instead of tables).
//!
//! The bench binary re-executes itself as the receiving process (`DNDM_MESH_BENCH_CHILD` names
//! the case). Both sides run the same libp2p stack: TCP (nodelay) + Noise + Yamux.
//!
//! - **dndm**: a `MeshEndpoint` per process (the child listens on `/ip4/127.0.0.1/tcp/0`,
//!   the parent dials it), each attached to a `Router`. Three session configurations: the
//!   default (batch signing + zstd), signing without zstd, and neither. Each measures a
//!   best-effort and a reliable route.
//! - **gossipsub**: one `gossipsub::Behaviour` per process, signed (`MessageAuthenticity::Signed`
//!   with `ValidationMode::Strict`) and anonymous (`MessageAuthenticity::Anonymous` with
//!   `ValidationMode::None`). Settings for a two-node mesh are in `gossipsub::config`.
//!
//! Throughput: the parent publishes payloads of 8 B, 1 KiB and 64 KiB for [`RUN_TIME`] (or up
//! to [`max_count`] messages), then an end marker behind them on the same route; the clock stops
//! when the child's count of what it received comes back. Rate = received / elapsed; the table
//! shows the median of [`REPS`] repetitions. Payloads are pseudo-random and differ from message
//! to message, so zstd gains nothing (it only costs its attempt). RTT: publish 8 B, the child
//! echoes it on another route, for [`RTT_TIME`]; p50/p99. dndm also measures `Router::request`
//! against a `Router::serve` echo.
//!
//! Flags after `--`: `--quick` (runs a fifth as long), `--json`, `--verbose` (a line per case on
//! stderr), `--only <case>[,<case>…]` (`dndm+sign+zstd`, `dndm+sign`, `dndm`, `gossipsub+sign`,
//! `gossipsub`).
#![allow(missing_docs, clippy::unwrap_used, unreachable_pub)]

#[path = "mesh/dndm.rs"]
mod dndm;
#[path = "mesh/gossipsub.rs"]
mod gossipsub;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use libp2p::Multiaddr;

/// Names the child's case; its absence makes the process the parent.
const CHILD_ENV: &str = "DNDM_MESH_BENCH_CHILD";
pub(crate) const SIZES: [usize; 3] = [8, 1024, 65536];
/// How long each repetition of a throughput case publishes (`--quick`: a fifth).
pub(crate) const RUN_TIME: Duration = Duration::from_millis(500);
/// Repetitions of each throughput case; the table shows the median (the machine is shared, so
/// one repetition can land on someone else's compile).
pub(crate) const REPS: usize = 3;
/// How long each ping-pong series runs (`--quick`: a fifth).
pub(crate) const RTT_TIME: Duration = Duration::from_millis(1000);
/// Most round trips per series.
pub(crate) const MAX_ROUNDS: usize = 20_000;
/// Round trips discarded before sampling (connection and allocator warm-up).
const WARMUP_ROUNDS: usize = 100;
/// Failure guard for anything awaited: never reached in a healthy run.
pub(crate) const GUARD: Duration = Duration::from_secs(60);
/// Check the clock once per this many messages published.
pub(crate) const CLOCK_EVERY: u64 = 64;
/// gossipsub has no "queue has room" signal: when every peer queue is full, wait this long on
/// the swarm for an event and try again.
pub(crate) const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);
/// gossipsub frames: kind (1 byte) + sequence number (8 bytes, LE) + payload.
pub(crate) const HEADER: usize = 9;
/// Capacity of every subscriber queue (lossless `Overflow::Block`, as in
/// `remote/benches/link.rs`).
pub(crate) const QUEUE: usize = 4096;

/// Upper bound of messages per throughput case (the run usually ends on [`RUN_TIME`]).
pub(crate) fn max_count(size: usize) -> u64 {
    match size {
        8 => 10_000_000,
        1024 => 4_000_000,
        _ => 200_000,
    }
}

#[derive(Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    /// `--verbose`: one line per case on stderr (e.g. to time a profiler on one case).
    pub(crate) verbose: bool,
}

impl Settings {
    pub(crate) fn run_time(self) -> Duration {
        if self.quick { RUN_TIME / 5 } else { RUN_TIME }
    }

    pub(crate) fn rtt_time(self) -> Duration {
        if self.quick { RTT_TIME / 5 } else { RTT_TIME }
    }

    pub(crate) fn progress(self, what: &str) {
        if self.verbose {
            eprintln!("start {what}");
        }
    }
}

/// Pseudo-random bytes the payloads are cut from: larger than any batch (256 KiB), so
/// consecutive messages never repeat within one and zstd finds nothing to gain.
const POOL: usize = 4 << 20;

/// Payloads of one size, each a different slice of a pseudo-random pool.
pub(crate) struct Payloads {
    pool: Bytes,
    size: usize,
    offset: usize,
}

impl Payloads {
    pub(crate) fn new(size: usize) -> Self {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let pool: Vec<u8> = (0..POOL + size)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Self {
            pool: pool.into(),
            size,
            offset: 0,
        }
    }

    pub(crate) fn next(&mut self) -> Bytes {
        let payload = self.pool.slice(self.offset..self.offset + self.size);
        self.offset = (self.offset + self.size) % POOL;
        payload
    }
}

// ---------------------------------------------------------------------------------------------
// Child process plumbing (shared).

pub(crate) async fn wait_stdin_closed() {
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

pub(crate) fn announce(addr: &Multiaddr) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "LISTEN {addr}").unwrap();
    out.flush().unwrap();
}

pub(crate) fn spawn_child(case: &str) -> (Child, Multiaddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, case)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().trim_start_matches("LISTEN ").parse().unwrap();
    (child, addr)
}

pub(crate) fn stop_child(mut child: Child) {
    drop(child.stdin.take());
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Results.

pub(crate) struct Throughput {
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) elapsed: Duration,
    /// dndm: messages per batch the parent's session produced.
    pub(crate) per_batch: Option<f64>,
    /// dndm: session frame bytes per message (before Yamux and Noise).
    pub(crate) wire_per_msg: Option<f64>,
}

impl Throughput {
    pub(crate) fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }

    /// The repetition with the median rate.
    pub(crate) fn median(mut reps: Vec<Throughput>) -> Throughput {
        reps.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        reps.swap_remove(reps.len() / 2)
    }
}

#[derive(Clone, Copy, Default)]
pub(crate) struct Rtt {
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) rounds: usize,
}

pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) runs: Vec<Throughput>,
    pub(crate) rtt: Rtt,
    /// dndm: request/response through `serve`/`request`.
    pub(crate) request: Option<Rtt>,
    /// gossipsub: publishes refused because every queue was full (then retried).
    pub(crate) queue_full: Option<u64>,
}

pub(crate) fn rtt_of(mut samples: Vec<Duration>) -> Rtt {
    if samples.len() > 2 * WARMUP_ROUNDS {
        samples.drain(..WARMUP_ROUNDS);
    }
    samples.sort_unstable();
    Rtt {
        p50: samples[samples.len() / 2],
        p99: samples[(samples.len() - 1) * 99 / 100],
        rounds: samples.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

fn fmt_rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else {
        format!("{:.1}k", r / 1e3)
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_tables(rows: &[Row]) {
    println!(
        "| case | 8 B msgs/s | 8 B MB/s | 1 KiB msgs/s | 1 KiB MB/s | 64 KiB msgs/s | 64 KiB MB/s | RTT p50 | RTT p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let mut line = format!("| {} ", row.name);
        for (run, size) in row.runs.iter().zip(SIZES) {
            line += &format!(
                "| {} | {:.1} ",
                fmt_rate(run.rate()),
                run.rate() * size as f64 / 1e6
            );
        }
        line += &format!(
            "| {:.0} µs | {:.0} µs |",
            micros(row.rtt.p50),
            micros(row.rtt.p99)
        );
        println!("{line}");
    }
    println!();
    println!(
        "| case | delivered/sent 8 B | 1 KiB | 64 KiB | msgs/batch 8 B | 1 KiB | 64 KiB | publishes refused (queue full) | request p50 | request p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let mut line = format!("| {} ", row.name);
        for run in &row.runs {
            line += &format!("| {}/{} ", run.received, run.sent);
        }
        for run in &row.runs {
            match run.per_batch {
                Some(b) => line += &format!("| {b:.1} "),
                None => line += "| – ",
            }
        }
        match row.queue_full {
            Some(n) => line += &format!("| {n} "),
            None => line += "| – ",
        }
        match row.request {
            Some(r) => line += &format!("| {:.0} µs | {:.0} µs |", micros(r.p50), micros(r.p99)),
            None => line += "| – | – |",
        }
        println!("{line}");
    }
}

fn print_json(rows: &[Row]) {
    let rtt_json = |r: Rtt| {
        format!(
            "{{\"p50_us\": {:.1}, \"p99_us\": {:.1}, \"rounds\": {}}}",
            micros(r.p50),
            micros(r.p99),
            r.rounds
        )
    };
    let rows: Vec<String> = rows
        .iter()
        .map(|row| {
            let runs: Vec<String> = row
                .runs
                .iter()
                .zip(SIZES)
                .map(|(run, size)| {
                    format!(
                        "{{\"size\": {size}, \"sent\": {}, \"received\": {}, \"seconds\": {:.3}, \"msgs_per_s\": {:.0}, \"mb_per_s\": {:.2}, \"msgs_per_batch\": {}, \"wire_bytes_per_msg\": {}}}",
                        run.sent,
                        run.received,
                        run.elapsed.as_secs_f64(),
                        run.rate(),
                        run.rate() * size as f64 / 1e6,
                        run.per_batch.map_or("null".to_owned(), |b| format!("{b:.1}")),
                        run.wire_per_msg.map_or("null".to_owned(), |b| format!("{b:.1}")),
                    )
                })
                .collect();
            format!(
                "  {{\"case\": \"{}\", \"throughput\": [{}], \"rtt\": {}, \"request\": {}, \"queue_full\": {}}}",
                row.name,
                runs.join(", "),
                rtt_json(row.rtt),
                row.request.map_or("null".to_owned(), rtt_json),
                row.queue_full.map_or("null".to_owned(), |n| n.to_string()),
            )
        })
        .collect();
    println!("[\n{}\n]", rows.join(",\n"));
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(case) = std::env::var(CHILD_ENV) {
        runtime.block_on(async move {
            if case.starts_with("gossipsub") {
                gossipsub::child(case.contains("+sign")).await;
            } else {
                dndm::child(dndm::Case::parse(&case)).await;
            }
        });
        return;
    }
    let settings = Settings {
        quick: std::env::args().any(|a| a == "--quick"),
        verbose: std::env::args().any(|a| a == "--verbose"),
    };
    let json = std::env::args().any(|a| a == "--json");
    // `--only <case>[,<case>…]`: run only these cases (`dndm+sign+zstd`, `dndm+sign`, `dndm`,
    // `gossipsub+sign`, `gossipsub`), e.g. to profile one.
    let only: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let selected = move |name: &str| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|c| c == name))
    };
    let rows = runtime.block_on(async move {
        tokio::spawn(async move {
            let mut rows = Vec::new();
            for case in dndm::Case::ALL {
                if !selected(&case.name()) {
                    continue;
                }
                let started = Instant::now();
                rows.extend(dndm::bench(case, settings).await);
                eprintln!("{}: {:.1} s", case.name(), started.elapsed().as_secs_f64());
            }
            for signed in [true, false] {
                if !selected(gossipsub::name(signed)) {
                    continue;
                }
                let started = Instant::now();
                rows.push(gossipsub::bench(signed, settings).await);
                eprintln!(
                    "gossipsub signed={signed}: {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            }
            rows
        })
        .await
        .unwrap()
    });
    if json {
        print_json(&rows);
    } else {
        print_tables(&rows);
    }
}
