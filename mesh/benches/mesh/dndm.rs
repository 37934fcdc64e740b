//! The dndm side: a `MeshEndpoint` and a `Router` per process.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dndm_core::{Keypair, Message, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::{
    HandlerError, Intent, Interest, Overflow, PublishOptions, RequestError, Router,
    SubscribeOptions,
};

use crate::{
    CLOCK_EVERY, GUARD, MAX_ROUNDS, Payloads, QUEUE, REPS, Row, Rtt, SIZES, Settings, Throughput,
    announce, max_count, rtt_of, spawn_child, stop_child, wait_stdin_closed,
};

#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(bytes = "bytes", tag = "2")]
    data: Bytes,
    /// End of a throughput run: `seq` is the count (sent, or in the reply, received).
    #[prost(bool, tag = "3")]
    end: bool,
}

impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "bench";
}
impl Message for Blob {}

/// A session configuration: batch signing and zstd, each on or off.
#[derive(Clone, Copy)]
pub(crate) struct Case {
    sign: bool,
    zstd: bool,
}

impl Case {
    pub(crate) const ALL: [Case; 3] = [
        Case {
            sign: true,
            zstd: true,
        },
        Case {
            sign: true,
            zstd: false,
        },
        Case {
            sign: false,
            zstd: false,
        },
    ];

    pub(crate) fn name(self) -> String {
        format!(
            "dndm{}{}",
            if self.sign { "+sign" } else { "" },
            if self.zstd { "+zstd" } else { "" }
        )
    }

    pub(crate) fn parse(name: &str) -> Self {
        Self {
            sign: name.contains("+sign"),
            zstd: name.contains("+zstd"),
        }
    }

    fn config(self) -> MeshConfig {
        let mut config = MeshConfig::default();
        config.transport = Transport::Tcp;
        config.remote.session.signing = if self.sign {
            dndm_core::Signing::Batch
        } else {
            dndm_core::Signing::OnRequest
        };
        if !self.zstd {
            config.remote.session.compression = None;
        }
        config
    }
}

/// The two qualities of service measured, with their route suffixes.
const QOS: [(&str, Qos); 2] = [("be", Qos::best_effort()), ("rel", Qos::reliable())];

fn lossless() -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(QUEUE)
        .overflow(Overflow::Block)
}

fn with_qos(qos: Qos) -> PublishOptions {
    PublishOptions::default().qos(qos)
}

/// Child: counts data runs, echoes pings and requests until stdin closes.
pub(crate) async fn child(case: Case) {
    let router = Router::builder().name("sink").build().unwrap();
    let mut config = case.config();
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let endpoint = MeshEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    let done = Arc::new(
        router
            .publish_with::<Blob>("bench.done", with_qos(Qos::reliable()))
            .unwrap(),
    );
    let mut tasks = Vec::new();
    for (suffix, qos) in QOS {
        let mut data = router
            .subscribe_with::<Blob>(&format!("bench.data.{suffix}"), lossless())
            .unwrap();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut count = 0u64;
            while let Ok(m) = data.recv().await {
                if !m.end {
                    count += 1;
                    continue;
                }
                let reply = Blob {
                    seq: count,
                    data: Bytes::new(),
                    end: true,
                };
                if done.send(reply).await.is_err() {
                    return;
                }
                count = 0;
            }
        }));
        let mut ping = router
            .subscribe_with::<Blob>(&format!("bench.ping.{suffix}"), lossless())
            .unwrap();
        let pong = router
            .publish_with::<Blob>(&format!("bench.pong.{suffix}"), with_qos(qos))
            .unwrap();
        tasks.push(tokio::spawn(async move {
            while let Ok(m) = ping.recv().await {
                if pong.send_arc(m).await.is_err() {
                    return;
                }
            }
        }));
    }
    let _echo = router
        .serve::<Blob, Blob, _, _>(
            "bench.echo",
            |b: Blob| async move { Ok::<_, HandlerError>(b) },
        )
        .unwrap();
    let addr = tokio::time::timeout(GUARD, endpoint.wait_listening())
        .await
        .expect("the mesh listens")
        .remove(0);
    announce(&addr);
    wait_stdin_closed().await;
    router.close().await;
    for task in tasks {
        let _ = task.await;
    }
}

async fn throughput(
    data: &Intent<Blob>,
    done: &mut Interest<Blob>,
    endpoint: &MeshEndpoint,
    size: usize,
    settings: Settings,
) -> Throughput {
    let sent_counters = || {
        endpoint
            .links()
            .first()
            .map(|l| {
                (
                    l.stats.messages_sent,
                    l.stats.batches_sent,
                    l.stats.bytes_sent,
                )
            })
            .unwrap_or_default()
    };
    let mut payloads = Payloads::new(size);
    let max = max_count(size);
    let run_time = settings.run_time();
    let before = sent_counters();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < max {
        data.send(Blob {
            seq: sent,
            data: payloads.next(),
            end: false,
        })
        .await
        .unwrap();
        sent += 1;
        if sent.is_multiple_of(CLOCK_EVERY) && start.elapsed() >= run_time {
            break;
        }
    }
    data.send(Blob {
        seq: sent,
        data: Bytes::new(),
        end: true,
    })
    .await
    .unwrap();
    let reply = tokio::time::timeout(GUARD, done.recv())
        .await
        .expect("the child reports its count")
        .unwrap();
    let elapsed = start.elapsed();
    let after = sent_counters();
    Throughput {
        sent,
        received: reply.seq,
        elapsed,
        per_batch: Some((after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64),
        wire_per_msg: Some((after.2 - before.2) as f64 / (after.0 - before.0).max(1) as f64),
    }
}

async fn rtt(ping: &Intent<Blob>, pong: &mut Interest<Blob>, settings: Settings) -> Rtt {
    let mut samples = Vec::with_capacity(MAX_ROUNDS);
    let data = Payloads::new(8).next();
    let series = Instant::now();
    for seq in 0..MAX_ROUNDS as u64 {
        let start = Instant::now();
        ping.send(Blob {
            seq,
            data: data.clone(),
            end: false,
        })
        .await
        .unwrap();
        let echo = tokio::time::timeout(GUARD, pong.recv())
            .await
            .expect("the child echoes")
            .unwrap();
        samples.push(start.elapsed());
        assert_eq!(echo.seq, seq);
        if series.elapsed() >= settings.rtt_time() {
            break;
        }
    }
    rtt_of(samples)
}

async fn request_rtt(router: &Router, settings: Settings) -> Rtt {
    let data = Payloads::new(8).next();
    // The service ad travels with the routes; wait until this router knows it.
    tokio::time::timeout(GUARD, async {
        loop {
            let probe = Blob::default();
            match router
                .request::<Blob, Blob>("bench.echo", probe, GUARD)
                .await
            {
                Err(RequestError::NoListener(_)) => tokio::task::yield_now().await,
                other => return other.unwrap(),
            }
        }
    })
    .await
    .expect("the child's service is known");
    let mut samples = Vec::with_capacity(MAX_ROUNDS);
    let series = Instant::now();
    for seq in 0..MAX_ROUNDS as u64 {
        let start = Instant::now();
        let request = Blob {
            seq,
            data: data.clone(),
            end: false,
        };
        let answer = router
            .request::<Blob, Blob>("bench.echo", request, GUARD)
            .await
            .unwrap();
        samples.push(start.elapsed());
        assert_eq!(answer.seq, seq);
        if series.elapsed() >= settings.rtt_time() {
            break;
        }
    }
    rtt_of(samples)
}

/// Parent side of one session configuration: a best-effort row and a reliable row.
pub(crate) async fn bench(case: Case, settings: Settings) -> Vec<Row> {
    let (child, addr) = spawn_child(&case.name());
    let router = Router::builder().name("source").build().unwrap();
    let mut config = case.config();
    config.dial = vec![addr];
    let endpoint = MeshEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    let mut done = router
        .subscribe_with::<Blob>("bench.done", lossless())
        .unwrap();
    let mut rows = Vec::new();
    let mut handles = Vec::new();
    for (suffix, qos) in QOS {
        let data = router
            .publish_with::<Blob>(&format!("bench.data.{suffix}"), with_qos(qos))
            .unwrap();
        let ping = router
            .publish_with::<Blob>(&format!("bench.ping.{suffix}"), with_qos(qos))
            .unwrap();
        let pong = router
            .subscribe_with::<Blob>(&format!("bench.pong.{suffix}"), lossless())
            .unwrap();
        handles.push((suffix, data, ping, pong));
    }
    for (_, data, ping, _) in &handles {
        data.wait_for_interest(GUARD).await.unwrap();
        ping.wait_for_interest(GUARD).await.unwrap();
    }
    for (suffix, data, ping, pong) in &mut handles {
        let mut runs = Vec::new();
        for size in SIZES {
            settings.progress(&format!("{} {suffix} {size} B", case.name()));
            let mut reps = Vec::new();
            for _ in 0..REPS {
                reps.push(throughput(data, &mut done, &endpoint, size, settings).await);
            }
            runs.push(Throughput::median(reps));
        }
        let rtt = rtt(ping, pong, settings).await;
        let request = if *suffix == "rel" {
            Some(request_rtt(&router, settings).await)
        } else {
            None
        };
        let qos = if *suffix == "rel" {
            "reliable"
        } else {
            "best-effort"
        };
        rows.push(Row {
            name: format!("{} {qos}", case.name()),
            runs,
            rtt,
            request,
            queue_full: None,
        });
    }
    drop(handles);
    router.close().await;
    stop_child(child);
    rows
}
