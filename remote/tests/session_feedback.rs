//! Subscriber feedback in the session state machine, driven by hand in explicit time: B's
//! reports on A's route go out when changed, at most every `FEEDBACK_INTERVAL` (a report in
//! between waits for the interval, and only its latest state goes), never when unchanged (a
//! lag below half the capacity counts as none); A turns B's totals into increases, and a total
//! that starts afresh counts from zero.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use dndm_core::{Fingerprint, IntentAd, InterestAd, Qos, Route, SubscriberFeedback};
use dndm_remote::session::{Event, FEEDBACK_INTERVAL, Session, SessionConfig};
use support::{conn, events, keypair, shuttle};

const ROUTE: &str = "test.Status@fleet.robot1";

/// A publishes `ROUTE`, B subscribes; both connected and quiet.
fn sessions(now: Instant) -> (Session, Session, Route) {
    let fingerprint = Fingerprint::of_name("test.Status");
    let route: Route = ROUTE.parse().unwrap();
    let mut a = Session::new(SessionConfig::default(), keypair(1), 1);
    let mut b = Session::new(SessionConfig::default(), keypair(2), 2);
    let intent = IntentAd {
        route: route.clone(),
        fingerprint,
        schema: None,
        hashed: None,
        qos: Qos::reliable(),
    };
    a.add_local_intent(intent, now);
    let interest = InterestAd {
        pattern: "test.Status@fleet.*".parse().unwrap(),
        fingerprint,
        schema: None,
        hashed: None,
        history: 0,
    };
    b.add_local_interest(interest, now);
    a.handle_connect(now, conn(1));
    b.handle_connect(now, conn(1));
    shuttle(&mut a, &mut b, now);
    assert!(a.is_open() && b.is_open());
    events(&mut a);
    events(&mut b);
    (a, b, route)
}

fn dropped(oldest: u64, lag: u64) -> SubscriberFeedback {
    SubscriberFeedback {
        dropped_oldest: oldest,
        dropped_newest: 0,
        lag,
        capacity: 8,
    }
}

/// The feedback events A reported.
fn feedback(a: &mut Session) -> Vec<SubscriberFeedback> {
    events(a)
        .into_iter()
        .filter_map(|event| match event {
            Event::Feedback { feedback, .. } => Some(feedback),
            _ => None,
        })
        .collect()
}

#[test]
fn reports_are_rate_limited_deduplicated_and_turned_into_increases() {
    let t0 = Instant::now();
    let (mut a, mut b, route) = sessions(t0);

    // The first report goes at once.
    b.report_feedback(&route, dropped(3, 8), t0);
    shuttle(&mut a, &mut b, t0);
    assert_eq!(feedback(&mut a), [dropped(3, 8)]);

    // Two more within the interval: none goes yet, and the session wants a timer.
    let t1 = t0 + Duration::from_millis(10);
    b.report_feedback(&route, dropped(5, 8), t1);
    b.report_feedback(&route, dropped(9, 6), t1);
    shuttle(&mut a, &mut b, t1);
    assert!(feedback(&mut a).is_empty());
    let due = t0 + FEEDBACK_INTERVAL;
    assert!(b.poll_timeout().unwrap() <= due);

    // At the interval, the latest state goes: A sees the increase since the last report.
    b.handle_timeout(due);
    shuttle(&mut a, &mut b, due);
    assert_eq!(feedback(&mut a), [dropped(6, 6)]);

    // The same state again is not sent.
    let t2 = due + FEEDBACK_INTERVAL * 2;
    b.report_feedback(&route, dropped(9, 6), t2);
    shuttle(&mut a, &mut b, t2);
    assert!(feedback(&mut a).is_empty());

    // Below half full the subscriber keeps up: its lag goes as 0, once, and changes of it
    // are not sent again.
    let t3 = t2 + FEEDBACK_INTERVAL * 2;
    b.report_feedback(&route, dropped(9, 3), t3);
    shuttle(&mut a, &mut b, t3);
    assert_eq!(feedback(&mut a), [dropped(0, 0)]);
    let t4 = t3 + FEEDBACK_INTERVAL * 2;
    b.report_feedback(&route, dropped(9, 2), t4);
    shuttle(&mut a, &mut b, t4);
    assert!(feedback(&mut a).is_empty());

    // A total below the last one (the sink was made anew) counts from zero.
    b.report_feedback(&route, dropped(2, 1), t4);
    shuttle(&mut a, &mut b, t4);
    assert_eq!(feedback(&mut a), [dropped(2, 0)]);
}

#[test]
fn feedback_on_a_route_the_peer_does_not_declare_is_not_sent() {
    let t0 = Instant::now();
    let (mut a, mut b, _) = sessions(t0);
    let other: Route = "test.Status@fleet.robot2".parse().unwrap();
    b.report_feedback(&other, dropped(1, 1), t0);
    assert_eq!(shuttle(&mut a, &mut b, t0), 0);
    assert!(feedback(&mut a).is_empty());
}
