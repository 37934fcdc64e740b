//! Linking: types, fingerprints, patterns, late joiners, unlinking, zero copy, snapshots.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use dndm_core::LinkError;
use dndm_router::{LinkEvent, Origin, Router, TryRecvError};
use support::{GUARD, Other, Reading, ReadingTwin, ReadingV2};

fn router() -> Router {
    Router::builder().name("test").build().unwrap()
}

#[tokio::test]
async fn different_types_on_the_same_path_do_not_link() {
    let router = router();
    let mut other = router.subscribe::<Other>("a.b").unwrap();
    let intent = router.publish::<Reading>("a.b").unwrap();
    assert_eq!(intent.subscriber_count(), 0);
    intent.send(Reading::new(0, 1)).await.unwrap();
    assert_eq!(other.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(router.snapshot().links.is_empty());
}

#[tokio::test]
async fn same_name_other_fingerprint_is_refused_and_reported() {
    let router = router();
    let mut v2 = router.subscribe::<ReadingV2>("a.b").unwrap();
    let mut v2_events = v2.events();
    let intent = router.publish::<Reading>("a.b").unwrap();
    assert_eq!(intent.subscriber_count(), 0);
    intent.send(Reading::new(0, 1)).await.unwrap();
    assert_eq!(v2.try_recv().unwrap_err(), TryRecvError::Empty);

    let event = tokio::time::timeout(GUARD, v2_events.recv())
        .await
        .unwrap()
        .unwrap();
    match event {
        LinkEvent::Refused {
            error:
                LinkError::FingerprintMismatch {
                    intent: i,
                    interest,
                    ..
                },
            origin,
            ..
        } => {
            // The default fingerprint: the name and the probed schema.
            assert_eq!(
                i,
                dndm_core::Fingerprint::of_schema(
                    "test.Reading",
                    &<Reading as dndm_core::Message>::schema().encode()
                )
            );
            assert_eq!(
                interest,
                dndm_core::Fingerprint::of_schema("test.Reading", b"v2")
            );
            assert_eq!(origin, Origin::Local);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(router.snapshot().counters.fingerprint_mismatches, 1);
    // The publisher learns it too: the refusal was decided inside `publish`, and the intent's
    // first listener still gets it.
    let mut intent_events = intent.events();
    let event = tokio::time::timeout(GUARD, intent_events.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            event,
            LinkEvent::Refused {
                error: LinkError::FingerprintMismatch { .. },
                origin: Origin::Local,
                ..
            }
        ),
        "{event:?}"
    );
    let second = router.publish::<Reading>("a.b").unwrap();
    drop(second);
    assert_eq!(router.snapshot().counters.fingerprint_mismatches, 2);
}

#[tokio::test]
async fn same_name_and_fingerprint_but_other_rust_type_is_refused() {
    let router = router();
    let _twin = router.subscribe::<ReadingTwin>("a.b").unwrap();
    let intent = router.publish::<Reading>("a.b").unwrap();
    assert_eq!(intent.subscriber_count(), 0);
    assert_eq!(router.snapshot().counters.type_mismatches, 1);
}

#[tokio::test]
async fn n_publishers_m_subscribers_each_get_each_message_once() {
    const N: u32 = 4;
    const M: usize = 5;
    const K: u64 = 50;
    let router = router();
    let mut subs: Vec<_> = (0..M)
        .map(|_| router.subscribe::<Reading>("robot.imu").unwrap())
        .collect();
    let pubs: Vec<_> = (0..N)
        .map(|_| router.publish::<Reading>("robot.imu").unwrap())
        .collect();
    for intent in &pubs {
        assert_eq!(intent.subscriber_count(), M);
    }
    for seq in 0..K {
        for (p, intent) in pubs.iter().enumerate() {
            intent.send(Reading::new(p as u32, seq)).await.unwrap();
        }
    }
    for sub in &mut subs {
        let mut next = vec![0u64; N as usize];
        for _ in 0..(u64::from(N) * K) {
            let r = sub.try_recv().unwrap();
            assert_eq!(r.seq, next[r.publisher as usize], "in order, once");
            next[r.publisher as usize] += 1;
        }
        assert_eq!(
            sub.try_recv().unwrap_err(),
            TryRecvError::Empty,
            "nothing twice"
        );
    }
}

#[tokio::test]
async fn n_publishers_m_overlapping_patterns_each_get_each_matching_message_once_in_order() {
    const K: u64 = 100;
    let router = router();
    let routes = ["a.b.c", "a.x.c", "a.b", "b.b.c"];
    // Each pattern with the publishers (indexes into `routes`) it must hear.
    let expected: [(&str, &[u32]); 5] = [
        ("a.*.c", &[0, 1]),
        ("a.**", &[0, 1, 2]),
        ("a.b.c", &[0]),
        ("*.b.c", &[0, 3]),
        ("**", &[0, 1, 2, 3]),
    ];
    let patterns: Vec<&str> = expected.iter().map(|(p, _)| *p).collect();
    let mut subs: Vec<_> = patterns
        .iter()
        .map(|p| router.subscribe::<Reading>(p).unwrap())
        .collect();
    let pubs: Vec<_> = routes
        .iter()
        .map(|r| router.publish::<Reading>(r).unwrap())
        .collect();
    for seq in 0..K {
        for (p, intent) in pubs.iter().enumerate() {
            intent.send(Reading::new(p as u32, seq)).await.unwrap();
        }
    }
    for ((pattern, matching), sub) in expected.iter().zip(&mut subs) {
        let mut next = vec![0u64; routes.len()];
        for _ in 0..(matching.len() as u64 * K) {
            let r = sub.try_recv().unwrap();
            assert!(
                matching.contains(&r.publisher),
                "{pattern} got {}",
                routes[r.publisher as usize]
            );
            assert_eq!(
                r.seq, next[r.publisher as usize],
                "{pattern}: in order, once"
            );
            next[r.publisher as usize] += 1;
        }
        assert_eq!(
            sub.try_recv().unwrap_err(),
            TryRecvError::Empty,
            "{pattern}: nothing twice"
        );
    }
}

#[tokio::test]
async fn overlapping_patterns_each_get_each_message_once() {
    let router = router();
    let mut exact = router.subscribe::<Reading>("a.b.c").unwrap();
    let mut star = router.subscribe::<Reading>("a.*.c").unwrap();
    let mut rest = router.subscribe::<Reading>("a.**").unwrap();
    let mut unrelated = router.subscribe::<Reading>("a.b.*.d").unwrap();
    let abc = router.publish::<Reading>("a.b.c").unwrap();
    let abcd = router.publish::<Reading>("a.bc").unwrap();
    assert_eq!(abc.subscriber_count(), 3);
    assert_eq!(abcd.subscriber_count(), 1, "only a.** matches a.bc");
    abc.send(Reading::new(0, 7)).await.unwrap();
    abcd.send(Reading::new(1, 8)).await.unwrap();
    for sub in [&mut exact, &mut star] {
        assert_eq!(sub.try_recv().unwrap().seq, 7);
        assert_eq!(sub.try_recv().unwrap_err(), TryRecvError::Empty);
    }
    assert_eq!(rest.try_recv().unwrap().seq, 7);
    assert_eq!(rest.try_recv().unwrap().seq, 8);
    assert_eq!(rest.try_recv().unwrap_err(), TryRecvError::Empty);
    assert_eq!(unrelated.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[tokio::test]
async fn late_subscribers_and_late_publishers_are_linked() {
    let router = router();
    let early_pub = router.publish::<Reading>("x.y").unwrap();
    let mut sub = router.subscribe::<Reading>("x.*").unwrap();
    let late_pub = router.publish::<Reading>("x.z").unwrap();
    assert_eq!(early_pub.subscriber_count(), 1);
    assert_eq!(late_pub.subscriber_count(), 1);
    early_pub.send(Reading::new(0, 1)).await.unwrap();
    late_pub.send(Reading::new(1, 2)).await.unwrap();
    assert_eq!(sub.recv().await.unwrap().seq, 1);
    assert_eq!(sub.recv().await.unwrap().seq, 2);
}

#[tokio::test]
async fn dropping_a_handle_unlinks_and_the_publisher_sees_it() {
    let router = router();
    let intent = router.publish::<Reading>("x.y").unwrap();
    let mut events = intent.events();
    let first = router.subscribe::<Reading>("x.y").unwrap();
    let second = router.subscribe::<Reading>("x.*").unwrap();
    assert_eq!(intent.subscriber_count(), 2);
    let first_id = first.id();
    drop(first);
    assert_eq!(intent.subscriber_count(), 1);
    second.close();
    assert_eq!(intent.subscriber_count(), 0);
    let mut seen = Vec::new();
    while let Some(event) = events.try_recv() {
        seen.push(event);
    }
    assert_eq!(seen.len(), 4, "two links, two unlinks: {seen:?}");
    assert!(
        matches!(&seen[2], LinkEvent::Unlinked { other, origin: Origin::Local } if *other == first_id)
    );
    assert!(router.snapshot().links.is_empty());
    // The interest side sees the publisher go. Its first listener also gets the link made
    // while it was being declared.
    let sub = router.subscribe::<Reading>("x.y").unwrap();
    let mut sub_events = sub.events();
    drop(intent);
    for expected in ["linked", "unlinked"] {
        let event = tokio::time::timeout(GUARD, sub_events.recv())
            .await
            .unwrap()
            .unwrap();
        let kind = match event {
            LinkEvent::Linked { .. } => "linked",
            LinkEvent::Unlinked { .. } => "unlinked",
            _ => "other",
        };
        assert_eq!(kind, expected, "{event:?}");
    }
}

#[tokio::test]
async fn one_send_to_eight_subscribers_copies_nothing() {
    let router = router();
    let mut subs: Vec<_> = (0..8)
        .map(|_| router.subscribe::<Reading>("z").unwrap())
        .collect();
    let intent = router.publish::<Reading>("z").unwrap();
    let message = Arc::new(Reading {
        publisher: 1,
        seq: 2,
        payload: vec![0; 1024],
    });
    intent.send_arc(message.clone()).await.unwrap();
    for sub in &mut subs {
        let got = sub.try_recv().unwrap();
        assert!(
            Arc::ptr_eq(&got, &message),
            "every subscriber holds the sender's allocation"
        );
    }
    // `send` wraps once: all subscribers share that one allocation.
    intent.send(Reading::new(1, 3)).await.unwrap();
    let got: Vec<_> = subs.iter_mut().map(|sub| sub.try_recv().unwrap()).collect();
    assert!(got.iter().all(|m| Arc::ptr_eq(m, &got[0])));
    assert_eq!(
        Arc::strong_count(&got[0]),
        9,
        "one allocation, held by the 8 receivers and the publisher's ring"
    );
}

#[tokio::test]
async fn snapshot_lists_routes_links_depths_and_counters() {
    let router = router();
    let intent = router.publish::<Reading>("s.t").unwrap();
    let sub = router.subscribe::<Reading>("s.*").unwrap();
    intent.send(Reading::new(0, 0)).await.unwrap();
    intent.send(Reading::new(0, 1)).await.unwrap();
    let snap = router.snapshot();
    assert_eq!(snap.node, "test");
    assert!(!snap.closed);
    assert_eq!(snap.intents.len(), 1);
    assert_eq!(snap.intents[0].route.to_string(), "test.Reading@s.t");
    assert_eq!(snap.intents[0].subscribers, 1);
    assert_eq!(snap.intents[0].sent, 2);
    assert_eq!(snap.interests[0].pattern.to_string(), "test.Reading@s.*");
    let queue = snap.interests[0].queue.clone().unwrap();
    assert_eq!((queue.len, queue.accepted, queue.delivered), (2, 2, 0));
    assert_eq!(snap.links.len(), 1);
    assert_eq!(
        (snap.links[0].intent, snap.links[0].interest),
        (intent.id(), sub.id())
    );
    // It is an owned copy: later changes do not show in it.
    drop(sub);
    assert_eq!(snap.links.len(), 1);
    assert!(router.snapshot().links.is_empty());
}

#[tokio::test]
async fn bad_paths_and_patterns_are_rejected_naming_the_problem() {
    let router = router();
    let err = router.publish::<Reading>("a..b").unwrap_err().to_string();
    assert!(err.contains("empty segment at index 1"), "{err}");
    let err = router.publish::<Reading>("a.*").unwrap_err().to_string();
    assert!(err.contains("wildcard"), "{err}");
    let err = router
        .subscribe::<Reading>("a.**.b")
        .unwrap_err()
        .to_string();
    assert!(err.contains("must be the last segment"), "{err}");
    let err = router
        .subscribe_with::<Reading>("a", dndm_router::SubscribeOptions::default().capacity(0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("queue capacity 0 is invalid"), "{err}");
    let err = Router::builder()
        .queue_capacity(0)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("queue_capacity = 0 is invalid"), "{err}");
    let err = Router::builder()
        .name("has space")
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("name = \"has space\" is invalid"), "{err}");
}
