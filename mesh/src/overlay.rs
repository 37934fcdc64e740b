//! Multi-hop delivery, sans-IO: one dissemination tree per publisher and route, grown over the
//! mesh's neighbour links.
//!
//! A node that publishes a route floods an [`Frame::Announce`] through its neighbours; every
//! node keeps, per `(origin, route)` *stream*, the neighbour that offers the shortest path back
//! to the origin (its *parent*). A node whose subscriptions match the route, or that has
//! children of its own, sends [`Frame::Join`] to its parent; data then flows down the tree, one
//! copy per tree edge. Each tree edge is a reliable, ordered link (a libp2p stream over TCP in
//! the mesh), so in a stable mesh every subscriber gets every batch once, in order.
//!
//! Loops: the choice of parent follows Babel's feasibility condition (RFC 8966 §3.5.1). A node
//! remembers the smallest distance it announced for the current epoch of a stream and accepts a
//! parent only if that parent's distance is strictly smaller, so a parent can never be one of its
//! own descendants. A node left without a feasible parent asks the origin for a new epoch
//! ([`Frame::Refresh`]), which resets every node's feasibility distance.
//!
//! Churn: when a parent goes away the node joins another with `from` = its next expected
//! sequence number. Every node keeps the last batches of each stream it carries
//! ([`OverlayConfig::cache_batches`]) and serves a joining child from there; what a cache no
//! longer holds is reported with [`Frame::Gap`] and counted lost at subscribers that were
//! already receiving. Subscribers drop what they already delivered, so a switch never
//! duplicates. Hence, per subscriber: `sent == delivered + lost`.
//!
//! Discovery: every node hears every announcement, so a wildcard subscription finds every
//! publisher; withdrawals are flooded, and announcements expire unless the origin refreshes them
//! ([`OverlayConfig::refresh`]).
//!
//! The machine is generic over the node id `P`; it never reads a clock (times are inputs) and
//! never does I/O (frames and deliveries are [`Action`]s). Batches carry an opaque `auth` the
//! glue fills (an ed25519 signature of the origin) and checks end to end.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use dndm_core::{Route, RoutePattern};

pub mod membership;
mod repair;
pub mod sim;
mod stream;
#[cfg(test)]
mod tests;
mod types;
pub mod wire;

use stream::{Child, Stream};
pub use types::{Action, Batch, Frame, OverlayConfig, OverlayStats, StreamInfo};

/// A per-publisher, per-route sequence number; the first batch of a stream starts at 1.
pub type Seq = u64;

/// A distance no path has: the stream is unreachable through that neighbour.
pub const UNREACHABLE: u8 = u8::MAX;

/// Node ids the machine works with (a `PeerId` in the mesh, an integer in simulations).
pub trait NodeId: Copy + Ord + Hash + Debug {}
impl<T: Copy + Ord + Hash + Debug> NodeId for T {}

type Key<P> = (P, Route);

/// One node's dissemination machine. See the module docs.
#[derive(Debug)]
pub struct Overlay<P: NodeId> {
    me: P,
    config: OverlayConfig,
    neighbours: BTreeSet<P>,
    streams: HashMap<Key<P>, Stream<P>>,
    /// Withdrawn streams: announcements of these epochs or older are ignored.
    tombstones: HashMap<Key<P>, (u64, Instant)>,
    /// Local subscriptions' patterns, each with how many subscriptions have it.
    patterns: Vec<(RoutePattern, usize)>,
    actions: VecDeque<Action<P>>,
    stats: OverlayStats,
}

impl<P: NodeId> Overlay<P> {
    /// A machine for node `me`.
    pub fn new(me: P, config: OverlayConfig) -> Self {
        Self {
            me,
            config,
            neighbours: BTreeSet::new(),
            streams: HashMap::new(),
            tombstones: HashMap::new(),
            patterns: Vec::new(),
            actions: VecDeque::new(),
            stats: OverlayStats::default(),
        }
    }

    /// This node.
    pub fn me(&self) -> P {
        self.me
    }

    /// The counters.
    pub fn stats(&self) -> OverlayStats {
        self.stats
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// The neighbours.
    pub fn neighbours(&self) -> &BTreeSet<P> {
        &self.neighbours
    }

    /// Streams this node knows a path to: `(origin, route, hops)`.
    pub fn known(&self) -> Vec<(P, Route, u8)> {
        let mut known: Vec<_> = self
            .streams
            .iter()
            .filter(|(_, s)| s.hops != UNREACHABLE)
            .map(|((origin, route), s)| (*origin, route.clone(), s.hops))
            .collect();
        known.sort();
        known
    }

    /// Every stream this node knows, as inspection shows it.
    pub fn streams(&self) -> Vec<StreamInfo<P>> {
        let mut streams: Vec<StreamInfo<P>> = self
            .streams
            .iter()
            .map(|((origin, route), s)| StreamInfo {
                origin: *origin,
                route: route.clone(),
                hops: s.hops,
                epoch: s.epoch,
                parent: s.parent,
                joined: s.joined,
                confirmed: s.confirmed || *origin == self.me,
                children: s.children.len(),
                subscribed: s.local,
                next: s.next,
                cached: s.cache.len(),
            })
            .collect();
        streams.sort_by(|a, b| (a.origin, &a.route).cmp(&(b.origin, &b.route)));
        streams
    }

    /// The neighbour this node receives `(origin, route)` from, if it is in that tree.
    pub fn parent(&self, origin: P, route: &Route) -> Option<P> {
        let stream = self.streams.get(&(origin, route.clone()))?;
        stream.joined.then_some(stream.parent).flatten()
    }

    /// Children this node forwards `(origin, route)` to.
    pub fn children(&self, origin: P, route: &Route) -> Vec<P> {
        self.streams
            .get(&(origin, route.clone()))
            .map(|s| s.children.keys().copied().collect())
            .unwrap_or_default()
    }

    /// A link to a neighbour came up: it learns every stream this node has a path to.
    pub fn neighbour_up(&mut self, peer: P) {
        if peer == self.me || !self.neighbours.insert(peer) {
            return;
        }
        let mut announces = Vec::new();
        for ((origin, route), s) in &self.streams {
            if s.hops != UNREACHABLE {
                announces.push(self.announce(*origin, route, s, true));
            }
        }
        for frame in announces {
            self.send(peer, frame);
        }
    }

    /// The link to a neighbour went away.
    pub fn neighbour_down(&mut self, peer: P) {
        if !self.neighbours.remove(&peer) {
            return;
        }
        let keys: Vec<Key<P>> = self.streams.keys().cloned().collect();
        for key in keys {
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            s.offers.remove(&peer);
            s.children.remove(&peer);
            self.reselect(&key);
            self.upstream(&key);
        }
    }

    /// A local intent on `route` appeared: this node originates its stream.
    pub fn add_intent(&mut self, route: Route, now: Instant) {
        let key = (self.me, route);
        if self.streams.contains_key(&key) {
            return;
        }
        let epoch = self
            .tombstones
            .remove(&key)
            .map_or(1, |(epoch, _)| epoch + 1);
        let mut s = Stream::new(epoch, now + self.config.refresh);
        s.hops = 0;
        s.next = Some(1);
        s.joined = true;
        let frame = self.announce(self.me, &key.1, &s, true);
        self.streams.insert(key, s);
        self.flood(frame, None);
    }

    /// The last local intent on `route` went away: the stream is withdrawn.
    pub fn remove_intent(&mut self, route: &Route, now: Instant) {
        let key = (self.me, route.clone());
        let Some(s) = self.streams.remove(&key) else {
            return;
        };
        let epoch = s.epoch + 1;
        self.tombstones
            .insert(key, (epoch, now + self.config.refresh * 3));
        if s.wanted {
            self.actions.push_back(Action::Unwanted(route.clone()));
        }
        let frame = Frame::Announce {
            origin: self.me,
            route: route.clone(),
            epoch,
            hops: 0,
            alive: false,
        };
        self.flood(frame, None);
    }

    /// A local subscription appeared: join every matching stream.
    pub fn add_interest(&mut self, pattern: RoutePattern) {
        if let Some((_, count)) = self.patterns.iter_mut().find(|(p, _)| *p == pattern) {
            *count += 1;
            return;
        }
        self.patterns.push((pattern, 1));
        self.rematch();
    }

    /// A local subscription went away (a pattern stays while another subscription has it).
    pub fn remove_interest(&mut self, pattern: &RoutePattern) {
        let Some(at) = self.patterns.iter().position(|(p, _)| p == pattern) else {
            return;
        };
        self.patterns[at].1 -= 1;
        if self.patterns[at].1 == 0 {
            self.patterns.remove(at);
            self.rematch();
        }
    }

    fn subscribed(&self, route: &Route) -> bool {
        self.patterns.iter().any(|(p, _)| p.matches(route))
    }

    /// Publishes a batch of a local route: `auth` is given the batch's first sequence number
    /// and returns its authentication. Returns that number, or `None` if `route` is not a local
    /// intent or is not wanted (nobody joined its tree, or the last child left more than
    /// [`OverlayConfig::linger`] ago): then nothing is sent and nothing numbered. A wanted route
    /// without children numbers and caches its batches, for the child that rejoins.
    pub fn publish(
        &mut self,
        route: &Route,
        payloads: Vec<Bytes>,
        auth: impl FnOnce(Seq, &[Bytes]) -> Bytes,
    ) -> Option<Seq> {
        let key = (self.me, route.clone());
        let s = self.streams.get_mut(&key)?;
        if !s.wanted || payloads.is_empty() {
            return None;
        }
        let first = s.next.unwrap_or(1);
        let auth = auth(first, &payloads);
        let batch = Arc::new(Batch {
            origin: self.me,
            route: route.clone(),
            first,
            payloads,
            auth,
        });
        s.next = Some(batch.end());
        s.cache(batch.clone(), &self.config);
        let children: Vec<P> = s.children.keys().copied().collect();
        for child in children {
            self.stats.forwarded += 1;
            self.send(child, Frame::Data(batch.clone()));
        }
        Some(first)
    }

    /// Time passed: announcements expire, origins refresh theirs, routes without children
    /// for a linger stop being wanted. Call it periodically (it also notices when a linger
    /// starts, so a linger lasts up to one tick period longer).
    pub fn tick(&mut self, now: Instant) {
        self.tombstones.retain(|_, (_, until)| *until > now);
        let keys: Vec<Key<P>> = self.streams.keys().cloned().collect();
        for key in keys {
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if key.0 != self.me {
                match (s.joined && !s.confirmed, s.parent, s.waiting_since) {
                    (false, _, _) | (_, None, _) => s.waiting_since = None,
                    (true, Some(_), None) => s.waiting_since = Some(now),
                    (true, Some(parent), Some(since)) if now >= since + self.config.join_retry => {
                        // Lost on a link that went down and up, or ignored: ask again.
                        s.waiting_since = Some(now);
                        self.stats.joins_retried += 1;
                        let frame = Frame::Join {
                            origin: key.0,
                            route: key.1.clone(),
                            from: s.asked,
                        };
                        self.send(parent, frame);
                    }
                    _ => {}
                }
            }
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if key.0 == self.me && s.wanted {
                match s.idle_since {
                    _ if !s.children.is_empty() => s.idle_since = None,
                    None => s.idle_since = Some(now),
                    Some(since) if now >= since + self.config.linger => {
                        s.wanted = false;
                        s.idle_since = None;
                        s.cache.clear();
                        s.cache_bytes = 0;
                        self.actions.push_back(Action::Unwanted(key.1.clone()));
                    }
                    Some(_) => {}
                }
            }
            if s.expires > now {
                continue;
            }
            if key.0 == self.me {
                s.epoch += 1;
                s.expires = now + self.config.refresh;
                let frame = self.announce(key.0, &key.1, &self.streams[&key], true);
                self.flood(frame, None);
            } else {
                self.drop_stream(&key);
            }
        }
    }

    /// When [`tick`](Self::tick) next has work (besides noticing that a linger starts).
    pub fn next_deadline(&self) -> Option<Instant> {
        let linger = self.config.linger;
        let lingers = self
            .streams
            .values()
            .filter_map(|s| s.idle_since)
            .map(|t| t + linger);
        let streams = self.streams.values().map(|s| s.expires).chain(lingers);
        streams
            .chain(self.tombstones.values().map(|(_, until)| *until))
            .min()
    }

    /// A frame arrived from neighbour `from`.
    pub fn handle(&mut self, from: P, frame: Frame<P>, now: Instant) {
        if !self.neighbours.contains(&from) {
            return;
        }
        match frame {
            Frame::Announce {
                origin,
                route,
                epoch,
                hops,
                alive,
            } => {
                self.on_announce(from, (origin, route), epoch, hops, alive, now);
            }
            Frame::Join {
                origin,
                route,
                from: first,
            } => self.on_join(from, (origin, route), first),
            Frame::Joined {
                origin,
                route,
                from: asked,
                next,
            } => {
                self.on_joined(from, &(origin, route), asked, next);
            }
            Frame::Leave { origin, route } => {
                let key = (origin, route);
                if let Some(s) = self.streams.get_mut(&key) {
                    s.children.remove(&from);
                    self.upstream(&key);
                }
            }
            Frame::Data(batch) => self.on_data(from, batch),
            Frame::Gap {
                origin,
                route,
                first,
                end,
            } => {
                self.on_gap(from, &(origin, route), first, end);
            }
            Frame::Refresh {
                origin,
                route,
                epoch,
            } => {
                self.on_refresh(from, (origin, route), epoch, now);
            }
        }
    }

    fn on_announce(
        &mut self,
        from: P,
        key: Key<P>,
        epoch: u64,
        hops: u8,
        alive: bool,
        now: Instant,
    ) {
        if key.0 == self.me {
            return;
        }
        if let Some((dead, _)) = self.tombstones.get(&key) {
            if epoch <= *dead {
                return;
            }
            self.tombstones.remove(&key);
        }
        if !alive {
            if self.streams.get(&key).is_some_and(|s| epoch >= s.epoch) {
                self.drop_stream(&key);
            }
            if !self.tombstones.contains_key(&key) {
                self.tombstones
                    .insert(key.clone(), (epoch, now + self.config.refresh * 3));
                let frame = Frame::Announce {
                    origin: key.0,
                    route: key.1,
                    epoch,
                    hops,
                    alive,
                };
                self.flood(frame, Some(from));
            }
            return;
        }
        let hops = if hops >= self.config.max_hops {
            UNREACHABLE
        } else {
            hops
        };
        let expires = now + self.config.refresh * 3;
        let s = match self.streams.get_mut(&key) {
            Some(s) => s,
            None if hops == UNREACHABLE => return,
            None => {
                let mut s = Stream::new(epoch, expires);
                s.local = self.subscribed(&key.1);
                self.streams.entry(key.clone()).or_insert(s)
            }
        };
        // A neighbour's offers only move forward in epochs; a retraction replaces its offer
        // whatever the epoch (that path is gone).
        let previous = s.offers.get(&from).map_or(0, |o| o.epoch);
        if hops != UNREACHABLE && epoch < previous {
            return;
        }
        s.offers.insert(
            from,
            stream::Offer {
                epoch: epoch.max(previous),
                hops,
            },
        );
        if epoch > s.epoch {
            s.epoch = epoch;
            s.expires = expires;
        }
        self.reselect(&key);
        self.upstream(&key);
    }

    fn on_join(&mut self, child: P, key: Key<P>, from: Option<Seq>) {
        let Some(s) = self.streams.get_mut(&key) else {
            // No such stream here (any more): tell the child this path is gone.
            let frame = Frame::Announce {
                origin: key.0,
                route: key.1,
                epoch: 0,
                hops: UNREACHABLE,
                alive: true,
            };
            self.send(child, frame);
            return;
        };
        s.children.insert(
            child,
            Child {
                confirmed: false,
                from,
            },
        );
        // Upstream first: an origin is told it is wanted before the child hears where its
        // stream starts.
        self.upstream(&key);
        self.confirm(&key, child);
    }

    fn on_refresh(&mut self, from: P, key: Key<P>, epoch: u64, now: Instant) {
        if key.0 == self.me {
            let Some(s) = self.streams.get_mut(&key) else {
                return;
            };
            if s.epoch <= epoch {
                s.epoch = epoch + 1;
                s.expires = now + self.config.refresh;
                let frame = self.announce(key.0, &key.1, &self.streams[&key], true);
                self.flood(frame, None);
            }
            return;
        }
        let Some(s) = self.streams.get_mut(&key) else {
            return;
        };
        if s.epoch > epoch && s.hops != UNREACHABLE {
            let frame = self.announce(key.0, &key.1, &self.streams[&key], true);
            self.send(from, frame);
        } else if let Some(parent) = s.parent.filter(|_| s.refresh_asked < epoch + 1) {
            s.refresh_asked = epoch + 1;
            self.send(
                parent,
                Frame::Refresh {
                    origin: key.0,
                    route: key.1,
                    epoch,
                },
            );
        }
    }

    /// Chooses the parent: the feasible offer with the fewest hops (the current parent wins
    /// ties, then the newer epoch). Floods the new distance when it changed; asks for a new
    /// epoch when no offer is feasible.
    fn reselect(&mut self, key: &Key<P>) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if key.0 == self.me {
            return;
        }
        let before = (s.parent, s.hops, s.seqno);
        let current = s.parent;
        let best = s
            .offers
            .iter()
            .filter(|(_, o)| o.hops < UNREACHABLE && s.feasible(o))
            .min_by_key(|(n, o)| {
                (
                    o.hops,
                    Some(**n) != current,
                    std::cmp::Reverse(o.epoch),
                    **n,
                )
            })
            .map(|(n, o)| (*n, *o));
        match best {
            Some((parent, offer)) => {
                s.parent = Some(parent);
                s.hops = offer.hops + 1;
                s.seqno = offer.epoch;
                s.fd = Some(match s.fd {
                    Some((epoch, fd)) if epoch == s.seqno => (epoch, fd.min(s.hops)),
                    _ => (s.seqno, s.hops),
                });
            }
            None => {
                s.parent = None;
                s.hops = UNREACHABLE;
            }
        }
        let changed = before != (s.parent, s.hops, s.seqno);
        if before.0.is_some() && before.0 != s.parent {
            self.stats.parent_switches += 1;
            if s.joined {
                s.joined = false;
                s.confirmed = false;
                if let Some(old) = before.0.filter(|p| self.neighbours.contains(p)) {
                    self.send(
                        old,
                        Frame::Leave {
                            origin: key.0,
                            route: key.1.clone(),
                        },
                    );
                }
            }
        }
        let s = &self.streams[key];
        let lost_path = s.parent.is_none() && before.0.is_some();
        let epoch = s.epoch;
        let frame = self.announce(key.0, &key.1, s, true);
        if changed {
            self.flood(frame, None);
        }
        if lost_path {
            self.stats.refreshes_asked += 1;
            let frame = Frame::Refresh {
                origin: key.0,
                route: key.1.clone(),
                epoch,
            };
            self.flood(frame, None);
        }
    }

    /// Joins or leaves the parent as the stream's local subscribers and children need.
    fn upstream(&mut self, key: &Key<P>) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if key.0 == self.me {
            // Children make a route wanted; only a linger without any (in `tick`) unwants it.
            if !s.children.is_empty() {
                s.idle_since = None;
                if !s.wanted {
                    s.wanted = true;
                    self.actions.push_back(Action::Wanted(key.1.clone()));
                }
            }
            return;
        }
        let needed = s.local || !s.children.is_empty();
        match (needed, s.joined, s.parent) {
            (true, false, Some(parent)) => {
                s.joined = true;
                // A node not yet in the tree asks for what its children still need.
                let from = s
                    .next
                    .or_else(|| s.children.values().filter_map(|c| c.from).min());
                s.asked = from;
                s.confirmed = false;
                let frame = Frame::Join {
                    origin: key.0,
                    route: key.1.clone(),
                    from,
                };
                self.send(parent, frame);
            }
            (false, true, parent) => {
                s.joined = false;
                s.confirmed = false;
                s.next = None;
                s.delivered = None;
                s.cache.clear();
                s.cache_bytes = 0;
                if let Some(parent) = parent {
                    self.send(
                        parent,
                        Frame::Leave {
                            origin: key.0,
                            route: key.1.clone(),
                        },
                    );
                }
                self.unlink(key);
            }
            _ => {}
        }
    }

    fn unlink(&mut self, key: &Key<P>) {
        if let Some(s) = self.streams.get_mut(key)
            && s.linked
        {
            s.linked = false;
            self.actions.push_back(Action::Unlinked {
                origin: key.0,
                route: key.1.clone(),
            });
        }
    }

    /// Forgets a remote stream (withdrawn or expired).
    fn drop_stream(&mut self, key: &Key<P>) {
        self.unlink(key);
        let Some(s) = self.streams.remove(key) else {
            return;
        };
        if let Some(parent) = s.parent.filter(|p| s.joined && self.neighbours.contains(p)) {
            self.send(
                parent,
                Frame::Leave {
                    origin: key.0,
                    route: key.1.clone(),
                },
            );
        }
    }

    /// A subscription changed: which streams are local now.
    fn rematch(&mut self) {
        let keys: Vec<Key<P>> = self
            .streams
            .keys()
            .filter(|k| k.0 != self.me)
            .cloned()
            .collect();
        for key in keys {
            let local = self.subscribed(&key.1);
            let Some(s) = self.streams.get_mut(&key) else {
                continue;
            };
            if s.local != local {
                s.local = local;
                if !local {
                    self.unlink(&key);
                }
                self.upstream(&key);
                self.link(&key);
            }
        }
    }

    fn announce(&self, origin: P, route: &Route, s: &Stream<P>, alive: bool) -> Frame<P> {
        let epoch = if origin == self.me { s.epoch } else { s.seqno };
        Frame::Announce {
            origin,
            route: route.clone(),
            epoch,
            hops: s.hops,
            alive,
        }
    }

    fn flood(&mut self, frame: Frame<P>, except: Option<P>) {
        let to: Vec<P> = self
            .neighbours
            .iter()
            .copied()
            .filter(|n| Some(*n) != except)
            .collect();
        for peer in to {
            self.send(peer, frame.clone());
        }
    }

    fn send(&mut self, to: P, frame: Frame<P>) {
        self.actions.push_back(Action::Send { to, frame });
    }
}
