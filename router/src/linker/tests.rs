//! The table alone, with handles that fail the test if the table ever calls them: every
//! effect must come out as a `Change`.
#![allow(clippy::unwrap_used)]

use super::*;

/// A local handle the table must never call.
struct Untouchable;

const CALLED: &str = "the table called a handle; it must only write changes";

impl IntentSlot for Untouchable {
    fn link_local(&self, _: HandleId, _: &Arc<dyn Any + Send + Sync>) -> bool {
        panic!("{CALLED}")
    }
    fn link_peer(&self, _: HandleId, _: PeerId, _: Arc<dyn PayloadSink>, _: usize) {
        panic!("{CALLED}")
    }
    fn unlink(&self, _: HandleId) {
        panic!("{CALLED}")
    }
    fn event(&self, _: LinkEvent) {
        panic!("{CALLED}")
    }
    fn close(&self) {
        panic!("{CALLED}")
    }
    fn subscribers(&self) -> usize {
        panic!("{CALLED}")
    }
    fn counters(&self) -> (u64, u64, Vec<(Undelivered, u64)>) {
        panic!("{CALLED}")
    }
    fn undelivered(&self, _: PeerId, _: &Route, _: u64, _: Undelivered) {
        panic!("{CALLED}")
    }
    fn feedback(&self, _: PeerId, _: &Route, _: dndm_core::SubscriberFeedback) {
        panic!("{CALLED}")
    }
    fn peer_feedback(&self) -> Vec<(PeerId, dndm_core::SubscriberFeedback)> {
        panic!("{CALLED}")
    }
}

impl InterestSlot for Untouchable {
    fn queue_any(&self) -> Arc<dyn Any + Send + Sync> {
        panic!("{CALLED}")
    }
    fn inbox(&self) -> Arc<dyn Inbox> {
        panic!("{CALLED}")
    }
    fn event(&self, _: LinkEvent) {
        panic!("{CALLED}")
    }
    fn close(&self) {
        panic!("{CALLED}")
    }
    fn stats(&self) -> QueueStats {
        panic!("{CALLED}")
    }
}

fn fingerprint(schema: &[u8]) -> Fingerprint {
    Fingerprint::of_schema("test.Reading", schema)
}

fn local_intent(path: &str, schema: &[u8], ty: TypeId) -> IntentEntry {
    IntentEntry::new(
        format!("test.Reading@{path}").parse().unwrap(),
        fingerprint(schema),
        Qos::default(),
        Origin::Local,
        Some(ty),
        IntentSide::Local(Arc::new(Untouchable)),
    )
}

fn local_interest(pattern: &str, schema: &[u8], ty: TypeId) -> InterestEntry {
    InterestEntry::new(
        format!("test.Reading@{pattern}").parse().unwrap(),
        fingerprint(schema),
        Origin::Local,
        Some(ty),
        InterestSide::Local(Arc::new(Untouchable)),
    )
}

fn peer_intent(peer: PeerId, path: &str) -> IntentEntry {
    IntentEntry::new(
        format!("test.Reading@{path}").parse().unwrap(),
        fingerprint(b"v1"),
        Qos::default(),
        Origin::Peer(peer),
        None,
        IntentSide::Peer(Arc::new(PeerIntent::new())),
    )
}

/// The changes, one word each.
fn kinds(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::LinkLocal { .. } => "link-local".to_owned(),
            Change::LinkPeer { .. } => "link-peer".to_owned(),
            Change::FanIn { .. } => "fan-in".to_owned(),
            Change::Unlink { .. } => "unlink".to_owned(),
            Change::UnlinkFanIn { .. } => "unlink-fan-in".to_owned(),
            Change::Notify { event, .. } => match event {
                LinkEvent::Linked { .. } => "notify-linked".to_owned(),
                LinkEvent::Unlinked { .. } => "notify-unlinked".to_owned(),
                LinkEvent::Refused { .. } => "notify-refused".to_owned(),
                _ => "notify-other".to_owned(),
            },
            Change::Close(_) => "close".to_owned(),
            Change::Advertise(change) => format!("advertise {change:?}")
                .split('(')
                .next()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

#[test]
fn a_matching_pair_links_through_changes_only() {
    let mut table = Linker::default();
    let ty = TypeId::of::<u8>();
    let mut out = Vec::new();
    table.add_intent(HandleId(1), local_intent("a.b", b"v1", ty), &mut out);
    table.add_interest(HandleId(2), local_interest("a.*", b"v1", ty), &mut out);
    assert_eq!(
        kinds(&out),
        [
            "advertise IntentAdded",
            "advertise InterestAdded",
            "link-local",
            "notify-linked",
            "notify-linked"
        ]
    );
    let mut out = Vec::new();
    table.remove(HandleId(2), &mut out);
    assert_eq!(
        kinds(&out),
        [
            "unlink",
            "notify-unlinked",
            "close",
            "advertise InterestRemoved"
        ]
    );
    let infos = table.infos();
    assert_eq!((infos.intents.len(), infos.links.len()), (1, 0));
}

#[test]
fn another_schema_or_rust_type_is_refused_and_counted() {
    let mut table = Linker::default();
    let mut out = Vec::new();
    table.add_intent(
        HandleId(1),
        local_intent("x", b"v1", TypeId::of::<u8>()),
        &mut out,
    );
    out.clear();
    table.add_interest(
        HandleId(2),
        local_interest("x", b"v2", TypeId::of::<u8>()),
        &mut out,
    );
    table.add_interest(
        HandleId(3),
        local_interest("x", b"v1", TypeId::of::<u16>()),
        &mut out,
    );
    let refused = kinds(&out)
        .iter()
        .filter(|k| *k == "notify-refused")
        .count();
    assert_eq!(
        refused,
        4,
        "both sides of both pairs are told: {:?}",
        kinds(&out)
    );
    assert!(!kinds(&out).iter().any(|k| k.starts_with("link")));
    assert_eq!(table.counters.fingerprint_mismatches, 1);
    assert_eq!(table.counters.type_mismatches, 1);
}

#[test]
fn a_peers_intent_feeds_local_interests_but_never_a_peers_interest() {
    let (alice, bob) = (
        dndm_core::Keypair::from_seed([1; 32]).peer_id(),
        dndm_core::Keypair::from_seed([2; 32]).peer_id(),
    );
    let mut table = Linker::default();
    let mut out = Vec::new();
    table.add_intent(HandleId(1), peer_intent(alice, "x"), &mut out);
    let sink = Arc::new(PeerIntent::new());
    let peer_interest = InterestEntry::new(
        "test.Reading@x".parse().unwrap(),
        fingerprint(b"v1"),
        Origin::Peer(bob),
        None,
        InterestSide::Peer(sink),
    );
    table.add_interest(HandleId(2), peer_interest, &mut out);
    assert!(
        out.is_empty(),
        "no forwarding between peers: {:?}",
        kinds(&out)
    );
    table.add_interest(
        HandleId(3),
        local_interest("*", b"v1", TypeId::of::<u8>()),
        &mut out,
    );
    assert_eq!(
        kinds(&out),
        ["advertise InterestAdded", "fan-in", "notify-linked"],
        "the peer's intent has no handle to tell"
    );
    let mut out = Vec::new();
    for id in table.peer_entries(&alice) {
        table.remove(id, &mut out);
    }
    assert_eq!(kinds(&out), ["notify-unlinked"]);
}
