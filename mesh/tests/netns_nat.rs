//! Peers behind two NATs reach each other through a relay, and hole punching makes the path
//! direct while a reliable stream runs (`tests/netns/nat.sh`: private networks A and B, each
//! behind its own masquerading NAT, and a public network with the relay and a spare client c).
//!
//! a publishes `Reading { seq }` on a reliable route; b subscribes losslessly. Both hold a
//! reservation on the relay; b dials a at `<relay>/p2p-circuit/p2p/<a>`. First the NATs refuse
//! each other's connections (`nat.sh block`): hole punching fails, the path stays relayed,
//! a's snapshot says why, and the stream flows over the circuit. Then the block is lifted and
//! b drops its connection: the redial goes through the relay again, hole punching succeeds, the
//! relayed connection closes and the session resumes on the direct one. b must have every
//! message exactly once and in order. The relay takes two reservations; c, the third client, is
//! refused with the relay's reason.
//!
//! The parent runs this test binary once per host (the `#[ignore]`d test `nat_child`), as
//! `netns_mdns.rs` does: commands on stdin, `@@ <report>` lines on stdout.
//!
//! Needs root (CI runs as root); without root the test fails unless `DNDM_SKIP_NETNS=1`. Run by
//! hand: `cargo test -p dndm-mesh --test netns_nat -- --nocapture` (`DNDM_LOG=debug` logs each
//! node's tracing on stderr, prefixed with its host). `DNDM_NAT_BENCH=<count>` adds an unpaced
//! burst over the relayed and over the direct path and prints msgs/s and round trips.

#![allow(clippy::unwrap_used)]

mod netns;

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dndm_core::{Keypair, Message, PeerId, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Path, Transport};
use dndm_router::{Overflow, PublishOptions, Router, SubscribeOptions};
use libp2p::Multiaddr;
use netns::{Host, InOrder, ROLE, Testbed, say};

/// The route path of the stream.
const PATH: &str = "nat.stream";
/// The subscriber's queue (lossless: the publisher waits when it is full).
const QUEUE: usize = 1024;
/// The subscriber reports progress every this many messages.
const REPORT_EVERY: u64 = 200;
/// The publisher sends one message per tick.
const SEND_TICK: Duration = Duration::from_millis(2);
/// How often a child looks at its mesh snapshot for changes worth a report.
const WATCH_TICK: Duration = Duration::from_millis(50);
/// The relay's public address and its reservation bound (a and b fit, c does not).
const RELAY_ADDR: &str = "/ip4/203.0.113.10/tcp/4001";
const RELAY_RESERVATIONS: usize = 2;
/// Set to a message count to measure throughput and round trip over the relayed and the direct
/// path (printed, never asserted; `docs/benchmarks.md`).
const BENCH: &str = "DNDM_NAT_BENCH";

#[derive(Clone, PartialEq, prost::Message)]
struct Reading {
    #[prost(uint64, tag = "1")]
    seq: u64,
}

impl prost::Name for Reading {
    const NAME: &'static str = "Reading";
    const PACKAGE: &'static str = "test";
}
impl Message for Reading {}

/// The two scenarios run one after the other, cone NATs first: each runs four nodes and two
/// NATs, and hole punching is a race that an overloaded machine loses. In this order both
/// passed every run; with the symmetric scenario first in the same test process, the cone
/// scenario's hole punch failed six attempts in a row in 2 of 5 runs (each scenario alone,
/// or in separate processes back to back, never failed). Not diagnosed yet.
#[test]
fn nat_traversal_cone_then_symmetric() {
    peers_behind_two_nats_meet_through_a_relay_and_hole_punch_to_direct();
    peers_behind_symmetric_nats_stay_relayed_and_lose_nothing();
}

/// Runs one scenario at a time (each holds the lock while it runs).
fn one_testbed_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn seed(role: &str) -> [u8; 32] {
    match role {
        "relay" => [10; 32],
        "a" => [11; 32],
        "b" => [12; 32],
        _ => [13; 32],
    }
}

fn peer_of(role: &str) -> PeerId {
    Keypair::from_seed(seed(role)).peer_id()
}

fn relay_addr() -> Multiaddr {
    format!("{RELAY_ADDR}/p2p/{}", peer_of("relay"))
        .parse()
        .unwrap()
}

/// Cone NATs: relay, reservations, hole punching to a direct path, relay loss.
fn peers_behind_two_nats_meet_through_a_relay_and_hole_punch_to_direct() {
    if !netns::should_run("netns_nat") {
        return;
    }
    let _serial = one_testbed_at_a_time();
    let started = Instant::now();
    let testbed = Testbed::up("nat.sh", &["nat"], "dndmnat", &["cone"]);
    // Hole punching fails while the NATs refuse each other.
    testbed.run(&["block"]);
    let mut relay = Host::spawn(&testbed, "relay", "nat_child");
    relay.expect("ready");
    let mut a = Host::spawn(&testbed, "a", "nat_child");
    let mut b = Host::spawn(&testbed, "b", "nat_child");
    a.expect("reservation ok");
    b.expect("reservation ok");

    // The relay is full: c is refused, and says why.
    let mut c = Host::spawn(&testbed, "c", "nat_child");
    let refused = c.expect("reservation error ");
    assert!(
        refused.contains("resource limit exceeded"),
        "c: unexpected refusal reason: {refused}"
    );
    eprintln!("c: {refused}");

    // The session runs over the circuit; hole punching failed and the snapshot says why.
    // (a answered the relayed connection, so a drives hole punching and sees it fail.)
    b.expect_or_seen("link up relayed");
    a.expect_or_seen("link up relayed");
    let reason = a.expect("reason ");
    eprintln!("a stays relayed: {reason} ({:?})", started.elapsed());
    a.send("subscribers 1");
    a.expect("subscribers 1");
    a.send("start");
    b.expect(&format!("got {}", 2 * REPORT_EVERY));
    let bench: Option<u64> = std::env::var(BENCH).ok().and_then(|n| n.parse().ok());
    if let Some(n) = bench {
        measure(&mut a, &mut b, "relayed", n);
    }
    let relayed_at = Instant::now();
    let got_relayed = b.last_count("got ");

    // Lift the block and reconnect: hole punching on the new relayed connection succeeds, and
    // the session moves to the direct connection mid-stream.
    // A simultaneous open can still lose a race (a SYN that reaches the other NAT before that
    // side's own SYN left is dropped), more often on a loaded machine (DCUtR times the two
    // dials by the measured RTT): each new relayed connection tries again, so reconnect up to
    // six times.
    testbed.run(&["unblock"]);
    let mut tries = 0;
    loop {
        tries += 1;
        let asked = Instant::now();
        b.send("disconnect a");
        let outcome = a.expect_any_since(asked, &["link up direct", "reason "]);
        if outcome.starts_with("link up direct") {
            break;
        }
        eprintln!("hole punch attempt {tries} failed: {outcome}");
        assert!(tries < 6, "hole punching failed {tries} times: {outcome}");
    }
    b.expect_since(Some(relayed_at), "link up direct");
    eprintln!(
        "direct after {:?} ({got_relayed} messages over the relay)",
        relayed_at.elapsed()
    );
    if let Some(n) = bench {
        measure(&mut a, &mut b, "direct", n);
    }
    // The relay goes away; the direct session does not need it: b's count goes on by two more
    // reports after its first report since the relay quit. (Not from `last_count`: reports b
    // sent while the loop above waited on a are not consumed yet, so it can lag far behind.)
    relay.quit();
    let gone = Instant::now();
    let after: u64 = b.expect_since(Some(gone), "got ")["got ".len()..]
        .parse()
        .unwrap();
    b.expect(&format!("got {}", after + 2 * REPORT_EVERY));
    a.send("stop");
    let stopped = a.expect("stopped ");
    let sent: u64 = stopped["stopped ".len()..].parse().unwrap();
    b.send(&format!("expect {sent}"));
    b.expect(&format!("done {sent}"));
    for host in [&mut a, &mut b] {
        host.send("status");
        let status = host.expect("status ");
        eprintln!("{}: {status}", host.name);
    }
    eprintln!(
        "{sent} messages, 0 lost, 0 duplicated; test took {:?}",
        started.elapsed()
    );
    for host in [&mut c, &mut b, &mut a] {
        host.quit();
    }
}

/// a sends `n` messages unpaced (within the stream); prints how long until b had them all, and
/// the session round trips of both sides.
fn measure(a: &mut Host, b: &mut Host, path: &str, n: u64) {
    let started = Instant::now();
    a.send(&format!("burst {n}"));
    let done = a.expect("burst done ");
    let end: u64 = done["burst done ".len()..].parse().unwrap();
    b.send(&format!("mark {end}"));
    b.expect(&format!("reached {end}"));
    let took = started.elapsed();
    let mut rtts = Vec::new();
    for (host, other) in [(&mut *a, "b"), (&mut *b, "a")] {
        host.send("status");
        let status = host.expect("status ");
        let link = status
            .split(['[', ']', ' '])
            .find(|e| e.starts_with(&short(peer_of(other))))
            .unwrap_or("none")
            .to_owned();
        rtts.push(format!("{} to {other}: {link}", host.name));
    }
    eprintln!(
        "bench {path}: {n} messages in {took:?} = {:.0} msgs/s; {}",
        n as f64 / took.as_secs_f64(),
        rtts.join("; ")
    );
}

/// Messages streamed over the relayed path behind symmetric NATs.
const COUNT: u64 = 3000;

/// Peers behind two symmetric NATs (`nat.sh up symmetric`: each NAT maps every connection to
/// a random public port) reach each other through the relay; hole punching cannot succeed
/// there, so the session stays on the circuit, the snapshot says why, and a reliable stream
/// over the relayed path loses and duplicates nothing.
/// Symmetric NATs: hole punching fails, the path stays relayed, nothing is lost.
fn peers_behind_symmetric_nats_stay_relayed_and_lose_nothing() {
    if !netns::should_run("netns_nat symmetric") {
        return;
    }
    let _serial = one_testbed_at_a_time();
    let started = Instant::now();
    let testbed = Testbed::up("nat.sh", &["nat"], "dndmsym", &["symmetric"]);
    let mut relay = Host::spawn(&testbed, "relay", "nat_child");
    relay.expect("ready");
    let mut a = Host::spawn(&testbed, "a", "nat_child");
    let mut b = Host::spawn(&testbed, "b", "nat_child");
    a.expect("reservation ok");
    b.expect("reservation ok");

    // The session runs over the circuit; hole punching fails and a (which answered the relayed
    // connection, so drives hole punching) says why.
    b.expect_or_seen("link up relayed");
    a.expect_or_seen("link up relayed");
    let reason = a.expect("reason ");
    let why = reason["reason ".len()..].trim();
    assert!(!why.is_empty(), "a: empty relay reason");
    eprintln!("a stays relayed: {why} ({:?})", started.elapsed());

    a.send("subscribers 1");
    a.expect("subscribers 1");
    let streaming = Instant::now();
    a.send("start");
    b.expect(&format!("got {COUNT}"));
    a.send("stop");
    let stopped = a.expect("stopped ");
    let sent: u64 = stopped["stopped ".len()..].parse().unwrap();
    b.send(&format!("expect {sent}"));
    b.expect(&format!("done {sent}"));
    let took = streaming.elapsed();
    // The session is still on the relayed path.
    for (host, other) in [(&mut a, "b"), (&mut b, "a")] {
        host.send("status");
        let status = host.expect("status ");
        eprintln!("{}: {status}", host.name);
        let link = format!("{}:relayed+session", short(peer_of(other)));
        assert!(
            status.contains(&link),
            "{}: session to {other} not relayed at the end: {status}",
            host.name
        );
    }
    eprintln!(
        "{sent} messages over the relay in {took:?}, 0 lost, 0 duplicated; test took {:?}",
        started.elapsed()
    );
    for host in [&mut b, &mut a, &mut relay] {
        host.quit();
    }
}

/// One node of the NAT testbed. Not run on its own: the parent test runs it per host.
#[test]
#[ignore = "run by the netns_nat parent test inside a network namespace"]
fn nat_child() {
    let role = std::env::var(ROLE).expect("DNDM_NETNS_ROLE names the host");
    if std::env::var("DNDM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(child_node(&role));
}

fn config(role: &str) -> MeshConfig {
    let mut config = MeshConfig::default();
    config.transport = Transport::Tcp;
    config.mdns = false;
    config.autonat = true;
    config.remote.session.keepalive = Duration::from_millis(500);
    config.remote.session.idle_timeout = Duration::from_secs(3);
    config.remote.session.node_name = role.to_owned();
    config.remote.backoff_initial = Duration::from_millis(100);
    config.remote.backoff_max = Duration::from_millis(500);
    let port = match role {
        "relay" => 4001,
        "a" => 4101,
        "b" => 4102,
        _ => 4103,
    };
    if role == "relay" {
        let addr: Multiaddr = RELAY_ADDR.parse().unwrap();
        config.listen = vec![addr.clone()];
        config.external = vec![addr];
        config.relay_server = true;
        config.relay_limits.max_reservations = RELAY_RESERVATIONS;
    } else {
        // A fixed port: outgoing connections reuse it, so the NAT maps it the same way for
        // every destination (what hole punching relies on).
        config.listen = vec![format!("/ip4/0.0.0.0/tcp/{port}").parse().unwrap()];
        config.relays = vec![relay_addr()];
    }
    if role == "b" {
        config.dial = vec![
            relay_addr()
                .with(libp2p::multiaddr::Protocol::P2pCircuit)
                .with(libp2p::multiaddr::Protocol::P2p(
                    libp2p::PeerId::from_bytes(&peer_of("a").to_bytes()).unwrap(),
                )),
        ];
    }
    config
}

async fn child_node(role: &str) {
    let router = Router::builder().name(role).build().unwrap();
    let endpoint = MeshEndpoint::new(Keypair::from_seed(seed(role)), config(role)).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    say(format!("ready {role} {}", endpoint.peer_id()));

    // Snapshot reports: reservation, reachability, the path to the other side and why.
    let other = match role {
        "a" => Some(peer_of("b")),
        "b" => Some(peer_of("a")),
        _ => None,
    };
    let watcher = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            let mut tick = tokio::time::interval(WATCH_TICK);
            let mut last: Vec<String> = Vec::new();
            loop {
                tick.tick().await;
                let lines = snapshot(&endpoint, other);
                for line in &lines {
                    if !last.contains(line) {
                        say(line);
                    }
                }
                last = lines;
            }
        }
    });

    let (commands_tx, mut commands) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if commands_tx.blocking_send(line).is_err() {
                return;
            }
        }
        let _ = commands_tx.blocking_send("quit".to_owned());
    });

    let summary = match role {
        "a" => publisher(&router, &endpoint, &mut commands).await,
        "b" => subscriber(&router, &endpoint, &mut commands).await,
        _ => idle(&endpoint, &mut commands).await,
    };
    watcher.abort();
    router.close().await;
    say(format!("bye {summary}"));
}

/// The report lines of a snapshot: `reservation ok|refused <why>`, `reach <status>`, and for
/// the other NATed peer `link up <path>|link down` and `reason <why it stayed relayed>`.
fn snapshot(endpoint: &MeshEndpoint, other: Option<PeerId>) -> Vec<String> {
    let mut lines = Vec::new();
    for r in endpoint.relay_reservations() {
        match (r.reserved, r.error) {
            (true, _) => lines.push("reservation ok".to_owned()),
            (false, Some(e)) => lines.push(format!("reservation error {e}")),
            (false, None) => {}
        }
    }
    lines.push(format!("reach {}", endpoint.reachability()));
    if let Some(other) = other {
        let peer = endpoint.mesh_peers().into_iter().find(|p| p.peer == other);
        match peer {
            Some(p) if p.session => {
                lines.push(format!("link up {}", p.path));
                if let (Path::Relayed, Some(reason)) = (p.path, p.relay_reason) {
                    lines.push(format!("reason {reason}"));
                }
            }
            _ => lines.push("link down".to_owned()),
        }
    }
    lines
}

/// The end of a peer id (their starts are all alike).
fn short(peer: PeerId) -> String {
    let id = peer.to_string();
    id[id.len() - 6..].to_owned()
}

fn status(endpoint: &MeshEndpoint) -> String {
    let peers: Vec<String> = endpoint
        .mesh_peers()
        .iter()
        .map(|p| {
            format!(
                "{}:{}{}{}",
                short(p.peer),
                p.path,
                if p.session { "+session" } else { "" },
                p.rtt.map(|r| format!("@{r:.2?}")).unwrap_or_default()
            )
        })
        .collect();
    format!(
        "reach {} peers [{}]",
        endpoint.reachability(),
        peers.join(" ")
    )
}

/// relay, c: answer `status`, quit on `quit`.
async fn idle(
    endpoint: &MeshEndpoint,
    commands: &mut tokio::sync::mpsc::Receiver<String>,
) -> String {
    loop {
        match commands.recv().await.as_deref() {
            Some("status") => say(format!("status {}", status(endpoint))),
            Some("quit") | None => return "idle".to_owned(),
            Some(other) => say(format!("bad command {other}")),
        }
    }
}

/// a: `subscribers N` answers once N subscribers are linked; `start` streams `Reading { seq }`
/// on a reliable route until `stop`, which answers `stopped <count>`.
async fn publisher(
    router: &Router,
    endpoint: &MeshEndpoint,
    commands: &mut tokio::sync::mpsc::Receiver<String>,
) -> String {
    let publisher = Arc::new(
        router
            .publish_with::<Reading>(PATH, PublishOptions::default().qos(Qos::reliable()))
            .unwrap(),
    );
    let mut events = publisher.events();
    let mut wanted: Option<usize> = None;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut sender: Option<tokio::task::JoinHandle<u64>> = None;
    // Messages the sender sends without waiting for its tick (`burst N`).
    let unpaced = Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        if let Some(n) = wanted
            && publisher.subscriber_count() >= n
        {
            say(format!("subscribers {n}"));
            wanted = None;
        }
        tokio::select! {
            Ok(_) = events.recv() => {}
            command = commands.recv() => match command.as_deref() {
                Some("status") => say(format!("status {}", status(endpoint))),
                Some(text) if text.starts_with("subscribers ") => {
                    wanted = Some(text["subscribers ".len()..].parse().unwrap());
                }
                Some(text) if text.starts_with("burst ") => {
                    let n = text["burst ".len()..].parse().unwrap();
                    unpaced.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                Some("start") => {
                    let (publisher, stop) = (publisher.clone(), stop.clone());
                    let unpaced = unpaced.clone();
                    sender = Some(tokio::spawn(async move {
                        let mut tick = tokio::time::interval(SEND_TICK);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        let mut seq = 0;
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            let left = unpaced.load(std::sync::atomic::Ordering::Relaxed);
                            if left == 0 {
                                tick.tick().await;
                            }
                            if let Err(e) = publisher.send(Reading { seq }).await {
                                say(format!("bad send of {seq}: {e}"));
                                break;
                            }
                            seq += 1;
                            if left == 1 {
                                say(format!("burst done {seq}"));
                            }
                            if left > 0 {
                                unpaced.store(left - 1, std::sync::atomic::Ordering::Relaxed);
                                tick.reset();
                            }
                        }
                        seq
                    }));
                }
                Some("stop") => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let sent = match sender.take() {
                        Some(task) => task.await.unwrap(),
                        None => 0,
                    };
                    say(format!("stopped {sent}"));
                }
                Some("quit") | None => return format!("subscribers {}", publisher.subscriber_count()),
                Some(other) => say(format!("bad command {other}")),
            },
        }
    }
}

/// b: receive losslessly, checking order; `got N` every `REPORT_EVERY` messages, `bad …` on a
/// gap or duplicate; `expect T` answers `done T`; `disconnect a` drops the connections to a.
async fn subscriber(
    router: &Router,
    endpoint: &MeshEndpoint,
    commands: &mut tokio::sync::mpsc::Receiver<String>,
) -> String {
    let lossless = SubscribeOptions::default()
        .capacity(QUEUE)
        .overflow(Overflow::Block);
    let mut interest = router.subscribe_with::<Reading>(PATH, lossless).unwrap();
    let mut order = InOrder::new(REPORT_EVERY);
    // `mark T` answers `reached T` once T messages are in.
    let mut mark: Option<u64> = None;
    loop {
        tokio::select! {
            reading = interest.recv() => {
                let Ok(reading) = reading else {
                    return format!("closed after {}", order.next);
                };
                order.received(reading.seq);
                if mark.is_some_and(|m| order.next >= m) {
                    say(format!("reached {}", mark.take().unwrap()));
                }
            }
            command = commands.recv() => match command.as_deref() {
                Some("status") => say(format!("status {}", status(endpoint))),
                Some("disconnect a") => endpoint.disconnect(peer_of("a")),
                Some(text) if text.starts_with("mark ") => {
                    let m: u64 = text["mark ".len()..].parse().unwrap();
                    if order.next >= m {
                        say(format!("reached {m}"));
                    } else {
                        mark = Some(m);
                    }
                }
                Some(text) if text.starts_with("expect ") => {
                    order.expect(text["expect ".len()..].parse().unwrap());
                }
                Some("quit") | None => return format!("received {}", order.next),
                Some(other) => say(format!("bad command {other}")),
            },
        }
    }
}
