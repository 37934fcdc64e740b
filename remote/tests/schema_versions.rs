//! Two nodes with two versions of one protobuf message (`robot.Imu`) over a remote link: v1 and
//! v2 (a field added) link with `Compatible` on both sides and exchange messages, each ignoring
//! or defaulting the field it does not know; v1 and v3 (field 2 retyped) are refused on both
//! sides with an event naming field 2, and nothing is delivered. Run with prost-build output and
//! with hand-derived structs.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use dndm_core::schema::FieldPath;
use dndm_core::{Compatibility, LinkError, Message};
use dndm_router::{LinkEvent, LinkEvents, SendErrorKind, TryRecvError};
use support::linked_pair as pair;

const GUARD: Duration = Duration::from_secs(60);

/// The next event of a handle.
async fn next_link_event(events: &mut LinkEvents) -> LinkEvent {
    tokio::time::timeout(GUARD, events.recv())
        .await
        .expect("an event within the guard")
        .unwrap()
}

fn compatible(added: &[u32], removed: &[u32]) -> Compatibility {
    let paths = |numbers: &[u32]| numbers.iter().map(|n| FieldPath(vec![*n])).collect();
    Compatibility::Compatible {
        added: paths(added),
        removed: paths(removed),
    }
}

/// Both sides report a link of this compatibility.
async fn assert_linked(
    publisher: &mut LinkEvents,
    subscriber: &mut LinkEvents,
    expected: &Compatibility,
) {
    for events in [publisher, subscriber] {
        match next_link_event(events).await {
            LinkEvent::Linked { compatibility, .. } => assert_eq!(&compatibility, expected),
            other => panic!("expected Linked, got {other:?}"),
        }
    }
}

/// Both sides report a refusal naming field 2.
async fn assert_refused_on_field_2(publisher: &mut LinkEvents, subscriber: &mut LinkEvents) {
    for events in [publisher, subscriber] {
        match next_link_event(events).await {
            LinkEvent::Refused {
                error:
                    LinkError::SchemaConflict {
                        type_name,
                        conflict,
                    },
                ..
            } => {
                assert_eq!(type_name, "robot.Imu");
                assert_eq!(conflict.field, FieldPath(vec![2]));
                assert!(
                    conflict.to_string().starts_with("field 2 is "),
                    "{conflict}"
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

macro_rules! versions {
    ($name:ident, $kind:ident) => {
        mod $name {
            use super::*;
            use dndm_test_support::imu::$kind::{v1, v2, v3};

            #[tokio::test(start_paused = true)]
            async fn v1_publishes_to_v2_which_defaults_the_new_field() {
                let (a, b) = pair().await;
                let mut subscriber = b.subscribe::<v2::Imu>("imu").unwrap();
                let mut subscriber_events = subscriber.events();
                let publisher = a.publish::<v1::Imu>("imu").unwrap();
                let mut publisher_events = publisher.events();
                publisher.wait_for_interest(GUARD).await.unwrap();
                // From v1's side, v2 has field 4 that v1 does not write.
                let expected = compatible(&[], &[4]);
                assert_linked(&mut publisher_events, &mut subscriber_events, &expected).await;
                for seq in 0..10u64 {
                    let message = v1::Imu {
                        seq,
                        ax: 1.5,
                        frame: "base".into(),
                    };
                    publisher.send(message).await.unwrap();
                }
                for seq in 0..10u64 {
                    let got = tokio::time::timeout(GUARD, subscriber.recv())
                        .await
                        .unwrap()
                        .unwrap();
                    assert_eq!(
                        *got,
                        v2::Imu {
                            seq,
                            ax: 1.5,
                            frame: "base".into(),
                            temperature: 0.0,
                        }
                    );
                }
                assert_eq!(a.snapshot().counters.compatible_links, 1);
                assert_eq!(b.snapshot().counters.compatible_links, 1);
                a.close().await;
                b.close().await;
            }

            #[tokio::test(start_paused = true)]
            async fn v2_publishes_to_v1_which_ignores_the_new_field() {
                let (a, b) = pair().await;
                let mut subscriber = b.subscribe::<v1::Imu>("imu").unwrap();
                let mut subscriber_events = subscriber.events();
                let publisher = a.publish::<v2::Imu>("imu").unwrap();
                let mut publisher_events = publisher.events();
                publisher.wait_for_interest(GUARD).await.unwrap();
                let expected = compatible(&[4], &[]);
                assert_linked(&mut publisher_events, &mut subscriber_events, &expected).await;
                let message = v2::Imu {
                    seq: 7,
                    ax: -2.25,
                    frame: "arm".into(),
                    temperature: 36.6,
                };
                publisher.send(message).await.unwrap();
                let got = tokio::time::timeout(GUARD, subscriber.recv())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    *got,
                    v1::Imu {
                        seq: 7,
                        ax: -2.25,
                        frame: "arm".into(),
                    }
                );
                a.close().await;
                b.close().await;
            }

            #[tokio::test(start_paused = true)]
            async fn v1_and_v3_are_refused_on_both_sides_naming_the_field() {
                for v3_publishes in [false, true] {
                    let (a, b) = pair().await;
                    if v3_publishes {
                        let mut subscriber = b.subscribe::<v1::Imu>("imu").unwrap();
                        let mut subscriber_events = subscriber.events();
                        let publisher = a.publish::<v3::Imu>("imu").unwrap();
                        let mut publisher_events = publisher.events();
                        assert_refused_on_field_2(&mut publisher_events, &mut subscriber_events)
                            .await;
                        let message = v3::Imu {
                            seq: 1,
                            ax: "garbage?".into(),
                            frame: "x".into(),
                        };
                        let refused = publisher.try_send(message).unwrap_err();
                        assert_eq!(refused.kind(), SendErrorKind::NoSubscribers);
                        assert_eq!(subscriber.try_recv().unwrap_err(), TryRecvError::Empty);
                    } else {
                        let mut subscriber = b.subscribe::<v3::Imu>("imu").unwrap();
                        let mut subscriber_events = subscriber.events();
                        let publisher = a.publish::<v1::Imu>("imu").unwrap();
                        let mut publisher_events = publisher.events();
                        assert_refused_on_field_2(&mut publisher_events, &mut subscriber_events)
                            .await;
                        let message = v1::Imu {
                            seq: 1,
                            ax: 1.0,
                            frame: "x".into(),
                        };
                        let refused = publisher.try_send(message).unwrap_err();
                        assert_eq!(refused.kind(), SendErrorKind::NoSubscribers);
                        assert_eq!(subscriber.try_recv().unwrap_err(), TryRecvError::Empty);
                    }
                    assert_eq!(a.snapshot().counters.schema_conflicts, 1);
                    assert_eq!(b.snapshot().counters.schema_conflicts, 1);
                    a.close().await;
                    b.close().await;
                }
            }

            #[test]
            fn the_versions_differ_in_fingerprint_and_schema() {
                assert_ne!(v1::Imu::fingerprint(), v2::Imu::fingerprint());
                assert_ne!(v1::Imu::fingerprint(), v3::Imu::fingerprint());
                assert_eq!(v2::Imu::schema().fields().len(), 4);
            }
        }
    };
}

versions!(prost_build_types, built);
versions!(hand_derived_types, derived);

#[test]
fn prost_build_and_hand_derived_types_have_one_schema() {
    use dndm_test_support::imu::{built, derived};
    assert_eq!(built::v1::Imu::schema(), derived::v1::Imu::schema());
    assert_eq!(
        built::v2::Imu::fingerprint(),
        derived::v2::Imu::fingerprint()
    );
    assert_eq!(
        built::v3::Imu::fingerprint(),
        derived::v3::Imu::fingerprint()
    );
}
