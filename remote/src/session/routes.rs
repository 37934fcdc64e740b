//! Route declarations both ways: ours with the ids the peer names them by, and the peer's by
//! its ids (several ids per route while a re-declaration overtakes a withdrawal).

use super::*;

/// Our route declarations, with the ids the peer uses to name them.
#[derive(Debug, Default)]
pub(super) struct LocalRoutes {
    pub(super) intents: BTreeMap<u32, IntentAd>,
    pub(super) intent_ids: crate::FastMap<Route, u32>,
    pub(super) interests: BTreeMap<u32, InterestAd>,
    pub(super) interest_ids: HashMap<RoutePattern, u32>,
    pub(super) next_id: u32,
    pub(super) services: BTreeMap<u32, ServiceAd>,
    pub(super) service_ids: HashMap<Route, u32>,
    pub(super) next_service: u32,
    /// Withdrawn intents whose messages are still queued or unacknowledged: the peer learns of
    /// the withdrawal only after the last of them, so it can still place (and we resend) them.
    pub(super) withdrawing: Vec<u32>,
}

impl LocalRoutes {
    pub(super) fn next(&mut self) -> u32 {
        // Route ids stay below the service range.
        self.next_id = (self.next_id + 1) % SERVICE_ID_BASE;
        self.next_id
    }

    pub(super) fn next_service(&mut self) -> u32 {
        self.next_service = self.next_service.wrapping_add(1);
        SERVICE_ID_BASE | (self.next_service % SERVICE_ID_BASE)
    }
}

/// The peer's route declarations, by its ids. A route may be declared under several ids at
/// once (re-declared with other options while its withdrawal is still on its way); the last
/// declared is current, and the route is withdrawn when its last id goes.
#[derive(Debug, Default, Clone)]
pub(super) struct PeerRoutes {
    pub(super) intents: crate::FastMap<u32, IntentAd>,
    pub(super) intent_ids: crate::FastMap<Route, Vec<u32>>,
    pub(super) interests: crate::FastMap<u32, InterestAd>,
    pub(super) interest_ids: crate::FastMap<RoutePattern, Vec<u32>>,
    pub(super) services: crate::FastMap<u32, ServiceAd>,
    /// Hashed declarations no local route resolves (yet): not shown to the router.
    pub(super) unresolved: hashed::Unresolved,
}

/// What a declaration change did to the routes the router sees.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change<T> {
    Nothing,
    Added(T),
    Removed(T),
    /// The current declaration of a route changed from the first to the second.
    Replaced(T, T),
}

impl PeerRoutes {
    /// Declarations held, as counted against [`BudgetConfig::routes`](dndm_core::BudgetConfig).
    pub(super) fn len(&self) -> usize {
        self.intents.len() + self.interests.len() + self.services.len() + self.unresolved.len()
    }

    /// The intent currently declared on `route`, if any.
    pub(super) fn intent(&self, route: &Route) -> Option<&IntentAd> {
        self.intents.get(self.intent_ids.get(route)?.last()?)
    }

    /// The interest currently declared with `pattern`, if any.
    pub(super) fn interest(&self, pattern: &RoutePattern) -> Option<&InterestAd> {
        self.interests.get(self.interest_ids.get(pattern)?.last()?)
    }
}

/// Declares `ad` under `id` in `ads` (by id) and `ids` (by key); returns the changes to the
/// routes the router sees, in order (an id declared again first withdraws what it named).
pub(super) fn declare<K, T>(
    ads: &mut crate::FastMap<u32, T>,
    ids: &mut crate::FastMap<K, Vec<u32>>,
    key: impl Fn(&T) -> &K,
    id: u32,
    ad: T,
) -> Result<[Change<T>; 2], LinkFailure>
where
    K: std::hash::Hash + Eq + Clone + std::fmt::Display,
    T: Clone + PartialEq,
{
    if ads.get(&id) == Some(&ad) {
        return Ok([Change::Nothing, Change::Nothing]);
    }
    if ids
        .get(key(&ad))
        .is_some_and(|list| list.len() >= MAX_IDS_PER_ROUTE && !list.contains(&id))
    {
        return Err(LinkFailure::Protocol(format!(
            "{} declared under more than {MAX_IDS_PER_ROUTE} ids",
            key(&ad)
        )));
    }
    let first = withdraw(ads, ids, &key, id);
    let list = ids.entry(key(&ad).clone()).or_default();
    let current = list.last().and_then(|id| ads.get(id)).cloned();
    list.push(id);
    ads.insert(id, ad.clone());
    let second = match current {
        None => Change::Added(ad),
        Some(current) if current == ad => Change::Nothing,
        Some(current) => Change::Replaced(current, ad),
    };
    Ok([first, second])
}

/// Withdraws the declaration `id`; returns the change to the routes the router sees.
pub(super) fn withdraw<K, T>(
    ads: &mut crate::FastMap<u32, T>,
    ids: &mut crate::FastMap<K, Vec<u32>>,
    key: impl Fn(&T) -> &K,
    id: u32,
) -> Change<T>
where
    K: std::hash::Hash + Eq + Clone,
    T: Clone + PartialEq,
{
    let Some(ad) = ads.remove(&id) else {
        return Change::Nothing;
    };
    let Some(list) = ids.get_mut(key(&ad)) else {
        return Change::Removed(ad);
    };
    let was_current = list.last() == Some(&id);
    list.retain(|&other| other != id);
    match list.last().and_then(|id| ads.get(id)) {
        None => {
            ids.remove(key(&ad));
            Change::Removed(ad)
        }
        Some(next) if was_current && *next != ad => Change::Replaced(ad, next.clone()),
        Some(_) => Change::Nothing,
    }
}
