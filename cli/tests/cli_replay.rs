//! Replaying a recording: `dndm demo --record` records the sensors; `dndm replay` publishes
//! the recording onto a fresh mesh node, which receives exactly the recorded messages, in each
//! publisher's order. The replay needs no schema (this test's subscriber has the type; the
//! replayer moves encoded bytes).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dndm::mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm::{Keypair, Overflow, Router, SubscribeOptions};
use dndm_codec::record::messages;
use prost::Message as _;

const GUARD: Duration = Duration::from_secs(120);

/// The demo's IMU sample, declared alike (same name and fields, so the same fingerprint).
#[derive(Clone, PartialEq, prost::Message)]
struct Imu {
    #[prost(string, tag = "1")]
    sensor: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(float, tag = "3")]
    ax: f32,
    #[prost(float, tag = "4")]
    ay: f32,
    #[prost(float, tag = "5")]
    az: f32,
    #[prost(uint64, tag = "6")]
    sent_us: u64,
}

impl prost::Name for Imu {
    const NAME: &'static str = "Imu";
    const PACKAGE: &'static str = "dndm.demo";
}
impl dndm::Message for Imu {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_delivers_exactly_the_recorded_messages_in_each_publishers_order() {
    let path = std::env::temp_dir().join(format!("dndm-replay-{}.rec", std::process::id()));
    let demo = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["demo", "--nodes", "3", "--messages", "2000", "--record"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(demo.status.success(), "{demo:?}");
    let data = std::fs::read(&path).unwrap();
    // What the recording holds, per sensor, in order.
    let mut recorded: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in messages(&data).unwrap() {
        let imu = Imu::decode(m.payload).unwrap();
        recorded.entry(imu.sensor).or_default().push(imu.seq);
    }
    let total: usize = recorded.values().map(Vec::len).sum();
    assert!(total > 0);

    // A fresh node with a lossless subscriber.
    let router = Router::builder().name("fresh").build().unwrap();
    let mut config = MeshConfig::default();
    config.transport = Transport::Tcp;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    config.mdns = false;
    let mesh = MeshEndpoint::new(Keypair::generate().unwrap(), config).unwrap();
    router.attach(Arc::new(mesh.clone())).await.unwrap();
    let options = SubscribeOptions::default()
        .capacity(1 << 16)
        .overflow(Overflow::Block);
    let mut interest = router.subscribe_with::<Imu>("robot.**", options).unwrap();
    let address = tokio::time::timeout(GUARD, mesh.wait_listening())
        .await
        .unwrap()
        .first()
        .unwrap()
        .to_string();
    let bootstrap = format!("{address}/p2p/{}", mesh.peer_id());

    let replay = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_dndm"))
                .args(["replay", "--speed", "0", "--bootstrap", &bootstrap])
                .arg(&path)
                .output()
        })
    };
    let replay = tokio::time::timeout(GUARD, replay)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(replay.status.success(), "{replay:?}");

    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..total {
        let imu = tokio::time::timeout(GUARD, interest.recv())
            .await
            .unwrap()
            .unwrap();
        got.entry(imu.sensor.clone()).or_default().push(imu.seq);
    }
    assert_eq!(
        got, recorded,
        "exactly the recorded messages, in order per sensor"
    );
    assert!(interest.try_recv().is_err(), "nothing more");
    router.close().await;
    std::fs::remove_file(&path).unwrap();
}
