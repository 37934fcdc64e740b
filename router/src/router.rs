//! The [`Router`] handle, its builder, and its lifecycle.

use std::any::TypeId;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dndm_core::{
    CallError, CallFuture, Endpoint, EndpointError, Fingerprint, IntentAd, InterestAd, LinkError,
    LocalChange, Message, Overflow, PayloadSink, PeerId, Qos, RequestSink, Route, RoutePattern,
    RouterPort, Schema, ServiceAd, SubscriberFeedback, Undelivered,
};

use crate::delivery::PeerIntent;
use crate::error::{BuildError, PublishError, SubscribeError};
use crate::history::{self, DEFAULT_HISTORY_BYTES, MAX_HISTORY};
use crate::id::Origin;
use crate::intent::{Intent, IntentShared};
use crate::interest::{Interest, InterestShared};
use crate::linker::{IntentEntry, IntentSide, InterestEntry, InterestSide};
use crate::queue::Receiver;
use crate::raw::RawMessage;
use crate::shared::{Inner, Settings};
use crate::snapshot::Snapshot;

/// Largest accepted queue capacity per interest (every `Block` and `DropOldest` window fits a
/// publisher's ring).
pub const MAX_QUEUE_CAPACITY: usize = crate::ring::MAX_RING;

/// Builds a [`Router`]; every setting has a documented default.
#[derive(Debug, Default)]
pub struct RouterBuilder {
    settings: Settings,
}

impl RouterBuilder {
    /// The node name shown in snapshots and to peers. Default `"dndm"`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Default queue capacity of new interests, 1 to [`MAX_QUEUE_CAPACITY`]. Default 1024.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.settings.queue_capacity = capacity;
        self
    }

    /// Default overflow policy of new interests. Default [`Overflow::DropOldest`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.settings.overflow = overflow;
        self
    }

    /// How long a send waits for a full `Block` subscriber. Default 1 s.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.settings.send_timeout = timeout;
        self
    }

    /// Default timeout of [`Router::request`](crate::Router::request) calls. Default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// Requests a service handles at once (more wait in its queue). Default 256.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.settings.max_concurrent_requests = n;
        self
    }

    /// Checks every setting and builds the router. Needs no runtime; tasks (services,
    /// endpoints) are spawned on the runtime current when they start.
    ///
    /// # Errors
    /// [`BuildError`] naming the first invalid setting and its value.
    pub fn build(self) -> Result<Router, BuildError> {
        let s = &self.settings;
        let invalid = |field: &'static str, value: String, reason: &'static str| {
            Err(BuildError::Invalid {
                field,
                value,
                reason,
            })
        };
        if s.name.is_empty()
            || s.name.len() > 64
            || s.name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return invalid(
                "name",
                format!("{:?}", s.name),
                "must be 1 to 64 bytes without whitespace",
            );
        }
        if s.queue_capacity == 0 || s.queue_capacity > MAX_QUEUE_CAPACITY {
            return invalid(
                "queue_capacity",
                s.queue_capacity.to_string(),
                "must be between 1 and 1048576",
            );
        }
        if s.send_timeout.is_zero() {
            return invalid(
                "send_timeout",
                format!("{:?}", s.send_timeout),
                "must be positive",
            );
        }
        if s.request_timeout.is_zero() {
            return invalid(
                "request_timeout",
                format!("{:?}", s.request_timeout),
                "must be positive",
            );
        }
        if s.max_concurrent_requests == 0 || s.max_concurrent_requests > 65536 {
            return invalid(
                "max_concurrent_requests",
                s.max_concurrent_requests.to_string(),
                "must be between 1 and 65536",
            );
        }
        let inner = Arc::new(Inner::new(self.settings));
        Ok(Router {
            _close_on_drop: Arc::new(CloseOnDrop(inner.clone())),
            inner,
        })
    }
}

/// Closes the router when the last [`Router`] clone is dropped (without waiting).
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let endpoints = self.0.shutdown();
        if endpoints.is_empty() {
            return;
        }
        // Endpoints have their own tasks (and threads) that the router's token does not reach,
        // and closing one is async: close them in a task of their own, tracked like every
        // router task. Their runtime is alive while their tasks are; once it shuts down, it
        // drops the task and their tasks alike.
        let runtime = self
            .0
            .runtime
            .get()
            .cloned()
            .or_else(|| tokio::runtime::Handle::try_current().ok());
        match runtime {
            Some(runtime) => {
                self.0
                    .tracker
                    .spawn_on(close_endpoints(endpoints), &runtime);
            }
            // `attach` records the runtime it runs on; an endpoint attached from outside tokio
            // could not have spawned anything on one either.
            None => tracing::warn!(
                router = %self.0.settings.name,
                "router dropped outside a tokio runtime; its endpoints were not closed"
            ),
        }
    }
}

/// Closes endpoints in reverse order of attachment, each after the previous one has ended.
async fn close_endpoints(endpoints: Vec<Arc<dyn Endpoint>>) {
    for endpoint in endpoints.iter().rev() {
        endpoint.close().await;
    }
}

/// Options for one intent ([`Router::publish_with`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Quality of service on network links. Default best effort.
    pub qos: Qos,
    /// How long a send waits for a full `Block` subscriber. Default: the router's.
    pub send_timeout: Option<Duration>,
    /// Declare the route to peers hashed, keeping this many leading path segments readable
    /// (see [`Router::publish_hashed`]). Default: plain.
    pub hashed: Option<usize>,
    /// Keep the last this many messages for subscribers that link later and ask for them
    /// ([`SubscribeOptions::history`]), 0 to [`MAX_HISTORY`]. Default 0 (keep nothing).
    pub history: usize,
    /// Keep at most this many bytes (encoded size) of history. Default
    /// [`DEFAULT_HISTORY_BYTES`].
    pub history_bytes: Option<usize>,
    /// Keep no message older than this. Default: no age limit.
    pub history_age: Option<Duration>,
}

impl PublishOptions {
    /// Keeps the last `messages` messages for late subscribers that ask for them
    /// ([`SubscribeOptions::history`]): they get those first, then the live ones, in order,
    /// with no duplicate and no gap between the two.
    pub fn history(mut self, messages: usize) -> Self {
        self.history = messages;
        self
    }

    /// Bounds the history in bytes (encoded size): the oldest kept messages go first.
    pub fn history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = Some(bytes);
        self
    }

    /// Keeps no message older than `age` in the history.
    pub fn history_age(mut self, age: Duration) -> Self {
        self.history_age = Some(age);
        self
    }

    /// Declares the route to peers hashed, keeping `prefix_segments` leading path segments
    /// readable: only a peer that knows the type and the whole path can link to it.
    pub fn hashed(mut self, prefix_segments: usize) -> Self {
        self.hashed = Some(prefix_segments);
        self
    }

    /// Sets the quality of service.
    pub fn qos(mut self, qos: Qos) -> Self {
        self.qos = qos;
        self
    }

    /// Sets the send timeout.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }
}

/// Options for one interest ([`Router::subscribe_with`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Queue capacity, 1 to [`MAX_QUEUE_CAPACITY`]. Default: the router's. For a `Block` or
    /// `DropOldest` interest, it bounds what waits from each local publisher (see the crate
    /// docs, "Queues and overflow").
    pub capacity: Option<usize>,
    /// Overflow policy. Default: the router's.
    pub overflow: Option<Overflow>,
    /// Declare the interest to peers hashed (an exact route only; see
    /// [`Router::subscribe_hashed`]). Default: plain.
    pub hashed: Option<usize>,
    /// Receive up to this many of the messages each publisher kept
    /// ([`PublishOptions::history`]) before its live ones, 0 to [`MAX_HISTORY`]. Default 0.
    pub history: usize,
}

impl SubscribeOptions {
    /// Asks each publisher this interest links to for up to its last `messages` kept messages
    /// ([`PublishOptions::history`]): they come first, then the live ones, in order, with no
    /// duplicate and no gap between the two (per publisher).
    pub fn history(mut self, messages: usize) -> Self {
        self.history = messages;
        self
    }

    /// Declares the interest to peers hashed, keeping `prefix_segments` leading path segments
    /// readable; the pattern must be one exact route (no wildcards).
    pub fn hashed(mut self, prefix_segments: usize) -> Self {
        self.hashed = Some(prefix_segments);
        self
    }

    /// Sets the queue capacity.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity);
        self
    }

    /// Sets the overflow policy.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }
}

/// Matches intents to interests and links them; the entry point of dndm.
///
/// Cheap to clone; every clone is the same router. [`Router::close`] closes every handle, wakes
/// every waiter and returns when every task the router spawned has ended. Dropping the last
/// clone closes too, without waiting: the endpoints close in a task on the runtime they were
/// attached on, and their tasks, listeners and threads end soon after.
#[derive(Clone)]
pub struct Router {
    pub(crate) inner: Arc<Inner>,
    _close_on_drop: Arc<CloseOnDrop>,
}

impl Router {
    /// A builder with default settings.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// Declares an intent to publish `T` on `path` (the route is `T::type_name()@path`).
    ///
    /// # Errors
    /// [`PublishError::Route`] for an invalid path; [`PublishError::Closed`].
    pub fn publish<T: Message>(&self, path: &str) -> Result<Intent<T>, PublishError> {
        self.publish_with(path, PublishOptions::default())
    }

    /// Declares an intent whose route peers see only hashed (`prefix#digest`, the first
    /// `prefix_segments` path segments readable): a peer links to it only if it knows the type
    /// and the whole path (an interest in exactly that route, plain or hashed); others learn
    /// nothing of the route beyond the prefix. Locally it links like any intent.
    ///
    /// # Errors
    /// As [`Router::publish`].
    pub fn publish_hashed<T: Message>(
        &self,
        path: &str,
        prefix_segments: usize,
    ) -> Result<Intent<T>, PublishError> {
        self.publish_with(path, PublishOptions::default().hashed(prefix_segments))
    }

    /// Declares an interest in exactly `T@path` that peers see only hashed (see
    /// [`Router::publish_hashed`]): it links to a peer's intent on that route, plain or hashed.
    ///
    /// # Errors
    /// As [`Router::subscribe`], plus [`SubscribeError::HashedPattern`] for a path with
    /// wildcards.
    pub fn subscribe_hashed<T: Message>(
        &self,
        path: &str,
        prefix_segments: usize,
    ) -> Result<Interest<T>, SubscribeError> {
        self.subscribe_with(path, SubscribeOptions::default().hashed(prefix_segments))
    }

    /// [`Router::publish`] with options.
    ///
    /// # Errors
    /// As [`Router::publish`], plus [`PublishError::History`], [`PublishError::HistoryBytes`]
    /// and [`PublishError::HistoryAge`] for history options out of range.
    pub fn publish_with<T: Message>(
        &self,
        path: &str,
        options: PublishOptions,
    ) -> Result<Intent<T>, PublishError> {
        let route = Route::new(&T::type_name(), path)?;
        let typed = (T::fingerprint(), Some(T::schema()), Some(TypeId::of::<T>()));
        self.declare_intent(route, typed, options)
    }

    /// Publishes already encoded messages on `route` (of any type, known here or not): what a
    /// replay does. The intent reaches peers' subscribers of `route` whose type has
    /// `fingerprint` (or, with `schema`, a compatible schema); it never links to a subscriber
    /// in this process (there is no `T` to hand it). Each [`RawMessage`]'s bytes go out as they
    /// are.
    ///
    /// # Errors
    /// As [`Router::publish_with`].
    pub fn publish_raw(
        &self,
        route: Route,
        fingerprint: Fingerprint,
        schema: Option<Arc<Schema>>,
        options: PublishOptions,
    ) -> Result<Intent<RawMessage>, PublishError> {
        self.declare_intent(route, (fingerprint, schema, None), options)
    }

    /// Declares a local intent: `typed` is its fingerprint, schema and Rust type.
    fn declare_intent<T: Message>(
        &self,
        route: Route,
        typed: (Fingerprint, Option<Arc<Schema>>, Option<TypeId>),
        options: PublishOptions,
    ) -> Result<Intent<T>, PublishError> {
        let (fingerprint, schema, type_id) = typed;
        let history = history_limits(&options)?;
        let shared = Arc::new(IntentShared::<T>::new(
            route.clone(),
            self.inner.settings.queue_capacity,
            history,
        ));
        let id = self.inner.next_id();
        self.inner.update(|linker, out| {
            if linker.closed {
                return Err(PublishError::Closed);
            }
            let entry = IntentEntry::new(
                route.clone(),
                fingerprint,
                options.qos,
                Origin::Local,
                type_id,
                IntentSide::Local(shared.clone()),
            )
            .with_schema(schema)
            .hashed(options.hashed);
            linker.add_intent(id, entry, out);
            Ok(())
        })?;
        Ok(Intent {
            id,
            route,
            fingerprint,
            qos: options.qos,
            send_timeout: options
                .send_timeout
                .unwrap_or(self.inner.settings.send_timeout),
            shared,
            router: self.inner.clone(),
            arena: crate::arena::Arena::default(),
        })
    }

    /// Declares an interest in `T` on `pattern` (a path that may hold `*` and a final `**`).
    ///
    /// # Errors
    /// [`SubscribeError::Pattern`] for an invalid pattern; [`SubscribeError::Closed`].
    pub fn subscribe<T: Message>(&self, pattern: &str) -> Result<Interest<T>, SubscribeError> {
        self.subscribe_with(pattern, SubscribeOptions::default())
    }

    /// [`Router::subscribe`] with options.
    ///
    /// # Errors
    /// As [`Router::subscribe`], plus [`SubscribeError::Capacity`] and
    /// [`SubscribeError::History`].
    pub fn subscribe_with<T: Message>(
        &self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> Result<Interest<T>, SubscribeError> {
        let pattern: RoutePattern = format!("{}@{pattern}", T::type_name()).parse()?;
        if options.hashed.is_some() && !pattern.is_exact() {
            return Err(SubscribeError::HashedPattern {
                pattern: pattern.to_string(),
            });
        }
        let capacity = options
            .capacity
            .unwrap_or(self.inner.settings.queue_capacity);
        if capacity == 0 || capacity > MAX_QUEUE_CAPACITY {
            return Err(SubscribeError::Capacity {
                value: capacity,
                max: MAX_QUEUE_CAPACITY,
            });
        }
        if options.history > MAX_HISTORY {
            return Err(SubscribeError::History {
                value: options.history,
                max: MAX_HISTORY,
            });
        }
        let overflow = options.overflow.unwrap_or(self.inner.settings.overflow);
        let shared = Arc::new(InterestShared::<T>::new(
            capacity,
            overflow,
            options.history,
        ));
        let id = self.inner.next_id();
        self.inner.update(|linker, out| {
            if linker.closed {
                return Err(SubscribeError::Closed);
            }
            let entry = InterestEntry::new(
                pattern.clone(),
                T::fingerprint(),
                Origin::Local,
                Some(TypeId::of::<T>()),
                InterestSide::Local(shared.clone()),
            )
            .with_schema(Some(T::schema()))
            .hashed(options.hashed)
            .history(options.history);
            linker.add_interest(id, entry, out);
            Ok(())
        })?;
        let rx = Receiver::new(shared.queue.clone());
        Ok(Interest {
            id,
            pattern,
            shared,
            rx,
            router: self.inner.clone(),
        })
    }

    /// Attaches an endpoint (remote link, mesh) and starts it with the current local routes.
    /// Endpoints are closed in reverse order of attachment.
    ///
    /// # Errors
    /// The endpoint's start error; [`EndpointError::State`] when the router is closed.
    pub async fn attach(&self, endpoint: Arc<dyn Endpoint>) -> Result<(), EndpointError> {
        let port: Arc<dyn RouterPort> = Arc::new(Port(Arc::downgrade(&self.inner)));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let _ = self.inner.runtime.set(runtime);
        }
        // Register first (under the lock, with the snapshot of adverts) so no change is missed
        // between the snapshot and the registration.
        let local = {
            let mut linker = self.inner.linker();
            if linker.closed {
                return Err(EndpointError::State {
                    endpoint: endpoint.name().to_owned(),
                    reason: "router is closed",
                });
            }
            linker.endpoints.push(endpoint.clone());
            let mut local = linker.local_adverts();
            local.extend(
                self.inner
                    .services
                    .ads()
                    .into_iter()
                    .map(LocalChange::ServiceAdded),
            );
            local
        };
        if let Err(error) = endpoint.start(port, local).await {
            self.inner
                .linker()
                .endpoints
                .retain(|e| !Arc::ptr_eq(e, &endpoint));
            return Err(error);
        }
        Ok(())
    }

    /// An owned, consistent copy of the router's state.
    pub fn snapshot(&self) -> Snapshot {
        let (infos, closed, counters, endpoints) = {
            let linker = self.inner.linker();
            (
                linker.infos(),
                linker.closed,
                linker.counters,
                linker.endpoints.clone(),
            )
        };
        // Outside the table's lock: handles' counters, endpoints' peers (they take their own
        // locks).
        let intents = infos
            .intents
            .into_iter()
            .map(|(mut info, slot)| {
                if let Some(slot) = slot {
                    let (sent, failures, by_reason) = slot.counters();
                    info.sent = sent;
                    info.send_failures = failures;
                    info.undelivered = by_reason.iter().map(|(_, n)| n).sum();
                    info.undelivered_by_reason = by_reason;
                    info.peer_feedback = slot.peer_feedback();
                }
                info
            })
            .collect();
        let interests = infos
            .interests
            .into_iter()
            .map(|(mut info, slot)| {
                info.queue = slot.map(|slot| slot.stats());
                info
            })
            .collect();
        Snapshot {
            node: self.inner.settings.name.clone(),
            closed,
            intents,
            interests,
            links: infos.links,
            services: self.inner.services.routes(),
            endpoints: endpoints.iter().map(|e| e.name().to_owned()).collect(),
            peers: endpoints.iter().flat_map(|e| e.peers()).collect(),
            counters,
            tasks: self.inner.tracker.len(),
        }
    }

    /// The node name.
    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// Whether [`Router::close`] was called (or the last clone dropped).
    pub fn is_closed(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Closes the router: every intent and interest is unlinked and closed (blocked receivers
    /// and senders wake with a closed error), services stop, endpoints close in reverse order.
    /// Returns when every task the router spawned has ended. Idempotent.
    ///
    /// # Cancel safety
    /// Cancelling the wait does not undo the close; tasks still end.
    pub async fn close(&self) {
        close_endpoints(self.inner.shutdown()).await;
        self.inner.tracker.wait().await;
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.inner.settings.name)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// The [`RouterPort`] given to endpoints. Weak, so endpoints never keep a closed router alive.
#[derive(Debug)]
struct Port(Weak<Inner>);

impl RouterPort for Port {
    fn add_peer_intent(
        &self,
        peer: &PeerId,
        ad: IntentAd,
    ) -> Result<Arc<dyn PayloadSink>, LinkError> {
        let inner = self.0.upgrade().ok_or(LinkError::Closed)?;
        let id = inner.next_id();
        inner.update(|linker, out| {
            if linker.closed {
                return Err(LinkError::Closed);
            }
            // Re-announcing is idempotent: replace the old declaration.
            if let Some(old) = linker.peer_intent(peer, &ad.route) {
                linker.remove(old, out);
            }
            let fan_in = Arc::new(PeerIntent::new());
            let entry = IntentEntry::new(
                ad.route,
                ad.fingerprint,
                ad.qos,
                Origin::Peer(*peer),
                None,
                IntentSide::Peer(fan_in.clone()),
            )
            .with_schema(ad.schema);
            linker.add_intent(id, entry, out);
            let sink: Arc<dyn PayloadSink> = fan_in;
            Ok(sink)
        })
    }

    fn remove_peer_intent(&self, peer: &PeerId, route: &Route) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        inner.update(|linker, out| {
            if let Some(id) = linker.peer_intent(peer, route) {
                linker.remove(id, out);
            }
        });
    }

    fn add_peer_interest(
        &self,
        peer: &PeerId,
        ad: InterestAd,
        sink: Arc<dyn PayloadSink>,
    ) -> Result<(), LinkError> {
        let inner = self.0.upgrade().ok_or(LinkError::Closed)?;
        let id = inner.next_id();
        inner.update(|linker, out| {
            if linker.closed {
                return Err(LinkError::Closed);
            }
            if let Some(old) = linker.peer_interest(peer, &ad.pattern) {
                linker.remove(old, out);
            }
            let entry = InterestEntry::new(
                ad.pattern,
                ad.fingerprint,
                Origin::Peer(*peer),
                None,
                InterestSide::Peer(sink),
            )
            .with_schema(ad.schema)
            .history(ad.history);
            linker.add_interest(id, entry, out);
            Ok(())
        })
    }

    fn remove_peer_interest(&self, peer: &PeerId, pattern: &RoutePattern) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        inner.update(|linker, out| {
            if let Some(id) = linker.peer_interest(peer, pattern) {
                linker.remove(id, out);
            }
        });
    }

    fn remove_peer(&self, peer: &PeerId) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        inner.services.remove_peer(peer, None);
        inner.update(|linker, out| {
            for id in linker.peer_entries(peer) {
                linker.remove(id, out);
            }
        });
    }

    fn add_peer_service(&self, peer: &PeerId, ad: ServiceAd, sink: Arc<dyn RequestSink>) {
        if let Some(inner) = self.0.upgrade() {
            inner.services.add_peer(peer, ad, sink);
        }
    }

    fn remove_peer_service(&self, peer: &PeerId, route: &Route) {
        if let Some(inner) = self.0.upgrade() {
            inner.services.remove_peer(peer, Some(route));
        }
    }

    fn handle_request(&self, _peer: &PeerId, route: &Route, payload: Bytes) -> CallFuture {
        match self.0.upgrade() {
            Some(inner) => inner.services.call_local(route, payload),
            None => Box::pin(async { Err(CallError::Closed) }),
        }
    }

    fn report_feedback(&self, peer: &PeerId, route: &Route, feedback: SubscriberFeedback) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // As undelivered messages: the first local intent on the route is told.
        if let Some(slot) = inner.linker().local_intent_on(route) {
            slot.feedback(*peer, route, feedback);
        }
    }

    fn report_undelivered(&self, peer: &PeerId, route: &Route, count: u64, reason: Undelivered) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        // Several local intents on one route share the link's queue; the first one is told.
        let slot = inner.linker().local_intent_on(route);
        match slot {
            Some(slot) => slot.undelivered(*peer, route, count, reason),
            None => tracing::debug!(%peer, %route, count, %reason, "undelivered, intent gone"),
        }
    }
}

/// The history an intent keeps, checked: `None` when it keeps none.
fn history_limits(options: &PublishOptions) -> Result<Option<history::Limits>, PublishError> {
    if options.history > MAX_HISTORY {
        return Err(PublishError::History {
            value: options.history,
            max: MAX_HISTORY,
        });
    }
    if options.history_bytes == Some(0) {
        return Err(PublishError::HistoryBytes { value: 0 });
    }
    if options.history_age == Some(Duration::ZERO) {
        return Err(PublishError::HistoryAge {
            value: Duration::ZERO,
        });
    }
    Ok((options.history > 0).then(|| history::Limits {
        messages: options.history,
        bytes: options.history_bytes.unwrap_or(DEFAULT_HISTORY_BYTES),
        age: options.history_age,
    }))
}
