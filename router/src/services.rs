//! The table of services by route: local services (typed, with their encoded twin for peers)
//! and peers' services, and where a request goes.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use dndm_core::{CallError, CallFuture, Message, PeerId, RequestSink, Route, ServiceAd};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::error::{HandlerError, RequestError, ServeError};
use crate::id::HandleId;
use crate::sync::lock;

/// One request on its way to a service, with the channel for its answer.
pub(crate) struct Call<Req, Resp> {
    pub(crate) request: Req,
    pub(crate) reply: oneshot::Sender<Result<Resp, HandlerError>>,
}

/// A local service.
pub(crate) struct Entry {
    pub(crate) id: HandleId,
    pub(crate) response_type: String,
    pub(crate) response_type_id: TypeId,
    /// An `mpsc::Sender<Call<Req, Resp>>`.
    pub(crate) calls: Box<dyn Any + Send + Sync>,
    /// The same service for encoded requests from peers.
    pub(crate) encoded: Arc<dyn Fn(Bytes) -> CallFuture + Send + Sync>,
    pub(crate) ad: ServiceAd,
    pub(crate) cancel: CancellationToken,
}

/// Where a request goes: a local service's queue or a peer's service.
pub(crate) enum Target<Req, Resp> {
    /// Served here.
    Local(mpsc::Sender<Call<Req, Resp>>),
    /// Served by a peer with the same schemas.
    Peer(Arc<dyn RequestSink>),
}

/// A peer's service, reached through its endpoint.
struct PeerService {
    peer: PeerId,
    ad: ServiceAd,
    sink: Arc<dyn RequestSink>,
}

/// The table of services, by route.
#[derive(Default)]
pub(crate) struct Services {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    closed: bool,
    entries: HashMap<Route, Entry>,
    peers: HashMap<Route, Vec<PeerService>>,
}

impl Services {
    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Registers a local service on `route`.
    pub(crate) fn insert(&self, route: Route, entry: Entry) -> Result<(), ServeError> {
        let mut table = self.lock();
        if table.closed {
            return Err(ServeError::Closed);
        }
        if table.entries.contains_key(&route) {
            return Err(ServeError::AlreadyServed(route));
        }
        table.entries.insert(route, entry);
        Ok(())
    }

    /// Where a request for `Req` on `route`, answered with `Resp`, goes: the local service, or
    /// else a peer's service with the same schemas.
    pub(crate) fn target<Req: Message, Resp: Message>(
        &self,
        route: &Route,
    ) -> Result<Target<Req, Resp>, RequestError> {
        let table = self.lock();
        if table.closed {
            return Err(RequestError::Closed);
        }
        if let Some(entry) = table.entries.get(route) {
            let mismatch = || RequestError::ResponseType {
                route: route.clone(),
                expected: Resp::type_name(),
                actual: entry.response_type.clone(),
            };
            if entry.response_type_id != TypeId::of::<Resp>() {
                return Err(mismatch());
            }
            return entry
                .calls
                .downcast_ref::<mpsc::Sender<Call<Req, Resp>>>()
                .map(|calls| Target::Local(calls.clone()))
                .ok_or_else(mismatch);
        }
        table
            .peers
            .get(route)
            .and_then(|list| {
                list.iter().find(|s| {
                    s.ad.request_fingerprint == Req::fingerprint()
                        && s.ad.response_route.type_name() == Resp::type_name()
                        && s.ad.response_fingerprint == Resp::fingerprint()
                })
            })
            .map(|s| Target::Peer(s.sink.clone()))
            .ok_or_else(|| RequestError::NoListener(route.clone()))
    }

    pub(crate) fn routes(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = self.lock().entries.keys().cloned().collect();
        routes.sort();
        routes
    }

    /// Adverts of the local services, for a starting endpoint.
    pub(crate) fn ads(&self) -> Vec<ServiceAd> {
        self.lock().entries.values().map(|e| e.ad.clone()).collect()
    }

    pub(crate) fn add_peer(&self, peer: &PeerId, ad: ServiceAd, sink: Arc<dyn RequestSink>) {
        let mut table = self.lock();
        let list = table.peers.entry(ad.route.clone()).or_default();
        list.retain(|s| s.peer != *peer);
        list.push(PeerService {
            peer: *peer,
            ad,
            sink,
        });
    }

    pub(crate) fn remove_peer(&self, peer: &PeerId, route: Option<&Route>) {
        let mut table = self.lock();
        table.peers.retain(|r, list| {
            if route.is_none_or(|route| route == r) {
                list.retain(|s| s.peer != *peer);
            }
            !list.is_empty()
        });
    }

    /// Answers a peer's request with the local service on `route`.
    pub(crate) fn call_local(&self, route: &Route, payload: Bytes) -> CallFuture {
        let encoded = self.lock().entries.get(route).map(|e| e.encoded.clone());
        match encoded {
            Some(encoded) => encoded(payload),
            None => {
                let route = route.clone();
                Box::pin(async move { Err(CallError::NoService(route)) })
            }
        }
    }

    /// Stops every service and refuses new ones.
    pub(crate) fn close_all(&self) {
        let entries = {
            let mut table = self.lock();
            table.closed = true;
            table.peers.clear();
            std::mem::take(&mut table.entries)
        };
        for entry in entries.into_values() {
            entry.cancel.cancel();
        }
    }

    /// Removes a service; returns its advert if it was there.
    pub(crate) fn remove(&self, route: &Route, id: HandleId) -> Option<ServiceAd> {
        let mut table = self.lock();
        if table.entries.get(route).is_some_and(|e| e.id == id)
            && let Some(entry) = table.entries.remove(route)
        {
            entry.cancel.cancel();
            return Some(entry.ad);
        }
        None
    }
}
