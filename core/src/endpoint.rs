//! The [`Endpoint`] trait: how the router reaches peers beyond the process.
//!
//! An endpoint (a remote link, a libp2p mesh) owns connections to peers. The router tells it
//! which intents and interests exist locally ([`Endpoint::on_local_change`]); the endpoint tells
//! the router what its peers declared through the [`RouterPort`] it receives in
//! [`Endpoint::start`]. Messages cross in encoded form ([`Bytes`]), encoded once per message and
//! shared by every link that carries it.
//!
//! Linking rule: the router links local intents to local and peer interests, and peer intents to
//! local interests, never a peer intent to a peer interest (no forwarding, so no loops).
//!
//! Call order: `start` once, then any number of `on_local_change`, then `close` once. The router
//! sends `IntentAdded` for the first local intent of a `(route, fingerprint)` and `IntentRemoved`
//! after the last one, so endpoints see each route once (likewise for interests and patterns).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::schema::{Schema, SchemaConflict};
use crate::{Fingerprint, PeerId, Qos, Route, RoutePattern};

/// An intent as announced to or by a peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntentAd {
    /// The route published on.
    pub route: Route,
    /// The schema fingerprint of the message type.
    pub fingerprint: Fingerprint,
    /// The message type's wire schema, when known (peers of older versions send none).
    pub schema: Option<Arc<Schema>>,
    /// Declared to peers hashed, keeping this many leading path segments readable: only a
    /// peer that knows the type and the whole path can link to it or learn it. `None`: plain.
    pub hashed: Option<usize>,
    /// The intent's quality of service.
    pub qos: Qos,
}

/// An interest as announced to or by a peer.
///
/// Two ads are the same interest when all but `history` are equal: the history is a request
/// made when the interest is declared, not part of what it is (so a node's subscriptions to
/// one pattern stay one declaration, whatever history each asked for).
#[derive(Debug, Clone)]
pub struct InterestAd {
    /// The pattern subscribed to.
    pub pattern: RoutePattern,
    /// The schema fingerprint of the message type.
    pub fingerprint: Fingerprint,
    /// The message type's wire schema, when known (peers of older versions send none).
    pub schema: Option<Arc<Schema>>,
    /// As [`IntentAd::hashed`]; only for a pattern without wildcards (one exact route).
    pub hashed: Option<usize>,
    /// How many of each matching publisher's kept messages the subscriber asks for when the
    /// interest is linked (0: none).
    pub history: usize,
}

impl PartialEq for InterestAd {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
            && self.fingerprint == other.fingerprint
            && self.schema == other.schema
            && self.hashed == other.hashed
    }
}

impl Eq for InterestAd {}

impl std::hash::Hash for InterestAd {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.pattern.hash(state);
        self.fingerprint.hash(state);
        self.schema.hash(state);
        self.hashed.hash(state);
    }
}

/// A request/response service as announced to or by a peer: requests of one type on `route`,
/// answered with messages of the type of `response_route` (same path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceAd {
    /// The request route, `Req@path`.
    pub route: Route,
    /// The request type's fingerprint.
    pub request_fingerprint: Fingerprint,
    /// The response route, `Resp@path`.
    pub response_route: Route,
    /// The response type's fingerprint.
    pub response_fingerprint: Fingerprint,
}

/// Why a request sent to a peer's service failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The handler answered with an error.
    #[error("handler failed: {0}")]
    Handler(String),
    /// The service is not (or no longer) served there.
    #[error("no service on {0}")]
    NoService(Route),
    /// The link closed before the answer came.
    #[error("link closed before the answer")]
    Closed,
    /// Too many requests in flight: the serving node's `remote.budget.requests` for this
    /// peer, or this node's `remote.budget.pending_requests` to that peer. Nothing was
    /// handled; retrying later may succeed.
    #[error("busy: {0}")]
    Busy(String),
    /// The serving node's ACL does not let this node call the service.
    #[error("denied: {0}")]
    Denied(String),
}

/// Sends requests to one peer's service: implemented by endpoints.
#[async_trait::async_trait]
pub trait RequestSink: Send + Sync + fmt::Debug {
    /// Sends an encoded request on `route` and waits for the encoded answer.
    ///
    /// # Cancel safety
    /// Cancelling abandons the request; the peer may still handle it.
    ///
    /// # Errors
    /// [`CallError`].
    async fn call(&self, route: &Route, payload: Bytes) -> Result<Bytes, CallError>;
}

/// The answer to a request a peer sent to a local service.
pub type CallFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Bytes, CallError>> + Send>>;

/// A change of the local route set, sent by the router to every endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LocalChange {
    /// The first local intent on this route appeared.
    IntentAdded(IntentAd),
    /// The last local intent on this route went away.
    IntentRemoved(IntentAd),
    /// The first local interest with this pattern appeared.
    InterestAdded(InterestAd),
    /// The last local interest with this pattern went away.
    InterestRemoved(InterestAd),
    /// A local service started.
    ServiceAdded(ServiceAd),
    /// A local service stopped.
    ServiceRemoved(ServiceAd),
}

/// Why a payload could not be delivered through a [`PayloadSink`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The receiving side is gone (link closed, interest dropped).
    #[error("sink is closed")]
    Closed,
    /// The receiving side is full and the caller asked not to wait.
    #[error("sink is full")]
    Full,
    /// The payload is not a valid encoding of the route's type.
    #[error("payload of {len} bytes does not decode as {type_name}: {reason}")]
    Decode {
        /// The route's type name.
        type_name: String,
        /// Payload length in bytes.
        len: usize,
        /// The decoder's message.
        reason: String,
    },
}

impl SinkError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Full)
    }
}

/// Something that accepts encoded messages: a peer's interest (implemented by an endpoint; one
/// interest pattern may match several routes, hence the `route` argument), or the local
/// interests fed by a peer's intent (implemented by the router).
#[async_trait::async_trait]
pub trait PayloadSink: Send + Sync + fmt::Debug {
    /// Delivers one encoded message published on `route`, waiting while the receiver applies back-pressure.
    ///
    /// # Cancel safety
    /// Cancelling may lose this payload; nothing else.
    ///
    /// # Errors
    /// [`SinkError::Closed`] when the receiver is gone, [`SinkError::Decode`] for a payload the
    /// receiver cannot decode.
    async fn send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError>;

    /// Delivers one encoded message without waiting.
    ///
    /// # Errors
    /// As [`PayloadSink::send`], plus [`SinkError::Full`] where `send` would wait.
    fn try_send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError>;

    /// Messages accepted by [`PayloadSink::try_send`] but held back because a receiver is full
    /// (a peer's fan-in into a full local `Block` subscriber). The endpoint pauses the peer's
    /// route while this is above zero. Default: 0 (the sink holds nothing back).
    fn backlog(&self) -> usize {
        0
    }

    /// Bytes of the messages counted in [`PayloadSink::backlog`] (a message held for two
    /// receivers counts twice). Default: 0.
    fn held_bytes(&self) -> usize {
        0
    }

    /// Moves held-back messages on, as far as receivers have room; returns the backlog left.
    fn pump(&self) -> usize {
        0
    }

    /// Whether a receiver is close to full (a `Block` queue past its high-water mark): the
    /// endpoint pauses the peer's route before messages must be held back, and resumes it once
    /// the receiver drained (see [`PayloadSink::ready`]). Default: false.
    fn congested(&self) -> bool {
        false
    }

    /// Resolves when a held-back message may move on or a congested receiver drained (it made
    /// room or closed), or at once when nothing is held back or congested. Call
    /// [`PayloadSink::pump`] after it.
    ///
    /// # Cancel safety
    /// Cancel safe.
    async fn ready(&self) {}

    /// What the receivers made of the messages so far: drops since the sink was made, and the
    /// fullest receiver's lag. The endpoint carries it back to the publisher's node
    /// ([`RouterPort::report_feedback`]). Default: nothing dropped, no lag.
    fn feedback(&self) -> SubscriberFeedback {
        SubscriberFeedback::default()
    }
}

/// What a peer's subscribers made of one route's messages: carried from the subscribing node
/// back to the publishing one ([`PayloadSink::feedback`], [`RouterPort::report_feedback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriberFeedback {
    /// Messages a `DropOldest` subscriber evicted to make room (cumulative at the sink; the
    /// increase since the last report in [`RouterPort::report_feedback`]).
    pub dropped_oldest: u64,
    /// Messages a `DropNewest` subscriber discarded because it was full (as above).
    pub dropped_newest: u64,
    /// Messages waiting in the fullest subscriber's queue.
    pub lag: u64,
    /// That queue's capacity.
    pub capacity: u64,
}

/// Why messages that a publisher handed to the router did not reach a subscriber. Reported on
/// the intent ([`RouterPort::report_undelivered`] for losses inside an endpoint), never silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Undelivered {
    /// The subscriber stayed full (or its link kept no room) past the send timeout.
    Timeout,
    /// The peer stayed away past its grace period; what was queued for it is given up.
    PeerGone,
    /// The peer restarted before acknowledging (a new incarnation does not take resends).
    PeerRestarted,
    /// The message is larger than any frame the peer accepts.
    TooLarge,
    /// The link closed (endpoint or router closing) before the peer acknowledged.
    Closed,
}

impl Undelivered {
    /// Every reason, in declaration order: the reasons a per-reason counter covers (the router
    /// keeps one count per entry). A new variant goes here too (a test fails otherwise).
    pub const ALL: [Self; 5] = [
        Self::Timeout,
        Self::PeerGone,
        Self::PeerRestarted,
        Self::TooLarge,
        Self::Closed,
    ];

    /// A short lowercase label, for metrics and logs (`timeout`, `peer_gone`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::PeerGone => "peer_gone",
            Self::PeerRestarted => "peer_restarted",
            Self::TooLarge => "too_large",
            Self::Closed => "closed",
        }
    }
}

impl fmt::Display for Undelivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the router refused a peer's announcement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The two sides use the same type name with different schema fingerprints.
    #[error("fingerprint mismatch on {type_name}: intent has {intent}, interest has {interest}")]
    FingerprintMismatch {
        /// The type name both sides use.
        type_name: String,
        /// The intent's fingerprint.
        intent: Fingerprint,
        /// The interest's fingerprint.
        interest: Fingerprint,
    },
    /// The two sides use the same type name with schemas that do not read each other: the
    /// publisher's values of `conflict.field` would arrive garbled or not decode.
    #[error("schema conflict on {type_name}: {conflict}")]
    SchemaConflict {
        /// The type name both sides use.
        type_name: String,
        /// The first field that conflicts, with both sides' kinds.
        conflict: SchemaConflict,
    },
    /// Same type name and fingerprint, but different Rust types in one process: they cannot
    /// share messages without a copy, so they are not linked.
    #[error("type {type_name} is bound to two different Rust types in this process")]
    RustTypeMismatch {
        /// The type name both sides use.
        type_name: String,
    },
    /// The router is closed.
    #[error("router is closed")]
    Closed,
}

/// The router's side of an endpoint: what the endpoint calls when its peers change.
pub trait RouterPort: Send + Sync + fmt::Debug {
    /// A peer declared an intent. Returns the sink into which the endpoint feeds that peer's
    /// messages on the route (it decodes and delivers to every matching local interest).
    ///
    /// # Errors
    /// [`LinkError::FingerprintMismatch`] when local routes of this type use another schema.
    fn add_peer_intent(
        &self,
        peer: &PeerId,
        ad: IntentAd,
    ) -> Result<Arc<dyn PayloadSink>, LinkError>;

    /// A peer withdrew an intent.
    fn remove_peer_intent(&self, peer: &PeerId, route: &Route);

    /// A peer declared an interest; messages of matching local intents go to `sink`.
    ///
    /// # Errors
    /// [`LinkError::FingerprintMismatch`] when local routes of this type use another schema.
    fn add_peer_interest(
        &self,
        peer: &PeerId,
        ad: InterestAd,
        sink: Arc<dyn PayloadSink>,
    ) -> Result<(), LinkError>;

    /// A peer withdrew an interest.
    fn remove_peer_interest(&self, peer: &PeerId, pattern: &RoutePattern);

    /// A peer went away: withdraw everything it declared.
    fn remove_peer(&self, peer: &PeerId);

    /// A peer serves requests; `sink` carries requests to it.
    fn add_peer_service(&self, peer: &PeerId, ad: ServiceAd, sink: Arc<dyn RequestSink>);

    /// A peer stopped serving `route`.
    fn remove_peer_service(&self, peer: &PeerId, route: &Route);

    /// A peer sent a request to a local service; the future answers it.
    fn handle_request(&self, peer: &PeerId, route: &Route, payload: Bytes) -> CallFuture;

    /// `count` messages of local intents on `route`, accepted for `peer`, will never reach it
    /// (`reason`). The router reports them on those intents (an event and a counter).
    fn report_undelivered(&self, peer: &PeerId, route: &Route, count: u64, reason: Undelivered);

    /// What `peer`'s subscribers made of the messages of local intents on `route`: drops since
    /// the last report and the current lag. The router tells the intents (events
    /// `Dropped` and `SlowConsumer`). Default: ignored.
    fn report_feedback(&self, peer: &PeerId, route: &Route, feedback: SubscriberFeedback) {
        let _ = (peer, route, feedback);
    }
}

/// Why an endpoint failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// An I/O error (binding a listener, dialing).
    #[error("endpoint {endpoint}: {source}")]
    Io {
        /// The endpoint's name.
        endpoint: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be bound or opened on an address.
    #[error("endpoint {endpoint}: cannot listen on {address}: {reason}")]
    Listen {
        /// The endpoint's name.
        endpoint: String,
        /// The address, as configured (`127.0.0.1:7000`, `unix:/run/dndm.sock`, a multiaddr).
        address: String,
        /// The operating system's (or transport's) cause, with its own causes.
        reason: String,
    },
    /// The endpoint's configuration is invalid.
    #[error("endpoint {endpoint}: {reason}")]
    Config {
        /// The endpoint's name.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The endpoint was already started or closed.
    #[error("endpoint {endpoint} cannot start: {reason}")]
    State {
        /// The endpoint's name.
        endpoint: String,
        /// Why.
        reason: &'static str,
    },
}

/// What an endpoint knows about one peer, for snapshots and operators.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// The endpoint that reaches it.
    pub endpoint: String,
    /// The peer's addresses in use (remote addresses of live connections), if known.
    pub addresses: Vec<String>,
    /// Whether a session to the peer is up.
    pub connected: bool,
    /// The last measured round trip.
    pub rtt: Option<std::time::Duration>,
    /// Messages sent to and received from the peer.
    pub messages_sent: u64,
    /// Messages received from the peer.
    pub messages_received: u64,
    /// Connections to the peer that ended in failure (each followed by a reconnect attempt).
    pub failures: u64,
    /// How the peer is reached (`direct`, `relayed`...), where the endpoint tells.
    pub path: Option<String>,
    /// Reliable messages the peer acknowledged.
    pub acked: u64,
    /// Messages of local intents handed to this peer's link that will never reach it, for any
    /// [reason](Undelivered) (each also reported on its intent).
    pub undelivered: u64,
    /// Reliable messages sent again because the peer had not acknowledged them.
    pub retransmitted: u64,
    /// What the peer has not acknowledged yet: messages waiting to be batched plus batches sent
    /// and not acknowledged. Zero when the peer has everything sent so far.
    pub unacked: u64,
    /// Batches sent, resends included; with `messages_sent` and `bytes_sent` it gives the
    /// average batch size.
    pub batches_sent: u64,
    /// Bytes of frames sent to the peer.
    pub bytes_sent: u64,
    /// Times this side asked the peer to hold back one of its routes (a local subscriber was
    /// full).
    pub pauses_sent: u64,
    /// Times the peer asked this side to hold back one of its routes.
    pub pauses_received: u64,
}

impl PeerInfo {
    /// A peer with no counters yet.
    pub fn new(peer: PeerId, endpoint: impl Into<String>) -> Self {
        Self {
            peer,
            endpoint: endpoint.into(),
            addresses: Vec::new(),
            connected: false,
            rtt: None,
            messages_sent: 0,
            messages_received: 0,
            failures: 0,
            path: None,
            acked: 0,
            undelivered: 0,
            retransmitted: 0,
            unacked: 0,
            batches_sent: 0,
            bytes_sent: 0,
            pauses_sent: 0,
            pauses_received: 0,
        }
    }
}

/// A way to reach peers: a remote link or a mesh. Implemented by `dndm-remote` and `dndm-mesh`.
#[async_trait::async_trait]
pub trait Endpoint: Send + Sync + fmt::Debug + 'static {
    /// A short name for logs and snapshots (`remote:10.0.0.2:7000`, `mesh`).
    fn name(&self) -> &str;

    /// Starts the endpoint. `local` is the current local route set (as `*Added` changes);
    /// later changes arrive through [`Endpoint::on_local_change`].
    ///
    /// # Errors
    /// When it cannot start; whatever it started is undone before it returns.
    async fn start(
        &self,
        port: Arc<dyn RouterPort>,
        local: Vec<LocalChange>,
    ) -> Result<(), EndpointError>;

    /// The local route set changed. Must not block: queue the change for the endpoint's task.
    fn on_local_change(&self, change: LocalChange);

    /// Stops the endpoint; returns when every task it spawned has ended.
    async fn close(&self);

    /// The peers this endpoint reaches, for [snapshots](PeerInfo). None by default.
    fn peers(&self) -> Vec<PeerInfo> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_undelivered_reason_once() {
        // `after` chains every reason and has no wildcard: a new variant does not compile here
        // until it is chained in, and then the walk below fails until `ALL` lists it.
        let after = |reason: Undelivered| match reason {
            Undelivered::Timeout => Some(Undelivered::PeerGone),
            Undelivered::PeerGone => Some(Undelivered::PeerRestarted),
            Undelivered::PeerRestarted => Some(Undelivered::TooLarge),
            Undelivered::TooLarge => Some(Undelivered::Closed),
            Undelivered::Closed => None,
        };
        let walked: Vec<Undelivered> =
            std::iter::successors(Some(Undelivered::Timeout), |r| after(*r)).collect();
        assert_eq!(walked, Undelivered::ALL);
        let labels: std::collections::BTreeSet<_> =
            Undelivered::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Undelivered::ALL.len(), "labels are distinct");
    }
}
