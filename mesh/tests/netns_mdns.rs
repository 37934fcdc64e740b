//! Three hosts in three network namespaces on one bridge (`tests/netns/testbed.sh`): mesh nodes
//! started with no peer configuration find each other over mDNS, and a reliable route survives
//! a partition. The DNS-SD record a node registers names no loopback address (read by a plain
//! browser on another host). h1 publishes; h2 and h3 subscribe losslessly. While h1 streams, h3's cable is
//! pulled; once h3's sessions are seen down it is plugged back, and both subscribers must have
//! every message exactly once and in order.
//!
//! The parent test drives the testbed and runs this test binary once per host (the `#[ignore]`d
//! test `netns_child`, selected with `--ignored --exact`, its host in `DNDM_NETNS_ROLE`). Parent
//! and children speak in lines: the parent writes commands to a child's stdin; a child writes
//! `@@ <report>` lines on stdout (the marker keeps libtest's own output apart).
//!
//! Needs root (CI runs as root); without root the test fails unless `DNDM_SKIP_NETNS=1`. Run by
//! hand: `cargo test -p dndm-mesh --test netns_mdns` (see `tests/netns/README.md`; `DNDM_LOG=debug`
//! logs each node's tracing on stderr, prefixed with its host).

#![allow(clippy::unwrap_used)]

mod netns;

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dndm_core::{Keypair, Message, Qos};
use dndm_mesh::{MeshConfig, MeshEndpoint, Multiaddr, Transport};
use dndm_router::{Overflow, PublishOptions, Router, SubscribeOptions};
use libp2p::multiaddr::Protocol;
use netns::{Host, InOrder, ROLE, Testbed, say};

/// The route path of the stream.
const PATH: &str = "netns.stream";
/// The subscribers' queue (lossless: the publisher waits when it is full).
const QUEUE: usize = 1024;
/// Subscribers report progress every this many messages; h3 is cut after the first report.
const REPORT_EVERY: u64 = 250;
/// h1 sends one message per tick while streaming (about 1000 messages a second): fast enough
/// that what h1 writes towards the cut-off h3 fills the stream's flow-control window, so the
/// link must notice a write that stalls (it fails after the idle timeout) rather than block.
const SEND_TICK: Duration = Duration::from_millis(1);

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

#[test]
fn three_namespaces_discover_over_mdns_and_resume_after_a_partition() {
    if !netns::should_run("netns_mdns") {
        return;
    }
    let started = Instant::now();
    let testbed = Testbed::up("testbed.sh", &[], "dndm", &["3"]);
    let mut h1 = Host::spawn(&testbed, "h1", "netns_child");
    let mut h2 = Host::spawn(&testbed, "h2", "netns_child");
    let mut h3 = Host::spawn(&testbed, "h3", "netns_child");

    // Discovery: no dial addresses anywhere, so every session comes from mDNS (and what the
    // first peers tell over Kademlia). Each node ends with sessions to both others.
    let mut h1_peer = String::new();
    for host in [&mut h1, &mut h2, &mut h3] {
        let ready = host.expect("ready");
        if host.name == "h1" {
            h1_peer = ready.rsplit(' ').next().unwrap().to_owned();
        }
        host.expect("peers 2");
    }
    // (`lan` counts the peers a node found itself: one that dialed it first may not be
    // counted yet, so it is shown, not asserted.)
    for host in [&mut h1, &mut h2, &mut h3] {
        host.send("status");
        let status = host.expect("status ");
        eprintln!("{}: {status} after {:?}", host.name, started.elapsed());
    }
    h1.send("subscribers 2");
    h1.expect("subscribers 2");

    // Stream, and pull h3's cable mid-stream.
    h1.send("start");
    h3.expect(&format!("got {REPORT_EVERY}"));
    let cut = Instant::now();
    testbed.run(&["link", "h3", "down"]);
    // The publisher keeps going; the sessions to h3 end by idle timeout on both sides.
    h1.expect_since(Some(cut), "peers 1 ");
    h3.expect_since(Some(cut), "peers 0 ");
    let got_before = h3.last_count("got ");
    eprintln!(
        "h3 cut off after {got_before} messages; sessions seen down after {:?}",
        cut.elapsed()
    );

    let heal = Instant::now();
    testbed.run(&["link", "h3", "up"]);
    h1.expect_since(Some(heal), "peers 2 ");
    h3.expect_since(Some(heal), "peers 2 ");
    eprintln!("h3's sessions back {:?} after the heal", heal.elapsed());

    // Stop and count: every message 0..total exactly once, in order, on both subscribers.
    h1.send("stop");
    let total: u64 = h1.expect("stopped ")["stopped ".len()..].parse().unwrap();
    assert!(
        total > got_before,
        "h1 sent {total} messages, h3 had {got_before} when cut"
    );
    for host in [&mut h2, &mut h3] {
        host.send(&format!("expect {total}"));
        host.expect(&format!("done {total}"));
    }
    // h1's DNS-SD record as a plain browser in h2 reads it: for the LAN, so no loopback
    // address anywhere in it. Then close: the record is withdrawn (a goodbye).
    h2.send(&format!("watch {h1_peer}"));
    let seen = h2.expect(&format!("mdns-seen {h1_peer} "));
    eprintln!("h1's record as h2 reads it: {seen}");
    assert_lan_record(&seen);
    h1.quit();
    h2.expect(&format!("mdns-gone {h1_peer}"));
    for host in [&mut h2, &mut h3] {
        host.quit();
    }
    eprintln!(
        "{total} messages through a partition, 0 lost, 0 duplicated; test took {:?}",
        started.elapsed()
    );
    drop(testbed);
}

/// Checks a `mdns-seen <peer> ips=<A/AAAA> addrs=<TXT addrs>` report: the record names
/// addresses, none of them loopback or unspecified, and the TXT `addrs` none link-local either.
/// (A first resolution may carry only some of the A/AAAA records, so the two lists are not
/// compared.)
fn assert_lan_record(seen: &str) {
    let field = |key: &str| -> Vec<String> {
        let value = seen
            .split(' ')
            .find_map(|word| word.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {seen:?}"));
        value
            .split(',')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let ips: Vec<std::net::IpAddr> = field("ips=").iter().map(|ip| ip.parse().unwrap()).collect();
    assert!(!ips.is_empty(), "{seen}");
    for ip in &ips {
        assert!(
            !ip.is_loopback() && !ip.is_unspecified(),
            "A/AAAA {ip} in {seen}"
        );
    }
    let addrs = field("addrs=");
    assert!(!addrs.is_empty(), "{seen}");
    for addr in &addrs {
        let addr: Multiaddr = addr.parse().unwrap();
        let ip = match addr.iter().next() {
            Some(Protocol::Ip4(ip)) => std::net::IpAddr::from(ip),
            Some(Protocol::Ip6(ip)) => std::net::IpAddr::from(ip),
            other => panic!("TXT address {addr} starts with {other:?}"),
        };
        let link_local = match ip {
            std::net::IpAddr::V4(v4) => v4.is_link_local(),
            std::net::IpAddr::V6(v6) => v6.is_unicast_link_local(),
        };
        assert!(
            !ip.is_loopback() && !ip.is_unspecified() && !link_local,
            "TXT address {addr} in {seen}"
        );
    }
}

/// One host's node (see the module docs for the lines it speaks).
#[test]
#[ignore = "run by the netns test as a child process inside a namespace"]
fn netns_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
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

async fn child_node(role: &str) {
    let index: u8 = role.trim_start_matches('h').parse().unwrap();
    let router = Router::builder().name(role).build().unwrap();
    let mut config = MeshConfig::default();
    config.transport = Transport::Tcp;
    config.mdns = true;
    config.listen = vec!["/ip4/0.0.0.0/tcp/0".parse().unwrap()];
    config.dial.clear();
    // Notice a pulled cable within seconds, and come back quickly once it is plugged in.
    config.remote.session.keepalive = Duration::from_millis(500);
    config.remote.session.idle_timeout = Duration::from_secs(2);
    config.remote.session.node_name = role.to_owned();
    config.remote.backoff_initial = Duration::from_millis(50);
    config.remote.backoff_max = Duration::from_millis(500);
    let endpoint = MeshEndpoint::new(Keypair::from_seed([index; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    say(format!("ready {role} {}", endpoint.peer_id()));

    // Link state: a line whenever the sessions up or the failures change.
    let watcher = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            let mut changes = endpoint.link_changes();
            let mut last = String::new();
            loop {
                let line = status(&endpoint);
                if line != last {
                    say(&line);
                    last = line;
                }
                if changes.changed().await.is_err() {
                    break;
                }
            }
        }
    });

    // Commands from the parent; stdin closing means quit.
    let (commands_tx, mut commands) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if commands_tx.blocking_send(line).is_err() {
                return;
            }
        }
        let _ = commands_tx.blocking_send("quit".to_owned());
    });

    let summary = if index == 1 {
        publisher(&router, &endpoint, &mut commands).await
    } else {
        subscriber(&router, &endpoint, &mut commands).await
    };
    watcher.abort();
    router.close().await;
    say(format!("bye {summary}"));
}

/// `peers <sessions up> lan <of those, found over mDNS> failures <session failures>`.
fn status(endpoint: &MeshEndpoint) -> String {
    let peers = endpoint.mesh_peers();
    let up = peers.iter().filter(|p| p.session).count();
    let lan = peers.iter().filter(|p| p.session && p.lan).count();
    let failures: u64 = peers.iter().map(|p| p.failures).sum();
    format!("peers {up} lan {lan} failures {failures}")
}

/// h1: `subscribers N` answers `subscribers N` once N subscribers are linked; `start` streams
/// `Reading { seq: 0, 1, … }` on a reliable route until `stop`, which answers `stopped <count>`.
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
                Some("start") => {
                    let (publisher, stop) = (publisher.clone(), stop.clone());
                    sender = Some(tokio::spawn(async move {
                        let mut tick = tokio::time::interval(SEND_TICK);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        let mut seq = 0;
                        // Stop only between sends: a send cancelled half-way would reach one
                        // subscriber and not the other.
                        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                            tick.tick().await;
                            if let Err(e) = publisher.send(Reading { seq }).await {
                                say(format!("bad send of {seq}: {e}"));
                                break;
                            }
                            seq += 1;
                            if seq.is_multiple_of(REPORT_EVERY) {
                                say(format!("sent {seq}"));
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

/// h2, h3: receive losslessly, checking order; `got N` every `REPORT_EVERY` messages, `bad …`
/// on a gap or duplicate; `expect T` answers `done T` once exactly T messages arrived.
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
    loop {
        tokio::select! {
            reading = interest.recv() => {
                let Ok(reading) = reading else {
                    return format!("closed after {}", order.next);
                };
                order.received(reading.seq);
            }
            command = commands.recv() => match command.as_deref() {
                Some("status") => say(format!("status {}", status(endpoint))),
                Some(text) if text.starts_with("expect ") => {
                    order.expect(text["expect ".len()..].parse().unwrap());
                }
                Some(text) if text.starts_with("watch ") => watch_mdns(text["watch ".len()..].to_owned()),
                Some("quit") | None => return format!("received {}", order.next),
                Some(other) => say(format!("bad command {other}")),
            },
        }
    }
}

/// Browses `_dndm._tcp.local.` with a daemon of its own (as any DNS-SD browser would) and
/// reports `mdns-seen <peer> ips=<A/AAAA addresses> addrs=<TXT addrs>` when `peer`'s record
/// resolves, `mdns-gone <peer>` when it is withdrawn.
fn watch_mdns(peer: String) {
    let daemon = mdns_sd::ServiceDaemon::new().unwrap();
    let events = daemon.browse(dndm_mesh::SERVICE_TYPE).unwrap();
    let instance = format!("{peer}.{}", dndm_mesh::SERVICE_TYPE);
    std::thread::spawn(move || {
        let _daemon = daemon;
        while let Ok(event) = events.recv() {
            match event {
                mdns_sd::ServiceEvent::ServiceResolved(service) if service.fullname == instance => {
                    let mut ips: Vec<String> = service
                        .get_addresses()
                        .iter()
                        .map(|ip| ip.to_ip_addr().to_string())
                        .collect();
                    ips.sort();
                    let addrs = service.get_property_val_str("addrs").unwrap_or_default();
                    say(format!(
                        "mdns-seen {peer} ips={} addrs={addrs}",
                        ips.join(",")
                    ));
                }
                mdns_sd::ServiceEvent::ServiceRemoved(_, name) if name == instance => {
                    say(format!("mdns-gone {peer}"));
                    return;
                }
                _ => {}
            }
        }
    });
}
