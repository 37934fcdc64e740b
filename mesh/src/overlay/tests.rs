//! The dissemination machine on small hand-made topologies, frames carried instantly in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dndm_core::{Route, RoutePattern};

use super::sim::{SimConfig, run};
use super::{Action, Frame, Overlay, OverlayConfig, Seq};

/// Nodes `1..=n`, links added by hand, frames queued per link in order.
struct Net {
    now: Instant,
    nodes: BTreeMap<u32, Overlay<u32>>,
    links: BTreeSet<(u32, u32)>,
    wire: VecDeque<(u32, u32, Frame<u32>)>,
    /// Per node, per origin: the sequence numbers delivered, in order.
    delivered: BTreeMap<u32, BTreeMap<u32, Vec<Seq>>>,
    events: Vec<(u32, Action<u32>)>,
    data_frames: usize,
}

impl Net {
    fn new(n: u32, config: &OverlayConfig) -> Self {
        let nodes = (1..=n)
            .map(|i| (i, Overlay::new(i, config.clone())))
            .collect();
        Self {
            now: Instant::now(),
            nodes,
            links: BTreeSet::new(),
            wire: VecDeque::new(),
            delivered: BTreeMap::new(),
            events: Vec::new(),
            data_frames: 0,
        }
    }

    fn link(&mut self, a: u32, b: u32) {
        self.links.insert((a.min(b), a.max(b)));
        self.node(a).neighbour_up(b);
        self.node(b).neighbour_up(a);
        self.drain();
    }

    fn cut(&mut self, a: u32, b: u32) {
        self.links.remove(&(a.min(b), a.max(b)));
        self.node(a).neighbour_down(b);
        self.node(b).neighbour_down(a);
        self.drain();
    }

    fn node(&mut self, id: u32) -> &mut Overlay<u32> {
        self.nodes.get_mut(&id).expect("a node of the net")
    }

    fn publish(&mut self, origin: u32, count: usize) -> Option<Seq> {
        let payloads = (0..count).map(|i| Bytes::from(vec![i as u8; 4])).collect();
        let seq = self
            .node(origin)
            .publish(&route(origin), payloads, |_, _| Bytes::new());
        self.drain();
        seq
    }

    /// Collects every node's actions and carries frames until the wire is empty.
    fn drain(&mut self) {
        loop {
            self.collect();
            let Some((from, to, frame)) = self.wire.pop_front() else {
                break;
            };
            if self.links.contains(&(from.min(to), from.max(to))) {
                let now = self.now;
                self.node(to).handle(from, frame, now);
            }
        }
    }

    /// Collects actions without carrying any frame (they stay on the wire).
    fn collect(&mut self) {
        let ids: Vec<u32> = self.nodes.keys().copied().collect();
        for id in ids {
            while let Some(action) = self.node(id).poll_action() {
                match action {
                    Action::Send { to, frame } => {
                        if matches!(frame, Frame::Data(_)) {
                            self.data_frames += 1;
                        }
                        self.wire.push_back((id, to, frame));
                    }
                    Action::Deliver { batch, skip, .. } => {
                        let seqs = self
                            .delivered
                            .entry(id)
                            .or_default()
                            .entry(batch.origin)
                            .or_default();
                        seqs.extend(batch.first + skip as Seq..batch.end());
                    }
                    other => self.events.push((id, other)),
                }
            }
        }
    }

    fn got(&self, node: u32, origin: u32) -> Vec<Seq> {
        self.delivered
            .get(&node)
            .and_then(|d| d.get(&origin))
            .cloned()
            .unwrap_or_default()
    }

    fn linked(&self, node: u32) -> bool {
        self.events
            .iter()
            .any(|(n, a)| *n == node && matches!(a, Action::Linked { .. }))
    }

    fn lost(&self, node: u32) -> u64 {
        let lost = self.events.iter().filter_map(|(n, a)| match a {
            Action::Lost { count, .. } if *n == node => Some(*count),
            _ => None,
        });
        lost.sum()
    }

    /// Every node's parent on `origin`'s stream: following parents always ends at the origin.
    fn assert_tree(&self, origin: u32) {
        let route = route(origin);
        for (&id, node) in &self.nodes {
            let mut seen = BTreeSet::from([id]);
            let mut at = node.parent(origin, &route);
            while let Some(parent) = at {
                assert!(seen.insert(parent), "parents of {id} loop through {parent}");
                at = self.nodes[&parent].parent(origin, &route);
            }
        }
    }
}

fn route(origin: u32) -> Route {
    Route::new("robot.Pose", &format!("fleet.{origin}")).expect("a valid route")
}

fn pattern(text: &str) -> RoutePattern {
    text.parse().expect("a valid pattern")
}

fn seqs(range: std::ops::Range<Seq>) -> Vec<Seq> {
    range.collect()
}

#[test]
fn a_relay_carries_a_stream_it_does_not_subscribe_to() {
    let mut net = Net::new(3, &OverlayConfig::default());
    net.link(1, 2);
    net.link(2, 3);
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.node(3).add_interest(pattern("robot.Pose@fleet.*"));
    net.drain();
    assert!(net.linked(3));
    assert_eq!(net.node(3).parent(1, &route(1)), Some(2));
    assert_eq!(net.node(2).children(1, &route(1)), vec![3]);
    assert_eq!(net.publish(1, 3), Some(1));
    assert_eq!(net.publish(1, 2), Some(4));
    assert_eq!(net.got(3, 1), seqs(1..6));
    assert!(net.got(2, 1).is_empty(), "the relay has no subscriber");
    assert_eq!(net.data_frames, 4, "one copy per tree edge per batch");
}

#[test]
fn nobody_in_the_tree_means_nothing_is_numbered() {
    let mut net = Net::new(2, &OverlayConfig::default());
    net.link(1, 2);
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.drain();
    assert_eq!(net.publish(1, 1), None);
    net.node(2).add_interest(pattern("robot.Pose@fleet.1"));
    net.drain();
    assert!(
        net.events
            .iter()
            .any(|(n, a)| *n == 1 && *a == Action::Wanted(route(1)))
    );
    assert_eq!(net.publish(1, 1), Some(1));
    net.node(2).remove_interest(&pattern("robot.Pose@fleet.1"));
    net.drain();
    let unwanted = |net: &Net| {
        net.events
            .iter()
            .any(|(n, a)| *n == 1 && *a == Action::Unwanted(route(1)))
    };
    // The last child left: for a linger, batches are still numbered (and cached).
    assert!(!unwanted(&net));
    let linger = OverlayConfig::default().linger;
    let start = net.now;
    net.node(1).tick(start);
    assert_eq!(net.publish(1, 1), Some(2));
    net.node(1).tick(start + linger / 2);
    assert!(!unwanted(&net));
    net.node(1).tick(start + linger);
    net.drain();
    assert!(unwanted(&net));
    assert_eq!(net.publish(1, 1), None);
}

/// The origin's only child goes away and another node joins a moment later: what the origin
/// published in between reaches the subscriber (nothing is lost silently while no child is
/// there).
#[test]
fn batches_published_while_the_origin_has_no_child_reach_the_next_one() {
    let mut net = Net::new(4, &OverlayConfig::default());
    net.link(1, 2);
    net.link(2, 3);
    net.link(3, 4);
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.node(3).add_interest(pattern("robot.Pose@fleet.1"));
    net.drain();
    assert_eq!(net.publish(1, 2), Some(1));
    assert_eq!(net.node(3).parent(1, &route(1)), Some(2));
    net.cut(1, 2);
    assert!(net.node(1).children(1, &route(1)).is_empty());
    assert_eq!(net.publish(1, 3), Some(3), "still numbered");
    net.link(1, 4);
    assert_eq!(net.node(3).parent(1, &route(1)), Some(4));
    assert_eq!(net.publish(1, 1), Some(6));
    assert_eq!(net.got(3, 1), seqs(1..7));
    assert_eq!(net.lost(3), 0);
}

/// 1 publishes; 4 hears it through 2 and 3. 2 dies with batches in flight: 4 switches to 3,
/// which was not in the tree, and gets the missing batches from 1's cache, none twice.
#[test]
fn a_parent_that_dies_mid_stream_loses_nothing() {
    let mut net = Net::new(4, &OverlayConfig::default());
    for (a, b) in [(1, 2), (1, 3), (2, 4), (3, 4)] {
        net.link(a, b);
    }
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.node(4).add_interest(pattern("robot.Pose@**"));
    net.drain();
    assert_eq!(net.node(4).parent(1, &route(1)), Some(2));
    assert!(
        net.node(3).parent(1, &route(1)).is_none(),
        "3 is not in the tree"
    );
    net.publish(1, 2);
    // Two more batches reach 2 but not 4.
    let payloads = vec![Bytes::from_static(b"x")];
    net.node(1)
        .publish(&route(1), payloads.clone(), |_, _| Bytes::new());
    net.node(1)
        .publish(&route(1), payloads, |_, _| Bytes::new());
    net.collect();
    while let Some((from, to, frame)) = net.wire.pop_front() {
        let now = net.now;
        net.node(to).handle(from, frame, now);
        let ids: Vec<u32> = net.nodes.keys().copied().collect();
        for id in ids.into_iter().filter(|id| *id != 2) {
            while let Some(action) = net.node(id).poll_action() {
                assert!(
                    !matches!(action, Action::Send { .. }),
                    "only 2 has something to send"
                );
            }
        }
    }
    net.cut(1, 2);
    net.cut(2, 4);
    assert_eq!(net.node(4).parent(1, &route(1)), Some(3));
    assert_eq!(net.got(4, 1), seqs(1..5));
    assert_eq!(net.lost(4), 0);
    net.publish(1, 1);
    assert_eq!(net.got(4, 1), seqs(1..6), "exactly once, in order");
    net.assert_tree(1);
}

#[test]
fn what_no_cache_holds_is_reported_lost() {
    let config = OverlayConfig {
        cache_batches: 2,
        ..OverlayConfig::default()
    };
    let mut net = Net::new(4, &config);
    for (a, b) in [(1, 2), (1, 3), (2, 4), (3, 4)] {
        net.link(a, b);
    }
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.node(4).add_interest(pattern("robot.Pose@**"));
    net.drain();
    net.publish(1, 1);
    // 2 goes silent: its frames never leave; 1 publishes five more batches.
    net.links.remove(&(2, 4));
    for _ in 0..5 {
        net.publish(1, 1);
    }
    net.links.insert((2, 4));
    net.cut(1, 2);
    net.cut(2, 4);
    // 1's cache holds batches 5 and 6 only: 2, 3 and 4 are lost, said once.
    assert_eq!(net.lost(4), 3);
    assert_eq!(net.got(4, 1), vec![1, 5, 6]);
}

#[test]
fn a_wildcard_finds_every_publisher() {
    let mut net = Net::new(31, &OverlayConfig::default());
    // A chain of publishers 1..=30, the subscriber 31 at its end: more than a Kademlia
    // provider record holds (20).
    for i in 1..31 {
        net.link(i, i + 1);
    }
    let now = net.now;
    for i in 1..=30 {
        net.node(i).add_intent(route(i), now);
    }
    net.node(31).add_interest(pattern("robot.Pose@fleet.**"));
    net.drain();
    assert_eq!(net.node(31).known().len(), 30);
    for i in 1..=30 {
        net.publish(i, 1);
    }
    for i in 1..=30 {
        assert_eq!(net.got(31, i), vec![1], "publisher {i}");
    }
    let linked = net
        .events
        .iter()
        .filter(|(n, a)| *n == 31 && matches!(a, Action::Linked { .. }));
    assert_eq!(linked.count(), 30);
}

#[test]
fn a_withdrawal_reaches_every_node_and_stays() {
    let mut net = Net::new(3, &OverlayConfig::default());
    net.link(1, 2);
    net.link(2, 3);
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.node(3).add_interest(pattern("robot.Pose@**"));
    net.drain();
    net.node(1).remove_intent(&route(1), now);
    net.drain();
    assert!(net.node(3).known().is_empty());
    assert!(net.node(2).known().is_empty());
    assert!(
        net.events
            .iter()
            .any(|(n, a)| *n == 3 && matches!(a, Action::Unlinked { .. }))
    );
    // A late copy of an older announcement does not bring it back.
    let stale = Frame::Announce {
        origin: 1,
        route: route(1),
        epoch: 1,
        hops: 1,
        alive: true,
    };
    net.node(3).handle(2, stale, now);
    assert!(net.node(3).known().is_empty());
    // Published again: a newer epoch.
    net.node(1).add_intent(route(1), now);
    net.drain();
    assert_eq!(net.node(3).known().len(), 1);
}

#[test]
fn announcements_expire_unless_refreshed() {
    let config = OverlayConfig {
        refresh: Duration::from_secs(1),
        ..OverlayConfig::default()
    };
    let mut net = Net::new(2, &config);
    net.link(1, 2);
    let start = net.now;
    net.node(1).add_intent(route(1), start);
    net.drain();
    // The origin refreshes; the other node keeps the route.
    for s in 1..=5 {
        let now = start + Duration::from_millis(1000 * s + 10);
        net.node(1).tick(now);
        net.node(2).tick(now);
        net.drain();
    }
    assert_eq!(net.node(2).known().len(), 1);
    // The origin vanishes without a word (no link down either): gone after three periods.
    let later = start + Duration::from_secs(9);
    net.node(2).tick(later);
    assert!(net.node(2).known().is_empty());
}

/// A ring of six: cutting links one after another never makes parents loop, and the
/// subscriber keeps getting every batch while a path exists.
#[test]
fn parents_never_loop_on_a_ring_that_breaks() {
    let mut net = Net::new(6, &OverlayConfig::default());
    for i in 1..=6 {
        net.link(i, i % 6 + 1);
    }
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    for i in 2..=6 {
        net.node(i).add_interest(pattern("robot.Pose@fleet.1"));
    }
    net.drain();
    net.publish(1, 1);
    net.assert_tree(1);
    net.cut(1, 2);
    net.assert_tree(1);
    net.publish(1, 1);
    net.cut(4, 5);
    net.assert_tree(1);
    net.publish(1, 1);
    for i in [2, 3, 4] {
        assert_eq!(
            net.got(i, 1),
            vec![1, 2],
            "node {i} is cut off after batch 2"
        );
    }
    for i in [5, 6] {
        assert_eq!(net.got(i, 1), vec![1, 2, 3], "node {i}");
    }
    // The ring heals: the cut-off side catches up from caches, nothing lost or repeated.
    net.link(3, 4);
    net.link(4, 5);
    net.assert_tree(1);
    for i in 2..=6 {
        assert_eq!(net.got(i, 1), vec![1, 2, 3], "node {i}");
        assert_eq!(net.lost(i), 0);
    }
}

#[test]
fn simulated_mesh_delivers_everything_within_the_bound() {
    let mut config = SimConfig::new(120, 8);
    config.messages = 100;
    let report = run(&config);
    assert_eq!(report.misordered, 0, "{report:?}");
    assert_eq!(report.stayers_complete, report.stayers, "{report:?}");
    assert!(report.max_degree <= 8, "{report:?}");
    assert!(
        report.hops_max > 1,
        "a bounded mesh of 120 is multi-hop: {report:?}"
    );
}

#[test]
fn simulated_churn_loses_nothing_for_those_that_stay() {
    let mut config = SimConfig::new(120, 8);
    config.messages = 300;
    config.churn = 0.1;
    config.seed = 7;
    let report = run(&config);
    assert!(report.churned >= 10, "{report:?}");
    assert_eq!(report.misordered, 0, "{report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.stayers_complete, report.stayers, "{report:?}");
    assert!(report.max_degree <= 8, "{report:?}");
}

#[test]
fn simulated_wildcard_subscriber_hears_every_publisher() {
    let mut config = SimConfig::new(100, 8);
    config.publishers = 99;
    config.subscribers = 1;
    config.wildcard = true;
    config.messages = 20;
    let report = run(&config);
    assert_eq!(report.stayers, 1);
    assert_eq!(report.stayers_complete, 1, "{report:?}");
    assert_eq!(report.misordered, 0, "{report:?}");
}

/// A `Join` that never reaches the parent (lost with a link that went down and up) is sent
/// again after `join_retry`, and the subscriber links.
#[test]
fn an_unanswered_join_is_sent_again() {
    let config = OverlayConfig::default();
    let mut net = Net::new(2, &config);
    net.link(1, 2);
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.drain();
    net.node(2).add_interest(pattern("robot.Pose@fleet.1"));
    net.collect();
    let before = net.wire.len();
    net.wire
        .retain(|(from, _, frame)| !(*from == 2 && matches!(frame, Frame::Join { .. })));
    assert_eq!(net.wire.len(), before - 1, "the Join is lost");
    net.drain();
    assert!(!net.linked(2));
    net.node(2).tick(now);
    net.drain();
    assert!(!net.linked(2), "not yet: the retry waits");
    net.node(2).tick(now + config.join_retry);
    net.drain();
    assert!(net.linked(2));
    assert_eq!(net.node(2).stats().joins_retried, 1);
    assert_eq!(net.publish(1, 2), Some(1));
    assert_eq!(net.got(2, 1), seqs(1..3));
}

/// Two subscriptions with one pattern (say, different options): when one goes, the other still
/// receives (the pattern is counted, not a set member).
#[test]
fn a_pattern_stays_while_another_subscription_has_it() {
    let mut net = Net::new(2, &OverlayConfig::default());
    net.link(1, 2);
    let now = net.now;
    net.node(1).add_intent(route(1), now);
    net.node(2).add_interest(pattern("robot.Pose@fleet.*"));
    net.node(2).add_interest(pattern("robot.Pose@fleet.*"));
    net.drain();
    net.node(2).remove_interest(&pattern("robot.Pose@fleet.*"));
    net.drain();
    assert_eq!(net.publish(1, 3), Some(1));
    net.drain();
    assert_eq!(net.got(2, 1), seqs(1..4));
}
