//! A crowd at the door of a listening endpoint (issue #13): 1,000 TCP connections that never
//! finish the Noise handshake and 100 identities that complete it, send a hello and stay. A
//! legitimate peer dialing while the crowd arrives still connects and streams every message in
//! order; every half-open connection is timed out or refused, and counted; the half-open ones
//! leave no link; the process (both ends) stays under a stated memory bound.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dndm_codec::SessionId;
use dndm_core::{BudgetKind, Keypair, Qos};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_remote::noise::{Channel, StaticKey, sign_binding};
use dndm_remote::session::{Binding, Connection, Session, SessionConfig};
use dndm_router::{PublishOptions, Router, SubscribeOptions};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use support::{Reading, keypair, until};

/// Bounds a failure only.
const GUARD: Duration = Duration::from_secs(120);
/// Connections that never finish the handshake.
const HALF_OPEN: usize = 1000;
/// Identities that complete the handshake, send a hello and stay.
const IDENTITIES: u8 = 100;
/// Messages the legitimate peer streams.
const MESSAGES: u64 = 10_000;
/// File descriptors the full crowd needs in this process: both ends of every connection, plus
/// the runtime's and the test harness's own.
const FDS_NEEDED: u64 = 2 * (HALF_OPEN as u64 + IDENTITIES as u64) + 256;
/// Bound on the peak resident memory of this whole test process (the endpoint under test, the
/// crowd's client sockets and sessions, the legitimate peer and the test binary). Measured at
/// 12 MiB peak (debug build, x86-64 Linux, 2 cores); the bound leaves 5x room for allocator and
/// platform variance. Without the handshake budget every half-open connection would hold its
/// handshake task and 64 KiB read buffer until it timed out.
const PEAK_RSS_BOUND_MIB: u64 = 64;
/// Seed of the listening endpoint, and of the legitimate peer.
const SERVER: u8 = 5;
const REAL: u8 = 6;
/// First seed of the crowd's identities.
const CROWD: u8 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_half_open_connections_and_idle_identities_does_not_keep_a_peer_out() {
    let half_open = crowd_size();
    let server = Router::builder().name("server").build().unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    config.handshake_timeout = Duration::from_secs(1);
    // The idle identities answer no ping; they stay for the whole test.
    config.session.idle_timeout = Duration::from_secs(600);
    let endpoint = RemoteEndpoint::new(keypair(SERVER), config).unwrap();
    server.attach(Arc::new(endpoint.clone())).await.unwrap();
    let Target::Tcp(addr) = endpoint.bound().remove(0) else {
        panic!("tcp")
    };
    let mut received = server
        .subscribe_with::<Reading>(
            "crowd.stream",
            SubscribeOptions::default().capacity(MESSAGES as usize),
        )
        .unwrap();

    // The half-open crowd arrives; the legitimate peer dials at the same time (redialing with
    // backoff while the handshake budget turns it away).
    let crowd = tokio::spawn(half_open_crowd(addr, half_open));
    let real = Router::builder().name("real").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::Tcp(addr)];
    config.backoff_max = Duration::from_secs(1);
    config.breaker_cool_down = Duration::from_secs(1);
    let real_endpoint = RemoteEndpoint::new(keypair(REAL), config).unwrap();
    real.attach(Arc::new(real_endpoint.clone())).await.unwrap();
    let crowd = crowd.await.unwrap();
    until(
        &endpoint,
        "every half-open connection timed out or refused",
        |e| e.stats().handshake_failures >= half_open as u64,
    )
    .await;

    // The identities that complete the handshake and a hello, then stay silent.
    let mut stayers = Vec::new();
    for seed in CROWD..CROWD + IDENTITIES {
        stayers.push(identity_that_stays(addr, &keypair(seed)).await);
    }
    until(&endpoint, "every identity's hello", |e| {
        e.links().iter().filter(|l| l.connected).count() > usize::from(IDENTITIES)
    })
    .await;
    assert!(real_endpoint.is_connected(&keypair(SERVER).peer_id()));

    // The legitimate peer streams, everything arrives in order.
    let publisher = real
        .publish_with::<Reading>(
            "crowd.stream",
            PublishOptions::default().qos(Qos::reliable()),
        )
        .unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    let started = Instant::now();
    for seq in 0..MESSAGES {
        publisher.send(Reading { seq }).await.unwrap();
    }
    for seq in 0..MESSAGES {
        let got = tokio::time::timeout(GUARD, received.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, seq);
    }
    let elapsed = started.elapsed();

    // Every half-open connection was closed by the endpoint (timed out or refused) ...
    for mut stream in crowd {
        let mut buf = [0u8; 256];
        tokio::time::timeout(GUARD, async {
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await
        .expect("the endpoint closed the half-open connection");
    }
    // ... and counted; none left a link; the identities and the real peer have theirs.
    let stats = endpoint.stats();
    assert!(stats.handshake_failures >= half_open as u64, "{stats:?}");
    let refused = stats.over_budget.get(BudgetKind::Handshakes);
    assert!(refused <= stats.handshake_failures, "{stats:?}");
    assert_eq!(stats.over_budget.get(BudgetKind::Links), 0, "{stats:?}");
    assert_eq!(endpoint.peers().len(), usize::from(IDENTITIES) + 1);
    assert_eq!(stats.link_failures, 0, "{stats:?}");

    let (rss, peak) = (rss_mib("VmRSS:"), rss_mib("VmHWM:"));
    println!(
        "crowd: {half_open} half-open connections ({refused} refused by the handshake budget, \
         {} timed out), {IDENTITIES} idle identities; {MESSAGES} messages in {elapsed:?} \
         ({:.0}/s); RSS {rss:?} MiB, peak {peak:?} MiB",
        stats.handshake_failures - refused,
        MESSAGES as f64 / elapsed.as_secs_f64(),
    );
    if let Some(peak) = peak {
        assert!(
            peak <= PEAK_RSS_BOUND_MIB,
            "peak RSS {peak} MiB above {PEAK_RSS_BOUND_MIB} MiB"
        );
    }
    drop(stayers);
    real.close().await;
    server.close().await;
}

/// How many half-open connections this process can hold: [`HALF_OPEN`], or fewer (with a
/// note) when the hard limit on open files is too low for the full crowd.
fn crowd_size() -> usize {
    let limit = raise_fd_limit();
    if limit >= FDS_NEEDED {
        return HALF_OPEN;
    }
    let fit = usize::try_from(limit.saturating_sub(FDS_NEEDED - 2 * HALF_OPEN as u64) / 2)
        .unwrap_or(0)
        .max(100);
    println!(
        "note: the open-file limit ({limit}) is below the {FDS_NEEDED} the full crowd needs; \
         running with {fit} half-open connections instead of {HALF_OPEN}"
    );
    fit
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
#[cfg(unix)]
fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

#[cfg(not(unix))]
fn raise_fd_limit() -> u64 {
    FDS_NEEDED
}

/// `count` connections that never finish the handshake: half send nothing, half the first
/// Noise message and nothing after it.
async fn half_open_crowd(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let key = StaticKey::generate().unwrap();
    let mut crowd = Vec::with_capacity(count);
    for i in 0..count {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            let mut channel = Channel::initiator(&key).unwrap();
            let first = channel.poll_transmit().unwrap();
            // A refused connection may already be closed.
            let _ = stream.write_all(&first).await;
        }
        crowd.push(stream);
    }
    crowd
}

/// A hand-made peer with identity `keypair`: runs the Noise handshake and the identity
/// preamble, sends its hello, and then nothing (it never reads, acks or answers a ping).
/// Retries when the endpoint turns it away (its handshake budget is spent).
async fn identity_that_stays(addr: SocketAddr, keypair: &Keypair) -> (TcpStream, Session) {
    for _ in 0..100 {
        if let Some(stayer) = try_identity(addr, keypair).await {
            return stayer;
        }
    }
    panic!("the endpoint never let identity {} in", keypair.peer_id());
}

async fn try_identity(addr: SocketAddr, keypair: &Keypair) -> Option<(TcpStream, Session)> {
    let static_key = StaticKey::generate().unwrap();
    let mut channel = Channel::initiator(&static_key).unwrap();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut buf = vec![0u8; 4096];
    loop {
        while let Some(out) = channel.poll_transmit() {
            stream.write_all(&out).await.ok()?;
        }
        if channel.is_established() {
            break;
        }
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        channel.handle_input(&buf[..n]).unwrap();
    }
    let binding = sign_binding(keypair, &static_key.public());
    let mut preamble = keypair.public().to_bytes().to_vec();
    preamble.extend_from_slice(&binding);
    channel.write(&preamble).unwrap();
    let now = Instant::now();
    let mut session = Session::new(SessionConfig::default(), keypair.clone(), 1);
    session.handle_connect(
        now,
        Connection {
            session_id: SessionId::from_bytes(channel.handshake_hash().unwrap()),
            binding: Some(Binding {
                local_signature: binding,
                remote_static: channel.remote_static().unwrap(),
            }),
            expected_peer: None,
        },
    );
    while let Some(frame) = session.poll_transmit(now) {
        channel.write(&frame).unwrap();
    }
    while let Some(out) = channel.poll_transmit() {
        stream.write_all(&out).await.ok()?;
    }
    Some((stream, session))
}

/// A memory figure of this process from `/proc/self/status` (`VmRSS:` now, `VmHWM:` peak),
/// in MiB; `None` where there is no procfs.
fn rss_mib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}
