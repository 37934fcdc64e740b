//! Flow control per route, and the fate of every message [`Session::send`] accepted.
//!
//! - **Pauses.** A receiver whose local subscriber on one of the peer's routes is full asks
//!   the peer to hold that route back ([`Session::pause_peer_route`], an `Advert` with
//!   `paused`), and releases it later ([`Session::resume_peer_route`]). The sender moves the
//!   route's queued messages aside (`held`) until then, so every other route, acks, pings and
//!   requests keep flowing. After every hello the receiver states each route it ever paused
//!   (paused or resumed), so a pause or resume lost with a connection is repaired; the sender
//!   keeps pauses across reconnects of one peer incarnation and drops them for a new one.
//! - **Settlement.** Each accepted message ends in exactly one [`Event::Settled`] (the peer
//!   acknowledged it, or, best effort, it went out) or one [`Event::Undelivered`] (with the
//!   reason), so a driver can keep per-route credit and nothing is lost silently.

use super::*;

impl Session {
    /// Asks the peer to hold back its messages on `route` (one of its intents): a local
    /// subscriber cannot take more now. What is already in flight still arrives.
    pub fn pause_peer_route(&mut self, route: &Route, now: Instant) {
        if let Some(id) = self.peer_intent_id(route)
            && self.pausing_peer.insert(id)
        {
            self.ever_paused_peer.insert(id);
            self.stats.pauses_sent += 1;
            tracing::debug!(%route, id, open = self.is_open(), "pausing the peer's route");
            self.send_flow(vec![id], Vec::new(), now);
        }
    }

    /// Lets the peer send on `route` again after [`Session::pause_peer_route`].
    pub fn resume_peer_route(&mut self, route: &Route, now: Instant) {
        if let Some(id) = self.peer_intent_id(route)
            && self.pausing_peer.remove(&id)
        {
            tracing::debug!(%route, id, open = self.is_open(), "resuming the peer's route");
            self.send_flow(Vec::new(), vec![id], now);
        }
    }

    /// Gives up what is queued for the peer and what it has not acknowledged, reporting each
    /// message as [`Event::Undelivered`] with [`Undelivered::PeerGone`], and forgets the peer's
    /// routes (the driver withdraws them from the router), so that its next hello declares them
    /// afresh. For a peer that stayed away past its grace period; the session still resumes
    /// with it if it comes back (it learns from our hello where our numbering continues).
    pub fn abandon(&mut self, now: Instant) {
        let unacked: Vec<u32> = self
            .unacked
            .drain(..)
            .flat_map(|sent| sent.reliable.into_iter().map(|m| m.route_id))
            .collect();
        self.unacked_reliable = 0;
        self.resend_from = None;
        self.resending = None;
        let queued = self.take_queued();
        self.lose(unacked.into_iter().chain(queued), Undelivered::PeerGone);
        self.peer_routes = PeerRoutes::default();
        self.pausing_peer.clear();
        self.ever_paused_peer.clear();
        self.paused.clear();
        self.reset_feedback();
        self.flush_withdrawals(now);
    }

    /// A flow-control advert, if a connection is up (otherwise the next hello's aftermath
    /// carries the state: see [`Session::reannounce_pauses`]).
    fn send_flow(&mut self, paused: Vec<u32>, resumed: Vec<u32>, now: Instant) {
        if self.is_open() {
            let advert = Advert {
                paused,
                resumed,
                ..Advert::default()
            };
            self.queue_frame(&Frame::Advert(advert), now);
        }
    }

    /// The id the peer currently declares `route` under (the last of its ids for it): a
    /// lookup, as feedback asks for every route fed in each round.
    pub(super) fn peer_intent_id(&self, route: &Route) -> Option<u32> {
        self.peer_routes.intent_ids.get(route)?.last().copied()
    }

    /// After the peer's hello: the state of every route we ever paused (that it still
    /// declares) goes out again; `new_incarnation`: the peer restarted and holds nothing back.
    pub(super) fn reannounce_pauses(&mut self, new_incarnation: bool, now: Instant) {
        if new_incarnation {
            // Its pauses of our routes died with it, and its ids may now name other routes:
            // ours start afresh (the driver pauses again while its subscriber is still full).
            self.release_all_held();
            self.pausing_peer.clear();
            self.ever_paused_peer.clear();
        }
        let intents = &self.peer_routes.intents;
        self.pausing_peer.retain(|id| intents.contains_key(id));
        self.ever_paused_peer.retain(|id| intents.contains_key(id));
        if self.ever_paused_peer.is_empty() {
            return;
        }
        let paused = self.pausing_peer.iter().copied().collect();
        let resumed = self
            .ever_paused_peer
            .difference(&self.pausing_peer)
            .copied()
            .collect();
        self.send_flow(paused, resumed, now);
    }

    /// The peer's pauses and resumes of our routes.
    pub(super) fn on_flow(&mut self, paused: &[u32], resumed: &[u32]) {
        if !paused.is_empty() || !resumed.is_empty() {
            tracing::debug!(
                ?paused,
                ?resumed,
                held = self.held_len(),
                "peer flow control"
            );
        }
        for id in resumed {
            if self.paused.remove(id) {
                self.release_held(*id);
            }
        }
        for &id in paused {
            if self.local.intents.contains_key(&id) && self.paused.insert(id) {
                self.stats.pauses_received += 1;
                let (keep, hold): (VecDeque<Outgoing>, VecDeque<Outgoing>) =
                    std::mem::take(&mut self.outgoing)
                        .into_iter()
                        .partition(|m| m.route_id != id);
                self.outgoing = keep;
                self.held.entry(id).or_default().extend(hold);
            }
        }
    }

    /// Every pause ends (the peer restarted): held messages queue again.
    pub(super) fn release_all_held(&mut self) {
        self.paused.clear();
        let ids: Vec<u32> = self.held.keys().copied().collect();
        for id in ids {
            self.release_held(id);
        }
    }

    fn release_held(&mut self, id: u32) {
        if let Some(held) = self.held.remove(&id) {
            // Behind messages of other routes; within the route the order is kept.
            self.outgoing_bytes += held.iter().map(|m| m.payload.len()).sum::<usize>();
            self.outgoing.extend(held);
        }
    }

    /// Route ids of every queued message (sent queue and held back), emptying both.
    pub(super) fn take_queued(&mut self) -> Vec<u32> {
        self.outgoing_bytes = 0;
        let mut ids: Vec<u32> = self.outgoing.drain(..).map(|m| m.route_id).collect();
        for (_, held) in self.held.drain() {
            ids.extend(held.into_iter().map(|m| m.route_id));
        }
        ids
    }

    /// Messages held back for paused routes.
    pub(super) fn held_len(&self) -> usize {
        self.held.values().map(VecDeque::len).sum()
    }

    /// Reports messages (by route id) that left our hands.
    pub(super) fn settle(&mut self, ids: impl IntoIterator<Item = u32>) {
        for (id, count) in count_by_id(ids) {
            if let Some(route) = self.intent_route(id) {
                self.events.push_back(Event::Settled { route, count });
            }
        }
    }

    /// Reports messages (by route id) that will never reach the peer.
    pub(super) fn lose(&mut self, ids: impl IntoIterator<Item = u32>, reason: Undelivered) {
        for (id, count) in count_by_id(ids) {
            self.stats.undelivered += count;
            if let Some(route) = self.intent_route(id) {
                self.events.push_back(Event::Undelivered {
                    route,
                    count,
                    reason,
                });
            }
        }
    }

    /// The route of one of our intents (services' requests and responses are not reported:
    /// their callers learn the outcome from the answer or its absence).
    fn intent_route(&self, id: u32) -> Option<Route> {
        if id >= SERVICE_ID_BASE {
            return None;
        }
        self.local.intents.get(&id).map(|ad| ad.route.clone())
    }
}

/// Counts ids, in order of first appearance (a batch usually carries few routes).
fn count_by_id(ids: impl IntoIterator<Item = u32>) -> Vec<(u32, u64)> {
    let mut counts: Vec<(u32, u64)> = Vec::new();
    for id in ids {
        match counts.iter_mut().find(|(at, _)| *at == id) {
            Some((_, count)) => *count += 1,
            None => counts.push((id, 1)),
        }
    }
    counts
}
