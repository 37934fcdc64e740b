//! Who a node keeps as neighbours, sans-IO: a small active view of connected peers, bounded by
//! `max_peers`, refilled from a passive view of known peers learned by peer exchange
//! (after HyParView, Leitão et al. 2007, without its random walks).
//!
//! - A node dials known peers while it has fewer than [`MembershipConfig::target`] neighbours,
//!   and one more every shuffle period while it has room (islands do not last). Both sides of a
//!   new connection exchange an [`Offer`] and a sample of the peers they know; a full node
//!   refuses the link, except to a *needy* peer (fewer neighbours than its target),
//!   for which it lets a random neighbour go: newcomers always get in, and a node that lost
//!   most of its neighbours is not shut out by a mesh where everyone else is full.
//! - Each new neighbour gets a sample of the node's views ([`MembershipAction::Exchange`]), and
//!   every [`MembershipConfig::shuffle`] a random neighbour gets one, so passive views stay fresh.
//! - A known peer is forgotten after [`MembershipConfig::max_failures`] failed dials in a row:
//!   nothing is redialled forever. A dial that could not start (a connection to the peer is
//!   there already, this node's connection limit) or that the peer closed before greeting (its
//!   connection limit) is not a failure: the peer rests and stays known.
//! - A full node now and then trades a random neighbour for a known peer
//!   ([`MembershipConfig::swap_one_in`], a *swap*): the peer makes room too. Without it, a group
//!   of full nodes that only know each other stays an island for good.
//!
//! The random choices come from a seeded [`fastrand::Rng`], and time is an input, so a
//! simulation with the same seed takes the same decisions.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::NodeId;

/// Tuning of the membership policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipConfig {
    /// Most neighbours (connections), incoming and outgoing together.
    pub max_peers: usize,
    /// Neighbours a node dials for while it has fewer (below `max_peers`, so that newcomers
    /// find nodes with room).
    pub target: usize,
    /// Most known-but-unconnected peers remembered.
    pub passive: usize,
    /// Peers in one exchange.
    pub exchange: usize,
    /// How often a random neighbour gets an exchange.
    pub shuffle: Duration,
    /// Dials at once.
    pub max_dials: usize,
    /// Failed dials in a row after which a known peer is forgotten.
    pub max_failures: u8,
    /// A dial not answered (`connected`, `dial_failed`) within this long counts as failed:
    /// a connection that opened and closed before the peers greeted never holds a dial slot.
    pub dial_timeout: Duration,
    /// A full node swaps a neighbour for a known peer at one shuffle in this many (0: never).
    pub swap_one_in: u32,
}

impl MembershipConfig {
    /// A policy for at most `max_peers` neighbours (at least 1), dialing up to one less.
    pub fn new(max_peers: usize) -> Self {
        let max_peers = max_peers.max(1);
        Self {
            max_peers,
            target: (max_peers - 1).max(1),
            passive: 64,
            exchange: 8,
            shuffle: Duration::from_secs(10),
            max_dials: 2,
            max_failures: 3,
            dial_timeout: Duration::from_secs(5),
            // A node allowed fewer than 3 neighbours never swaps: the neighbour it lets go
            // (or the peer's) could be left with one or none.
            swap_one_in: if max_peers >= 3 { 4 } else { 0 },
        }
    }
}

/// The first gap between shuffles (it doubles up to [`MembershipConfig::shuffle`]).
const FIRST_SHUFFLE: Duration = Duration::from_secs(1);

/// What a node tells a new peer about itself before either decides whether to keep the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// It has a free neighbour slot.
    pub room: bool,
    /// It has fewer neighbours than its target (a newcomer has none): a full node makes room
    /// for it. The neighbour it lets go is most likely above its own target (full nodes are),
    /// so evictions do not cascade.
    pub needy: bool,
    /// The sender is full and dialed this peer to trade one of its neighbours for it: both
    /// sides take the link, a full one letting a random neighbour go (degrees stay bounded).
    pub swap: bool,
}

/// What the membership policy asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipAction<P> {
    /// Open a connection to the peer (answer with `connected` or `dial_failed`).
    Dial(P),
    /// Close the connection to the peer.
    Disconnect(P),
    /// Tell a neighbour about these peers (answer on the other side: `exchanged`).
    Exchange {
        /// The neighbour.
        to: P,
        /// Peers this node knows.
        peers: Vec<P>,
        /// It answers the neighbour's exchange (and is not answered in turn).
        reply: bool,
    },
}

/// A peer of the passive view.
#[derive(Debug, Clone, Copy, Default)]
struct Known {
    /// Failed dials in a row (unreachable; refusals do not count).
    failures: u8,
    /// It refused us (it was full): not dialed again before this.
    rest_until: Option<Instant>,
}

/// One node's membership policy. See the module docs.
#[derive(Debug)]
pub struct Membership<P> {
    me: P,
    config: MembershipConfig,
    rng: fastrand::Rng,
    active: BTreeSet<P>,
    /// Peers being dialed, and when the dial counts as failed.
    dialing: BTreeMap<P, Instant>,
    /// The peers to start from: known again whenever the node has nobody else to dial.
    bootstrap: BTreeSet<P>,
    /// Known peers, not connected.
    passive: BTreeMap<P, Known>,
    /// The peer dialed for a swap (at most one at a time).
    swapping: Option<P>,
    next_shuffle: Option<Instant>,
    /// The time to the next shuffle: doubling from 1 s up to `config.shuffle`.
    shuffle_gap: Duration,
    actions: VecDeque<MembershipAction<P>>,
    dials: u64,
    dial_failures: u64,
}

impl<P: NodeId> Membership<P> {
    /// The policy of node `me`, its random choices seeded by `seed`.
    pub fn new(me: P, config: MembershipConfig, seed: u64) -> Self {
        let shuffle_gap = FIRST_SHUFFLE.min(config.shuffle);
        Self {
            me,
            config,
            rng: fastrand::Rng::with_seed(seed),
            active: BTreeSet::new(),
            dialing: BTreeMap::new(),
            bootstrap: BTreeSet::new(),
            passive: BTreeMap::new(),
            swapping: None,
            next_shuffle: None,
            shuffle_gap,
            actions: VecDeque::new(),
            dials: 0,
            dial_failures: 0,
        }
    }

    /// The connected neighbours.
    pub fn active(&self) -> &BTreeSet<P> {
        &self.active
    }

    /// Dials asked for, and dials that failed (refusals and time-outs included), so far.
    pub fn dial_counts(&self) -> (u64, u64) {
        (self.dials, self.dial_failures)
    }

    /// Known peers not connected.
    pub fn passive(&self) -> impl Iterator<Item = &P> {
        self.passive.keys()
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<MembershipAction<P>> {
        self.actions.pop_front()
    }

    /// Peers to start from (configured, found on the LAN): known, dialed on the next tick,
    /// and known again whenever the node has no neighbour and no other peer to dial (so a
    /// node whose known peers all failed is never left alone for good).
    pub fn bootstrap(&mut self, peers: impl IntoIterator<Item = P>) {
        for peer in peers {
            if peer != self.me {
                self.bootstrap.insert(peer);
            }
            self.know(peer);
        }
    }

    /// A dial to `peer` is under way (not yet answered).
    pub fn is_dialing(&self, peer: &P) -> bool {
        self.dialing.contains_key(peer)
    }

    /// What this node tells a new peer before either decides ([`Membership::connected`]).
    pub fn offer(&self, to: &P) -> Offer {
        let room = self.active.len() < self.config.max_peers;
        Offer {
            room,
            needy: self.active.len() < self.config.target,
            swap: !room && self.swapping.as_ref() == Some(to),
        }
    }

    /// Whether a peer that made `theirs` takes a node that made `mine`: it has room, or the
    /// node is needy (a newcomer always gets in), or either side asked for a swap. Both sides
    /// compute both verdicts.
    pub fn verdict(theirs: Offer, mine: Offer) -> bool {
        theirs.room || mine.needy || mine.swap || theirs.swap
    }

    /// A connection to `peer`, which offered `theirs`, is up (either direction). Returns this
    /// node's verdict: false when it is full and the peer is not needy (the driver closes the
    /// connection). A full node takes a needy peer and lets a random neighbour go
    /// (HyParView's high-priority join): a newcomer is never shut out, and the evicted
    /// neighbour, below its target, dials someone else.
    pub fn connected(&mut self, peer: P, theirs: Offer) -> bool {
        self.dialing.remove(&peer);
        let swap = theirs.swap || self.swapping == Some(peer);
        if self.swapping == Some(peer) {
            self.swapping = None;
        }
        if peer == self.me || self.active.contains(&peer) {
            return true;
        }
        if self.active.len() >= self.config.max_peers {
            if !theirs.needy && !swap {
                self.know(peer);
                self.actions.push_back(MembershipAction::Disconnect(peer));
                return false;
            }
            let active: Vec<P> = self.active.iter().copied().collect();
            let evicted = active[self.rng.usize(..active.len())];
            self.active.remove(&evicted);
            self.know(evicted);
            self.actions
                .push_back(MembershipAction::Disconnect(evicted));
        }
        self.passive.remove(&peer);
        self.active.insert(peer);
        true
    }

    /// Peers to tell a new peer about (this node first).
    pub fn introduce(&mut self, to: P) -> Vec<P> {
        self.sample(Some(to))
    }

    /// The connection to `peer` went away.
    pub fn disconnected(&mut self, peer: P) {
        if self.active.remove(&peer) {
            self.know(peer);
        }
        self.end_dial(&peer);
    }

    /// The peer refused us as a neighbour (it is full, or closed the connection before the
    /// peers greeted: its connection limit): it stays known (it is not dead, and forgetting
    /// every full peer would leave a node nobody to dial), but is not dialed again for a
    /// shuffle period.
    pub fn refused(&mut self, peer: P, now: Instant) {
        self.active.remove(&peer);
        self.rest(peer, now + self.config.shuffle);
    }

    /// A dial to `peer` could not start or was cut short on this side (a connection to it is
    /// there or being made already, this node's connection limit): not the peer's failure. It
    /// stays known and is not dialed again for a moment.
    pub fn dial_busy(&mut self, peer: P, now: Instant) {
        self.rest(peer, now + FIRST_SHUFFLE);
    }

    /// A dial failed (the peer is unreachable); after `max_failures` in a row the peer is
    /// forgotten.
    pub fn dial_failed(&mut self, peer: P) {
        self.dial_failures += 1;
        self.end_dial(&peer);
        let forget = match self.passive.get_mut(&peer) {
            Some(known) => {
                known.failures = known.failures.saturating_add(1);
                known.failures >= self.config.max_failures
            }
            None => false,
        };
        if forget {
            self.passive.remove(&peer);
        }
    }

    fn end_dial(&mut self, peer: &P) {
        self.dialing.remove(peer);
        if self.swapping.as_ref() == Some(peer) {
            self.swapping = None;
        }
    }

    /// Ends a dial (it counts as failed) and keeps the peer known, resting until `until`.
    fn rest(&mut self, peer: P, until: Instant) {
        if self.dialing.contains_key(&peer) {
            self.dial_failures += 1;
        }
        self.end_dial(&peer);
        self.know(peer);
        if let Some(known) = self.passive.get_mut(&peer) {
            known.rest_until = Some(until);
        }
    }

    /// A neighbour's exchange: its peers become known, and an exchange that is not itself a
    /// reply is answered with a sample of ours (HyParView's shuffle). One-way exchanges taught
    /// a node with few neighbours almost nothing: only the neighbours that picked it told it
    /// anything, and it could stay short of its target with nobody left to dial.
    pub fn exchanged(&mut self, from: P, peers: impl IntoIterator<Item = P>, reply: bool) {
        self.learned(peers);
        if !reply && self.active.contains(&from) {
            let peers = self.sample(Some(from));
            self.actions.push_back(MembershipAction::Exchange {
                to: from,
                peers,
                reply: true,
            });
        }
    }

    /// Peers learned otherwise (a new peer's hello).
    pub fn learned(&mut self, peers: impl IntoIterator<Item = P>) {
        for peer in peers {
            self.know(peer);
        }
    }

    /// Time passed: dials time out, dial toward the target, shuffle with a neighbour.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<P> = self
            .dialing
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            self.dial_failed(peer);
        }
        let due = self.next_shuffle.is_none_or(|at| at <= now);
        let mut candidates = self.candidates(now);
        // Nobody left to dial: the bootstrap peers again (once a shuffle period, so dead ones
        // are not dialed in a loop). Also when the view is full: a full island must keep
        // knowing a way out for its swaps.
        if due && candidates.is_empty() && self.dialing.is_empty() {
            let bootstrap: Vec<P> = self.bootstrap.iter().copied().collect();
            for peer in bootstrap {
                self.know(peer);
            }
            candidates = self.candidates(now);
        }
        while self.active.len() + self.dialing.len() < self.config.target
            && self.dialing.len() < self.config.max_dials
            && !candidates.is_empty()
        {
            let peer = candidates.swap_remove(self.rng.usize(..candidates.len()));
            self.dial(peer, now);
        }
        if due {
            // The first shuffles come sooner (1 s, 2 s, 4 s … up to the period): islands form
            // while a mesh starts, and the rotation dial that dissolves them comes with a
            // shuffle (the 100-node tests linked in 10 s with a fixed period, 4 s with 4 s).
            self.next_shuffle = Some(now + self.shuffle_gap);
            self.shuffle_gap = (self.shuffle_gap * 2).min(self.config.shuffle);
            // Meet one more known peer now and then: with room left, as a plain dial; when
            // full, as a swap (one shuffle in `swap_one_in`). A group of nodes that only know
            // each other does not stay an island.
            let full = self.active.len() >= self.config.max_peers;
            let swap =
                full && self.config.swap_one_in > 0 && self.rng.u32(..self.config.swap_one_in) == 0;
            if (!full || swap) && self.dialing.is_empty() && !candidates.is_empty() {
                let peer = candidates.swap_remove(self.rng.usize(..candidates.len()));
                if full {
                    self.swapping = Some(peer);
                }
                self.dial(peer, now);
            }
            let active: Vec<P> = self.active.iter().copied().collect();
            if !active.is_empty() {
                let to = active[self.rng.usize(..active.len())];
                let peers = self.sample(Some(to));
                self.actions.push_back(MembershipAction::Exchange {
                    to,
                    peers,
                    reply: false,
                });
            }
        }
    }

    /// Known peers that may be dialed now (not resting, not connected, not being dialed).
    fn candidates(&self, now: Instant) -> Vec<P> {
        self.passive
            .iter()
            .filter(|(_, k)| k.rest_until.is_none_or(|until| until <= now))
            .map(|(p, _)| *p)
            .filter(|p| !self.dialing.contains_key(p) && !self.active.contains(p))
            .collect()
    }

    fn dial(&mut self, peer: P, now: Instant) {
        self.dialing.insert(peer, now + self.config.dial_timeout);
        self.dials += 1;
        self.actions.push_back(MembershipAction::Dial(peer));
    }

    /// When [`tick`](Self::tick) next has work (a dial is due whenever the view is short).
    pub fn next_deadline(&self) -> Option<Instant> {
        let dials = self.dialing.values().copied();
        self.next_shuffle.into_iter().chain(dials).min()
    }

    fn know(&mut self, peer: P) {
        if peer == self.me || self.active.contains(&peer) || self.passive.contains_key(&peer) {
            return;
        }
        if self.passive.len() >= self.config.passive {
            let index = self.rng.usize(..self.passive.len());
            if let Some(evicted) = self.passive.keys().nth(index).copied() {
                self.passive.remove(&evicted);
            }
        }
        self.passive.insert(peer, Known::default());
    }

    /// Up to `exchange` peers from both views, this node first, never `to`.
    fn sample(&mut self, to: Option<P>) -> Vec<P> {
        let mut pool: Vec<P> = self
            .active
            .iter()
            .chain(self.passive.keys())
            .copied()
            .filter(|p| Some(*p) != to)
            .collect();
        self.rng.shuffle(&mut pool);
        pool.truncate(self.config.exchange.saturating_sub(1));
        pool.insert(0, self.me);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dials(m: &mut Membership<u32>) -> Vec<u32> {
        let mut dials = Vec::new();
        while let Some(action) = m.poll_action() {
            if let MembershipAction::Dial(peer) = action {
                dials.push(peer);
            }
        }
        dials.sort_unstable();
        dials
    }

    /// A dial that connected and closed without a greeting (nobody calls `connected` or
    /// `dial_failed`) must not hold its slot forever: it times out and the node dials again.
    #[test]
    fn an_unanswered_dial_times_out_and_frees_its_slot() {
        let config = MembershipConfig::new(8);
        let timeout = config.dial_timeout;
        let mut m = Membership::new(0u32, config, 1);
        m.bootstrap([1, 2, 3]);
        let start = Instant::now();
        m.tick(start);
        let first = dials(&mut m);
        assert_eq!(first.len(), 2, "two dials at once");
        m.tick(start + timeout / 2);
        assert!(dials(&mut m).is_empty(), "both slots are taken");
        m.tick(start + timeout);
        let again = dials(&mut m);
        assert!(!again.is_empty(), "the expired dials freed their slots");
        assert!(first.iter().all(|p| !m.is_dialing(p) || again.contains(p)));
    }

    /// A node whose known peers all failed knows its bootstrap peers again: it is never left
    /// alone for good.
    #[test]
    fn a_node_with_nobody_left_to_dial_goes_back_to_its_bootstrap_peers() {
        let mut config = MembershipConfig::new(8);
        config.shuffle = Duration::from_secs(1);
        let mut m = Membership::new(0u32, config, 1);
        m.bootstrap([7]);
        let start = Instant::now();
        let second = Duration::from_secs(1);
        for k in 0..3 {
            m.tick(start + second * k);
            assert_eq!(dials(&mut m), vec![7]);
            m.dial_failed(7);
        }
        assert_eq!(m.passive().count(), 0, "forgotten after three failures");
        m.tick(start + second * 2 + second / 2);
        assert!(dials(&mut m).is_empty(), "not before the next shuffle");
        m.tick(start + second * 3);
        assert_eq!(dials(&mut m), vec![7], "known again: nobody else to dial");
    }

    /// A full peer that refused us is not forgotten (forgetting every full peer left nodes of
    /// a full mesh nobody to dial): it rests for a shuffle period, then is dialed again.
    #[test]
    fn a_peer_that_refused_us_rests_and_stays_known() {
        let config = MembershipConfig::new(8);
        let shuffle = config.shuffle;
        let mut m = Membership::new(0u32, config, 1);
        m.bootstrap([7]);
        let start = Instant::now();
        for round in 0..5u32 {
            let now = start + shuffle * round;
            m.tick(now);
            assert_eq!(dials(&mut m), vec![7], "round {round}");
            m.refused(7, now);
            m.tick(now + shuffle / 2);
            assert!(dials(&mut m).is_empty(), "resting");
        }
        assert_eq!(m.passive().count(), 1, "still known");
    }

    const PLAIN: Offer = Offer {
        room: true,
        needy: false,
        swap: false,
    };

    /// A dial that could not start because of this side (a connection is there already, the
    /// connection limit) is not the peer's failure: however often it happens, the peer stays
    /// known and is dialed again after a moment.
    #[test]
    fn a_busy_dial_never_forgets_the_peer() {
        let config = MembershipConfig::new(8);
        let mut m = Membership::new(0u32, config, 1);
        m.bootstrap([7]);
        let start = Instant::now();
        for round in 0..10u32 {
            let now = start + FIRST_SHUFFLE * 2 * round;
            m.tick(now);
            assert_eq!(dials(&mut m), vec![7], "round {round}");
            m.dial_busy(7, now);
            m.tick(now + FIRST_SHUFFLE / 2);
            assert!(dials(&mut m).is_empty(), "resting");
        }
        assert_eq!(m.passive().count(), 1, "still known");
    }

    /// A full node that knows a peer outside its neighbours dials it, now and then, as a swap;
    /// when the link is up it lets a random neighbour go, so its degree stays bounded. Without
    /// it, full nodes that only know each other stay an island.
    #[test]
    fn a_full_node_swaps_a_neighbour_for_a_known_peer() {
        let config = MembershipConfig::new(4);
        let shuffle = config.shuffle;
        let mut m = Membership::new(0u32, config, 1);
        for peer in 1..=4 {
            assert!(m.connected(peer, PLAIN));
        }
        while m.poll_action().is_some() {}
        m.learned([9]);
        let start = Instant::now();
        let mut dialed = false;
        for round in 0..64u32 {
            m.tick(start + shuffle * round);
            if dials(&mut m) == vec![9] {
                dialed = true;
                break;
            }
        }
        assert!(dialed, "a full node swaps now and then");
        let offer = m.offer(&9);
        assert!(offer.swap && !offer.room, "{offer:?}");
        let full = Offer {
            room: false,
            needy: false,
            swap: false,
        };
        assert!(
            Membership::<u32>::verdict(full, offer),
            "the peer takes a swap"
        );
        assert!(m.connected(9, full), "the swapper takes the peer");
        let mut evicted = Vec::new();
        while let Some(action) = m.poll_action() {
            if let MembershipAction::Disconnect(peer) = action {
                evicted.push(peer);
            }
        }
        assert_eq!(evicted.len(), 1, "one neighbour goes");
        assert!((1..=4).contains(&evicted[0]));
        assert_eq!(m.active().len(), 4, "the degree stays bounded");
        assert!(m.active().contains(&9));
    }

    /// The other side of a swap: a full node takes a swapping peer and lets a neighbour go.
    #[test]
    fn a_full_node_takes_a_swapping_peer() {
        let mut m = Membership::new(0u32, MembershipConfig::new(4), 1);
        for peer in 1..=4 {
            assert!(m.connected(peer, PLAIN));
        }
        while m.poll_action().is_some() {}
        let full = Offer {
            room: false,
            needy: false,
            swap: false,
        };
        assert!(!m.connected(8, full), "a full node refuses a plain peer");
        let swap = Offer { swap: true, ..full };
        assert!(m.connected(9, swap), "and takes a swapping one");
        assert_eq!(m.active().len(), 4);
        assert!(m.active().contains(&9) && !m.active().contains(&8));
    }

    /// A full node whose known peers were all forgotten knows its bootstrap peers again at a
    /// shuffle, so a full island keeps a way out.
    #[test]
    fn a_full_node_with_nobody_to_dial_knows_its_bootstrap_peers_again() {
        let mut m = Membership::new(0u32, MembershipConfig::new(4), 1);
        m.bootstrap([9]);
        m.passive.clear();
        for peer in 1..=4 {
            assert!(m.connected(peer, PLAIN));
        }
        assert_eq!(m.passive().count(), 0);
        m.tick(Instant::now());
        assert_eq!(m.passive().copied().collect::<Vec<_>>(), vec![9]);
    }

    /// An exchange is answered with a sample of ours (a reply is not answered again): a node
    /// with few neighbours learns as much as it tells.
    #[test]
    fn an_exchange_is_answered_once() {
        let mut m = Membership::new(0u32, MembershipConfig::new(8), 1);
        assert!(m.connected(1, PLAIN));
        m.learned([5]);
        while m.poll_action().is_some() {}
        m.exchanged(1, [7, 8], false);
        let answer = m.poll_action();
        let Some(MembershipAction::Exchange { to, peers, reply }) = answer else {
            panic!("answered: {answer:?}");
        };
        assert_eq!((to, reply), (1, true));
        assert_eq!(peers[0], 0, "this node first");
        assert!(peers.contains(&5) && !peers.contains(&1), "{peers:?}");
        assert!(m.passive().any(|p| *p == 7), "learned");
        m.exchanged(1, [9], true);
        assert_eq!(m.poll_action(), None, "a reply is not answered");
        m.exchanged(4, [9], false);
        assert_eq!(m.poll_action(), None, "nor a peer that is not a neighbour");
    }
}
