//! Links over in-memory streams in virtual time (`start_paused`): any byte stream carries a
//! link, and redials follow the backoff schedule and the circuit breaker exactly, with delays
//! that a jitter seed fixes.

#![allow(clippy::unwrap_used)]

mod support;
use dndm_test_support::send_and_receive_in_order;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dndm_core::Keypair;
use dndm_remote::endpoint::{ByteStream, Connector, RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{Router, SendErrorKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use support::Reading;

const GUARD: Duration = Duration::from_secs(600);

/// Always fails, and reports when each attempt happened.
#[derive(Debug)]
struct Refusing(mpsc::Sender<Instant>);

#[async_trait::async_trait]
impl Connector for Refusing {
    async fn connect(&self) -> std::io::Result<Box<dyn ByteStream>> {
        let _ = self.0.send(Instant::now()).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "nobody home",
        ))
    }
}

/// Dials through `connector` with backoff from 100 ms up to 1 s and a breaker that opens
/// after 5 failures for 10 s.
fn redialing(connector: Arc<dyn Connector>) -> RemoteConfig {
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::Custom(connector)];
    config.backoff_initial = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(1);
    config.breaker_threshold = 5;
    config.breaker_cool_down = Duration::from_secs(10);
    config
}

/// Waits for six dial attempts and checks their spacing against [`redialing`]'s settings:
/// attempts 1..5 with delays drawn from [d/2, d], d doubling from 100 ms; then five failures
/// have opened the breaker, so the sixth waits out the cool-down (plus at most one backoff
/// delay of the capped 1 s), not just the next backoff step.
async fn assert_backoff_then_breaker(attempts: &mut mpsc::Receiver<Instant>) {
    let mut times = Vec::new();
    for _ in 0..6 {
        times.push(
            tokio::time::timeout(GUARD, attempts.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (i, gap) in gaps[..4].iter().enumerate() {
        let ceiling = Duration::from_millis(100 << i);
        assert!(
            *gap >= ceiling / 2 && *gap <= ceiling,
            "gap {i}: {gap:?} not in [{:?}, {ceiling:?}]",
            ceiling / 2
        );
    }
    assert!(
        gaps[4] >= Duration::from_secs(10) && gaps[4] <= Duration::from_secs(11),
        "{:?}",
        gaps[4]
    );
}

#[tokio::test(start_paused = true)]
async fn redials_follow_the_backoff_schedule_then_the_breaker() {
    let (tx, mut attempts) = mpsc::channel(16);
    let config = redialing(Arc::new(Refusing(tx)));
    let router = Router::builder().build().unwrap();
    let endpoint = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    assert_backoff_then_breaker(&mut attempts).await;
    assert_eq!(endpoint.stats().dial_failures, 6);
    router.close().await;
}

/// The gaps between the first `attempts` dials of an endpoint that redials a refusing target
/// with [`redialing`]'s settings and `jitter_seed`.
async fn redial_gaps(jitter_seed: u64, attempts: usize) -> Vec<Duration> {
    let (tx, mut dials) = mpsc::channel(16);
    let mut config = redialing(Arc::new(Refusing(tx)));
    config.jitter_seed = Some(jitter_seed);
    let router = Router::builder().build().unwrap();
    let endpoint = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    router.attach(Arc::new(endpoint)).await.unwrap();
    let mut times = Vec::new();
    for _ in 0..attempts {
        times.push(
            tokio::time::timeout(GUARD, dials.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    router.close().await;
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn a_jitter_seed_fixes_every_redial_delay() {
    let seven = redial_gaps(7, 5).await;
    assert_eq!(redial_gaps(7, 5).await, seven);
    // Another seed draws other delays from the same ranges.
    assert_ne!(redial_gaps(8, 5).await, seven);
}

/// Opens an in-memory pipe whose other end goes to `listener` as an accepted stream.
#[derive(Debug)]
struct Pipe(Mutex<Option<RemoteEndpoint>>);

#[async_trait::async_trait]
impl Connector for Pipe {
    async fn connect(&self) -> std::io::Result<Box<dyn ByteStream>> {
        let listener = self
            .0
            .lock()
            .unwrap()
            .clone()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        listener.accept_stream(Box::new(theirs));
        Ok(Box::new(ours))
    }
}

#[tokio::test(start_paused = true)]
async fn a_link_runs_over_any_byte_stream() {
    let a = Router::builder().name("a").build().unwrap();
    let ea = RemoteEndpoint::new(Keypair::from_seed([1; 32]), RemoteConfig::default()).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let b = Router::builder().name("b").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::Custom(Arc::new(Pipe(Mutex::new(Some(ea.clone())))))];
    let eb = RemoteEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
    b.attach(Arc::new(eb)).await.unwrap();

    let publisher = a.publish::<Reading>("pipe").unwrap();
    assert_eq!(
        publisher.try_send(Reading { seq: 0 }).unwrap_err().kind(),
        SendErrorKind::NoSubscribers,
        "nobody subscribes yet, here or at the peer"
    );
    let mut subscriber = b.subscribe::<Reading>("pipe").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    send_and_receive_in_order(&publisher, &mut subscriber, 100, GUARD).await;
    b.close().await;
    a.close().await;
}

/// Opens in-memory pipes to `listener` (like [`Pipe`]) and reports when each attempt happened.
#[derive(Debug)]
struct TimedPipe(RemoteEndpoint, mpsc::Sender<Instant>);

#[async_trait::async_trait]
impl Connector for TimedPipe {
    async fn connect(&self) -> std::io::Result<Box<dyn ByteStream>> {
        let _ = self.1.send(Instant::now()).await;
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        self.0.accept_stream(Box::new(theirs));
        Ok(Box::new(ours))
    }
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_refuses_us_after_the_handshake_opens_the_breaker() {
    // The listener completes the Noise handshake with anyone but admits only another peer, so
    // every connection of ours ends before a session opens: a failed dial, not a working one.
    let mut config = RemoteConfig::default();
    config.session.allow_peers = Some([Keypair::from_seed([9; 32]).peer_id()].into());
    let listener = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    let server = Router::builder().build().unwrap();
    server.attach(Arc::new(listener.clone())).await.unwrap();

    let (tx, mut attempts) = mpsc::channel(16);
    let config = redialing(Arc::new(TimedPipe(listener.clone(), tx)));
    let router = Router::builder().build().unwrap();
    let endpoint = RemoteEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    // The delays grow as for refused dials (the handshake itself takes no virtual time), and
    // five of them open the breaker.
    assert_backoff_then_breaker(&mut attempts).await;
    assert_eq!(endpoint.stats().dial_failures, 0);
    assert!(listener.stats().handshake_failures >= 5);
    assert!(listener.peers().is_empty() && endpoint.peers().is_empty());
    router.close().await;
    server.close().await;
}

/// A router with a remote endpoint (no listener, no dial) that streams can be handed to.
async fn node(name: &str, keypair: Keypair) -> (Router, RemoteEndpoint) {
    let router = Router::builder().name(name).build().unwrap();
    let endpoint = RemoteEndpoint::new(keypair, RemoteConfig::default()).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    (router, endpoint)
}

#[tokio::test(start_paused = true)]
async fn a_link_runs_over_a_stream_the_transport_already_secured() {
    // What the mesh does with a libp2p stream: no Noise layer, the peer is known up front.
    let (ka, kb) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let (a, ea) = node("a", ka).await;
    let (b, eb) = node("b", kb).await;
    let (one, other) = tokio::io::duplex(64 * 1024);
    ea.adopt_authenticated(idb, Box::new(one), true);
    eb.adopt_authenticated(ida, Box::new(other), false);

    let publisher = a.publish::<Reading>("secured").unwrap();
    let mut subscriber = b.subscribe::<Reading>("secured").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    send_and_receive_in_order(&publisher, &mut subscriber, 100, GUARD).await;
    assert_eq!(ea.peers(), vec![idb]);
    b.close().await;
    a.close().await;
}

#[tokio::test(start_paused = true)]
async fn when_both_peers_open_a_stream_at_once_both_keep_the_same_one() {
    // Each side hands its own stream to its link first, then gets the peer's: without a
    // tie-break each would wait for a hello on a stream the other is not reading.
    let (ka, kb) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let (a, ea) = node("a", ka).await;
    let (b, eb) = node("b", kb).await;
    let (a_opened, b_side) = tokio::io::duplex(64 * 1024);
    let (b_opened, a_side) = tokio::io::duplex(64 * 1024);
    ea.adopt_authenticated(idb, Box::new(a_opened), true);
    eb.adopt_authenticated(ida, Box::new(b_opened), true);
    ea.adopt_authenticated(idb, Box::new(a_side), false);
    eb.adopt_authenticated(ida, Box::new(b_side), false);

    let (mut changes_a, mut changes_b) = (ea.link_changes(), eb.link_changes());
    let idle = RemoteConfig::default().session.idle_timeout;
    // In virtual time: up well before an idle timeout could have cleared a wrong pairing.
    let up = tokio::time::timeout(idle / 2, async {
        while !(ea.is_connected(&idb) && eb.is_connected(&ida)) {
            tokio::select! {
                _ = changes_a.changed() => {}
                _ = changes_b.changed() => {}
            }
        }
    })
    .await;
    assert!(
        up.is_ok(),
        "both links up on one stream before any idle timeout"
    );
    let publisher = a.publish::<Reading>("both").unwrap();
    let mut subscriber = b.subscribe::<Reading>("both").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    publisher.send(Reading { seq: 7 }).await.unwrap();
    let got = tokio::time::timeout(GUARD, subscriber.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.seq, 7);
    b.close().await;
    a.close().await;
}

#[tokio::test(start_paused = true)]
async fn flush_returns_once_the_peer_acknowledged_everything_sent_before() {
    let (ka, kb) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let (a, ea) = node("a", ka).await;
    let (b, eb) = node("b", kb).await;
    assert!(
        matches!(ea.flush(&idb).await, Err(dndm_core::CallError::Closed)),
        "no link yet"
    );
    let (one, other) = tokio::io::duplex(64 * 1024);
    ea.adopt_authenticated(idb, Box::new(one), true);
    eb.adopt_authenticated(ida, Box::new(other), false);
    let publisher = a.publish::<Reading>("flushed").unwrap();
    let mut subscriber = b.subscribe::<Reading>("flushed").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    for seq in 0..1000 {
        publisher.send(Reading { seq }).await.unwrap();
    }
    tokio::time::timeout(GUARD, ea.flush(&idb))
        .await
        .expect("flush returns")
        .expect("b acknowledged");
    for seq in 0..1000 {
        let got = tokio::time::timeout(GUARD, subscriber.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, seq);
    }
    b.close().await;
    a.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_garbage_frame_closes_the_link_and_is_counted() {
    use tokio::io::AsyncWriteExt as _;
    let (ka, kb) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
    let (a, ea) = node("a", ka).await;
    let (one, mut other) = tokio::io::duplex(64 * 1024);
    let mut changes = ea.link_changes();
    ea.adopt_authenticated(kb.peer_id(), Box::new(one), true);
    other.write_all(&[0xde; 64]).await.unwrap();
    tokio::time::timeout(GUARD, async {
        while ea.stats().bad_frames == 0 {
            changes.changed().await.unwrap();
        }
    })
    .await
    .expect("the bad frame is counted");
    let stats = ea.stats();
    assert_eq!((stats.bad_frames, stats.signature_failures), (1, 0));
    assert!(!ea.is_connected(&kb.peer_id()));
    a.close().await;
}
