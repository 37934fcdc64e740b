//! A peer's declared schemas cost what their distinct bytes cost: declarations of one schema
//! share one copy, and a peer that declares more than `MAX_PEER_SCHEMA_BYTES` of distinct
//! schemas is cut off (over the routes budget), however it spreads them over routes.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Instant;

use dndm_core::schema::{Field, Kind};
use dndm_core::{Fingerprint, IntentAd, Qos, Schema};
use dndm_remote::session::{Event, LinkFailure, MAX_PEER_SCHEMA_BYTES, Session, SessionConfig};
use support::{conn, events, keypair, shuttle};

/// A schema of `fields` fields (3 to 4 bytes each), different for each `tag`.
fn schema(tag: u32, fields: u32) -> Arc<Schema> {
    let fields = (0..fields).map(|i| Field {
        number: 1 + tag * 10_000 + i,
        kind: Kind::Varint64,
        repeated: false,
    });
    Arc::new(Schema::from_fields(fields))
}

fn intent(n: u32, schema: Arc<Schema>) -> IntentAd {
    IntentAd {
        route: format!("test.Big@r{n}").parse().unwrap(),
        fingerprint: Fingerprint::of_name("test.Big"),
        schema: Some(schema),
        hashed: None,
        qos: Qos::reliable(),
    }
}

fn connected(now: Instant) -> (Session, Session) {
    let mut a = Session::new(SessionConfig::default(), keypair(1), 1);
    let mut b = Session::new(SessionConfig::default(), keypair(2), 2);
    a.handle_connect(now, conn(1));
    b.handle_connect(now, conn(1));
    shuttle(&mut a, &mut b, now);
    assert!(a.is_open() && b.is_open());
    (a, b)
}

#[test]
fn declarations_of_one_schema_share_one_copy() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    events(&mut b);
    for n in 0..3 {
        // Equal schemas, separate copies at the sender.
        a.add_local_intent(intent(n, schema(1, 50)), now);
    }
    shuttle(&mut a, &mut b, now);
    let schemas: Vec<Arc<Schema>> = events(&mut b)
        .into_iter()
        .filter_map(|event| match event {
            Event::PeerIntentAdded(ad) => ad.schema,
            _ => None,
        })
        .collect();
    assert_eq!(schemas.len(), 3);
    assert!(Arc::ptr_eq(&schemas[0], &schemas[1]) && Arc::ptr_eq(&schemas[1], &schemas[2]));
}

#[test]
fn a_peer_declaring_too_many_distinct_schemas_is_cut_off() {
    let now = Instant::now();
    let (mut a, mut b) = connected(now);
    events(&mut b);
    // Schemas of ~14 KB each (3,500 fields of 4 bytes), every one different.
    let needed = MAX_PEER_SCHEMA_BYTES / (3500 * 4) + 2;
    for n in 0..needed as u32 {
        a.add_local_intent(intent(n, schema(n, 3500)), now);
        shuttle(&mut a, &mut b, now);
        if !b.is_open() {
            break;
        }
    }
    let failure = events(&mut b).into_iter().find_map(|event| match event {
        Event::Disconnected(failure) => Some(failure),
        _ => None,
    });
    assert!(
        matches!(failure, Some(LinkFailure::OverBudget { limit, .. }) if limit == MAX_PEER_SCHEMA_BYTES),
        "{failure:?}"
    );
}
