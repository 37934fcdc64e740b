//! A sensor → fusion → sink pipeline over three routers, using every kind of link:
//!
//! ```text
//! sensor router ──remote link (Noise, TCP loopback)──▶ fusion router ──libp2p mesh (loopback)──▶ sink router
//!   arm, head IMUs                                     fuse → robot.fused                        robot.fused
//!                                                        └─in-process─▶ monitor
//! ```
//!
//! Routers do not forward between peers: the sink never sees the sensors' routes. The fusion
//! router subscribes to the raw `robot.*.imu` stream, pairs the two sensors' samples by sequence
//! number and publishes a new `robot.fused` stream, which the sink (over the mesh) and a monitor
//! (in the fusion router itself) subscribe to. Every stage is lossless (reliable routes, `Block`
//! queues) and checks order.
//!
//! `cargo run --example pipeline` (`-- --samples N`: samples per sensor, default 1000)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use clap::Parser as _;
use dndm::mesh::{MeshConfig, MeshEndpoint};
use dndm::remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm::{Intent, Interest, Keypair, Overflow, PublishOptions, Qos, Router, SubscribeOptions};

/// One raw IMU sample.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Imu {
    #[prost(string, tag = "1")]
    sensor: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(float, repeated, tag = "3")]
    accel: Vec<f32>,
}

impl prost::Name for Imu {
    const NAME: &'static str = "Imu";
    const PACKAGE: &'static str = "pipeline";
}
impl dndm::Message for Imu {}

/// The fused estimate of one sequence number: the mean of both sensors.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Fused {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(float, repeated, tag = "2")]
    accel: Vec<f32>,
    #[prost(uint32, tag = "3")]
    sources: u32,
}

impl prost::Name for Fused {
    const NAME: &'static str = "Fused";
    const PACKAGE: &'static str = "pipeline";
}
impl dndm::Message for Fused {}

/// The sensors on the sensor router.
const SENSORS: [&str; 2] = ["arm", "head"];

/// Failure guard for links to form and for a stage waiting on its next message.
const GUARD: Duration = Duration::from_secs(30);

/// Command-line arguments.
#[derive(Debug, clap::Parser)]
pub(crate) struct Args {
    /// Samples each sensor publishes.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    samples: u64,
}

/// Messages counted at each stage, in order.
#[derive(Debug)]
pub(crate) struct Report {
    /// Samples each sensor published.
    pub(crate) per_sensor: u64,
    /// Fused messages the fusion router published.
    pub(crate) fused: u64,
    /// Fused messages the sink received over the mesh, in order.
    pub(crate) sink: u64,
    /// Fused messages the in-process monitor received, in order.
    pub(crate) monitor: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Args::parse()).await.map(drop)
}

/// Builds the pipeline, runs `args.samples` through it and reports what each stage counted.
pub(crate) async fn run(args: Args) -> anyhow::Result<Report> {
    let n = args.samples;
    let reliable = PublishOptions::default().qos(Qos::reliable());
    let lossless = SubscribeOptions::default()
        .capacity(256)
        .overflow(Overflow::Block);

    // Sensor router: publishes raw samples, listens for remote links.
    let sensor = Router::builder().name("sensor").build()?;
    let mut sensors = Vec::new();
    for name in SENSORS {
        let path = format!("robot.{name}.imu");
        sensors.push((name, sensor.publish_with::<Imu>(&path, reliable.clone())?));
    }
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse()?)];
    let listener = RemoteEndpoint::new(Keypair::generate()?, config)?;
    sensor.attach(Arc::new(listener.clone())).await?;

    // Fusion router: dials the sensor router, serves the fused stream on the mesh and to a
    // local monitor.
    let fusion = Router::builder().name("fusion").build()?;
    let raw = fusion.subscribe_with::<Imu>("robot.*.imu", lossless.clone())?;
    let fused = fusion.publish_with::<Fused>("robot.fused", reliable)?;
    let monitor = fusion.subscribe_with::<Fused>("robot.fused", lossless.clone())?;
    let identity = Keypair::generate()?;
    let mut config = RemoteConfig::default();
    config.dial = listener.bound();
    let dialer = RemoteEndpoint::new(identity.clone(), config)?;
    fusion.attach(Arc::new(dialer)).await?;
    let fusion_mesh = mesh(&fusion, identity, None).await?;
    let address = listen_address(&fusion_mesh).await?;

    // Sink router: dials the fusion router over the mesh.
    let sink = Router::builder().name("sink").build()?;
    let output = sink.subscribe_with::<Fused>("robot.fused", lossless)?;
    mesh(&sink, Keypair::generate()?, Some(&address)).await?;

    let remote = listener.bound().first().map(ToString::to_string);
    let remote = remote.context("the sensor router is not listening")?;
    println!("sensor --remote {remote}--> fusion --mesh {address}--> sink");
    println!("fusion --in-process--> monitor");
    for (name, intent) in &sensors {
        intent
            .wait_for_interest(GUARD)
            .await
            .with_context(|| format!("fusion never subscribed to sensor {name}"))?;
    }
    let mut events = fused.events();
    while fused.subscriber_count() < 2 {
        tokio::time::timeout(GUARD, events.recv())
            .await
            .context("the sink never subscribed to robot.fused")??;
    }

    let started = Instant::now();
    let fuse = tokio::spawn(fuse(raw, fused, n));
    let sink_task = tokio::spawn(consume("sink", output, n));
    let monitor_task = tokio::spawn(consume("monitor", monitor, n));
    for step in 0..n {
        for (name, intent) in &sensors {
            let x = step as f32 * 0.01;
            let accel = vec![x.sin(), x.cos(), 9.81];
            intent
                .send(Imu {
                    sensor: (*name).to_owned(),
                    seq: step,
                    accel,
                })
                .await?;
        }
    }
    let report = Report {
        per_sensor: n,
        fused: fuse.await.context("fusion panicked")??,
        sink: sink_task.await.context("sink panicked")??,
        monitor: monitor_task.await.context("monitor panicked")??,
    };
    let elapsed = started.elapsed();
    println!(
        "{} sensors x {} samples -> {} fused -> sink {}, monitor {} (in order) in {:.3} s",
        SENSORS.len(),
        report.per_sensor,
        report.fused,
        report.sink,
        report.monitor,
        elapsed.as_secs_f64()
    );
    // The fusion router reaches one peer per endpoint: `remote:<id>` and `mesh:<id>`.
    for peer in fusion.snapshot().peers {
        let endpoint = peer.endpoint.split(':').next().unwrap_or_default();
        let (sent, received) = (peer.messages_sent, peer.messages_received);
        println!(
            "  fusion <-{endpoint}-> {}: sent {sent}, received {received}",
            peer.peer
        );
    }
    for router in [&sink, &fusion, &sensor] {
        router.close().await;
    }
    Ok(report)
}

/// Pairs the sensors' samples by sequence number and publishes their mean; returns the count.
async fn fuse(mut raw: Interest<Imu>, fused: Intent<Fused>, n: u64) -> anyhow::Result<u64> {
    let mut waiting: HashMap<u64, Arc<Imu>> = HashMap::new();
    let mut published = 0;
    while published < n {
        let sample = raw.recv_timeout(GUARD).await.context("fusion: no sample")?;
        let Some(other) = waiting.remove(&sample.seq) else {
            waiting.insert(sample.seq, sample);
            continue;
        };
        ensure!(
            other.sensor != sample.sensor,
            "sample {} twice from {}",
            sample.seq,
            sample.sensor
        );
        let accel = other
            .accel
            .iter()
            .zip(&sample.accel)
            .map(|(a, b)| (a + b) / 2.0)
            .collect();
        fused
            .send(Fused {
                seq: sample.seq,
                accel,
                sources: 2,
            })
            .await?;
        published += 1;
    }
    Ok(published)
}

/// Receives `n` fused messages, checking that none is missing or out of order.
async fn consume(stage: &str, mut input: Interest<Fused>, n: u64) -> anyhow::Result<u64> {
    for expected in 0..n {
        let fused = input
            .recv_timeout(GUARD)
            .await
            .with_context(|| format!("{stage}: no message"))?;
        if fused.seq != expected || fused.sources != 2 {
            bail!(
                "{stage}: got seq {} from {} sources, expected seq {expected}",
                fused.seq,
                fused.sources
            );
        }
    }
    Ok(n)
}

/// Attaches a mesh endpoint on loopback (mDNS off) to `router`, dialing `dial` if given.
async fn mesh(
    router: &Router,
    identity: Keypair,
    dial: Option<&str>,
) -> anyhow::Result<MeshEndpoint> {
    let mut config = MeshConfig::default();
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.mdns = false;
    config.dial = dial.map(str::parse).transpose()?.into_iter().collect();
    config.remote.session.node_name = router.name().to_owned();
    let mesh = MeshEndpoint::new(identity, config)?;
    router.attach(Arc::new(mesh.clone())).await?;
    Ok(mesh)
}

/// The mesh's first listen address with `/p2p/<PeerId>`, once its listener is up.
async fn listen_address(mesh: &MeshEndpoint) -> anyhow::Result<String> {
    let addresses = tokio::time::timeout(GUARD, mesh.wait_listening())
        .await
        .context("the mesh listener did not come up")?;
    let address = addresses
        .first()
        .context("the mesh has no listen address")?;
    Ok(format!("{address}/p2p/{}", mesh.peer_id()))
}
