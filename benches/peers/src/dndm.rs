//! dndm's links: a remote link (Noise over TCP) and a mesh link (libp2p over TCP), each
//! between a router in the parent and one in the child.
//!
//! Data and pings are reliable routes; subscribers hold [`SUBSCRIBER_CAPACITY`] messages and
//! block when full (`Overflow::Block`), so nothing is dropped and the publisher feels
//! back-pressure through the route window.

use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use dndm_core::{Endpoint, Keypair, Message, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{Intent, Interest, Overflow, PublishOptions, Router, SubscribeOptions};

use crate::Link;
use crate::harness::{Counter, GUARD, report};

/// Capacity of every subscriber's queue (the same as the Zenoh subscribers').
const SUBSCRIBER_CAPACITY: usize = 4096;
/// Route of the data messages.
const DATA: &str = "peers.data";
/// Route of pings (parent to child).
const PING: &str = "peers.ping";
/// Route of pongs (child to parent).
const PONG: &str = "peers.pong";

/// The message every route carries.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Blob {
    /// Sequence number within a run.
    #[prost(uint64, tag = "1")]
    pub(crate) seq: u64,
    /// The payload.
    #[prost(bytes = "bytes", tag = "2")]
    pub(crate) data: Bytes,
}

impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "peers";
}

impl Message for Blob {}

/// Which dndm link joins the two routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A remote link with `RemoteConfig::default()`: Noise, signing on request (none between
    /// two default nodes), adaptive zstd.
    Remote,
    /// A remote link with signing and zstd turned off (Noise only).
    RemotePlain,
    /// A remote link that signs and verifies every batch (`remote.signing = "batch"`), with
    /// adaptive zstd.
    RemoteSigned,
    /// A mesh link with `MeshConfig::default()` apart from TCP, no mDNS and explicit
    /// addresses.
    Mesh,
}

impl Kind {
    fn remote_config(self) -> RemoteConfig {
        let mut config = RemoteConfig::default();
        if self == Self::RemotePlain {
            config.session.signing = dndm_core::Signing::Off;
            config.session.compression = None;
        }
        if self == Self::RemoteSigned {
            config.session.signing = dndm_core::Signing::Batch;
        }
        config
    }

    fn mesh_config() -> MeshConfig {
        let mut config = MeshConfig::default();
        config.transport = Transport::Tcp;
        config.mdns = false;
        config
    }
}

fn router(name: &str) -> anyhow::Result<Router> {
    Router::builder()
        .name(name)
        .send_timeout(GUARD)
        .build()
        .context("building the router")
}

fn subscribe(router: &Router, route: &str) -> anyhow::Result<Interest<Blob>> {
    let options = SubscribeOptions::default()
        .capacity(SUBSCRIBER_CAPACITY)
        .overflow(Overflow::Block);
    router
        .subscribe_with::<Blob>(route, options)
        .with_context(|| format!("subscribing to {route}"))
}

fn publish(router: &Router, route: &str) -> anyhow::Result<Intent<Blob>> {
    router
        .publish_with::<Blob>(route, PublishOptions::default().qos(Qos::reliable()))
        .with_context(|| format!("publishing on {route}"))
}

/// Child: listens, counts data, echoes pings, until stdin closes.
pub(crate) async fn serve(kind: Kind, counter: Counter) -> anyhow::Result<()> {
    let stdin_closed = counter.serve_stdin();
    let router = router("peers-child")?;
    let keypair = Keypair::from_seed([2; 32]);
    let address = match kind {
        Kind::Remote | Kind::RemotePlain | Kind::RemoteSigned => {
            let mut config = kind.remote_config();
            config.listen = vec![Target::Tcp(([127, 0, 0, 1], 0).into())];
            let endpoint = RemoteEndpoint::new(keypair, config)?;
            router.attach(Arc::new(endpoint.clone())).await?;
            match endpoint.bound().first() {
                Some(Target::Tcp(address)) => address.to_string(),
                other => anyhow::bail!("remote endpoint bound to {other:?}, not one TCP address"),
            }
        }
        Kind::Mesh => {
            let mut config = Kind::mesh_config();
            config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
            let endpoint = MeshEndpoint::new(keypair, config)?;
            router.attach(Arc::new(endpoint.clone())).await?;
            let listening = tokio::time::timeout(GUARD, endpoint.wait_listening())
                .await
                .map_err(|_| anyhow!("the mesh endpoint did not listen within {GUARD:?}"))?;
            let first = listening
                .first()
                .context("the mesh endpoint listens nowhere")?;
            format!("{first}/p2p/{}", endpoint.peer_id())
        }
    };
    let mut data = subscribe(&router, DATA)?;
    let mut ping = subscribe(&router, PING)?;
    let pong = publish(&router, PONG)?;
    report(&format!("listen {address}"));
    let counting = tokio::spawn(async move {
        while let Ok(blob) = data.recv().await {
            std::hint::black_box(blob.data.len());
            counter.hit();
        }
    });
    let echo = tokio::spawn(async move {
        pong.wait_for_interest(GUARD)
            .await
            .map_err(|e| anyhow!("no subscriber for pongs: {e}"))?;
        while let Ok(blob) = ping.recv().await {
            pong.send_arc(blob)
                .await
                .map_err(|e| anyhow!("pong: {e}"))?;
        }
        anyhow::Ok(())
    });
    let _ = stdin_closed.await;
    router.close().await;
    counting.abort();
    echo.abort();
    Ok(())
}

/// Parent: a router linked to the child's, publishing data and pings.
#[derive(Debug)]
pub(crate) struct DndmLink {
    router: Router,
    data: Intent<Blob>,
    ping: Intent<Blob>,
    pong: Interest<Blob>,
}

impl DndmLink {
    /// Dials the child at `address` and waits until its subscribers are known.
    pub(crate) async fn connect(kind: Kind, address: &str) -> anyhow::Result<Self> {
        let router = router("peers-parent")?;
        let keypair = Keypair::from_seed([1; 32]);
        let endpoint: Arc<dyn Endpoint> = match kind {
            Kind::Remote | Kind::RemotePlain | Kind::RemoteSigned => {
                let mut config = kind.remote_config();
                let address = address
                    .parse()
                    .with_context(|| format!("child address `{address}`"))?;
                config.dial = vec![Target::Tcp(address)];
                Arc::new(RemoteEndpoint::new(keypair, config)?)
            }
            Kind::Mesh => {
                let mut config = Kind::mesh_config();
                config.listen.clear();
                config.dial = vec![
                    address
                        .parse()
                        .with_context(|| format!("child address `{address}`"))?,
                ];
                Arc::new(MeshEndpoint::new(keypair, config)?)
            }
        };
        router.attach(endpoint).await?;
        let pong = subscribe(&router, PONG)?;
        let data = publish(&router, DATA)?;
        let ping = publish(&router, PING)?;
        for (intent, route) in [(&data, DATA), (&ping, PING)] {
            intent
                .wait_for_interest(GUARD)
                .await
                .map_err(|e| anyhow!("no subscriber for {route}: {e}"))?;
        }
        Ok(Self {
            router,
            data,
            ping,
            pong,
        })
    }
}

impl Link for DndmLink {
    async fn send(&mut self, seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.data
            .send(Blob { seq, data: payload })
            .await
            .map_err(|e| anyhow!("dndm send: {e}"))
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn round_trip(&mut self, seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.ping
            .send(Blob { seq, data: payload })
            .await
            .map_err(|e| anyhow!("dndm ping: {e}"))?;
        self.pong
            .recv()
            .await
            .map_err(|e| anyhow!("dndm pong: {e}"))?;
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        self.router.close().await;
        Ok(())
    }
}
