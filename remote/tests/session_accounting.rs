//! Every message a session accepts is accounted for: under random cuts, peer restarts,
//! oversized messages, pauses and a close mid-stream, each accepted message ends in exactly one
//! `Settled` (acknowledged, or sent for best effort) or one `Undelivered` with its reason,
//! per route, never a silent gap. Flow control (a route the peer paused) holds that route back
//! while the others keep flowing.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use dndm_codec::{CloseCode, Correlation, Limits};
use dndm_core::{Fingerprint, IntentAd, InterestAd, Keypair, Qos, Route, RoutePattern};
use dndm_remote::session::{Event, Session, SessionConfig, SessionSendError};
use dndm_remote::sim::{Pair, Side, SimConfig};
use proptest::prelude::*;

const SECOND: Duration = Duration::from_secs(1);

fn reliable() -> Route {
    "test.Reading@robot.imu".parse().unwrap()
}

fn best_effort() -> Route {
    "test.Reading@robot.gps".parse().unwrap()
}

fn fingerprint() -> Fingerprint {
    Fingerprint::of_schema("test.Reading", b"")
}

fn publisher(epoch: u64) -> Session {
    let mut config = SessionConfig::default();
    config.max_batch_messages = 32;
    config.send_queue = 256;
    config.retransmit_capacity = 128;
    let mut session = Session::new(config, Keypair::from_seed([1; 32]), epoch);
    let now = std::time::Instant::now();
    for (route, qos) in [
        (reliable(), Qos::reliable()),
        (best_effort(), Qos::best_effort()),
    ] {
        session.add_local_intent(
            IntentAd {
                route,
                fingerprint: fingerprint(),
                schema: None,
                hashed: None,
                qos,
            },
            now,
        );
    }
    session
}

/// The subscriber accepts frames of at most 4 KiB, so larger messages cannot reach it.
fn subscriber(epoch: u64) -> Session {
    let mut config = SessionConfig::default();
    config.limits = Limits::builder().max_frame_len(4096).build().unwrap();
    let mut session = Session::new(config, Keypair::from_seed([2; 32]), epoch);
    session.add_local_interest(
        InterestAd {
            pattern: RoutePattern::from(reliable()),
            fingerprint: fingerprint(),
            schema: None,
            hashed: None,
            history: 0,
        },
        std::time::Instant::now(),
    );
    session.add_local_interest(
        InterestAd {
            pattern: "test.Reading@robot.gps".parse().unwrap(),
            fingerprint: fingerprint(),
            schema: None,
            hashed: None,
            history: 0,
        },
        std::time::Instant::now(),
    );
    session
}

#[derive(Debug, Clone)]
enum Op {
    /// Send on the reliable (true) or best-effort route, with a payload of this many bytes.
    Send(bool, usize),
    /// Let the network run for this many milliseconds.
    Run(u64),
    /// Cut the connection (it comes back after the simulator's delay).
    Cut,
    /// The subscriber restarts: a new incarnation that never saw what the old one received.
    Restart,
    /// The subscriber pauses (true) or resumes the reliable route.
    Pause(bool),
    /// The connection is cut and the publisher gives up on the subscriber (its grace period
    /// passed); the subscriber comes back later.
    Abandon,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), prop_oneof![9 => 1usize..256, 1 => 4000usize..6000])
            .prop_map(|(r, n)| Op::Send(r, n)),
        3 => (1u64..50).prop_map(Op::Run),
        1 => Just(Op::Cut),
        1 => Just(Op::Restart),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => Just(Op::Abandon),
    ]
}

/// Per route: messages accepted by `send`, settled, reported undelivered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Account {
    accepted: u64,
    settled: u64,
    undelivered: u64,
}

fn tally(accounts: &mut HashMap<Route, Account>, events: Vec<Event>) {
    for event in events {
        match event {
            Event::Settled { route, count } => accounts.entry(route).or_default().settled += count,
            Event::Undelivered { route, count, .. } => {
                accounts.entry(route).or_default().undelivered += count;
            }
            _ => {}
        }
    }
}

/// Runs a script; returns the accounts after a close and how many reliable messages the
/// subscriber received (across incarnations).
fn run(script: &[Op], seed: u64) -> (HashMap<Route, Account>, u64, u64) {
    let sim = SimConfig {
        seed,
        reconnect_after: Duration::from_millis(20),
        ..SimConfig::default()
    };
    let mut pair = Pair::new(publisher(1), subscriber(2), sim);
    pair.connect();
    pair.run_until(SECOND, |p| p.a.is_open() && p.b.is_open());
    let mut accounts: HashMap<Route, Account> = HashMap::new();
    let mut epoch = 2;
    let mut received = 0u64;
    let mut paused = false;
    for op in script {
        match op {
            Op::Send(is_reliable, len) => {
                let route = if *is_reliable {
                    reliable()
                } else {
                    best_effort()
                };
                let payload = Bytes::from(vec![7u8; *len]);
                match pair.a.send(&route, payload, Correlation::None) {
                    Ok(()) => accounts.entry(route).or_default().accepted += 1,
                    Err(SessionSendError::Full | SessionSendError::TooLarge { .. }) => {}
                    Err(e) => panic!("send: {e}"),
                }
            }
            Op::Run(ms) => {
                pair.run_until(Duration::from_millis(*ms), |_| false);
            }
            Op::Cut => pair.disconnect(),
            Op::Restart => {
                pair.disconnect();
                received += messages(pair.events(Side::B));
                epoch += 1;
                pair.b = subscriber(epoch);
                paused = false;
            }
            Op::Abandon => {
                pair.disconnect();
                let now = pair.now();
                pair.a.abandon(now);
            }
            Op::Pause(pause) => {
                let now = pair.now();
                if *pause {
                    pair.b.pause_peer_route(&reliable(), now);
                } else {
                    pair.b.resume_peer_route(&reliable(), now);
                }
                paused = *pause;
            }
        }
        received += messages(pair.events(Side::B));
        tally(&mut accounts, pair.events(Side::A));
        for account in accounts.values() {
            assert!(
                account.settled + account.undelivered <= account.accepted,
                "more outcomes than messages: {account:?}"
            );
        }
    }
    // Let the network settle (resumed, so paused messages may go), then close mid-stream.
    if paused {
        let now = pair.now();
        pair.b.resume_peer_route(&reliable(), now);
    }
    pair.run_until(SECOND, |_| false);
    pair.a.close(CloseCode(0), "done");
    pair.run_until(SECOND, |p| p.a.is_closed());
    received += messages(pair.events(Side::B));
    tally(&mut accounts, pair.events(Side::A));
    (accounts, received, pair.disconnects)
}

/// Reliable messages among `events`.
fn messages(events: Vec<Event>) -> u64 {
    events
        .into_iter()
        .filter(|e| matches!(e, Event::Message { route, .. } if *route == reliable()))
        .count() as u64
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_accepted_message_is_settled_or_reported_exactly_once(
        script in proptest::collection::vec(op(), 1..200),
        seed in any::<u64>(),
    ) {
        let (accounts, received, _) = run(&script, seed);
        for (route, account) in &accounts {
            prop_assert_eq!(
                account.accepted,
                account.settled + account.undelivered,
                "route {}: {:?}", route, account
            );
        }
        // Settled reliable messages were acknowledged: the subscriber received each of them
        // (a restarted subscriber may have received more that it never acknowledged).
        let reliable = accounts.get(&reliable()).copied().unwrap_or_default();
        prop_assert!(received >= reliable.settled, "{} < {:?}", received, reliable);
    }
}

#[test]
fn a_paused_route_waits_while_the_other_flows_then_resumes_in_order() {
    let mut pair = Pair::new(publisher(1), subscriber(2), SimConfig::default());
    pair.connect();
    assert!(pair.run_until(SECOND, |p| p.a.is_open() && p.b.is_open()));
    let now = pair.now();
    pair.b.pause_peer_route(&reliable(), now);
    pair.run_until(SECOND, |_| false);
    assert_eq!(pair.a.stats().pauses_received, 1);
    for n in 0..50u8 {
        pair.a
            .send(&reliable(), Bytes::from(vec![n]), Correlation::None)
            .unwrap();
        pair.a
            .send(&best_effort(), Bytes::from(vec![n]), Correlation::None)
            .unwrap();
    }
    pair.run_until(SECOND, |_| false);
    let got = pair.events(Side::B);
    let (held, flowed): (Vec<_>, Vec<_>) = got
        .iter()
        .filter_map(|e| match e {
            Event::Message { route, payload, .. } => Some((route.clone(), payload[0])),
            _ => None,
        })
        .partition(|(route, _)| *route == reliable());
    assert!(held.is_empty(), "the paused route waited: {held:?}");
    assert_eq!(flowed.len(), 50, "the other route flowed");
    assert_eq!(
        pair.a.queued(),
        50,
        "the paused route's messages wait at the sender"
    );

    // A cut does not lose the pause's messages; the pause itself lasts one connection, and the
    // subscriber announces it again after its hello.
    pair.disconnect();
    pair.run_until(SECOND, |p| p.a.is_open() && p.b.is_open());
    pair.run_until(SECOND, |_| false);
    assert!(
        pair.events(Side::B)
            .iter()
            .all(|e| !matches!(e, Event::Message { route, .. } if *route == reliable())),
        "still paused after the reconnect"
    );
    let now = pair.now();
    pair.b.resume_peer_route(&reliable(), now);
    pair.run_until(SECOND, |_| false);
    let resumed: Vec<u8> = pair
        .events(Side::B)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message { route, payload, .. } if route == reliable() => Some(payload[0]),
            _ => None,
        })
        .collect();
    assert_eq!(resumed, (0..50).collect::<Vec<u8>>(), "in order, none lost");
    assert_eq!(pair.a.queued(), 0);
}
