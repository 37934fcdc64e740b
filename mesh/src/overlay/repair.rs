//! The data path of the tree machine: joining children are told their position and served
//! from the cache (going back upstream when it starts too late), batches and gaps flow down.

use std::sync::Arc;

use super::{Action, Batch, Frame, Key, NodeId, Overlay, Seq};

impl<P: NodeId> Overlay<P> {
    /// Tells a child where its stream starts, and sends it what the cache holds from its `from`.
    /// A relay whose cache starts after that first asks its own parent to go back (the child
    /// waits); only what no node upstream holds is reported as a gap.
    pub(super) fn confirm(&mut self, key: &Key<P>, child: P) {
        let own = key.0 == self.me;
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        let Some(position) = s.next.filter(|_| own || s.confirmed) else {
            return;
        };
        let Some(entry) = s.children.get_mut(&child) else {
            return;
        };
        let from = entry.from.map_or(position, |from| from.min(position));
        let held = s.cache.front().map_or(position, |b| b.first.max(from));
        if held > from
            && !own
            && s.asked.is_none_or(|asked| asked > from)
            && let Some(parent) = s.parent
        {
            s.asked = Some(from);
            s.confirmed = false;
            let frame = Frame::Join {
                origin: key.0,
                route: key.1.clone(),
                from: Some(from),
            };
            self.send(parent, frame);
            return;
        }
        entry.confirmed = true;
        let asked = entry.from;
        let (origin, route) = key.clone();
        let mut frames = vec![Frame::Joined {
            origin,
            route: route.clone(),
            from: asked,
            next: from,
        }];
        if from < position {
            if held > from {
                frames.push(Frame::Gap {
                    origin,
                    route,
                    first: from,
                    end: held,
                });
            }
            for batch in s.cache.iter().filter(|b| b.end() > from) {
                frames.push(Frame::Data(batch.clone()));
            }
        }
        for frame in frames {
            self.send(child, frame);
        }
    }

    pub(super) fn on_joined(&mut self, from: P, key: &Key<P>, asked: Option<Seq>, next: Seq) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        // Only the answer to the latest Join counts.
        if s.parent != Some(from) || !s.joined || s.asked != asked || s.confirmed {
            return;
        }
        s.confirmed = true;
        if s.next.is_none_or(|current| next < current) {
            // Going back (or starting): the batches from `next` on follow, in order.
            s.next = Some(next);
            s.cache.clear();
            s.cache_bytes = 0;
        }
        let pending: Vec<P> = s
            .children
            .iter()
            .filter(|(_, c)| !c.confirmed)
            .map(|(p, _)| *p)
            .collect();
        self.link(key);
        for child in pending {
            self.confirm(key, child);
        }
    }

    pub(super) fn link(&mut self, key: &Key<P>) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if s.local && !s.linked && s.next.is_some() {
            s.linked = true;
            self.actions.push_back(Action::Linked {
                origin: key.0,
                route: key.1.clone(),
            });
        }
    }

    pub(super) fn on_data(&mut self, from: P, batch: Arc<Batch<P>>) {
        let key = (batch.origin, batch.route.clone());
        let Some(s) = self.streams.get_mut(&key) else {
            self.stats.stale += 1;
            return;
        };
        // Until the parent answered the latest Join, its batches are leftovers of an earlier
        // membership: the answer is followed by everything from our position.
        if s.parent != Some(from) || !s.joined || !s.confirmed {
            self.stats.stale += 1;
            return;
        }
        let start = s.next.unwrap_or(batch.first);
        if batch.end() <= start {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.received += 1;
        s.next = Some(batch.end());
        s.cache(batch.clone(), &self.config);
        // Local delivery has its own position: after going back for a child, batches this
        // node delivered already come again.
        let delivered = s.delivered.unwrap_or(start).max(start);
        let skip = delivered.saturating_sub(batch.first) as usize;
        let fresh = batch.end() > delivered;
        if fresh {
            s.delivered = Some(batch.end());
        }
        let hops = s.hops;
        let local = s.local;
        let children = s.confirmed_children();
        self.link(&key);
        let missing = batch.first.saturating_sub(delivered);
        if missing > 0 {
            self.lost(&key, missing);
        }
        for child in children {
            self.stats.forwarded += 1;
            self.send(child, Frame::Data(batch.clone()));
        }
        if local && fresh {
            self.actions
                .push_back(Action::Deliver { batch, skip, hops });
        }
    }

    pub(super) fn on_gap(&mut self, from: P, key: &Key<P>, first: Seq, end: Seq) {
        let Some(s) = self.streams.get_mut(key) else {
            return;
        };
        if s.parent != Some(from) || !s.joined || !s.confirmed {
            return;
        }
        let start = s.next.unwrap_or(first);
        if end <= start {
            return;
        }
        s.next = Some(end);
        let delivered = s.delivered.unwrap_or(start).max(start);
        let count = end.saturating_sub(first.max(delivered));
        s.delivered = Some(delivered.max(end));
        let children = s.confirmed_children();
        if count > 0 {
            self.lost(key, count);
        }
        for child in children {
            let frame = Frame::Gap {
                origin: key.0,
                route: key.1.clone(),
                first,
                end,
            };
            self.send(child, frame);
        }
    }

    pub(super) fn lost(&mut self, key: &Key<P>, count: u64) {
        if self.streams.get(key).is_some_and(|s| s.linked) {
            self.stats.lost += count;
            self.actions.push_back(Action::Lost {
                origin: key.0,
                route: key.1.clone(),
                count,
            });
        }
    }
}
