//! The session's public vocabulary: settings, connection facts, failures, events, errors and
//! counters.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use dndm_codec::{
    CloseCode, Compression, Correlation, Dictionary, Limits, PROTOCOL_VERSION, ResponseError,
    SessionId,
};
use dndm_core::{
    BudgetConfig, BudgetKind, IntentAd, InterestAd, InvalidSetting, PeerId, PublicKey, Route,
    RoutePattern, ServiceAd, Signing, Undelivered,
};

use crate::acl::Acl;
/// Settings of a session. [`SessionConfig::default`] suits TCP on a LAN.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionConfig {
    /// Frame limits, enforced on everything the peer sends.
    pub limits: Limits,
    /// zstd for batches above its threshold; `None` sends uncompressed.
    pub compression: Option<Compression>,
    /// When batches carry ed25519 signatures: always, both ways ([`Signing::Batch`]); only
    /// when the peer asks for them (the default, [`Signing::OnRequest`]); never
    /// ([`Signing::Off`]). See `docs/protocol.md` for what a signature proves to whom.
    pub signing: Signing,
    /// Messages waiting to be batched; beyond it [`Session::send`](super::Session::send) refuses (back-pressure).
    pub send_queue: usize,
    /// Reliable messages (and batches) sent but not yet acknowledged; beyond it batching pauses.
    pub retransmit_capacity: usize,
    /// Most messages in one batch.
    pub max_batch_messages: usize,
    /// Most payload bytes in one batch (a larger single message still goes alone).
    pub max_batch_bytes: usize,
    /// Send a ping after this long without sending anything.
    pub keepalive: Duration,
    /// Declare the connection dead after this long without receiving anything.
    pub idle_timeout: Duration,
    /// Resend unacknowledged batches after this long without ack progress. Only for lossy
    /// transports; `None` on ordered ones (which lose data only with the connection).
    pub retransmit_timeout: Option<Duration>,
    /// Whether the transport delivers frames in order without loss while connected.
    pub ordered_transport: bool,
    /// The node name sent to peers.
    pub node_name: String,
    /// Peers allowed to connect; `None` allows everyone.
    pub allow_peers: Option<HashSet<PeerId>>,
    /// Which routes the peer may publish on and which patterns it may subscribe with; a
    /// declaration it denies ends the connection with [`LinkFailure::Denied`]. Default:
    /// [`Acl::allow_all`] (no restriction).
    pub acl: Acl,
    /// zstd dictionaries by message type name (the protobuf full name in `TypeName@path`),
    /// each trained on samples of that type ([`Dictionary::train`]). Their ids are announced in
    /// the hello; a batch whose messages are all of one such type is compressed with its
    /// dictionary when the peer announced that id too. Batches from the peer may use any of
    /// them. Both sides must hold the same dictionary under the same id. Default: none.
    pub dictionaries: BTreeMap<String, Dictionary>,
    /// What the peer may make this node spend (routes declared, bytes decoded and held,
    /// requests); the endpoint also takes its connection budgets from here. Default:
    /// [`BudgetConfig::default`].
    pub budget: BudgetConfig,
    /// Hand every signed batch that verified over as [`Event::SignedBatch`] (a recorder).
    /// Needs `signing` = [`Signing::Batch`], so that peers sign. Default false.
    pub record: bool,
}

/// A signed batch as a recorder keeps it: the frame as it arrived, whom and which session it
/// was signed for, and the meaning of route ids its messages use that were not handed over
/// before in this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBatch {
    /// The frame, signature included.
    pub frame: Bytes,
    /// The session it was signed for.
    pub session: SessionId,
    /// The key that signed it.
    pub signer: PublicKey,
    /// New route ids: `(id, route, fingerprint)`.
    pub routes: Vec<(u32, Route, dndm_core::Fingerprint)>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            compression: Some(Compression::default()),
            signing: Signing::OnRequest,
            send_queue: 8192,
            retransmit_capacity: 4096,
            max_batch_messages: 1024,
            max_batch_bytes: 256 * 1024,
            keepalive: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            retransmit_timeout: None,
            ordered_transport: true,
            node_name: "dndm".to_owned(),
            allow_peers: None,
            acl: Acl::allow_all(),
            dictionaries: BTreeMap::new(),
            budget: BudgetConfig::default(),
            record: false,
        }
    }
}

/// Fails with `field` unless `ok`.
pub(crate) fn require(
    ok: bool,
    field: &'static str,
    value: impl std::fmt::Debug,
    reason: &str,
) -> Result<(), InvalidSetting> {
    if ok {
        Ok(())
    } else {
        Err(InvalidSetting {
            field: field.to_owned(),
            value: format!("{value:?}"),
            reason: reason.to_owned(),
        })
    }
}

impl SessionConfig {
    /// Checks the settings that the session relies on; a config from a validated node file
    /// always passes. [`RemoteEndpoint::new`](crate::endpoint::RemoteEndpoint::new) calls it,
    /// so a config built in code is checked too.
    ///
    /// # Errors
    /// The first [`InvalidSetting`], naming the field (`session.…`).
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = "must be at least 1";
        require(
            !self.record || self.signing == Signing::Batch,
            "session.record",
            self.record,
            "needs session.signing = batch (peers sign only then)",
        )?;
        require(
            self.send_queue > 0,
            "session.send_queue",
            self.send_queue,
            positive,
        )?;
        require(
            self.retransmit_capacity > 0,
            "session.retransmit_capacity",
            self.retransmit_capacity,
            positive,
        )?;
        require(
            self.max_batch_messages > 0,
            "session.max_batch_messages",
            self.max_batch_messages,
            positive,
        )?;
        require(
            self.max_batch_bytes > 0,
            "session.max_batch_bytes",
            self.max_batch_bytes,
            positive,
        )?;
        require(
            !self.keepalive.is_zero(),
            "session.keepalive",
            self.keepalive,
            "must be longer than zero",
        )?;
        require(
            self.idle_timeout > self.keepalive,
            "session.idle_timeout",
            self.idle_timeout,
            &format!(
                "must be longer than session.keepalive ({:?})",
                self.keepalive
            ),
        )?;
        require(
            self.retransmit_timeout.is_none_or(|t| !t.is_zero()),
            "session.retransmit_timeout",
            self.retransmit_timeout,
            "must be longer than zero (or None)",
        )?;
        require(
            !self.node_name.is_empty() && self.node_name.len() <= 64,
            "session.node_name",
            &self.node_name,
            "must be 1 to 64 bytes",
        )
    }
}

/// What the driver knows about a new connection.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Binds batch signatures to this connection (e.g. the Noise handshake hash).
    pub session_id: SessionId,
    /// Over a Noise channel: our static key's binding signature and the peer's static key.
    pub binding: Option<Binding>,
    /// The peer we dialed or that the transport authenticated, if known.
    pub expected_peer: Option<PeerId>,
}

/// The Noise identity binding of a connection.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Our signature over our Noise static key (sent in our hello).
    pub local_signature: [u8; 64],
    /// The peer's Noise static key (its hello must carry a signature over it).
    pub remote_static: [u8; 32],
}

/// Why a connection ended badly. The session stays resumable; the driver reconnects (or not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkFailure {
    /// A frame did not decode.
    #[error("bad frame from peer: {0}")]
    Decode(String),
    /// A batch signature did not verify.
    #[error("bad batch signature from peer: {0}")]
    Signature(String),
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The hello's identity is not the peer we expected.
    #[error("peer identity {actual} does not match expected {expected}")]
    IdentityMismatch {
        /// The PeerId we dialed or the transport authenticated.
        expected: PeerId,
        /// The PeerId of the hello's key.
        actual: PeerId,
    },
    /// The peer is not on the allow-list.
    #[error("peer {0} is not allowed")]
    NotAllowed(PeerId),
    /// The peer declared a route or pattern its [`Acl`] denies.
    #[error("peer {peer} is denied {what}")]
    Denied {
        /// The peer.
        peer: PeerId,
        /// The denied declaration, e.g. `publish on test.Reading@secret.x`.
        what: String,
    },
    /// The identity key does not sign the Noise static key.
    #[error("identity key of {0} does not match the Noise static key")]
    BadBinding(PeerId),
    /// The peer speaks another protocol version.
    #[error("protocol version {0} is not supported (this node speaks {PROTOCOL_VERSION})")]
    Version(u32),
    /// Nothing heard for the idle timeout.
    #[error("no frame from peer for {0:?}")]
    IdleTimeout(Duration),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The peer made this node spend more than one of its budgets allows.
    #[error("peer crossed {budget} ({limit}): {what}")]
    OverBudget {
        /// Which budget.
        budget: BudgetKind,
        /// Its value.
        limit: usize,
        /// What the peer did, e.g. `declared 4097 routes`.
        what: String,
    },
}

impl LinkFailure {
    /// Whether reconnecting may help (a dead or flaky transport) rather than a peer that must
    /// be fixed or is not wanted.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::IdleTimeout(_) | Self::Transport(_))
    }
}

/// What a session reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The peer's hello was accepted.
    Established {
        /// The peer.
        peer: PeerId,
        /// Its node name.
        node_name: String,
        /// Whether this continues an earlier connection of the same peer incarnation.
        resumed: bool,
    },
    /// The peer declared an intent.
    PeerIntentAdded(IntentAd),
    /// The peer withdrew an intent.
    PeerIntentRemoved(Route),
    /// The peer declared an interest.
    PeerInterestAdded(InterestAd),
    /// The peer withdrew an interest.
    PeerInterestRemoved(RoutePattern),
    /// A message from the peer, in order.
    Message {
        /// The route it was published on.
        route: Route,
        /// The encoded message.
        payload: Bytes,
        /// Request/response correlation.
        correlation: Correlation,
    },
    /// The peer serves requests.
    PeerServiceAdded(ServiceAd),
    /// The peer stopped serving the request route.
    PeerServiceRemoved(Route),
    /// The peer sent a request to a local service; answer with [`Session::respond`](super::Session::respond).
    Request {
        /// The request route (the local service's).
        route: Route,
        /// The peer's request id, to quote in the answer.
        id: u64,
        /// The encoded request.
        payload: Bytes,
    },
    /// The answer to a request sent with [`Session::request`](super::Session::request).
    Response {
        /// The request id.
        id: u64,
        /// The encoded response, or the handler's error.
        result: Result<Bytes, ResponseError>,
    },
    /// A round trip was measured.
    Rtt(Duration),
    /// A signed batch that verified, as it arrived (only with [`SessionConfig::record`]).
    SignedBatch(Box<SignedBatch>),
    /// The send queue has room again after refusing a message.
    SendReady,
    /// `count` messages accepted by [`Session::send`](super::Session::send) on `route` left our hands: the peer
    /// acknowledged them (reliable routes) or they went out in a batch (best effort). Every
    /// accepted message ends in exactly one `Settled` or [`Event::Undelivered`].
    Settled {
        /// The local intent's route.
        route: Route,
        /// How many messages.
        count: u64,
    },
    /// `count` messages accepted by [`Session::send`](super::Session::send) on `route` will never reach the peer.
    Undelivered {
        /// The local intent's route.
        route: Route,
        /// How many messages.
        count: u64,
        /// Why.
        reason: Undelivered,
    },
    /// The peer's subscribers' feedback on our intent on `route`: drops since the last
    /// report, and the fullest subscriber's lag.
    Feedback {
        /// The local intent's route.
        route: Route,
        /// Drops since the last report; lag and capacity now.
        feedback: dndm_core::SubscriberFeedback,
    },
    /// The connection failed; the session waits for the next one.
    Disconnected(LinkFailure),
    /// The session closed in order (by us or by the peer); it will not resume.
    Closed {
        /// Whether the peer closed it.
        by_peer: bool,
        /// The close code.
        code: CloseCode,
        /// The reason text.
        reason: String,
    },
}

/// Why [`Session::send`](super::Session::send) refused a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionSendError {
    /// The send queue is full; wait for [`Event::SendReady`].
    #[error("send queue is full")]
    Full,
    /// No local intent on this route was declared to the session.
    #[error("route {0} is not declared on this session")]
    UnknownRoute(Route),
    /// The session is closed.
    #[error("session is closed")]
    Closed,
    /// The message cannot fit in one frame that both sides accept.
    #[error("message of {len} bytes exceeds {max} bytes, the most one frame can carry here")]
    TooLarge {
        /// The message's size in bytes (payload and error text).
        len: usize,
        /// The most one message may have.
        max: usize,
    },
}

impl SessionSendError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Full)
    }
}

/// Counters of a session, all since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Messages put into batches (first transmissions).
    pub messages_sent: u64,
    /// Messages delivered from the peer.
    pub messages_received: u64,
    /// Batches sent, including resends.
    pub batches_sent: u64,
    /// Reliable messages sent again.
    pub retransmitted: u64,
    /// Batches dropped as duplicates.
    pub duplicates: u64,
    /// Batches dropped for a gap (lossy transports).
    pub gaps: u64,
    /// Best-effort messages from the peer that never arrived.
    pub best_effort_lost: u64,
    /// Messages for a route id the peer never declared.
    pub unknown_routes: u64,
    /// Unacknowledged messages given up because the peer restarted.
    pub lost_on_peer_restart: u64,
    /// Connections that ended with a failure.
    pub failures: u64,
    /// Peer declarations denied by the ACL (each also ends its connection).
    pub acl_denials: u64,
    /// Bytes of frames produced.
    pub bytes_sent: u64,
    /// Messages still queued when the session closed (by [`Session::close`](super::Session::close) with the
    /// retransmit buffer full, without a connection, or by the peer), dropped unsent.
    pub unsent_on_close: u64,
    /// Queued messages dropped at batching because the peer's announced limits (learned after
    /// they were queued) leave no frame that can carry them.
    pub oversized: u64,
    /// Reliable messages the peer acknowledged.
    pub acked: u64,
    /// Messages accepted by [`Session::send`](super::Session::send) that will never reach the peer, for any reason
    /// (each also reported as [`Event::Undelivered`]).
    pub undelivered: u64,
    /// Times we asked the peer to hold back a route of its (a local subscriber was full).
    pub pauses_sent: u64,
    /// Times the peer asked us to hold back one of our routes.
    pub pauses_received: u64,
}
