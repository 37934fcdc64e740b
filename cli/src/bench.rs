//! `dndm bench`: end-to-end throughput and round trip between two routers in this process, over
//! each kind of link: in-process (one router), remote (two routers over a Noise-secured TCP link
//! on loopback) and mesh (two routers over libp2p on loopback). Every case is reliable and
//! lossless (`Block` subscribers), and checks that every message arrived once and in order.
//!
//! Both ends share this process's two runtime workers, so these are the numbers of one host
//! doing both sides; `cargo bench` runs the cross-process benchmarks (docs/benchmarks.md).
//!
//! Progress goes to standard error: on a terminal one line redrawn in place (case and share
//! done), otherwise one line per case. `--svg DIR` also draws the results ([`chart`]).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dndm::builtin::Bytes;
use dndm::mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm::remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm::{Keypair, Overflow, PublishOptions, Qos, Router, SubscribeOptions};
use serde::Serialize;

mod chart;

/// Payload sizes measured, and the share of `--messages` each sends.
const SIZES: [(usize, u64); 3] = [(8, 1), (1024, 1), (64 * 1024, 16)];

/// Longest wait for any one step: a failure guard, never a pace.
const GUARD: Duration = Duration::from_secs(60);

/// `dndm bench` options.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Links to measure.
    #[arg(long, value_enum, num_args = 1.., default_values_t = [Link::InProcess, Link::Remote, Link::Mesh])]
    links: Vec<Link>,
    /// Messages per throughput case (the 64 KiB case sends a sixteenth of them).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Round trips for the RTT case.
    #[arg(long, default_value_t = 2_000)]
    round_trips: u64,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write SVG charts into DIR (created if missing): throughput.svg (messages/s and MB/s
    /// by payload size) and latency.svg (round-trip percentiles).
    #[arg(long, value_name = "DIR")]
    svg: Option<PathBuf>,
}

/// A kind of link between the two routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Link {
    /// One router: publisher and subscriber in the same process, zero copy.
    InProcess,
    /// Two routers over a remote link (TCP on loopback, Noise, signed batches).
    Remote,
    /// Two routers over the libp2p mesh (TCP on loopback, Noise, Yamux, signed batches).
    Mesh,
}

impl Link {
    /// The name `--links` takes and the JSON output shows.
    fn label(self) -> &'static str {
        match self {
            Self::InProcess => "in-process",
            Self::Remote => "remote",
            Self::Mesh => "mesh",
        }
    }
}

/// One link's results.
#[derive(Debug, Serialize)]
struct Row {
    link: Link,
    /// Per payload size: (bytes, messages/s, MB/s).
    throughput: Vec<(usize, f64, f64)>,
    rtt_p50_us: u64,
    rtt_p90_us: u64,
    rtt_p99_us: u64,
    rtt_p999_us: u64,
    rtt_max_us: u64,
    /// Every round trip in microseconds, ascending (for the latency chart).
    #[serde(skip)]
    rtts_us: Vec<u64>,
}

/// Progress of the run on a writer (standard error): on a terminal one line redrawn in place,
/// showing the case and the share of it done; otherwise one line as each case starts.
#[derive(Debug)]
struct Progress<W> {
    out: W,
    terminal: bool,
    /// Cases in the whole run, and the number of the current one (from 1).
    cases: usize,
    case: usize,
    label: String,
    /// Steps of the current case, and the percentage last drawn.
    total: u64,
    shown: Option<u64>,
}

/// Two routers joined by one kind of link (the same router twice for in-process).
struct Pair {
    publisher: Router,
    subscriber: Router,
}

impl Pair {
    async fn new(link: Link) -> anyhow::Result<Self> {
        let router = |name: &str| {
            Router::builder()
                .name(name)
                .send_timeout(GUARD)
                .build()
                .context("router")
        };
        match link {
            Link::InProcess => {
                let router = router("bench")?;
                Ok(Self {
                    publisher: router.clone(),
                    subscriber: router,
                })
            }
            Link::Remote => {
                let publisher = router("bench-pub")?;
                let mut config = RemoteConfig::default();
                config.listen = vec![Target::Tcp("127.0.0.1:0".parse()?)];
                let listener = RemoteEndpoint::new(Keypair::generate()?, config)?;
                publisher.attach(Arc::new(listener.clone())).await?;
                let subscriber = router("bench-sub")?;
                let mut config = RemoteConfig::default();
                config.dial = listener.bound();
                subscriber
                    .attach(Arc::new(RemoteEndpoint::new(Keypair::generate()?, config)?))
                    .await?;
                Ok(Self {
                    publisher,
                    subscriber,
                })
            }
            Link::Mesh => {
                let publisher = router("bench-pub")?;
                let mut config = MeshConfig::default();
                config.transport = Transport::Tcp;
                config.mdns = false;
                config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
                let first = MeshEndpoint::new(Keypair::generate()?, config.clone())?;
                publisher.attach(Arc::new(first.clone())).await?;
                let address = crate::demo::first_listen_address(&first).await?;
                let subscriber = router("bench-sub")?;
                config.listen.clear();
                config.dial = vec![format!("{address}/p2p/{}", first.peer_id()).parse()?];
                subscriber
                    .attach(Arc::new(MeshEndpoint::new(Keypair::generate()?, config)?))
                    .await?;
                Ok(Self {
                    publisher,
                    subscriber,
                })
            }
        }
    }

    async fn close(self) {
        self.subscriber.close().await;
        self.publisher.close().await;
    }
}

/// Runs the benchmark and prints a table (or JSON).
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.messages == 0 || args.round_trips == 0 {
        bail!("--messages and --round-trips must be at least 1");
    }
    let mut progress = Progress::stderr(args.links.len() * (SIZES.len() + 1));
    let mut rows = Vec::new();
    for &link in &args.links {
        let pair = Pair::new(link).await?;
        let result = measure(&pair, link, &args, &mut progress).await;
        pair.close().await;
        rows.push(result?);
    }
    progress.finish();
    if let Some(dir) = &args.svg {
        for path in chart::write(dir, &rows)? {
            eprintln!("bench: wrote {}", path.display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "| link | 8 B msgs/s | 1 KiB msgs/s | 1 KiB MB/s | 64 KiB msgs/s | 64 KiB MB/s | RTT p50 | RTT p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        let cell = |i: usize| row.throughput.get(i).copied().unwrap_or_default();
        println!(
            "| {:?} | {} | {} | {:.0} | {} | {:.0} | {} µs | {} µs |",
            row.link,
            rate(cell(0).1),
            rate(cell(1).1),
            cell(1).2,
            rate(cell(2).1),
            cell(2).2,
            row.rtt_p50_us,
            row.rtt_p99_us
        );
    }
    Ok(())
}

async fn measure(
    pair: &Pair,
    link: Link,
    args: &Args,
    progress: &mut Progress<impl Write>,
) -> anyhow::Result<Row> {
    let mut throughput = Vec::new();
    for (case, &(size, share)) in SIZES.iter().enumerate() {
        let count = (args.messages / share).max(1);
        progress.start(
            format!("{}: {} x {count}", link.label(), size_label(size)),
            count,
        );
        let rate = transfer(pair, &format!("bench.t{case}"), size, count, progress).await?;
        throughput.push((size, rate, rate * size as f64 / 1e6));
    }
    progress.start(
        format!("{}: {} round trips", link.label(), args.round_trips),
        args.round_trips,
    );
    let rtts_us = round_trips(pair, args.round_trips, progress).await?;
    let at = |q: f64| percentile(&rtts_us, q);
    Ok(Row {
        link,
        throughput,
        rtt_p50_us: at(0.50),
        rtt_p90_us: at(0.90),
        rtt_p99_us: at(0.99),
        rtt_p999_us: at(0.999),
        rtt_max_us: at(1.0),
        rtts_us,
    })
}

/// The `q` quantile (0 to 1) of ascending `sorted` samples, by nearest rank below; 0 when empty.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return 0;
    };
    sorted[((last as f64 * q) as usize).min(last)]
}

/// Sends `count` messages of `size` bytes and returns messages/s, measured until the last one
/// arrived. Fails if any message is missing, repeated or out of order.
async fn transfer(
    pair: &Pair,
    path: &str,
    size: usize,
    count: u64,
    progress: &mut Progress<impl Write>,
) -> anyhow::Result<f64> {
    let lossless = SubscribeOptions::default()
        .capacity(4096)
        .overflow(Overflow::Block);
    let mut interest = pair.subscriber.subscribe_with::<Bytes>(path, lossless)?;
    let intent = pair
        .publisher
        .publish_with::<Bytes>(path, PublishOptions::default().qos(Qos::reliable()))?;
    intent
        .wait_for_interest(GUARD)
        .await
        .context("the subscriber did not link")?;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            let mut data = vec![0u8; size.max(8)];
            data[..8].copy_from_slice(&seq.to_be_bytes());
            intent.send(Bytes { data }).await?;
        }
        anyhow::Ok(intent)
    });
    for expected in 0..count {
        let message = tokio::time::timeout(GUARD, interest.recv())
            .await
            .context("no progress")??;
        let seq = message
            .data
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        if seq != Some(expected) {
            bail!("message {expected} arrived as {seq:?}");
        }
        progress.advance(expected + 1);
    }
    let elapsed = started.elapsed();
    drop(sender.await??);
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// Ping-pong of 8-byte messages: the subscriber side echoes on a second route. Returns every
/// round trip in microseconds, ascending.
async fn round_trips(
    pair: &Pair,
    count: u64,
    progress: &mut Progress<impl Write>,
) -> anyhow::Result<Vec<u64>> {
    let reliable = || PublishOptions::default().qos(Qos::reliable());
    let mut pings = pair.subscriber.subscribe::<Bytes>("bench.ping")?;
    let pong = pair
        .subscriber
        .publish_with::<Bytes>("bench.pong", reliable())?;
    let mut pongs = pair.publisher.subscribe::<Bytes>("bench.pong")?;
    let ping = pair
        .publisher
        .publish_with::<Bytes>("bench.ping", reliable())?;
    ping.wait_for_interest(GUARD).await?;
    pong.wait_for_interest(GUARD).await?;
    let echo = tokio::spawn(async move {
        while let Ok(message) = pings.recv().await {
            if pong.send(Arc::unwrap_or_clone(message)).await.is_err() {
                break;
            }
        }
    });
    let mut rtts = Vec::with_capacity(count as usize);
    for seq in 0..count {
        let started = Instant::now();
        ping.send(Bytes::from(seq.to_be_bytes().to_vec())).await?;
        let answer = tokio::time::timeout(GUARD, pongs.recv())
            .await
            .context("no echo")??;
        if answer.data != seq.to_be_bytes() {
            bail!("echo {seq} came back as {:?}", answer.data);
        }
        rtts.push(started.elapsed().as_micros() as u64);
        progress.advance(seq + 1);
    }
    drop(ping);
    echo.abort();
    let _ = echo.await;
    rtts.sort_unstable();
    Ok(rtts)
}

impl Progress<std::io::Stderr> {
    /// Progress of a run of `cases` cases on standard error.
    fn stderr(cases: usize) -> Self {
        use std::io::IsTerminal as _;
        let out = std::io::stderr();
        let terminal = out.is_terminal();
        Self::new(out, terminal, cases)
    }
}

impl<W: Write> Progress<W> {
    fn new(out: W, terminal: bool, cases: usize) -> Self {
        Self {
            out,
            terminal,
            cases,
            case: 0,
            label: String::new(),
            total: 0,
            shown: None,
        }
    }

    /// The next case begins: `label`, in `total` steps.
    fn start(&mut self, label: String, total: u64) {
        self.case += 1;
        self.label = label;
        self.total = total.max(1);
        self.shown = None;
        if self.terminal {
            self.advance(0);
        } else {
            // Progress is a courtesy: a closed stderr must not stop the run.
            let _ = writeln!(
                self.out,
                "bench [{}/{}] {}",
                self.case, self.cases, self.label
            );
        }
    }

    /// `done` steps of the current case are done. Redraws the line (on a terminal only) when
    /// the whole percentage changed, so at most 101 times per case.
    fn advance(&mut self, done: u64) {
        if !self.terminal {
            return;
        }
        let percent = done.min(self.total) * 100 / self.total;
        if self.shown == Some(percent) {
            return;
        }
        self.shown = Some(percent);
        let _ = write!(
            self.out,
            "\r\x1b[2Kbench [{}/{}] {} {percent:>3} %",
            self.case, self.cases, self.label
        );
        let _ = self.out.flush();
    }

    /// The run is over: clears the line on a terminal.
    fn finish(&mut self) {
        if self.terminal {
            let _ = write!(self.out, "\r\x1b[2K");
            let _ = self.out.flush();
        }
    }
}

/// `8 B`, `1 KiB`, `64 KiB`.
fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// `1.23M`, `456.7k` or `890`.
fn rate(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_each_case_is_one_line() {
        let mut progress = Progress::new(Vec::new(), false, 2);
        progress.start("remote: 8 B x 10".to_owned(), 10);
        for done in 1..=10 {
            progress.advance(done);
        }
        progress.start("remote: 5 round trips".to_owned(), 5);
        progress.finish();
        let text = String::from_utf8(progress.out).unwrap();
        assert_eq!(
            text,
            "bench [1/2] remote: 8 B x 10\nbench [2/2] remote: 5 round trips\n"
        );
    }

    #[test]
    fn on_a_terminal_one_line_is_redrawn_once_per_percent_and_cleared() {
        let mut progress = Progress::new(Vec::new(), true, 1);
        progress.start("mesh: 1 KiB x 1000".to_owned(), 1000);
        for done in 1..=1000 {
            progress.advance(done);
        }
        progress.finish();
        let text = String::from_utf8(progress.out).unwrap();
        assert!(!text.contains('\n'), "{text:?}");
        let draws: Vec<&str> = text.split("\r\x1b[2K").filter(|d| !d.is_empty()).collect();
        assert_eq!(draws.len(), 101, "0 % to 100 %: {draws:?}");
        assert_eq!(draws[0], "bench [1/1] mesh: 1 KiB x 1000   0 %");
        assert_eq!(draws[100], "bench [1/1] mesh: 1 KiB x 1000 100 %");
        assert!(text.ends_with("\r\x1b[2K"), "cleared at the end: {text:?}");
    }

    #[test]
    fn percentiles_take_the_nearest_rank_below() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), 500);
        assert_eq!(percentile(&samples, 0.99), 990);
        assert_eq!(percentile(&samples, 0.999), 999);
        assert_eq!(percentile(&samples, 1.0), 1000);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn sizes_read_in_bytes_or_kibibytes() {
        assert_eq!(size_label(8), "8 B");
        assert_eq!(size_label(1024), "1 KiB");
        assert_eq!(size_label(64 * 1024), "64 KiB");
        assert_eq!(size_label(1500), "1500 B");
    }
}
