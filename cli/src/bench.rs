//! `dndm bench`: end-to-end throughput and round trip between two routers in this process, over
//! each kind of link: in-process (one router), remote (two routers over a Noise-secured TCP link
//! on loopback) and mesh (two routers over libp2p on loopback). Every case is reliable and
//! lossless (`Block` subscribers), and checks that every message arrived once and in order.
//!
//! Both ends share this process's two runtime workers, so these are the numbers of one host
//! doing both sides; `cargo bench` runs the cross-process benchmarks (docs/benchmarks.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dndm::builtin::Bytes;
use dndm::mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm::remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm::{Keypair, Overflow, PublishOptions, Qos, Router, SubscribeOptions};
use serde::Serialize;

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

/// One link's results.
#[derive(Debug, Serialize)]
struct Row {
    link: Link,
    /// Per payload size: (bytes, messages/s, MB/s).
    throughput: Vec<(usize, f64, f64)>,
    rtt_p50_us: u64,
    rtt_p99_us: u64,
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
    let mut rows = Vec::new();
    for &link in &args.links {
        let pair = Pair::new(link).await?;
        let result = measure(&pair, link, &args).await;
        pair.close().await;
        rows.push(result?);
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

async fn measure(pair: &Pair, link: Link, args: &Args) -> anyhow::Result<Row> {
    let mut throughput = Vec::new();
    for (case, &(size, share)) in SIZES.iter().enumerate() {
        let count = (args.messages / share).max(1);
        progress(&format!("{link:?}: {size} B x {count}"));
        let rate = transfer(pair, &format!("bench.t{case}"), size, count).await?;
        throughput.push((size, rate, rate * size as f64 / 1e6));
    }
    progress(&format!("{link:?}: {} round trips", args.round_trips));
    let (p50, p99) = round_trips(pair, args.round_trips).await?;
    progress("");
    Ok(Row {
        link,
        throughput,
        rtt_p50_us: p50,
        rtt_p99_us: p99,
    })
}

/// Sends `count` messages of `size` bytes and returns messages/s, measured until the last one
/// arrived. Fails if any message is missing, repeated or out of order.
async fn transfer(pair: &Pair, path: &str, size: usize, count: u64) -> anyhow::Result<f64> {
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
    }
    let elapsed = started.elapsed();
    drop(sender.await??);
    Ok(count as f64 / elapsed.as_secs_f64())
}

/// Ping-pong of 8-byte messages: the subscriber side echoes on a second route. Returns the
/// p50 and p99 round trip in microseconds.
async fn round_trips(pair: &Pair, count: u64) -> anyhow::Result<(u64, u64)> {
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
    }
    drop(ping);
    echo.abort();
    let _ = echo.await;
    rtts.sort_unstable();
    let at = |p: f64| rtts[((rtts.len() - 1) as f64 * p) as usize];
    Ok((at(0.50), at(0.99)))
}

/// A one-line progress indicator on stderr (cleared with an empty message).
fn progress(message: &str) {
    use std::io::{IsTerminal as _, Write as _};
    let mut stderr = std::io::stderr();
    if !stderr.is_terminal() {
        if !message.is_empty() {
            let _ = writeln!(stderr, "bench: {message}");
        }
        return;
    }
    let _ = write!(stderr, "\r\x1b[2Kbench: {message}");
    let _ = stderr.flush();
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
