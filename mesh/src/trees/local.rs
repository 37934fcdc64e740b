//! The trees' side of the router: local routes offered to remote subscribers (their messages
//! batched and signed), remote streams linked as peer intents (their messages delivered).

use std::sync::Arc;

use bytes::Bytes;
use dndm_core::{IntentAd, InterestAd, PayloadSink, PeerId, Qos, Route, RoutePattern, SinkError};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{BATCH_BYTES, BATCH_PAYLOADS, Trees};
use crate::overlay::Batch;
use crate::overlay::wire;

/// Bytes of one stream's messages the router may hold for full local subscribers before
/// further ones are not delivered (counted in [`TreeStats::undeliverable`]).
pub(super) const HOLD_LIMIT: usize = 64 << 20;

/// A remote stream linked to local subscribers: the router's sink, and a task that moves
/// messages the sink held back (for a full `Block` subscriber) on as the subscriber drains.
/// Dropping it ends the task.
pub(super) struct Delivery {
    sink: Arc<dyn PayloadSink>,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

impl Delivery {
    fn start(
        sink: Arc<dyn PayloadSink>,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Self {
        let wake = Arc::new(Notify::new());
        let stop = cancel.child_token();
        let (task_sink, task_wake, task_stop) = (sink.clone(), wake.clone(), stop.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = task_stop.cancelled() => return,
                    () = task_wake.notified() => {}
                }
                while task_sink.backlog() > 0 {
                    tokio::select! {
                        biased;
                        () = task_stop.cancelled() => return,
                        () = task_sink.ready() => {}
                    }
                    if task_sink.pump() == 0 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        Self { sink, wake, stop }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Messages of a local route for the trees: the router's peer interest for every remote
/// subscriber of the route.
#[derive(Debug)]
pub(super) struct OriginSink {
    pub(super) tx: mpsc::Sender<(Route, Bytes)>,
}

#[async_trait::async_trait]
impl PayloadSink for OriginSink {
    async fn send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.tx
            .send((route.clone(), payload))
            .await
            .map_err(|_| SinkError::Closed)
    }

    fn try_send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.tx
            .try_send((route.clone(), payload))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SinkError::Full,
                mpsc::error::TrySendError::Closed(_) => SinkError::Closed,
            })
    }
}

impl Trees {
    /// Batches what local routes published (as much as waits, up to the batch bounds), signs
    /// each batch and hands it to the machine.
    pub(super) fn on_publish(&mut self, first: (Route, Bytes)) {
        let mut pending = vec![first];
        let mut bytes = pending[0].1.len();
        while pending.len() < BATCH_PAYLOADS && bytes < BATCH_BYTES {
            match self.publishes.try_recv() {
                Ok(next) => {
                    bytes += next.1.len();
                    pending.push(next);
                }
                Err(_) => break,
            }
        }
        // Consecutive messages of one route form one batch; routes keep their order.
        let mut batch: Vec<Bytes> = Vec::new();
        let mut current: Option<Route> = None;
        for (route, payload) in pending {
            if current.as_ref().is_some_and(|c| *c != route) {
                self.publish_batch(current.take(), std::mem::take(&mut batch));
            }
            current = Some(route);
            batch.push(payload);
        }
        self.publish_batch(current, batch);
    }

    pub(super) fn publish_batch(&mut self, route: Option<Route>, payloads: Vec<Bytes>) {
        let Some(route) = route else { return };
        let keypair = &self.keypair;
        let signed = |first, payloads: &[Bytes]| wire::sign(keypair, &route, first, payloads);
        if self.overlay.publish(&route, payloads, signed).is_none() {
            tracing::debug!(%route, "published with nobody in the tree");
        }
    }

    /// Some node joined the tree of a local route: the router feeds its messages to us.
    pub(super) fn wanted(&mut self, route: Route) {
        let Some(intent) = self.intents.get(&route) else {
            return;
        };
        let ad = InterestAd {
            pattern: RoutePattern::from(route),
            fingerprint: intent.fingerprint,
            schema: intent.schema.clone(),
            hashed: None,
            history: 0,
        };
        let sink = Arc::new(OriginSink {
            tx: self.publishes_tx.clone(),
        });
        if let Err(e) = self.port.add_peer_interest(&self.me, ad, sink) {
            tracing::warn!(error = %e, "local route not offered to the trees");
        }
    }

    /// A remote stream now reaches us: its origin's intent goes to the router.
    pub(super) fn link(&mut self, origin: PeerId, route: Route) {
        let Some(fingerprint) = self.fingerprints.get(&(origin, route.clone())).copied() else {
            tracing::warn!(%origin, %route, "stream linked without a fingerprint; not delivered");
            return;
        };
        let ad = IntentAd {
            route: route.clone(),
            fingerprint,
            schema: None,
            hashed: None,
            qos: Qos::default(),
        };
        match self.port.add_peer_intent(&origin, ad) {
            Ok(sink) => {
                let delivery = Delivery::start(sink, &self.tracker, &self.cancel);
                self.sinks.insert((origin, route), delivery);
            }
            Err(e) => tracing::warn!(%origin, %route, error = %e, "stream not linked"),
        }
    }

    /// Hands a batch's new messages to the router. Never waits: a full local `Block`
    /// subscriber makes the router hold messages back, which the stream's pump task moves on
    /// (one slow subscriber must not stall this node's other streams and children). Past
    /// [`HOLD_LIMIT`] bytes held for the stream, messages are not delivered (counted).
    pub(super) fn deliver(&mut self, batch: &Batch<PeerId>, skip: usize) {
        let Some(delivery) = self.sinks.get(&(batch.origin, batch.route.clone())) else {
            self.stats.undeliverable += (batch.payloads.len() - skip) as u64;
            return;
        };
        let mut lost = 0u64;
        for payload in &batch.payloads[skip..] {
            if delivery.sink.held_bytes() > HOLD_LIMIT {
                lost += 1;
                continue;
            }
            if let Err(e) = delivery.sink.try_send(&batch.route, payload.clone()) {
                tracing::debug!(origin = %batch.origin, route = %batch.route, error = %e, "not delivered");
                lost += 1;
            }
        }
        if delivery.sink.backlog() > 0 {
            delivery.wake.notify_one();
        }
        if lost > 0 {
            tracing::warn!(origin = %batch.origin, route = %batch.route, lost, "a local subscriber is too slow: messages not delivered");
            self.stats.undeliverable += lost;
        }
    }
}
