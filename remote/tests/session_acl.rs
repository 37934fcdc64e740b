//! Per-route access control on a [`Session`]: declarations the [`Acl`] allows pass and messages
//! flow; a peer that declares an intent or interest its ACL denies, in its hello or in a later
//! advert, loses its connection with [`LinkFailure::Denied`], and `acl_denials` counts it.
//!
//! Two sessions are driven by hand, as in `session_adversarial.rs`: frames move between them
//! with [`shuttle`], hostile frames are built with the codec and fed straight to `handle_frame`.
//! Time is one `Instant`; no timer fires.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Instant;

use bytes::Bytes;
use dndm_codec::{
    Advert, Batch, BatchMessage, BatchOptions, Correlation, DeclPattern, DeclRoute, Decoder,
    Encoder, Frame, IntentDecl, InterestDecl, Limits, ResponseError,
};
use dndm_core::{Fingerprint, IntentAd, InterestAd, Qos, Route, RoutePattern, ServiceAd};
use dndm_remote::acl::{Acl, AclRule};
use dndm_remote::session::{Event, LinkFailure, Session, SessionConfig, SessionStats};
use support::{conn, events, keypair, messages, peer, shuttle};

const A_SEED: u8 = 1;
const B_SEED: u8 = 2;
const C_SEED: u8 = 3;

fn route(s: &str) -> Route {
    s.parse().unwrap()
}

fn pattern(s: &str) -> RoutePattern {
    s.parse().unwrap()
}

fn fingerprint() -> Fingerprint {
    Fingerprint::of_name("test.Reading")
}

fn intent(r: &str) -> IntentAd {
    IntentAd {
        route: route(r),
        fingerprint: fingerprint(),
        schema: None,
        hashed: None,
        qos: Qos::reliable(),
    }
}

fn interest(p: &str) -> InterestAd {
    InterestAd {
        pattern: pattern(p),
        fingerprint: fingerprint(),
        schema: None,
        hashed: None,
        history: 0,
    }
}

fn config(acl: Acl) -> SessionConfig {
    let mut config = SessionConfig::default();
    config.acl = acl;
    config
}

/// A session (identity `seed`, epoch `seed`) that publishes on `intents` and subscribes with
/// `interests`.
fn session(seed: u8, acl: Acl, intents: &[&str], interests: &[&str], now: Instant) -> Session {
    let mut s = Session::new(config(acl), keypair(seed), u64::from(seed));
    for r in intents {
        s.add_local_intent(intent(r), now);
    }
    for p in interests {
        s.add_local_interest(interest(p), now);
    }
    s
}

/// Connects `a` and `b` as connection `id` and shuttles until quiet.
fn connect(a: &mut Session, b: &mut Session, now: Instant, id: u8) {
    a.handle_connect(now, conn(id));
    b.handle_connect(now, conn(id));
    shuttle(a, b, now);
}

fn encode(frame: &Frame) -> Bytes {
    Encoder::new(Limits::default()).encode(frame).unwrap()
}

/// The one failure `s` reported since its events were last drained; checks that it is the only
/// thing reported (no route of the peer was taken up), that the connection (not the session) is
/// down, and that one failure and one denial were counted since `before`.
fn the_denial(s: &mut Session, now: Instant, before: SessionStats) -> LinkFailure {
    let events = events(s);
    let [Event::Disconnected(failure)] = events.as_slice() else {
        panic!("exactly one event, a failure: {events:?}");
    };
    assert!(!s.is_open(), "the connection is down");
    assert!(!s.is_closed(), "the session survives the bad connection");
    assert_eq!(
        s.stats().failures,
        before.failures + 1,
        "one failure counted"
    );
    assert_eq!(
        s.stats().acl_denials,
        before.acl_denials + 1,
        "one denial counted"
    );
    assert_eq!(s.poll_transmit(now), None, "nothing more is written");
    assert!(!failure.is_transient(), "a denial is not worth retrying");
    failure.clone()
}

fn denied(seed: u8, what: &str) -> LinkFailure {
    LinkFailure::Denied {
        peer: peer(seed),
        what: what.to_owned(),
    }
}

/// B's ACL for A: publish under `robot.**`, subscribe to what `robot.**` covers.
fn robot_acl() -> Acl {
    Acl::deny_all().with_rule(
        AclRule::any_peer()
            .publish(pattern("test.Reading@robot.**"))
            .subscribe(pattern("test.Reading@robot.**")),
    )
}

#[test]
fn allowed_declarations_pass_and_messages_flow() {
    let now = Instant::now();
    let mut a = session(
        A_SEED,
        robot_acl(),
        &["test.Reading@robot.imu"],
        &["test.Reading@robot.*.cmd"],
        now,
    );
    let mut b = session(
        B_SEED,
        robot_acl(),
        &["test.Reading@robot.arm.cmd"],
        &["test.Reading@robot.**"],
        now,
    );
    connect(&mut a, &mut b, now, 1);
    assert!(a.is_open() && b.is_open());
    let from_a = events(&mut b);
    assert!(
        from_a
            .iter()
            .any(|e| matches!(e, Event::PeerIntentAdded(ad) if ad.route == route("test.Reading@robot.imu"))),
        "{from_a:?}"
    );
    assert!(
        from_a
            .iter()
            .any(|e| matches!(e, Event::PeerInterestAdded(ad) if ad.pattern == pattern("test.Reading@robot.*.cmd"))),
        "{from_a:?}"
    );
    events(&mut a);

    let imu = route("test.Reading@robot.imu");
    let cmd = route("test.Reading@robot.arm.cmd");
    a.send(&imu, Bytes::from_static(b"imu"), Default::default())
        .unwrap();
    b.send(&cmd, Bytes::from_static(b"cmd"), Default::default())
        .unwrap();
    shuttle(&mut a, &mut b, now);
    assert_eq!(messages(&events(&mut b)), vec![Bytes::from_static(b"imu")]);
    assert_eq!(messages(&events(&mut a)), vec![Bytes::from_static(b"cmd")]);

    // Allowed adverts after the hello pass too.
    a.add_local_intent(intent("test.Reading@robot.gps"), now);
    shuttle(&mut a, &mut b, now);
    assert!(b.is_open());
    assert!(events(&mut b).iter().any(
        |e| matches!(e, Event::PeerIntentAdded(ad) if ad.route == route("test.Reading@robot.gps"))
    ));
    for s in [&a, &b] {
        assert_eq!(s.stats().acl_denials, 0);
        assert_eq!(s.stats().failures, 0);
    }
}

#[test]
fn an_intent_on_a_denied_route_is_disconnected_with_denied() {
    let now = Instant::now();
    let mut a = session(
        A_SEED,
        Acl::allow_all(),
        &["test.Reading@robot.imu", "test.Reading@secret.x"],
        &[],
        now,
    );
    let mut b = session(B_SEED, robot_acl(), &[], &["test.Reading@**"], now);
    connect(&mut a, &mut b, now, 1);
    assert_eq!(
        the_denial(&mut b, now, SessionStats::default()),
        denied(A_SEED, "publish on test.Reading@secret.x")
    );
    assert_eq!(b.peer(), None, "a denied hello is not accepted");
    assert!(!a.is_open(), "B never answered A's hello");
    assert_eq!(
        denied(A_SEED, "publish on test.Reading@secret.x").to_string(),
        format!(
            "peer {} is denied publish on test.Reading@secret.x",
            peer(A_SEED)
        )
    );

    // A tries again with the same routes: denied again, counted again.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    let before = b.stats();
    connect(&mut a, &mut b, now, 2);
    assert_eq!(
        the_denial(&mut b, now, before),
        denied(A_SEED, "publish on test.Reading@secret.x")
    );

    // Without the denied route it gets in, and its messages flow.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    a.remove_local_intent(&route("test.Reading@secret.x"), now);
    connect(&mut a, &mut b, now, 3);
    assert!(a.is_open() && b.is_open());
    events(&mut b);
    a.send(
        &route("test.Reading@robot.imu"),
        Bytes::from_static(b"ok"),
        Default::default(),
    )
    .unwrap();
    shuttle(&mut a, &mut b, now);
    assert_eq!(messages(&events(&mut b)), vec![Bytes::from_static(b"ok")]);
    assert_eq!(b.stats().acl_denials, 2);
}

#[test]
fn a_denied_interest_pattern_is_disconnected_with_denied() {
    let now = Instant::now();
    let cases = [
        // Too broad: `T@**` could match routes outside `T@robot.**`.
        (robot_acl(), "test.Reading@**"),
        // Outside the rule altogether, `*` where the rule has a literal, another type.
        (robot_acl(), "test.Reading@secret.x"),
        (robot_acl(), "test.Reading@*.imu"),
        (robot_acl(), "other.Type@robot.imu"),
        // Broader than a `*` rule: `robot.**` reaches deeper than `robot.*`.
        (
            Acl::from_rules([AclRule::any_peer().subscribe(pattern("test.Reading@robot.*"))]),
            "test.Reading@robot.**",
        ),
    ];
    for (acl, wanted) in cases {
        let mut a = session(A_SEED, acl, &[], &[], now);
        let mut b = session(B_SEED, Acl::allow_all(), &[], &[wanted], now);
        connect(&mut a, &mut b, now, 1);
        assert_eq!(
            the_denial(&mut a, now, SessionStats::default()),
            denied(B_SEED, &format!("subscribe to {wanted}")),
            "{wanted}"
        );
    }

    // Patterns the rule covers pass.
    for wanted in [
        "test.Reading@robot.**",
        "test.Reading@robot.*.imu",
        "test.Reading@robot.arm",
        "test.Reading@robot",
    ] {
        let mut a = session(A_SEED, robot_acl(), &[], &[], now);
        let mut b = session(B_SEED, Acl::allow_all(), &[], &[wanted], now);
        connect(&mut a, &mut b, now, 1);
        assert!(a.is_open() && b.is_open(), "{wanted}");
        assert_eq!(a.stats().acl_denials, 0);
    }
}

#[test]
fn a_denied_advert_after_the_hello_is_caught() {
    let now = Instant::now();
    let mut a = session(A_SEED, robot_acl(), &["test.Reading@robot.imu"], &[], now);
    let mut b = session(B_SEED, robot_acl(), &[], &["test.Reading@robot.**"], now);
    connect(&mut a, &mut b, now, 1);
    assert!(a.is_open() && b.is_open());
    events(&mut a);
    events(&mut b);

    // A message first: it is delivered, the link is fine.
    a.send(
        &route("test.Reading@robot.imu"),
        Bytes::from_static(b"before"),
        Default::default(),
    )
    .unwrap();
    shuttle(&mut a, &mut b, now);
    assert_eq!(
        messages(&events(&mut b)),
        vec![Bytes::from_static(b"before")]
    );

    // A now declares a denied intent (by hand: A's own ACL would not tell B of it): B ends
    // the connection.
    let before = b.stats();
    let advert = Advert {
        intents_added: vec![IntentDecl {
            id: 40,
            route: DeclRoute::Plain(route("test.Reading@secret.x")),
            fingerprint: fingerprint(),
            schema: None,
            qos: Qos::reliable(),
        }],
        ..Advert::default()
    };
    b.handle_frame(now, encode(&Frame::Advert(advert)));
    assert_eq!(
        the_denial(&mut b, now, before),
        denied(A_SEED, "publish on test.Reading@secret.x")
    );

    // The same for an interest: B, reconnected, asks for too much and A ends the connection.
    a.handle_disconnect(LinkFailure::Transport("closed".into()));
    a.remove_local_intent(&route("test.Reading@secret.x"), now);
    connect(&mut a, &mut b, now, 2);
    assert!(a.is_open() && b.is_open());
    events(&mut a);
    events(&mut b);
    let before = a.stats();
    b.add_local_interest(interest("test.Reading@**"), now);
    shuttle(&mut a, &mut b, now);
    assert_eq!(
        the_denial(&mut a, now, before),
        denied(B_SEED, "subscribe to test.Reading@**")
    );
}

#[test]
fn a_denied_advert_applies_none_of_its_declarations() {
    let now = Instant::now();
    let mut a = session(
        A_SEED,
        Acl::allow_all(),
        &["test.Reading@robot.imu"],
        &[],
        now,
    );
    let mut b = session(B_SEED, robot_acl(), &[], &[], now);
    connect(&mut a, &mut b, now, 1);
    assert!(b.is_open());
    events(&mut b);

    // A hand-built advert: an allowed intent and interest, then a denied interest.
    let advert = Advert {
        intents_added: vec![IntentDecl {
            id: 50,
            route: DeclRoute::Plain(route("test.Reading@robot.gps")),
            fingerprint: fingerprint(),
            schema: None,
            qos: Qos::reliable(),
        }],
        interests_added: vec![
            InterestDecl {
                id: 51,
                pattern: DeclPattern::Plain(pattern("test.Reading@robot.*")),
                fingerprint: fingerprint(),
                schema: None,
                history: 0,
            },
            InterestDecl {
                id: 52,
                pattern: DeclPattern::Plain(pattern("test.Reading@*.*")),
                fingerprint: fingerprint(),
                schema: None,
                history: 0,
            },
        ],
        ..Advert::default()
    };
    let before = b.stats();
    b.handle_frame(now, encode(&Frame::Advert(advert)));
    assert_eq!(
        the_denial(&mut b, now, before),
        denied(A_SEED, "subscribe to test.Reading@*.*")
    );
}

#[test]
fn peer_scoped_rules_apply_only_to_their_peers() {
    let now = Instant::now();
    // Everyone may publish under `robot.**`; only A also under `secret.**`.
    let acl = || {
        Acl::from_rules([
            AclRule::any_peer().publish(pattern("test.Reading@robot.**")),
            AclRule::for_peers([peer(A_SEED)]).publish(pattern("test.Reading@secret.**")),
        ])
    };
    let mut b = session(B_SEED, acl(), &[], &[], now);

    let mut a = session(
        A_SEED,
        Acl::allow_all(),
        &["test.Reading@secret.x"],
        &[],
        now,
    );
    connect(&mut a, &mut b, now, 1);
    assert!(a.is_open() && b.is_open(), "A may publish on secret.x");
    assert_eq!(b.stats().acl_denials, 0);

    let mut b = session(B_SEED, acl(), &[], &[], now);
    let mut c = session(
        C_SEED,
        Acl::allow_all(),
        &["test.Reading@secret.x"],
        &[],
        now,
    );
    connect(&mut c, &mut b, now, 2);
    assert_eq!(
        the_denial(&mut b, now, SessionStats::default()),
        denied(C_SEED, "publish on test.Reading@secret.x")
    );

    let mut b = session(B_SEED, acl(), &[], &[], now);
    let mut c = session(
        C_SEED,
        Acl::allow_all(),
        &["test.Reading@robot.imu"],
        &[],
        now,
    );
    connect(&mut c, &mut b, now, 3);
    assert!(c.is_open() && b.is_open(), "C may publish on robot.imu");

    // Rules scoped to A grant nothing for subscribing: C may not subscribe at all.
    let mut b = session(B_SEED, acl(), &[], &[], now);
    let mut c = session(
        C_SEED,
        Acl::allow_all(),
        &[],
        &["test.Reading@robot.imu"],
        now,
    );
    connect(&mut c, &mut b, now, 4);
    assert_eq!(
        the_denial(&mut b, now, SessionStats::default()),
        denied(C_SEED, "subscribe to test.Reading@robot.imu")
    );
}

#[test]
fn a_peer_allowed_nothing_learns_nothing_and_its_calls_are_denied() {
    let now = Instant::now();
    let mut b = session(
        B_SEED,
        Acl::deny_all(),
        &["test.Reading@vault.keys"],
        &["test.Reading@vault.**"],
        now,
    );
    b.add_local_service(
        ServiceAd {
            route: route("test.Req@admin.reboot"),
            request_fingerprint: Fingerprint::of_name("test.Req"),
            response_route: route("test.Resp@admin.reboot"),
            response_fingerprint: Fingerprint::of_name("test.Resp"),
        },
        now,
    );
    let mut a = session(A_SEED, Acl::allow_all(), &[], &[], now);
    connect(&mut a, &mut b, now, 1);
    assert!(a.is_open() && b.is_open());
    assert!(a.peer_intents().is_empty() && a.peer_interests().is_empty());
    assert!(
        !events(&mut a).iter().any(|e| matches!(
            e,
            Event::PeerIntentAdded(_) | Event::PeerInterestAdded(_) | Event::PeerServiceAdded(_)
        )),
        "A was told nothing"
    );
    events(&mut b);

    // A guesses the service's id (the first one) and calls it anyway.
    let batch = Batch {
        first_seq: 1,
        last_seq: 1,
        messages: vec![BatchMessage {
            route_id: (1 << 31) | 1,
            seq: Some(1),
            correlation: Correlation::Request { id: 9 },
            payload: Bytes::from_static(b"please"),
        }],
    };
    let key = keypair(A_SEED);
    let session_id = conn(1).session_id;
    let frame = Encoder::new(Limits::default())
        .encode_batch(&batch, &BatchOptions::new().sign(&key, &session_id))
        .unwrap();
    b.handle_frame(now, frame);
    assert!(
        !events(&mut b)
            .iter()
            .any(|e| matches!(e, Event::Request { .. })),
        "the ACL is not bypassed"
    );
    assert_eq!(b.stats().acl_denials, 1);
    // B answers with a typed refusal.
    let mut decoder = Decoder::new(Limits::default());
    let denial = std::iter::from_fn(|| b.poll_transmit(now))
        .filter_map(|bytes| match decoder.decode(&bytes).unwrap() {
            Frame::Batch(batch) => Some(batch.messages),
            _ => None,
        })
        .flatten()
        .find_map(|m| match m.correlation {
            Correlation::Response { to: 9, error } => error,
            _ => None,
        });
    assert_eq!(denial.map(|e| e.code), Some(ResponseError::DENIED));
}
