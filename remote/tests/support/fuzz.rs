//! The remote crate's fuzz harnesses: `session_sequence` (two sessions driven through a
//! sequence of operations chosen by the input, with a generator of plausible hostile frames)
//! and `preamble` (the identity preamble parser). Shared by the cargo-fuzz targets
//! (`remote/fuzz/fuzz_targets/`) and the corpus replay test (`remote/tests/fuzz_corpus.rs`).
//! Each must return without panicking for any input; a panic is a bug, in the session or in
//! the invariants stated here.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dndm_codec::{
    Ack, Advert, Batch, BatchMessage, BatchOptions, Capabilities, Close, CloseCode, Compression,
    Correlation, DeclPattern, DeclRoute, Decoder, Encoder, Frame, Hello, IntentDecl, InterestDecl,
    Limits, Ping, Pong, ResponseError, ResumeState, SessionId,
};
use dndm_core::{
    Fingerprint, IntentAd, InterestAd, Keypair, PublicKey, Qos, Route, ServiceAd, Signing,
};
use dndm_remote::acl::{Acl, AclRule};
use dndm_remote::noise::{self, PREAMBLE_LEN};
use dndm_remote::session::{Connection, Event, LinkFailure, Session, SessionConfig};

/// Names of the fuzz targets, as corpus directory names (`remote/fuzz/corpus/<target>/`).
pub const TARGETS: [&str; 2] = ["session_sequence", "preamble"];

/// Most events both sessions may report per input byte. Every operation reads at least one
/// byte; the costliest (a reconnect that replaces every route of both sides, a send of four
/// messages) report a few dozen events.
pub const EVENTS_PER_BYTE: u64 = 64;

/// Frames waiting in one direction; beyond it the oldest is lost (the transport dropped it).
const MAX_IN_FLIGHT: usize = 512;

/// Frames one pump may take from a session before it counts as never going quiet.
const MAX_PUMP: usize = 100_000;

const SERVICE: u32 = 1 << 31;

const ROUTES: [&str; 4] = [
    "test.Reading@robot.imu",
    "test.Reading@robot.arm",
    "test.Status@robot.base",
    "test.Reading@secret.key",
];
const PATTERNS: [&str; 4] = [
    "test.Reading@robot.*",
    "test.Reading@**",
    "test.Status@robot.base",
    "test.Reading@secret.key",
];
/// Services: request route, response route.
const SERVICES: [(&str, &str); 2] = [
    ("test.Req@admin.reboot", "test.Resp@admin.reboot"),
    ("test.Req@admin.stop", "test.Resp@admin.stop"),
];

/// Operations of `session_sequence`, one per input byte (modulo [`OPS`]), each followed by the
/// bytes of its arguments. Public so the seed inputs can be written by name.
pub mod op {
    /// A new connection on both sides (ending the old one first).
    pub const CONNECT: u8 = 0;
    /// A's next frame reaches B.
    pub const DELIVER_AB: u8 = 1;
    /// B's next frame reaches A.
    pub const DELIVER_BA: u8 = 2;
    /// Frames move both ways until both sides are quiet (or 64 moved).
    pub const SHUTTLE: u8 = 3;
    /// The next frame of one direction is lost.
    pub const DROP: u8 = 4;
    /// A's next frame arrives twice.
    pub const DUPLICATE: u8 = 5;
    /// The next two frames of one direction swap.
    pub const REORDER: u8 = 6;
    /// A generated frame (claiming to be A, or a stranger) reaches B.
    pub const INJECT: u8 = 7;
    /// One side sends 1 to 4 messages on a route.
    pub const SEND: u8 = 8;
    /// One side adds or removes a local intent, interest or service.
    pub const ROUTES: u8 = 9;
    /// One side calls the other's service.
    pub const REQUEST: u8 = 10;
    /// One side answers a request it received.
    pub const RESPOND: u8 = 11;
    /// The clock moves on; both sides see the timeout.
    pub const TIME: u8 = 12;
    /// One or both sides lose the connection.
    pub const DISCONNECT: u8 = 13;
    /// One side closes the session.
    pub const CLOSE: u8 = 14;
    /// One side pauses or resumes a route of the other, or abandons it.
    pub const FLOW: u8 = 15;
    /// A restarts: a fresh session with a new epoch.
    pub const RESTART: u8 = 16;
    /// One byte of A's next frame flips.
    pub const CORRUPT: u8 = 17;
}

/// Number of operations.
pub const OPS: u8 = 18;

/// The fuzz input read as a stream of choices; an exhausted input reads as zeros.
#[derive(Debug)]
pub struct Choices<'a> {
    data: &'a [u8],
    read: usize,
}

impl<'a> Choices<'a> {
    /// Choices from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, read: 0 }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                self.read += 1;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn flag(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn route(text: &str) -> Route {
    text.parse().unwrap()
}

fn keypair(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

/// A's identity seed, B's, and a stranger's.
const A: u8 = 1;
const B: u8 = 2;
const STRANGER: u8 = 9;

/// One session and what the harness counted of it.
#[derive(Debug)]
struct Side {
    session: Session,
    epoch: u64,
    /// Net `PeerIntentAdded` − `PeerIntentRemoved` (since the last `abandon`).
    intents: i64,
    /// Net `PeerInterestAdded` − `PeerInterestRemoved` (since the last `abandon`).
    interests: i64,
    /// Messages `send` accepted.
    accepted: u64,
    /// Messages reported `Settled` and `Undelivered`.
    settled: u64,
    undelivered: u64,
    /// `Message`, `Request` and `Response` events.
    deliveries: u64,
    /// Messages in the batch frames handed to this side.
    fed: u64,
    /// Events reported.
    events: u64,
    /// Requests received and not answered yet: request route and id.
    requests: Vec<(Route, u64)>,
}

impl Side {
    fn new(seed: u8, epoch: u64, config: SessionConfig, now: Instant) -> Self {
        let mut session = Session::new(config, keypair(seed), epoch);
        // A publishes on the first and third route and serves the second service; B publishes
        // on the second route and serves the first: each side has something the other can use.
        let (intents, pattern, service) = if seed == A {
            (vec![(0, Qos::reliable()), (2, Qos::best_effort())], 0, 1)
        } else {
            (vec![(1, Qos::reliable())], 1, 0)
        };
        for (i, qos) in intents {
            session.add_local_intent(intent_ad(i, qos), now);
        }
        session.add_local_interest(interest_ad(pattern), now);
        session.add_local_service(service_ad(service), now);
        Self {
            session,
            epoch,
            intents: 0,
            interests: 0,
            accepted: 0,
            settled: 0,
            undelivered: 0,
            deliveries: 0,
            fed: 0,
            events: 0,
            requests: Vec::new(),
        }
    }

    /// Drains the events and checks the invariants.
    fn check(&mut self, name: &str) {
        while let Some(event) = self.session.poll_event() {
            self.events += 1;
            match event {
                Event::PeerIntentAdded(_) => self.intents += 1,
                Event::PeerIntentRemoved(_) => self.intents -= 1,
                Event::PeerInterestAdded(_) => self.interests += 1,
                Event::PeerInterestRemoved(_) => self.interests -= 1,
                Event::Message { .. } | Event::Response { .. } => self.deliveries += 1,
                Event::Request { route, id, .. } => {
                    self.deliveries += 1;
                    if self.requests.len() < 16 {
                        self.requests.push((route, id));
                    }
                }
                Event::Settled { count, .. } => self.settled += count,
                Event::Undelivered { count, .. } => self.undelivered += count,
                _ => {}
            }
        }
        let s = &self.session;
        let stats = s.stats();
        assert_eq!(
            s.peer_intents().len() as i64,
            self.intents,
            "{name}: peer intents against the net of intent events"
        );
        assert_eq!(
            s.peer_interests().len() as i64,
            self.interests,
            "{name}: peer interests against the net of interest events"
        );
        assert!(
            stats.messages_received <= self.fed,
            "{name}: {} messages received of {} fed",
            stats.messages_received,
            self.fed
        );
        assert!(
            self.deliveries <= stats.messages_received,
            "{name}: {} deliveries of {} messages received",
            self.deliveries,
            stats.messages_received
        );
        assert!(
            self.settled + self.undelivered <= self.accepted,
            "{name}: {} settled and {} undelivered of {} accepted",
            self.settled,
            self.undelivered,
            self.accepted
        );
        assert!(
            stats.undelivered >= self.undelivered,
            "{name}: undelivered counter {} below the {} reported",
            stats.undelivered,
            self.undelivered
        );
        assert!(
            stats.acked <= stats.messages_sent,
            "{name}: {} acked of {} sent",
            stats.acked,
            stats.messages_sent
        );
        if s.is_closed() {
            assert_eq!(s.queued(), 0, "{name}: closed with messages queued");
            assert_eq!(
                s.unacked(),
                0,
                "{name}: closed with messages unacknowledged"
            );
            assert!(!s.is_open(), "{name}: closed but open");
        }
    }

    /// At the end of the input: a closed session accounted for every message it accepted.
    fn finish(&mut self, name: &str) {
        self.check(name);
        if self.session.is_closed() {
            assert_eq!(
                self.settled + self.undelivered,
                self.accepted,
                "{name}: closed, yet not every accepted message was settled or undelivered"
            );
        }
    }
}

fn intent_ad(i: usize, qos: Qos) -> IntentAd {
    let route = route(ROUTES[i]);
    IntentAd {
        fingerprint: Fingerprint::of_name(route.type_name()),
        schema: None,
        hashed: None,
        route,
        qos,
    }
}

fn interest_ad(i: usize) -> InterestAd {
    let pattern: dndm_core::RoutePattern = PATTERNS[i].parse().unwrap();
    InterestAd {
        fingerprint: Fingerprint::of_name(pattern.type_name()),
        schema: None,
        hashed: None,
        pattern,
        history: 0,
    }
}

fn service_ad(i: usize) -> ServiceAd {
    let (request, response) = SERVICES[i];
    ServiceAd {
        route: route(request),
        request_fingerprint: Fingerprint::of_name("test.Req"),
        response_route: route(response),
        response_fingerprint: Fingerprint::of_name("test.Resp"),
    }
}

/// Two sessions, A (peer, and the identity the generated frames claim) and B (the victim),
/// the frames in flight between them, a clock and a frame generator.
#[derive(Debug)]
struct World {
    a: Side,
    b: Side,
    a_config: SessionConfig,
    a_to_b: VecDeque<Bytes>,
    b_to_a: VecDeque<Bytes>,
    start: Instant,
    now: Instant,
    /// The connection number; the session id of connection `n` is `[n; 32]`.
    conn: u8,
    /// Whether B's connections name A as the expected peer.
    expect_a: bool,
    /// The next sequence number generated batches claim.
    seq: u64,
    next_request: u64,
    encoder: Encoder,
    decoder: Decoder,
}

impl World {
    fn new(input: &mut Choices<'_>, now: Instant) -> Self {
        let flags = input.byte();
        let mut a_config = SessionConfig::default();
        a_config.send_queue = 16;
        a_config.retransmit_capacity = 8;
        a_config.max_batch_messages = 4;
        if flags & 1 != 0 {
            // A lossy transport: gaps and duplicates are dropped, batches resent after a timeout.
            a_config.ordered_transport = false;
            a_config.retransmit_timeout = Some(Duration::from_millis(200));
        }
        if flags & 2 != 0 {
            a_config.compression = None;
        }
        // Signing runs when either side asks for it; both asking, one, or none.
        a_config.signing = Signing::Batch;
        let mut b_config = a_config.clone();
        if flags & 4 != 0 {
            a_config.signing = Signing::OnRequest;
        }
        if flags & 8 != 0 {
            b_config.signing = Signing::OnRequest;
        }
        if flags & 16 != 0 {
            // B lets its peers publish and subscribe under robot.*, and call nothing.
            let robot = |p: &str| p.parse().unwrap();
            b_config.acl = Acl::deny_all().with_rule(
                AclRule::any_peer()
                    .publish(robot("test.Reading@robot.**"))
                    .subscribe(robot("test.Reading@**")),
            );
        }
        if flags & 32 != 0 {
            b_config.budget.routes = 6;
        }
        Self {
            a: Side::new(A, 1, a_config.clone(), now),
            b: Side::new(B, 2, b_config, now),
            a_config,
            a_to_b: VecDeque::new(),
            b_to_a: VecDeque::new(),
            start: now,
            now,
            conn: 0,
            expect_a: flags & 64 != 0,
            seq: 1,
            next_request: 1,
            encoder: Encoder::new(Limits::default()).with_compression(Compression::new(1, 32)),
            decoder: Decoder::new(Limits::default()),
        }
    }

    fn session_id(&self) -> SessionId {
        SessionId::from_bytes([self.conn; 32])
    }

    fn connection(&self, expected: Option<u8>) -> Connection {
        Connection {
            session_id: self.session_id(),
            binding: None,
            expected_peer: expected.map(|seed| keypair(seed).peer_id()),
        }
    }

    fn side(&mut self, b: bool) -> &mut Side {
        if b { &mut self.b } else { &mut self.a }
    }

    /// Messages in `frame` if it decodes as a batch.
    fn messages_in(&mut self, frame: &Bytes) -> u64 {
        match self.decoder.decode(frame) {
            Ok(Frame::Batch(batch)) => batch.messages.len() as u64,
            _ => 0,
        }
    }

    /// Hands `frame` to B (`to_b`) or A.
    fn feed(&mut self, to_b: bool, frame: Bytes) {
        let messages = self.messages_in(&frame);
        let now = self.now;
        let side = self.side(to_b);
        side.fed += messages;
        side.session.handle_frame(now, frame);
    }

    fn deliver(&mut self, to_b: bool) -> bool {
        let queue = if to_b {
            &mut self.a_to_b
        } else {
            &mut self.b_to_a
        };
        match queue.pop_front() {
            Some(frame) => {
                self.feed(to_b, frame);
                true
            }
            None => false,
        }
    }

    /// Moves what both sessions transmit into the queues.
    fn pump(&mut self) {
        let now = self.now;
        for (side, queue) in [
            (&mut self.a, &mut self.a_to_b),
            (&mut self.b, &mut self.b_to_a),
        ] {
            let mut taken = 0;
            while let Some(frame) = side.session.poll_transmit(now) {
                taken += 1;
                assert!(taken < MAX_PUMP, "a session never went quiet");
                queue.push_back(frame);
                if queue.len() > MAX_IN_FLIGHT {
                    queue.pop_front();
                }
            }
        }
    }

    fn step(&mut self, input: &mut Choices<'_>) {
        let now = self.now;
        match input.byte() % OPS {
            op::CONNECT => {
                for side in [&mut self.a, &mut self.b] {
                    side.session
                        .handle_disconnect(LinkFailure::Transport("replaced".into()));
                }
                self.a_to_b.clear();
                self.b_to_a.clear();
                self.conn = self.conn.wrapping_add(1);
                let expected = self.expect_a.then_some(A);
                let (a, b) = (self.connection(Some(B)), self.connection(expected));
                self.a.session.handle_connect(now, a);
                self.b.session.handle_connect(now, b);
            }
            op::DELIVER_AB => {
                self.deliver(true);
            }
            op::DELIVER_BA => {
                self.deliver(false);
            }
            op::SHUTTLE => {
                for _ in 0..64 {
                    let moved = self.deliver(true) | self.deliver(false);
                    self.pump();
                    if !moved {
                        break;
                    }
                }
            }
            op::DROP => {
                let queue = if input.flag() {
                    &mut self.a_to_b
                } else {
                    &mut self.b_to_a
                };
                queue.pop_front();
            }
            op::DUPLICATE => {
                if let Some(frame) = self.a_to_b.front().cloned() {
                    self.a_to_b.push_front(frame);
                }
            }
            op::REORDER => {
                let queue = if input.flag() {
                    &mut self.a_to_b
                } else {
                    &mut self.b_to_a
                };
                if queue.len() >= 2 {
                    queue.swap(0, 1);
                }
            }
            op::INJECT => {
                if let Some(frame) = self.generate(input) {
                    self.feed(true, frame);
                }
            }
            op::SEND => {
                let side = self.side(input.flag());
                let route = route(ROUTES[input.below(ROUTES.len())]);
                let count = 1 + input.below(4);
                let len = usize::from(input.byte());
                let correlation = match input.below(8) {
                    0 => Correlation::Request { id: 1 },
                    _ => Correlation::None,
                };
                for k in 0..count {
                    let payload = Bytes::from(vec![k as u8; len]);
                    if side
                        .session
                        .send(&route, payload, correlation.clone())
                        .is_ok()
                    {
                        side.accepted += 1;
                    }
                }
            }
            op::ROUTES => {
                let side = self.side(input.flag());
                let s = &mut side.session;
                match input.below(6) {
                    0 => {
                        let qos = if input.flag() {
                            Qos::reliable()
                        } else {
                            Qos::best_effort()
                        };
                        s.add_local_intent(intent_ad(input.below(ROUTES.len()), qos), now);
                    }
                    1 => s.remove_local_intent(&route(ROUTES[input.below(ROUTES.len())]), now),
                    2 => s.add_local_interest(interest_ad(input.below(PATTERNS.len())), now),
                    3 => {
                        let pattern = PATTERNS[input.below(PATTERNS.len())].parse().unwrap();
                        s.remove_local_interest(&pattern, now);
                    }
                    4 => s.add_local_service(service_ad(input.below(SERVICES.len())), now),
                    _ => {
                        let (request, _) = SERVICES[input.below(SERVICES.len())];
                        s.remove_local_service(&route(request), now);
                    }
                }
            }
            op::REQUEST => {
                let id = self.next_request;
                self.next_request += 1;
                let side = self.side(input.flag());
                let (request, _) = SERVICES[input.below(SERVICES.len())];
                let payload = Bytes::from(vec![7; usize::from(input.byte())]);
                let _ = side.session.request(&route(request), payload, id);
            }
            op::RESPOND => {
                let side = self.side(input.flag());
                let error = input.below(4) == 0;
                let len = usize::from(input.byte());
                let (route, id) = side
                    .requests
                    .pop()
                    .unwrap_or_else(|| (self::route(SERVICES[0].0), 99));
                let result = if error {
                    Err(ResponseError {
                        code: 3,
                        message: "e".repeat(len * 64),
                    })
                } else {
                    Ok(Bytes::from(vec![1; len]))
                };
                let _ = side.session.respond(&route, id, result);
            }
            op::TIME => {
                let ms = input.pick(&[1u64, 50, 250, 1_000, 4_000, 11_000]);
                self.now += Duration::from_millis(ms);
                let now = self.now;
                self.a.session.handle_timeout(now);
                self.b.session.handle_timeout(now);
            }
            op::DISCONNECT => {
                let which = input.below(3);
                let failure = LinkFailure::Transport("cut".into());
                if which != 1 {
                    self.a.session.handle_disconnect(failure.clone());
                }
                if which != 0 {
                    self.b.session.handle_disconnect(failure);
                }
            }
            op::CLOSE => {
                let side = self.side(input.flag());
                let code = CloseCode(u32::from(input.byte() % 4));
                side.session.close(code, "bye");
            }
            op::FLOW => {
                let side = self.side(input.flag());
                let route = route(ROUTES[input.below(ROUTES.len())]);
                match input.below(5) {
                    0 | 1 => side.session.pause_peer_route(&route, now),
                    2 | 3 => side.session.resume_peer_route(&route, now),
                    _ => {
                        // The driver withdraws the peer's routes itself: no events.
                        side.session.abandon(now);
                        side.intents = 0;
                        side.interests = 0;
                    }
                }
            }
            op::RESTART => {
                let epoch = self.a.epoch + 1;
                self.a.finish("A before its restart");
                self.a = Side::new(A, epoch, self.a_config.clone(), now);
            }
            _ => {
                // op::CORRUPT
                let at = usize::from(input.byte());
                let bit = input.byte() % 8;
                if let Some(frame) = self.a_to_b.front_mut()
                    && !frame.is_empty()
                {
                    let mut bytes = frame.to_vec();
                    let at = at % bytes.len();
                    bytes[at] ^= 1 << bit;
                    *frame = Bytes::from(bytes);
                }
            }
        }
    }

    // ---- the frame generator ------------------------------------------------------------

    fn generate(&mut self, input: &mut Choices<'_>) -> Option<Bytes> {
        let frame = match input.below(9) {
            0 => Frame::Hello(self.hello(input)),
            1 => Frame::Advert(self.advert(input)),
            2..=4 => return self.batch(input),
            5 => Frame::Ack(Ack {
                cumulative_seq: input.pick(&[0, 1, 2, 5, 1 << 62, u64::MAX]),
            }),
            6 => {
                let nonce = u64::from(input.byte() % 4);
                if input.flag() {
                    Frame::Ping(Ping { nonce })
                } else {
                    Frame::Pong(Pong { nonce })
                }
            }
            7 => Frame::Close(Close {
                code: CloseCode(u32::from(input.byte() % 4)),
                reason: "gone".into(),
            }),
            _ => {
                let len = input.below(48);
                return Some((0..len).map(|_| input.byte()).collect::<Vec<u8>>().into());
            }
        };
        self.encoder.encode(&frame).ok()
    }

    fn fingerprint(input: &mut Choices<'_>, type_name: &str) -> Fingerprint {
        if input.below(8) == 0 {
            Fingerprint::of_name("test.Other")
        } else {
            Fingerprint::of_name(type_name)
        }
    }

    fn intent_decl(input: &mut Choices<'_>) -> IntentDecl {
        let id = input.pick(&[1, 2, 3, 4, 7, 7, SERVICE | 1, SERVICE | 2]);
        let route = route(ROUTES[input.below(ROUTES.len())]);
        IntentDecl {
            id,
            fingerprint: Self::fingerprint(input, route.type_name()),
            schema: None,
            route: if input.below(6) == 0 {
                DeclRoute::Hashed(route.hashed(1))
            } else {
                DeclRoute::Plain(route)
            },
            qos: if input.flag() {
                Qos::reliable()
            } else {
                Qos::best_effort()
            },
        }
    }

    fn interest_decl(input: &mut Choices<'_>) -> InterestDecl {
        let id = input.pick(&[1, 2, 3, 5, 8, SERVICE | 1]);
        let pattern: dndm_core::RoutePattern =
            PATTERNS[input.below(PATTERNS.len())].parse().unwrap();
        InterestDecl {
            id,
            fingerprint: Self::fingerprint(input, pattern.type_name()),
            schema: None,
            pattern: DeclPattern::Plain(pattern),
            history: 0,
        }
    }

    /// Both halves of a service declaration (sometimes only one, or a wildcard request).
    fn service_decls(
        input: &mut Choices<'_>,
        intents: &mut Vec<IntentDecl>,
        interests: &mut Vec<InterestDecl>,
    ) {
        let id = SERVICE | input.pick(&[1, 2, 3]);
        let (request, response) = SERVICES[input.below(SERVICES.len())];
        let halves = input.below(8);
        if halves != 0 {
            intents.push(IntentDecl {
                id,
                route: DeclRoute::Plain(route(response)),
                fingerprint: Fingerprint::of_name("test.Resp"),
                schema: None,
                qos: Qos::reliable(),
            });
        }
        if halves != 1 {
            let pattern = if halves == 2 {
                "test.Req@admin.*"
            } else {
                request
            };
            interests.push(InterestDecl {
                id,
                pattern: DeclPattern::Plain(pattern.parse().unwrap()),
                fingerprint: Fingerprint::of_name("test.Req"),
                schema: None,
                history: 0,
            });
        }
    }

    fn hello(&mut self, input: &mut Choices<'_>) -> Hello {
        let key = if input.below(8) == 0 {
            keypair(STRANGER)
        } else {
            keypair(A)
        };
        let mut intents: Vec<IntentDecl> = (0..input.below(5))
            .map(|_| Self::intent_decl(input))
            .collect();
        let mut interests: Vec<InterestDecl> = (0..input.below(4))
            .map(|_| Self::interest_decl(input))
            .collect();
        for _ in 0..input.below(3) {
            Self::service_decls(input, &mut intents, &mut interests);
        }
        let seq = self.seq;
        let resume = (input.below(4) != 0).then(|| ResumeState {
            session_epoch: input.pick(&[self.a.epoch, self.a.epoch, self.a.epoch + 7, 0]),
            last_received_seq: input.pick(&[0, 1, 3, 10, 1 << 62]),
            last_sent_seq: input.pick(&[seq - 1, seq - 1, seq - 1, 0, seq + 3, 1 << 62]),
            peer_epoch: input.pick(&[self.b.epoch, self.b.epoch, 0, 99]),
            first_unacked_seq: input.pick(&[0, seq, seq, 1, seq.saturating_sub(2), seq + 9]),
        });
        self.seq = resume
            .as_ref()
            .map_or(1, |r| r.last_sent_seq.saturating_add(1));
        let limits = Limits::default();
        let mut capabilities = Capabilities::new(&limits);
        capabilities.zstd = input.flag();
        capabilities.signed_batches = input.flag();
        capabilities.max_frame_len = input.pick(&[limits.max_frame_len(), 0, 100, 1024]);
        capabilities.max_batch_messages = input.pick(&[limits.max_batch_messages(), 0, 1]);
        Hello {
            protocol_version: input.pick(&[1, 1, 1, 2]),
            public_key: key.public().to_bytes().to_vec(),
            key_binding: Vec::new(),
            node_name: "fuzz".into(),
            intents,
            interests,
            capabilities,
            resume,
        }
    }

    fn advert(&mut self, input: &mut Choices<'_>) -> Advert {
        let mut intents_added: Vec<IntentDecl> = (0..input.below(3))
            .map(|_| Self::intent_decl(input))
            .collect();
        let mut interests_added: Vec<InterestDecl> = (0..input.below(3))
            .map(|_| Self::interest_decl(input))
            .collect();
        if input.below(4) == 0 {
            Self::service_decls(input, &mut intents_added, &mut interests_added);
        }
        let ids = |input: &mut Choices<'_>| -> Vec<u32> {
            (0..input.below(3))
                .map(|_| input.pick(&[1, 2, 3, 4, 7, SERVICE | 1, SERVICE | 2]))
                .collect()
        };
        Advert {
            intents_added,
            intents_removed: ids(input),
            interests_added,
            interests_removed: ids(input),
            paused: ids(input),
            resumed: ids(input),
            // Feedback on A's routes, with counts that go up, down or jump.
            feedback: ids(input)
                .into_iter()
                .map(|id| dndm_codec::RouteFeedback {
                    id,
                    dropped_oldest: input.pick(&[0, 1, 5, u64::MAX]),
                    dropped_newest: input.pick(&[0, 3]),
                    lag: input.pick(&[0, 7, u64::MAX]),
                    capacity: input.pick(&[0, 8]),
                })
                .collect(),
        }
    }

    /// A batch from (or claiming to be from) A, usually where A's sequence continues.
    fn batch(&mut self, input: &mut Choices<'_>) -> Option<Bytes> {
        let first = self
            .seq
            .saturating_add_signed(input.pick(&[0, 0, 0, 0, -1, 1, -2, 4]))
            .max(1);
        let count = input.below(5) as u64;
        let messages = (0..count)
            .map(|i| BatchMessage {
                route_id: input.pick(&[1, 1, 2, 3, 4, SERVICE | 1, SERVICE | 2, 999]),
                seq: match input.below(16) {
                    0 => None,
                    1 => Some(first),
                    _ => Some(first + i),
                },
                correlation: match input.below(6) {
                    0 => Correlation::Request {
                        id: u64::from(input.byte()),
                    },
                    1 => Correlation::Response {
                        to: u64::from(input.byte()),
                        error: input.flag().then(|| ResponseError {
                            code: 3,
                            message: "no".into(),
                        }),
                    },
                    _ => Correlation::None,
                },
                payload: Bytes::from(vec![input.byte(); usize::from(input.byte())]),
            })
            .collect();
        let last = first + count.saturating_sub(1) + input.pick(&[0, 0, 0, 2]);
        let batch = Batch {
            first_seq: first,
            last_seq: last,
            messages,
        };
        self.seq = last + 1;
        let (a, stranger) = (keypair(A), keypair(STRANGER));
        let (session, other) = (self.session_id(), SessionId::from_bytes([0xee; 32]));
        let options = match input.below(8) {
            0 => BatchOptions::new(),
            1 => BatchOptions::new().sign(&a, &other),
            2 => BatchOptions::new().sign(&stranger, &session),
            3 => BatchOptions::new().uncompressed().sign(&a, &session),
            _ => BatchOptions::new().sign(&a, &session),
        };
        self.encoder.encode_batch(&batch, &options).ok()
    }
}

/// The `session_sequence` target: runs the operations `data` chooses on two sessions and
/// checks the invariants after every one.
pub fn session_sequence(data: &[u8]) {
    let mut input = Choices::new(data);
    let mut world = World::new(&mut input, Instant::now());
    while !input.is_empty() {
        world.step(&mut input);
        world.pump();
        world.a.check("A");
        world.b.check("B");
        let events = world.a.events + world.b.events;
        assert!(
            events <= EVENTS_PER_BYTE * (input.read as u64 + 1),
            "{events} events from {} input bytes",
            input.read
        );
    }
    world.a.finish("A");
    world.b.finish("B");
    let _ = world.now.duration_since(world.start);
}

/// The `preamble` target: the first 32 bytes are the peer's Noise static key, the rest its
/// identity preamble. Accepted exactly when it is [`PREAMBLE_LEN`] bytes of an ed25519 key and
/// that key's signature over the static key, and then it names that key's peer and re-encodes
/// to the same bytes.
pub fn preamble(data: &[u8]) {
    let Some((remote_static, preamble)) = data.split_first_chunk::<32>() else {
        return;
    };
    let result = noise::parse_preamble(preamble, remote_static);
    let expected = (preamble.len() == PREAMBLE_LEN)
        .then(|| {
            let key = PublicKey::from_bytes(preamble[..32].try_into().unwrap()).ok()?;
            noise::verify_binding(&key, remote_static, &preamble[32..])
                .is_ok()
                .then_some(key)
        })
        .flatten();
    match (result, expected) {
        (Ok(peer), Some(key)) => {
            assert_eq!(peer, key.peer_id());
            let signature: [u8; 64] = preamble[32..].try_into().unwrap();
            assert_eq!(noise::encode_preamble(&key, &signature)[..], *preamble);
        }
        (Err(error), None) => {
            let _ = error.to_string();
        }
        (result, expected) => panic!("parse_preamble gave {result:?}, expected {expected:?}"),
    }
}

/// Valid preambles (and near misses) for the `preamble` corpus.
pub fn preamble_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for seed in [1u8, 2, 3] {
        let remote_static = [seed.wrapping_mul(17); 32];
        let key = keypair(seed);
        let binding = noise::sign_binding(&key, &remote_static);
        let preamble = noise::encode_preamble(&key.public(), &binding);
        let valid = [&remote_static[..], &preamble[..]].concat();
        let mut flipped = valid.clone();
        flipped[40] ^= 1;
        seeds.push(valid.clone());
        seeds.push(flipped);
        seeds.push(valid[..valid.len() - 1].to_vec());
    }
    seeds
}

/// Operation sequences for the `session_sequence` corpus: a connection and traffic, a
/// reconnect with resume, route changes, requests, loss on a lossy transport, generated frames.
pub fn session_seeds() -> Vec<Vec<u8>> {
    use op::*;
    vec![
        // Ordered transport: connect, exchange hellos, send, ack, close.
        vec![
            0, CONNECT, SHUTTLE, SEND, 0, 0, 3, 40, 0, SHUTTLE, TIME, 3, SHUTTLE, CLOSE, 1, 1,
            SHUTTLE,
        ],
        // Reconnect with unacknowledged messages, then resume.
        vec![
            0, CONNECT, SHUTTLE, SEND, 0, 0, 2, 10, 0, DELIVER_AB, DISCONNECT, 2, CONNECT, SHUTTLE,
        ],
        // Route changes and services, requests and answers.
        vec![
            0, CONNECT, SHUTTLE, ROUTES, 0, 0, 1, 1, ROUTES, 1, 2, 3, SHUTTLE, REQUEST, 0, 0, 9,
            SHUTTLE, RESPOND, 1, 1, 5, SHUTTLE, ROUTES, 0, 5, 1, SHUTTLE,
        ],
        // Lossy transport: drops, duplicates, reorders, retransmit timeouts.
        vec![
            1, CONNECT, SHUTTLE, SEND, 0, 0, 3, 8, 0, DROP, 1, DUPLICATE, REORDER, 1, SHUTTLE,
            TIME, 2, TIME, 2, SHUTTLE, RESTART, CONNECT, SHUTTLE,
        ],
        // Generated frames: hello, advert, batches, ack, ping, close.
        vec![
            0, CONNECT, INJECT, 0, 1, 2, 0, 1, 1, 2, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 1, 1,
            0, 0, INJECT, 1, 2, 1, 2, 0, 0, 0, 1, 1, 1, 1, 1, INJECT, 2, 0, 2, 0, 0, 0, 1, 4, 2, 6,
            4, 0, INJECT, 5, 1, INJECT, 6, 1, 1, INJECT, 7, 1,
        ],
        // Pauses and an abandoned peer.
        vec![
            0, CONNECT, SHUTTLE, FLOW, 1, 0, 0, SEND, 0, 0, 3, 4, 0, SHUTTLE, FLOW, 1, 0, 2,
            SHUTTLE, FLOW, 1, 0, 4, TIME, 5, CORRUPT, 3, 3, SHUTTLE,
        ],
    ]
}
