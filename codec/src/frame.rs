//! The frames of a dndm session, as validated Rust values.
//!
//! A session opens with one [`Hello`] in each direction, then exchanges [`Batch`]es of
//! messages, cumulative [`Ack`]s, route changes in [`Advert`]s, [`Ping`]/[`Pong`] for liveness
//! and RTT, and ends with a [`Close`]. Routes inside frames are [`Route`], [`RoutePattern`] and
//! [`HashedRoute`] values, so a frame that decodes holds only valid routes.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use dndm_core::{Fingerprint, HashedRoute, Qos, Route, RoutePattern, Schema};

use crate::error::Violation;
use crate::header::FrameKind;
use crate::limits::{LimitKind, Limits};

/// One session frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The first frame in each direction.
    Hello(Hello),
    /// Messages.
    Batch(Batch),
    /// Cumulative acknowledgement of reliable messages.
    Ack(Ack),
    /// Route changes since the hello.
    Advert(Advert),
    /// Liveness probe.
    Ping(Ping),
    /// Answer to a ping.
    Pong(Pong),
    /// Last frame of a session.
    Close(Close),
}

/// The first frame in each direction: identity, routes, capabilities and resume state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// Protocol version the sender speaks ([`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)).
    pub protocol_version: u32,
    /// The sender's identity public key (opaque here; at most [`Limits::max_opaque_len`]).
    pub public_key: Vec<u8>,
    /// Signature binding the transport key to the identity (opaque here; the session layer
    /// defines what is signed; at most [`Limits::max_opaque_len`]).
    pub key_binding: Vec<u8>,
    /// Human-readable node name (at most [`Limits::max_text_len`] bytes).
    pub node_name: String,
    /// Every local intent, each with the per-session route id its batches use.
    pub intents: Vec<IntentDecl>,
    /// Every local interest.
    pub interests: Vec<InterestDecl>,
    /// What the sender supports and accepts.
    pub capabilities: Capabilities,
    /// Present when resuming an earlier session.
    pub resume: Option<ResumeState>,
}

/// An intent (publisher) declared to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IntentDecl {
    /// Per-session route id, chosen by the sender; [`BatchMessage::route_id`] refers to it.
    pub id: u32,
    /// The route, plain or hashed.
    pub route: DeclRoute,
    /// Schema fingerprint of the message type.
    pub fingerprint: Fingerprint,
    /// Quality of service.
    pub qos: Qos,
    /// The message type's wire schema, if the sender knows it.
    pub schema: Option<Arc<Schema>>,
}

/// An interest (subscriber) declared to a peer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InterestDecl {
    /// Per-session interest id, chosen by the sender; [`Advert::interests_removed`] refers to
    /// it.
    pub id: u32,
    /// The pattern, plain or hashed.
    pub pattern: DeclPattern,
    /// Schema fingerprint of the message type.
    pub fingerprint: Fingerprint,
    /// The message type's wire schema, if the sender knows it.
    pub schema: Option<Arc<Schema>>,
    /// How many of each matching publisher's kept messages the subscriber asks for (0: none).
    pub history: u32,
}

/// The route of a declared intent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeclRoute {
    /// A plain route `TypeName@path`.
    Plain(Route),
    /// A hashed route `prefix#digest`.
    Hashed(HashedRoute),
}

/// The pattern of a declared interest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeclPattern {
    /// A route pattern (possibly with `*` / `**`).
    Plain(RoutePattern),
    /// A hashed route: an exact-route interest known only by digest.
    Hashed(HashedRoute),
}

/// What a peer supports and accepts, announced in its [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The peer decompresses zstd batches.
    pub zstd: bool,
    /// zstd dictionaries the peer holds (at most [`Limits::max_dictionaries`]).
    pub dictionary_ids: Vec<u32>,
    /// Largest frame the peer accepts.
    pub max_frame_len: u32,
    /// Most messages per batch the peer accepts.
    pub max_batch_messages: u32,
    /// Largest decompressed batch body the peer accepts.
    pub max_decompressed_len: u32,
    /// The peer signs its batches.
    pub signed_batches: bool,
}

/// Where a resumed session continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResumeState {
    /// Epoch of the session being resumed.
    pub session_epoch: u64,
    /// Last reliable sequence number the sender received from the peer.
    pub last_received_seq: u64,
    /// Last reliable sequence number the sender sent to the peer.
    pub last_sent_seq: u64,
    /// Epoch of the receiver's session that the sender last saw in a hello; 0 when it saw
    /// none. Tells the receiver whether the sender treats it as resumed (and will resend what
    /// it did not receive) or as new.
    pub peer_epoch: u64,
    /// First sequence number the sender still holds unacknowledged, so resends start there;
    /// `last_sent_seq + 1` when it holds none; 0 when not given.
    pub first_unacked_seq: u64,
}

/// A batch of messages.
///
/// `first_seq..=last_seq` is the sequence range the batch covers; it travels in clear before
/// the (possibly compressed) messages and is covered by the batch signature, so a receiver can
/// reject a replay before decompressing. Every message's [`BatchMessage::seq`] lies inside it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// First sequence number covered.
    pub first_seq: u64,
    /// Last sequence number covered (`>= first_seq`).
    pub last_seq: u64,
    /// The messages (at most [`Limits::max_batch_messages`]).
    pub messages: Vec<BatchMessage>,
}

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchMessage {
    /// The route id the sender declared for this route.
    pub route_id: u32,
    /// Reliable sequence number; `None` for best-effort messages.
    pub seq: Option<u64>,
    /// Request/response correlation.
    pub correlation: Correlation,
    /// The encoded message: encode once, share the bytes with every link.
    pub payload: Bytes,
}

/// How a message relates to request/response traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Correlation {
    /// A published message.
    #[default]
    None,
    /// A request; the response carries the same id.
    Request {
        /// The request id.
        id: u64,
    },
    /// A response to request `to`; `error` is set when the request failed.
    Response {
        /// The request id answered.
        to: u64,
        /// The failure, if any.
        error: Option<ResponseError>,
    },
}

/// A failed request's result.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ResponseError {
    /// Application-defined code.
    pub code: u32,
    /// Description (at most [`Limits::max_text_len`] bytes).
    pub message: String,
}

impl ResponseError {
    /// `code`: the handler returned an error.
    pub const HANDLER: u32 = 1;
    /// `code`: the request failed outside the handler (the service went away, a timeout).
    pub const FAILED: u32 = 2;
    /// `code`: the serving node has too many requests of this peer in flight; try later.
    pub const BUSY: u32 = 3;
    /// `code`: the serving node's ACL does not let this peer call the service.
    pub const DENIED: u32 = 4;
}

/// Cumulative acknowledgement: every reliable message up to `cumulative_seq` arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ack {
    /// Highest sequence number received without gaps.
    pub cumulative_seq: u64,
}

/// Route changes since the hello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Advert {
    /// New intents.
    pub intents_added: Vec<IntentDecl>,
    /// Ids of withdrawn intents.
    pub intents_removed: Vec<u32>,
    /// New interests.
    pub interests_added: Vec<InterestDecl>,
    /// Ids of withdrawn interests.
    pub interests_removed: Vec<u32>,
    /// Flow control: ids of the *receiver's* intents whose messages the sender cannot take now
    /// (a local subscriber is full); the receiver holds back new messages on them.
    pub paused: Vec<u32>,
    /// Ids of the receiver's intents that the sender can take again.
    pub resumed: Vec<u32>,
    /// What the sender's subscribers made of the receiver's intents' messages.
    pub feedback: Vec<RouteFeedback>,
}

/// What a node's subscribers made of one of the receiver's intents: cumulative drops since the
/// route was declared to the session, and the fullest subscriber's queue now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RouteFeedback {
    /// The receiver's intent id.
    pub id: u32,
    /// Messages `DropOldest` subscribers evicted older ones for.
    pub dropped_oldest: u64,
    /// Messages `DropNewest` subscribers discarded.
    pub dropped_newest: u64,
    /// Messages waiting in the fullest subscriber's queue.
    pub lag: u64,
    /// That queue's capacity.
    pub capacity: u64,
}

/// Liveness probe; the peer answers with a [`Pong`] carrying the same nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Ping {
    /// Chosen by the sender.
    pub nonce: u64,
}

/// Answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Pong {
    /// The ping's nonce.
    pub nonce: u64,
}

/// Last frame of a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Close {
    /// Why the session ends.
    pub code: CloseCode,
    /// Human-readable detail (at most [`Limits::max_text_len`] bytes).
    pub reason: String,
}

/// Why a session was closed. Codes not listed here are carried through unchanged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CloseCode(pub u32);

impl CloseCode {
    /// Orderly close.
    pub const NORMAL: Self = Self(0);
    /// The node is shutting down.
    pub const SHUTDOWN: Self = Self(1);
    /// The peer broke the protocol (a frame failed to decode).
    pub const PROTOCOL_ERROR: Self = Self(2);
    /// A batch signature did not verify.
    pub const BAD_SIGNATURE: Self = Self(3);
    /// The peer is not allowed.
    pub const UNAUTHORIZED: Self = Self(4);
    /// The peer exceeded a limit.
    pub const LIMIT_EXCEEDED: Self = Self(5);
    /// Nothing heard for too long.
    pub const IDLE_TIMEOUT: Self = Self(6);
    /// Protocol versions or capabilities are incompatible.
    pub const INCOMPATIBLE: Self = Self(7);

    /// Lowercase name of a known code.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::NORMAL => "normal",
            Self::SHUTDOWN => "shutdown",
            Self::PROTOCOL_ERROR => "protocol error",
            Self::BAD_SIGNATURE => "bad signature",
            Self::UNAUTHORIZED => "unauthorized",
            Self::LIMIT_EXCEEDED => "limit exceeded",
            Self::IDLE_TIMEOUT => "idle timeout",
            Self::INCOMPATIBLE => "incompatible",
            _ => return None,
        })
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "code {}", self.0),
        }
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({}: {self})", self.0)
    }
}

impl Frame {
    /// The frame's kind.
    pub fn kind(&self) -> FrameKind {
        match self {
            Self::Hello(_) => FrameKind::Hello,
            Self::Batch(_) => FrameKind::Batch,
            Self::Ack(_) => FrameKind::Ack,
            Self::Advert(_) => FrameKind::Advert,
            Self::Ping(_) => FrameKind::Ping,
            Self::Pong(_) => FrameKind::Pong,
            Self::Close(_) => FrameKind::Close,
        }
    }

    /// Checks every rule that does not depend on the wire form.
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), Violation> {
        match self {
            Self::Hello(h) => h.validate(limits),
            Self::Batch(b) => b.validate(limits),
            Self::Advert(a) => a.validate(limits),
            Self::Close(c) => text(limits, "close.reason length", &c.reason),
            Self::Ack(_) | Self::Ping(_) | Self::Pong(_) => Ok(()),
        }
    }
}

impl Capabilities {
    /// Capabilities announcing `limits`, zstd support and signed batches, without
    /// dictionaries.
    pub fn new(limits: &Limits) -> Self {
        Self {
            zstd: true,
            dictionary_ids: Vec::new(),
            max_frame_len: limits.max_frame_len(),
            max_batch_messages: limits.max_batch_messages(),
            max_decompressed_len: limits.max_decompressed_len(),
            signed_batches: true,
        }
    }
}

impl Hello {
    fn validate(&self, limits: &Limits) -> Result<(), Violation> {
        let opaque = |what, v: &[u8]| {
            Limits::check(LimitKind::OpaqueLen, what, v.len(), limits.max_opaque_len())
        };
        opaque("hello.public_key length", &self.public_key)?;
        opaque("hello.key_binding length", &self.key_binding)?;
        text(limits, "hello.node_name length", &self.node_name)?;
        routes(
            limits,
            "hello route count",
            self.intents.len() + self.interests.len(),
        )?;
        Limits::check(
            LimitKind::Dictionaries,
            "hello.capabilities.dictionary_ids count",
            self.capabilities.dictionary_ids.len(),
            limits.max_dictionaries(),
        )?;
        decls(limits, &self.intents, &self.interests)
    }
}

impl Batch {
    pub(crate) fn validate(&self, limits: &Limits) -> Result<(), Violation> {
        Limits::check(
            LimitKind::BatchMessages,
            "batch message count",
            self.messages.len(),
            limits.max_batch_messages(),
        )?;
        if self.first_seq > self.last_seq {
            return Err(Violation::Invalid {
                field: "batch.first_seq",
                reason: format!(
                    "first_seq {} is greater than last_seq {}",
                    self.first_seq, self.last_seq
                ),
            });
        }
        for m in &self.messages {
            if let Some(seq) = m.seq
                && !(self.first_seq..=self.last_seq).contains(&seq)
            {
                return Err(Violation::Invalid {
                    field: "batch.messages.seq",
                    reason: format!(
                        "seq {seq} is outside the batch range {}..={}",
                        self.first_seq, self.last_seq
                    ),
                });
            }
            if let Correlation::Response { error: Some(e), .. } = &m.correlation {
                text(limits, "batch.messages.error.message length", &e.message)?;
            }
        }
        Ok(())
    }
}

impl Advert {
    fn validate(&self, limits: &Limits) -> Result<(), Violation> {
        routes(
            limits,
            "advert route count",
            self.intents_added.len()
                + self.intents_removed.len()
                + self.interests_added.len()
                + self.interests_removed.len()
                + self.paused.len()
                + self.resumed.len()
                + self.feedback.len(),
        )?;
        decls(limits, &self.intents_added, &self.interests_added)
    }
}

impl DeclRoute {
    /// The route's wire text.
    pub fn to_text(&self) -> String {
        match self {
            Self::Plain(r) => r.as_str().to_owned(),
            Self::Hashed(h) => h.to_string(),
        }
    }
}

impl DeclPattern {
    /// The pattern's wire text.
    pub fn to_text(&self) -> String {
        match self {
            Self::Plain(p) => p.as_str().to_owned(),
            Self::Hashed(h) => h.to_string(),
        }
    }
}

impl From<Route> for DeclRoute {
    fn from(route: Route) -> Self {
        Self::Plain(route)
    }
}

impl From<HashedRoute> for DeclRoute {
    fn from(route: HashedRoute) -> Self {
        Self::Hashed(route)
    }
}

impl From<RoutePattern> for DeclPattern {
    fn from(pattern: RoutePattern) -> Self {
        Self::Plain(pattern)
    }
}

impl From<HashedRoute> for DeclPattern {
    fn from(route: HashedRoute) -> Self {
        Self::Hashed(route)
    }
}

fn text(limits: &Limits, what: &'static str, s: &str) -> Result<(), Violation> {
    Ok(Limits::check(
        LimitKind::TextLen,
        what,
        s.len(),
        limits.max_text_len(),
    )?)
}

fn routes(limits: &Limits, what: &'static str, count: usize) -> Result<(), Violation> {
    Ok(Limits::check(
        LimitKind::Routes,
        what,
        count,
        limits.max_routes(),
    )?)
}

/// Route text lengths against [`Limits::max_route_len`].
fn decls(
    limits: &Limits,
    intents: &[IntentDecl],
    interests: &[InterestDecl],
) -> Result<(), Violation> {
    let max = limits.max_route_len();
    for i in intents {
        let len = match &i.route {
            DeclRoute::Plain(r) => r.as_str().len(),
            DeclRoute::Hashed(h) => h.to_string().len(),
        };
        Limits::check(LimitKind::RouteLen, "intent route length", len, max)?;
    }
    for i in interests {
        let len = match &i.pattern {
            DeclPattern::Plain(p) => p.as_str().len(),
            DeclPattern::Hashed(h) => h.to_string().len(),
        };
        Limits::check(LimitKind::RouteLen, "interest pattern length", len, max)?;
    }
    Ok(())
}
