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
//!   nothing is redialled forever.
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
}

/// What the membership policy asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipAction<P> {
    /// Open a connection to the peer (answer with `connected` or `dial_failed`).
    Dial(P),
    /// Close the connection to the peer.
    Disconnect(P),
    /// Tell a neighbour about these peers (answer on the other side: `learned`).
    Exchange {
        /// The neighbour.
        to: P,
        /// Peers this node knows.
        peers: Vec<P>,
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
    pub fn offer(&self) -> Offer {
        Offer {
            room: self.active.len() < self.config.max_peers,
            needy: self.active.len() < self.config.target,
        }
    }

    /// Whether a peer that made `theirs` takes a node that made `mine`: it has room, or the
    /// node is needy (a newcomer always gets in). Both sides compute both verdicts.
    pub fn verdict(theirs: Offer, mine: Offer) -> bool {
        theirs.room || mine.needy
    }

    /// A connection to `peer`, which offered `theirs`, is up (either direction). Returns this
    /// node's verdict: false when it is full and the peer is not needy (the driver closes the
    /// connection). A full node takes a needy peer and lets a random neighbour go
    /// (HyParView's high-priority join): a newcomer is never shut out, and the evicted
    /// neighbour, below its target, dials someone else.
    pub fn connected(&mut self, peer: P, theirs: Offer) -> bool {
        self.dialing.remove(&peer);
        if peer == self.me || self.active.contains(&peer) {
            return true;
        }
        if self.active.len() >= self.config.max_peers {
            if !theirs.needy {
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
        self.dialing.remove(&peer);
    }

    /// The peer refused us as a neighbour (it is full): it stays known (it is not dead, and
    /// forgetting every full peer would leave a node nobody to dial), but is not dialed again
    /// for a shuffle period.
    pub fn refused(&mut self, peer: P, now: Instant) {
        self.active.remove(&peer);
        self.dialing.remove(&peer);
        self.know(peer);
        if let Some(known) = self.passive.get_mut(&peer) {
            known.rest_until = Some(now + self.config.shuffle);
        }
    }

    /// A dial failed; after `max_failures` in a row the peer is forgotten.
    pub fn dial_failed(&mut self, peer: P) {
        self.dial_failures += 1;
        self.dialing.remove(&peer);
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

    /// A neighbour told us about peers.
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
        // Nobody left to dial while short of the target: the bootstrap peers again (once a
        // shuffle period, so dead ones are not dialed in a loop).
        if due
            && self.active.len() < self.config.target
            && self.dialing.is_empty()
            && self.passive.is_empty()
        {
            let bootstrap: Vec<P> = self.bootstrap.iter().copied().collect();
            for peer in bootstrap {
                self.know(peer);
            }
        }
        let mut candidates: Vec<P> = self
            .passive
            .iter()
            .filter(|(_, k)| k.rest_until.is_none_or(|until| until <= now))
            .map(|(p, _)| *p)
            .filter(|p| !self.dialing.contains_key(p) && !self.active.contains(p))
            .collect();
        while self.active.len() + self.dialing.len() < self.config.target
            && self.dialing.len() < self.config.max_dials
            && !candidates.is_empty()
        {
            let peer = candidates.swap_remove(self.rng.usize(..candidates.len()));
            self.dialing.insert(peer, now + self.config.dial_timeout);
            self.dials += 1;
            self.actions.push_back(MembershipAction::Dial(peer));
        }
        if due {
            // The first shuffles come sooner (1 s, 2 s, 4 s … up to the period): islands form
            // while a mesh starts, and the rotation dial that dissolves them comes with a
            // shuffle (the 100-node tests linked in 10 s with a fixed period, 4 s with 4 s).
            self.next_shuffle = Some(now + self.shuffle_gap);
            self.shuffle_gap = (self.shuffle_gap * 2).min(self.config.shuffle);
            // With room left, meet one more known peer now and then: a group of nodes that
            // only know each other (all at their target) does not stay an island.
            if self.active.len() < self.config.max_peers
                && self.dialing.is_empty()
                && !candidates.is_empty()
            {
                let peer = candidates.swap_remove(self.rng.usize(..candidates.len()));
                self.dialing.insert(peer, now + self.config.dial_timeout);
                self.dials += 1;
                self.actions.push_back(MembershipAction::Dial(peer));
            }
            let active: Vec<P> = self.active.iter().copied().collect();
            if !active.is_empty() {
                let to = active[self.rng.usize(..active.len())];
                let peers = self.sample(Some(to));
                self.actions
                    .push_back(MembershipAction::Exchange { to, peers });
            }
        }
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
}
