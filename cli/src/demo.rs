//! `dndm demo`: a local libp2p mesh exchanging typed messages, with a live line and a report.
//!
//! Every node is a [`Router`] with its own [`MeshEndpoint`] on loopback TCP (mDNS off, so it
//! runs anywhere); the first node listens and the others bootstrap by dialing it, then find one
//! another through Kademlia. Roles:
//!
//! - `hub` (node 0): the lossless `fusion` subscriber (`robot.*.imu`, `Block`), a slow lossy
//!   `dashboard` on the same pattern (`DropOldest`, 64) and the `robot.status`
//!   request/response service.
//! - every other node: one IMU sensor publishing `robot.<name>.imu` reliably.
//! - the last node also runs the lossless `logger` (`robot.**`, `Block`) and a client calling
//!   the hub's service.
//!
//! Each node subscribes to one pattern only: a node with two overlapping patterns currently
//! receives a peer's message once per pattern (reported upstream), which the lossless order
//! check would flag.
//!
//! The run fails (non-zero exit) if a lossless subscriber misses or reorders a message, or a
//! lossy one loses a message without counting it.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use dndm::mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm::{
    HandlerError, Intent, Interest, Keypair, Overflow, PublishOptions, Qos, RequestError, Router,
    SubscribeOptions,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One IMU sample.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Imu {
    #[prost(string, tag = "1")]
    pub(crate) sensor: String,
    #[prost(uint64, tag = "2")]
    pub(crate) seq: u64,
    #[prost(float, tag = "3")]
    pub(crate) ax: f32,
    #[prost(float, tag = "4")]
    pub(crate) ay: f32,
    #[prost(float, tag = "5")]
    pub(crate) az: f32,
    /// Microseconds since the demo started, for latency (all nodes share one process clock).
    #[prost(uint64, tag = "6")]
    pub(crate) sent_us: u64,
}

impl prost::Name for Imu {
    const NAME: &'static str = "Imu";
    const PACKAGE: &'static str = "dndm.demo";
}
impl dndm::Message for Imu {}

/// Request for the status service.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct StatusRequest {}

impl prost::Name for StatusRequest {
    const NAME: &'static str = "StatusRequest";
    const PACKAGE: &'static str = "dndm.demo";
}
impl dndm::Message for StatusRequest {}

/// Answer of the status service.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Status {
    #[prost(string, tag = "1")]
    pub(crate) text: String,
}

impl prost::Name for Status {
    const NAME: &'static str = "Status";
    const PACKAGE: &'static str = "dndm.demo";
}
impl dndm::Message for Status {}

/// Node names; node 0 is the hub, the others are sensors.
const NAMES: [&str; 8] = [
    "hub", "arm", "head", "gripper", "base", "wheel", "lidar", "camera",
];

/// Messages each sensor publishes when neither `--messages` nor `--duration` is given.
const DEFAULT_MESSAGES: u64 = 100_000;

/// Failure guard for the mesh to form and for a subscriber waiting on its next message.
const GUARD: Duration = Duration::from_secs(60);

/// Interval between live summary updates on a terminal (a plain line every 4 updates otherwise).
const LIVE_TICK: Duration = Duration::from_millis(250);

/// Interval between calls to the status service during the run.
const REQUEST_TICK: Duration = Duration::from_millis(20);

/// Latency samples kept by the fusion subscriber (later samples are not recorded).
const MAX_SAMPLES: usize = 1 << 21;

/// Arguments of `dndm demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Messages each sensor publishes (default 100000 unless --duration is given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    messages: Option<u64>,
    /// Publish for this many seconds instead (with --messages: whichever ends first).
    #[arg(long, value_parser = crate::parse_seconds)]
    duration: Option<Duration>,
    /// Mesh nodes to start: a hub plus (N - 1) sensors.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(2..=8))]
    nodes: u8,
    /// Also record every sensor's signed batches into this file, from one more node
    /// (`dndm verify FILE`, `dndm info FILE` read it).
    #[arg(long, value_name = "FILE")]
    record: Option<std::path::PathBuf>,
}

/// One mesh node of the demo.
struct Node {
    name: &'static str,
    router: Router,
    mesh: MeshEndpoint,
}

/// What a subscriber task saw.
struct Seen {
    name: String,
    node: &'static str,
    policy: &'static str,
    received: u64,
    dropped: u64,
    latencies: Vec<u64>,
}

/// Live counters shared with the summary line.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    received: AtomicU64,
    requests: AtomicU64,
    last_rtt_us: AtomicU64,
}

/// Runs the demo; fails if a subscriber missed, reordered or silently lost anything.
pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let limit = match (args.messages, args.duration) {
        (None, None) => Some(DEFAULT_MESSAGES),
        (messages, _) => messages,
    };
    let nodes = start_mesh(usize::from(args.nodes)).await?;
    let recorder = match &args.record {
        Some(path) => Some(crate::record::demo_recorder(&nodes[0].mesh, path).await?),
        None => None,
    };
    let result = exchange(&nodes, limit, args.duration, recorder.is_some()).await;
    let recorded = match recorder {
        Some(recorder) => recorder.finish().await,
        None => Ok(()),
    };
    for node in nodes.iter().rev() {
        node.router.close().await;
    }
    result.and(recorded)
}

/// Starts `count` routers with mesh endpoints; all but the first dial the first.
async fn start_mesh(count: usize) -> anyhow::Result<Vec<Node>> {
    let mut nodes: Vec<Node> = Vec::with_capacity(count);
    let mut bootstrap: Option<String> = None;
    for name in NAMES.iter().take(count) {
        let router = Router::builder()
            .name(*name)
            .send_timeout(Duration::from_secs(30))
            .build()?;
        let mut config = MeshConfig::default();
        config.transport = Transport::Tcp;
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
        config.mdns = false;
        config.remote.session.node_name = (*name).to_owned();
        if let Some(address) = &bootstrap {
            config.dial = vec![address.parse()?];
        }
        let mesh = MeshEndpoint::new(Keypair::generate()?, config)?;
        router
            .attach(Arc::new(mesh.clone()))
            .await
            .with_context(|| format!("node {name}: cannot start its mesh endpoint"))?;
        if bootstrap.is_none() {
            let address = first_listen_address(&mesh).await?;
            bootstrap = Some(format!("{address}/p2p/{}", mesh.peer_id()));
        }
        nodes.push(Node { name, router, mesh });
    }
    println!(
        "dndm demo: {count} mesh nodes on 127.0.0.1 (TCP, mDNS off), bootstrapped through {}",
        bootstrap.as_deref().unwrap_or("-")
    );
    Ok(nodes)
}

/// The mesh's first listen address, once its listener is up.
pub(crate) async fn first_listen_address(mesh: &MeshEndpoint) -> anyhow::Result<String> {
    let listening = tokio::time::timeout(Duration::from_secs(10), mesh.wait_listening())
        .await
        .context("the mesh listener did not come up within 10 s")?;
    listening
        .first()
        .map(ToString::to_string)
        .context("the mesh has no listen address")
}

/// Declares every role, runs the exchange and prints the report.
/// `recorder`: one more subscriber (a recording node) each sensor waits for.
async fn exchange(
    nodes: &[Node],
    limit: Option<u64>,
    duration: Option<Duration>,
    recorder: bool,
) -> anyhow::Result<()> {
    let origin = Instant::now();
    let hub = &nodes[0];
    let last = &nodes[nodes.len() - 1];
    let sensors = &nodes[1..];
    let lossless = SubscribeOptions::default()
        .capacity(1024)
        .overflow(Overflow::Block);
    let fusion = hub
        .router
        .subscribe_with::<Imu>("robot.*.imu", lossless.clone())?;
    let logger = last.router.subscribe_with::<Imu>("robot.**", lossless)?;
    let dashboard = hub.router.subscribe_with::<Imu>(
        "robot.*.imu",
        SubscribeOptions::default()
            .capacity(64)
            .overflow(Overflow::DropOldest),
    )?;
    let _status = {
        let router = hub.router.clone();
        hub.router
            .serve::<StatusRequest, Status, _, _>("robot.status", move |_| {
                let snapshot = router.snapshot();
                let peers = snapshot.peers.iter().filter(|p| p.connected).count();
                async move {
                    Ok::<_, HandlerError>(Status {
                        text: format!(
                            "{} intents, {} interests, {} links, {peers} peers",
                            snapshot.intents.len(),
                            snapshot.interests.len(),
                            snapshot.links.len()
                        ),
                    })
                }
            })?
    };
    let mut intents = Vec::new();
    for node in sensors {
        let intent = node.router.publish_with::<Imu>(
            &format!("robot.{}.imu", node.name),
            PublishOptions::default().qos(Qos::reliable()),
        )?;
        intents.push((node.name, intent));
    }

    print_live(&format!(
        "forming the mesh: {} sensors waiting for the hub and the logger",
        sensors.len()
    ));
    for (name, intent) in &intents {
        // The hub's two interests share a pattern, so they reach a sensor as one peer interest;
        // the logger is the other (and a recorder one more). Waiting for fewer would let a
        // sensor start before the hub's lossless subscriber is linked.
        let want = 2 + usize::from(recorder);
        crate::pubsub::wait_for_subscribers(intent, want, GUARD)
            .await
            .map_err(|seen| {
                anyhow::anyhow!(
                    "sensor {name}: the mesh did not form: {} sees {seen} of {want} subscribers after {} s",
                    intent.route(),
                    GUARD.as_secs()
                )
            })?;
    }
    print_live("");
    println!(
        "mesh formed in {:.2} s: {} sensors x {} reliable Imu messages{}",
        origin.elapsed().as_secs_f64(),
        sensors.len(),
        limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        duration.map_or_else(String::new, |d| format!(", for {:.1} s", d.as_secs_f64()))
    );

    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    let (target_tx, target) = watch::channel(None::<u64>);
    let subscribers = vec![
        tokio::spawn(subscriber(
            "fusion",
            hub.name,
            fusion,
            true,
            target.clone(),
            progress.clone(),
            origin,
        )),
        tokio::spawn(subscriber(
            "logger",
            last.name,
            logger,
            true,
            target.clone(),
            progress.clone(),
            origin,
        )),
        tokio::spawn(subscriber(
            "dashboard",
            hub.name,
            dashboard,
            false,
            target,
            progress.clone(),
            origin,
        )),
    ];
    let requester = tokio::spawn(call_status(
        last.router.clone(),
        stop.clone(),
        progress.clone(),
    ));
    let live = tokio::spawn(live_summary(
        nodes.iter().map(|n| n.mesh.clone()).collect(),
        progress.clone(),
        stop.clone(),
    ));

    let start = Instant::now();
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut publishers = Vec::new();
    for (name, intent) in intents {
        let progress = progress.clone();
        publishers.push(tokio::spawn(async move {
            publish(name, intent, limit, deadline, origin, &progress).await
        }));
    }
    let mut total = 0;
    for publisher in publishers {
        total += publisher.await.context("a publisher task failed")??;
    }
    let elapsed_sending = start.elapsed();
    let _ = target_tx.send(Some(total));
    let mut seen = Vec::new();
    let mut failure = None;
    for task in subscribers {
        match task.await.context("a subscriber task failed")? {
            Ok(s) => seen.push(s),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed();
    stop.cancel();
    live.await.context("the live summary task failed")?;
    let (mut rtts, status) = requester.await.context("the status client failed")?;
    if let Some(e) = failure {
        return Err(e);
    }

    println!("final report");
    println!(
        "  published   {} sensors, {total} reliable messages in {:.3} s ({:.0} msg/s)",
        nodes.len() - 1,
        elapsed_sending.as_secs_f64(),
        total as f64 / elapsed_sending.as_secs_f64()
    );
    let mut ok = true;
    for s in &mut seen {
        s.latencies.sort_unstable();
        let latency = if s.latencies.is_empty() {
            String::new()
        } else {
            format!(
                "; latency p50 {} us, p99 {} us",
                percentile(&s.latencies, 0.5),
                percentile(&s.latencies, 0.99)
            )
        };
        let lossless = s.policy == "Block";
        if lossless {
            ok &= s.received == total && s.dropped == 0;
            println!(
                "  subscriber  {}@{} ({}) {}/{total} received, {} lost, in order per sensor{latency}",
                s.name,
                s.node,
                s.policy,
                s.received,
                total - s.received.min(total)
            );
        } else {
            ok &= s.received + s.dropped == total;
            println!(
                "  subscriber  {}@{} ({}) {}/{total} received, {} dropped (counted)",
                s.name, s.node, s.policy, s.received, s.dropped
            );
        }
    }
    rtts.sort_unstable();
    ensure!(
        !rtts.is_empty(),
        "the status service on {} never answered",
        hub.name
    );
    println!(
        "  service     robot.status on {}: {} requests from {}, rtt p50 {} us, p99 {} us; {status}",
        hub.name,
        rtts.len(),
        last.name,
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99)
    );
    let mut session_rtts = Vec::new();
    let mut peer_counts = Vec::new();
    for node in nodes {
        let peers = node.mesh.mesh_peers();
        let up = peers.iter().filter(|p| p.session).count();
        session_rtts.extend(
            peers
                .iter()
                .filter_map(|p| p.rtt.map(|r| r.as_micros() as u64)),
        );
        peer_counts.push(format!("{} {up}", node.name));
        ok &= up > 0;
    }
    session_rtts.sort_unstable();
    println!(
        "  peers       {} (sessions up); session rtt p50 {} us",
        peer_counts.join(", "),
        if session_rtts.is_empty() {
            "-".to_owned()
        } else {
            percentile(&session_rtts, 0.5).to_string()
        }
    );
    println!(
        "  elapsed     {:.3} s until every subscriber had every message",
        elapsed.as_secs_f64()
    );
    ensure!(
        ok,
        "a subscriber lost messages, or a node has no peer (see the report)"
    );
    println!("ok");
    Ok(())
}

/// Publishes until `limit` messages are sent or `deadline` passes; returns the count.
async fn publish(
    name: &'static str,
    intent: Intent<Imu>,
    limit: Option<u64>,
    deadline: Option<tokio::time::Instant>,
    origin: Instant,
    progress: &Progress,
) -> anyhow::Result<u64> {
    let mut seq = 0u64;
    while limit.is_none_or(|n| seq < n) && deadline.is_none_or(|d| tokio::time::Instant::now() < d)
    {
        let sample = Imu {
            sensor: name.to_owned(),
            seq,
            ax: seq as f32 * 0.001,
            ay: (seq % 100) as f32 * 0.01,
            az: 9.81,
            sent_us: origin.elapsed().as_micros() as u64,
        };
        intent
            .send(sample)
            .await
            .map_err(|e| anyhow::anyhow!("sensor {name}: {e}"))?;
        seq += 1;
        progress.sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(seq)
}

/// Receives until it has accounted for every message published (the target), checking order
/// per sensor when `lossless`; a lossy subscriber yields after each message, so it overflows.
async fn subscriber(
    name: &'static str,
    node: &'static str,
    mut interest: Interest<Imu>,
    lossless: bool,
    mut target: watch::Receiver<Option<u64>>,
    progress: Arc<Progress>,
    origin: Instant,
) -> anyhow::Result<Seen> {
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut latencies = Vec::new();
    let mut received = 0u64;
    loop {
        let stats = interest.stats();
        let dropped = stats.dropped();
        if let Some(total) = *target.borrow_and_update()
            && received + dropped >= total
        {
            return Ok(Seen {
                name: name.to_owned(),
                node,
                policy: if lossless { "Block" } else { "DropOldest" },
                received,
                dropped,
                latencies,
            });
        }
        let sample = tokio::select! {
            changed = target.changed() => {
                if changed.is_err() {
                    bail!("{name}@{node}: the demo ended early");
                }
                continue;
            }
            sample = tokio::time::timeout(GUARD, interest.recv()) => sample,
        };
        let sample = sample
            .map_err(|_| {
                anyhow::anyhow!(
                    "{name}@{node} got nothing for {} s after {received} messages",
                    GUARD.as_secs()
                )
            })?
            .with_context(|| format!("{name}@{node}: subscription closed early"))?;
        received += 1;
        if lossless {
            progress.received.fetch_add(1, Ordering::Relaxed);
            let expected = next.entry(sample.sensor.clone()).or_insert(0);
            if sample.seq != *expected {
                bail!(
                    "{name}@{node}: sensor {} sent {} but {} was expected",
                    sample.sensor,
                    sample.seq,
                    expected
                );
            }
            *expected += 1;
            if name == "fusion" && latencies.len() < MAX_SAMPLES {
                latencies
                    .push((origin.elapsed().as_micros() as u64).saturating_sub(sample.sent_us));
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
}

/// Calls the hub's status service every [`REQUEST_TICK`] until stopped; returns the round
/// trips in microseconds and the last answer. Calls before the service is known to this node
/// are skipped.
async fn call_status(
    router: Router,
    stop: CancellationToken,
    progress: Arc<Progress>,
) -> (Vec<u64>, String) {
    let mut rtts = Vec::new();
    let mut last = String::new();
    let mut tick = tokio::time::interval(REQUEST_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return (rtts, last),
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let answer = router
            .request::<StatusRequest, Status>(
                "robot.status",
                StatusRequest {},
                Duration::from_secs(5),
            )
            .await;
        match answer {
            Ok(status) => {
                last = status.text;
                let rtt = started.elapsed().as_micros() as u64;
                rtts.push(rtt);
                progress.requests.fetch_add(1, Ordering::Relaxed);
                progress.last_rtt_us.store(rtt, Ordering::Relaxed);
            }
            Err(RequestError::NoListener(_)) => {}
            Err(e) => tracing::warn!(error = %e, "status request failed"),
        }
    }
}

/// Prints the live summary line until stopped: rewritten in place on a terminal, a plain line
/// every second otherwise.
async fn live_summary(meshes: Vec<MeshEndpoint>, progress: Arc<Progress>, stop: CancellationToken) {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut tick = tokio::time::interval(LIVE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    let (mut last_received, mut last_at) = (0u64, Instant::now());
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        ticks += 1;
        if !tty && !ticks.is_multiple_of(4) {
            continue;
        }
        let received = progress.received.load(Ordering::Relaxed);
        let rate = (received - last_received) as f64 / last_at.elapsed().as_secs_f64();
        (last_received, last_at) = (received, Instant::now());
        let (mut up, mut rtts) = (0usize, Vec::new());
        for mesh in &meshes {
            for peer in mesh.mesh_peers() {
                up += usize::from(peer.session);
                rtts.extend(peer.rtt);
            }
        }
        rtts.sort_unstable();
        let session_rtt = rtts.get(rtts.len() / 2).map_or_else(
            || "-".to_owned(),
            |r| format!("{:.2} ms", r.as_secs_f64() * 1e3),
        );
        let line = format!(
            "{:>6.1} s  sent {:>9}  delivered {:>9}  {:>9.0} msg/s  rtt {session_rtt} (service {:.2} ms)  sessions {up}/{}",
            started.elapsed().as_secs_f64(),
            progress.sent.load(Ordering::Relaxed),
            received,
            rate,
            progress.last_rtt_us.load(Ordering::Relaxed) as f64 / 1e3,
            meshes.len() * (meshes.len() - 1),
        );
        if tty {
            print_live(&line);
        } else {
            println!("  {line}");
        }
    }
    if tty {
        print_live("");
    }
}

/// Rewrites the current terminal line (plain line when stdout is not a terminal).
fn print_live(line: &str) {
    let mut out = std::io::stdout().lock();
    if out.is_terminal() {
        let _ = write!(out, "\r\x1b[2K{line}");
        let _ = out.flush();
    } else if !line.is_empty() {
        let _ = writeln!(out, "{line}");
    }
}

/// The value at fraction `p` of sorted, non-empty `values`.
fn percentile(values: &[u64], p: f64) -> u64 {
    values[((values.len() - 1) as f64 * p) as usize]
}
