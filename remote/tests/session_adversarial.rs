//! Bad peer input against a [`Session`]: every kind of malformed, out-of-order, forged or
//! unauthorised frame ends only that connection with a typed [`LinkFailure`], counts one
//! failure, never panics, and the session connects again afterwards.
//!
//! Two sessions are driven by hand (no simulator): frames move between them with [`shuttle`],
//! hostile frames are built with the codec and fed straight to `handle_frame`. Time is one
//! `Instant` taken at the start and advanced by hand; no timer ever fires on its own.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dndm_codec::{
    Ack, Advert, Batch, BatchMessage, BatchOptions, Close, CloseCode, Correlation, Decoder,
    Encoder, Frame, FrameHeader, FrameKind, HEADER_LEN, Hello, Limits, MAGIC, PROTOCOL_VERSION,
    Ping, ResumeState, SessionId,
};
use dndm_core::{Fingerprint, IntentAd, InterestAd, Keypair, Qos, Route, RoutePattern, Signing};
use dndm_remote::noise::{StaticKey, sign_binding};
use dndm_remote::session::{Binding, Connection, Event, LinkFailure, Session, SessionConfig};
use proptest::prelude::*;
use support::{conn, events, keypair, messages, peer, shuttle};

const A_SEED: u8 = 1;
const B_SEED: u8 = 2;
const A_EPOCH: u64 = 100;
const B_EPOCH: u64 = 200;
/// The route id A's only intent gets (the first id a session hands out).
const A_ROUTE_ID: u32 = 1;

fn route() -> Route {
    "test.Reading@robot.imu".parse().unwrap()
}

fn fingerprint() -> Fingerprint {
    Fingerprint::of_name("test.Reading")
}

/// A session that publishes `route()` (reliable).
fn publisher(seed: u8, epoch: u64, config: SessionConfig, now: Instant) -> Session {
    let mut s = Session::new(config, keypair(seed), epoch);
    s.add_local_intent(
        IntentAd {
            route: route(),
            fingerprint: fingerprint(),
            schema: None,
            hashed: None,
            qos: Qos::reliable(),
        },
        now,
    );
    s
}

/// A session that subscribes to `route()`.
fn subscriber(config: SessionConfig, now: Instant) -> Session {
    let mut s = Session::new(config, keypair(B_SEED), B_EPOCH);
    s.add_local_interest(
        InterestAd {
            pattern: RoutePattern::from(route()),
            fingerprint: fingerprint(),
            schema: None,
            hashed: None,
            history: 0,
        },
        now,
    );
    s
}

fn session_id(id: u8) -> SessionId {
    SessionId::from_bytes([id; 32])
}

/// Connects `a` and `b` with `info_a` / `info_b` and shuttles until quiet.
fn connect_with(
    a: &mut Session,
    b: &mut Session,
    now: Instant,
    info_a: Connection,
    info_b: Connection,
) {
    a.handle_connect(now, info_a);
    b.handle_connect(now, info_b);
    shuttle(a, b, now);
}

/// A publisher A and subscriber B (default config) on connection 1, both open, events drained.
/// A session that signs every batch and requires the peer's to be signed.
fn signed() -> SessionConfig {
    let mut config = SessionConfig::default();
    config.signing = Signing::Batch;
    config
}

fn open_pair(now: Instant) -> (Session, Session) {
    let mut a = publisher(A_SEED, A_EPOCH, signed(), now);
    let mut b = subscriber(signed(), now);
    connect_with(&mut a, &mut b, now, conn(1), conn(1));
    assert!(a.is_open() && b.is_open());
    events(&mut a);
    events(&mut b);
    (a, b)
}

/// Takes the next batch frame A produces (other frames go to B, as on the wire).
fn take_batch(a: &mut Session, b: &mut Session, now: Instant) -> Bytes {
    while let Some(frame) = a.poll_transmit(now) {
        let header = FrameHeader::parse(&frame, &Limits::default()).unwrap();
        if header.kind() == FrameKind::Batch {
            return frame;
        }
        b.handle_frame(now, frame);
    }
    panic!("A produced no batch");
}

/// The one connection failure `s` reported since its events were last drained; checks that
/// the connection (and only the connection) is down, the failure was counted, and nothing
/// else was reported.
fn the_failure(s: &mut Session, now: Instant, failures_before: u64) -> LinkFailure {
    let events = events(s);
    let failures: Vec<&LinkFailure> = events
        .iter()
        .filter_map(|e| match e {
            Event::Disconnected(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 1, "exactly one failure: {events:?}");
    assert!(
        !events.iter().any(|e| matches!(e, Event::Closed { .. })),
        "the session itself is not closed: {events:?}"
    );
    assert!(!s.is_open(), "the connection is down");
    assert!(!s.is_closed(), "the session survives the bad connection");
    assert_eq!(
        s.stats().failures,
        failures_before + 1,
        "one failure counted"
    );
    assert_eq!(
        s.poll_transmit(now),
        None,
        "nothing more is written to the failed connection"
    );
    failures[0].clone()
}

/// Tears down whatever is left of the connection on both sides (the side that failed closed the
/// socket, so the other sees a transport error), connects again as connection `id` and checks
/// that B reports `Established` with A as the peer.
fn reconnect(a: &mut Session, b: &mut Session, now: Instant, id: u8) -> Vec<Event> {
    a.handle_disconnect(LinkFailure::Transport("peer closed the connection".into()));
    b.handle_disconnect(LinkFailure::Transport("peer closed the connection".into()));
    events(a);
    connect_with(a, b, now, conn(id), conn(id));
    assert!(a.is_open() && b.is_open(), "connected again");
    let events = events(b);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Established { peer: p, .. } if *p == peer(A_SEED))),
        "B established again: {events:?}"
    );
    events
}

/// A frame header (12 bytes) built by hand: magic, version, kind, flags, reserved, length.
fn header(kind: u8, flags: u8, body_len: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&[PROTOCOL_VERSION, kind, flags, 0]);
    h.extend_from_slice(&body_len.to_be_bytes());
    assert_eq!(h.len(), HEADER_LEN);
    h
}

fn encode(frame: &Frame) -> Bytes {
    Encoder::new(Limits::default()).encode(frame).unwrap()
}

/// A batch of one message `first..=last` on `route_id`, signed with `key` for `session`.
fn forged_batch(
    route_id: u32,
    first: u64,
    last: u64,
    key: Option<&Keypair>,
    session: &SessionId,
) -> Bytes {
    let batch = Batch {
        first_seq: first,
        last_seq: last,
        messages: vec![BatchMessage {
            route_id,
            seq: Some(first),
            correlation: Correlation::None,
            payload: Bytes::from_static(b"forged"),
        }],
    };
    let options = match key {
        Some(key) => BatchOptions::new().sign(key, session),
        None => BatchOptions::new(),
    };
    Encoder::new(Limits::default())
        .encode_batch(&batch, &options)
        .unwrap()
}

/// Connects only B (to feed it frames by hand); its own hello is discarded.
fn attach(b: &mut Session, now: Instant, info: Connection) {
    b.handle_connect(now, info);
    while b.poll_transmit(now).is_some() {}
}

// ---- 1. garbage --------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (SplitMix64).
fn noise_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

#[test]
fn garbage_frames_fail_with_decode_and_the_session_reconnects() {
    let now = Instant::now();
    let (mut a, mut b) = open_pair(now);
    let mut magic_then_noise = MAGIC.to_vec();
    magic_then_noise.extend(noise_bytes(7, 60));
    // A valid Ping header announcing 20 body bytes, followed by 5.
    let mut short_body = header(5, 0, 20);
    short_body.extend_from_slice(&[0; 5]);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", noise_bytes(1, 64)),
        ("more random bytes", noise_bytes(2, 1000)),
        ("empty frame", Vec::new()),
        ("shorter than a header", MAGIC.to_vec()),
        ("magic then noise", magic_then_noise),
        ("body shorter than announced", short_body),
        ("unknown kind", header(42, 0, 0)),
        ("flags on a ping", header(5, 0x04, 0)),
        ("batch without its sequence range", header(2, 0, 0)),
    ];
    for (round, (what, bytes)) in inputs.into_iter().enumerate() {
        let before = b.stats().failures;
        let t = now + Duration::from_millis(round as u64);
        b.handle_frame(t, Bytes::from(bytes));
        let failure = the_failure(&mut b, t, before);
        assert!(
            matches!(failure, LinkFailure::Decode(_))
                // A batch header on an open link is checked as a signed batch first.
                || (what.starts_with("batch") && matches!(failure, LinkFailure::Signature(_))),
            "{what}: {failure:?}"
        );
        assert!(
            !failure.is_transient(),
            "{what}: a bad peer is not transient"
        );
        reconnect(&mut a, &mut b, t, round as u8 + 2);
    }
    assert_eq!(b.stats().failures, 9);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Arbitrary bodies behind a well-formed header of any kind and flags: the session never
    /// panics; it either accepts the frame (it happened to be valid), is closed by a decodable
    /// `Close`, or drops only the connection with a peer-input failure, and then reconnects.
    #[test]
    fn arbitrary_frames_never_panic(
        kind in 0u8..9,
        flags in prop_oneof![Just(0u8), Just(4u8), any::<u8>()],
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let now = Instant::now();
        let (mut a, mut b) = open_pair(now);
        let mut frame = header(kind, flags, body.len() as u32);
        frame.extend_from_slice(&body);
        b.handle_frame(now, Bytes::from(frame));
        shuttle(&mut a, &mut b, now);
        let events = events(&mut b);
        let failures: Vec<&LinkFailure> = events
            .iter()
            .filter_map(|e| match e {
                Event::Disconnected(f) => Some(f),
                _ => None,
            })
            .collect();
        if b.is_closed() {
            let closed_by_peer = events
                .iter()
                .any(|e| matches!(e, Event::Closed { by_peer: true, .. }));
            prop_assert!(closed_by_peer, "{:?}", events);
        } else if b.is_open() {
            prop_assert!(failures.is_empty(), "{:?}", events);
            prop_assert_eq!(b.stats().failures, 0);
        } else {
            prop_assert_eq!(failures.len(), 1, "{:?}", events);
            prop_assert!(
                matches!(
                    failures[0],
                    LinkFailure::Decode(_) | LinkFailure::Protocol(_) | LinkFailure::Signature(_)
                ),
                "{:?}",
                failures[0]
            );
            prop_assert_eq!(b.stats().failures, 1);
            reconnect(&mut a, &mut b, now, 2);
        }
    }
}

// ---- 2. a frame before the hello ----------------------------------------------------------

#[test]
fn any_frame_before_the_hello_is_a_protocol_violation() {
    let now = Instant::now();
    let mut a = publisher(A_SEED, A_EPOCH, SessionConfig::default(), now);
    let mut b = subscriber(SessionConfig::default(), now);
    let key = keypair(A_SEED);
    let early: Vec<(&str, Bytes)> = vec![
        ("ping", encode(&Frame::Ping(Ping { nonce: 1 }))),
        (
            "signed batch",
            forged_batch(A_ROUTE_ID, 1, 1, Some(&key), &session_id(1)),
        ),
        ("ack", encode(&Frame::Ack(Ack { cumulative_seq: 0 }))),
        ("advert", encode(&Frame::Advert(Advert::default()))),
        // An unauthenticated close must not end the session for good.
        (
            "close",
            encode(&Frame::Close(Close {
                code: CloseCode::NORMAL,
                reason: "bye".into(),
            })),
        ),
    ];
    for (round, (what, frame)) in early.into_iter().enumerate() {
        let before = b.stats().failures;
        attach(&mut b, now, conn(1));
        b.handle_frame(now, frame);
        let failure = the_failure(&mut b, now, before);
        assert!(
            matches!(&failure, LinkFailure::Protocol(m) if m.contains("before the hello")),
            "{what}: {failure:?}"
        );
        assert_eq!(b.peer(), None, "{what}: no peer learned");
        assert_eq!(round as u64 + 1, b.stats().failures);
    }
    assert_eq!(
        b.stats().messages_received,
        0,
        "the early batch was not delivered"
    );
    connect_with(&mut a, &mut b, now, conn(2), conn(2));
    assert!(b.is_open());
    let events = events(&mut b);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Established { peer: p, resumed: false, .. } if *p == peer(A_SEED))),
        "{events:?}"
    );
}

// ---- 3. a second hello ----------------------------------------------------------------------

#[test]
fn a_second_hello_on_one_connection_is_a_protocol_violation() {
    let now = Instant::now();
    let mut a = publisher(A_SEED, A_EPOCH, SessionConfig::default(), now);
    let mut b = subscriber(SessionConfig::default(), now);
    a.handle_connect(now, conn(1));
    b.handle_connect(now, conn(1));
    let hello = a.poll_transmit(now).unwrap();
    assert!(matches!(
        Decoder::new(Limits::default()).decode(&hello).unwrap(),
        Frame::Hello(_)
    ));
    b.handle_frame(now, hello.clone());
    shuttle(&mut a, &mut b, now);
    assert!(a.is_open() && b.is_open());
    events(&mut b);
    // The very same hello again: same identity, same everything — still a violation.
    b.handle_frame(now, hello);
    let failure = the_failure(&mut b, now, 0);
    assert_eq!(
        failure,
        LinkFailure::Protocol("second hello on one connection".into())
    );
    assert!(a.is_open(), "the other side only learns from its transport");
    let events = reconnect(&mut a, &mut b, now, 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Established { resumed: true, .. })),
        "the same peer incarnation resumes: {events:?}"
    );
}

// ---- 4. wrong identity -------------------------------------------------------------------

#[test]
fn a_peer_other_than_the_expected_one_is_an_identity_mismatch() {
    let now = Instant::now();
    let mut a = publisher(A_SEED, A_EPOCH, SessionConfig::default(), now);
    let mut b = subscriber(SessionConfig::default(), now);
    let other = peer(9);
    connect_with(
        &mut a,
        &mut b,
        now,
        conn(1),
        Connection {
            expected_peer: Some(other),
            ..conn(1)
        },
    );
    let failure = the_failure(&mut b, now, 0);
    assert_eq!(
        failure,
        LinkFailure::IdentityMismatch {
            expected: other,
            actual: peer(A_SEED),
        }
    );
    assert_eq!(b.peer(), None, "the impostor was not learned");
    assert_eq!(a.stats().failures, 0, "only B's connection failed");

    // Dialing the right peer works.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    connect_with(
        &mut a,
        &mut b,
        now,
        conn(2),
        Connection {
            expected_peer: Some(peer(A_SEED)),
            ..conn(2)
        },
    );
    assert!(b.is_open());
    assert!(
        events(&mut b)
            .iter()
            .any(|e| matches!(e, Event::Established { peer: p, .. } if *p == peer(A_SEED)))
    );
    assert_eq!(b.peer(), Some(peer(A_SEED)));

    // Once B knows its peer, another identity on a later connection is a mismatch even when the
    // transport names no expected peer.
    b.handle_disconnect(LinkFailure::Transport("closed".into()));
    events(&mut b);
    let mut c = publisher(9, 900, SessionConfig::default(), now);
    connect_with(&mut c, &mut b, now, conn(3), conn(3));
    let failure = the_failure(&mut b, now, 2);
    assert_eq!(
        failure,
        LinkFailure::IdentityMismatch {
            expected: peer(A_SEED),
            actual: other,
        }
    );
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    reconnect(&mut a, &mut b, now, 4);
}

// ---- 5. allow-list -----------------------------------------------------------------------

#[test]
fn a_peer_not_on_the_allow_list_is_not_allowed() {
    let now = Instant::now();
    let mut config = SessionConfig::default();
    config.allow_peers = Some(HashSet::from([peer(9)]));
    let mut a = publisher(A_SEED, A_EPOCH, SessionConfig::default(), now);
    let mut b = subscriber(config, now);
    connect_with(&mut a, &mut b, now, conn(1), conn(1));
    let failure = the_failure(&mut b, now, 0);
    assert_eq!(failure, LinkFailure::NotAllowed(peer(A_SEED)));
    assert_eq!(b.peer(), None);
    assert_eq!(b.stats().messages_received, 0);

    // A tries again: refused again.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    connect_with(&mut a, &mut b, now, conn(2), conn(2));
    assert_eq!(
        the_failure(&mut b, now, 1),
        LinkFailure::NotAllowed(peer(A_SEED))
    );

    // The allowed peer connects.
    let mut c = publisher(9, 900, SessionConfig::default(), now);
    connect_with(&mut c, &mut b, now, conn(3), conn(3));
    assert!(b.is_open() && c.is_open());
    assert!(
        events(&mut b)
            .iter()
            .any(|e| matches!(e, Event::Established { peer: p, .. } if *p == peer(9)))
    );
    assert_eq!(b.stats().failures, 2);
}

// ---- 6. Noise binding ----------------------------------------------------------------------

#[test]
fn an_identity_that_does_not_sign_the_noise_static_key_is_a_bad_binding() {
    let now = Instant::now();
    let (ka, kb) = (keypair(A_SEED), keypair(B_SEED));
    let a_static = StaticKey::generate().unwrap();
    let b_static = StaticKey::generate().unwrap();
    let stranger = StaticKey::generate().unwrap();
    let b_info = |id: u8| Connection {
        binding: Some(Binding {
            local_signature: sign_binding(&kb, &b_static.public()),
            remote_static: a_static.public(),
        }),
        ..conn(id)
    };
    let a_info = |id: u8, signed_static: &[u8; 32]| Connection {
        binding: Some(Binding {
            local_signature: sign_binding(&ka, signed_static),
            remote_static: b_static.public(),
        }),
        ..conn(id)
    };
    let mut a = publisher(A_SEED, A_EPOCH, SessionConfig::default(), now);
    let mut b = subscriber(SessionConfig::default(), now);

    // A's hello carries a binding over another static key than the one Noise authenticated.
    connect_with(
        &mut a,
        &mut b,
        now,
        a_info(1, &stranger.public()),
        b_info(1),
    );
    assert_eq!(
        the_failure(&mut b, now, 0),
        LinkFailure::BadBinding(peer(A_SEED))
    );
    assert_eq!(a.stats().failures, 0, "only B's connection failed");
    assert_eq!(b.peer(), None);

    // No binding at all where one is required.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    connect_with(&mut a, &mut b, now, conn(2), b_info(2));
    assert_eq!(
        the_failure(&mut b, now, 1),
        LinkFailure::BadBinding(peer(A_SEED))
    );

    // Another identity's signature over the right static key.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    let forged = Connection {
        binding: Some(Binding {
            local_signature: sign_binding(&keypair(9), &a_static.public()),
            remote_static: b_static.public(),
        }),
        ..conn(3)
    };
    connect_with(&mut a, &mut b, now, forged, b_info(3));
    assert_eq!(
        the_failure(&mut b, now, 2),
        LinkFailure::BadBinding(peer(A_SEED))
    );

    // The positive case: A signs the static key B's Noise channel saw; both sides accept.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    events(&mut a);
    connect_with(
        &mut a,
        &mut b,
        now,
        a_info(4, &a_static.public()),
        b_info(4),
    );
    assert!(a.is_open() && b.is_open());
    assert!(
        events(&mut b)
            .iter()
            .any(|e| matches!(e, Event::Established { peer: p, .. } if *p == peer(A_SEED)))
    );
    assert!(
        events(&mut a)
            .iter()
            .any(|e| matches!(e, Event::Established { peer: p, .. } if *p == peer(B_SEED)))
    );
    assert_eq!(b.stats().failures, 3);
}

// ---- 7. a tampered batch -------------------------------------------------------------------

/// A fresh open pair where A has sent three messages; returns the batch frame (not delivered).
fn pair_with_batch(now: Instant, payloads: &[Bytes]) -> (Session, Session, Bytes) {
    let (mut a, mut b) = open_pair(now);
    for p in payloads {
        a.send(&route(), p.clone(), Correlation::None).unwrap();
    }
    let frame = take_batch(&mut a, &mut b, now);
    (a, b, frame)
}

#[test]
fn a_tampered_batch_fails_its_signature_or_its_header_check() {
    let now = Instant::now();
    let payloads: Vec<Bytes> = (0..3u8)
        .map(|i| Bytes::from(format!("tamper-me-payload-{i}")))
        .collect();
    let (_, _, frame) = pair_with_batch(now, &payloads);
    let h = FrameHeader::parse(&frame, &Limits::default()).unwrap();
    assert!(h.is_signed(), "signing sessions sign every batch");
    assert!(!h.is_compressed(), "a small batch is sent uncompressed");
    let payload_at = frame
        .windows(payloads[1].len())
        .position(|w| w == payloads[1])
        .unwrap();
    // The session verifies a batch's signature before decoding it (nothing unauthenticated is
    // decompressed), and the signature covers the header, the sequence range and every byte of
    // the body: any changed byte fails as `Signature` (a length that no longer matches the
    // bytes makes the frame "not a well-formed batch" for the verifier, a signature error too).
    let first_seq_low = HEADER_LEN + 7;
    let last_seq_low = HEADER_LEN + 15;
    let cases: Vec<(&str, usize, u8, bool)> = vec![
        // Opaque payload bytes: still decodes; the signature covers them.
        ("a payload byte", payload_at + 3, 0x20, true),
        // The signature itself (the last 64 bytes).
        ("a signature byte", frame.len() - 1, 0x01, true),
        // first_seq 1 -> 0: the range 0..=3 still holds every message; the signature covers it.
        ("first_seq", first_seq_low, 0x01, true),
        // last_seq 3 -> 2: covered by the signature, checked before the range is decoded.
        ("last_seq", last_seq_low, 0x01, true),
        // The header's body length no longer matches the bytes.
        ("the length", HEADER_LEN - 1, 0x01, true),
        // The zstd flag: the header is signed too.
        ("the flags", 6, 0x01, true),
    ];
    for (round, (what, at, mask, signature)) in cases.into_iter().enumerate() {
        // Signatures are deterministic: every fresh pair produces the very same frame.
        let (mut a, mut b, again) = pair_with_batch(now, &payloads);
        assert_eq!(again, frame, "{what}: deterministic batch");
        let mut tampered = frame.to_vec();
        tampered[at] ^= mask;
        let t = now + Duration::from_millis(round as u64);
        b.handle_frame(t, Bytes::from(tampered));
        let failure = the_failure(&mut b, t, 0);
        if signature {
            assert!(
                matches!(failure, LinkFailure::Signature(_)),
                "{what}: {failure:?}"
            );
        } else {
            assert!(
                matches!(failure, LinkFailure::Decode(_)),
                "{what}: {failure:?}"
            );
        }
        assert_eq!(b.stats().messages_received, 0, "{what}: nothing delivered");
        // A resumes and resends the unacknowledged batch (signed for the new connection): the
        // genuine messages arrive intact, once.
        let events = reconnect(&mut a, &mut b, t, 2);
        assert_eq!(
            messages(&events),
            payloads,
            "{what}: the real batch arrives"
        );
        assert_eq!(a.unacked(), 0, "{what}");
    }
}

// ---- 8. a batch signed with the wrong key --------------------------------------------------

#[test]
fn a_batch_signed_with_the_wrong_key_or_for_another_session_fails_with_signature() {
    let now = Instant::now();
    let (mut a, mut b) = open_pair(now);
    let wrong = keypair(9);
    let right = keypair(A_SEED);
    // Connection 1 is the current one; connection 2.. after each reconnect.
    let cases: Vec<(&str, Option<&Keypair>, SessionId)> = vec![
        ("another key", Some(&wrong), session_id(1)),
        (
            "another session (cross-connection replay)",
            Some(&right),
            session_id(99),
        ),
        ("unsigned", None, session_id(2)),
    ];
    for (round, (what, key, session)) in cases.into_iter().enumerate() {
        let before = b.stats().failures;
        // A valid range (B expects sequence 1) and A's declared route: only the signature is off.
        b.handle_frame(now, forged_batch(A_ROUTE_ID, 1, 1, key, &session));
        let failure = the_failure(&mut b, now, before);
        assert!(
            matches!(failure, LinkFailure::Signature(_)),
            "{what}: {failure:?}"
        );
        assert_eq!(b.stats().messages_received, 0, "{what}");
        let events = reconnect(&mut a, &mut b, now, round as u8 + 2);
        assert!(messages(&events).is_empty(), "{what}: {events:?}");
    }
    // The same forged batch signed with the right key for the current connection is accepted.
    b.handle_frame(
        now,
        forged_batch(A_ROUTE_ID, 1, 1, Some(&right), &session_id(4)),
    );
    assert!(b.is_open());
    assert_eq!(
        messages(&events(&mut b)),
        vec![Bytes::from_static(b"forged")]
    );
}

// ---- 9. replay ------------------------------------------------------------------------------

#[test]
fn a_replayed_batch_on_an_ordered_transport_is_a_protocol_violation() {
    let now = Instant::now();
    let (mut a, mut b) = open_pair(now);
    assert!(SessionConfig::default().ordered_transport);
    let payloads: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 4])).collect();
    for p in &payloads {
        a.send(&route(), p.clone(), Correlation::None).unwrap();
    }
    let frame = take_batch(&mut a, &mut b, now);
    b.handle_frame(now, frame.clone());
    assert!(b.is_open());
    let first = events(&mut b);
    assert_eq!(messages(&first), payloads);

    let t = now + Duration::from_millis(5);
    b.handle_frame(t, frame);
    let failure = the_failure(&mut b, t, 0);
    assert!(
        matches!(&failure, LinkFailure::Protocol(m) if m.starts_with("replayed batch 1..=3")),
        "{failure:?}"
    );
    assert_eq!(b.stats().duplicates, 1);
    assert_eq!(b.stats().messages_received, 3);

    // After the reconnect B's hello tells A it has everything up to 3: nothing is resent, so
    // the messages were delivered exactly once.
    let events = reconnect(&mut a, &mut b, t, 2);
    assert!(messages(&events).is_empty(), "{events:?}");
    shuttle(&mut a, &mut b, t);
    assert!(messages(&self::events(&mut b)).is_empty());
    assert_eq!(b.stats().messages_received, 3);
    assert_eq!(a.unacked(), 0, "B's hello acknowledged the batch");
}

/// Found by the `session_sequence` fuzz target (corpus file
/// `regression-deliver-before-order-check`): a batch whose second message breaks the order
/// used to deliver its first message before failing, uncounted and with the expected sequence
/// left behind it, so the application saw that sequence number again after the reconnect.
#[test]
fn a_batch_out_of_order_delivers_none_of_its_messages() {
    let now = Instant::now();
    let (mut a, mut b) = open_pair(now);
    let batch = Batch {
        first_seq: 1,
        last_seq: 2,
        messages: [b"early", b"again"]
            .into_iter()
            .map(|payload| BatchMessage {
                route_id: A_ROUTE_ID,
                seq: Some(1),
                correlation: Correlation::None,
                payload: Bytes::from_static(payload),
            })
            .collect(),
    };
    let (key, session) = (keypair(A_SEED), session_id(1));
    let options = BatchOptions::new().sign(&key, &session);
    let frame = Encoder::new(Limits::default())
        .encode_batch(&batch, &options)
        .unwrap();
    b.handle_frame(now, frame);
    let reported = events(&mut b);
    assert_eq!(
        reported,
        vec![Event::Disconnected(LinkFailure::Protocol(
            "sequence 1 out of order in batch".into()
        ))],
        "the failure and no message"
    );
    assert_eq!(b.stats().messages_received, 0);

    // A's real message 1 after the reconnect is the only one B delivers.
    reconnect(&mut a, &mut b, now, 2);
    a.send(&route(), Bytes::from_static(b"real"), Correlation::None)
        .unwrap();
    shuttle(&mut a, &mut b, now);
    assert_eq!(messages(&events(&mut b)), vec![Bytes::from_static(b"real")]);
    assert_eq!(b.stats().messages_received, 1);
}

// ---- 10. an ack for a sequence never sent --------------------------------------------------

#[test]
fn an_ack_for_a_sequence_never_sent_is_a_protocol_violation() {
    let now = Instant::now();
    let (mut a, mut b) = open_pair(now);
    a.send(&route(), Bytes::from_static(b"one"), Correlation::None)
        .unwrap();
    shuttle(&mut a, &mut b, now);
    assert_eq!(a.unacked(), 0, "sequence 1 sent and acknowledged");
    events(&mut a);

    // An ack of what was sent is harmless, even repeated.
    a.handle_frame(now, encode(&Frame::Ack(Ack { cumulative_seq: 1 })));
    a.handle_frame(now, encode(&Frame::Ack(Ack { cumulative_seq: 0 })));
    assert!(a.is_open());

    for (round, seq) in [2u64, u64::MAX].into_iter().enumerate() {
        let before = a.stats().failures;
        a.handle_frame(
            now,
            encode(&Frame::Ack(Ack {
                cumulative_seq: seq,
            })),
        );
        assert_eq!(
            the_failure(&mut a, now, before),
            LinkFailure::Protocol(format!("ack of sequence {seq} never sent (last sent 1)")),
        );
        // The failed side is A here: B sees its transport close, then both connect again.
        b.handle_disconnect(LinkFailure::Transport("closed".into()));
        connect_with(
            &mut a,
            &mut b,
            now,
            conn(round as u8 + 2),
            conn(round as u8 + 2),
        );
        assert!(
            events(&mut a)
                .iter()
                .any(|e| matches!(e, Event::Established { peer: p, .. } if *p == peer(B_SEED)))
        );
    }
    // B, which never sent anything, rejects an ack of sequence 1.
    events(&mut b);
    let before = b.stats().failures;
    b.handle_frame(now, encode(&Frame::Ack(Ack { cumulative_seq: 1 })));
    assert_eq!(
        the_failure(&mut b, now, before),
        LinkFailure::Protocol("ack of sequence 1 never sent (last sent 0)".into())
    );
}

// ---- 11. an undeclared route id ------------------------------------------------------------

#[test]
fn a_batch_for_an_undeclared_route_is_counted_and_the_connection_stays() {
    let now = Instant::now();
    let (_a, mut b) = open_pair(now);
    let batch = forged_batch(42, 1, 1, Some(&keypair(A_SEED)), &session_id(1));
    b.handle_frame(now, batch);
    assert!(
        b.is_open(),
        "an unknown route id does not end the connection"
    );
    let stats = b.stats();
    assert_eq!(stats.unknown_routes, 1);
    assert_eq!(stats.failures, 0);
    let reported = events(&mut b);
    assert!(
        !reported
            .iter()
            .any(|e| matches!(e, Event::Disconnected(_) | Event::Message { .. })),
        "{reported:?}"
    );
    // The sequence was consumed and is acknowledged; the link keeps working.
    let mut decoder = Decoder::new(Limits::default());
    let ack = b.poll_transmit(now).unwrap();
    assert_eq!(
        decoder.decode(&ack).unwrap(),
        Frame::Ack(Ack { cumulative_seq: 1 })
    );
    b.handle_frame(now, encode(&Frame::Ping(Ping { nonce: 77 })));
    let pong = b.poll_transmit(now).unwrap();
    assert_eq!(
        decoder.decode(&pong).unwrap(),
        Frame::Pong(dndm_codec::Pong { nonce: 77 })
    );
    // A known route after it is still delivered.
    b.handle_frame(
        now,
        forged_batch(A_ROUTE_ID, 2, 2, Some(&keypair(A_SEED)), &session_id(1)),
    );
    assert!(b.is_open());
    assert_eq!(
        messages(&events(&mut b)),
        vec![Bytes::from_static(b"forged")]
    );
    assert_eq!(b.stats().unknown_routes, 1);
    assert_eq!(b.stats().failures, 0);
}

// ---- 12. an oversized frame ----------------------------------------------------------------

#[test]
fn an_oversized_frame_fails_with_decode_from_its_header_alone() {
    let now = Instant::now();
    let (mut a, mut b) = open_pair(now);
    let max = Limits::default().max_frame_len();
    let just_over = max - HEADER_LEN as u32 + 1;
    // Only the 12 header bytes: the body is announced, never sent. The failure is a limit
    // error from the header (not "truncated" or a length mismatch), so the decoder never looked
    // at, let alone reserved room for, the announced body.
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        (
            "4 GiB batch",
            header(2, 0, u32::MAX),
            format!(
                "frame length {} exceeds max_frame_len {max}",
                u64::from(u32::MAX) + 12
            ),
        ),
        (
            "one byte over",
            header(5, 0, just_over),
            format!("frame length {} exceeds max_frame_len {max}", max + 1),
        ),
        (
            "hello",
            header(1, 0, 1 << 30),
            format!(
                "frame length {} exceeds max_frame_len {max}",
                (1u64 << 30) + 12
            ),
        ),
    ];
    for (round, (what, bytes, message)) in cases.into_iter().enumerate() {
        let before = b.stats().failures;
        b.handle_frame(now, Bytes::from(bytes));
        let failure = the_failure(&mut b, now, before);
        assert!(
            matches!(&failure, LinkFailure::Decode(m) if m.contains(&message)),
            "{what}: {failure:?}"
        );
        reconnect(&mut a, &mut b, now, round as u8 + 2);
    }

    // A receiver with a smaller limit rejects a whole frame above it, even with every byte
    // present, while accepting the sender's own hello (well below it).
    let limits = Limits::builder().max_frame_len(1024).build().unwrap();
    let mut config = SessionConfig::default();
    config.limits = limits;
    let mut small = subscriber(config, now);
    let mut a2 = publisher(A_SEED, A_EPOCH, SessionConfig::default(), now);
    connect_with(&mut a2, &mut small, now, conn(1), conn(1));
    assert!(small.is_open());
    events(&mut small);
    let mut big = header(5, 0, 2000);
    big.extend_from_slice(&[0u8; 2000]);
    small.handle_frame(now, Bytes::from(big));
    let failure = the_failure(&mut small, now, 0);
    assert!(
        matches!(&failure, LinkFailure::Decode(m) if m.contains("exceeds max_frame_len 1024")),
        "{failure:?}"
    );
    reconnect(&mut a2, &mut small, now, 2);
}

// ---- bugs found while writing these tests --------------------------------------------------

/// A hello whose resume state claims the peer sent up to `u64::MAX`.
#[test]

fn a_hello_claiming_sequence_u64_max_is_rejected_without_panicking() {
    let now = Instant::now();
    let mut b = subscriber(SessionConfig::default(), now);
    attach(&mut b, now, conn(1));
    let key = keypair(A_SEED);
    let hello = Hello {
        protocol_version: u32::from(PROTOCOL_VERSION),
        public_key: key.public().to_bytes().to_vec(),
        node_name: "evil".into(),
        resume: Some(ResumeState {
            session_epoch: 1,
            last_received_seq: 0,
            last_sent_seq: u64::MAX,
            peer_epoch: 0,
            first_unacked_seq: 0,
        }),
        ..Hello::default()
    };
    b.handle_frame(now, encode(&Frame::Hello(hello)));
    let failure = the_failure(&mut b, now, 0);
    assert!(matches!(failure, LinkFailure::Protocol(_)), "{failure:?}");
}

/// A correctly signed batch whose range ends at `u64::MAX`.
#[test]

fn a_batch_ending_at_u64_max_is_rejected_without_panicking() {
    let now = Instant::now();
    let (_a, mut b) = open_pair(now);
    let batch = forged_batch(
        A_ROUTE_ID,
        1,
        u64::MAX,
        Some(&keypair(A_SEED)),
        &session_id(1),
    );
    b.handle_frame(now, batch);
    let failure = the_failure(&mut b, now, 0);
    assert!(matches!(failure, LinkFailure::Protocol(_)), "{failure:?}");
}
