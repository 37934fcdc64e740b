//! Recording: the signed batches peers send, handed to a recorder as records of the recording
//! file format ([`dndm_codec::record`]).

use std::time::SystemTime;

use dndm_codec::record::{Record, RecordedBatch, RouteEntry};
use dndm_core::EndpointError;
use tokio::sync::mpsc;

use super::lock;
use super::{Inner, RemoteEndpoint};
use crate::session::SignedBatch;

impl RemoteEndpoint {
    /// The signed batches that arrive from now on, as records (each batch after the route
    /// entries it needs), for a recorder to write. Needs `session.record` (and
    /// `session.signing = batch`, so that peers sign). A recorder more than `capacity` records
    /// behind loses batches, counted in [`RemoteStats::record_dropped`](super::RemoteStats).
    ///
    /// # Errors
    /// [`EndpointError::Config`] when `session.record` is off, `capacity` is 0, or a recorder
    /// was taken already.
    pub fn recorder(&self, capacity: usize) -> Result<mpsc::Receiver<Record>, EndpointError> {
        let refuse = |reason: &str| EndpointError::Config {
            endpoint: self.inner.name.clone(),
            reason: reason.to_owned(),
        };
        if !self.inner.config.session.record {
            return Err(refuse(
                "session.record is off: no signed batches are handed over",
            ));
        }
        if capacity == 0 {
            return Err(refuse("recorder capacity 0: must be at least 1"));
        }
        let (tx, rx) = mpsc::channel(capacity);
        self.inner
            .recorder
            .set(tx)
            .map_err(|_| refuse("a recorder was taken already"))?;
        Ok(rx)
    }
}

impl Inner {
    /// Hands a signed batch to the recorder, if any (never waits: a recorder that fell behind
    /// loses it, counted).
    pub(crate) fn record(&self, batch: SignedBatch) {
        let Some(recorder) = self.recorder.get() else {
            return;
        };
        let SignedBatch {
            frame,
            session,
            signer,
            routes,
        } = batch;
        // The routes first (each batch needs them), then the batch; all or nothing.
        let needed = routes.len() + 1;
        let Ok(permits) = recorder.try_reserve_many(needed) else {
            lock(&self.stats).record_dropped += 1;
            return;
        };
        let mut permits = permits;
        for (route_id, route, fingerprint) in routes {
            if let Some(permit) = permits.next() {
                permit.send(Record::Route(RouteEntry {
                    signer,
                    session,
                    route_id,
                    fingerprint,
                    route,
                }));
            }
        }
        if let Some(permit) = permits.next() {
            permit.send(Record::Batch(RecordedBatch {
                arrived: SystemTime::now(),
                signer,
                session,
                frame,
            }));
        }
        lock(&self.stats).recorded += 1;
    }
}
