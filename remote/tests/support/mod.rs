//! What the remote tests share: the workspace's test fixtures, and session helpers.
#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::time::Instant;

use bytes::Bytes;
use dndm_codec::SessionId;
use dndm_remote::endpoint::RemoteEndpoint;
use dndm_remote::session::{Connection, Event, Session};
pub use dndm_test_support::{Reading, ReadingV2, keypair, peer};

/// A plain connection (no Noise binding, no expected peer) with session id `[id; 32]`.
pub fn conn(id: u8) -> Connection {
    Connection {
        session_id: SessionId::from_bytes([id; 32]),
        binding: None,
        expected_peer: None,
    }
}

/// Moves frames both ways (`poll_transmit` on one, `handle_frame` on the other) until both
/// sides are quiet. Returns how many frames moved.
pub fn shuttle(a: &mut Session, b: &mut Session, now: Instant) -> usize {
    let mut moved = 0;
    loop {
        let mut progressed = false;
        while let Some(frame) = a.poll_transmit(now) {
            b.handle_frame(now, frame);
            moved += 1;
            progressed = true;
        }
        while let Some(frame) = b.poll_transmit(now) {
            a.handle_frame(now, frame);
            moved += 1;
            progressed = true;
        }
        if !progressed {
            return moved;
        }
        assert!(moved < 100_000, "the sessions never went quiet");
    }
}

/// Every event a session has reported.
pub fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

/// Payloads of the `Message` events among `events`.
pub fn messages(events: &[Event]) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

/// Waits until `done` holds for `endpoint`, woken by its link changes (a minute of guard:
/// it only bounds a failure).
pub async fn until(endpoint: &RemoteEndpoint, what: &str, done: impl Fn(&RemoteEndpoint) -> bool) {
    let mut changes = endpoint.link_changes();
    tokio::time::timeout(std::time::Duration::from_secs(120), async {
        while !done(endpoint) {
            changes.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Two routers `a` and `b`, each with a remote endpoint, linked over an in-memory stream (the
/// transport counts as secured: no Noise, peers known up front).
pub async fn linked_pair() -> (dndm_router::Router, dndm_router::Router) {
    use std::sync::Arc;
    let (ka, kb) = (keypair(1), keypair(2));
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let node = |name: &str, keypair: dndm_core::Keypair| {
        let router = dndm_router::Router::builder().name(name).build().unwrap();
        let endpoint = RemoteEndpoint::new(keypair, Default::default()).unwrap();
        (router, endpoint)
    };
    let (a, ea) = node("a", ka);
    let (b, eb) = node("b", kb);
    a.attach(Arc::new(ea.clone())).await.unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();
    let (one, other) = tokio::io::duplex(64 * 1024);
    ea.adopt_authenticated(idb, Box::new(one), true);
    eb.adopt_authenticated(ida, Box::new(other), false);
    (a, b)
}
