//! History for late joiners and a flight recording, with a type of your own, over a remote link
//! in one process:
//!
//! 1. A sensor publishes with `history(10)` before anyone listens; a display that subscribes
//!    later with `history(10)` gets the last ten readings first, then the live ones, in order.
//! 2. A recorder router (its link asks the sensor to sign every batch) writes what arrives to a
//!    recording file; `audit` then checks every batch against the sensor's key, offline, and
//!    `messages` reads the readings back. `dndm verify FILE` and `dndm info FILE` read the same
//!    file.
//!
//! `cargo run --example history_and_recording` (`-- --readings N`, `-- --out FILE`)

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use clap::Parser as _;
use dndm::core::Signing;
use dndm::remote::codec::record::{FILE_MAGIC, audit, messages};
use dndm::remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm::{Keypair, Overflow, PublishOptions, Qos, Router, SubscribeOptions};
use prost::Message as _;

/// One temperature reading.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Reading {
    #[prost(uint64, tag = "1")]
    pub(crate) seq: u64,
    #[prost(float, tag = "2")]
    pub(crate) celsius: f32,
}

impl prost::Name for Reading {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "example.lab";
}
impl dndm::Message for Reading {}

/// Arguments.
#[derive(Debug, clap::Parser)]
pub(crate) struct Args {
    /// Readings published after the display subscribed (ten more come before).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    readings: u64,
    /// Where to write the recording. Default: a file in the temporary directory.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What the run saw.
#[derive(Debug)]
pub(crate) struct Report {
    /// Readings the late display got, in order (history first).
    pub(crate) display: Vec<u64>,
    /// Readings in the recording, in order.
    pub(crate) recorded: Vec<u64>,
    /// Batches whose signature verified, and that failed.
    pub(crate) verified: u64,
    pub(crate) failed: u64,
}

const GUARD: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = run(Args::parse()).await?;
    println!(
        "display got {} readings ({}..={}), recording holds {} ({} batches verified, {} failed)",
        report.display.len(),
        report.display.first().copied().unwrap_or_default(),
        report.display.last().copied().unwrap_or_default(),
        report.recorded.len(),
        report.verified,
        report.failed
    );
    Ok(())
}

/// Runs both parts and reports what each saw.
pub(crate) async fn run(args: Args) -> anyhow::Result<Report> {
    // The sensor listens on loopback TCP; the display and the recorder dial it.
    let sensor = Router::builder().name("sensor").build()?;
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse()?)];
    let listener = RemoteEndpoint::new(Keypair::generate()?, config)?;
    sensor.attach(Arc::new(listener.clone())).await?;
    let sensor_key = listener.peer_id();

    let options = PublishOptions::default().qos(Qos::reliable()).history(10);
    let readings = sensor.publish_with::<Reading>("lab.room1", options)?;
    // Ten readings before anyone listens: kept for late joiners.
    for seq in 0..10 {
        readings.send(reading(seq)).await?;
    }

    let display = Router::builder().name("display").build()?;
    let mut config = RemoteConfig::default();
    config.dial = listener.bound();
    display
        .attach(Arc::new(RemoteEndpoint::new(Keypair::generate()?, config)?))
        .await?;

    // The recorder asks its peers to sign and hands every signed batch over.
    let recorder = Router::builder().name("recorder").build()?;
    let mut config = RemoteConfig::default();
    config.dial = listener.bound();
    config.session.signing = Signing::Batch;
    config.session.record = true;
    let endpoint = RemoteEndpoint::new(Keypair::generate()?, config)?;
    let mut records = endpoint.recorder(4096)?;
    recorder.attach(Arc::new(endpoint)).await?;
    let lossless = SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block);
    let mut tape = recorder.subscribe_with::<Reading>("lab.*", lossless.clone())?;

    let mut screen = display.subscribe_with::<Reading>("lab.*", lossless.history(10))?;
    let total = 10 + args.readings;
    let mut events = readings.events();
    while readings.subscriber_count() < 2 {
        tokio::time::timeout(GUARD, events.recv())
            .await
            .context("the display and the recorder did not link in time")??;
    }
    for seq in 10..total {
        readings.send(reading(seq)).await?;
    }
    let mut seen = Vec::new();
    for _ in 0..total {
        let got = tokio::time::timeout(GUARD, screen.recv())
            .await
            .with_context(|| format!("the display got {seen:?}, then nothing"))??;
        seen.push(got.seq);
    }
    // The recorder's own subscriber got the live readings: their batches are recorded by now.
    for n in 10..total {
        tokio::time::timeout(GUARD, tape.recv())
            .await
            .with_context(|| {
                format!("the recorder got {} live readings, then nothing", n - 10)
            })??;
    }

    let path = args.out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("history-{}.rec", std::process::id()))
    });
    let mut file = FILE_MAGIC.to_vec();
    while let Ok(record) = records.try_recv() {
        file.extend(record.encode());
    }
    std::fs::write(&path, &file).with_context(|| format!("cannot write {}", path.display()))?;
    let report = audit(&file)?;
    let signer = report.signers.get(&sensor_key);
    let recorded: Vec<u64> = messages(&file)?
        .into_iter()
        .map(|m| Reading::decode(m.payload).map(|r| r.seq))
        .collect::<Result<_, _>>()?;
    ensure!(
        recorded.len() as u64 == args.readings,
        "recorded {recorded:?}"
    );
    println!("recording written to {}", path.display());
    for router in [recorder, display, sensor] {
        router.close().await;
    }
    Ok(Report {
        display: seen,
        recorded,
        verified: signer.map_or(0, |s| s.verified),
        failed: signer.map_or(0, |s| s.failed),
    })
}

fn reading(seq: u64) -> Reading {
    Reading {
        seq,
        celsius: 20.0 + (seq % 10) as f32 / 10.0,
    }
}
