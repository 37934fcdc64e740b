//! Two routers joined by remote endpoints over real sockets (TCP loopback and a Unix socket):
//! typed pub/sub both ways, subscribers joining and leaving, fingerprint mismatches, and close.

#![allow(clippy::unwrap_used)]

mod support;
use dndm_test_support::{request_once_served, send_and_receive_in_order};

use std::sync::Arc;
use std::time::Duration;

use dndm_core::{Keypair, LinkError, Qos};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{LinkEvent, PublishOptions, Router};

use support::{Reading, ReadingV2};

const GUARD: Duration = Duration::from_secs(20);

/// Router `a` listens on `listen`, router `b` dials what `a` bound.
async fn pair(listen: Target) -> (Router, Router, RemoteEndpoint, RemoteEndpoint) {
    let a = Router::builder().name("a").build().unwrap();
    let b = Router::builder().name("b").build().unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![listen];
    let ea = RemoteEndpoint::new(Keypair::from_seed([1; 32]), config).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let dial = ea.bound().remove(0);
    let mut config = RemoteConfig::default();
    config.dial = vec![dial];
    let eb = RemoteEndpoint::new(Keypair::from_seed([2; 32]), config).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();
    (a, b, ea, eb)
}

async fn exchange(listen: Target) {
    if std::env::var("DNDM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
            .try_init();
    }
    let (a, b, ea, eb) = pair(listen).await;
    let publisher = a
        .publish_with::<Reading>("robot.imu", PublishOptions::default().qos(Qos::reliable()))
        .unwrap();
    let mut subscriber = b.subscribe::<Reading>("robot.*").unwrap();
    let waited = publisher.wait_for_interest(GUARD).await;
    assert_eq!(
        waited.ok(),
        Some(1),
        "b's interest reached a: {:?} {:?} {:?} {:?}",
        ea.stats(),
        eb.stats(),
        ea.peers(),
        eb.peers()
    );
    send_and_receive_in_order(&publisher, &mut subscriber, 1000, GUARD).await;
    // The other way round.
    let back = b.publish::<Reading>("reply").unwrap();
    let mut reply = a.subscribe::<Reading>("reply").unwrap();
    back.wait_for_interest(GUARD).await.unwrap();
    back.send(Reading { seq: 42 }).await.unwrap();
    assert_eq!(
        tokio::time::timeout(GUARD, reply.recv())
            .await
            .unwrap()
            .unwrap()
            .seq,
        42
    );

    // A subscriber leaving is seen by the remote publisher.
    let mut events = publisher.events();
    drop(subscriber);
    tokio::time::timeout(GUARD, async {
        while publisher.subscriber_count() > 0 {
            let _ = events.recv().await;
        }
    })
    .await
    .expect("the publisher sees the remote subscriber leave");
    assert_eq!(ea.peers(), vec![eb.peer_id()]);
    assert_eq!(eb.peers(), vec![ea.peer_id()]);

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_pub_sub_both_ways_over_tcp() {
    exchange(Target::Tcp("127.0.0.1:0".parse().unwrap())).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_pub_sub_both_ways_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("dndm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    exchange(Target::Unix(dir.join("link.sock"))).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fingerprint_mismatch_is_refused_on_both_sides() {
    let (a, b, ea, eb) = pair(Target::Tcp("127.0.0.1:0".parse().unwrap())).await;
    let publisher = a.publish::<Reading>("m").unwrap();
    let mut a_events = publisher.events();
    let v2 = b.subscribe::<ReadingV2>("m").unwrap();
    let mut b_events = v2.events();
    // Each router refuses the other's declaration, and tells its own handle.
    for events in [&mut a_events, &mut b_events] {
        let event = tokio::time::timeout(GUARD, async {
            loop {
                if let Ok(event @ LinkEvent::Refused { .. }) = events.recv().await {
                    return event;
                }
            }
        })
        .await
        .expect("the mismatch is reported");
        assert!(
            matches!(
                event,
                LinkEvent::Refused {
                    error: LinkError::FingerprintMismatch { .. },
                    ..
                }
            ),
            "{event:?}"
        );
    }
    assert_eq!(a.snapshot().counters.fingerprint_mismatches, 1);
    assert_eq!(b.snapshot().counters.fingerprint_mismatches, 1);
    assert_eq!(publisher.subscriber_count(), 0);
    let _ = (ea, eb);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_every_task_and_the_peer_withdraws_routes() {
    if std::env::var("DNDM_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("DNDM_LOG"))
            .try_init();
    }
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let (a, b, _ea, _eb) = pair(Target::Tcp("127.0.0.1:0".parse().unwrap())).await;
    let publisher = a.publish::<Reading>("c").unwrap();
    let _sub = b.subscribe::<Reading>("c").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    b.close().await;
    // a hears b's orderly close and unlinks b's interest.
    tokio::time::timeout(GUARD, async {
        let mut events = publisher.events();
        while publisher.subscriber_count() > 0 {
            let _ = events.recv().await;
        }
    })
    .await
    .expect("a sees b's interest withdrawn");
    a.close().await;
    tokio::time::timeout(GUARD, async {
        while metrics.num_alive_tasks() > baseline {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("no task left");
}

/// A listening endpoint with a short handshake timeout.
async fn listener() -> (Router, RemoteEndpoint, std::net::SocketAddr) {
    let router = Router::builder().name("l").build().unwrap();
    let mut config = RemoteConfig::default();
    config.listen = vec![Target::Tcp("127.0.0.1:0".parse().unwrap())];
    config.handshake_timeout = Duration::from_millis(200);
    let endpoint = RemoteEndpoint::new(Keypair::from_seed([5; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    let Target::Tcp(addr) = endpoint.bound().remove(0) else {
        panic!("tcp")
    };
    (router, endpoint, addr)
}

/// Reads until the server closes the connection (the event the tests wait for).
async fn until_closed(stream: &mut tokio::net::TcpStream) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(GUARD, async {
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("the endpoint closed the connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_finishes_the_handshake_is_cut_and_counted() {
    let (router, endpoint, addr) = listener().await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    until_closed(&mut silent).await;
    assert_eq!(endpoint.stats().handshake_failures, 1);
    assert!(endpoint.peers().is_empty());
    router.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_a_handshake_is_cut_and_counted_and_the_process_is_unharmed() {
    use tokio::io::AsyncWriteExt as _;
    let (router, endpoint, addr) = listener().await;
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        &[0u8; 3][..],
        &[0xff; 70_000][..],
    ] {
        let mut peer = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = peer.write_all(garbage).await;
        until_closed(&mut peer).await;
    }
    assert_eq!(endpoint.stats().handshake_failures, 3);
    // A well-behaved peer still gets through.
    let b = Router::builder().name("b").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![Target::Tcp(addr)];
    let eb = RemoteEndpoint::new(Keypair::from_seed([6; 32]), config).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();
    let publisher = router.publish::<Reading>("ok").unwrap();
    let _sub = b.subscribe::<Reading>("ok").unwrap();
    assert_eq!(publisher.wait_for_interest(GUARD).await.unwrap(), 1);
    b.close().await;
    router.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_across_the_link() {
    use dndm_router::{HandlerError, RequestError};
    let (a, b, _ea, _eb) = pair(Target::Tcp("127.0.0.1:0".parse().unwrap())).await;
    let _service = a
        .serve::<Reading, Reading, _, _>("double", |r: Reading| async move {
            if r.seq == 13 {
                Err(HandlerError::new("unlucky 13"))
            } else {
                Ok(Reading { seq: r.seq * 2 })
            }
        })
        .unwrap();
    // The service reaches b with the hello; wait for it by asking (NoListener until then).
    let first =
        request_once_served::<Reading, Reading>(&b, "double", Reading { seq: 1 }, GUARD).await;
    assert_eq!(first.unwrap().seq, 2);
    // Concurrent requests are correlated.
    let calls = (0..50u64).map(|seq| {
        let b = b.clone();
        tokio::spawn(async move {
            b.request::<Reading, Reading>("double", Reading { seq: seq + 100 }, GUARD)
                .await
        })
    });
    for (seq, call) in futures_join(calls).await.into_iter().enumerate() {
        assert_eq!(call.unwrap().seq, (seq as u64 + 100) * 2);
    }
    let err = b
        .request::<Reading, Reading>("double", Reading { seq: 13 }, GUARD)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "handler on test.Reading@double failed: unlucky 13"
    );
    let err = b
        .request::<Reading, Reading>("nobody", Reading { seq: 1 }, GUARD)
        .await
        .unwrap_err();
    assert!(matches!(err, RequestError::NoListener(_)), "{err}");
    a.close().await;
    b.close().await;
}

async fn futures_join<T>(handles: impl IntoIterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
