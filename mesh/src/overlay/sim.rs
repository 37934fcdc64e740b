//! A many-node simulation of the mesh policy and multi-hop delivery in virtual time: no
//! sockets, no sleeps, one seeded RNG, so a run is repeatable. Links are reliable and ordered
//! with a fixed one-way latency each (as a TCP connection), drawn per pair.
//!
//! Each node runs the real [`Overlay`] and [`Membership`] machines; the simulator carries their
//! frames and connections. Nodes start one after another, each bootstrapped with one random
//! earlier node; publishers publish at a steady interval; a fraction of the other nodes leaves
//! and rejoins while they do ("churn"). [`run`] reports delivery, hops, duplicates and how long
//! a joining node takes to be linked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dndm_core::{Route, RoutePattern};

use super::membership::{Membership, MembershipAction, MembershipConfig};
use super::{Action, Frame, Overlay, OverlayConfig, Seq};

/// One simulated run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SimConfig {
    /// Nodes in all.
    pub nodes: usize,
    /// The connection bound of every node.
    pub max_peers: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// One-way link latency, drawn per pair from this range.
    pub latency: (Duration, Duration),
    /// Nodes `0..publishers` publish one route each, `robot.Pose@fleet.<i>`.
    pub publishers: usize,
    /// The last `subscribers` nodes subscribe.
    pub subscribers: usize,
    /// Subscribers subscribe to `robot.Pose@fleet.**` (every publisher); else to publisher 0's
    /// route only.
    pub wildcard: bool,
    /// Messages per publisher.
    pub messages: u64,
    /// Time between two messages of a publisher.
    pub interval: Duration,
    /// Fraction of the nodes that are neither publisher nor measured that leave during
    /// publishing and rejoin after `downtime`.
    pub churn: f64,
    /// How long a leaving node stays away.
    pub downtime: Duration,
    /// Time between two node starts.
    pub join_spacing: Duration,
    /// Time after the last start before publishing begins.
    pub settle: Duration,
    /// The dissemination machine's tuning.
    pub overlay: OverlayConfig,
}

impl SimConfig {
    /// `nodes` nodes with at most `max_peers` neighbours each; one publisher and every other
    /// node subscribed, 100 messages, no churn.
    pub fn new(nodes: usize, max_peers: usize) -> Self {
        Self {
            nodes,
            max_peers,
            seed: 1,
            latency: (Duration::from_millis(1), Duration::from_millis(20)),
            publishers: 1,
            subscribers: nodes.saturating_sub(1),
            wildcard: false,
            messages: 100,
            interval: Duration::from_millis(10),
            churn: 0.0,
            downtime: Duration::from_secs(2),
            join_spacing: Duration::from_millis(20),
            settle: Duration::from_secs(5),
            overlay: OverlayConfig::default(),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SimReport {
    /// Subscribers that never left, and how many of them got every message of every publisher
    /// they match exactly once, in order.
    pub stayers: usize,
    /// Of those, the ones with a complete, ordered, duplicate-free stream.
    pub stayers_complete: usize,
    /// Messages delivered to stayers ÷ messages they should get.
    pub delivery_ratio: f64,
    /// Messages reported lost to stayers.
    pub lost: u64,
    /// Deliveries out of order or twice (must be 0).
    pub misordered: u64,
    /// Hops travelled per delivery: median and 99th percentile.
    pub hops_p50: u8,
    /// 99th percentile of hops.
    pub hops_p99: u8,
    /// Largest number of hops.
    pub hops_max: u8,
    /// Batch copies sent over links per published message.
    pub transmissions_per_message: f64,
    /// Copies received again (already held) per published message.
    pub duplicates_per_message: f64,
    /// Nodes that joined (at start or after leaving) and how long until they were linked to
    /// the publisher: median and 99th percentile.
    pub joins_measured: usize,
    /// Median time from a node's start to its subscription being linked.
    pub convergence_p50: Duration,
    /// 99th percentile of the same.
    pub convergence_p99: Duration,
    /// Rejoined nodes (churn) and how long until linked again: median.
    pub rejoin_p50: Duration,
    /// Most neighbours any node had at any time.
    pub max_degree: usize,
    /// Frames of every kind sent.
    pub frames: u64,
    /// Leaves and rejoins performed.
    pub churned: usize,
    /// Virtual time simulated.
    pub elapsed: Duration,
}

type Id = u32;

#[derive(Debug)]
enum Event {
    Start(Id),
    Tick(Id),
    Publish(Id),
    Connect(Id, Id),
    Frame {
        to: Id,
        from: Id,
        link: u64,
        frame: Frame<Id>,
    },
    Exchange {
        to: Id,
        from: Id,
        peers: Vec<Id>,
        reply: bool,
    },
    Down {
        node: Id,
        peer: Id,
        link: u64,
    },
    Leave(Id),
}

struct Node {
    overlay: Overlay<Id>,
    membership: Membership<Id>,
    alive: bool,
    started: Duration,
    rejoin: bool,
    /// Next expected sequence number per origin, once linked.
    next: HashMap<Id, Seq>,
    linked: bool,
    delivered: u64,
    incarnation: u32,
}

struct Sim {
    config: SimConfig,
    base: Instant,
    now: Duration,
    rng: fastrand::Rng,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    events: HashMap<usize, Event>,
    order: u64,
    nodes: Vec<Node>,
    /// Live links, keyed by the lower id first, with a generation.
    links: HashMap<(Id, Id), u64>,
    link_gen: u64,
    published: HashMap<Id, u64>,
    hops: Vec<u8>,
    misordered: u64,
    lost: u64,
    frames: u64,
    data_frames: u64,
    convergence: Vec<Duration>,
    rejoins: Vec<Duration>,
    max_degree: usize,
    churned: usize,
    left: Vec<bool>,
}

const TICK: Duration = Duration::from_millis(100);

/// Runs a simulation and reports what it measured.
pub fn run(config: &SimConfig) -> SimReport {
    let mut sim = Sim::new(config.clone());
    sim.run()
}

fn route(i: Id) -> Route {
    Route::new("robot.Pose", &format!("fleet.{i}")).expect("a valid route")
}

impl Sim {
    fn new(config: SimConfig) -> Self {
        let nodes = (0..config.nodes as Id)
            .map(|i| Self::node(&config, i, 0))
            .collect();
        let left = vec![false; config.nodes];
        Self {
            rng: fastrand::Rng::with_seed(config.seed),
            config,
            base: Instant::now(),
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            order: 0,
            nodes,
            links: HashMap::new(),
            link_gen: 0,
            published: HashMap::new(),
            hops: Vec::new(),
            misordered: 0,
            lost: 0,
            frames: 0,
            data_frames: 0,
            convergence: Vec::new(),
            rejoins: Vec::new(),
            max_degree: 0,
            churned: 0,
            left,
        }
    }

    fn node(config: &SimConfig, id: Id, incarnation: u32) -> Node {
        let seed = config.seed ^ (u64::from(id) << 20) ^ u64::from(incarnation);
        Node {
            overlay: Overlay::new(id, config.overlay.clone()),
            membership: Membership::new(id, MembershipConfig::new(config.max_peers), seed),
            alive: false,
            started: Duration::ZERO,
            rejoin: false,
            next: HashMap::new(),
            linked: false,
            delivered: 0,
            incarnation,
        }
    }

    fn at(&mut self, delay: Duration, event: Event) {
        self.order += 1;
        let key = self.order as usize;
        self.events.insert(key, event);
        self.queue
            .push(Reverse((self.now + delay, self.order, key)));
    }

    fn latency(&self, a: Id, b: Id) -> Duration {
        let (lo, hi) = self.config.latency;
        let span = hi.saturating_sub(lo).as_micros() as u64 + 1;
        let mix =
            (u64::from(a.min(b)) << 32 | u64::from(a.max(b))).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        lo + Duration::from_micros((mix ^ self.config.seed) % span)
    }

    fn subscriber(&self, id: Id) -> bool {
        (id as usize) >= self.config.nodes - self.config.subscribers
    }

    fn run(&mut self) -> SimReport {
        let config = self.config.clone();
        for i in 0..config.nodes as Id {
            self.at(config.join_spacing * i, Event::Start(i));
        }
        let publish_at = config.join_spacing * config.nodes as u32 + config.settle;
        for p in 0..config.publishers as Id {
            self.at(publish_at, Event::Publish(p));
        }
        let publishing = config.interval * config.messages as u32;
        let mut movable: Vec<Id> = (config.publishers as Id..config.nodes as Id).collect();
        let churners = ((config.nodes - config.publishers) as f64 * config.churn).round() as usize;
        self.rng.shuffle(&mut movable);
        for &node in movable.iter().take(churners) {
            self.left[node as usize] = true;
            let offset = Duration::from_micros(self.rng.u64(..=publishing.as_micros() as u64 / 2));
            self.at(publish_at + offset, Event::Leave(node));
        }
        let end = publish_at + publishing + config.downtime + Duration::from_secs(10);
        while let Some(Reverse((at, _, key))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            if let Some(event) = self.events.remove(&key) {
                self.step(event);
            }
        }
        self.report()
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Start(id) => self.start(id),
            Event::Tick(id) => {
                let node = &mut self.nodes[id as usize];
                if !node.alive {
                    return;
                }
                let now = self.base + self.now;
                node.membership.tick(now);
                node.overlay.tick(now);
                self.drain(id);
                self.at(TICK, Event::Tick(id));
            }
            Event::Publish(id) => {
                let sent = self.published.get(&id).copied().unwrap_or(0);
                if sent >= self.config.messages || !self.nodes[id as usize].alive {
                    return;
                }
                let payload = Bytes::from(vec![0u8; 8]);
                let seq =
                    self.nodes[id as usize]
                        .overlay
                        .publish(&route(id), vec![payload], |_, _| Bytes::new());
                if seq.is_some() {
                    self.published.insert(id, sent + 1);
                }
                self.drain(id);
                self.at(self.config.interval, Event::Publish(id));
            }
            Event::Connect(a, b) => self.connect(a, b),
            Event::Frame {
                to,
                from,
                link,
                frame,
            } => {
                if self.links.get(&pair(to, from)) != Some(&link) || !self.nodes[to as usize].alive
                {
                    return;
                }
                let now = self.base + self.now;
                self.nodes[to as usize].overlay.handle(from, frame, now);
                self.drain(to);
            }
            Event::Exchange {
                to,
                from,
                peers,
                reply,
            } => {
                if self.nodes[to as usize].alive {
                    let membership = &mut self.nodes[to as usize].membership;
                    membership.exchanged(from, peers, reply);
                    self.drain(to);
                }
            }
            Event::Down { node, peer, link } => {
                let _ = link;
                let n = &mut self.nodes[node as usize];
                if n.alive {
                    n.membership.disconnected(peer);
                    n.overlay.neighbour_down(peer);
                    self.drain(node);
                }
            }
            Event::Leave(id) => self.leave(id),
        }
    }

    fn start(&mut self, id: Id) {
        let incarnation = self.nodes[id as usize].incarnation;
        let rejoin = incarnation > 0;
        let mut node = Self::node(&self.config, id, incarnation);
        node.alive = true;
        node.started = self.now;
        node.rejoin = rejoin;
        let alive: Vec<Id> = (0..self.config.nodes as Id)
            .filter(|i| *i != id && self.nodes[*i as usize].alive)
            .collect();
        // One random earlier (live) node to start from.
        let earlier: Vec<Id> = alive
            .iter()
            .copied()
            .filter(|i| *i < id || rejoin)
            .collect();
        if !earlier.is_empty() {
            node.membership
                .bootstrap([earlier[self.rng.usize(..earlier.len())]]);
        }
        let now = self.base + self.now;
        if (id as usize) < self.config.publishers {
            node.overlay.add_intent(route(id), now);
        }
        if self.subscriber(id) {
            let pattern: RoutePattern = if self.config.wildcard {
                "robot.Pose@fleet.**".parse().expect("a valid pattern")
            } else {
                route(0).into()
            };
            node.overlay.add_interest(pattern);
        }
        self.nodes[id as usize] = node;
        self.at(Duration::ZERO, Event::Tick(id));
    }

    fn leave(&mut self, id: Id) {
        let links: Vec<((Id, Id), u64)> = self
            .links
            .iter()
            .filter(|((a, b), _)| *a == id || *b == id)
            .map(|(k, v)| (*k, *v))
            .collect();
        for ((a, b), link) in links {
            self.links.remove(&(a, b));
            let peer = if a == id { b } else { a };
            let delay = self.latency(a, b);
            self.at(
                delay,
                Event::Down {
                    node: peer,
                    peer: id,
                    link,
                },
            );
        }
        let node = &mut self.nodes[id as usize];
        node.alive = false;
        node.incarnation += 1;
        self.churned += 1;
        self.at(self.config.downtime, Event::Start(id));
    }

    fn connect(&mut self, a: Id, b: Id) {
        if !self.nodes[a as usize].alive {
            return;
        }
        if !self.nodes[b as usize].alive {
            self.nodes[a as usize].membership.dial_failed(b);
            self.drain(a);
            return;
        }
        if self.links.contains_key(&pair(a, b)) {
            let now = self.base + self.now;
            self.nodes[a as usize].membership.dial_busy(b, now);
            self.drain(a);
            return;
        }
        self.link_gen += 1;
        self.links.insert(pair(a, b), self.link_gen);
        let now = self.base + self.now;
        // Both sides tell each other their offer and some peers, then decide alike.
        let (offer_a, offer_b) = (
            self.nodes[a as usize].membership.offer(&b),
            self.nodes[b as usize].membership.offer(&a),
        );
        for (from, to) in [(a, b), (b, a)] {
            let peers = self.nodes[from as usize].membership.introduce(to);
            // A hello's peers are not answered.
            self.exchange(from, to, peers, true);
        }
        let accepted_b = self.nodes[b as usize].membership.connected(a, offer_a);
        let accepted_a = self.nodes[a as usize].membership.connected(b, offer_b);
        match (accepted_a, accepted_b) {
            (true, true) => {
                self.nodes[a as usize].overlay.neighbour_up(b);
                self.nodes[b as usize].overlay.neighbour_up(a);
            }
            (true, false) => self.nodes[a as usize].membership.refused(b, now),
            (false, true) => self.nodes[b as usize].membership.refused(a, now),
            (false, false) => {}
        }
        if !(accepted_a && accepted_b) {
            self.links.remove(&pair(a, b));
        }
        self.drain(a);
        self.drain(b);
        for id in [a, b] {
            let degree = self.nodes[id as usize].membership.active().len();
            self.max_degree = self.max_degree.max(degree);
        }
    }

    /// Carries out a node's queued actions.
    fn drain(&mut self, id: Id) {
        loop {
            let node = &mut self.nodes[id as usize];
            if let Some(action) = node.membership.poll_action() {
                self.membership_action(id, action);
                continue;
            }
            let Some(action) = node.overlay.poll_action() else {
                break;
            };
            self.overlay_action(id, action);
        }
    }

    fn membership_action(&mut self, id: Id, action: MembershipAction<Id>) {
        match action {
            MembershipAction::Dial(peer) => {
                let delay = self.latency(id, peer) * 2;
                self.at(delay, Event::Connect(id, peer));
            }
            MembershipAction::Disconnect(peer) => {
                if let Some(link) = self.links.remove(&pair(id, peer)) {
                    let delay = self.latency(id, peer);
                    self.at(
                        delay,
                        Event::Down {
                            node: peer,
                            peer: id,
                            link,
                        },
                    );
                    let node = &mut self.nodes[id as usize];
                    node.membership.disconnected(peer);
                    node.overlay.neighbour_down(peer);
                }
            }
            MembershipAction::Exchange { to, peers, reply } => self.exchange(id, to, peers, reply),
        }
    }

    /// `from` tells `to` about `peers` (a reply is not answered).
    fn exchange(&mut self, from: Id, to: Id, peers: Vec<Id>, reply: bool) {
        let delay = self.latency(from, to);
        let event = Event::Exchange {
            to,
            from,
            peers,
            reply,
        };
        self.at(delay, event);
    }

    fn overlay_action(&mut self, id: Id, action: Action<Id>) {
        match action {
            Action::Send { to, frame } => {
                let Some(&link) = self.links.get(&pair(id, to)) else {
                    return;
                };
                self.frames += 1;
                if matches!(frame, Frame::Data(_)) {
                    self.data_frames += 1;
                }
                let delay = self.latency(id, to);
                self.at(
                    delay,
                    Event::Frame {
                        to,
                        from: id,
                        link,
                        frame,
                    },
                );
            }
            Action::Linked { .. } => {
                let now = self.now;
                let node = &mut self.nodes[id as usize];
                if !node.linked {
                    node.linked = true;
                    let took = now - node.started;
                    if node.rejoin {
                        self.rejoins.push(took);
                    } else {
                        self.convergence.push(took);
                    }
                }
            }
            Action::Deliver { batch, skip, hops } => {
                let node = &mut self.nodes[id as usize];
                let first = batch.first + skip as Seq;
                let next = node.next.entry(batch.origin).or_insert(first);
                for seq in first..batch.end() {
                    if seq != *next {
                        self.misordered += 1;
                    }
                    *next = seq + 1;
                    node.delivered += 1;
                    self.hops.push(hops);
                }
            }
            Action::Lost { origin, count, .. } => {
                let node = &mut self.nodes[id as usize];
                if let Some(next) = node.next.get_mut(&origin) {
                    *next += count;
                }
                if !self.left[id as usize] {
                    self.lost += count;
                }
            }
            Action::Unlinked { .. } | Action::Wanted(_) | Action::Unwanted(_) => {}
        }
    }

    fn report(&mut self) -> SimReport {
        let published: u64 = self.published.values().sum();
        let per_stayer: u64 = if self.config.wildcard {
            published
        } else {
            self.published.get(&0).copied().unwrap_or(0)
        };
        let stayers: Vec<usize> = (0..self.config.nodes)
            .filter(|i| self.subscriber(*i as Id) && !self.left[*i] && *i >= self.config.publishers)
            .collect();
        let delivered: u64 = stayers.iter().map(|i| self.nodes[*i].delivered).sum();
        let complete = stayers
            .iter()
            .filter(|i| self.nodes[**i].delivered == per_stayer)
            .count();
        self.hops.sort_unstable();
        self.convergence.sort_unstable();
        self.rejoins.sort_unstable();
        let expected = (per_stayer * stayers.len() as u64).max(1);
        SimReport {
            stayers: stayers.len(),
            stayers_complete: complete,
            delivery_ratio: delivered as f64 / expected as f64,
            lost: self.lost,
            misordered: self.misordered,
            hops_p50: percentile(&self.hops, 0.5).unwrap_or(0),
            hops_p99: percentile(&self.hops, 0.99).unwrap_or(0),
            hops_max: self.hops.last().copied().unwrap_or(0),
            transmissions_per_message: self.data_frames as f64 / published.max(1) as f64,
            duplicates_per_message: self
                .nodes
                .iter()
                .map(|n| n.overlay.stats().duplicates)
                .sum::<u64>() as f64
                / published.max(1) as f64,
            joins_measured: self.convergence.len(),
            convergence_p50: percentile(&self.convergence, 0.5).unwrap_or_default(),
            convergence_p99: percentile(&self.convergence, 0.99).unwrap_or_default(),
            rejoin_p50: percentile(&self.rejoins, 0.5).unwrap_or_default(),
            max_degree: self.max_degree,
            frames: self.frames,
            churned: self.churned,
            elapsed: self.now,
        }
    }
}

fn pair(a: Id, b: Id) -> (Id, Id) {
    (a.min(b), a.max(b))
}

fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(index).copied()
}
