//! Owned, consistent copies of the router's state ([`Router::snapshot`](crate::Router::snapshot)).

use dndm_core::{
    Compatibility, Fingerprint, Overflow, PeerId, Qos, Route, RoutePattern, SubscriberFeedback,
    Undelivered,
};

use crate::id::{HandleId, Origin};

/// Depth, policy and counters of one interest's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Messages queued now.
    pub len: usize,
    /// Queue capacity.
    pub capacity: usize,
    /// Overflow policy.
    pub overflow: Overflow,
    /// Messages accepted into the queue (including those later evicted).
    pub accepted: u64,
    /// Messages handed to the receiver.
    pub delivered: u64,
    /// Messages evicted by `DropOldest`.
    pub dropped_oldest: u64,
    /// Messages discarded by `DropNewest`.
    pub dropped_newest: u64,
    /// Payloads from peers that did not decode.
    pub decode_errors: u64,
}

impl QueueStats {
    /// All drops, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_oldest + self.dropped_newest + self.decode_errors
    }
}

/// One intent in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IntentInfo {
    /// Its id.
    pub id: HandleId,
    /// Its route.
    pub route: Route,
    /// Its schema fingerprint.
    pub fingerprint: Fingerprint,
    /// Its quality of service.
    pub qos: Qos,
    /// Local, or declared by a peer.
    pub origin: Origin,
    /// Linked interests.
    pub subscribers: usize,
    /// Messages sent (local intents only).
    pub sent: u64,
    /// Sends that failed (local intents only).
    pub send_failures: u64,
    /// Messages that did not reach a peer subscriber (local intents only; see
    /// [`LinkEvent::Undelivered`](crate::LinkEvent::Undelivered)): the sum of
    /// `undelivered_by_reason`.
    pub undelivered: u64,
    /// `undelivered` split by reason: the reasons with a non-zero count, in
    /// [`Undelivered::ALL`] order (empty for peer intents and for intents that lost nothing).
    /// Read one reason with [`IntentInfo::undelivered_by`].
    pub undelivered_by_reason: Vec<(Undelivered, u64)>,
    /// What each peer's subscribers reported about this (local) intent's messages: drops in
    /// total, and the fullest subscriber's lag and capacity at the last report. Peers that
    /// never reported are absent.
    pub peer_feedback: Vec<(PeerId, SubscriberFeedback)>,
}

impl IntentInfo {
    /// Messages that did not reach a peer subscriber for `reason` (0 when none did).
    pub fn undelivered_by(&self, reason: Undelivered) -> u64 {
        self.undelivered_by_reason
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, count)| *count)
    }
}

/// One interest in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InterestInfo {
    /// Its id.
    pub id: HandleId,
    /// Its pattern.
    pub pattern: RoutePattern,
    /// Its schema fingerprint.
    pub fingerprint: Fingerprint,
    /// Local, or declared by a peer.
    pub origin: Origin,
    /// Linked intents.
    pub publishers: usize,
    /// Queue state (local interests only).
    pub queue: Option<QueueStats>,
}

/// One link in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkInfo {
    /// The publishing side.
    pub intent: HandleId,
    /// The subscribing side.
    pub interest: HandleId,
    /// Whether both sides use one schema, or two compatible ones (and which fields differ).
    pub compatibility: Compatibility,
}

/// Router-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterCounters {
    /// Matches refused because the schema fingerprints differ and a side declared no schema
    /// (or overrode its fingerprint).
    pub fingerprint_mismatches: u64,
    /// Matches refused because the two schemas do not read each other
    /// ([`LinkError::SchemaConflict`](dndm_core::LinkError::SchemaConflict)).
    pub schema_conflicts: u64,
    /// Links made between two different but compatible schemas of one type.
    pub compatible_links: u64,
    /// Matches refused because one type name is bound to two Rust types.
    pub type_mismatches: u64,
}

/// An owned, consistent copy of the router's state, taken under one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The router's node name.
    pub node: String,
    /// Whether the router is closed.
    pub closed: bool,
    /// Intents, local and peer, ordered by id.
    pub intents: Vec<IntentInfo>,
    /// Interests, local and peer, ordered by id.
    pub interests: Vec<InterestInfo>,
    /// Links, ordered.
    pub links: Vec<LinkInfo>,
    /// Routes served by request/response services.
    pub services: Vec<Route>,
    /// Names of attached endpoints.
    pub endpoints: Vec<String>,
    /// Peers the endpoints reach: addresses, connection state, RTT, counters. The routes each
    /// peer declared are the intents and interests whose origin is that peer.
    pub peers: Vec<dndm_core::PeerInfo>,
    /// Router-wide counters.
    pub counters: RouterCounters,
    /// Tasks the router spawned (service loops, request handlers) that have not ended yet.
    /// 0 once [`Router::close`](crate::Router::close) has returned.
    pub tasks: usize,
}
