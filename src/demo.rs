//! `dndm demo`: typed in-process pub/sub with a printed summary.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use dndm::{HandlerError, Overflow, Router, SubscribeOptions};

/// One IMU sample.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Imu {
    #[prost(string, tag = "1")]
    pub(crate) sensor: String,
    #[prost(uint64, tag = "2")]
    pub(crate) seq: u64,
    #[prost(float, tag = "3")]
    pub(crate) ax: f32,
    #[prost(float, tag = "4")]
    pub(crate) ay: f32,
    #[prost(float, tag = "5")]
    pub(crate) az: f32,
    /// Microseconds since the demo started, for latency.
    #[prost(uint64, tag = "6")]
    pub(crate) sent_us: u64,
}

impl prost::Name for Imu {
    const NAME: &'static str = "Imu";
    const PACKAGE: &'static str = "dndm.demo";
}
impl dndm::Message for Imu {}

/// Request for the status service.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusRequest {}

impl prost::Name for StatusRequest {
    const NAME: &'static str = "StatusRequest";
    const PACKAGE: &'static str = "dndm.demo";
}
impl dndm::Message for StatusRequest {}

/// Answer of the status service.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Status {
    #[prost(string, tag = "1")]
    pub(crate) text: String,
}

impl prost::Name for Status {
    const NAME: &'static str = "Status";
    const PACKAGE: &'static str = "dndm.demo";
}
impl dndm::Message for Status {}

const SENSORS: [&str; 4] = ["arm", "base", "head", "gripper"];

/// Arguments of `dndm demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Messages each sensor publishes.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    messages: u64,
}

/// Runs the demo; fails if the lossless subscriber missed or reordered anything.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let per_sensor = args.messages;
    let total = per_sensor * SENSORS.len() as u64;
    let router = Router::builder()
        .name("demo")
        .send_timeout(Duration::from_secs(30))
        .build()?;
    let origin = Instant::now();

    println!(
        "dndm demo: {} sensors x {per_sensor} typed Imu messages, in process",
        SENSORS.len()
    );
    let mut fusion = router.subscribe_with::<Imu>(
        "robot.*.imu",
        SubscribeOptions::default()
            .capacity(1024)
            .overflow(Overflow::Block),
    )?;
    let mut dashboard = router.subscribe_with::<Imu>(
        "robot.**",
        SubscribeOptions::default()
            .capacity(64)
            .overflow(Overflow::DropOldest),
    )?;
    let mut arm_monitor = router.subscribe::<Imu>("robot.arm.imu")?;

    let status = {
        let router = router.clone();
        router
            .clone()
            .serve::<StatusRequest, Status, _, _>("robot.status", move |_| {
                let snapshot = router.snapshot();
                async move {
                    Ok::<_, HandlerError>(Status {
                        text: format!(
                            "{} intents, {} interests, {} links",
                            snapshot.intents.len(),
                            snapshot.interests.len(),
                            snapshot.links.len()
                        ),
                    })
                }
            })?
    };

    let mut publishers = Vec::new();
    for (i, name) in SENSORS.iter().enumerate() {
        let intent = router.publish::<Imu>(&format!("robot.{name}.imu"))?;
        let sensor = (*name).to_owned();
        publishers.push(tokio::spawn(async move {
            intent.wait_for_interest(Duration::from_secs(5)).await?;
            for seq in 0..per_sensor {
                let sample = Imu {
                    sensor: sensor.clone(),
                    seq,
                    ax: i as f32,
                    ay: (seq % 100) as f32 * 0.01,
                    az: 9.81,
                    sent_us: origin.elapsed().as_micros() as u64,
                };
                intent
                    .send(sample)
                    .await
                    .map_err(|e| anyhow::anyhow!("{sensor}: {e}"))?;
            }
            anyhow::Ok(())
        }));
    }

    let dashboard_task = tokio::spawn(async move {
        // A slow consumer: it yields after each message, so its small queue overflows.
        let mut seen = 0u64;
        while dashboard.recv().await.is_ok() {
            seen += 1;
            tokio::task::yield_now().await;
        }
        (seen, dashboard.stats())
    });
    let monitor_task = tokio::spawn(async move {
        let mut seen = 0u64;
        while arm_monitor.recv().await.is_ok() {
            seen += 1;
        }
        (seen, arm_monitor.stats())
    });
    let status_text = router
        .request::<StatusRequest, Status>("robot.status", StatusRequest {}, Duration::from_secs(5))
        .await?
        .text;

    let start = Instant::now();
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut latencies = Vec::with_capacity(total as usize);
    let mut received = 0u64;
    let mut next_report = total / 4;
    while received < total {
        let sample = tokio::time::timeout(Duration::from_secs(30), fusion.recv())
            .await
            .context("fusion got nothing for 30 s")?
            .context("fusion subscription closed early")?;
        let expected = next.entry(sample.sensor.clone()).or_insert(0);
        if sample.seq != *expected {
            bail!(
                "fusion: sensor {} sent {} but {} was expected",
                sample.sensor,
                sample.seq,
                expected
            );
        }
        *expected += 1;
        latencies.push(origin.elapsed().as_micros() as u64 - sample.sent_us);
        received += 1;
        if received >= next_report && received < total {
            let rate = received as f64 / start.elapsed().as_secs_f64();
            println!(
                "  {:>3}%  {received:>9} received  {rate:>12.0} msg/s",
                received * 100 / total
            );
            next_report += total / 4;
        }
    }
    let elapsed = start.elapsed();
    for publisher in publishers {
        publisher.await.context("publisher task failed")??;
    }
    drop(status);
    router.close().await;
    let (dashboard_seen, dashboard_stats) = dashboard_task.await?;
    let (arm_seen, arm_stats) = monitor_task.await?;

    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!("final report");
    println!(
        "  sent                {total} messages in {:.3} s ({:.0} msg/s)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  fusion  (Block)     {received} received, 0 lost, in order per sensor; latency p50 {} us, p99 {} us",
        pct(0.5),
        pct(0.99)
    );
    println!(
        "  dashboard (DropOldest, 64) {dashboard_seen} received, {} dropped (counted)",
        dashboard_stats.dropped_oldest
    );
    println!(
        "  arm monitor (DropOldest, 1024) {arm_seen} received, {} dropped (exact route robot.arm.imu)",
        arm_stats.dropped_oldest
    );
    println!("  status service      {status_text}");
    ensure!(
        arm_seen + arm_stats.dropped_oldest == per_sensor,
        "arm monitor lost messages without counting them"
    );
    ensure!(
        dashboard_seen + dashboard_stats.dropped_oldest == total,
        "dashboard lost messages without counting them"
    );
    println!("ok");
    Ok(())
}
