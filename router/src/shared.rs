//! The state a router shares with its handles and endpoints ([`Inner`]), and how a change of
//! the link table reaches handles and endpoints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use dndm_core::{Endpoint, Overflow};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::id::HandleId;
use crate::linker::{Change, Linker, Slot};
use crate::services::Services;
use crate::sync::lock;

/// Router-wide defaults, checked by [`RouterBuilder::build`](crate::RouterBuilder::build).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) queue_capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) send_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) max_concurrent_requests: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            name: "dndm".to_owned(),
            queue_capacity: 1024,
            overflow: Overflow::DropOldest,
            send_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            max_concurrent_requests: 256,
        }
    }
}

/// State shared by the router handle, its intents, interests, services and endpoints.
pub(crate) struct Inner {
    pub(crate) settings: Settings,
    /// The link table. Held only while the table itself is read or changed: no handle or
    /// endpoint is called under it.
    linker: Mutex<Linker>,
    /// Taken before the table's lock is released and held while that update's changes are
    /// applied, so changes reach handles and endpoints in the order the table made them.
    applying: Mutex<()>,
    pub(crate) services: Services,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
    next_id: AtomicU64,
    /// The runtime the first endpoint was attached on, where their tasks run: a router dropped
    /// without [`Router::close`](crate::Router::close) closes its endpoints there.
    pub(crate) runtime: OnceLock<tokio::runtime::Handle>,
}

impl Inner {
    pub(crate) fn new(settings: Settings) -> Self {
        Self {
            settings,
            linker: Mutex::new(Linker::default()),
            applying: Mutex::new(()),
            services: Services::default(),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            next_id: AtomicU64::new(1),
            runtime: OnceLock::new(),
        }
    }

    /// The table, for reading or for changes that produce nothing to apply.
    pub(crate) fn linker(&self) -> MutexGuard<'_, Linker> {
        lock(&self.linker)
    }

    /// Changes the table with `f`, then applies the changes it wrote after releasing the
    /// table's lock: links, unlinks, events and closes in order, then adverts in order. Returns
    /// what `f` returned.
    ///
    /// Adverts go last so that a peer never hears of a route before this side is wired for it:
    /// an interest's advert makes a publisher send at once (its history first), and what
    /// arrives for a peer intent no local interest is linked to yet goes nowhere.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Linker, &mut Vec<Change>) -> R) -> R {
        let mut changes = Vec::new();
        let mut linker = self.linker();
        let result = f(&mut linker, &mut changes);
        if changes.is_empty() {
            return result;
        }
        let endpoints = if changes.iter().any(|c| matches!(c, Change::Advertise(_))) {
            linker.endpoints.clone()
        } else {
            Vec::new()
        };
        // Hand-over-hand: the next update can change the table at once, but applies its
        // changes only after ours.
        let applying = lock(&self.applying);
        drop(linker);
        let (adverts, links): (Vec<Change>, Vec<Change>) = changes
            .into_iter()
            .partition(|c| matches!(c, Change::Advertise(_)));
        for change in links.into_iter().chain(adverts) {
            apply(change, &endpoints);
        }
        drop(applying);
        result
    }

    pub(crate) fn next_id(&self) -> HandleId {
        HandleId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Tells every endpoint about a change of the local route set (services), in order with
    /// the table's own adverts.
    pub(crate) fn advertise(&self, change: dndm_core::LocalChange) {
        self.update(|_, out| out.push(Change::Advertise(change)));
    }

    /// Unlinks and closes a handle; idempotent.
    pub(crate) fn remove_handle(&self, id: HandleId) {
        self.update(|linker, out| linker.remove(id, out));
    }

    /// Everything `close` does that needs no waiting: refuse new work, close every handle and
    /// service (waking every waiter), cancel tasks. Returns the endpoints to close.
    pub(crate) fn shutdown(&self) -> Vec<Arc<dyn Endpoint>> {
        self.update(|linker, out| {
            linker.closed = true;
            linker.remove_all(out);
        });
        // Closed: no endpoint attaches any more.
        let endpoints = std::mem::take(&mut self.linker().endpoints);
        self.services.close_all();
        self.cancel.cancel();
        self.tracker.close();
        endpoints
    }
}

/// Applies one change of the table to the handles and endpoints it names.
fn apply(change: Change, endpoints: &[Arc<dyn Endpoint>]) {
    match change {
        Change::LinkLocal {
            intent,
            id,
            interest,
        } => {
            // The table linked them because their Rust types are equal.
            if !intent.link_local(id, &interest.queue_any()) {
                tracing::error!(interest = %id, "local link of two different Rust types");
            }
        }
        Change::LinkPeer {
            intent,
            id,
            peer,
            sink,
            history,
        } => intent.link_peer(id, peer, sink, history),
        Change::FanIn {
            fan_in,
            id,
            interest,
        } => {
            let inbox = interest.inbox();
            fan_in.update(|sinks| sinks.push((id, inbox)));
        }
        Change::Unlink { intent, id } => intent.unlink(id),
        Change::UnlinkFanIn { fan_in, id } => {
            fan_in.update(|sinks| sinks.retain(|(sink, _)| *sink != id));
        }
        Change::Notify { to, event } => match to {
            Slot::Intent(slot) => slot.event(event),
            Slot::Interest(slot) => slot.event(event),
        },
        Change::Close(Slot::Intent(slot)) => slot.close(),
        Change::Close(Slot::Interest(slot)) => slot.close(),
        Change::Advertise(change) => {
            for endpoint in endpoints {
                endpoint.on_local_change(change.clone());
            }
        }
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("name", &self.settings.name)
            .finish_non_exhaustive()
    }
}
