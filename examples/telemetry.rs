//! Telemetry at a fixed rate: IMU samples go to a lossless statistics subscriber (rate, mean,
//! min, max) and to a slow dashboard whose small `DropOldest` queue drops, and counts, what it
//! has no time to show: it always shows the newest sample, and `Interest::stats()` tells how many
//! it skipped.
//!
//! One router, in-process; the publisher paces itself with `tokio::time::interval`. It stops
//! after `--seconds` (default 3) or `--samples`:
//!
//! ```sh
//! cargo run --example telemetry
//! cargo run --example telemetry -- --rate 1000 --samples 5000 --dashboard-hz 20
//! ```

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser as _;
use dndm::{Interest, Overflow, Router, SubscribeOptions};
use tokio::time::MissedTickBehavior;

/// One IMU sample: acceleration in m/s², angular rate in rad/s.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Imu {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(float, tag = "2")]
    ax: f32,
    #[prost(float, tag = "3")]
    ay: f32,
    #[prost(float, tag = "4")]
    az: f32,
    #[prost(float, tag = "5")]
    gz: f32,
}

impl prost::Name for Imu {
    const NAME: &'static str = "Imu";
    const PACKAGE: &'static str = "telemetry";
}
impl dndm::Message for Imu {}

/// The route samples are published on.
const ROUTE: &str = "robot.base.imu";

/// Failure guard for a subscriber waiting on its next sample.
const GUARD: Duration = Duration::from_secs(30);

/// Queue of the statistics subscriber (`Block`: the publisher waits rather than lose a sample).
const STATS_QUEUE: usize = 1024;

/// Command-line arguments.
#[derive(Debug, clap::Parser)]
pub(crate) struct Args {
    /// Samples per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: u32,
    /// Publish for this many seconds.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Publish this many samples instead of --seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    samples: Option<u64>,
    /// Dashboard refreshes per second (it takes one sample per refresh).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    dashboard_hz: u32,
    /// Dashboard queue capacity (`DropOldest`).
    #[arg(long, default_value_t = 8)]
    dashboard_queue: usize,
}

/// What a run measured.
#[derive(Debug)]
pub(crate) struct Report {
    /// Samples published.
    pub(crate) published: u64,
    /// What the statistics subscriber computed.
    pub(crate) stats: Stats,
    /// What the dashboard showed and dropped.
    pub(crate) dashboard: Dashboard,
}

/// Statistics over every sample's acceleration magnitude |a|.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Samples received.
    pub(crate) count: u64,
    /// Samples per second, as received.
    pub(crate) rate_hz: f64,
    /// Mean |a|, in m/s².
    pub(crate) mean: f64,
    /// Smallest |a|.
    pub(crate) min: f64,
    /// Largest |a|.
    pub(crate) max: f64,
}

/// The dashboard's view.
#[derive(Debug)]
pub(crate) struct Dashboard {
    /// Samples shown.
    pub(crate) shown: u64,
    /// Samples its queue dropped (`QueueStats::dropped_oldest`).
    pub(crate) dropped: u64,
    /// Its queue capacity.
    pub(crate) capacity: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await.map(drop)
}

/// Publishes the samples, lets both subscribers finish and reports what they saw.
pub(crate) async fn run(args: Args) -> anyhow::Result<Report> {
    let total = args.samples.unwrap_or(args.seconds * u64::from(args.rate));
    anyhow::ensure!(total > 0, "nothing to publish: --seconds 0");
    let router = Router::builder().name("robot").build()?;
    let lossless = SubscribeOptions::default()
        .capacity(STATS_QUEUE)
        .overflow(Overflow::Block);
    let stats = router.subscribe_with::<Imu>(ROUTE, lossless)?;
    let lossy = SubscribeOptions::default()
        .capacity(args.dashboard_queue)
        .overflow(Overflow::DropOldest);
    let dashboard = router.subscribe_with::<Imu>(ROUTE, lossy)?;
    let imu = router.publish::<Imu>(ROUTE)?;
    println!(
        "telemetry: {total} samples at {} Hz on {ROUTE}; stats (Block, {STATS_QUEUE}), \
         dashboard at {} Hz (DropOldest, {})",
        args.rate, args.dashboard_hz, args.dashboard_queue
    );
    let stats = tokio::spawn(statistics(stats, total, args.rate));
    let dashboard = tokio::spawn(show(dashboard, total, args.dashboard_hz));

    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    for seq in 0..total {
        tick.tick().await;
        let t = seq as f32 / args.rate as f32;
        let sample = Imu {
            seq,
            ax: 0.3 * (2.0 * std::f32::consts::PI * t).sin(),
            ay: 0.1 * (3.0 * t).cos(),
            az: 9.81 + 0.05 * (7.0 * t).sin(),
            gz: 0.2 * (0.5 * t).sin(),
        };
        imu.send(sample).await?;
    }
    let report = Report {
        published: total,
        stats: stats.await.context("the statistics task panicked")??,
        dashboard: dashboard.await.context("the dashboard task panicked")??,
    };
    router.close().await;
    let (s, d) = (&report.stats, &report.dashboard);
    println!("published  {} samples", report.published);
    println!(
        "stats      {} received at {:.1} Hz; |a| mean {:.4}, min {:.4}, max {:.4} m/s²",
        s.count, s.rate_hz, s.mean, s.min, s.max
    );
    println!(
        "dashboard  {} shown, {} dropped by its queue (DropOldest, capacity {})",
        d.shown, d.dropped, d.capacity
    );
    Ok(report)
}

/// Receives every sample, printing running statistics once per second of samples.
async fn statistics(mut imu: Interest<Imu>, total: u64, rate: u32) -> anyhow::Result<Stats> {
    let mut stats = Stats {
        count: 0,
        rate_hz: 0.0,
        mean: 0.0,
        min: f64::MAX,
        max: f64::MIN,
    };
    let (mut sum, mut started) = (0.0, None);
    while stats.count < total {
        let sample = imu.recv_timeout(GUARD).await.context("stats: no sample")?;
        let started = *started.get_or_insert_with(Instant::now);
        let a = f64::from(sample.ax.powi(2) + sample.ay.powi(2) + sample.az.powi(2)).sqrt();
        stats.count += 1;
        sum += a;
        stats.min = stats.min.min(a);
        stats.max = stats.max.max(a);
        stats.mean = sum / stats.count as f64;
        if stats.count > 1 {
            stats.rate_hz = (stats.count - 1) as f64 / started.elapsed().as_secs_f64();
        }
        if stats.count.is_multiple_of(u64::from(rate)) {
            println!(
                "  stats      {:>7} samples  {:>8.1} Hz  |a| mean {:.4}  min {:.4}  max {:.4}",
                stats.count, stats.rate_hz, stats.mean, stats.min, stats.max
            );
        }
    }
    Ok(stats)
}

/// Shows one sample per refresh; its queue keeps only the newest few, the rest is dropped.
async fn show(mut imu: Interest<Imu>, total: u64, hz: u32) -> anyhow::Result<Dashboard> {
    let mut refresh = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(hz)));
    refresh.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let queue = imu.stats();
        // Every sample published is either shown or counted as dropped: nothing vanishes.
        if queue.delivered + queue.dropped() >= total {
            return Ok(Dashboard {
                shown: queue.delivered,
                dropped: queue.dropped_oldest,
                capacity: queue.capacity,
            });
        }
        refresh.tick().await;
        let sample = imu
            .recv_timeout(GUARD)
            .await
            .context("dashboard: no sample")?;
        if (queue.delivered + 1).is_multiple_of(u64::from(hz)) {
            println!(
                "  dashboard  sample {:>7}  az {:+.3}  gz {:+.3}  ({} dropped so far, {}/{} queued)",
                sample.seq,
                sample.az,
                sample.gz,
                queue.dropped(),
                queue.len,
                queue.capacity
            );
        }
    }
}
