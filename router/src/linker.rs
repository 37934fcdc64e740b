//! The Linker: the table of intents and interests, and the rule that links them.
//!
//! A plain table (sans-IO): every change to it writes the [`Change`]s that follow into an
//! output list, and calls nothing outside itself. The router holds the table under one lock,
//! so a publish and a subscribe racing each other always end linked and a snapshot is one
//! consistent copy; it applies the changes to handles and endpoints after releasing that lock,
//! in the order the table made them ([`Inner::update`](crate::shared::Inner::update)).
//!
//! Linking rule: an intent and an interest link when the interest's pattern matches the
//! intent's route, their fingerprints are equal, and at least one side is local (a peer's
//! intent is never linked to a peer's interest: no forwarding, no loops).

use std::any::{Any, TypeId};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use dndm_core::schema::compatibility;
use dndm_core::{
    Compatibility, Endpoint, Fingerprint, IntentAd, InterestAd, LinkError, LocalChange,
    PayloadSink, PeerId, Qos, Route, RoutePattern, Schema, SubscriberFeedback, Undelivered,
    fingerprint_is_of_schema,
};

use crate::delivery::{Inbox, PeerIntent};
use crate::events::LinkEvent;
use crate::id::{HandleId, Origin};
use crate::snapshot::{IntentInfo, InterestInfo, LinkInfo, QueueStats, RouterCounters};

/// The table's type-erased view of a local intent (implemented by the intent's shared state).
pub(crate) trait IntentSlot: Send + Sync {
    /// Links a local interest; `queue` is its `Arc<Queue<T>>`. False if the types differ.
    fn link_local(&self, interest: HandleId, queue: &Arc<dyn Any + Send + Sync>) -> bool;
    /// Links an interest of `peer`, which asked for `history` kept messages.
    fn link_peer(
        &self,
        interest: HandleId,
        peer: PeerId,
        sink: Arc<dyn PayloadSink>,
        history: usize,
    );
    /// Removes a link.
    fn unlink(&self, interest: HandleId);
    /// Reports a link event to the handle's event stream.
    fn event(&self, event: LinkEvent);
    /// Closes the intent: sends fail, waiters wake.
    fn close(&self);
    /// Number of linked subscribers.
    fn subscribers(&self) -> usize;
    /// Messages sent, sends that failed, and messages that did not reach a peer by reason
    /// (non-zero counts only, in [`Undelivered::ALL`] order).
    fn counters(&self) -> (u64, u64, Vec<(Undelivered, u64)>);
    /// Counts and reports messages that did not reach `peer`.
    fn undelivered(&self, peer: PeerId, route: &Route, count: u64, reason: Undelivered);
    /// Reports what `peer`'s subscribers made of this intent's messages.
    fn feedback(&self, peer: PeerId, route: &Route, feedback: SubscriberFeedback);
    /// Per peer: drops reported in total, lag and capacity at the last report.
    fn peer_feedback(&self) -> Vec<(PeerId, SubscriberFeedback)>;
}

/// The table's type-erased view of a local interest (implemented by the interest's shared
/// state).
pub(crate) trait InterestSlot: Send + Sync {
    /// The queue as `Arc<Queue<T>>` behind `Any`, for intents to downcast.
    fn queue_any(&self) -> Arc<dyn Any + Send + Sync>;
    /// The queue as a peer intent's fan-in sees it.
    fn inbox(&self) -> Arc<dyn Inbox>;
    /// Reports a link event to the handle's event stream.
    fn event(&self, event: LinkEvent);
    /// Closes the queue: the receiver drains what is queued, then sees closed.
    fn close(&self);
    /// Queue depth and counters.
    fn stats(&self) -> QueueStats;
}

/// A local handle, as a change addresses it.
#[derive(Clone)]
pub(crate) enum Slot {
    Intent(Arc<dyn IntentSlot>),
    Interest(Arc<dyn InterestSlot>),
}

/// What a change of the table means for handles and endpoints; applied in order, outside the
/// table's lock.
pub(crate) enum Change {
    /// Link a local intent to a local interest of the same Rust type.
    LinkLocal {
        intent: Arc<dyn IntentSlot>,
        id: HandleId,
        interest: Arc<dyn InterestSlot>,
    },
    /// Link a local intent to a peer's interest.
    LinkPeer {
        intent: Arc<dyn IntentSlot>,
        id: HandleId,
        peer: PeerId,
        sink: Arc<dyn PayloadSink>,
        /// Kept messages the peer's interest asked for.
        history: usize,
    },
    /// Let a peer's intent feed a local interest.
    FanIn {
        fan_in: Arc<PeerIntent>,
        id: HandleId,
        interest: Arc<dyn InterestSlot>,
    },
    /// Remove interest `id` from a local intent.
    Unlink {
        intent: Arc<dyn IntentSlot>,
        id: HandleId,
    },
    /// Remove interest `id` from a peer's intent.
    UnlinkFanIn {
        fan_in: Arc<PeerIntent>,
        id: HandleId,
    },
    /// Tell a local handle.
    Notify { to: Slot, event: LinkEvent },
    /// Close a local handle that left the table.
    Close(Slot),
    /// Tell every endpoint about a change of the local route set.
    Advertise(LocalChange),
}

mod entries;

use entries::Entry;
pub(crate) use entries::{IntentEntry, IntentSide, InterestEntry, InterestSide};

/// The entries of one type name, local and from peers.
#[derive(Default)]
struct ByType {
    local: BTreeSet<HandleId>,
    peer: BTreeSet<HandleId>,
}

impl ByType {
    fn of(&mut self, origin: Origin) -> &mut BTreeSet<HandleId> {
        match origin {
            Origin::Local => &mut self.local,
            Origin::Peer(_) => &mut self.peer,
        }
    }
}

/// The table of intents and interests.
#[derive(Default)]
pub(crate) struct Linker {
    pub(crate) closed: bool,
    entries: HashMap<HandleId, Entry>,
    /// Entries by type name and origin: only entries of one type name can ever link, and a
    /// peer's entries link only to local ones, so a peer's route costs O(local entries of its
    /// type), however many routes peers declared.
    by_type: HashMap<String, ByType>,
    /// Each peer's intents by route and interests by pattern.
    peer_routes: HashMap<(PeerId, Route), HandleId>,
    peer_patterns: HashMap<(PeerId, RoutePattern), HandleId>,
    /// Local intents per advert, so endpoints see each route once.
    intent_ads: HashMap<IntentAd, usize>,
    /// Local interests per advert, so endpoints see each pattern once.
    interest_ads: HashMap<InterestAd, usize>,
    /// Entries declared by each peer.
    by_peer: HashMap<PeerId, BTreeSet<HandleId>>,
    /// Links between two different but compatible schemas, by (intent, interest); a link not
    /// here is between identical ones.
    compatibilities: HashMap<(HandleId, HandleId), Compatibility>,
    pub(crate) endpoints: Vec<Arc<dyn Endpoint>>,
    pub(crate) counters: RouterCounters,
}

impl Linker {
    /// Adds an intent and links it to every matching interest.
    pub(crate) fn add_intent(&mut self, id: HandleId, entry: IntentEntry, out: &mut Vec<Change>) {
        if entry.origin == Origin::Local {
            let ad = IntentAd {
                route: entry.route.clone(),
                fingerprint: entry.fingerprint,
                schema: entry.schema.clone(),
                hashed: entry.hashed,
                qos: entry.qos,
            };
            self.advertise_intent(ad, true, out);
        }
        self.insert(id, Entry::Intent(entry), out);
    }

    /// Adds an interest and links it to every matching intent.
    pub(crate) fn add_interest(
        &mut self,
        id: HandleId,
        entry: InterestEntry,
        out: &mut Vec<Change>,
    ) {
        if entry.origin == Origin::Local {
            let ad = InterestAd {
                pattern: entry.pattern.clone(),
                fingerprint: entry.fingerprint,
                schema: entry.schema.clone(),
                hashed: entry.hashed,
                history: entry.history,
            };
            self.advertise_interest(ad, true, out);
        }
        self.insert(id, Entry::Interest(entry), out);
    }

    fn insert(&mut self, id: HandleId, entry: Entry, out: &mut Vec<Change>) {
        let type_name = entry.type_name().to_owned();
        let origin = entry.origin();
        if let Origin::Peer(peer) = origin {
            self.by_peer.entry(peer).or_default().insert(id);
            match &entry {
                Entry::Intent(e) => self.peer_routes.insert((peer, e.route.clone()), id),
                Entry::Interest(e) => self.peer_patterns.insert((peer, e.pattern.clone()), id),
            };
        }
        // Peers' entries never link to each other: a peer's entry is matched with local ones
        // only.
        let candidates: Vec<HandleId> = self
            .by_type
            .get(&type_name)
            .map(|ids| match origin {
                Origin::Local => ids.local.iter().chain(&ids.peer).copied().collect(),
                Origin::Peer(_) => ids.local.iter().copied().collect(),
            })
            .unwrap_or_default();
        self.entries.insert(id, entry);
        self.by_type
            .entry(type_name)
            .or_default()
            .of(origin)
            .insert(id);
        for other in candidates {
            self.try_link(id, other, out);
        }
    }

    /// Links `a` and `b` if one is an intent, the other an interest, and they match.
    fn try_link(&mut self, a: HandleId, b: HandleId, out: &mut Vec<Change>) {
        let (intent_id, interest_id) = match (self.entries.get(&a), self.entries.get(&b)) {
            (Some(Entry::Intent(_)), Some(Entry::Interest(_))) => (a, b),
            (Some(Entry::Interest(_)), Some(Entry::Intent(_))) => (b, a),
            _ => return,
        };
        let (Some(Entry::Intent(intent)), Some(Entry::Interest(interest))) =
            (self.entries.get(&intent_id), self.entries.get(&interest_id))
        else {
            return;
        };
        if !interest.pattern.matches(&intent.route) {
            return;
        }
        if intent.origin != Origin::Local && interest.origin != Origin::Local {
            return;
        }
        // A hashed intent goes only to peers that named its whole route, never to a peer's
        // wildcard: that peer does not know the path and must not learn it.
        if intent.hashed.is_some()
            && interest.origin != Origin::Local
            && !interest.pattern.is_exact()
        {
            return;
        }
        // Equal fingerprints link at once; differing ones by their schemas when both sides
        // declared theirs, otherwise not.
        let compatibility = if intent.fingerprint == interest.fingerprint {
            Ok(Compatibility::Identical)
        } else if let (Some(publisher), Some(subscriber)) = (&intent.schema, &interest.schema) {
            compatibility(publisher, subscriber).map_err(|conflict| {
                self.counters.schema_conflicts += 1;
                LinkError::SchemaConflict {
                    type_name: intent.route.type_name().to_owned(),
                    conflict,
                }
            })
        } else {
            self.counters.fingerprint_mismatches += 1;
            Err(LinkError::FingerprintMismatch {
                type_name: intent.route.type_name().to_owned(),
                intent: intent.fingerprint,
                interest: interest.fingerprint,
            })
        };
        let compatibility = match compatibility {
            Ok(compatibility) => compatibility,
            Err(error) => {
                tracing::warn!(route = %intent.route, pattern = %interest.pattern, %error, "link refused");
                self.refuse(intent_id, interest_id, error, out);
                return;
            }
        };
        let link = match (&intent.side, &interest.side) {
            // Same type name and fingerprint but another Rust type: refused.
            (IntentSide::Local(slot), InterestSide::Local(queue))
                if intent.type_id == interest.type_id =>
            {
                Some(Change::LinkLocal {
                    intent: slot.clone(),
                    id: interest_id,
                    interest: queue.clone(),
                })
            }
            (IntentSide::Local(slot), InterestSide::Peer(sink)) => match interest.origin {
                Origin::Peer(peer) => Some(Change::LinkPeer {
                    intent: slot.clone(),
                    id: interest_id,
                    peer,
                    sink: sink.clone(),
                    history: interest.history,
                }),
                Origin::Local => None,
            },
            (IntentSide::Peer(fan_in), InterestSide::Local(queue)) => Some(Change::FanIn {
                fan_in: fan_in.clone(),
                id: interest_id,
                interest: queue.clone(),
            }),
            _ => None,
        };
        let Some(link) = link else {
            self.counters.type_mismatches += 1;
            let error = LinkError::RustTypeMismatch {
                type_name: intent.route.type_name().to_owned(),
            };
            tracing::warn!(route = %intent.route, pattern = %interest.pattern, %error, "link refused");
            self.refuse(intent_id, interest_id, error, out);
            return;
        };
        out.push(link);
        if compatibility != Compatibility::Identical {
            self.counters.compatible_links += 1;
            self.compatibilities
                .insert((intent_id, interest_id), compatibility.clone());
            tracing::info!(route = %intent.route, pattern = %interest.pattern, ?compatibility, "linked two versions of a type");
        }
        let (route, pattern) = (intent.route.clone(), interest.pattern.clone());
        let (intent_origin, interest_origin) = (intent.origin, interest.origin);
        self.notify(
            intent_id,
            LinkEvent::Linked {
                other: interest_id,
                route: route.clone(),
                pattern: pattern.clone(),
                origin: interest_origin,
                compatibility: compatibility.clone(),
            },
            out,
        );
        self.notify(
            interest_id,
            LinkEvent::Linked {
                other: intent_id,
                route,
                pattern,
                origin: intent_origin,
                compatibility,
            },
            out,
        );
        if let Some(entry) = self.entries.get_mut(&intent_id) {
            entry.links_mut().insert(interest_id);
        }
        if let Some(entry) = self.entries.get_mut(&interest_id) {
            entry.links_mut().insert(intent_id);
        }
    }

    fn refuse(
        &self,
        intent_id: HandleId,
        interest_id: HandleId,
        error: LinkError,
        out: &mut Vec<Change>,
    ) {
        let (Some(Entry::Intent(intent)), Some(Entry::Interest(interest))) =
            (self.entries.get(&intent_id), self.entries.get(&interest_id))
        else {
            return;
        };
        let event = |other, origin| LinkEvent::Refused {
            other,
            route: intent.route.clone(),
            pattern: interest.pattern.clone(),
            origin,
            error: error.clone(),
        };
        self.notify(intent_id, event(interest_id, interest.origin), out);
        self.notify(interest_id, event(intent_id, intent.origin), out);
    }

    /// Sends an event to a local handle's stream (peer entries have none).
    fn notify(&self, id: HandleId, event: LinkEvent, out: &mut Vec<Change>) {
        if let Some(to) = self.entries.get(&id).and_then(Entry::slot) {
            out.push(Change::Notify { to, event });
        }
    }

    /// Removes an entry, unlinks it everywhere, closes it if local. Idempotent.
    pub(crate) fn remove(&mut self, id: HandleId, out: &mut Vec<Change>) {
        let Some(mut entry) = self.entries.remove(&id) else {
            return;
        };
        let origin = entry.origin();
        if let Some(ids) = self.by_type.get_mut(entry.type_name()) {
            ids.of(origin).remove(&id);
            if ids.local.is_empty() && ids.peer.is_empty() {
                self.by_type.remove(entry.type_name());
            }
        }
        if let Origin::Peer(peer) = origin {
            match &entry {
                Entry::Intent(e) => self.peer_routes.remove(&(peer, e.route.clone())),
                Entry::Interest(e) => self.peer_patterns.remove(&(peer, e.pattern.clone())),
            };
            if let Some(ids) = self.by_peer.get_mut(&peer) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_peer.remove(&peer);
                }
            }
        }
        if !self.compatibilities.is_empty() {
            self.compatibilities
                .retain(|(intent, interest), _| *intent != id && *interest != id);
        }
        for other in std::mem::take(entry.links_mut()) {
            let Some(other_entry) = self.entries.get_mut(&other) else {
                continue;
            };
            other_entry.links_mut().remove(&id);
            match other_entry {
                Entry::Intent(IntentEntry {
                    side: IntentSide::Local(slot),
                    ..
                }) => out.push(Change::Unlink {
                    intent: slot.clone(),
                    id,
                }),
                Entry::Intent(IntentEntry {
                    side: IntentSide::Peer(fan_in),
                    ..
                }) => out.push(Change::UnlinkFanIn {
                    fan_in: fan_in.clone(),
                    id,
                }),
                Entry::Interest(_) => {}
            }
            self.notify(other, LinkEvent::Unlinked { other: id, origin }, out);
        }
        if let Some(slot) = entry.slot() {
            out.push(Change::Close(slot));
        }
        match entry {
            Entry::Intent(e) if e.origin == Origin::Local => {
                let ad = IntentAd {
                    route: e.route,
                    fingerprint: e.fingerprint,
                    schema: e.schema,
                    hashed: e.hashed,
                    qos: e.qos,
                };
                self.advertise_intent(ad, false, out);
            }
            Entry::Interest(e) if e.origin == Origin::Local => {
                let ad = InterestAd {
                    pattern: e.pattern,
                    fingerprint: e.fingerprint,
                    schema: e.schema,
                    hashed: e.hashed,
                    history: e.history,
                };
                self.advertise_interest(ad, false, out);
            }
            _ => {}
        }
    }

    /// Removes every entry (router close).
    pub(crate) fn remove_all(&mut self, out: &mut Vec<Change>) {
        let ids: Vec<HandleId> = self.entries.keys().copied().collect();
        for id in ids {
            self.remove(id, out);
        }
    }

    /// Finds a peer's intent on `route`.
    pub(crate) fn peer_intent(&self, peer: &PeerId, route: &Route) -> Option<HandleId> {
        self.peer_routes.get(&(*peer, route.clone())).copied()
    }

    /// Finds a peer's interest on `pattern`.
    pub(crate) fn peer_interest(&self, peer: &PeerId, pattern: &RoutePattern) -> Option<HandleId> {
        self.peer_patterns.get(&(*peer, pattern.clone())).copied()
    }

    /// Everything a peer declared.
    pub(crate) fn peer_entries(&self, peer: &PeerId) -> Vec<HandleId> {
        self.by_peer
            .get(peer)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The first local intent on `route` (by id), where losses of messages on it are reported.
    pub(crate) fn local_intent_on(&self, route: &Route) -> Option<Arc<dyn IntentSlot>> {
        self.by_type
            .get(route.type_name())?
            .local
            .iter()
            .find_map(|id| match self.entries.get(id) {
                Some(Entry::Intent(IntentEntry {
                    route: r,
                    side: IntentSide::Local(slot),
                    ..
                })) if r == route => Some(slot.clone()),
                _ => None,
            })
    }

    /// The current local route set, as `*Added` changes (for a starting endpoint).
    pub(crate) fn local_adverts(&self) -> Vec<LocalChange> {
        let intents = self
            .intent_ads
            .keys()
            .cloned()
            .map(LocalChange::IntentAdded);
        let interests = self
            .interest_ads
            .keys()
            .cloned()
            .map(LocalChange::InterestAdded);
        intents.chain(interests).collect()
    }

    fn advertise_intent(&mut self, ad: IntentAd, added: bool, out: &mut Vec<Change>) {
        if let Some(change) = count(
            &mut self.intent_ads,
            ad,
            added,
            LocalChange::IntentAdded,
            LocalChange::IntentRemoved,
        ) {
            out.push(Change::Advertise(change));
        }
    }

    fn advertise_interest(&mut self, ad: InterestAd, added: bool, out: &mut Vec<Change>) {
        if let Some(change) = count(
            &mut self.interest_ads,
            ad,
            added,
            LocalChange::InterestAdded,
            LocalChange::InterestRemoved,
        ) {
            out.push(Change::Advertise(change));
        }
    }

    /// Intents, interests and links, ordered by id, with the local handles whose counters
    /// the caller reads after releasing the table (the table calls no handle).
    pub(crate) fn infos(&self) -> Infos {
        let mut ids: Vec<&HandleId> = self.entries.keys().collect();
        ids.sort();
        let (mut intents, mut interests, mut links) = (Vec::new(), Vec::new(), Vec::new());
        for id in ids {
            match &self.entries[id] {
                Entry::Intent(e) => {
                    links.extend(e.links.iter().map(|&interest| {
                        LinkInfo {
                            intent: *id,
                            interest,
                            compatibility: self
                                .compatibilities
                                .get(&(*id, interest))
                                .cloned()
                                .unwrap_or(Compatibility::Identical),
                        }
                    }));
                    let info = IntentInfo {
                        id: *id,
                        route: e.route.clone(),
                        fingerprint: e.fingerprint,
                        qos: e.qos,
                        origin: e.origin,
                        subscribers: e.links.len(),
                        sent: 0,
                        send_failures: 0,
                        undelivered: 0,
                        undelivered_by_reason: Vec::new(),
                        peer_feedback: Vec::new(),
                    };
                    let slot = match &e.side {
                        IntentSide::Local(slot) => Some(slot.clone()),
                        IntentSide::Peer(_) => None,
                    };
                    intents.push((info, slot));
                }
                Entry::Interest(e) => {
                    let info = InterestInfo {
                        id: *id,
                        pattern: e.pattern.clone(),
                        fingerprint: e.fingerprint,
                        origin: e.origin,
                        publishers: e.links.len(),
                        queue: None,
                    };
                    let slot = match &e.side {
                        InterestSide::Local(slot) => Some(slot.clone()),
                        InterestSide::Peer(_) => None,
                    };
                    interests.push((info, slot));
                }
            }
        }
        links.sort_by_key(|link| (link.intent, link.interest));
        Infos {
            intents,
            interests,
            links,
        }
    }
}

/// The table's part of a snapshot: entries in id order, each local one with its handle (whose
/// counters the caller fills in), and the links.
pub(crate) struct Infos {
    pub(crate) intents: Vec<(IntentInfo, Option<Arc<dyn IntentSlot>>)>,
    pub(crate) interests: Vec<(InterestInfo, Option<Arc<dyn InterestSlot>>)>,
    pub(crate) links: Vec<LinkInfo>,
}

/// Reference-counts an advert; returns the change to broadcast on the first add / last remove.
fn count<A: std::hash::Hash + Eq + Clone>(
    counts: &mut HashMap<A, usize>,
    ad: A,
    added: bool,
    on_add: fn(A) -> LocalChange,
    on_remove: fn(A) -> LocalChange,
) -> Option<LocalChange> {
    if added {
        let n = counts.entry(ad.clone()).or_insert(0);
        *n += 1;
        (*n == 1).then(|| on_add(ad))
    } else {
        let n = counts.get_mut(&ad)?;
        *n -= 1;
        if *n == 0 {
            counts.remove(&ad);
            Some(on_remove(ad))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests;
