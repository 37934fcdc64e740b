//! Peers that vanish, never acknowledge, or stop reading cannot block a healthy node: a
//! publisher waits for such a peer at most its send timeout, every other subscriber gets every
//! message, a peer away past its grace period is retired with an exact count of what it
//! missed, and a full `Block` subscriber pauses only its own route.

#![allow(clippy::unwrap_used)]

mod support;
use dndm_test_support::request_once_served;

use std::sync::Arc;
use std::time::Duration;

use dndm_core::{PeerId, Qos};
use dndm_remote::endpoint::{ByteStream, Connector, RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{Intent, Interest, Overflow, PublishOptions, Router, SubscribeOptions};
use tokio::sync::watch;
use tokio::time::Instant;

use support::{Reading, keypair, until};

const GUARD: Duration = Duration::from_secs(120);
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Ten times the old limit (a link's 1,024-command queue), and more than a credit window.
const MESSAGES: u64 = 12_000;

/// Opens in-memory pipes to `listener` through a forwarder that [`Cuttable::cut`] ends for
/// good: both ends see the stream end, with no Close frame, and no later dial gets through.
#[derive(Debug)]
struct Cuttable {
    listener: RemoteEndpoint,
    cut: watch::Sender<bool>,
}

impl Cuttable {
    fn cut(&self) {
        self.cut.send_replace(true);
    }
}

#[async_trait::async_trait]
impl Connector for Cuttable {
    async fn connect(&self) -> std::io::Result<Box<dyn ByteStream>> {
        if *self.cut.borrow() {
            return Err(std::io::ErrorKind::ConnectionRefused.into());
        }
        let (ours, mut near) = tokio::io::duplex(64 * 1024);
        let (mut far, theirs) = tokio::io::duplex(64 * 1024);
        self.listener.accept_stream(Box::new(theirs));
        let mut cut = self.cut.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut near, &mut far) => {}
                _ = cut.wait_for(|cut| *cut) => {}
            }
        });
        Ok(Box::new(ours))
    }
}

/// A router whose endpoint dials `listener` through `connector`.
async fn dialer(name: &str, seed: u8, connector: Arc<dyn Connector>) -> (Router, RemoteEndpoint) {
    let router = Router::builder().name(name).build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::Custom(connector)];
    let endpoint = RemoteEndpoint::new(keypair(seed), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    (router, endpoint)
}

/// A plain pipe to `listener` (never cut).
#[derive(Debug)]
struct Pipe(RemoteEndpoint);

#[async_trait::async_trait]
impl Connector for Pipe {
    async fn connect(&self) -> std::io::Result<Box<dyn ByteStream>> {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        self.0.accept_stream(Box::new(theirs));
        Ok(Box::new(ours))
    }
}

/// Lossless and large enough for the whole stream, so no subscriber of ours ever drops.
fn lossless() -> SubscribeOptions {
    SubscribeOptions::default()
        .capacity(MESSAGES as usize + 1)
        .overflow(Overflow::Block)
}

/// Receives `count` readings in order, `0..count`.
async fn receive_all(subscriber: &mut Interest<Reading>, count: u64) {
    for seq in 0..count {
        let got = tokio::time::timeout(GUARD, subscriber.recv())
            .await
            .expect("every message arrives")
            .unwrap();
        assert_eq!(got.seq, seq, "in order, exactly once");
    }
}

/// Waits until `publisher` has `count` subscribers.
async fn until_subscribers(publisher: &Intent<Reading>, count: usize) {
    tokio::time::timeout(GUARD, async {
        while publisher.subscriber_count() < count {
            publisher.interested().await.unwrap();
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{count} subscribers"));
}

/// A router `a` with a remote endpoint listening on loopback TCP (`tune` adjusts its settings),
/// and the address it got.
async fn tcp_listener(
    router: Router,
    tune: impl FnOnce(&mut RemoteConfig),
) -> (Router, RemoteEndpoint, std::net::SocketAddr) {
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    tune(&mut config);
    let endpoint = RemoteEndpoint::new(keypair(1), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    let Target::Tcp(addr) = endpoint.bound().remove(0) else {
        panic!("tcp")
    };
    (router, endpoint, addr)
}

/// A reliable publisher on `robot.imu`.
fn reliable_imu(router: &Router) -> Intent<Reading> {
    router
        .publish_with::<Reading>("robot.imu", PublishOptions::default().qos(Qos::reliable()))
        .unwrap()
}

/// Acknowledged reliable messages on `endpoint`'s link to `peer`.
fn acked(endpoint: &RemoteEndpoint, peer: PeerId) -> u64 {
    endpoint
        .links()
        .iter()
        .find(|link| link.peer == peer)
        .map_or(0, |link| link.stats.acked)
}

/// Sends `seq` and checks the send returned within the send timeout (virtual time: exact).
async fn send_bounded(publisher: &Intent<Reading>, seq: u64) -> bool {
    let started = Instant::now();
    let sent = tokio::time::timeout(GUARD, publisher.send(Reading { seq }))
        .await
        .expect("a send never hangs");
    let took = started.elapsed();
    assert!(
        took <= SEND_TIMEOUT,
        "send {seq} took {took:?}, past the send timeout {SEND_TIMEOUT:?}"
    );
    sent.is_ok()
}

#[tokio::test(start_paused = true)]
async fn a_vanished_subscriber_costs_one_send_timeout_and_is_retired_with_an_exact_count() {
    let a = Router::builder()
        .name("a")
        .send_timeout(SEND_TIMEOUT)
        .build()
        .unwrap();
    let ea = RemoteEndpoint::new(keypair(1), RemoteConfig::default()).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let cuttable = Arc::new(Cuttable {
        listener: ea.clone(),
        cut: watch::Sender::new(false),
    });
    let (b, eb) = dialer("b", 2, cuttable.clone()).await;
    let (c, _ec) = dialer("c", 3, Arc::new(Pipe(ea.clone()))).await;

    let publisher = reliable_imu(&a);
    let mut local = a
        .subscribe_with::<Reading>("robot.imu", lossless())
        .unwrap();
    let _gone = b.subscribe::<Reading>("robot.imu").unwrap();
    let mut healthy = c
        .subscribe_with::<Reading>("robot.imu", lossless())
        .unwrap();
    until_subscribers(&publisher, 3).await;

    // b disappears: its stream ends without a Close, and it never gets through again.
    cuttable.cut();
    let mut failed = 0;
    for seq in 0..MESSAGES {
        failed += u64::from(!send_bounded(&publisher, seq).await);
    }
    assert!(failed > 0, "sends to nobody do not all succeed silently");
    receive_all(&mut local, MESSAGES).await;
    receive_all(&mut healthy, MESSAGES).await;

    // After the grace period (virtual time) b's interest is unlinked and what it missed is
    // accounted for exactly: every message offered to b was acknowledged or reported.
    let b_id = eb.peer_id();
    until(&ea, "b retired", |e| e.stats().retired_peers == 1).await;
    assert_eq!(publisher.subscriber_count(), 2, "b's interest is unlinked");
    assert_eq!(acked(&ea, b_id) + publisher.undelivered(), MESSAGES);
    assert_eq!(ea.stats().undelivered + failed, publisher.undelivered());
    let info = a
        .snapshot()
        .intents
        .into_iter()
        .find(|i| i.id == publisher.id());
    assert_eq!(info.map(|i| i.undelivered), Some(publisher.undelivered()));
    c.close().await;
    b.close().await;
    a.close().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_back_within_its_grace_period_resumes_without_loss() {
    let a = Router::builder().name("a").build().unwrap();
    let ea = RemoteEndpoint::new(keypair(1), RemoteConfig::default()).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let pipe = Arc::new(Flaky {
        listener: ea.clone(),
        cut: watch::Sender::new(0),
    });
    let (b, _eb) = dialer("b", 2, pipe.clone()).await;
    let publisher = reliable_imu(&a);
    let mut subscriber = b
        .subscribe_with::<Reading>("robot.imu", lossless())
        .unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    for seq in 0..1000 {
        if seq % 250 == 0 {
            pipe.cut_current();
        }
        publisher.send(Reading { seq }).await.unwrap();
    }
    receive_all(&mut subscriber, 1000).await;
    assert_eq!(publisher.undelivered(), 0);
    assert_eq!(ea.stats().retired_peers, 0);
    b.close().await;
    a.close().await;
}

/// Pipes to `listener` whose current connection [`Flaky::cut_current`] ends (redials work).
#[derive(Debug)]
struct Flaky {
    listener: RemoteEndpoint,
    cut: watch::Sender<u64>,
}

impl Flaky {
    fn cut_current(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

#[async_trait::async_trait]
impl Connector for Flaky {
    async fn connect(&self) -> std::io::Result<Box<dyn ByteStream>> {
        let (ours, mut near) = tokio::io::duplex(64 * 1024);
        let (mut far, theirs) = tokio::io::duplex(64 * 1024);
        self.listener.accept_stream(Box::new(theirs));
        let mut cut = self.cut.subscribe();
        cut.mark_unchanged();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut near, &mut far) => {}
                _ = cut.changed() => {}
            }
        });
        Ok(Box::new(ours))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_block_subscriber_pauses_only_its_route() {
    let real = Duration::from_secs(60);
    let a = Router::builder()
        .name("a")
        .send_timeout(real)
        .build()
        .unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    let ea = RemoteEndpoint::new(keypair(1), config).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let b = Router::builder().name("b").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = ea.bound();
    let eb = RemoteEndpoint::new(keypair(2), config).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();

    let reliable = PublishOptions::default().qos(Qos::reliable());
    let slow_route = a.publish_with::<Reading>("r1", reliable.clone()).unwrap();
    let fast_route = a.publish_with::<Reading>("r2", reliable).unwrap();
    let one_slot = SubscribeOptions::default()
        .capacity(1)
        .overflow(Overflow::Block);
    let mut slow = b.subscribe_with::<Reading>("r1", one_slot).unwrap();
    let mut fast = b.subscribe_with::<Reading>("r2", lossless()).unwrap();
    let _service = b
        .serve::<Reading, Reading, _, _>("double", |r: Reading| async move {
            Ok(Reading { seq: r.seq * 2 })
        })
        .unwrap();
    slow_route.wait_for_interest(real).await.unwrap();
    fast_route.wait_for_interest(real).await.unwrap();

    // r1's subscriber holds one message and reads none: the rest wait in b's fan-in, and b
    // asks a to hold r1 back.
    const HELD: u64 = 500;
    for seq in 0..HELD {
        slow_route.send(Reading { seq }).await.unwrap();
    }
    until(&ea, "a paused by b", |e| {
        e.links().iter().any(|l| l.stats.pauses_received > 0)
    })
    .await;

    // Everything else on the link keeps flowing: another route, requests, pings.
    let fast_count = 5_000;
    for seq in 0..fast_count {
        fast_route.send(Reading { seq }).await.unwrap();
    }
    receive_all(&mut fast, fast_count).await;
    for seq in 0..50u64 {
        let answer =
            request_once_served::<Reading, Reading>(&a, "double", Reading { seq }, real).await;
        assert_eq!(answer.unwrap().seq, seq * 2);
    }
    assert_eq!(ea.stats().link_failures, 0, "no reconnect on a");
    assert_eq!(eb.stats().link_failures, 0, "no reconnect on b");
    assert!(eb.links()[0].stats.pauses_sent > 0);

    // The subscriber reads again: r1 resumes, nothing lost, in order.
    receive_all(&mut slow, HELD).await;
    for seq in HELD..HELD + 100 {
        slow_route.send(Reading { seq }).await.unwrap();
    }
    for seq in HELD..HELD + 100 {
        let got = tokio::time::timeout(real, slow.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, seq);
    }
    assert_eq!(slow_route.undelivered(), 0);
    assert_eq!(ea.stats().link_failures, 0);
    b.close().await;
    a.close().await;
}

/// A hand-made peer over TCP: a real Noise handshake, identity preamble and session that
/// subscribes to `pattern`, answers pings and keeps its link alive, but never sends an `Ack`.
/// Runs until `stop` fires.
async fn never_acking_peer(
    addr: std::net::SocketAddr,
    server: PeerId,
    pattern: &str,
    mut stop: watch::Receiver<bool>,
) {
    use dndm_codec::{FrameHeader, FrameKind, Limits, SessionId, split_frame};
    use dndm_core::{InterestAd, Message as _};
    use dndm_remote::noise::{Channel, StaticKey, sign_binding};
    use dndm_remote::session::{Binding, Connection, Session, SessionConfig};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let keypair = keypair(9);
    let static_key = StaticKey::generate().unwrap();
    let mut channel = Channel::initiator(&static_key).unwrap();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    while !channel.is_established() {
        while let Some(out) = channel.poll_transmit() {
            stream.write_all(&out).await.unwrap();
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during the handshake");
        channel.handle_input(&buf[..n]).unwrap();
    }
    let binding = sign_binding(&keypair, &static_key.public());
    let mut preamble = keypair.public().to_bytes().to_vec();
    preamble.extend_from_slice(&binding);
    channel.write(&preamble).unwrap();

    let limits = Limits::default();
    let mut session = Session::new(SessionConfig::default(), keypair, 7);
    let t = || tokio::time::Instant::now().into_std();
    session.add_local_interest(
        InterestAd {
            pattern: format!("test.Reading@{pattern}").parse().unwrap(),
            fingerprint: Reading::fingerprint(),
            schema: None,
            hashed: None,
            history: 0,
        },
        t(),
    );
    let connection = Connection {
        session_id: SessionId::from_bytes(channel.handshake_hash().unwrap()),
        binding: Some(Binding {
            local_signature: binding,
            remote_static: channel.remote_static().unwrap(),
        }),
        expected_peer: Some(server),
    };
    session.handle_connect(t(), connection);
    let mut plain = bytes::BytesMut::new();
    let mut skipped_preamble = false;
    loop {
        while let Some(frame) = session.poll_transmit(t()) {
            let ack = FrameHeader::parse(&frame, &limits).is_ok_and(|h| h.kind() == FrameKind::Ack);
            if !ack {
                channel.write(&frame).unwrap();
            }
        }
        while let Some(out) = channel.poll_transmit() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
        while session.poll_event().is_some() {}
        let deadline = session.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            read = stream.read(&mut buf) => {
                let Ok(n @ 1..) = read else { return };
                channel.handle_input(&buf[..n]).unwrap();
                while let Some(bytes) = channel.poll_plaintext() {
                    plain.extend_from_slice(&bytes);
                }
                if !skipped_preamble && plain.len() >= 96 {
                    // The server's identity preamble (key and binding signature).
                    let _ = plain.split_to(96);
                    skipped_preamble = true;
                }
                while skipped_preamble && let Ok(Some(frame)) = split_frame(&mut plain, &limits) {
                    session.handle_frame(t(), frame);
                }
            }
            () = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            } => session.handle_timeout(t()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_peer_that_never_acknowledges_costs_one_send_timeout() {
    const WINDOW: usize = 256;
    let timeout = Duration::from_millis(200);
    let router = Router::builder().name("a").send_timeout(timeout).build();
    let (a, ea, addr) = tcp_listener(router.unwrap(), |c| c.route_window = WINDOW).await;
    let (stop, stopped) = watch::channel(false);
    let rogue = tokio::spawn(never_acking_peer(addr, ea.peer_id(), "robot.imu", stopped));

    let publisher = reliable_imu(&a);
    let mut local = a
        .subscribe_with::<Reading>("robot.imu", lossless())
        .unwrap();
    until_subscribers(&publisher, 2).await;
    let mut failed = 0;
    for seq in 0..MESSAGES {
        let sent = tokio::time::timeout(timeout + GUARD, publisher.send(Reading { seq }))
            .await
            .expect("a send never hangs on a peer that does not acknowledge");
        failed += u64::from(sent.is_err());
    }
    receive_all(&mut local, MESSAGES).await;
    // Exactly one window of messages entered the rogue's link (never acknowledged, never
    // settled); every other one was dropped for it alone, counted and reported.
    assert_eq!(publisher.undelivered(), MESSAGES - WINDOW as u64);
    assert_eq!(failed, MESSAGES - WINDOW as u64);
    let link = ea.links().remove(0);
    assert!(link.connected, "the rogue keeps its link alive with pings");
    assert_eq!(link.stats.acked, 0);
    stop.send_replace(true);
    rogue.await.unwrap();
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_runtime_that_dies_over_tcp_does_not_block_the_publisher() {
    let timeout = Duration::from_millis(200);
    let router = Router::builder().name("a").send_timeout(timeout).build();
    let grace = |c: &mut RemoteConfig| c.peer_grace = Duration::from_millis(500);
    let (a, ea, _) = tcp_listener(router.unwrap(), grace).await;
    let dial = ea.bound();

    // b lives in a runtime of its own, which dies without closing anything in order.
    let runtime_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (ready, ready_rx) = tokio::sync::oneshot::channel();
    runtime_b.spawn(async move {
        let b = Router::builder().name("b").build().unwrap();
        let mut config = RemoteConfig::default();
        config.dial = dial;
        let eb = RemoteEndpoint::new(keypair(2), config).unwrap();
        b.attach(Arc::new(eb)).await.unwrap();
        let subscriber = b.subscribe::<Reading>("robot.imu").unwrap();
        let _ = ready.send(());
        let _keep = (b, subscriber);
        std::future::pending::<()>().await;
    });
    ready_rx.await.unwrap();
    let publisher = reliable_imu(&a);
    let mut local = a
        .subscribe_with::<Reading>("robot.imu", lossless())
        .unwrap();
    until_subscribers(&publisher, 2).await;
    runtime_b.shutdown_background();

    for seq in 0..MESSAGES {
        tokio::time::timeout(timeout + GUARD, publisher.send(Reading { seq }))
            .await
            .expect("a send never hangs on a peer that is gone")
            .ok();
    }
    receive_all(&mut local, MESSAGES).await;
    until(&ea, "b retired", |e| e.stats().retired_peers == 1).await;
    assert_eq!(publisher.subscriber_count(), 1, "b's interest is unlinked");
    // Whatever was offered to b is acknowledged or reported (all of it, when the sends ended
    // before the grace period did; fewer were offered otherwise).
    let offered = ea.links().remove(0).stats.acked + publisher.undelivered();
    assert!(offered > 0 && offered <= MESSAGES, "{offered}");
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_closing_node_could_not_deliver_is_counted() {
    let router = Router::builder().name("a").build().unwrap();
    let (a, ea, addr) = tcp_listener(router, |_| {}).await;
    let (stop, stopped) = watch::channel(false);
    let rogue = tokio::spawn(never_acking_peer(addr, ea.peer_id(), "robot.imu", stopped));
    let publisher = reliable_imu(&a);
    publisher.wait_for_interest(GUARD).await.unwrap();
    for seq in 0..500 {
        publisher.send(Reading { seq }).await.unwrap();
    }
    // The peer never acknowledges: at close, all 500 are still the link's, queued or sent.
    a.close().await;
    let stats = ea.stats();
    assert_eq!(stats.undelivered, 500, "{stats:?}");
    stop.send_replace(true);
    rogue.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn messages_held_for_a_full_subscriber_survive_their_intent_s_withdrawal() {
    let a = Router::builder().name("a").build().unwrap();
    let ea = RemoteEndpoint::new(keypair(1), RemoteConfig::default()).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let (b, eb) = dialer("b", 2, Arc::new(Pipe(ea.clone()))).await;
    let publisher = reliable_imu(&a);
    let one_slot = SubscribeOptions::default()
        .capacity(1)
        .overflow(Overflow::Block);
    let mut subscriber = b.subscribe_with::<Reading>("robot.imu", one_slot).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    const COUNT: u64 = 300;
    for seq in 0..COUNT {
        publisher.send(Reading { seq }).await.unwrap();
    }
    // b took more than its one-slot subscriber holds and paused the route (what a still has
    // waits there); then a withdraws the intent. What b holds is still delivered, in order,
    // and so is what a held back.
    let mut changes = eb.link_changes();
    let holding = async {
        while eb
            .links()
            .first()
            .is_none_or(|l| l.stats.pauses_sent == 0 || l.stats.messages_received < 2)
        {
            changes.changed().await.unwrap();
        }
    };
    tokio::time::timeout(GUARD, holding).await.unwrap();
    drop(publisher);
    receive_all(&mut subscriber, COUNT).await;
    b.close().await;
    a.close().await;
}
