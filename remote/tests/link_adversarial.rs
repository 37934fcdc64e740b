//! Hostile connections to a remote endpoint over real TCP: identities that are not allowed or do
//! not own their Noise key, floods of connections for one peer, peers that never send a hello,
//! connections beyond the handshake and link budgets, and ciphertext tampered with on the wire.
//! Each is cut and counted, and the real peer's link is unharmed.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dndm_core::{BudgetKind, Keypair, PeerId, Qos};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_remote::noise::{Channel, StaticKey, sign_binding};
use dndm_router::{PublishOptions, Router};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use support::{Reading, keypair, peer, until};

const GUARD: Duration = Duration::from_secs(20);
/// Seed of the listening endpoint.
const SERVER: u8 = 5;
/// Seed of the real peer that dials it.
const REAL: u8 = 6;

/// A router whose endpoint listens on TCP loopback, admitting only `allow` if given.
async fn listener(allow: Option<&[PeerId]>) -> (Router, RemoteEndpoint, SocketAddr) {
    listener_with(|config| {
        config.session.allow_peers =
            allow.map(|peers| peers.iter().copied().collect::<HashSet<_>>());
    })
    .await
}

/// A router whose endpoint listens on TCP loopback, with `adjust` applied to its config.
async fn listener_with(
    adjust: impl FnOnce(&mut RemoteConfig),
) -> (Router, RemoteEndpoint, SocketAddr) {
    let router = Router::builder().name("server").build().unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    adjust(&mut config);
    let endpoint = RemoteEndpoint::new(keypair(SERVER), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    let Target::Tcp(addr) = endpoint.bound().remove(0) else {
        panic!("tcp")
    };
    (router, endpoint, addr)
}

/// A router whose endpoint (identity `seed`) dials `addr`.
async fn dialer(seed: u8, addr: SocketAddr) -> (Router, RemoteEndpoint) {
    let router = Router::builder().name("dialer").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::Tcp(addr)];
    let endpoint = RemoteEndpoint::new(keypair(seed), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    (router, endpoint)
}

/// A hand-made client: runs the Noise handshake to `addr` as initiator, then sends the identity
/// preamble claiming `claimed`'s key with `signer`'s signature over its Noise static key (a
/// real peer when both are the same keypair). Sends nothing after it.
async fn client(addr: SocketAddr, claimed: &Keypair, signer: &Keypair) -> TcpStream {
    let static_key = StaticKey::generate().unwrap();
    let mut channel = Channel::initiator(&static_key).unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(out) = channel.poll_transmit() {
            stream.write_all(&out).await.unwrap();
        }
        if channel.is_established() {
            break;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the endpoint closed during the noise handshake");
        channel.handle_input(&buf[..n]).unwrap();
    }
    let mut preamble = claimed.public().to_bytes().to_vec();
    preamble.extend_from_slice(&sign_binding(signer, &static_key.public()));
    channel.write(&preamble).unwrap();
    while let Some(out) = channel.poll_transmit() {
        stream.write_all(&out).await.unwrap();
    }
    stream
}

/// Reads until the endpoint closes the connection (the event the tests wait for).
async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(GUARD, async {
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("the endpoint closed the connection");
}

/// `a` publishes `seq` reliably on `route`; `b` receives it.
async fn exchange(a: &Router, b: &Router, route: &str, seq: u64) {
    let publisher = a
        .publish_with::<Reading>(route, PublishOptions::default().qos(Qos::reliable()))
        .unwrap();
    let mut subscriber = b.subscribe::<Reading>(route).unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    publisher.send(Reading { seq }).await.unwrap();
    let got = tokio::time::timeout(GUARD, subscriber.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.seq, seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_off_the_allow_list_are_cut_before_any_link_starts() {
    let (server, endpoint, addr) = listener(Some(&[peer(REAL)])).await;
    // Genuine identities (each signs its Noise key), just not allowed.
    for seed in 20..25 {
        let stranger = keypair(seed);
        let mut stream = client(addr, &stranger, &stranger).await;
        until_closed(&mut stream).await;
    }
    let stats = endpoint.stats();
    assert_eq!((stats.handshake_failures, stats.link_failures), (5, 0));
    assert!(endpoint.peers().is_empty(), "{:?}", endpoint.peers());
    // The allowed peer still gets through.
    let (real, _real_endpoint) = dialer(REAL, addr).await;
    exchange(&server, &real, "allowed", 1).await;
    real.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbound_claim_cannot_displace_the_real_peers_connection_before_its_hello() {
    let (server, endpoint, addr) = listener(None).await;
    let real = keypair(REAL);
    // The real peer's connection, between its preamble and its hello.
    let _real_stream = client(addr, &real, &real).await;
    until(&endpoint, "the real peer's connection to run", |e| {
        e.has_connection(&real.peer_id())
    })
    .await;
    // An impostor claims the real peer's key but cannot sign its own Noise key with it.
    let impostor = keypair(30);
    let mut stream = client(addr, &real, &impostor).await;
    until_closed(&mut stream).await;
    let stats = endpoint.stats();
    assert_eq!(stats.handshake_failures, 1);
    // The real connection was not superseded (that would be a link failure) and still runs.
    assert_eq!(stats.link_failures, 0);
    assert!(endpoint.has_connection(&real.peer_id()));
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_floods_for_a_connected_peer_are_cut_and_its_link_stays_up() {
    let (server, endpoint, addr) = listener(None).await;
    let (real, real_endpoint) = dialer(REAL, addr).await;
    exchange(&server, &real, "before", 1).await;
    let real_id = real_endpoint.peer_id();

    let impostor = keypair(30);
    let mut stream = client(addr, &keypair(REAL), &impostor).await;
    until_closed(&mut stream).await;
    assert_eq!(endpoint.stats().handshake_failures, 1);

    // Genuine extra connections of the real peer wait for its link, but only so many: the rest
    // are cut at once instead of waiting for good.
    let (closed_tx, mut closed) = mpsc::channel(8);
    let mut waiting = Vec::new();
    for i in 0..8 {
        let mut stream = client(addr, &keypair(REAL), &keypair(REAL)).await;
        let closed_tx = closed_tx.clone();
        waiting.push(tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            let _ = closed_tx.send(i).await;
        }));
    }
    tokio::time::timeout(GUARD, closed.recv())
        .await
        .expect("an extra connection is cut")
        .unwrap();
    assert!(endpoint.stats().handshake_failures >= 2);
    let stats = endpoint.stats();
    assert!(
        stats.over_budget.get(BudgetKind::ConnectionsPerPeer) >= 1,
        "{stats:?}"
    );
    assert_eq!(endpoint.stats().link_failures, 0);
    assert!(endpoint.is_connected(&real_id));
    assert_eq!(endpoint.peers(), vec![real_id]);
    exchange(&server, &real, "after", 2).await;
    real.close().await;
    server.close().await;
    for task in waiting {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_sends_its_hello_leaves_no_link_behind() {
    let (server, endpoint, addr) = listener(None).await;
    let stranger = keypair(40);
    let stream = client(addr, &stranger, &stranger).await;
    until(&endpoint, "the stranger's link", |e| {
        e.peers() == vec![stranger.peer_id()]
    })
    .await;
    drop(stream);
    until(&endpoint, "the stranger's link to end", |e| {
        e.peers().is_empty()
    })
    .await;
    assert!(endpoint.links().is_empty());
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_handshake_budget_is_closed_at_once_and_counted() {
    let (server, endpoint, addr) = listener_with(|config| {
        config.session.budget.handshakes = 4;
        // The waiting connections keep their slots for the whole test.
        config.handshake_timeout = Duration::from_secs(600);
    })
    .await;
    // Four connections that never start the handshake take every slot (the endpoint accepts
    // in order), so the fifth is closed as soon as it is accepted.
    let mut waiting = Vec::new();
    for _ in 0..4 {
        waiting.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut fifth = TcpStream::connect(addr).await.unwrap();
    until_closed(&mut fifth).await;
    let stats = endpoint.stats();
    assert_eq!(
        stats.over_budget.get(BudgetKind::Handshakes),
        1,
        "{stats:?}"
    );
    assert_eq!(stats.over_budget.total(), 1, "{stats:?}");
    assert_eq!(stats.handshake_failures, 1, "{stats:?}");
    // Their handshakes end when they go, freeing the slots: a real peer gets in.
    drop(waiting);
    until(&endpoint, "the four to end", |e| {
        e.stats().handshake_failures == 5
    })
    .await;
    let (real, _real_endpoint) = dialer(REAL, addr).await;
    exchange(&server, &real, "after.crowd", 1).await;
    assert_eq!(endpoint.stats().over_budget.total(), 1);
    real.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_identity_beyond_the_link_budget_is_refused_after_its_handshake() {
    let (server, endpoint, addr) = listener_with(|config| config.session.budget.links = 2).await;
    // Two identities with a connection (no hello yet) hold both links.
    let first = client(addr, &keypair(40), &keypair(40)).await;
    let _second = client(addr, &keypair(41), &keypair(41)).await;
    until(&endpoint, "two links", |e| e.peers().len() == 2).await;
    let mut third = client(addr, &keypair(42), &keypair(42)).await;
    until_closed(&mut third).await;
    let stats = endpoint.stats();
    assert_eq!(stats.over_budget.get(BudgetKind::Links), 1, "{stats:?}");
    assert_eq!(stats.over_budget.total(), 1, "{stats:?}");
    assert_eq!(stats.handshake_failures, 1, "{stats:?}");
    assert!(!endpoint.peers().contains(&peer(42)));
    // A peer that never sent a hello keeps no link once its connection ends: room again.
    drop(first);
    until(&endpoint, "the first link to end", |e| e.peers().len() == 1).await;
    let _third = client(addr, &keypair(42), &keypair(42)).await;
    until(&endpoint, "the third identity's link", |e| {
        e.peers().contains(&peer(42))
    })
    .await;
    assert_eq!(endpoint.stats().over_budget.get(BudgetKind::Links), 1);
    server.close().await;
}

/// A TCP proxy to `target` that, once armed, flips one bit of the next Noise message from the
/// dialer to the listener (past the handshake and preamble), then forwards faithfully again.
async fn tampering_proxy(target: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let armed = Arc::new(AtomicBool::new(false));
    let arm = armed.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(target).await else {
                continue;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
            });
            let armed = arm.clone();
            tokio::spawn(async move {
                // Noise messages: 2-byte big-endian length, then the message. The first two
                // are handshake messages, the third carries the identity preamble.
                let mut index = 0u64;
                loop {
                    let Ok(len) = client_rx.read_u16().await else {
                        return;
                    };
                    let mut message = vec![0u8; usize::from(len)];
                    if client_rx.read_exact(&mut message).await.is_err() {
                        return;
                    }
                    if index >= 3 && armed.swap(false, Ordering::SeqCst) {
                        message[0] ^= 0x01;
                    }
                    index += 1;
                    let mut out = len.to_be_bytes().to_vec();
                    out.extend_from_slice(&message);
                    if server_tx.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, armed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_ciphertext_closes_the_link_is_counted_and_the_peer_reconnects() {
    let (server, endpoint, addr) = listener(None).await;
    let (proxy, armed) = tampering_proxy(addr).await;
    let (real, _real_endpoint) = dialer(REAL, proxy).await;
    let publisher = real
        .publish_with::<Reading>("t", PublishOptions::default().qos(Qos::reliable()))
        .unwrap();
    let mut subscriber = server.subscribe::<Reading>("t").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();

    armed.store(true, Ordering::SeqCst);
    publisher.send(Reading { seq: 1 }).await.unwrap();
    until(&endpoint, "the decrypt failure", |e| {
        e.stats().decrypt_failures > 0
    })
    .await;
    let stats = endpoint.stats();
    assert_eq!(stats.decrypt_failures, 1);
    assert_eq!(stats.bad_frames, 0);
    assert!(stats.link_failures >= 1);

    // The peer redials through the (now faithful) proxy; what was lost is resent.
    publisher.send(Reading { seq: 2 }).await.unwrap();
    for seq in 1..=2 {
        let got = tokio::time::timeout(GUARD, subscriber.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.seq, seq);
    }
    assert_eq!(endpoint.stats().decrypt_failures, 1);
    real.close().await;
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_pinned_to_another_identity_is_cut_and_the_right_pin_connects() {
    let (server, server_endpoint, addr) = listener(None).await;
    // Pinned to an identity the node at `addr` does not have: every attempt is cut after the
    // handshake, counted, and no link comes up.
    let wrong = Router::builder().name("wrong").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::pinned(peer(30), Target::Tcp(addr))];
    let wrong_endpoint = RemoteEndpoint::new(keypair(REAL), config).unwrap();
    wrong
        .attach(Arc::new(wrong_endpoint.clone()))
        .await
        .unwrap();
    until(&wrong_endpoint, "two refused dials", |e| {
        e.stats().handshake_failures >= 2
    })
    .await;
    assert!(wrong_endpoint.links().iter().all(|l| !l.connected));
    assert_eq!(wrong_endpoint.stats().link_failures, 0);
    wrong.close().await;

    // Pinned to the server's identity: the link works.
    let right = Router::builder().name("right").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::pinned(peer(SERVER), Target::Tcp(addr))];
    let right_endpoint = RemoteEndpoint::new(keypair(REAL), config).unwrap();
    right
        .attach(Arc::new(right_endpoint.clone()))
        .await
        .unwrap();
    exchange(&server, &right, "pinned", 7).await;
    assert_eq!(right_endpoint.stats().handshake_failures, 0);
    assert_eq!(right_endpoint.peers(), vec![server_endpoint.peer_id()]);
    right.close().await;
    server.close().await;
}

#[tokio::test]
async fn a_pinned_target_cannot_be_listened_on() {
    let router = Router::builder().build().unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::pinned(
        peer(SERVER),
        Target::Tcp("127.0.0.1:0".parse().unwrap()),
    )];
    let endpoint = RemoteEndpoint::new(keypair(REAL), config).unwrap();
    let err = router.attach(Arc::new(endpoint)).await.unwrap_err();
    assert!(err.to_string().contains("cannot listen on"), "{err}");
    router.close().await;
}
