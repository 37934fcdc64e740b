//! A mesh connection black-holed for good, through a TCP proxy written here: the proxy stops
//! forwarding the connection's bytes in both directions yet keeps both sockets open (no FIN,
//! no RST), while new connections through it work. The dndm session notices the silence, the
//! mesh gives up on that libp2p connection and dials a new one, and a reliable route resumes
//! on it with nothing lost, duplicated or reordered.
//!
//! b is configured with the proxy's address only, so its redial of that address goes through
//! the proxy; b also learns a's own listen address over identify, and libp2p may reach a there
//! too (the session then runs on whichever connection it opened on first).

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dndm_core::{Keypair, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint};
use dndm_router::{Intent, Overflow, PublishOptions, Router, SubscribeOptions};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use support::Reading;

/// A failure guard only: every wait ends as soon as its event happens.
const GUARD: Duration = Duration::from_secs(60);
/// Messages received before the black hole.
const BEFORE: u64 = 3_000;
/// Messages received after the new connection came up: more than b can hold from before the
/// black hole (its subscriber queue and a's route window), so they crossed the new connection.
const AFTER: u64 = 10_000;
/// A stream that goes on this far without b redialing the proxy never replaced the black-holed
/// connection's configured address (a failure, not a hang: the stream may flow on a direct
/// connection meanwhile).
const LIMIT: u64 = 1_000_000;

/// A TCP proxy to one target that can black-hole the connections it has accepted so far.
struct Proxy {
    addr: SocketAddr,
    /// Connections accepted so far; connection `n` is the `n`-th, from 0.
    accepted: watch::Sender<u64>,
    /// Connections numbered below this forward nothing more, ever, and stay open.
    holed_below: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            accepted: watch::Sender::new(0),
            holed_below: watch::Sender::new(0),
        });
        let this = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let number = *this.accepted.borrow();
                this.accepted.send_modify(|n| *n += 1);
                let (client_rx, client_tx) = client.into_split();
                let (server_rx, server_tx) = server.into_split();
                tokio::spawn(forward(
                    client_rx,
                    server_tx,
                    number,
                    this.holed_below.subscribe(),
                ));
                tokio::spawn(forward(
                    server_rx,
                    client_tx,
                    number,
                    this.holed_below.subscribe(),
                ));
            }
        });
        proxy
    }

    /// The proxy's address as a libp2p address of `peer`.
    fn multiaddr(&self, peer: libp2p::PeerId) -> Multiaddr {
        let SocketAddr::V4(addr) = self.addr else {
            panic!("the proxy listens on IPv4")
        };
        Multiaddr::empty()
            .with(Protocol::Ip4(*addr.ip()))
            .with(Protocol::Tcp(addr.port()))
            .with(Protocol::P2p(peer))
    }

    /// Black-holes every connection accepted so far, for good; returns how many there are.
    fn black_hole_current(&self) -> u64 {
        let accepted = *self.accepted.borrow();
        self.holed_below.send_replace(accepted);
        accepted
    }

    fn accepted(&self) -> u64 {
        *self.accepted.borrow()
    }
}

/// Copies `from` to `to` until connection `number` is black-holed; then holds the chunk it
/// read and both sockets, reading and writing nothing more, until the runtime ends.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    number: u64,
    mut holed_below: watch::Receiver<u64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Stop reading too: the sender's buffers fill, as on a dead path.
            _ = holed_below.wait_for(|&below| number < below) => break,
        };
        if number < *holed_below.borrow() || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    // The sockets stay open (this task holds them) and silent.
    std::future::pending::<()>().await;
    drop((from, to));
}

fn libp2p_peer(peer: dndm_core::PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(&peer.to_bytes()).unwrap()
}

/// A TCP mesh node without mDNS whose sessions notice silence quickly.
fn config() -> MeshConfig {
    let mut config = MeshConfig::default();
    config.mdns = false;
    config.remote.session.keepalive = Duration::from_millis(100);
    config.remote.session.idle_timeout = Duration::from_secs(1);
    config.remote.backoff_initial = Duration::from_millis(10);
    config.remote.backoff_max = Duration::from_millis(200);
    config
}

async fn black_holed_connection_is_replaced(seed_a: u8, seed_b: u8) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
        .try_init();
    // a listens on loopback; b is configured with the proxy's address only.
    let a = Router::builder()
        .name("a")
        .send_timeout(GUARD)
        .build()
        .unwrap();
    let mut config_a = config();
    config_a.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    let ea = MeshEndpoint::new(Keypair::from_seed([seed_a; 32]), config_a).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let listening = tokio::time::timeout(GUARD, ea.wait_listening())
        .await
        .expect("a listens");
    let target = listening
        .iter()
        .find_map(|addr| {
            let mut parts = addr.iter();
            match (parts.next(), parts.next()) {
                (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) => {
                    Some(SocketAddr::from((ip, port)))
                }
                _ => None,
            }
        })
        .expect("a TCP listen address");
    let proxy = Proxy::start(target).await;
    tracing::info!(%target, proxy = %proxy.addr, "a and its proxy");

    let b = Router::builder().name("b").build().unwrap();
    let mut config_b = config();
    config_b.dial = vec![proxy.multiaddr(libp2p_peer(ea.peer_id()))];
    let eb = MeshEndpoint::new(Keypair::from_seed([seed_b; 32]), config_b).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();

    let publisher = a
        .publish_with::<Reading>(
            "faults.stream",
            PublishOptions::default().qos(Qos::reliable()),
        )
        .unwrap();
    let lossless = SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block);
    let mut subscriber = b
        .subscribe_with::<Reading>("faults.stream", lossless)
        .unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();

    // a publishes until told to stop, through the black hole and after it.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                publisher.send(Reading { seq }).await.unwrap();
                seq += 1;
            }
            (publisher, seq)
        }
    });
    tokio::pin!(sender);
    enum Step {
        Got(u64),
        // The publisher stays alive until everything it sent has arrived.
        Sent(Intent<Reading>, u64),
    }
    // The connections black-holed, and how far b had got then.
    let mut holed: Option<(u64, u64)> = None;
    let mut resumed_at: Option<u64> = None;
    let (mut total, mut expected) = (None, 0u64);
    let mut _publisher = None;
    while total != Some(expected) {
        let step = tokio::time::timeout(GUARD, async {
            tokio::select! {
                got = subscriber.recv() => Step::Got(got.expect("subscriber open").seq),
                sent = &mut sender, if total.is_none() => {
                    let (publisher, n) = sent.expect("sender task");
                    Step::Sent(publisher, n)
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no progress after message {expected}: black-holed {holed:?}, proxy accepted {}, \
                 b's links {:?}, b's peers {:?}, a's links {:?}",
                proxy.accepted(),
                eb.links(),
                eb.mesh_peers(),
                ea.links()
            )
        });
        match step {
            Step::Got(seq) => {
                assert_eq!(seq, expected, "0 lost, 0 duplicated, in order");
                expected += 1;
            }
            Step::Sent(publisher, n) => {
                _publisher = Some(publisher);
                total = Some(n);
                continue;
            }
        }
        match holed {
            None if expected >= BEFORE => {
                holed = Some((proxy.black_hole_current(), expected));
                tracing::info!(?holed, "black hole");
            }
            // The stream goes on only once b opened a new connection through the proxy (a
            // message received before that was already past the black hole when it opened).
            Some((connections, _)) if resumed_at.is_none() && proxy.accepted() > connections => {
                resumed_at = Some(expected);
                tracing::info!(expected, "new connection through the proxy");
            }
            _ => {}
        }
        assert!(
            expected < LIMIT,
            "no new connection through the proxy after {LIMIT} messages"
        );
        if resumed_at.is_some_and(|at| expected >= at + AFTER) {
            stop.store(true, Ordering::Relaxed);
        }
    }
    let (connections, _) = holed.expect("black-holed");
    assert!(
        proxy.accepted() > connections,
        "the stream resumed on a new connection through the proxy"
    );
    b.close().await;
    a.close().await;
}

// The side with the lower PeerId opens the dndm stream: each side takes that role once.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_replaced_and_the_stream_resumes() {
    black_holed_connection_is_replaced(1, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_replaced_with_the_roles_swapped() {
    black_holed_connection_is_replaced(2, 1).await;
}
