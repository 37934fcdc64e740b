//! Reliable delivery over real sockets through a fault-injecting TCP proxy: the proxy cuts every
//! connection again and again and blackholes redials for a while; 100,000 reliable messages
//! still arrive exactly once, in order. A network that goes silent (no FIN, no RST) is detected
//! by both ends, and the stream resumes without loss once it is back.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dndm_core::{Keypair, Qos};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{Intent, Interest, Overflow, PublishOptions, Router, SubscribeOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use support::Reading;

const GUARD: Duration = Duration::from_secs(30);
const MESSAGES: u64 = 100_000;
const CUT_EVERY: u64 = 10_000;

/// A TCP proxy that can cut all its connections and refuse new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    /// Bumped to cut every open connection.
    generation: watch::Sender<u64>,
    /// While true, new connections are accepted and dropped at once.
    blackhole: watch::Sender<bool>,
    /// While true, no byte is forwarded either way, yet every connection stays open: a
    /// network gone silent, with no FIN or RST to tell the ends.
    stall: watch::Sender<bool>,
    /// Connections dropped by the blackhole; notifies on each.
    refused: AtomicU64,
    refused_event: Notify,
    /// With a limit, each connection is cut once this many bytes went through it (both ways).
    cut_every: Option<u64>,
    /// Connections cut by that limit.
    budget_cuts: AtomicU64,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr) -> Arc<Self> {
        Self::start_with(target, None).await
    }

    /// A proxy that also cuts each connection after `cut_every` bytes, if given.
    async fn start_with(target: std::net::SocketAddr, cut_every: Option<u64>) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Arc::new(Self {
            addr: listener.local_addr().unwrap(),
            generation: watch::Sender::new(0),
            blackhole: watch::Sender::new(false),
            stall: watch::Sender::new(false),
            refused: AtomicU64::new(0),
            refused_event: Notify::new(),
            cut_every,
            budget_cuts: AtomicU64::new(0),
        });
        let this = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *this.blackhole.borrow() {
                    drop(client);
                    this.refused.fetch_add(1, Ordering::SeqCst);
                    this.refused_event.notify_waiters();
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let mut cut = this.generation.subscribe();
                let (client_rx, client_tx) = client.into_split();
                let (server_rx, server_tx) = server.into_split();
                let budget = Arc::new(Budget {
                    left: AtomicU64::new(this.cut_every.unwrap_or(u64::MAX)),
                    spent: Notify::new(),
                });
                let up = forward(client_rx, server_tx, this.stall.subscribe(), budget.clone());
                let down = forward(server_rx, client_tx, this.stall.subscribe(), budget.clone());
                let this = this.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = cut.changed() => {}
                        () = budget.spent.notified() => {}
                    }
                    if budget.left.load(Ordering::SeqCst) == 0 {
                        this.budget_cuts.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        proxy
    }

    fn cut_all(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// Bytes a connection may still carry before the proxy cuts it.
struct Budget {
    left: AtomicU64,
    /// Notified (permit stored) when the budget runs out.
    spent: Notify,
}

/// Copies `from` to `to`, holding each chunk while the proxy is stalled; stops (and tells the
/// connection to end) when the budget runs out, forwarding only what fits in it.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stall: watch::Receiver<bool>,
    budget: Arc<Budget>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else {
            return;
        };
        if n == 0 || stall.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        let left = budget
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                Some(left.saturating_sub(n as u64))
            })
            .unwrap_or(0);
        let pass = (n as u64).min(left) as usize;
        if to.write_all(&buf[..pass]).await.is_err() {
            return;
        }
        if pass < n || left == n as u64 {
            budget.spent.notify_one();
            return;
        }
    }
}

/// Router a listens, router b dials it through a [`Proxy`]; a streams `count` readings to b on
/// a reliable route into a lossless queue, and b checks each arrives exactly once, in order.
struct Stream {
    a: Router,
    b: Router,
    ea: RemoteEndpoint,
    eb: RemoteEndpoint,
    proxy: Arc<Proxy>,
    /// How many readings b has received (the controller acts on progress, never on time).
    progress: watch::Receiver<u64>,
    sender: Option<JoinHandle<Intent<Reading>>>,
    consumer: Option<JoinHandle<Interest<Reading>>>,
}

impl Stream {
    /// Starts the stream; `tune` adjusts both endpoints' settings, and b redials from 10 ms
    /// up to `backoff_max`.
    async fn start(
        route: &str,
        count: u64,
        backoff_max: Duration,
        tune: impl Fn(&mut RemoteConfig),
    ) -> Stream {
        let a = Router::builder().name("a").build().unwrap();
        let b = Router::builder().name("b").build().unwrap();
        let mut config = RemoteConfig::default();
        config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
        tune(&mut config);
        let ea = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
        a.attach(Arc::new(ea.clone())).await.unwrap();
        let Target::Tcp(a_addr) = ea.bound().remove(0) else {
            panic!("tcp")
        };
        let proxy = Proxy::start(a_addr).await;

        let mut config = RemoteConfig::default();
        config.dial = vec![Target::Tcp(proxy.addr)];
        config.backoff_initial = Duration::from_millis(10);
        config.backoff_max = backoff_max;
        tune(&mut config);
        let eb = RemoteEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
        b.attach(Arc::new(eb.clone())).await.unwrap();

        // Back-pressure, not loss: the publisher may wait out any outage here.
        let reliable = PublishOptions::default()
            .qos(Qos::reliable())
            .send_timeout(GUARD);
        let publisher = a.publish_with::<Reading>(route, reliable).unwrap();
        // Lossless end to end: the network is reliable, and the local queue blocks instead of
        // dropping (back-pressure reaches the link, then the publisher).
        let lossless = SubscribeOptions::default()
            .capacity(1024)
            .overflow(Overflow::Block);
        let mut subscriber = b.subscribe_with::<Reading>(route, lossless).unwrap();
        publisher.wait_for_interest(GUARD).await.unwrap();

        let sender = tokio::spawn(async move {
            for seq in 0..count {
                publisher.send(Reading { seq }).await.unwrap();
            }
            publisher
        });
        let (progress_tx, progress) = watch::channel(0u64);
        let consumer = tokio::spawn(async move {
            for expected in 0..count {
                let got = tokio::time::timeout(GUARD, subscriber.recv())
                    .await
                    .expect("progress")
                    .unwrap();
                assert_eq!(got.seq, expected, "exactly once, in order");
                progress_tx.send_replace(expected + 1);
            }
            subscriber
        });
        Stream {
            a,
            b,
            ea,
            eb,
            proxy,
            progress,
            sender: Some(sender),
            consumer: Some(consumer),
        }
    }

    /// Waits until b has received `n` readings.
    async fn reached(&mut self, n: u64) {
        tokio::time::timeout(GUARD, self.progress.wait_for(|&got| got >= n))
            .await
            .expect("progress")
            .unwrap();
    }

    /// Waits for the whole stream and checks nothing extra arrived.
    async fn finish(&mut self) {
        let consumer = self.consumer.take().expect("finished once");
        let mut subscriber = tokio::time::timeout(GUARD, consumer)
            .await
            .unwrap()
            .unwrap();
        let sender = self.sender.take().expect("finished once");
        let _publisher = tokio::time::timeout(GUARD, sender).await.unwrap().unwrap();
        assert_eq!(
            subscriber.try_recv().ok().map(|r| r.seq),
            None,
            "nothing extra"
        );
    }

    async fn close(self) {
        self.a.close().await;
        self.b.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reliable_route_survives_cuts_and_blackholes_through_a_proxy() {
    if std::env::var("DNDM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
            .try_init();
    }
    let mut stream = Stream::start("stream", MESSAGES, Duration::from_millis(200), |_| {}).await;
    let proxy = stream.proxy.clone();
    let mut cuts = 0;
    for point in (CUT_EVERY..MESSAGES).step_by(CUT_EVERY as usize) {
        stream.reached(point).await;
        cuts += 1;
        if cuts % 3 == 0 {
            // Blackhole: the redials fail until three were refused, then let them through.
            proxy.blackhole.send_replace(true);
            proxy.cut_all();
            let target = proxy.refused.load(Ordering::SeqCst) + 3;
            tokio::time::timeout(GUARD, async {
                loop {
                    let notified = proxy.refused_event.notified();
                    if proxy.refused.load(Ordering::SeqCst) >= target {
                        break;
                    }
                    notified.await;
                }
            })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the dialer kept retrying: refused {} of {target}, {:?}",
                    proxy.refused.load(Ordering::SeqCst),
                    stream.eb.stats()
                )
            });
            proxy.blackhole.send_replace(false);
        } else {
            proxy.cut_all();
        }
    }
    stream.finish().await;
    assert_eq!(cuts, (MESSAGES - 1) / CUT_EVERY);
    let stats = stream.eb.stats();
    assert!(stats.link_failures >= cuts, "every cut was seen: {stats:?}");
    assert!(
        stats.handshake_failures + stats.dial_failures >= 3,
        "blackholed dials failed: {stats:?}"
    );
    stream.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_gone_silent_is_detected_and_the_stream_resumes_without_loss() {
    const COUNT: u64 = 20_000;
    // Short keepalive and idle timeout, so silence is noticed quickly.
    let mut stream = Stream::start("quiet", COUNT, Duration::from_millis(100), |config| {
        config.session.keepalive = Duration::from_millis(50);
        config.session.idle_timeout = Duration::from_millis(400);
        config.handshake_timeout = Duration::from_millis(400);
    })
    .await;

    // Mid-stream the network goes silent: nothing is closed, nothing gets through.
    stream.reached(COUNT / 4).await;
    let (ea, eb) = (&stream.ea, &stream.eb);
    let before = (ea.stats().link_failures, eb.stats().link_failures);
    stream.proxy.stall.send_replace(true);
    // Both ends notice on their own (idle timeout or a write that stalls), with no FIN or RST.
    for (endpoint, failures) in [(ea, before.0), (eb, before.1)] {
        let mut changes = endpoint.link_changes();
        tokio::time::timeout(GUARD, async {
            while endpoint.stats().link_failures <= failures {
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("the silent link is detected");
    }
    // The network comes back; the stalled connections are gone for good.
    stream.proxy.cut_all();
    stream.proxy.stall.send_replace(false);
    stream.finish().await;
    stream.close().await;
}

/// A reading with a payload that does not compress.
#[derive(Clone, PartialEq, prost::Message)]
struct Blob {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

impl prost::Name for Blob {
    const NAME: &'static str = "Blob";
    const PACKAGE: &'static str = "test";
}
impl dndm_core::Message for Blob {}

/// `len` bytes of noise derived from `seed` (xorshift), so zstd cannot shrink them.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = (seed + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_resets_every_50_kb_still_delivers_everything_in_order() {
    const COUNT: u64 = 10_000;
    const CUT_EVERY_BYTES: u64 = 50_000;
    let a = Router::builder().name("a").build().unwrap();
    let b = Router::builder().name("b").build().unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    let ea = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let Target::Tcp(a_addr) = ea.bound().remove(0) else {
        panic!("tcp")
    };
    let proxy = Proxy::start_with(a_addr, Some(CUT_EVERY_BYTES)).await;
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::Tcp(proxy.addr)];
    config.backoff_initial = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(20);
    // Cuts are the path, not the peer: never give up dialing.
    config.breaker_threshold = u32::MAX;
    let eb = RemoteEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();

    let reliable = PublishOptions::default()
        .qos(Qos::reliable())
        .send_timeout(GUARD * 10);
    let publisher = a.publish_with::<Blob>("blobs", reliable).unwrap();
    let lossless = SubscribeOptions::default()
        .capacity(COUNT as usize)
        .overflow(Overflow::Block);
    let mut subscriber = b.subscribe_with::<Blob>("blobs", lossless).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    let sender = tokio::spawn(async move {
        for seq in 0..COUNT {
            publisher
                .send(Blob {
                    seq,
                    data: noise(seq, 600),
                })
                .await
                .unwrap();
        }
        publisher
    });
    for seq in 0..COUNT {
        let got = tokio::time::timeout(GUARD * 10, subscriber.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "stuck at {seq} after {} cuts: a {:?} b {:?}",
                    proxy.budget_cuts.load(Ordering::SeqCst),
                    ea.links(),
                    eb.stats()
                )
            })
            .unwrap();
        assert_eq!(got.seq, seq, "in order, exactly once");
        assert_eq!(got.data, noise(seq, 600));
    }
    let publisher = tokio::time::timeout(GUARD, sender).await.unwrap().unwrap();
    assert_eq!(publisher.undelivered(), 0);
    assert_eq!(
        subscriber.try_recv().ok().map(|r| r.seq),
        None,
        "nothing extra"
    );
    let cuts = proxy.budget_cuts.load(Ordering::SeqCst);
    assert!(cuts >= 100, "the path was cut {cuts} times");
    a.close().await;
    b.close().await;
}
