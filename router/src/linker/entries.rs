//! The table's entries: an intent or an interest, local or a peer's, with its links.

use super::*;

/// The publishing side of an intent entry.
pub(crate) enum IntentSide {
    /// A local [`Intent`](crate::Intent).
    Local(Arc<dyn IntentSlot>),
    /// A peer's intent: payloads from the endpoint fan in to linked local interests.
    Peer(Arc<PeerIntent>),
}

/// The subscribing side of an interest entry.
pub(crate) enum InterestSide {
    /// A local [`Interest`](crate::Interest).
    Local(Arc<dyn InterestSlot>),
    /// A peer's interest: the endpoint's sink.
    Peer(Arc<dyn PayloadSink>),
}

pub(crate) struct IntentEntry {
    pub(crate) route: Route,
    pub(crate) fingerprint: Fingerprint,
    /// The type's schema, kept only when `fingerprint` is its default one (not an override).
    pub(crate) schema: Option<Arc<Schema>>,
    /// Declared to peers hashed, with this many readable path segments.
    pub(crate) hashed: Option<usize>,
    pub(crate) qos: Qos,
    pub(crate) origin: Origin,
    /// The Rust type, for local intents (same name + fingerprint but another type: refused).
    pub(crate) type_id: Option<TypeId>,
    pub(crate) side: IntentSide,
    pub(super) links: BTreeSet<HandleId>,
}

pub(crate) struct InterestEntry {
    pub(crate) pattern: RoutePattern,
    pub(crate) fingerprint: Fingerprint,
    /// As [`IntentEntry::schema`].
    pub(crate) schema: Option<Arc<Schema>>,
    /// As [`IntentEntry::hashed`].
    pub(crate) hashed: Option<usize>,
    /// Kept messages asked of each publisher it links to (a local one's queue knows it too;
    /// a peer's comes with its declaration).
    pub(crate) history: usize,
    pub(crate) origin: Origin,
    pub(crate) type_id: Option<TypeId>,
    pub(crate) side: InterestSide,
    pub(super) links: BTreeSet<HandleId>,
}

impl IntentEntry {
    pub(crate) fn new(
        route: Route,
        fingerprint: Fingerprint,
        qos: Qos,
        origin: Origin,
        type_id: Option<TypeId>,
        side: IntentSide,
    ) -> Self {
        Self {
            route,
            fingerprint,
            schema: None,
            hashed: None,
            qos,
            origin,
            type_id,
            side,
            links: BTreeSet::new(),
        }
    }
}

impl InterestEntry {
    pub(crate) fn new(
        pattern: RoutePattern,
        fingerprint: Fingerprint,
        origin: Origin,
        type_id: Option<TypeId>,
        side: InterestSide,
    ) -> Self {
        Self {
            pattern,
            fingerprint,
            schema: None,
            hashed: None,
            history: 0,
            origin,
            type_id,
            side,
            links: BTreeSet::new(),
        }
    }
}

impl IntentEntry {
    /// Keeps `schema` if the fingerprint is the one it makes (see [`verified`]).
    pub(crate) fn with_schema(mut self, schema: Option<Arc<Schema>>) -> Self {
        self.schema = verified(self.route.type_name(), self.fingerprint, schema);
        self
    }

    /// Declares it to peers hashed (local entries).
    pub(crate) fn hashed(mut self, hashed: Option<usize>) -> Self {
        self.hashed = hashed;
        self
    }
}

impl InterestEntry {
    /// Keeps `schema` if the fingerprint is the one it makes (see [`verified`]).
    pub(crate) fn with_schema(mut self, schema: Option<Arc<Schema>>) -> Self {
        self.schema = verified(self.pattern.type_name(), self.fingerprint, schema);
        self
    }

    /// Declares it to peers hashed (local entries with an exact pattern).
    pub(crate) fn hashed(mut self, hashed: Option<usize>) -> Self {
        self.hashed = hashed;
        self
    }

    /// Asks each publisher it links to for up to `history` kept messages.
    pub(crate) fn history(mut self, history: usize) -> Self {
        self.history = history;
        self
    }
}

/// `schema` when `fingerprint` is its default fingerprint: a declared schema that does not
/// make the declared fingerprint (an overridden fingerprint, or a lie) is ignored, and the
/// fingerprint alone decides.
fn verified(
    type_name: &str,
    fingerprint: Fingerprint,
    schema: Option<Arc<Schema>>,
) -> Option<Arc<Schema>> {
    schema.filter(|schema| fingerprint_is_of_schema(type_name, fingerprint, schema))
}

pub(super) enum Entry {
    Intent(IntentEntry),
    Interest(InterestEntry),
}

impl Entry {
    pub(super) fn type_name(&self) -> &str {
        match self {
            Self::Intent(e) => e.route.type_name(),
            Self::Interest(e) => e.pattern.type_name(),
        }
    }

    pub(super) fn origin(&self) -> Origin {
        match self {
            Self::Intent(e) => e.origin,
            Self::Interest(e) => e.origin,
        }
    }

    /// The local handle behind the entry (peer entries have none).
    pub(super) fn slot(&self) -> Option<Slot> {
        match self {
            Self::Intent(IntentEntry {
                side: IntentSide::Local(slot),
                ..
            }) => Some(Slot::Intent(slot.clone())),
            Self::Interest(InterestEntry {
                side: InterestSide::Local(slot),
                ..
            }) => Some(Slot::Interest(slot.clone())),
            _ => None,
        }
    }

    pub(super) fn links_mut(&mut self) -> &mut BTreeSet<HandleId> {
        match self {
            Self::Intent(e) => &mut e.links,
            Self::Interest(e) => &mut e.links,
        }
    }
}
