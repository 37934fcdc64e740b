//! `peers`: dndm's remote and mesh links next to Zenoh and raw TCP, two processes on loopback.
//!
//! ```text
//! cd benches/peers && cargo run --release -- [--only ROW]... [--size N]... [--payload KIND]...
//! ```
//!
//! For each row the binary starts itself again as a child process (the subscriber and echo
//! side) and dials it over 127.0.0.1; the parent publishes. For each payload kind and size it
//! measures one-way throughput of reliable, back-pressured delivery (publish `N` messages, stop
//! the clock when the child reports it has all `N`; `N` is calibrated so a measurement takes
//! about `--seconds`), then the round trip of 8-byte ping-pongs (p50, p99). It prints Markdown
//! tables with every row's ratio to Zenoh. See README.md for what each row is.

mod dndm;
mod harness;
mod payload;
mod raw;
mod report;
mod zenoh_link;

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::Parser;

use crate::harness::{CHILD_ENV, ChildProcess, Counter, GUARD, percentiles};
use crate::payload::Pool;

/// Payload sizes measured when `--size` is not given.
const DEFAULT_SIZES: [usize; 3] = [8, 1024, 64 * 1024];
/// Largest accepted `--size`.
const MAX_SIZE: usize = 1 << 20;
/// Size of the round-trip messages.
const PING_SIZE: usize = 8;
/// Round trips done before the timed ones.
const WARMUP_ROUNDS: u64 = 1_000;
/// Calibration runs grow fourfold until one takes at least this long (they warm up too).
const CALIBRATION: Duration = Duration::from_millis(200);
/// First calibration run, in messages.
const FIRST_CALIBRATION_RUN: u64 = 256;
/// Most messages in one run.
const MAX_MESSAGES: u64 = 50_000_000;

/// Compares dndm's links with Zenoh and raw TCP: two processes on loopback.
#[derive(Debug, Parser)]
#[command(name = "peers")]
struct Args {
    /// Run only this row (repeatable); every row when not given.
    #[arg(long = "only", value_enum, value_name = "ROW")]
    only: Vec<System>,
    /// Payload size in bytes (repeatable); 8, 1024 and 65536 when not given.
    #[arg(long = "size", value_name = "N", value_parser = parse_size)]
    sizes: Vec<usize>,
    /// Payload kind (repeatable); random, then compressible, when not given.
    #[arg(long = "payload", value_enum, value_name = "KIND")]
    payloads: Vec<payload::Kind>,
    /// Target duration of each throughput measurement, in seconds.
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    seconds: f64,
    /// Timed 8-byte round trips per row (after 1,000 untimed ones).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Run every row this many times, in turn, and report each figure's median: steadier
    /// ratios on a shared machine.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    repeat: u32,
}

/// A system under test: one row of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum System {
    /// tokio TCP, 4-byte length prefix, buffered, no crypto: the ceiling.
    Raw,
    /// Zenoh peer mode over TCP, `CongestionControl::Block`, reliable.
    Zenoh,
    /// dndm remote link, `RemoteConfig::default()`: Noise, signing on request, adaptive zstd.
    Remote,
    /// dndm remote link with signing and zstd off (Noise only).
    RemotePlain,
    /// dndm remote link signing every batch (`remote.signing = "batch"`), adaptive zstd.
    RemoteSigned,
    /// dndm mesh link (libp2p TCP + Noise + Yamux), defaults.
    Mesh,
}

impl System {
    /// Every row, in table order.
    const ALL: [Self; 6] = [
        Self::Raw,
        Self::Zenoh,
        Self::Remote,
        Self::RemotePlain,
        Self::RemoteSigned,
        Self::Mesh,
    ];

    /// The name in tables.
    fn label(self) -> &'static str {
        match self {
            Self::Raw => "raw tcp",
            Self::Zenoh => "zenoh",
            Self::Remote => "dndm remote",
            Self::RemotePlain => "dndm remote, no sign/zstd",
            Self::RemoteSigned => "dndm remote, signing every batch",
            Self::Mesh => "dndm mesh",
        }
    }

    /// The name passed to a child process (the `--only` value).
    fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Zenoh => "zenoh",
            Self::Remote => "remote",
            Self::RemotePlain => "remote-plain",
            Self::RemoteSigned => "remote-signed",
            Self::Mesh => "mesh",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    fn dndm_kind(self) -> Option<dndm::Kind> {
        match self {
            Self::Remote => Some(dndm::Kind::Remote),
            Self::RemotePlain => Some(dndm::Kind::RemotePlain),
            Self::RemoteSigned => Some(dndm::Kind::RemoteSigned),
            Self::Mesh => Some(dndm::Kind::Mesh),
            Self::Raw | Self::Zenoh => None,
        }
    }
}

/// The parent's end of a system under test.
pub(crate) trait Link {
    /// Publishes one data message (reliable; waits when the system pushes back).
    async fn send(&mut self, seq: u64, payload: Bytes) -> anyhow::Result<()>;
    /// Pushes out whatever [`Link::send`] buffered.
    async fn flush(&mut self) -> anyhow::Result<()>;
    /// Sends a ping and waits for the child's echo.
    async fn round_trip(&mut self, seq: u64, payload: Bytes) -> anyhow::Result<()>;
    /// Closes the connection.
    async fn close(self) -> anyhow::Result<()>;
}

/// One throughput measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    /// Payload kind.
    pub(crate) kind: payload::Kind,
    /// Payload size in bytes.
    pub(crate) size: usize,
    /// Messages per second.
    pub(crate) rate: f64,
}

/// One row's results.
#[derive(Debug)]
pub(crate) struct RowResult {
    /// The table label.
    pub(crate) label: &'static str,
    /// Whether this is the Zenoh row (the ratios' denominator).
    pub(crate) zenoh: bool,
    /// Whether this is the raw TCP row.
    pub(crate) raw: bool,
    /// Per payload kind and size.
    pub(crate) throughput: Vec<Throughput>,
    /// Round trip median.
    pub(crate) p50: Duration,
    /// Round trip 99th percentile.
    pub(crate) p99: Duration,
}

/// What each row measures.
#[derive(Debug)]
struct Plan {
    sizes: Vec<usize>,
    kinds: Vec<payload::Kind>,
    target: Duration,
    rounds: u64,
}

fn parse_size(text: &str) -> Result<usize, String> {
    let size: usize = text
        .parse()
        .map_err(|e| format!("`{text}` is not a byte count: {e}"))?;
    if !(1..=MAX_SIZE).contains(&size) {
        return Err(format!("size {size} is outside 1..={MAX_SIZE}"));
    }
    Ok(size)
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|e| format!("`{text}` is not a number of seconds: {e}"))?;
    if !(0.1..=60.0).contains(&seconds) {
        return Err(format!("{seconds} s is outside 0.1..=60"));
    }
    Ok(seconds)
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    if let Ok(name) = std::env::var(CHILD_ENV) {
        let system = System::from_name(&name).with_context(|| format!("{CHILD_ENV}={name}"))?;
        return runtime.block_on(child(system));
    }
    let args = Args::parse();
    let plan = Plan {
        sizes: if args.sizes.is_empty() {
            DEFAULT_SIZES.to_vec()
        } else {
            args.sizes
        },
        kinds: if args.payloads.is_empty() {
            vec![payload::Kind::Random, payload::Kind::Compressible]
        } else {
            args.payloads
        },
        target: Duration::from_secs_f64(args.seconds),
        rounds: args.rounds,
    };
    let systems: Vec<System> = System::ALL
        .into_iter()
        .filter(|s| args.only.is_empty() || args.only.contains(s))
        .collect();
    let mut passes = Vec::new();
    for pass in 1..=args.repeat {
        if args.repeat > 1 {
            eprintln!("pass {pass} of {}", args.repeat);
        }
        passes.push(runtime.block_on(run_rows(&systems, &plan))?);
    }
    let rows = report::median(passes);
    print!("{}", report::render(&rows, &plan.sizes, &plan.kinds));
    Ok(())
}

/// The child process: serves `system` until its stdin closes.
async fn child(system: System) -> anyhow::Result<()> {
    let counter = Counter::default();
    match system {
        System::Raw => raw::serve(counter).await,
        System::Zenoh => zenoh_link::serve(counter).await,
        System::Remote | System::RemotePlain | System::RemoteSigned | System::Mesh => {
            let kind = system.dndm_kind().context("a dndm row")?;
            dndm::serve(kind, counter).await
        }
    }
}

/// Runs every row in `systems`, one after the other.
async fn run_rows(systems: &[System], plan: &Plan) -> anyhow::Result<Vec<RowResult>> {
    let mut rows = Vec::with_capacity(systems.len());
    for &system in systems {
        let row = run_row(system, plan)
            .await
            .with_context(|| system.label())?;
        rows.push(row);
    }
    Ok(rows)
}

/// Starts the child for `system`, connects, measures, and stops both ends.
async fn run_row(system: System, plan: &Plan) -> anyhow::Result<RowResult> {
    let mut child = ChildProcess::spawn(system.name()).await?;
    let address = child.address.clone();
    let result = match system {
        System::Raw => {
            let link = raw::RawLink::connect(&address).await?;
            measure(system, link, &mut child, plan).await
        }
        System::Zenoh => {
            let link = zenoh_link::ZenohLink::connect(&address).await?;
            measure(system, link, &mut child, plan).await
        }
        System::Remote | System::RemotePlain | System::RemoteSigned | System::Mesh => {
            let kind = system.dndm_kind().context("a dndm row")?;
            let link = dndm::DndmLink::connect(kind, &address).await?;
            measure(system, link, &mut child, plan).await
        }
    };
    child.stop().await?;
    result
}

/// Runs the whole plan over `link`, then closes it.
async fn measure<L: Link>(
    system: System,
    mut link: L,
    child: &mut ChildProcess,
    plan: &Plan,
) -> anyhow::Result<RowResult> {
    let mut throughput = Vec::new();
    let mut seq = 0u64;
    for &kind in &plan.kinds {
        let pool = Pool::new(kind);
        for &size in &plan.sizes {
            if size > pool.max_len() {
                bail!("size {size} exceeds the payload pool's {}", pool.max_len());
            }
            let rate = calibrated_rate(&mut link, child, &pool, size, plan.target, &mut seq)
                .await
                .with_context(|| format!("{} B {} payloads", size, kind.label()))?;
            eprintln!(
                "{:>26}  {:>12}  {:>7} B  {:>10.0} msgs/s",
                system.label(),
                kind.label(),
                size,
                rate
            );
            throughput.push(Throughput { kind, size, rate });
        }
    }
    let pool = Pool::new(payload::Kind::Random);
    let total = WARMUP_ROUNDS + plan.rounds;
    let mut samples = Vec::with_capacity(plan.rounds as usize);
    let pings = async {
        for round in 0..total {
            let payload = pool.slice(round, PING_SIZE);
            let start = Instant::now();
            link.round_trip(round, payload).await?;
            if round >= WARMUP_ROUNDS {
                samples.push(start.elapsed());
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(GUARD * 4, pings)
        .await
        .map_err(|_| anyhow!("round trips took longer than {:?}", GUARD * 4))??;
    let (p50, p99) = percentiles(samples);
    eprintln!(
        "{:>26}  rtt p50 {:.1} µs, p99 {:.1} µs",
        system.label(),
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    link.close().await?;
    Ok(RowResult {
        label: system.label(),
        zenoh: system == System::Zenoh,
        raw: system == System::Raw,
        throughput,
        p50,
        p99,
    })
}

/// Messages per second for `size`-byte payloads: calibration runs growing fourfold until one
/// lasts [`CALIBRATION`], then one run sized to last `target`.
async fn calibrated_rate<L: Link>(
    link: &mut L,
    child: &mut ChildProcess,
    pool: &Pool,
    size: usize,
    target: Duration,
    seq: &mut u64,
) -> anyhow::Result<f64> {
    let mut n = FIRST_CALIBRATION_RUN;
    let rate = loop {
        let elapsed = timed_run(link, child, pool, size, n, seq).await?;
        let rate = n as f64 / elapsed.as_secs_f64();
        if elapsed >= CALIBRATION || n >= MAX_MESSAGES {
            break rate;
        }
        n = (n * 4).min(MAX_MESSAGES);
    };
    let n = ((rate * target.as_secs_f64()) as u64).clamp(FIRST_CALIBRATION_RUN, MAX_MESSAGES);
    let elapsed = timed_run(link, child, pool, size, n, seq).await?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// Publishes `n` messages and returns the time until the child reported having all of them.
async fn timed_run<L: Link>(
    link: &mut L,
    child: &mut ChildProcess,
    pool: &Pool,
    size: usize,
    n: u64,
    seq: &mut u64,
) -> anyhow::Result<Duration> {
    child.expect(n).await?;
    let start = Instant::now();
    let run = async {
        for _ in 0..n {
            link.send(*seq, pool.slice(*seq, size)).await?;
            *seq += 1;
        }
        link.flush().await?;
        child.done().await
    };
    tokio::time::timeout(GUARD, run)
        .await
        .map_err(|_| anyhow!("{n} messages of {size} B took longer than {GUARD:?}"))??;
    Ok(start.elapsed())
}
