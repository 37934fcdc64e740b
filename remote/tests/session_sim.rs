//! The session protocol in the simulator: virtual time, deterministic seeds, faults.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use dndm_codec::{CloseCode, Correlation};
use dndm_core::{Fingerprint, IntentAd, InterestAd, Keypair, Qos, Route, RoutePattern};
use dndm_remote::session::{Event, LinkFailure, Session, SessionConfig, SessionSendError};
use dndm_remote::sim::{Pair, Side, SimConfig};
use support::{conn, events, shuttle};

mod support;

const MINUTE: Duration = Duration::from_secs(60);

fn route() -> Route {
    "test.Reading@robot.imu".parse().unwrap()
}

fn config(lossy: bool) -> SessionConfig {
    let mut config = SessionConfig::default();
    config.max_batch_messages = 64;
    config.send_queue = 512;
    config.retransmit_capacity = 256;
    if lossy {
        config.ordered_transport = false;
        config.retransmit_timeout = Some(Duration::from_millis(40));
    }
    config
}

fn session(seed: u8, epoch: u64, config: SessionConfig) -> Session {
    Session::new(config, Keypair::from_seed([seed; 32]), epoch)
}

/// A publishes `route()` with `qos`; B subscribes to it.
fn pair(qos: Qos, lossy: bool, sim: SimConfig) -> Pair {
    let mut pair = Pair::new(publisher(100, qos, lossy), subscriber(200, lossy), sim);
    pair.connect();
    pair
}

fn payload(n: u64) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

fn number(payload: &Bytes) -> u64 {
    u64::from_be_bytes(payload.as_ref().try_into().unwrap())
}

/// Sends `count` messages from A as fast as A accepts them; returns what B received.
fn transfer(pair: &mut Pair, count: u64) -> Vec<u64> {
    let mut received = Vec::new();
    let mut next = 0;
    let done = pair.run_until(60 * MINUTE, |pair| {
        while next < count {
            match pair.a.send(&route(), payload(next), Correlation::None) {
                Ok(()) => next += 1,
                Err(SessionSendError::Full) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        for event in pair.events(Side::B) {
            if let Event::Message { payload, .. } = event {
                received.push(number(&payload));
            }
        }
        next == count && pair.a.unacked_batches() == 0 && pair.a.queued() == 0
    });
    assert!(
        done,
        "transfer did not finish: sent {next}, received {}",
        received.len()
    );
    for event in pair.events(Side::B) {
        if let Event::Message { payload, .. } = event {
            received.push(number(&payload));
        }
    }
    received
}

#[test]
fn hello_exchanges_routes_and_messages_flow_in_order() {
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    assert!(pair.run_until(MINUTE, |p| p.a.is_open() && p.b.is_open()));
    let events = pair.events(Side::B);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Established { resumed: false, .. })),
        "{events:?}"
    );
    assert!(events.contains(&Event::PeerIntentAdded(IntentAd {
        route: route(),
        fingerprint: Fingerprint::of_name("test.Reading"),
        schema: None,
        hashed: None,
        qos: Qos::reliable()
    })));
    let events = pair.events(Side::A);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::PeerInterestAdded(_))),
        "{events:?}"
    );
    assert_eq!(pair.a.peer(), Some(Keypair::from_seed([2; 32]).peer_id()));
    let received = transfer(&mut pair, 1000);
    assert_eq!(received, (0..1000).collect::<Vec<_>>());
}

/// The faults of the 100k runs: 1% loss, 1% duplication, reordering by jitter, and a
/// disconnect each time another 5,000 messages were sent.
fn faults(seed: u64) -> SimConfig {
    SimConfig {
        latency: Duration::from_millis(2),
        jitter: Duration::from_millis(3),
        loss: 0.01,
        duplicate: 0.01,
        disconnect_every_messages: Some(5_000),
        reconnect_after: Duration::from_millis(100),
        seed,
        ..SimConfig::default()
    }
}

/// The sim really injected every fault it was asked for.
fn assert_faults_happened(pair: &Pair, count: u64) {
    let cuts = count / 5_000;
    assert!(
        (cuts - 1..=cuts + 1).contains(&pair.disconnects),
        "one disconnect per 5,000 messages: {} for {count}",
        pair.disconnects
    );
    assert!(pair.dropped > 0, "the network lost frames");
    assert!(pair.duplicated > 0, "the network duplicated frames");
    assert!(pair.reordered > 0, "the network reordered frames");
}

#[test]
fn reliable_100k_under_loss_reorder_duplication_and_disconnects_loses_nothing() {
    let mut pair = pair(Qos::reliable(), true, faults(42));
    let received = transfer(&mut pair, 100_000);
    assert_eq!(received.len(), 100_000, "0 lost, 0 duplicated");
    assert!(
        received.iter().enumerate().all(|(i, &n)| i as u64 == n),
        "in order"
    );
    assert_faults_happened(&pair, 100_000);
    let stats = pair.a.stats();
    assert!(stats.retransmitted > 0, "{stats:?}");
    let stats = pair.b.stats();
    assert!(
        stats.duplicates > 0,
        "duplicates reached B and were dropped: {stats:?}"
    );
    assert!(stats.gaps > 0, "gaps reached B and were dropped: {stats:?}");
    assert_eq!(stats.best_effort_lost, 0);
}

#[test]
fn best_effort_under_the_same_faults_counts_losses_and_never_duplicates() {
    let mut pair = pair(Qos::best_effort(), true, faults(7));
    let received = transfer(&mut pair, 100_000);
    assert!(
        received.windows(2).all(|w| w[0] < w[1]),
        "never duplicated, never reordered"
    );
    assert_faults_happened(&pair, 100_000);
    let stats = pair.b.stats();
    assert!(
        stats.duplicates > 0,
        "duplicates reached B and were dropped: {stats:?}"
    );
    let lost = stats.best_effort_lost;
    assert!(lost > 0, "faults lost some best-effort messages");
    assert_eq!(
        received.len() as u64 + lost,
        100_000,
        "every message is delivered or counted lost"
    );
}

#[test]
fn reconnect_resyncs_routes_changed_while_down() {
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    assert!(pair.run_until(MINUTE, |p| p.b.is_open()));
    pair.events(Side::B);
    pair.disconnect();
    let now = pair.now();
    let gps: Route = "test.Reading@robot.gps".parse().unwrap();
    let fingerprint = Fingerprint::of_name("test.Reading");
    pair.a.remove_local_intent(&route(), now);
    pair.a.add_local_intent(
        IntentAd {
            route: gps.clone(),
            fingerprint,
            schema: None,
            hashed: None,
            qos: Qos::best_effort(),
        },
        now,
    );
    assert!(pair.run_until(MINUTE, |p| p.b.is_open()));
    let events = pair.events(Side::B);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Disconnected(LinkFailure::Transport(_)))),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Established { resumed: true, .. })),
        "{events:?}"
    );
    assert!(
        events.contains(&Event::PeerIntentRemoved(route())),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::PeerIntentAdded(ad) if ad.route == gps)),
        "{events:?}"
    );
}

#[test]
fn a_restarted_peer_counts_what_it_never_acknowledged() {
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    assert!(pair.run_until(MINUTE, |p| p.b.is_open()));
    pair.disconnect();
    for n in 0..10 {
        pair.a
            .send(&route(), payload(n), Correlation::None)
            .unwrap();
    }
    // While down, nothing is batched; the queue holds the messages for the next connection.
    assert_eq!(pair.a.queued(), 10);
    let fresh = session(2, 999, config(false));
    pair.b = fresh;
    assert!(pair.run_until(MINUTE, |p| p.a.is_open()
        && p.a.queued() == 0
        && p.a.unacked() == 0));
    let events = pair.events(Side::A);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Established { resumed: false, .. })),
        "{events:?}"
    );
}

/// A's publisher session on `route()` with `qos`, epoch `epoch`.
fn publisher(epoch: u64, qos: Qos, lossy: bool) -> Session {
    let mut a = session(1, epoch, config(lossy));
    a.add_local_intent(
        IntentAd {
            route: route(),
            fingerprint: Fingerprint::of_name("test.Reading"),
            schema: None,
            hashed: None,
            qos,
        },
        std::time::Instant::now(),
    );
    a
}

/// B's subscriber session for `route()`, epoch `epoch`.
fn subscriber(epoch: u64, lossy: bool) -> Session {
    let mut b = session(2, epoch, config(lossy));
    b.add_local_interest(
        InterestAd {
            pattern: RoutePattern::from(route()),
            fingerprint: Fingerprint::of_name("test.Reading"),
            schema: None,
            hashed: None,
            history: 0,
        },
        std::time::Instant::now(),
    );
    b
}

/// A reliable publisher (epoch `a_epoch`) and a subscriber (epoch `b_epoch`) on an ordered
/// transport, driven by hand below.
fn by_hand(a_epoch: u64, b_epoch: u64) -> (Session, Session) {
    (
        publisher(a_epoch, Qos::reliable(), false),
        subscriber(b_epoch, false),
    )
}

/// Connection `id` comes up and both hellos cross.
fn connect(a: &mut Session, b: &mut Session, now: std::time::Instant, id: u8) {
    a.handle_connect(now, conn(id));
    b.handle_connect(now, conn(id));
    shuttle(a, b, now);
}

/// Connection `id` comes up, B's hello reaches A, and A's never reaches B; A sends messages
/// `numbers` on it, which are lost with it, and the connection breaks.
fn half_open_then_cut(
    a: &mut Session,
    b: &mut Session,
    now: std::time::Instant,
    id: u8,
    numbers: std::ops::Range<u64>,
) {
    a.handle_connect(now, conn(id));
    b.handle_connect(now, conn(id));
    while let Some(frame) = b.poll_transmit(now) {
        a.handle_frame(now, frame);
    }
    assert!(a.is_open() && !b.is_open(), "only A accepted a hello");
    send(a, numbers);
    while a.poll_transmit(now).is_some() {}
    a.handle_disconnect(LinkFailure::Transport("cut".into()));
    b.handle_disconnect(LinkFailure::Transport("cut".into()));
}

fn send(a: &mut Session, numbers: std::ops::Range<u64>) {
    for n in numbers {
        a.send(&route(), payload(n), Correlation::None).unwrap();
    }
}

/// A (epoch 100) and B (epoch 200) after connection 1 carried A's messages 0..5 to B.
fn acquainted(now: std::time::Instant) -> (Session, Session) {
    let (mut a, mut b) = by_hand(100, 200);
    connect(&mut a, &mut b, now, 1);
    send(&mut a, 0..5);
    shuttle(&mut a, &mut b, now);
    (a, b)
}

/// The numbers of the messages `b` delivered since last asked.
fn received(b: &mut Session) -> Vec<u64> {
    events(b)
        .iter()
        .filter_map(|e| match e {
            Event::Message { payload, .. } => Some(number(payload)),
            _ => None,
        })
        .collect()
}

/// A connection breaks after B's hello reached A but before A's reached B; A already sent
/// messages on it. B's side then starts a new session for A (as an endpoint does for a peer
/// whose hello it never got), with its endpoint's epoch (`b_epoch`). Returns what B receives
/// on the next connection, and A's count of messages lost to a peer restart.
fn hello_lost_then_reconnect(b_epoch: u64) -> (Vec<u64>, u64) {
    let now = std::time::Instant::now();
    let (mut a, mut b) = by_hand(100, 200);
    half_open_then_cut(&mut a, &mut b, now, 1, 0..5);
    let mut b = subscriber(b_epoch, false);
    connect(&mut a, &mut b, now, 2);
    assert!(a.is_open() && b.is_open());
    (received(&mut b), a.stats().lost_on_peer_restart)
}

#[test]
fn messages_sent_before_the_peer_accepted_our_hello_survive_a_new_session_of_the_peer() {
    // Same endpoint (same epoch): nothing was delivered on the broken connection, and all of
    // it arrives on the next, once each, in order.
    let (received, lost) = hello_lost_then_reconnect(200);
    assert_eq!(received, (0..5).collect::<Vec<_>>());
    assert_eq!(lost, 0);
}

#[test]
fn a_new_session_of_a_peer_process_we_resume_takes_our_numbering_from_what_we_still_hold() {
    // B's process restarted once (epoch 200 to 300) after acknowledging A's first messages; a
    // connection to the new process then broke after A accepted its hello but before it
    // accepted A's, and the new process started a fresh session for A (same epoch 300). A
    // treats epoch 300 as resumed and resends what it holds, which starts well after 1.
    let now = std::time::Instant::now();
    let (mut a, _b) = acquainted(now);
    assert_eq!(a.unacked(), 0, "B acknowledged 0..5");
    a.handle_disconnect(LinkFailure::Transport("restart".into()));

    // B restarts (epoch 300). Only its hello reaches A; A sends 5..8 into the void.
    let mut b = subscriber(300, false);
    half_open_then_cut(&mut a, &mut b, now, 2, 5..8);

    // B's endpoint starts a fresh session for A, same epoch 300.
    let mut b = subscriber(300, false);
    connect(&mut a, &mut b, now, 3);
    assert!(
        a.is_open() && b.is_open(),
        "no gap or replay closed the link"
    );
    assert_eq!(received(&mut b), vec![5, 6, 7]);
    // And the stream goes on.
    send(&mut a, 8..9);
    shuttle(&mut a, &mut b, now);
    assert_eq!(received(&mut b), vec![8]);
}

#[test]
fn a_restarted_publisher_whose_hello_was_lost_resends_everything_once() {
    // B talks to A's first process for a while (B expects A's 6th message next). A restarts
    // (fresh session, new epoch); on its first connection A accepts B's hello and sends 3
    // messages, but B never gets A's hello before the connection breaks. On the next one B
    // must follow A's new numbering, and A must resend all 3 (B has delivered none of them).
    let now = std::time::Instant::now();
    let (_a, mut b) = acquainted(now);
    assert_eq!(received(&mut b), vec![0, 1, 2, 3, 4]);
    b.handle_disconnect(LinkFailure::Transport("a restarts".into()));

    // A's new process: epoch 101.
    let mut a = publisher(101, Qos::reliable(), false);
    half_open_then_cut(&mut a, &mut b, now, 2, 100..103);

    connect(&mut a, &mut b, now, 3);
    assert!(
        a.is_open() && b.is_open(),
        "no gap or replay closed the link"
    );
    assert_eq!(received(&mut b), vec![100, 101, 102]);
    assert_eq!(a.stats().lost_on_peer_restart, 0);
    send(&mut a, 103..104);
    shuttle(&mut a, &mut b, now);
    assert_eq!(received(&mut b), vec![103]);
}

#[test]
fn messages_unacknowledged_by_a_restarted_peer_are_counted_lost_not_resent() {
    // A restarted process (another epoch) may have delivered before it crashed: at most once,
    // so A counts them lost instead of sending them twice.
    let (received, lost) = hello_lost_then_reconnect(999);
    assert!(received.is_empty(), "{received:?}");
    assert_eq!(lost, 5);
}

#[test]
fn a_full_retransmit_buffer_back_pressures_and_memory_stays_bounded() {
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    assert!(pair.run_until(MINUTE, |p| p.a.is_open()));
    // The peer stops acknowledging: cut the link for good.
    pair.disconnect();
    let mut accepted = 0u64;
    let refused = loop {
        match pair.a.send(&route(), payload(accepted), Correlation::None) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= 10_000, "never refused: unbounded");
    };
    assert_eq!(refused, SessionSendError::Full);
    assert!(refused.is_transient());
    assert_eq!(pair.a.queued(), 512, "bounded by the send queue");
    // When the link returns, everything arrives and the sender hears it has room again.
    let received = transfer(&mut pair, 0);
    assert_eq!(received, (0..accepted).collect::<Vec<_>>());
    assert!(
        pair.events(Side::A).contains(&Event::SendReady),
        "the refused sender hears it has room again"
    );
}

/// Sends payloads `next..count` from A while it accepts, collecting B's messages and checking
/// A's memory bounds after every step, for up to `limit` of virtual time or until `done`
/// holds. Returns the next payload number and whether `done` held.
fn pump(
    pair: &mut Pair,
    limit: Duration,
    (mut next, count): (u64, u64),
    received: &mut Vec<u64>,
    mut done: impl FnMut(&mut Pair, u64, Option<SessionSendError>) -> bool,
) -> (u64, bool) {
    let capacity = config(false).retransmit_capacity;
    let finished = pair.run_until(limit, |pair| {
        let mut refused = None;
        while next < count {
            match pair.a.send(&route(), payload(next), Correlation::None) {
                Ok(()) => next += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(pair.a.unacked() <= capacity, "{}", pair.a.unacked());
        assert!(pair.a.unacked_batches() <= capacity);
        assert!(pair.a.queued() <= config(false).send_queue);
        for event in pair.events(Side::B) {
            if let Event::Message { payload, .. } = event {
                received.push(number(&payload));
            }
        }
        done(pair, next, refused)
    });
    (next, finished)
}

#[test]
fn a_peer_that_stops_acknowledging_back_pressures_the_publisher_without_loss() {
    let capacity = config(false).retransmit_capacity;
    let send_queue = config(false).send_queue;
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    assert!(pair.run_until(MINUTE, |p| p.a.is_open() && p.b.is_open()));
    pair.events(Side::A);
    // B stays connected and receives, but its acks (and everything else it sends) wait.
    pair.pause(Side::B);
    let mut received = Vec::new();
    let (next, full) = pump(
        &mut pair,
        MINUTE,
        (0, u64::MAX),
        &mut received,
        |p, _, e| e.is_some() && p.a.unacked() == capacity,
    );
    assert!(full);
    assert_eq!(
        pair.a.send(&route(), payload(next), Correlation::None),
        Err(SessionSendError::Full),
        "a full buffer refuses with a typed error, it does not drop"
    );
    assert!(!pair.a.can_send());
    assert_eq!(next, (capacity + send_queue) as u64);
    // Time passes (keepalives, no acks): nothing more is batched, nothing is dropped.
    assert!(!pair.run_until(Duration::from_secs(3), |_| false));
    assert_eq!(pair.a.unacked(), capacity);
    assert_eq!(pair.a.queued(), send_queue);
    assert_eq!(pair.a.stats().messages_sent, capacity as u64);
    assert!(
        pair.a.is_open() && !pair.a.can_send(),
        "{:?}",
        pair.events(Side::A)
    );
    // B acknowledges again, slowly: its frames flow for 20 ms out of every 100 ms.
    let total = 20_000;
    let mut next = next;
    let mut events = Vec::new();
    for _ in 0..1_000 {
        let mut finished = false;
        for (paused, period) in [(false, 20), (true, 80)] {
            if paused {
                pair.pause(Side::B);
            } else {
                pair.resume(Side::B);
            }
            let period = Duration::from_millis(period);
            (next, finished) = pump(
                &mut pair,
                period,
                (next, total),
                &mut received,
                |p, n, _| {
                    events.extend(p.events(Side::A));
                    n == total && p.a.unacked() == 0 && p.a.queued() == 0
                },
            );
            if finished {
                break;
            }
        }
        if finished {
            break;
        }
    }
    pair.resume(Side::B);
    assert_eq!(
        received,
        (0..total).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert!(events.contains(&Event::SendReady), "{events:?}");
    assert_eq!(pair.a.stats().failures, 0, "the connection never dropped");
}

/// `closer` closes after queueing five messages to the other side; the other side sees the
/// close with its reason after the messages.
fn close_from(closer: Side) {
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    let now = pair.now();
    let back: Route = "test.Reading@robot.back".parse().unwrap();
    let fingerprint = Fingerprint::of_name("test.Reading");
    // B publishes too, so either side has messages in flight when it closes.
    pair.b.add_local_intent(
        IntentAd {
            route: back.clone(),
            fingerprint,
            schema: None,
            hashed: None,
            qos: Qos::reliable(),
        },
        now,
    );
    pair.a.add_local_interest(
        InterestAd {
            pattern: RoutePattern::from(back.clone()),
            fingerprint,
            schema: None,
            hashed: None,
            history: 0,
        },
        now,
    );
    assert!(pair.run_until(MINUTE, |p| p.a.is_open() && p.b.is_open()));
    let (closing, route, peer) = match closer {
        Side::A => (&mut pair.a, route(), Side::B),
        Side::B => (&mut pair.b, back, Side::A),
    };
    for n in 0..5 {
        closing.send(&route, payload(n), Correlation::None).unwrap();
    }
    closing.close(CloseCode(0), "shutting down");
    assert!(pair.run_until(MINUTE, |p| match peer {
        Side::A => p.a.is_closed(),
        Side::B => p.b.is_closed(),
    }));
    let events = pair.events(peer);
    let messages = events
        .iter()
        .filter(|e| matches!(e, Event::Message { .. }))
        .count();
    assert_eq!(messages, 5, "queued messages are flushed before the close");
    let closed_at = events.iter().position(
        |e| matches!(e, Event::Closed { by_peer: true, reason, .. } if reason == "shutting down"),
    );
    assert_eq!(
        closed_at,
        Some(events.len() - 1),
        "the close comes last: {events:?}"
    );
    assert!(
        pair.events(closer)
            .iter()
            .any(|e| matches!(e, Event::Closed { by_peer: false, .. }))
    );
    let closing = match closer {
        Side::A => &mut pair.a,
        Side::B => &mut pair.b,
    };
    assert_eq!(
        closing.send(&route, payload(9), Correlation::None),
        Err(SessionSendError::Closed)
    );
}

#[test]
fn orderly_close_reaches_the_peer_with_its_reason() {
    close_from(Side::A);
}

#[test]
fn orderly_close_by_the_other_side_reaches_the_first_with_its_reason() {
    close_from(Side::B);
}

/// A closes after its hello reached B and before B's reached A: B has linked A's routes, so
/// it must hear the close (not take A for a peer that is only away and keep its routes).
#[test]
fn a_close_before_the_peer_s_hello_still_reaches_the_peer() {
    let now = std::time::Instant::now();
    let (mut a, mut b) = by_hand(100, 200);
    a.handle_connect(now, conn(1));
    b.handle_connect(now, conn(1));
    let b_hello: Vec<Bytes> = std::iter::from_fn(|| b.poll_transmit(now)).collect();
    while let Some(frame) = a.poll_transmit(now) {
        b.handle_frame(now, frame);
    }
    assert!(b.is_open() && !a.is_open(), "only B accepted a hello");
    a.close(CloseCode(0), "shutting down");
    assert!(a.is_closed());
    while let Some(frame) = a.poll_transmit(now) {
        b.handle_frame(now, frame);
    }
    assert!(b.is_closed(), "B heard A's close");
    assert!(events(&mut b).iter().any(
        |e| matches!(e, Event::Closed { by_peer: true, reason, .. } if reason == "shutting down")
    ));
    assert!(!b_hello.is_empty());
}

#[test]
fn close_with_a_full_retransmit_buffer_still_reaches_the_peer() {
    let capacity = config(false).retransmit_capacity;
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    assert!(pair.run_until(MINUTE, |p| p.a.is_open() && p.b.is_open()));
    // B never acknowledges again: A's retransmit buffer fills and its queue behind it.
    pair.pause(Side::B);
    let mut received = Vec::new();
    let (accepted, full) = pump(
        &mut pair,
        MINUTE,
        (0, u64::MAX),
        &mut received,
        |p, _, e| e.is_some() && p.a.unacked() == capacity,
    );
    assert!(full);
    pair.a.close(CloseCode(3), "going away");
    let mut closed = None;
    assert!(
        pair.run_until(Duration::from_secs(1), |p| {
            for event in p.events(Side::B) {
                match event {
                    Event::Message { payload, .. } => received.push(number(&payload)),
                    Event::Closed {
                        by_peer: true,
                        code,
                        reason,
                    } => closed = Some((code, reason)),
                    _ => {}
                }
            }
            closed.is_some()
        }),
        "the close went out without waiting for acks"
    );
    assert_eq!(closed, Some((CloseCode(3), "going away".to_owned())));
    // What the buffer held arrived, in order; what was still queued is counted, not lost
    // silently.
    assert_eq!(received, (0..capacity as u64).collect::<Vec<_>>());
    assert_eq!(
        pair.a.stats().unsent_on_close,
        accepted - capacity as u64,
        "every accepted message is delivered or counted"
    );
    assert!(pair.a.is_closed());
}

#[test]
fn keepalive_measures_rtt_and_a_silent_peer_times_out() {
    let sim = SimConfig {
        latency: Duration::from_millis(5),
        ..SimConfig::default()
    };
    let mut pair = pair(Qos::reliable(), false, sim);
    let mut rtt = None;
    assert!(pair.run_until(MINUTE, |p| {
        rtt = p.events(Side::A).into_iter().find_map(|e| match e {
            Event::Rtt(d) => Some(d),
            _ => None,
        });
        rtt.is_some()
    }));
    let rtt = rtt.unwrap();
    // Two one-way latencies of virtual time, plus the frames' time on the 100 MB/s link.
    assert!(
        rtt >= Duration::from_millis(10) && rtt < Duration::from_millis(11),
        "{rtt:?}"
    );
    // B goes silent (its frames vanish): A declares the connection dead after the idle timeout.
    let mut silent = pair;
    silent.b = session(2, 200, config(false));
    let start = silent.now();
    let mut failure = None;
    assert!(silent.run_until(MINUTE, |p| {
        failure = p.events(Side::A).into_iter().find_map(|e| match e {
            Event::Disconnected(f) => Some(f),
            _ => None,
        });
        failure.is_some()
    }));
    let failure = failure.unwrap();
    assert!(
        matches!(
            failure,
            LinkFailure::IdleTimeout(_) | LinkFailure::Protocol(_)
        ),
        "{failure} after {:?}",
        silent.now() - start
    );
}

#[test]
fn a_request_and_its_answer_survive_a_disconnect() {
    use dndm_core::ServiceAd;
    let mut pair = pair(Qos::reliable(), false, SimConfig::default());
    let fingerprint = Fingerprint::of_name("test.Reading");
    let service: Route = "test.Reading@double".parse().unwrap();
    let ad = ServiceAd {
        route: service.clone(),
        request_fingerprint: fingerprint,
        response_route: service.clone(),
        response_fingerprint: fingerprint,
    };
    let now = pair.now();
    pair.b.add_local_service(ad.clone(), now);
    assert!(pair.run_until(MINUTE, |p| {
        p.events(Side::A)
            .contains(&Event::PeerServiceAdded(ad.clone()))
    }));
    pair.a.request(&service, payload(21), 7).unwrap();
    // The link drops before anything is answered; the request is resent on resume.
    pair.disconnect();
    let mut request = None;
    assert!(pair.run_until(MINUTE, |p| {
        request = p.events(Side::B).into_iter().find_map(|e| match e {
            Event::Request { id, payload, .. } => Some((id, payload)),
            _ => None,
        });
        request.is_some()
    }));
    let (id, body) = request.unwrap();
    assert_eq!((id, number(&body)), (7, 21));
    pair.b.respond(&service, id, Ok(payload(42))).unwrap();
    pair.disconnect();
    let mut answer = None;
    assert!(pair.run_until(MINUTE, |p| {
        answer = p.events(Side::A).into_iter().find_map(|e| match e {
            Event::Response { id, result } => Some((id, result)),
            _ => None,
        });
        answer.is_some()
    }));
    let (id, result) = answer.unwrap();
    assert_eq!((id, number(&result.unwrap())), (7, 42));
    // Withdrawing the service reaches the peer; a request for it is refused locally.
    let now = pair.now();
    pair.b.remove_local_service(&service, now);
    assert!(pair.run_until(MINUTE, |p| {
        p.events(Side::A)
            .contains(&Event::PeerServiceRemoved(service.clone()))
    }));
    assert_eq!(
        pair.a.request(&service, payload(1), 8),
        Err(SessionSendError::UnknownRoute(service))
    );
}

#[test]
fn a_withdrawn_intent_still_delivers_what_was_sent_on_it_even_across_a_disconnect() {
    let sim = SimConfig {
        seed: 9,
        ..SimConfig::default()
    };
    let mut pair = pair(Qos::reliable(), false, sim);
    assert!(pair.run_until(MINUTE, |p| p.a.is_open() && p.b.is_open()));
    pair.events(Side::B);
    let mut sent = 0;
    while sent < 300
        && pair
            .a
            .send(&route(), payload(sent), Correlation::None)
            .is_ok()
    {
        sent += 1;
    }
    assert!(sent > 0);
    // The publisher goes away with its messages still queued; then the link drops.
    let now = pair.now();
    pair.a.remove_local_intent(&route(), now);
    assert!(matches!(
        pair.a.send(&route(), payload(0), Correlation::None),
        Err(SessionSendError::UnknownRoute(_))
    ));
    pair.step(now + Duration::from_micros(1));
    pair.disconnect();
    let mut received = Vec::new();
    let mut removed_after = None;
    let done = pair.run_until(MINUTE, |p| {
        for event in p.events(Side::B) {
            match event {
                Event::Message { payload, .. } => received.push(number(&payload)),
                Event::PeerIntentRemoved(r) if r == route() => removed_after = Some(received.len()),
                _ => {}
            }
        }
        removed_after.is_some()
    });
    assert!(done, "the withdrawal reached B");
    assert_eq!(
        received,
        (0..sent).collect::<Vec<_>>(),
        "none lost, none twice"
    );
    assert_eq!(
        removed_after,
        Some(received.len()),
        "the withdrawal came last"
    );
}
