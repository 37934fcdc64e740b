//! The link machine: everything one peer link decides, without I/O.
//!
//! A [`Link`] lives as long as the peer's link, across connections. It composes the
//! connection's security layer ([`Secure`]: a Noise [`Channel`] or a transport that already
//! secured the stream), the frame reassembly, and the peer's [`Session`], and adds the rules
//! that used to live in the async driver:
//!
//! - **Which connection runs** ([`Link::offer`]): a new connection waits while the current one
//!   works; when both peers open one at once before either hello, both keep the one the lower
//!   PeerId opened.
//! - **Route-change order** ([`Link::handle_local`]): route changes arrive apart from publishes
//!   (a watch, not the command queue), so a withdrawn intent stays declared until the commands
//!   queued before the withdrawal are handled: messages a publisher sent before it dropped its
//!   intent still go out.
//! - **Flushes** ([`Link::handle_flush`]): [`Event::Flushed`] once the peer acknowledged
//!   everything queued before the flush.
//! - **Grace** ([`Link::poll_timeout`]): a peer that got through a hello and then stays away
//!   longer than the grace period is retired: [`Event::Retired`] (the driver withdraws its
//!   routes), then everything queued for it is reported undelivered. It resumes normally if it
//!   comes back.
//! - **Flow control** ([`Link::handle_backlog`]): when a peer's messages wait for a full local
//!   subscriber, the peer is asked to hold that route back, and released when it drains; the
//!   link itself never waits.
//!
//! # Call order
//!
//! Inputs: [`Link::handle_connect`] when the driver adopts a connection (after
//! [`Link::offer`]), [`Link::handle_input`] with bytes read, [`Link::handle_transport_failure`]
//! when reading or writing failed, [`Link::handle_timeout`] when [`Link::poll_timeout`] passes,
//! and the commands (`handle_publish`, `handle_request`, `handle_respond`, `handle_flush`,
//! `handle_local`, `handle_backlog`, `close`). After each input, write everything
//! [`Link::poll_transmit`] returns, in order, then drain [`Link::poll_event`], and re-arm one
//! timer at [`Link::poll_timeout`]. [`Event::ConnectionEnded`] tells the driver to drop the
//! connection; the link waits for the next `handle_connect`.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dndm_codec::{
    CloseCode, Correlation, FrameHeader, Limits, ResponseError, SessionId, declared_len,
    split_frame,
};
use dndm_core::recycle::Recycler;
use dndm_core::{IntentAd, InterestAd, PeerId, Route, ServiceAd, SubscriberFeedback};

use crate::noise::{self, Channel};
use crate::session::{Binding, Connection, Event as SessionEvent, LinkFailure, Session};
use crate::session::{SessionSendError, SessionStats};

/// The local intents, interests and services a link declares to its peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalSet {
    /// Local intents.
    pub intents: HashSet<IntentAd>,
    /// Local interests.
    pub interests: HashSet<InterestAd>,
    /// Local services.
    pub services: HashSet<ServiceAd>,
}

/// Bytes [`Link::poll_transmit_into`] gathers into one write, about: large writes cost fewer
/// system calls, and a bounded size lets the driver reuse its write buffers.
const WRITE_TARGET: usize = 256 * 1024;

/// Size of a buffer decrypted input goes into (messages are delivered as slices of it).
const PLAIN_BUFFER: usize = 256 * 1024;
/// Buffers decrypted input went into kept for reuse once their messages are dropped.
const PLAIN_SPARES: usize = 3;

/// The security layer of one connection.
#[derive(Debug)]
pub enum Secure {
    /// Our Noise channel, established.
    Noise(Channel),
    /// None: the transport already authenticated and encrypted the stream (a libp2p stream).
    Plain {
        /// Frames waiting to be written.
        out: BytesMut,
    },
}

impl Secure {
    /// No security layer.
    pub fn plain() -> Self {
        Self::Plain {
            out: BytesMut::new(),
        }
    }

    /// Appends `frame`, secured, to `out`.
    fn write_into(&mut self, frame: &[u8], out: &mut Vec<u8>) -> Result<(), noise::NoiseError> {
        match self {
            Self::Noise(channel) => channel.write_into(frame, out),
            Self::Plain { .. } => {
                out.extend_from_slice(frame);
                Ok(())
            }
        }
    }

    /// Moves the bytes queued to write to the end of `out`.
    fn transmit_into(&mut self, out: &mut Vec<u8>) {
        match self {
            Self::Noise(channel) => channel.transmit_into(out),
            Self::Plain { out: queued } => {
                out.extend_from_slice(queued);
                queued.clear();
            }
        }
    }

    /// Bytes held from earlier input that the next input's plaintext may include.
    fn buffered_input(&self) -> usize {
        match self {
            Self::Noise(channel) => channel.buffered_input(),
            Self::Plain { .. } => 0,
        }
    }

    fn handle_input_into(
        &mut self,
        bytes: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), noise::NoiseError> {
        match self {
            Self::Noise(channel) => channel.handle_input_into(bytes, out),
            Self::Plain { .. } => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// What to do with a new connection of the peer ([`Link::offer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// No connection runs: adopt it now.
    Adopt,
    /// The current connection works: keep the new one for when it ends.
    Queue,
    /// Both sides opened one before either hello and the new one wins: end the current one
    /// (the link reports it ended) and run the new one next.
    Supersede,
    /// Both sides opened one and ours wins: drop the new one.
    Refuse,
}

/// What the link tells its driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A session event to act on (a message, a peer route, a request, settlement...).
    /// `Disconnected` and `Closed` never come here: see [`Event::ConnectionEnded`].
    Session(SessionEvent),
    /// The current connection ended; drop it. The link waits for the next one unless closed.
    ConnectionEnded {
        /// Whether the peer's hello was accepted on it.
        opened: bool,
        /// Why, or `None` when the session closed in order.
        failure: Option<LinkFailure>,
        /// Whether it failed because a Noise message did not decrypt.
        decrypt_failed: bool,
    },
    /// Flush `id` is done: the peer acknowledged everything queued before it.
    Flushed(u64),
    /// The peer stayed away past the grace period: withdraw its routes. What was queued for it
    /// follows as undelivered session events.
    Retired,
}

/// One peer link's protocol state. See the module docs.
#[derive(Debug)]
pub struct Link {
    local_peer: PeerId,
    peer: PeerId,
    /// Our signature over our Noise static key, for the hello on Noise connections.
    binding: [u8; 64],
    limits: Limits,
    session: Session,
    secure: Option<Secure>,
    /// Decrypted bytes not yet cut into frames.
    plain: BytesMut,
    /// Buffers `plain` left behind, for reuse (see [`dndm_core::recycle`]).
    spares: Recycler,
    /// Bytes decoded from the peer's frames whose events are not yet drained (see
    /// [`Link::poll_event`]); decoding pauses at the session's `budget.decoded_bytes`.
    decoded: usize,
    /// Decoding paused on the budget with whole frames left in `plain`.
    paced: bool,
    /// Whether the current connection was opened by the side that wins a tie-break.
    preferred: bool,
    opened: bool,
    decrypt_failed: bool,
    /// The route set the endpoint wants declared, and what the session has.
    wanted: LocalSet,
    applied: LocalSet,
    /// Commands to handle before withdrawing intents (see the module docs).
    hold_removals: usize,
    /// Flushes waiting for the peer to acknowledge up to a sequence number: (target, id).
    flushes: Vec<(u64, u64)>,
    grace: Duration,
    /// Since when a peer that got through a hello has had no connection.
    away_since: Option<Instant>,
    /// Routes of the peer we asked it to hold back.
    paused: HashSet<Route>,
    /// The last bytes of a connection that closed in order (our `Close`), still to write.
    parting: VecDeque<Bytes>,
    events: VecDeque<Event>,
}

impl Link {
    /// A link to `peer` running `session`; `binding` is our signature over our Noise static
    /// key; a peer away longer than `grace` is retired.
    pub fn new(
        local_peer: PeerId,
        peer: PeerId,
        binding: [u8; 64],
        session: Session,
        limits: Limits,
        grace: Duration,
    ) -> Self {
        Self {
            local_peer,
            peer,
            binding,
            limits,
            session,
            secure: None,
            plain: BytesMut::new(),
            spares: Recycler::new(PLAIN_BUFFER, PLAIN_SPARES),
            decoded: 0,
            paced: false,
            preferred: false,
            opened: false,
            decrypt_failed: false,
            wanted: LocalSet::default(),
            applied: LocalSet::default(),
            hold_removals: 0,
            flushes: Vec::new(),
            grace,
            away_since: None,
            paused: HashSet::new(),
            parting: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// What to do with a new connection; `preferred`: whether it was opened by the side that
    /// wins a tie-break (the lower PeerId).
    pub fn offer(&mut self, preferred: bool) -> Offer {
        if self.secure.is_none() {
            Offer::Adopt
        } else if self.session.is_open() {
            Offer::Queue
        } else if preferred || !self.preferred {
            // Both sides opened a connection before either hello: keep the lower PeerId's (or
            // the newer of the same kind).
            self.session.handle_disconnect(LinkFailure::Transport(
                "superseded by a newer connection".into(),
            ));
            self.pump_session(None);
            Offer::Supersede
        } else {
            Offer::Refuse
        }
    }

    /// A connection was adopted: `rest` is plaintext already read after the handshake.
    pub fn handle_connect(
        &mut self,
        secure: Secure,
        rest: BytesMut,
        preferred: bool,
        now: Instant,
    ) {
        let info = match &secure {
            Secure::Noise(channel) => match (channel.remote_static(), channel.handshake_hash()) {
                (Some(remote_static), Some(hash)) => Connection {
                    session_id: SessionId::from_bytes(hash),
                    binding: Some(Binding {
                        local_signature: self.binding,
                        remote_static,
                    }),
                    expected_peer: Some(self.peer),
                },
                _ => {
                    self.events.push_back(Event::ConnectionEnded {
                        opened: false,
                        failure: Some(LinkFailure::Protocol(
                            "noise channel not established".into(),
                        )),
                        decrypt_failed: false,
                    });
                    return;
                }
            },
            Secure::Plain { .. } => Connection {
                session_id: plain_session_id(&self.local_peer, &self.peer),
                binding: None,
                expected_peer: Some(self.peer),
            },
        };
        self.secure = Some(secure);
        self.plain = rest;
        self.paced = false;
        self.preferred = preferred;
        self.opened = false;
        self.decrypt_failed = false;
        self.session.handle_connect(now, info);
        self.process_frames(now);
    }

    /// Bytes read from the connection.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        let Some(secure) = self.secure.as_mut() else {
            return;
        };
        // Decrypted, the input is no longer than it came, with the start of a message held
        // from an earlier input.
        let needed = bytes.len() + secure.buffered_input();
        self.spares.make_room(&mut self.plain, needed);
        // Plaintext decrypted before a bad message is still the peer's, in order.
        if let Err(e) = secure.handle_input_into(bytes, &mut self.plain) {
            self.process_frames(now);
            self.decrypt_failed = true;
            self.session
                .handle_disconnect(LinkFailure::Decode(format!("noise: {e}")));
            self.pump_session(Some(now));
            return;
        }
        self.process_frames(now);
    }

    /// What the connection's writer was doing as input arrived (see
    /// [`Session::handle_transport`]).
    pub fn handle_transport(&mut self, busy: bool, pushed_back: bool) {
        self.session.handle_transport(busy, pushed_back);
    }

    /// Reading or writing the connection failed (or the peer closed it).
    pub fn handle_transport_failure(&mut self, failure: LinkFailure, now: Instant) {
        self.session.handle_disconnect(failure);
        self.pump_session(Some(now));
    }

    /// Time passed: keepalive, idle and retransmit timeouts, the grace period.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
        if let Some(since) = self.away_since
            && now.saturating_duration_since(since) >= self.grace
        {
            self.away_since = None;
            self.paused.clear();
            self.events.push_back(Event::Retired);
            self.session.abandon(now);
        }
        self.pump_session(Some(now));
    }

    /// A publish of a local intent.
    ///
    /// # Errors
    /// As [`Session::send`]; the message is not queued.
    pub fn handle_publish(
        &mut self,
        route: &Route,
        payload: Bytes,
        now: Instant,
    ) -> Result<(), SessionSendError> {
        let sent = self.session.send(route, payload, Correlation::None);
        self.after_command(now);
        sent
    }

    /// A request to the peer's service on `route`, answered by an `Event::Session(Response)`
    /// with the same `id`.
    ///
    /// # Errors
    /// As [`Session::request`].
    pub fn handle_request(
        &mut self,
        route: &Route,
        payload: Bytes,
        id: u64,
        now: Instant,
    ) -> Result<(), SessionSendError> {
        let sent = self.session.request(route, payload, id);
        self.after_command(now);
        sent
    }

    /// The answer to the peer's request `to` for the local service on `route`.
    ///
    /// # Errors
    /// As [`Session::respond`].
    pub fn handle_respond(
        &mut self,
        route: &Route,
        to: u64,
        result: Result<Bytes, ResponseError>,
        now: Instant,
    ) -> Result<(), SessionSendError> {
        let sent = self.session.respond(route, to, result);
        self.after_command(now);
        sent
    }

    /// Asks for [`Event::Flushed`] with `id` once the peer acknowledged everything queued so far.
    pub fn handle_flush(&mut self, id: u64, now: Instant) {
        let target = self.session.enqueued_through();
        if self.session.acked_through() >= target {
            self.events.push_back(Event::Flushed(id));
        } else {
            self.flushes.push((target, id));
        }
        self.after_command(now);
    }

    /// The endpoint's route set changed; `queued` commands wait ahead of the change.
    pub fn handle_local(&mut self, wanted: LocalSet, queued: usize, now: Instant) {
        let withdraws = self
            .applied
            .intents
            .difference(&wanted.intents)
            .next()
            .is_some();
        if withdraws {
            // Everything queued now came before this withdrawal (and any earlier one).
            self.hold_removals = self.hold_removals.max(queued);
        }
        self.wanted = wanted;
        self.sync_local(now);
    }

    /// The fan-in of the peer's `route` holds `backlog` messages for full local subscribers:
    /// above zero the peer is asked to hold the route back, at zero it is released.
    pub fn handle_backlog(&mut self, route: &Route, backlog: usize, now: Instant) {
        if backlog > 0 {
            self.paused.insert(route.clone());
            // Idempotent in the session, and repeated here: a restarted peer forgot the pause.
            self.session.pause_peer_route(route, now);
        } else if self.paused.remove(route) {
            self.session.resume_peer_route(route, now);
        }
    }

    /// What our subscribers made of the peer's `route` so far: goes back to the peer when it
    /// changed, at most every [`FEEDBACK_INTERVAL`](crate::session::FEEDBACK_INTERVAL).
    pub fn handle_feedback(&mut self, route: &Route, feedback: SubscriberFeedback, now: Instant) {
        self.session.report_feedback(route, feedback, now);
    }

    /// Closes the session in order (the peer learns the reason); it will not resume.
    pub fn close(&mut self, reason: &str, now: Instant) {
        self.session.close(CloseCode(0), reason);
        self.pump_session(Some(now));
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Bytes to write to the connection, in order.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        let mut out = Vec::new();
        self.poll_transmit_into(now, &mut out)
            .then(|| Bytes::from(out))
    }

    /// Like [`Link::poll_transmit`], but appends the bytes to `out`, a buffer the caller
    /// reuses (no allocation per write in a steady stream); false when there was nothing.
    pub fn poll_transmit_into(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        let start = out.len();
        if let Some(bytes) = self.parting.pop_front() {
            out.extend_from_slice(&bytes);
            return true;
        }
        let Some(secure) = self.secure.as_mut() else {
            return false;
        };
        secure.transmit_into(out);
        // What the session has, up to about WRITE_TARGET bytes per write.
        let mut failed = None;
        while out.len() - start < WRITE_TARGET
            && let Some(frame) = self.session.poll_transmit(now)
        {
            if let Err(e) = secure.write_into(&frame, out) {
                failed = Some(e);
                break;
            }
        }
        if let Some(e) = failed {
            out.truncate(start);
            self.handle_transport_failure(LinkFailure::Transport(format!("noise: {e}")), now);
            return false;
        }
        // Building batches settles best-effort messages and may close the session (then the
        // connection's last bytes wait in `parting`).
        self.pump_session(Some(now));
        match self.secure.as_mut() {
            Some(secure) => secure.transmit_into(out),
            None => {
                if let Some(bytes) = self.parting.pop_front() {
                    out.extend_from_slice(&bytes);
                }
            }
        }
        out.len() > start
    }

    /// The next event, if any. Once every event is drained, what they carried counts as
    /// handed on: call [`Link::resume_input`] then.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if event.is_none() {
            self.decoded = 0;
        }
        event
    }

    /// Decodes frames that waited for the decoded-bytes budget, once the events were drained;
    /// true if it did (drain the events again, then call it again).
    pub fn resume_input(&mut self, now: Instant) -> bool {
        if !self.paced || !self.events.is_empty() {
            return false;
        }
        self.decoded = 0;
        self.paced = false;
        self.process_frames(now);
        true
    }

    /// When [`Link::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let session = self.session.poll_timeout();
        let grace = self.away_since.map(|since| since + self.grace);
        match (session, grace) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ---- queries ------------------------------------------------------------------------

    /// The session (its counters, the peer's routes, acknowledgement state).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Whether a connection is adopted (hello exchanged or not).
    pub fn has_connection(&self) -> bool {
        self.secure.is_some()
    }

    /// Whether the session accepts commands now.
    pub fn can_send(&self) -> bool {
        self.session.can_send()
    }

    /// Whether the session holds at least a whole write's worth of messages: worth writing
    /// even while earlier writes are still under way.
    pub fn has_full_write(&self) -> bool {
        self.session.queued_bytes() >= WRITE_TARGET
    }

    /// Routes of the peer held back for full local subscribers.
    pub fn paused_routes(&self) -> impl Iterator<Item = &Route> {
        self.paused.iter()
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.session.stats()
    }

    // ---- helpers ------------------------------------------------------------------------

    fn process_frames(&mut self, now: Instant) {
        let budget = self.session.config().budget.decoded_bytes;
        while self.secure.is_some() {
            // A frame's declared decoded size counts before it is inflated; past the budget the
            // rest waits in `plain` until the events so far are drained. One frame always goes,
            // so a frame larger than the budget still makes progress.
            if self.decoded > 0
                && let Some(next) = self.next_declared()
                && self.decoded + next > budget
            {
                self.paced = true;
                break;
            }
            match split_frame(&mut self.plain, &self.limits) {
                Ok(Some(frame)) => {
                    self.decoded += declared_len(&frame, &self.limits).unwrap_or(frame.len());
                    self.session.handle_frame(now, frame);
                }
                Ok(None) => break,
                Err(e) => {
                    self.session
                        .handle_disconnect(LinkFailure::Decode(e.to_string()));
                    break;
                }
            }
            // Events of each frame before the next (a disconnect ends the loop).
            self.pump_session(Some(now));
        }
        self.pump_session(Some(now));
    }

    /// What decoding the next whole frame in `plain` would keep alive, if one is there.
    fn next_declared(&self) -> Option<usize> {
        let header = FrameHeader::parse(&self.plain, &self.limits).ok()?;
        let frame = self.plain.get(..header.frame_len())?;
        declared_len(frame, &self.limits).ok()
    }

    /// Counts one handled command against a held-back withdrawal.
    fn after_command(&mut self, now: Instant) {
        if self.hold_removals > 0 {
            self.hold_removals -= 1;
            if self.hold_removals == 0 {
                // That was the last command queued before the withdrawal; the session keeps
                // its order, so the withdrawal advert follows it.
                self.sync_local(now);
            }
        }
        self.pump_session(Some(now));
    }

    /// Brings the session's local routes in line with the wanted set (withdrawn intents stay
    /// while commands queued before the withdrawal remain).
    fn sync_local(&mut self, now: Instant) {
        let mut current = self.wanted.clone();
        if self.hold_removals > 0 {
            current.intents.extend(
                self.applied
                    .intents
                    .difference(&self.wanted.intents)
                    .cloned(),
            );
        }
        let session = &mut self.session;
        for ad in self.applied.intents.difference(&current.intents) {
            session.remove_local_intent(&ad.route, now);
        }
        for ad in self.applied.interests.difference(&current.interests) {
            session.remove_local_interest(&ad.pattern, now);
        }
        for ad in current.intents.difference(&self.applied.intents) {
            session.add_local_intent(ad.clone(), now);
        }
        for ad in current.interests.difference(&self.applied.interests) {
            session.add_local_interest(ad.clone(), now);
        }
        for ad in self.applied.services.difference(&current.services) {
            session.remove_local_service(&ad.route, now);
        }
        for ad in current.services.difference(&self.applied.services) {
            session.add_local_service(ad.clone(), now);
        }
        self.applied = current;
        self.pump_session(Some(now));
    }

    /// Turns session events into link events; `now` is `None` only where no time passed.
    fn pump_session(&mut self, now: Option<Instant>) {
        while let Some(event) = self.session.poll_event() {
            match event {
                SessionEvent::Established { .. } => {
                    self.opened = true;
                    self.away_since = None;
                    self.events.push_back(Event::Session(event));
                }
                SessionEvent::Disconnected(failure) => self.end_connection(Some(failure), now),
                SessionEvent::Closed { .. } => {
                    self.end_connection(None, now);
                    self.events.push_back(Event::Session(event));
                }
                other => self.events.push_back(Event::Session(other)),
            }
        }
        if !self.flushes.is_empty() {
            let acked = self.session.acked_through();
            let events = &mut self.events;
            self.flushes.retain(|&(target, id)| {
                let done = target <= acked;
                if done {
                    events.push_back(Event::Flushed(id));
                }
                !done
            });
        }
    }

    fn end_connection(&mut self, failure: Option<LinkFailure>, now: Option<Instant>) {
        let Some(mut secure) = self.secure.take() else {
            return;
        };
        if failure.is_none() {
            // Closed in order: our Close (and what precedes it) still goes out, also frames
            // the session built but the channel has not sealed yet.
            let mut sealed = Vec::new();
            secure.transmit_into(&mut sealed);
            while let Some(frame) = self.session.poll_queued() {
                if secure.write_into(&frame, &mut sealed).is_err() {
                    break;
                }
            }
            secure.transmit_into(&mut sealed);
            if !sealed.is_empty() {
                self.parting.push_back(Bytes::from(sealed));
            }
        }
        self.plain = BytesMut::new();
        self.spares.clear();
        self.paced = false;
        // The grace period starts when a peer that got through a hello loses its connection.
        if self.session.peer().is_some() && !self.session.is_closed() && self.away_since.is_none() {
            self.away_since = now;
        }
        self.events.push_back(Event::ConnectionEnded {
            opened: self.opened,
            failure,
            decrypt_failed: self.decrypt_failed,
        });
    }
}

/// The session id of a connection without Noise ([`Secure::plain`]): the same on both sides,
/// bound to the two peers. Batches on such a connection are signed under it.
pub fn plain_session_id(a: &PeerId, b: &PeerId) -> SessionId {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"dndm/plain-session/v1\0");
    hasher.update(&low.to_bytes());
    hasher.update(&high.to_bytes());
    SessionId::from_bytes(*hasher.finalize().as_bytes())
}

/// Moves bytes both ways between two links joined by hand until both are quiet (tests and
/// harnesses drive links without sockets; feature `test-utils`).
#[cfg(any(test, feature = "test-utils"))]
pub fn shuttle(a: &mut Link, b: &mut Link, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(bytes) = a.poll_transmit(now) {
            b.handle_input(&bytes, now);
            moved = true;
        }
        while let Some(bytes) = b.poll_transmit(now) {
            a.handle_input(&bytes, now);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
