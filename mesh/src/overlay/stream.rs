//! One `(origin, route)` stream as a node sees it: its path to the origin, its place in the
//! tree, and the recent batches it can repair children from.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::{Batch, NodeId, OverlayConfig, Seq, UNREACHABLE};

/// A neighbour's announced distance to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Offer {
    pub(super) epoch: u64,
    pub(super) hops: u8,
}

/// A neighbour that joined this node's part of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Child {
    /// Told where its stream starts (`Joined` sent).
    pub(super) confirmed: bool,
    /// The first sequence number it asked for.
    pub(super) from: Option<Seq>,
}

#[derive(Debug)]
pub(super) struct Stream<P> {
    /// The newest epoch heard (an origin: its own).
    pub(super) epoch: u64,
    /// The epoch of the chosen parent's offer: what this node announces.
    pub(super) seqno: u64,
    /// When the stream is forgotten (an origin: when it announces again).
    pub(super) expires: Instant,
    /// Each neighbour's offer.
    pub(super) offers: BTreeMap<P, Offer>,
    pub(super) parent: Option<P>,
    /// This node's distance to the origin ([`UNREACHABLE`] without a parent).
    pub(super) hops: u8,
    /// Feasibility distance: the newest epoch announced and the smallest distance announced in
    /// it. Invariant: a parent's offer is newer or strictly closer, so it is never a descendant.
    pub(super) fd: Option<(u64, u8)>,
    /// A `Join` went to the parent (and no `Leave` since).
    pub(super) joined: bool,
    pub(super) children: BTreeMap<P, Child>,
    /// A local subscription matches the route.
    pub(super) local: bool,
    /// `Linked` was reported and not yet `Unlinked`.
    pub(super) linked: bool,
    /// An origin's route has children, or had some less than a linger ago (`Wanted`
    /// reported, batches numbered).
    pub(super) wanted: bool,
    /// An origin's wanted route has had no child since then (first seen by a tick).
    pub(super) idle_since: Option<Instant>,
    /// The `from` of the latest `Join` sent to the parent.
    pub(super) asked: Option<Seq>,
    /// The parent answered that `Join` (`Joined`): children can be told their position.
    pub(super) confirmed: bool,
    /// Since when the latest `Join` has waited for its answer (first seen by a tick).
    pub(super) waiting_since: Option<Instant>,
    /// The next sequence number expected; `None` before this node knows its position.
    pub(super) next: Option<Seq>,
    /// The next sequence number to deliver to local subscribers (behind `next` only after
    /// going back for a child).
    pub(super) delivered: Option<Seq>,
    pub(super) cache: VecDeque<Arc<Batch<P>>>,
    pub(super) cache_bytes: usize,
    /// A `Refresh` for epochs below this was forwarded already.
    pub(super) refresh_asked: u64,
}

impl<P: NodeId> Stream<P> {
    pub(super) fn new(epoch: u64, expires: Instant) -> Self {
        Self {
            epoch,
            seqno: 0,
            expires,
            offers: BTreeMap::new(),
            parent: None,
            hops: UNREACHABLE,
            fd: None,
            joined: false,
            children: BTreeMap::new(),
            local: false,
            linked: false,
            wanted: false,
            idle_since: None,
            asked: None,
            confirmed: false,
            waiting_since: None,
            next: None,
            delivered: None,
            cache: VecDeque::new(),
            cache_bytes: 0,
            refresh_asked: 0,
        }
    }

    /// Babel's feasibility condition: an offer of a newer epoch than this node announced, or
    /// of the same epoch and strictly closer to the origin than anything it announced in it.
    pub(super) fn feasible(&self, offer: &Offer) -> bool {
        self.fd.is_none_or(|(epoch, hops)| {
            offer.epoch > epoch || (offer.epoch == epoch && offer.hops < hops)
        })
    }

    /// Children told where their stream starts: the ones batches and gaps go to.
    pub(super) fn confirmed_children(&self) -> Vec<P> {
        let confirmed = self.children.iter().filter(|(_, c)| c.confirmed);
        confirmed.map(|(p, _)| *p).collect()
    }

    /// Keeps a batch for repairs, within the configured bounds.
    pub(super) fn cache(&mut self, batch: Arc<Batch<P>>, config: &OverlayConfig) {
        self.cache_bytes += batch.bytes();
        self.cache.push_back(batch);
        while self.cache.len() > config.cache_batches
            || (self.cache_bytes > config.cache_bytes && self.cache.len() > 1)
        {
            if let Some(old) = self.cache.pop_front() {
                self.cache_bytes -= old.bytes();
            }
        }
    }
}
