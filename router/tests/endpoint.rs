//! The `Endpoint` / `RouterPort` contract, exercised by a loopback endpoint that joins two
//! routers in one process through encoded payloads (what remote and mesh links do over a wire).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use dndm_core::{
    Endpoint, EndpointError, Keypair, LocalChange, PayloadSink, PeerId, Route, RouterPort,
    SinkError,
};
use dndm_router::{LinkEvent, Origin, Router};
use support::{GUARD, Reading, ReadingV2};

/// One side of an in-memory link between two routers.
#[derive(Debug)]
struct Loopback {
    name: String,
    me: PeerId,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    port: Option<Arc<dyn RouterPort>>,
    peer: Option<Weak<Loopback>>,
    /// The other router's fan-in sinks for our intents, by route.
    fan_ins: HashMap<Route, Arc<dyn PayloadSink>>,
    /// Our current local adverts, replayed when the peer connects.
    local: Vec<LocalChange>,
    closed: bool,
}

/// A peer's interest as seen by the other router: forwards to our fan-in for the route.
#[derive(Debug)]
struct Forward(Weak<Loopback>);

#[async_trait::async_trait]
impl PayloadSink for Forward {
    async fn send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        let sink = self.sink(route)?;
        sink.send(route, payload).await
    }

    fn try_send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.sink(route)?.try_send(route, payload)
    }
}

impl Forward {
    fn sink(&self, route: &Route) -> Result<Arc<dyn PayloadSink>, SinkError> {
        let side = self.0.upgrade().ok_or(SinkError::Closed)?;
        let state = side.state.lock().unwrap();
        state.fan_ins.get(route).cloned().ok_or(SinkError::Closed)
    }
}

impl Loopback {
    fn new(name: &str, seed: u8) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            me: Keypair::from_seed([seed; 32]).peer_id(),
            state: Mutex::default(),
        })
    }

    fn connect(a: &Arc<Self>, b: &Arc<Self>) {
        a.state.lock().unwrap().peer = Some(Arc::downgrade(b));
        b.state.lock().unwrap().peer = Some(Arc::downgrade(a));
        for side in [a, b] {
            let local = side.state.lock().unwrap().local.clone();
            for change in local {
                side.forward(change);
            }
        }
    }

    fn peer(&self) -> Option<(Arc<Loopback>, Arc<dyn RouterPort>)> {
        let peer = self.state.lock().unwrap().peer.as_ref()?.upgrade()?;
        let port = peer.state.lock().unwrap().port.clone()?;
        Some((peer, port))
    }

    /// Tells the other router about one of our local changes.
    fn forward(self: &Arc<Self>, change: LocalChange) {
        let Some((peer, port)) = self.peer() else {
            return;
        };
        match change {
            LocalChange::IntentAdded(ad) => {
                let route = ad.route.clone();
                if let Ok(sink) = port.add_peer_intent(&self.me, ad) {
                    self.state.lock().unwrap().fan_ins.insert(route, sink);
                }
            }
            LocalChange::IntentRemoved(ad) => {
                self.state.lock().unwrap().fan_ins.remove(&ad.route);
                port.remove_peer_intent(&self.me, &ad.route);
            }
            LocalChange::InterestAdded(ad) => {
                // At the peer, our interest is a sink that hands the peer's messages to the
                // fan-ins its loopback got from our router (`peer.fan_ins`).
                let _ =
                    port.add_peer_interest(&self.me, ad, Arc::new(Forward(Arc::downgrade(&peer))));
            }
            LocalChange::InterestRemoved(ad) => port.remove_peer_interest(&self.me, &ad.pattern),
            // Services do not cross this loopback; the remote endpoint carries them.
            _ => {}
        }
    }
}

/// The endpoint as a router sees it (the router holds an `Arc<dyn Endpoint>`).
#[derive(Debug)]
struct Handle(Arc<Loopback>);

#[async_trait::async_trait]
impl Endpoint for Handle {
    fn name(&self) -> &str {
        &self.0.name
    }

    async fn start(
        &self,
        port: Arc<dyn RouterPort>,
        local: Vec<LocalChange>,
    ) -> Result<(), EndpointError> {
        let mut state = self.0.state.lock().unwrap();
        state.port = Some(port);
        state.local = local;
        Ok(())
    }

    fn on_local_change(&self, change: LocalChange) {
        {
            let mut state = self.0.state.lock().unwrap();
            match &change {
                LocalChange::IntentRemoved(ad) => state
                    .local
                    .retain(|c| c != &LocalChange::IntentAdded(ad.clone())),
                LocalChange::InterestRemoved(ad) => {
                    state
                        .local
                        .retain(|c| c != &LocalChange::InterestAdded(ad.clone()));
                }
                added => state.local.push(added.clone()),
            }
        }
        self.0.forward(change);
    }

    async fn close(&self) {
        let peer = {
            let mut state = self.0.state.lock().unwrap();
            state.closed = true;
            state.fan_ins.clear();
            state.peer.take()
        };
        if let Some(port) = peer
            .and_then(|p| p.upgrade())
            .and_then(|p| p.state.lock().unwrap().port.clone())
        {
            port.remove_peer(&self.0.me);
        }
    }
}

async fn pair() -> (Router, Router, Arc<Loopback>, Arc<Loopback>) {
    let (a, b) = (
        Router::builder().name("a").build().unwrap(),
        Router::builder().name("b").build().unwrap(),
    );
    let (la, lb) = (Loopback::new("loop-a", 1), Loopback::new("loop-b", 2));
    a.attach(Arc::new(Handle(la.clone()))).await.unwrap();
    b.attach(Arc::new(Handle(lb.clone()))).await.unwrap();
    (a, b, la, lb)
}

#[tokio::test]
async fn routes_declared_before_and_after_connecting_link_across_routers() {
    let (a, b, la, lb) = pair().await;
    let early = a.publish::<Reading>("robot.imu").unwrap();
    let mut sub = b.subscribe::<Reading>("robot.*").unwrap();
    Loopback::connect(&la, &lb);
    assert_eq!(
        early.subscriber_count(),
        1,
        "the hello-time route set linked"
    );
    let late = a.publish::<Reading>("robot.gps").unwrap();
    assert_eq!(late.subscriber_count(), 1, "a later advert linked");

    early.send(Reading::new(0, 1)).await.unwrap();
    late.send(Reading::new(1, 2)).await.unwrap();
    let first = tokio::time::timeout(GUARD, sub.recv())
        .await
        .unwrap()
        .unwrap();
    let second = tokio::time::timeout(GUARD, sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (first.publisher, first.seq, second.publisher, second.seq),
        (0, 1, 1, 2)
    );

    let snap = b.snapshot();
    assert_eq!(snap.endpoints, ["loop-b"]);
    let peer_intents: Vec<_> = snap
        .intents
        .iter()
        .filter(|i| matches!(i.origin, Origin::Peer(_)))
        .collect();
    assert_eq!(
        peer_intents.len(),
        2,
        "b sees a's two intents as peer intents"
    );
    // A peer intent is never linked to a peer interest: a sees b's interest only.
    assert!(a.snapshot().interests.iter().all(|i| i.queue.is_none()));
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn unlink_propagates_across_the_endpoint() {
    let (a, b, la, lb) = pair().await;
    Loopback::connect(&la, &lb);
    let intent = a.publish::<Reading>("x").unwrap();
    let mut events = intent.events();
    let sub = b.subscribe::<Reading>("x").unwrap();
    assert_eq!(intent.subscriber_count(), 1);
    match events.try_recv() {
        Some(LinkEvent::Linked {
            origin: Origin::Peer(peer),
            ..
        }) => assert_eq!(peer, lb.me),
        other => panic!("expected a link to b's interest, got {other:?}"),
    }
    drop(sub);
    assert_eq!(
        intent.subscriber_count(),
        0,
        "the publisher sees the remote subscriber leave"
    );
    assert!(matches!(
        events.try_recv(),
        Some(LinkEvent::Unlinked { .. })
    ));

    let _sub = b.subscribe::<Reading>("x").unwrap();
    assert_eq!(intent.subscriber_count(), 1);
    b.close().await;
    assert_eq!(
        intent.subscriber_count(),
        0,
        "closing b's endpoint withdraws its routes"
    );
    a.close().await;
}

#[tokio::test]
async fn fingerprint_mismatch_across_the_endpoint_is_refused_and_counted() {
    let (a, b, la, lb) = pair().await;
    Loopback::connect(&la, &lb);
    let intent = a.publish::<Reading>("m").unwrap();
    let sub = b.subscribe::<ReadingV2>("m").unwrap();
    assert_eq!(intent.subscriber_count(), 0);
    assert!(sub.stats().accepted == 0);
    assert_eq!(
        a.snapshot().counters.fingerprint_mismatches + b.snapshot().counters.fingerprint_mismatches,
        2
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn undecodable_payload_from_a_peer_is_counted_not_delivered() {
    let (a, b, la, lb) = pair().await;
    Loopback::connect(&la, &lb);
    let _intent = a.publish::<Reading>("bad").unwrap();
    let mut sub = b.subscribe::<Reading>("bad").unwrap();
    let sink = la
        .state
        .lock()
        .unwrap()
        .fan_ins
        .values()
        .next()
        .cloned()
        .unwrap();
    let route: Route = "test.Reading@bad".parse().unwrap();
    let err = sink
        .send(&route, Bytes::from_static(&[0xff, 0xff, 0xff]))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::Decode { .. }), "{err}");
    assert_eq!(sub.stats().decode_errors, 1);
    assert!(sub.try_recv().is_err());
    a.close().await;
    b.close().await;
}

/// A publisher answers an interest's advert at once (its history first, here synchronously),
/// so the subscribing router must be wired for the route before its advert leaves: nothing
/// the publisher sends in answer may arrive at a fan-in no local interest is linked to yet.
#[tokio::test]
async fn history_sent_in_answer_to_an_advert_reaches_the_new_subscriber() {
    use dndm_router::{PublishOptions, SubscribeOptions};
    let (a, b, la, lb) = pair().await;
    Loopback::connect(&la, &lb);
    let intent = a
        .publish_with::<Reading>("kept", PublishOptions::default().history(3))
        .unwrap();
    for seq in 0..3 {
        intent.send(Reading::new(0, seq)).await.unwrap();
    }
    // b knows a's intent (its fan-in exists) before it subscribes.
    let mut sub = b
        .subscribe_with::<Reading>("kept", SubscribeOptions::default().history(3))
        .unwrap();
    let mut got = Vec::new();
    while let Ok(reading) = sub.try_recv() {
        got.push(reading.seq);
    }
    assert_eq!(
        got,
        [0, 1, 2],
        "the history arrived before subscribe returned"
    );
    a.close().await;
    b.close().await;
}
