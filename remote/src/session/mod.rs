//! The session state machine: one logical link to one peer, across reconnects.
//!
//! A [`Session`] speaks dndm frames (`dndm-codec`) and does no I/O: the driver feeds it frames
//! read from the connection, connection events and the current time, and writes out what it
//! returns. It survives disconnects: what was sent but not acknowledged is resent after the next
//! handshake, so a reliable route loses nothing while the retransmit budget holds.
//!
//! # Protocol
//!
//! - On every connection both sides send a `Hello` first: identity (ed25519 key, and over a
//!   Noise channel the signature binding it to the Noise static key), node name, the full route
//!   set with per-session route ids, capabilities and resume state (epoch, last sequence
//!   received, last sequence sent). Route changes later travel as `Advert` deltas. Every
//!   declaration of the peer, in the hello or an advert, is checked against
//!   [`SessionConfig::acl`]; a denied one ends the connection with [`LinkFailure::Denied`].
//! - Every message gets a sequence number from one space per direction. A `Batch` covers the
//!   range `first_seq..=last_seq`; reliable messages stay in a bounded retransmit buffer until
//!   the peer acknowledges them (cumulative `Ack`). Resent batches keep their range but carry
//!   only their reliable messages, so the receiver knows the best-effort ones in between are
//!   gone (counted as lost, never waited for).
//! - The receiver accepts a batch whose range starts at or before the next expected sequence
//!   and ends at or after it, delivers the messages from the expected one on, in order, and
//!   acknowledges. Anything entirely older is a duplicate; anything starting later is a gap. On
//!   an ordered transport (TCP, Unix socket, a libp2p stream) a duplicate is a replay and a gap
//!   is a protocol violation, and both end the connection; on a lossy transport (the simulator)
//!   both are dropped and counted, and the sender resends after its retransmit timeout
//!   (go-back-N).
//! - Resume: the peer's `Hello` carries its epoch. Same epoch as before: resend what the peer
//!   has not received. New epoch (the peer restarted): what it had not acknowledged is counted
//!   as lost and sequence tracking restarts from its `last_sent_seq`.
//! - `Ping`/`Pong` measure RTT and keep an idle link alive; a connection that hears nothing for
//!   the idle timeout is declared dead.
//!
//! # Call order
//!
//! [`Session::handle_connect`] when a connection is up (after the Noise handshake), then any mix
//! of `handle_frame`, `handle_timeout`, `send`, route changes and `close`; after each input drain
//! [`Session::poll_transmit`] (write every frame, in order) and [`Session::poll_event`], and
//! re-arm one timer at [`Session::poll_timeout`]. [`Session::handle_disconnect`] when the
//! connection is lost; the session waits for the next `handle_connect`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use dndm_codec::{
    Ack, Advert, Batch, BatchMessage, BatchOptions, Capabilities, Close, CloseCode, Correlation,
    DeclPattern, DeclRoute, Decoder, Dictionary, Encoder, Frame, FrameHeader, FrameKind, Hello,
    IntentDecl, InterestDecl, PROTOCOL_VERSION, Ping, Pong, ResponseError, ResumeState,
    verify_batch,
};
use dndm_core::{
    BudgetKind, IntentAd, InterestAd, Keypair, PeerId, PublicKey, Qos, Route, RoutePattern,
    ServiceAd, Signing, Undelivered,
};

use crate::noise;

mod feedback;
mod flow;
mod hashed;
mod record;
mod recv;
mod routes;
mod send;
mod trial;
mod types;

pub use feedback::FEEDBACK_INTERVAL;
pub use hashed::MAX_PEER_SCHEMA_BYTES;
#[cfg(feature = "runtime")]
pub(crate) use types::require;
pub use types::{
    Binding, Connection, Event, LinkFailure, SessionConfig, SessionSendError, SessionStats,
    SignedBatch,
};

use routes::{Change, LocalRoutes, PeerRoutes, declare, withdraw};
use send::{intent_decl, interest_decl, service_decls};

/// Sequence numbers a peer may use: one per message, so 2^62 is beyond any session's life,
/// and arithmetic on them never overflows.
const MAX_SEQ: u64 = 1 << 62;
/// Ids one route may be declared under at once: the current one and a few whose withdrawal
/// is on its way.
const MAX_IDS_PER_ROUTE: usize = 8;
/// Early batches kept per session on lossy transports while waiting for a gap to fill.
const MAX_EARLY_BATCHES: usize = 256;

/// A message waiting to be batched.
#[derive(Debug)]
struct Outgoing {
    route_id: u32,
    reliable: bool,
    correlation: Correlation,
    payload: Bytes,
}

/// A message's bytes in a batch besides its framing: payload and response error text.
fn message_len(payload: &Bytes, correlation: &Correlation) -> usize {
    let error = match correlation {
        Correlation::Response {
            error: Some(error), ..
        } => error.message.len(),
        _ => 0,
    };
    payload.len() + error
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate_text(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// A sent batch kept for resending: its range and its reliable messages.
#[derive(Debug)]
struct Sent {
    first: u64,
    last: u64,
    reliable: Vec<BatchMessage>,
}

/// The state of the current connection.
#[derive(Debug)]
struct Conn {
    info: Connection,
    /// The peer's hello arrived and was accepted.
    open: bool,
    last_rx: Instant,
    last_tx: Instant,
    /// Outstanding ping: nonce and when it left.
    ping: Option<(u64, Instant)>,
    /// When unacknowledged data was last (re)sent or acknowledged.
    progress_at: Instant,
}

/// Declaration ids from here up name services. A service travels as two declarations with the
/// same id: an interest in the request route and an intent on the response route; requests and
/// responses name the service by that id, with their correlation saying which they are.
pub(crate) const SERVICE_ID_BASE: u32 = 1 << 31;

/// One logical link to one peer. See the module docs for the protocol and call order.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    keypair: Keypair,
    epoch: u64,
    encoder: Encoder,
    decoder: Decoder,
    local: LocalRoutes,
    peer: Option<PeerId>,
    peer_epoch: Option<u64>,
    peer_routes: PeerRoutes,
    peer_key: Option<PublicKey>,
    /// What the peer's last hello announced: its limits, zstd and dictionaries, which our
    /// batches respect.
    peer_caps: Option<Capabilities>,
    outgoing: VecDeque<Outgoing>,
    /// Payload bytes in `outgoing`.
    outgoing_bytes: usize,
    send_refused: bool,
    unacked: VecDeque<Sent>,
    unacked_reliable: usize,
    /// Sequence numbers to resend from (go-back-N), set on resume and retransmit timeout.
    resend_from: Option<u64>,
    /// The next kept batch to resend from: resends go out a batch at a time, paced like new
    /// batches (new batches wait until they are done, keeping sequence order).
    resending: Option<u64>,
    /// Our intents (by id) the peer asked us to hold back: their queued messages wait.
    paused: HashSet<u32>,
    /// The peer's intents (by its ids) we asked it to hold back.
    pausing_peer: HashSet<u32>,
    /// The peer's intents we ever paused (this peer incarnation): after each hello the peer is
    /// told the state of each, so a pause or resume lost with a connection is repaired.
    ever_paused_peer: HashSet<u32>,
    /// Queued messages of paused routes, by route id, oldest first.
    held: HashMap<u32, VecDeque<Outgoing>>,
    /// Subscriber feedback, both ways.
    feedback: feedback::Feedback,
    /// The peer's distinct schemas (this incarnation).
    peer_schemas: hashed::PeerSchemas,
    next_seq: u64,
    /// The highest cumulative acknowledgement from the peer.
    acked: u64,
    expected: u64,
    ack_due: bool,
    /// Batches that arrived ahead of a gap (lossy transports only), by first sequence.
    early: BTreeMap<u64, Batch>,
    conn: Option<Conn>,
    closing: Option<Close>,
    closed: bool,
    transmit: VecDeque<Bytes>,
    events: VecDeque<Event>,
    next_nonce: u64,
    stats: SessionStats,
    /// Whether compression pays in time on this link (measured while saturated).
    trial: trial::CompressionTrial,
    /// With `config.record`: the route ids already handed over with a recorded batch, per
    /// session id (what each meant then).
    recorded_routes: HashMap<u32, Route>,
    recorded_session: Option<dndm_codec::SessionId>,
}

impl Session {
    /// A new session. `epoch` identifies this incarnation to the peer (random per process start).
    pub fn new(config: SessionConfig, keypair: Keypair, epoch: u64) -> Self {
        let mut encoder = Encoder::new(config.limits);
        if let Some(compression) = config.compression {
            encoder = encoder.with_compression(compression);
        }
        let mut decoder = Decoder::new(config.limits);
        for dictionary in config.dictionaries.values() {
            encoder = encoder.with_dictionary(dictionary.clone());
            decoder = decoder.with_dictionary(dictionary.clone());
        }
        Self {
            config,
            keypair,
            epoch,
            encoder,
            decoder,
            local: LocalRoutes::default(),
            peer: None,
            peer_epoch: None,
            peer_routes: PeerRoutes::default(),
            peer_key: None,
            peer_caps: None,
            outgoing: VecDeque::new(),
            outgoing_bytes: 0,
            send_refused: false,
            unacked: VecDeque::new(),
            unacked_reliable: 0,
            resend_from: None,
            resending: None,
            paused: HashSet::new(),
            pausing_peer: HashSet::new(),
            ever_paused_peer: HashSet::new(),
            held: HashMap::new(),
            feedback: feedback::Feedback::default(),
            peer_schemas: hashed::PeerSchemas::default(),
            next_seq: 1,
            acked: 0,
            expected: 1,
            recorded_routes: HashMap::new(),
            recorded_session: None,
            ack_due: false,
            early: BTreeMap::new(),
            conn: None,
            closing: None,
            closed: false,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            next_nonce: 1,
            stats: SessionStats::default(),
            trial: trial::CompressionTrial::default(),
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A connection is up: send our hello.
    pub fn handle_connect(&mut self, now: Instant, info: Connection) {
        if self.closed {
            return;
        }
        self.conn = Some(Conn {
            info,
            open: false,
            last_rx: now,
            last_tx: now,
            ping: None,
            progress_at: now,
        });
        self.ack_due = false;
        self.resending = None;
        let hello = self.hello();
        self.queue_frame(&Frame::Hello(hello), now);
    }

    /// The connection was lost. Unacknowledged data stays for the next connection.
    pub fn handle_disconnect(&mut self, failure: LinkFailure) {
        if self.conn.take().is_some() && !self.closed {
            self.stats.failures += 1;
            self.transmit.clear();
            self.resending = None;
            self.events.push_back(Event::Disconnected(failure));
        }
    }

    /// A frame from the peer.
    pub fn handle_frame(&mut self, now: Instant, frame: Bytes) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        conn.last_rx = now;
        if let Err(failure) = self.process(now, &frame) {
            self.fail(failure);
        }
    }

    /// Time passed: keepalive, idle timeout, retransmit timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        let config = &self.config;
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if now.saturating_duration_since(conn.last_rx) >= config.idle_timeout {
            let idle = config.idle_timeout;
            self.fail(LinkFailure::IdleTimeout(idle));
            return;
        }
        if conn.open
            && let Some(rto) = config.retransmit_timeout
            && !self.unacked.is_empty()
            && now.saturating_duration_since(conn.progress_at) >= rto
        {
            conn.progress_at = now;
            self.resend_from = self.unacked.front().map(|s| s.first);
        }
        if conn.open
            && conn.ping.is_none()
            && now.saturating_duration_since(conn.last_tx) >= config.keepalive
        {
            let nonce = self.next_nonce;
            self.next_nonce += 1;
            conn.ping = Some((nonce, now));
            self.queue_frame(&Frame::Ping(Ping { nonce }), now);
        }
        self.flush_feedback(now);
    }

    /// Queues a message of a declared local intent.
    ///
    /// # Errors
    /// [`SessionSendError::Full`] when the send queue is full (then [`Event::SendReady`] comes
    /// later); [`SessionSendError::UnknownRoute`]; [`SessionSendError::Closed`].
    pub fn send(
        &mut self,
        route: &Route,
        payload: Bytes,
        correlation: Correlation,
    ) -> Result<(), SessionSendError> {
        if self.closed || self.closing.is_some() {
            return Err(SessionSendError::Closed);
        }
        let Some(&route_id) = self.local.intent_ids.get(route) else {
            return Err(SessionSendError::UnknownRoute(route.clone()));
        };
        let reliable = self
            .local
            .intents
            .get(&route_id)
            .is_some_and(|ad| ad.qos.is_reliable());
        self.enqueue(route_id, reliable, correlation, payload)
    }

    /// Whether [`Session::send`] would accept a message now.
    pub fn can_send(&self) -> bool {
        !self.closed && self.closing.is_none() && self.outgoing.len() < self.config.send_queue
    }

    /// Declares a local intent to the peer.
    pub fn add_local_intent(&mut self, ad: IntentAd, now: Instant) {
        if self.local.intent_ids.contains_key(&ad.route) {
            return;
        }
        // Declared again before its withdrawal went out: keep it, under the same id.
        if let Some(at) = self
            .local
            .withdrawing
            .iter()
            .position(|id| self.local.intents.get(id) == Some(&ad))
        {
            let id = self.local.withdrawing.swap_remove(at);
            self.local.intent_ids.insert(ad.route, id);
            return;
        }
        let id = self.local.next();
        self.local.intent_ids.insert(ad.route.clone(), id);
        let decl = intent_decl(id, &ad);
        self.local.intents.insert(id, ad);
        self.advertise(
            Advert {
                intents_added: vec![decl],
                ..Advert::default()
            },
            now,
        );
        self.resolve_hashed();
    }

    /// Withdraws a local intent. New sends on it fail at once; the peer is told after every
    /// message already queued on it was sent (and, if reliable, acknowledged).
    pub fn remove_local_intent(&mut self, route: &Route, now: Instant) {
        if let Some(id) = self.local.intent_ids.remove(route) {
            self.local.withdrawing.push(id);
            self.flush_withdrawals(now);
        }
    }

    /// Declares a local interest to the peer.
    pub fn add_local_interest(&mut self, ad: InterestAd, now: Instant) {
        if self.local.interest_ids.contains_key(&ad.pattern) {
            return;
        }
        let id = self.local.next();
        self.local.interest_ids.insert(ad.pattern.clone(), id);
        let decl = interest_decl(id, &ad);
        self.local.interests.insert(id, ad);
        self.advertise(
            Advert {
                interests_added: vec![decl],
                ..Advert::default()
            },
            now,
        );
        self.resolve_hashed();
    }

    /// Withdraws a local interest.
    pub fn remove_local_interest(&mut self, pattern: &RoutePattern, now: Instant) {
        if let Some(id) = self.local.interest_ids.remove(pattern) {
            self.local.interests.remove(&id);
            self.advertise(
                Advert {
                    interests_removed: vec![id],
                    ..Advert::default()
                },
                now,
            );
        }
    }

    /// Declares a local service to the peer.
    pub fn add_local_service(&mut self, ad: ServiceAd, now: Instant) {
        if self.local.service_ids.contains_key(&ad.route) {
            return;
        }
        let id = self.local.next_service();
        self.local.service_ids.insert(ad.route.clone(), id);
        let (intent, interest) = service_decls(id, &ad);
        self.local.services.insert(id, ad);
        let advert = Advert {
            intents_added: vec![intent],
            interests_added: vec![interest],
            ..Advert::default()
        };
        self.advertise(advert, now);
    }

    /// Withdraws a local service.
    pub fn remove_local_service(&mut self, route: &Route, now: Instant) {
        if let Some(id) = self.local.service_ids.remove(route) {
            self.local.services.remove(&id);
            let advert = Advert {
                intents_removed: vec![id],
                interests_removed: vec![id],
                ..Advert::default()
            };
            self.advertise(advert, now);
        }
    }

    /// Sends a request to the peer's service on `route`; the answer comes as
    /// [`Event::Response`] with the same `id`. Requests are reliable.
    ///
    /// # Errors
    /// [`SessionSendError::UnknownRoute`] when the peer serves no such route; as
    /// [`Session::send`] otherwise.
    pub fn request(
        &mut self,
        route: &Route,
        payload: Bytes,
        id: u64,
    ) -> Result<(), SessionSendError> {
        let service = self
            .peer_routes
            .services
            .iter()
            .find(|(_, ad)| ad.route == *route);
        let Some((&route_id, _)) = service else {
            return Err(SessionSendError::UnknownRoute(route.clone()));
        };
        self.enqueue(route_id, true, Correlation::Request { id }, payload)
    }

    /// Answers request `to` that arrived for the local service on `route`.
    ///
    /// # Errors
    /// [`SessionSendError::UnknownRoute`] when no local service serves `route`; as
    /// [`Session::send`] otherwise.
    pub fn respond(
        &mut self,
        route: &Route,
        to: u64,
        result: Result<Bytes, ResponseError>,
    ) -> Result<(), SessionSendError> {
        let Some(&route_id) = self.local.service_ids.get(route) else {
            return Err(SessionSendError::UnknownRoute(route.clone()));
        };
        let (payload, error) = match result {
            Ok(payload) => (payload, None),
            Err(mut error) => {
                // The codec refuses longer text; a long handler error must not fail the link.
                truncate_text(
                    &mut error.message,
                    self.config.limits.max_text_len() as usize,
                );
                (Bytes::new(), Some(error))
            }
        };
        self.enqueue(route_id, true, Correlation::Response { to, error }, payload)
    }

    /// Queues a message for batching, refusing it when closed or when the send queue is full.
    fn enqueue(
        &mut self,
        route_id: u32,
        reliable: bool,
        correlation: Correlation,
        payload: Bytes,
    ) -> Result<(), SessionSendError> {
        if self.closed || self.closing.is_some() {
            return Err(SessionSendError::Closed);
        }
        let paused = !self.paused.is_empty() && self.paused.contains(&route_id);
        let queued = if paused {
            self.held.get(&route_id).map_or(0, VecDeque::len)
        } else {
            self.outgoing.len()
        };
        if queued >= self.config.send_queue {
            self.send_refused |= !paused;
            return Err(SessionSendError::Full);
        }
        let len = message_len(&payload, &correlation);
        let max = self.frame_room().saturating_sub(send::MESSAGE_OVERHEAD);
        if len > max {
            return Err(SessionSendError::TooLarge { len, max });
        }
        let message = Outgoing {
            route_id,
            reliable,
            correlation,
            payload,
        };
        if paused {
            // The peer cannot take this route now: wait aside, out of other routes' way.
            self.held.entry(route_id).or_default().push_back(message);
        } else {
            self.outgoing_bytes += message.payload.len();
            self.outgoing.push_back(message);
        }
        Ok(())
    }

    /// Closes the session in order: batches what the retransmit buffer admits, sends `Close`,
    /// reports [`Event::Closed`]. It does not wait for acknowledgements: when the buffer is
    /// full, the messages still queued are dropped and counted in
    /// [`SessionStats::unsent_on_close`]. Before the peer's hello it sends `Close` behind our
    /// hello and closes at once; without a connection it closes at once.
    pub fn close(&mut self, code: CloseCode, reason: impl Into<String>) {
        if self.closed || self.closing.is_some() {
            return;
        }
        let close = Close {
            code,
            reason: reason.into(),
        };
        match self.conn.as_ref() {
            Some(conn) if conn.open => self.closing = Some(close),
            // The peer's hello is still on its way, but ours went first on this connection:
            // the peer may already act on it (link our routes), so it must hear the close too,
            // or it would keep our routes as those of a peer that is only away.
            Some(conn) => {
                // The session ends with this frame, so its send time matters to nothing.
                let at = conn.last_tx;
                self.queue_frame(&Frame::Close(close.clone()), at);
                self.finish_close(false, close);
            }
            None => self.finish_close(false, close),
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// The next frame to write, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        if self.transmit.is_empty() {
            self.fill_transmit(now);
        }
        self.poll_queued()
    }

    /// The next frame already built, without building more: what a session that just closed
    /// still has for its connection (our hello and `Close`, when it closed before the peer's
    /// hello).
    pub fn poll_queued(&mut self) -> Option<Bytes> {
        let frame = self.transmit.pop_front()?;
        self.stats.bytes_sent += frame.len() as u64;
        Some(frame)
    }

    /// The configuration this session runs with.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let conn = self.conn.as_ref()?;
        let mut deadline = conn.last_rx + self.config.idle_timeout;
        if conn.open && conn.ping.is_none() {
            deadline = deadline.min(conn.last_tx + self.config.keepalive);
        }
        if let Some(rto) = self.config.retransmit_timeout
            && conn.open
            && !self.unacked.is_empty()
        {
            deadline = deadline.min(conn.progress_at + rto);
        }
        if conn.open
            && let Some(at) = self.feedback_deadline()
        {
            deadline = deadline.min(at);
        }
        Some(deadline)
    }

    // ---- queries ------------------------------------------------------------------------

    /// The peer, once a hello was accepted.
    pub fn peer(&self) -> Option<PeerId> {
        self.peer
    }

    /// Whether a connection is up and the peer's hello accepted.
    pub fn is_open(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.open)
    }

    /// What the connection's writer was doing as input arrived: `busy`, a write was under
    /// way; `pushed_back`, a write found the connection full since the last call (the network
    /// or the peer is the limit, not our CPU). Compression is measured only on links that push
    /// back (docs/protocol.md, "Compression").
    pub fn handle_transport(&mut self, busy: bool, pushed_back: bool) {
        self.trial.transport(busy, pushed_back);
    }

    /// Whether the session closed for good.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The routes the peer publishes on (as it last declared them), sorted.
    pub fn peer_intents(&self) -> Vec<Route> {
        let mut routes: Vec<Route> = self.peer_routes.intent_ids.keys().cloned().collect();
        routes.sort();
        routes
    }

    /// The patterns the peer subscribes to (as it last declared them), sorted by text.
    pub fn peer_interests(&self) -> Vec<RoutePattern> {
        let mut patterns: Vec<RoutePattern> =
            self.peer_routes.interest_ids.keys().cloned().collect();
        patterns.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        patterns
    }

    /// Reliable messages sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.unacked_reliable
    }

    /// Batches sent and not yet acknowledged (reliable or not).
    pub fn unacked_batches(&self) -> usize {
        self.unacked.len()
    }

    /// Messages waiting to be batched (also those of routes the peer paused).
    pub fn queued(&self) -> usize {
        self.outgoing.len() + self.held_len()
    }

    /// About how many bytes the queued messages take in batches (not those held back for a
    /// paused route).
    pub fn queued_bytes(&self) -> usize {
        self.outgoing_bytes + self.outgoing.len() * send::MESSAGE_FRAMING
    }

    /// The sequence number the last message accepted so far has or will have: once
    /// [`Session::acked_through`] reaches it, the peer has everything sent before.
    pub fn enqueued_through(&self) -> u64 {
        self.next_seq - 1 + self.queued() as u64
    }

    /// The highest sequence number the peer acknowledged (cumulatively).
    pub fn acked_through(&self) -> u64 {
        self.acked
    }
}
