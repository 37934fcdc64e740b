//! Hashed routes (`prefix#digest`): a peer's hashed declaration is linked only when a local
//! route names the same type and whole path (the digest matches); until then it waits here,
//! counted against the route budget but never shown to the router, so a node that does not know
//! the path never learns it. A local route declared later resolves waiting ones. A resolved
//! route is checked against the ACL like a plain one (a denial is counted and ignored).

use std::sync::Arc;

use dndm_core::{HashedRoute, Schema};

use super::recv::{intent_events, interest_events};

use super::*;

/// A peer's hashed declarations that no local route resolves yet, by id.
#[derive(Debug, Default, Clone)]
pub(super) struct Unresolved {
    pub(super) intents: HashMap<u32, IntentDecl>,
    pub(super) interests: HashMap<u32, InterestDecl>,
}

impl Unresolved {
    pub(super) fn len(&self) -> usize {
        self.intents.len() + self.interests.len()
    }
}

/// Most distinct schema bytes (as encoded) one peer incarnation may declare: all its routes of
/// one type share one schema, so this is room for hundreds of types, and bounds what a peer's
/// schemas keep alive however many routes it declares.
pub const MAX_PEER_SCHEMA_BYTES: usize = 1024 * 1024;

/// The peer's distinct schemas: declarations of one schema share one copy.
#[derive(Debug, Default)]
pub(super) struct PeerSchemas {
    known: HashSet<Arc<Schema>>,
    bytes: usize,
}

/// Local routes by digest: what a peer's hashed declaration can resolve to.
pub(super) struct Known(HashMap<[u8; dndm_core::DIGEST_LEN], Route>);

impl Known {
    /// What `intents` and `interests` may resolve to: our routes by digest when one of them is
    /// hashed, nothing otherwise (so a plain declaration costs no hashing of our routes).
    pub(super) fn for_decls(
        local: &LocalRoutes,
        intents: &[IntentDecl],
        interests: &[InterestDecl],
    ) -> Self {
        let hashed = intents
            .iter()
            .any(|d| matches!(d.route, DeclRoute::Hashed(_)))
            || interests
                .iter()
                .any(|d| matches!(d.pattern, DeclPattern::Hashed(_)));
        if hashed {
            Self::of(local)
        } else {
            Self(HashMap::new())
        }
    }

    /// The routes of our intents and of our exact interests.
    pub(super) fn of(local: &LocalRoutes) -> Self {
        let intents = local.intent_ids.keys().cloned();
        let interests = local.interest_ids.keys().filter_map(RoutePattern::as_route);
        Self(intents.chain(interests).map(|r| (r.digest(), r)).collect())
    }

    fn resolve(&self, hashed: &HashedRoute) -> Option<Route> {
        self.0
            .get(hashed.digest())
            .filter(|route| hashed.matches(route))
            .cloned()
    }

    /// A peer's intent declaration as an advert: plain, or hashed and resolved.
    pub(super) fn intent_ad(&self, decl: &IntentDecl) -> Option<IntentAd> {
        let route = match &decl.route {
            DeclRoute::Plain(route) => route.clone(),
            DeclRoute::Hashed(hashed) => self.resolve(hashed)?,
        };
        Some(IntentAd {
            route,
            fingerprint: decl.fingerprint,
            schema: decl.schema.clone(),
            hashed: None,
            qos: decl.qos,
        })
    }

    /// A peer's interest declaration as an advert: plain, or hashed and resolved (an exact
    /// pattern).
    pub(super) fn interest_ad(&self, decl: &InterestDecl) -> Option<InterestAd> {
        let pattern = match &decl.pattern {
            DeclPattern::Plain(pattern) => pattern.clone(),
            DeclPattern::Hashed(hashed) => RoutePattern::from(self.resolve(hashed)?),
        };
        Some(InterestAd {
            pattern,
            fingerprint: decl.fingerprint,
            schema: decl.schema.clone(),
            hashed: None,
            history: decl.history as usize,
        })
    }
}

impl Session {
    /// Makes the declarations' schemas share the peer's earlier copies, counting new ones
    /// against [`MAX_PEER_SCHEMA_BYTES`].
    ///
    /// # Errors
    /// [`LinkFailure::OverBudget`] (the routes budget) past it.
    pub(super) fn intern_schemas(
        &mut self,
        intents: &mut [IntentDecl],
        interests: &mut [InterestDecl],
    ) -> Result<(), LinkFailure> {
        let slots = intents
            .iter_mut()
            .map(|d| &mut d.schema)
            .chain(interests.iter_mut().map(|d| &mut d.schema));
        for slot in slots {
            let Some(schema) = slot.take() else { continue };
            let shared = match self.peer_schemas.known.get(&schema) {
                Some(known) => known.clone(),
                None => {
                    self.peer_schemas.bytes += schema.encode().len();
                    if self.peer_schemas.bytes > MAX_PEER_SCHEMA_BYTES {
                        return Err(LinkFailure::OverBudget {
                            budget: BudgetKind::Routes,
                            limit: MAX_PEER_SCHEMA_BYTES,
                            what: format!(
                                "declared {} bytes of distinct schemas",
                                self.peer_schemas.bytes
                            ),
                        });
                    }
                    self.peer_schemas.known.insert(schema.clone());
                    schema
                }
            };
            *slot = Some(shared);
        }
        Ok(())
    }

    /// Resolves waiting hashed declarations of the peer against our routes (after one of ours
    /// was declared), declaring each resolved one to the router.
    pub(super) fn resolve_hashed(&mut self) {
        if self.peer_routes.unresolved.len() == 0 {
            return;
        }
        let known = Known::of(&self.local);
        let intents: Vec<IntentDecl> = self
            .peer_routes
            .unresolved
            .intents
            .values()
            .cloned()
            .collect();
        for decl in intents {
            if let Some(ad) = known.intent_ad(&decl) {
                self.peer_routes.unresolved.intents.remove(&decl.id);
                if self.hashed_allowed(Some(&ad.route), None) {
                    let routes = &mut self.peer_routes;
                    if let Ok(changes) = declare(
                        &mut routes.intents,
                        &mut routes.intent_ids,
                        |ad| &ad.route,
                        decl.id,
                        ad,
                    ) {
                        self.events
                            .extend(changes.into_iter().flat_map(intent_events));
                    }
                }
            }
        }
        let interests: Vec<InterestDecl> = self
            .peer_routes
            .unresolved
            .interests
            .values()
            .cloned()
            .collect();
        for decl in interests {
            if let Some(ad) = known.interest_ad(&decl) {
                self.peer_routes.unresolved.interests.remove(&decl.id);
                if self.hashed_allowed(None, Some(&ad.pattern)) {
                    let routes = &mut self.peer_routes;
                    if let Ok(changes) = declare(
                        &mut routes.interests,
                        &mut routes.interest_ids,
                        |ad| &ad.pattern,
                        decl.id,
                        ad,
                    ) {
                        self.events
                            .extend(changes.into_iter().flat_map(interest_events));
                    }
                }
            }
        }
    }

    /// Whether the ACL lets the peer publish on (or subscribe to) a route it declared hashed;
    /// a denial is counted (the declaration is ignored: the peer could not be checked sooner).
    pub(super) fn hashed_allowed(
        &mut self,
        route: Option<&Route>,
        pattern: Option<&RoutePattern>,
    ) -> bool {
        let Some(peer) = self.peer else {
            return false;
        };
        let acl = &self.config.acl;
        let allowed = route.is_none_or(|r| acl.may_publish(&peer, r))
            && pattern.is_none_or(|p| acl.may_subscribe(&peer, p));
        if !allowed {
            self.stats.acl_denials += 1;
        }
        allowed
    }
}
