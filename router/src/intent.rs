//! The publisher handle [`Intent`] and its fan-out.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::arena::Arena;
use bytes::Bytes;
use dndm_core::{
    Fingerprint, Message, Overflow, PayloadSink, PeerId, Qos, Route, SinkError, SubscriberFeedback,
    Undelivered,
};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{SendError, SendErrorKind, WaitError};
use crate::events::{EventHub, LinkEvent, LinkEvents};
use crate::history::{History, Limits};
use crate::id::HandleId;
use crate::linker::IntentSlot;
use crate::queue::{Push, Queue};
use crate::ring::Ring;
use crate::shared::Inner;
use crate::sync::{Mutex, lock};

/// Where an intent's messages go, besides the ring.
enum Sink<T> {
    /// A local interest's queue (`DropNewest`, or larger than the ring): gets the `Arc<T>`
    /// itself (zero copy).
    Local(Arc<Queue<T>>),
    /// A peer's interest: gets the encoded bytes (encoded once per message). Only the
    /// `primary` link of each peer sends: a peer with several matching interests (`a.*` and
    /// `a.b`) gets each message once and fans it in to all of them itself.
    Peer {
        sink: Arc<dyn PayloadSink>,
        peer: PeerId,
        primary: bool,
        /// Set when a send gave up waiting for this sink: later sends do not wait for it
        /// (they drop for it at once, counted) until it takes a message again, so a vanished
        /// or stalled peer costs the publisher one send timeout, not one per message.
        lagging: Arc<AtomicBool>,
    },
}

impl<T> Clone for Sink<T> {
    fn clone(&self) -> Self {
        match self {
            Self::Local(queue) => Self::Local(queue.clone()),
            Self::Peer {
                sink,
                peer,
                primary,
                lagging,
            } => Self::Peer {
                sink: sink.clone(),
                peer: *peer,
                primary: *primary,
                lagging: lagging.clone(),
            },
        }
    }
}

/// The linked sinks, each with its interest's id.
type Sinks<T> = Vec<(HandleId, Sink<T>)>;

/// Publisher state shared between the handle and the linker.
pub(crate) struct IntentShared<T> {
    /// The route it publishes on (history is sent to a peer on it).
    route: Route,
    /// The linked sinks, replaced wholesale by the linker's changes (applied one at a time), read
    /// lock-free by `send`.
    sinks: ArcSwap<Vec<(HandleId, Sink<T>)>>,
    status: watch::Sender<Status>,
    events: EventHub,
    /// Local `Block` and `DropOldest` subscribers read from here (made at the first link).
    ring: OnceLock<Arc<Ring<T>>>,
    /// The ring's size: the router's default queue capacity (a larger first subscriber's
    /// capacity wins), rounded up to a power of two.
    ring_capacity: usize,
    /// Whether `sinks` is non-empty (so a send to rings only need not load it).
    has_sinks: AtomicBool,
    /// Set by `close`: what `status.closed` says, readable without the watch's lock.
    closed: AtomicBool,
    /// What `status.subscribers` says, readable without the watch's lock (`try_send` checks it).
    subscriber_count: AtomicUsize,
    pub(crate) sent: AtomicU64,
    pub(crate) send_failures: AtomicU64,
    /// Messages that did not reach a peer subscriber, one count per reason, indexed like
    /// [`Undelivered::ALL`]. Touched only when something is undelivered; the total is their sum.
    undelivered: [AtomicU64; Undelivered::ALL.len()],
    /// Messages peers' subscribers received and then dropped (their queues were full), as
    /// their nodes reported back.
    remote_dropped: AtomicU64,
    /// Per peer: drops reported in total, lag and capacity at the last report (touched only
    /// when a report comes, every 100 ms at most per peer).
    peer_feedback: Mutex<BTreeMap<PeerId, SubscriberFeedback>>,
    /// The messages kept for late subscribers (`PublishOptions::history`). Sends record and
    /// load `sinks` under its lock, links that hand history over add their sink under it: the
    /// seam between history and live messages (see `history.rs`).
    history: Option<Mutex<History<T>>>,
}

/// Subscriber count and closed flag, watched by `interested()`.
#[derive(Debug, Clone, Copy, Default)]
struct Status {
    subscribers: usize,
    closed: bool,
}

impl<T: Message> IntentShared<T> {
    /// A new intent's state; `ring_capacity` is the router's default queue capacity, `history`
    /// what it keeps for late subscribers.
    pub(crate) fn new(route: Route, ring_capacity: usize, history: Option<Limits>) -> Self {
        Self {
            route,
            sinks: ArcSwap::from_pointee(Vec::new()),
            ring: OnceLock::new(),
            ring_capacity,
            has_sinks: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            subscriber_count: AtomicUsize::new(0),
            status: watch::Sender::new(Status::default()),
            events: EventHub::new(),
            sent: AtomicU64::new(0),
            send_failures: AtomicU64::new(0),
            undelivered: std::array::from_fn(|_| AtomicU64::new(0)),
            remote_dropped: AtomicU64::new(0),
            peer_feedback: Mutex::new(BTreeMap::new()),
            history: history.map(|limits| Mutex::new(History::new(limits))),
        }
    }

    /// Adds a peer's sink: the peer's first for this intent sends, later ones only count.
    fn add_peer_sink(&self, interest: HandleId, peer: PeerId, sink: Arc<dyn PayloadSink>) {
        self.update(|sinks| {
            let primary = !sinks
                .iter()
                .any(|(_, s)| matches!(s, Sink::Peer { peer: p, .. } if *p == peer));
            sinks.push((
                interest,
                Sink::Peer {
                    sink,
                    peer,
                    primary,
                    lagging: Arc::new(AtomicBool::new(false)),
                },
            ));
        });
    }

    /// Records a message in the history (if the intent keeps one) and loads the sinks, both
    /// under the history's lock; `None` when there is no history (the caller loads the sinks
    /// itself).
    fn record(&self, message: &Arc<T>) -> Option<arc_swap::Guard<Arc<Sinks<T>>>> {
        let history = self.history.as_ref()?;
        let mut history = lock(history);
        history.record(message.clone(), message.encoded_len(), Instant::now());
        Some(self.sinks.load())
    }

    fn update(&self, f: impl FnOnce(&mut Vec<(HandleId, Sink<T>)>)) {
        let mut sinks = Vec::clone(&self.sinks.load());
        f(&mut sinks);
        let subscribers = sinks.len() + self.ring.get().map_or(0, |r| r.linked());
        self.has_sinks.store(!sinks.is_empty(), Ordering::Release);
        self.sinks.store(Arc::new(sinks));
        self.subscriber_count.store(subscribers, Ordering::Release);
        self.status.send_modify(|s| s.subscribers = subscribers);
    }

    /// The count of messages undelivered for `reason`.
    fn undelivered_count(&self, reason: Undelivered) -> &AtomicU64 {
        let at = Undelivered::ALL
            .iter()
            .position(|r| *r == reason)
            // Invariant: `Undelivered::ALL` lists every variant (dndm-core's
            // `all_lists_every_undelivered_reason_once` test walks them all).
            .expect("Undelivered::ALL lists every reason");
        &self.undelivered[at]
    }

    /// Messages that did not reach a peer subscriber, all reasons.
    fn undelivered_total(&self) -> u64 {
        self.undelivered
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }
}

impl<T: Message> IntentSlot for IntentShared<T> {
    fn link_local(&self, interest: HandleId, queue: &Arc<dyn Any + Send + Sync>) -> bool {
        match queue.clone().downcast::<Queue<T>>() {
            Ok(queue) => {
                // A subscriber that asks for history gets it and its sink under the history's
                // lock; it takes the queue path (a ring cursor would start at the ring's tail,
                // which can be behind what was recorded).
                if let Some(history) = &self.history
                    && queue.history_wanted() > 0
                {
                    let mut history = lock(history);
                    queue.preload(history.latest(queue.history_wanted(), Instant::now()));
                    self.update(|sinks| sinks.push((interest, Sink::Local(queue))));
                    return true;
                }
                let ring = self.ring.get_or_init(|| {
                    Arc::new(Ring::new(
                        self.ring_capacity.max(queue.capacity()),
                        |m: &T| m.encoded_len(),
                    ))
                });
                if queue.fits(ring) {
                    queue.link_to(ring, interest);
                    self.update(|_| {});
                } else {
                    self.update(|sinks| sinks.push((interest, Sink::Local(queue))));
                }
                true
            }
            Err(_) => false,
        }
    }

    fn link_peer(
        &self,
        interest: HandleId,
        peer: PeerId,
        sink: Arc<dyn PayloadSink>,
        history: usize,
    ) {
        let kept = self.history.as_ref().filter(|_| history > 0).map(lock);
        let primary = !self
            .sinks
            .load()
            .iter()
            .any(|(_, s)| matches!(s, Sink::Peer { peer: p, .. } if *p == peer));
        // Only a peer that gets nothing of this intent yet gets its history: one that does
        // fans every message in to all its matching interests itself, so history sent again
        // would reach the old ones twice, and live messages could overtake it at the new one.
        if let Some(mut kept) = kept.filter(|_| primary) {
            let mut refused = 0;
            for message in kept.latest(history, Instant::now()) {
                if sink.try_send(&self.route, encode(&*message)).is_err() {
                    refused += 1;
                }
            }
            if refused > 0 {
                let route = self.route.clone();
                self.undelivered(peer, &route, refused, Undelivered::Timeout);
            }
            // The sink is added under the history's lock: the seam (see `history.rs`).
            self.add_peer_sink(interest, peer, sink);
            return;
        }
        self.add_peer_sink(interest, peer, sink);
    }

    fn unlink(&self, interest: HandleId) {
        if self.ring.get().is_some_and(|r| r.unlink(interest)) {
            self.update(|_| {});
            return;
        }
        self.update(|sinks| {
            let Some(at) = sinks.iter().position(|(id, _)| *id == interest) else {
                return;
            };
            let (_, removed) = sinks.remove(at);
            // The peer's remaining links, if any, need a sender.
            if let Sink::Peer {
                peer,
                primary: true,
                ..
            } = removed
                && let Some((_, Sink::Peer { primary, .. })) = sinks
                    .iter_mut()
                    .find(|(_, s)| matches!(s, Sink::Peer { peer: p, .. } if *p == peer))
            {
                *primary = true;
            }
        });
    }

    fn event(&self, event: LinkEvent) {
        self.events.send(event);
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.has_sinks.store(false, Ordering::Release);
        self.sinks.store(Arc::new(Vec::new()));
        if let Some(ring) = self.ring.get() {
            ring.unlink_all();
        }
        self.subscriber_count.store(0, Ordering::Release);
        self.status.send_modify(|s| {
            s.subscribers = 0;
            s.closed = true;
        });
    }

    fn subscribers(&self) -> usize {
        self.subscriber_count.load(Ordering::Acquire)
    }

    fn counters(&self) -> (u64, u64, Vec<(Undelivered, u64)>) {
        let undelivered = Undelivered::ALL
            .iter()
            .zip(&self.undelivered)
            .map(|(reason, count)| (*reason, count.load(Ordering::Relaxed)))
            .filter(|(_, count)| *count > 0)
            .collect();
        (
            self.sent.load(Ordering::Relaxed),
            self.send_failures.load(Ordering::Relaxed),
            undelivered,
        )
    }

    fn peer_feedback(&self) -> Vec<(PeerId, SubscriberFeedback)> {
        lock(&self.peer_feedback)
            .iter()
            .map(|(peer, feedback)| (*peer, *feedback))
            .collect()
    }

    fn feedback(&self, peer: PeerId, route: &Route, feedback: SubscriberFeedback) {
        {
            let mut all = lock(&self.peer_feedback);
            let total = all.entry(peer).or_default();
            total.dropped_oldest += feedback.dropped_oldest;
            total.dropped_newest += feedback.dropped_newest;
            total.lag = feedback.lag;
            total.capacity = feedback.capacity;
        }
        for (count, reason) in [
            (feedback.dropped_oldest, Overflow::DropOldest),
            (feedback.dropped_newest, Overflow::DropNewest),
        ] {
            if count > 0 {
                self.remote_dropped.fetch_add(count, Ordering::Relaxed);
                self.events.send(LinkEvent::Dropped {
                    peer,
                    route: route.clone(),
                    count,
                    reason,
                });
            }
        }
        let dropped = feedback.dropped_oldest + feedback.dropped_newest > 0;
        if dropped || feedback.lag.saturating_mul(2) >= feedback.capacity.max(1) {
            self.events.send(LinkEvent::SlowConsumer {
                peer,
                route: route.clone(),
                lag: feedback.lag,
                capacity: feedback.capacity,
            });
        }
    }

    fn undelivered(&self, peer: PeerId, route: &Route, count: u64, reason: Undelivered) {
        self.undelivered_count(reason)
            .fetch_add(count, Ordering::Relaxed);
        self.events.send(LinkEvent::Undelivered {
            peer,
            route: route.clone(),
            count,
            reason,
        });
    }
}

/// A publisher of `T` on one route.
///
/// Messages go to every linked interest: local interests get the same `Arc<T>` (no copy), peer
/// interests get the message encoded once. Dropping the intent (or [`Intent::close`]) unlinks it
/// everywhere, including in peers' adverts.
pub struct Intent<T: Message> {
    pub(crate) id: HandleId,
    pub(crate) route: Route,
    /// Its schema fingerprint (`T`'s, or a raw intent's own).
    pub(crate) fingerprint: Fingerprint,
    pub(crate) qos: Qos,
    pub(crate) send_timeout: Duration,
    pub(crate) shared: Arc<IntentShared<T>>,
    pub(crate) router: Arc<Inner>,
    /// Where messages for peers are encoded.
    pub(crate) arena: Arena,
}

impl<T: Message> Intent<T> {
    /// Sends a message to every linked subscriber.
    ///
    /// Never waits for `DropOldest` and `DropNewest` subscribers; waits for full local `Block`
    /// subscribers and for peers whose link has no room for the message, up to the send timeout
    /// (one deadline for the whole send). A peer that made a send time out is not waited for
    /// again until it takes a message: meanwhile messages for it are dropped at once, each
    /// counted ([`Intent::undelivered`]) and reported ([`LinkEvent::Undelivered`]). A message
    /// with no subscriber is dropped (check [`Intent::interested`] first when that matters).
    ///
    /// # Cancel safety
    /// Cancelling while waiting on a full subscriber may leave the message delivered to some
    /// subscribers and not to others.
    ///
    /// # Errors
    /// [`SendErrorKind::Closed`] when the intent or router is closed;
    /// [`SendErrorKind::Timeout`] when a `Block` subscriber or a peer stayed full (every other
    /// subscriber got the message). The error hands the message back.
    pub async fn send(&self, message: T) -> Result<(), SendError<T>> {
        self.send_arc(Arc::new(message)).await
    }

    /// Sends a shared message: every local subscriber receives this very `Arc`.
    ///
    /// # Cancel safety
    /// As [`Intent::send`].
    ///
    /// # Errors
    /// As [`Intent::send`].
    pub async fn send_arc(&self, message: Arc<T>) -> Result<(), SendError<T>> {
        // Take part in tokio's cooperative budget, like tokio's channels: a publisher that never
        // waits still yields now and then, so its subscribers get to run.
        std::future::poll_fn(|cx| tokio::task::coop::poll_proceed(cx).map(|c| c.made_progress()))
            .await;
        if self.is_closed() {
            return Err(self.fail(SendErrorKind::Closed, message));
        }
        // Most intents reach only rings: skip loading the sink list then (it costs atomic
        // operations on every send).
        let loaded;
        let sinks: &[(HandleId, Sink<T>)] = if let Some(recorded) = self.shared.record(&message) {
            loaded = recorded;
            &loaded
        } else if self.shared.has_sinks.load(Ordering::Acquire) {
            loaded = self.shared.sinks.load();
            &loaded
        } else {
            &[]
        };
        // Pass 1: offer to every local queue without waiting or waking; one fence, then wake
        // the consumers that sleep. Full `Block` queues are remembered for pass 2.
        let mut full: Vec<(&Arc<Queue<T>>, Arc<T>)> = Vec::new();
        for (_, sink) in sinks.iter() {
            if let Sink::Local(queue) = sink
                && let Push::Full(back) = queue.offer(message.clone())
            {
                full.push((queue, back));
            }
        }
        if !sinks.is_empty() {
            fence(Ordering::SeqCst);
            for (_, sink) in sinks.iter() {
                if let Sink::Local(queue) = sink {
                    queue.wake_if_parked();
                }
            }
        }
        // The ring (local `Block` and `DropOldest` subscribers): one write, waiting for room.
        let mut undelivered = 0;
        let mut deadline = None;
        if let Some(ring) = self.shared.ring.get() {
            undelivered += ring
                .send(message.clone(), self.send_timeout, &mut deadline)
                .await;
        }
        // Pass 2: wait for full queues (each wakes its own consumer), then peers.
        if !full.is_empty() {
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + self.send_timeout);
            for (queue, back) in full {
                if let Push::Full(_) = queue.push(back, Some(deadline)).await {
                    undelivered += 1;
                }
            }
        }
        let mut encoded: Option<Bytes> = None;
        for (_, sink) in sinks.iter() {
            let Sink::Peer {
                sink,
                peer,
                primary: true,
                lagging,
            } = sink
            else {
                continue;
            };
            let bytes = encoded
                .get_or_insert_with(|| self.arena.encode(&*message))
                .clone();
            let sent = match sink.try_send(&self.route, bytes.clone()) {
                Err(SinkError::Full) if !lagging.load(Ordering::Relaxed) => {
                    // Wait for room under the send's one deadline, like a local `Block`
                    // subscriber: a peer never holds a publisher longer than that.
                    let deadline =
                        *deadline.get_or_insert_with(|| Instant::now() + self.send_timeout);
                    match tokio::time::timeout_at(deadline, sink.send(&self.route, bytes)).await {
                        Ok(sent) => sent,
                        Err(_) => {
                            lagging.store(true, Ordering::Relaxed);
                            Err(SinkError::Full)
                        }
                    }
                }
                other => other,
            };
            match sent {
                Ok(()) => lagging.store(false, Ordering::Relaxed),
                Err(SinkError::Full) => {
                    undelivered += 1;
                    self.shared
                        .undelivered(*peer, &self.route, 1, Undelivered::Timeout);
                }
                // A peer that went away is unlinked by the endpoint; nothing to report.
                Err(_) => {}
            }
        }
        if undelivered > 0 {
            return Err(self.fail(SendErrorKind::Timeout { undelivered }, message));
        }
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends without ever waiting: a full `Block` subscriber does not get the message.
    ///
    /// # Errors
    /// [`SendErrorKind::Closed`] when closed; [`SendErrorKind::NoSubscribers`] when nobody
    /// (local or peer) subscribes and the intent keeps no history; [`SendErrorKind::Full`] when a `Block` subscriber (local or
    /// peer) was full (every other subscriber got the message).
    pub fn try_send(&self, message: T) -> Result<(), SendError<T>> {
        let message = Arc::new(message);
        if self.is_closed() {
            return Err(self.fail(SendErrorKind::Closed, message));
        }
        // With a history, a message nobody receives yet is kept for late subscribers: sent.
        let sinks = match self.shared.record(&message) {
            Some(sinks) => sinks,
            None if self.shared.subscribers() == 0 => {
                return Err(self.fail(SendErrorKind::NoSubscribers, message));
            }
            None => self.shared.sinks.load(),
        };
        let mut encoded: Option<Bytes> = None;
        let mut undelivered = 0;
        if let Some(ring) = self.shared.ring.get()
            && let Err(back) = ring.offer(message.clone())
        {
            undelivered += ring.force(back);
        }
        for (_, sink) in sinks.iter() {
            let full = match sink {
                Sink::Local(queue) => matches!(queue.try_push(message.clone()), Push::Full(_)),
                Sink::Peer { primary: false, .. } => false,
                Sink::Peer {
                    sink,
                    peer,
                    primary: true,
                    lagging,
                } => {
                    let bytes = encoded
                        .get_or_insert_with(|| self.arena.encode(&*message))
                        .clone();
                    let full = matches!(sink.try_send(&self.route, bytes), Err(SinkError::Full));
                    if full {
                        self.shared
                            .undelivered(*peer, &self.route, 1, Undelivered::Timeout);
                    } else {
                        lagging.store(false, Ordering::Relaxed);
                    }
                    full
                }
            };
            undelivered += usize::from(full);
        }
        if undelivered > 0 {
            return Err(self.fail(SendErrorKind::Full { undelivered }, message));
        }
        self.shared.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until at least one subscriber is linked; returns the subscriber count.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// # Errors
    /// [`WaitError::Closed`] when the intent or router closes first.
    pub async fn interested(&self) -> Result<usize, WaitError> {
        let mut status = self.shared.status.subscribe();
        let status = status
            .wait_for(|s| s.subscribers > 0 || s.closed)
            .await
            .map_err(|_| WaitError::Closed)?;
        if status.subscribers > 0 {
            Ok(status.subscribers)
        } else {
            Err(WaitError::Closed)
        }
    }

    /// [`Intent::interested`] with a timeout.
    ///
    /// # Cancel safety
    /// Cancel safe.
    ///
    /// # Errors
    /// [`WaitError::Timeout`] when nobody subscribed in time; [`WaitError::Closed`].
    pub async fn wait_for_interest(&self, timeout: Duration) -> Result<usize, WaitError> {
        match tokio::time::timeout(timeout, self.interested()).await {
            Ok(result) => result,
            Err(_) => Err(WaitError::Timeout(timeout)),
        }
    }

    /// Messages that did not reach a peer subscriber: it stayed full past the send timeout, or
    /// its link gave them up (see [`LinkEvent::Undelivered`] for each case and its reason). The
    /// sum of [`Intent::undelivered_by`] over [`Undelivered::ALL`].
    pub fn undelivered(&self) -> u64 {
        self.shared.undelivered_total()
    }

    /// Messages that reached a peer's subscriber and were dropped there because its queue was
    /// full, all peers together, as their nodes reported back (each report is also a
    /// [`LinkEvent::Dropped`]). Reports come at most every 100 ms per link, so this trails the
    /// subscriber's own count by up to that.
    pub fn dropped_by_subscribers(&self) -> u64 {
        self.shared.remote_dropped.load(Ordering::Relaxed)
    }

    /// Messages that did not reach a peer subscriber for `reason`, all peers together, since
    /// the intent was declared. [`Undelivered::Timeout`] counts sends that gave up on a full
    /// peer ([`Intent::send`], [`Intent::try_send`]) and messages a link had no room for; the
    /// other reasons count what endpoints report ([`LinkEvent::Undelivered`]).
    pub fn undelivered_by(&self, reason: Undelivered) -> u64 {
        self.shared
            .undelivered_count(reason)
            .load(Ordering::Relaxed)
    }

    /// Number of linked subscribers (local and peer interests).
    pub fn subscriber_count(&self) -> usize {
        self.shared.subscribers()
    }

    /// A stream of link events (linked, unlinked, refused). The first call also returns the
    /// events since this handle was declared (so a refusal decided while declaring it is not
    /// missed), as many as fit the bounded channel; later calls get events from now on.
    pub fn events(&self) -> LinkEvents {
        self.shared.events.listen()
    }

    /// The route this intent publishes on.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The schema fingerprint advertised for this intent.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The quality of service of this intent.
    pub fn qos(&self) -> Qos {
        self.qos
    }

    /// This intent's id in snapshots and link events.
    pub fn id(&self) -> HandleId {
        self.id
    }

    /// Whether the intent (or its router) is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Unlinks the intent everywhere; later sends fail with [`SendErrorKind::Closed`].
    pub fn close(&self) {
        self.router.remove_handle(self.id);
    }

    fn fail(&self, kind: SendErrorKind, message: Arc<T>) -> SendError<T> {
        self.shared.send_failures.fetch_add(1, Ordering::Relaxed);
        SendError::new(kind, message)
    }
}

/// Encodes a message for peers, once per send.
fn encode<T: Message>(message: &T) -> Bytes {
    Bytes::from(message.encode_to_vec())
}

impl<T: Message> Drop for Intent<T> {
    fn drop(&mut self) {
        self.router.remove_handle(self.id);
    }
}

impl<T: Message> std::fmt::Debug for Intent<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intent")
            .field("id", &self.id)
            .field("route", &self.route)
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}
