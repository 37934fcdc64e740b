//! Zenoh 1.x in peer mode over TCP on 127.0.0.1: multicast scouting off, the parent connects
//! to the child's explicit endpoint.
//!
//! Publishers use `CongestionControl::Block` (a full transmit queue makes `put` wait, as a
//! dndm reliable route waits for its window). Reliability is Zenoh's default,
//! `Reliability::Reliable` (setting it explicitly needs Zenoh's `unstable` feature, which this
//! crate leaves off). Subscribers use a FIFO channel of [`SUBSCRIBER_CAPACITY`], which blocks
//! Zenoh's receive path when full, as a dndm `Overflow::Block` subscriber does; the subscriber
//! task takes every sample out of it like an application would.

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use zenoh::Session;
use zenoh::handlers::{FifoChannel, FifoChannelHandler};
use zenoh::pubsub::{Publisher, Subscriber};
use zenoh::qos::CongestionControl;
use zenoh::sample::Sample;

use crate::Link;
use crate::harness::{Counter, GUARD, report};

/// Capacity of every subscriber's channel (the same as the dndm subscribers').
const SUBSCRIBER_CAPACITY: usize = 4096;
/// Key of the data messages.
const DATA: &str = "peers/data";
/// Key of pings (parent to child).
const PING: &str = "peers/ping";
/// Key of pongs (child to parent).
const PONG: &str = "peers/pong";

/// A Zenoh config for peer mode on loopback: listen on `listen`, connect to `connect` if set.
fn config(listen: &str, connect: Option<&str>) -> anyhow::Result<zenoh::Config> {
    let mut config = zenoh::Config::default();
    let set = |config: &mut zenoh::Config, key: &str, value: String| {
        config
            .insert_json5(key, &value)
            .map_err(|e| anyhow!("zenoh config {key} = {value}: {e}"))
    };
    set(&mut config, "mode", r#""peer""#.into())?;
    set(&mut config, "scouting/multicast/enabled", "false".into())?;
    set(&mut config, "listen/endpoints", format!(r#"["{listen}"]"#))?;
    if let Some(connect) = connect {
        set(
            &mut config,
            "connect/endpoints",
            format!(r#"["{connect}"]"#),
        )?;
    }
    Ok(config)
}

async fn open(config: zenoh::Config) -> anyhow::Result<Session> {
    zenoh::open(config)
        .await
        .map_err(|e| anyhow!("opening the zenoh session: {e}"))
}

async fn publisher(session: &Session, key: &'static str) -> anyhow::Result<Publisher<'static>> {
    session
        .declare_publisher(key)
        .congestion_control(CongestionControl::Block)
        .await
        .map_err(|e| anyhow!("declaring publisher {key}: {e}"))
}

async fn subscriber(
    session: &Session,
    key: &'static str,
) -> anyhow::Result<Subscriber<FifoChannelHandler<Sample>>> {
    session
        .declare_subscriber(key)
        .with(FifoChannel::new(SUBSCRIBER_CAPACITY))
        .await
        .map_err(|e| anyhow!("declaring subscriber {key}: {e}"))
}

/// Waits until `publisher` has a matching subscriber (the other process declared it and the
/// declaration arrived), within [`GUARD`].
async fn wait_matching(publisher: &Publisher<'_>) -> anyhow::Result<()> {
    let wait = async {
        let listener = publisher
            .matching_listener()
            .await
            .map_err(|e| anyhow!("matching listener: {e}"))?;
        if publisher
            .matching_status()
            .await
            .map_err(|e| anyhow!("matching status: {e}"))?
            .matching()
        {
            return Ok(());
        }
        loop {
            let status = listener
                .recv_async()
                .await
                .map_err(|e| anyhow!("matching listener closed: {e}"))?;
            if status.matching() {
                return Ok(());
            }
        }
    };
    tokio::time::timeout(GUARD, wait).await.map_err(|_| {
        anyhow!(
            "no zenoh subscriber for {} within {GUARD:?}",
            publisher.key_expr()
        )
    })?
}

/// A free TCP port on 127.0.0.1 (Zenoh's own listener address is only readable through its
/// unstable API, so the child picks the port up front).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Child: subscribes to data and pings, echoes pings, until stdin closes.
pub(crate) async fn serve(counter: Counter) -> anyhow::Result<()> {
    let stdin_closed = counter.serve_stdin();
    let endpoint = format!("tcp/127.0.0.1:{}", free_port()?);
    let session = open(config(&endpoint, None)?).await?;
    let data = subscriber(&session, DATA).await?;
    let ping = subscriber(&session, PING).await?;
    let pong = publisher(&session, PONG).await?;
    report(&format!("listen {endpoint}"));
    let counting = tokio::spawn(async move {
        while let Ok(sample) = data.recv_async().await {
            std::hint::black_box(sample.payload().len());
            counter.hit();
        }
    });
    let echo = tokio::spawn(async move {
        wait_matching(&pong).await?;
        while let Ok(sample) = ping.recv_async().await {
            pong.put(sample.payload().clone())
                .await
                .map_err(|e| anyhow!("pong: {e}"))?;
        }
        anyhow::Ok(())
    });
    let _ = stdin_closed.await;
    session
        .close()
        .await
        .map_err(|e| anyhow!("closing the zenoh session: {e}"))?;
    counting.abort();
    echo.abort();
    Ok(())
}

/// Parent: publishes data and pings, receives pongs.
#[derive(Debug)]
pub(crate) struct ZenohLink {
    session: Session,
    data: Publisher<'static>,
    ping: Publisher<'static>,
    pong: Subscriber<FifoChannelHandler<Sample>>,
}

impl ZenohLink {
    /// Opens a peer session connected to the child's `endpoint` and waits until the child's
    /// subscribers are known.
    pub(crate) async fn connect(endpoint: &str) -> anyhow::Result<Self> {
        let session = open(config("tcp/127.0.0.1:0", Some(endpoint))?).await?;
        let pong = subscriber(&session, PONG).await?;
        let data = publisher(&session, DATA).await?;
        let ping = publisher(&session, PING).await?;
        wait_matching(&data).await.context("data")?;
        wait_matching(&ping).await.context("ping")?;
        Ok(Self {
            session,
            data,
            ping,
            pong,
        })
    }
}

impl Link for ZenohLink {
    async fn send(&mut self, _seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.data
            .put(payload)
            .await
            .map_err(|e| anyhow!("zenoh put: {e}"))
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn round_trip(&mut self, _seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.ping
            .put(payload)
            .await
            .map_err(|e| anyhow!("zenoh ping: {e}"))?;
        self.pong
            .recv_async()
            .await
            .map_err(|e| anyhow!("zenoh pong: {e}"))?;
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        self.session
            .close()
            .await
            .map_err(|e| anyhow!("closing the zenoh session: {e}"))
    }
}
