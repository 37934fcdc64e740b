//! Messages that do not reach a peer subscriber are counted per reason on the intent, in
//! `Intent::undelivered_by` and in the snapshot's `IntentInfo::undelivered_by_reason`.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use dndm_core::{
    Endpoint, EndpointError, InterestAd, Keypair, LocalChange, Message, PayloadSink, PeerId, Route,
    RouterPort, SinkError,
};
use dndm_router::{LinkEvent, Origin, Router, SendErrorKind, Undelivered};
use support::Reading;

/// An endpoint that only keeps the router's port, so the test plays the peer.
#[derive(Debug, Default)]
struct Capture {
    port: Mutex<Option<Arc<dyn RouterPort>>>,
}

#[async_trait::async_trait]
impl Endpoint for Capture {
    fn name(&self) -> &str {
        "capture"
    }

    async fn start(
        &self,
        port: Arc<dyn RouterPort>,
        _local: Vec<LocalChange>,
    ) -> Result<(), EndpointError> {
        *self.port.lock().unwrap() = Some(port);
        Ok(())
    }

    fn on_local_change(&self, _change: LocalChange) {}

    async fn close(&self) {}
}

/// A peer's interest whose link never has room.
#[derive(Debug)]
struct AlwaysFull;

#[async_trait::async_trait]
impl PayloadSink for AlwaysFull {
    async fn send(&self, _route: &Route, _payload: Bytes) -> Result<(), SinkError> {
        std::future::pending().await
    }

    fn try_send(&self, _route: &Route, _payload: Bytes) -> Result<(), SinkError> {
        Err(SinkError::Full)
    }
}

/// A router whose only peer subscribes to `path` through a sink that is always full.
async fn router_with_a_full_peer(path: &str) -> (Router, Arc<dyn RouterPort>, PeerId) {
    let router = Router::builder().name("u").build().unwrap();
    let capture = Arc::new(Capture::default());
    router.attach(capture.clone()).await.unwrap();
    let port = capture.port.lock().unwrap().clone().unwrap();
    let peer = Keypair::from_seed([7; 32]).peer_id();
    let ad = InterestAd {
        pattern: format!("test.Reading@{path}").parse().unwrap(),
        fingerprint: Reading::fingerprint(),
        schema: None,
        hashed: None,
        history: 0,
    };
    port.add_peer_interest(&peer, ad, Arc::new(AlwaysFull))
        .unwrap();
    (router, port, peer)
}

// Paused time: the one send that waits for the full peer gives up at its send timeout without
// the test waiting for it.
#[tokio::test(start_paused = true)]
async fn sends_that_give_up_on_a_full_peer_count_as_timeout_and_endpoint_losses_by_their_reason() {
    let (router, port, peer) = router_with_a_full_peer("full").await;
    let intent = router.publish::<Reading>("full").unwrap();
    assert_eq!(intent.subscriber_count(), 1, "the peer's interest linked");
    let mut events = intent.events();

    let err = intent.try_send(Reading::new(0, 1)).unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Full { undelivered: 1 });
    // Waits for room up to the send timeout, then marks the peer lagging...
    let err = intent.send(Reading::new(0, 2)).await.unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Timeout { undelivered: 1 });
    // ...so this one is dropped for it at once, and counted the same way.
    let err = intent.send(Reading::new(0, 3)).await.unwrap_err();
    assert_eq!(err.kind(), SendErrorKind::Timeout { undelivered: 1 });
    assert_eq!(intent.undelivered_by(Undelivered::Timeout), 3);

    // Losses inside the endpoint, reported with their own reasons.
    let route: Route = "test.Reading@full".parse().unwrap();
    port.report_undelivered(&peer, &route, 2, Undelivered::PeerGone);
    port.report_undelivered(&peer, &route, 1, Undelivered::TooLarge);

    let by_reason: Vec<(Undelivered, u64)> = Undelivered::ALL
        .iter()
        .map(|reason| (*reason, intent.undelivered_by(*reason)))
        .collect();
    assert_eq!(
        by_reason,
        [
            (Undelivered::Timeout, 3),
            (Undelivered::PeerGone, 2),
            (Undelivered::PeerRestarted, 0),
            (Undelivered::TooLarge, 1),
            (Undelivered::Closed, 0),
        ]
    );
    assert_eq!(
        intent.undelivered(),
        6,
        "the total is the sum of the reasons"
    );

    let snapshot = router.snapshot();
    let info = snapshot
        .intents
        .iter()
        .find(|i| i.origin == Origin::Local)
        .unwrap();
    assert_eq!(info.undelivered, 6);
    assert_eq!(
        info.undelivered_by_reason,
        [
            (Undelivered::Timeout, 3),
            (Undelivered::PeerGone, 2),
            (Undelivered::TooLarge, 1),
        ],
        "non-zero reasons only, in Undelivered::ALL order"
    );
    assert_eq!(info.undelivered_by(Undelivered::PeerGone), 2);
    assert_eq!(info.undelivered_by(Undelivered::Closed), 0);

    // Each loss was reported on the event stream with the same reason.
    let mut reported = Vec::new();
    while let Some(event) = events.try_recv() {
        if let LinkEvent::Undelivered {
            peer: p,
            count,
            reason,
            ..
        } = event
        {
            assert_eq!(p, peer);
            reported.push((reason, count));
        }
    }
    assert_eq!(
        reported,
        [
            (Undelivered::Timeout, 1),
            (Undelivered::Timeout, 1),
            (Undelivered::Timeout, 1),
            (Undelivered::PeerGone, 2),
            (Undelivered::TooLarge, 1),
        ]
    );
    router.close().await;
}

#[tokio::test]
async fn an_intent_that_lost_nothing_has_no_reason_in_its_snapshot() {
    let router = Router::builder().build().unwrap();
    let intent = router.publish::<Reading>("fine").unwrap();
    let mut sub = router.subscribe::<Reading>("fine").unwrap();
    intent.send(Reading::new(0, 1)).await.unwrap();
    sub.try_recv().unwrap();
    let snapshot = router.snapshot();
    assert_eq!(snapshot.intents[0].undelivered, 0);
    assert!(snapshot.intents[0].undelivered_by_reason.is_empty());
    assert!(
        Undelivered::ALL
            .iter()
            .all(|reason| intent.undelivered_by(*reason) == 0)
    );
    router.close().await;
}
