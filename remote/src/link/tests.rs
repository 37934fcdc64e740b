//! The link machine without sockets: two links joined by moving bytes by hand.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dndm_codec::Limits;
use dndm_core::{
    Fingerprint, IntentAd, InterestAd, Keypair, Qos, Route, RoutePattern, Undelivered,
};

use super::*;
use crate::session::SessionConfig;

const GRACE: Duration = Duration::from_secs(30);

fn route() -> Route {
    "test.Reading@robot.imu".parse().unwrap()
}

fn link(seed: u8, peer: u8) -> Link {
    let keypair = Keypair::from_seed([seed; 32]);
    let local = keypair.peer_id();
    let session = Session::new(SessionConfig::default(), keypair, u64::from(seed));
    let peer = Keypair::from_seed([peer; 32]).peer_id();
    Link::new(local, peer, [0; 64], session, Limits::default(), GRACE)
}

/// A publishes `route()` reliably, B subscribes; both connected and open.
fn pair(now: Instant) -> (Link, Link) {
    let (mut a, mut b) = connected(now);
    shuttle(&mut a, &mut b, now);
    assert!(a.session().is_open() && b.session().is_open());
    (a, b)
}

/// Like [`pair`], but no byte has moved yet: both hellos wait to be written.
fn connected(now: Instant) -> (Link, Link) {
    let (mut a, mut b) = (link(1, 2), link(2, 1));
    let fingerprint = Fingerprint::of_schema("test.Reading", b"");
    let mut publishes = LocalSet::default();
    publishes.intents.insert(IntentAd {
        route: route(),
        fingerprint,
        schema: None,
        hashed: None,
        qos: Qos::reliable(),
    });
    let mut subscribes = LocalSet::default();
    subscribes.interests.insert(InterestAd {
        pattern: RoutePattern::from(route()),
        fingerprint,
        schema: None,
        hashed: None,
        history: 0,
    });
    a.handle_local(publishes, 0, now);
    b.handle_local(subscribes, 0, now);
    assert_eq!(a.offer(true), Offer::Adopt);
    a.handle_connect(Secure::plain(), BytesMut::new(), true, now);
    b.handle_connect(Secure::plain(), BytesMut::new(), false, now);
    (a, b)
}

fn events(link: &mut Link) -> Vec<Event> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn messages(events: &[Event]) -> Vec<Bytes> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Session(SessionEvent::Message { payload, .. }) => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_flush_completes_once_the_peer_acknowledged() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut a);
    for n in 0..3u8 {
        a.handle_publish(&route(), Bytes::from(vec![n]), now)
            .unwrap();
    }
    a.handle_flush(7, now);
    assert!(
        !events(&mut a)
            .iter()
            .any(|e| matches!(e, Event::Flushed(7)))
    );
    shuttle(&mut a, &mut b, now);
    assert_eq!(messages(&events(&mut b)).len(), 3);
    let done = events(&mut a);
    assert!(
        done.iter().any(|e| matches!(e, Event::Flushed(7))),
        "{done:?}"
    );
    let settled: u64 = done
        .iter()
        .filter_map(|e| match e {
            Event::Session(SessionEvent::Settled { count, .. }) => Some(*count),
            _ => None,
        })
        .sum();
    assert_eq!(settled, 3, "each message settled once");
}

#[test]
fn a_peer_away_past_its_grace_period_is_retired_and_what_it_missed_reported() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut a);
    a.handle_transport_failure(LinkFailure::Transport("gone".into()), now);
    let ended = events(&mut a);
    assert!(
        matches!(ended[..], [Event::ConnectionEnded { opened: true, .. }]),
        "{ended:?}"
    );
    for n in 0..3u8 {
        a.handle_publish(&route(), Bytes::from(vec![n]), now)
            .unwrap();
    }
    assert_eq!(
        a.poll_timeout(),
        Some(now + GRACE),
        "only the grace timer runs"
    );
    a.handle_timeout(now + GRACE / 2);
    assert!(events(&mut a).is_empty(), "not before the grace period");
    a.handle_timeout(now + GRACE);
    let retired = events(&mut a);
    assert!(matches!(retired[0], Event::Retired), "{retired:?}");
    assert!(
        matches!(
            retired[1],
            Event::Session(SessionEvent::Undelivered {
                count: 3,
                reason: Undelivered::PeerGone,
                ..
            })
        ),
        "{retired:?}"
    );
    // It comes back: the link declares its routes afresh and messages flow again.
    let later = now + GRACE * 2;
    a.handle_connect(Secure::plain(), BytesMut::new(), true, later);
    b.handle_transport_failure(LinkFailure::Transport("gone".into()), later);
    b.handle_connect(Secure::plain(), BytesMut::new(), false, later);
    shuttle(&mut a, &mut b, later);
    let back = events(&mut a);
    assert!(
        back.iter()
            .any(|e| matches!(e, Event::Session(SessionEvent::PeerInterestAdded(_)))),
        "{back:?}"
    );
    a.handle_publish(&route(), Bytes::from_static(b"x"), later)
        .unwrap();
    shuttle(&mut a, &mut b, later);
    assert_eq!(messages(&events(&mut b)), vec![Bytes::from_static(b"x")]);
}

#[test]
fn a_backlog_pauses_the_route_at_the_peer_until_it_drains() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    b.handle_backlog(&route(), 5, now);
    assert_eq!(b.paused_routes().count(), 1);
    shuttle(&mut a, &mut b, now);
    assert_eq!(a.stats().pauses_received, 1);
    for n in 0..4u8 {
        a.handle_publish(&route(), Bytes::from(vec![n]), now)
            .unwrap();
    }
    shuttle(&mut a, &mut b, now);
    assert!(
        messages(&events(&mut b)).is_empty(),
        "held at the publisher"
    );
    assert_eq!(a.session().queued(), 4);
    b.handle_backlog(&route(), 0, now);
    shuttle(&mut a, &mut b, now);
    let got = messages(&events(&mut b));
    assert_eq!(got.len(), 4, "released in order");
    assert!(got.iter().enumerate().all(|(i, p)| p[0] == i as u8));
}

#[test]
fn the_lower_peer_ids_connection_wins_when_both_open_one() {
    let now = Instant::now();
    let mut a = link(1, 2);
    assert_eq!(a.offer(false), Offer::Adopt);
    a.handle_connect(Secure::plain(), BytesMut::new(), false, now);
    // No hello yet on ours: a preferred newcomer supersedes it, an unpreferred one does not.
    assert_eq!(a.offer(false), Offer::Supersede);
    assert!(matches!(
        events(&mut a)[..],
        [Event::ConnectionEnded { opened: false, .. }]
    ));
    a.handle_connect(Secure::plain(), BytesMut::new(), true, now);
    assert_eq!(a.offer(false), Offer::Refuse);
    // Once a session is open, newcomers wait for it.
    let (mut a, _b) = pair(now);
    assert_eq!(a.offer(true), Offer::Queue);
    assert!(a.has_connection());
}

#[test]
fn withdrawals_wait_for_the_commands_queued_before_them() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut b);
    // Two publishes were queued before the intent was dropped: they still go out, then the
    // withdrawal.
    a.handle_local(LocalSet::default(), 2, now);
    a.handle_publish(&route(), Bytes::from_static(b"1"), now)
        .unwrap();
    a.handle_publish(&route(), Bytes::from_static(b"2"), now)
        .unwrap();
    assert!(
        a.handle_publish(&route(), Bytes::from_static(b"3"), now)
            .is_err()
    );
    shuttle(&mut a, &mut b, now);
    let got = events(&mut b);
    assert_eq!(messages(&got).len(), 2);
    assert!(matches!(
        got.last(),
        Some(Event::Session(SessionEvent::PeerIntentRemoved(_)))
    ));
}

#[test]
fn an_orderly_close_still_writes_its_close_frame() {
    let now = Instant::now();
    let (mut a, mut b) = pair(now);
    events(&mut b);
    a.close("done", now);
    shuttle(&mut a, &mut b, now);
    assert!(!a.has_connection());
    let got = events(&mut b);
    assert!(
        got.iter().any(|e| matches!(
            e,
            Event::Session(SessionEvent::Closed { by_peer: true, .. })
        )),
        "{got:?}"
    );
}

#[test]
fn a_close_before_the_peer_s_hello_still_writes_its_close_frame() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    // A's hello reaches B, which links A's routes; B's hello has not reached A yet.
    while let Some(bytes) = a.poll_transmit(now) {
        b.handle_input(&bytes, now);
    }
    assert!(b.session().is_open() && !a.session().is_open());
    a.close("done", now);
    assert!(!a.has_connection());
    while let Some(bytes) = a.poll_transmit(now) {
        b.handle_input(&bytes, now);
    }
    let got = events(&mut b);
    assert!(
        got.iter().any(|e| matches!(
            e,
            Event::Session(SessionEvent::Closed { by_peer: true, .. })
        )),
        "{got:?}"
    );
}
