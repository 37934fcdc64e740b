//! Multi-hop mode ([`MeshConfig::multi_hop`](crate::MeshConfig::multi_hop)): one actor drives
//! the tree machine ([`Overlay`]) and the membership policy ([`Membership`]) with a
//! `/dndm/tree/1.0.0` libp2p stream per neighbour, and the router through its port.
//!
//! - Every neighbour link is one stream with a reader task and a writer task. The reader
//!   decodes and checks messages (a bad one closes the link and is counted); the writer drains
//!   an unbounded queue whose size in bytes the actor watches.
//! - A local route that some node joined is a peer interest of this node on the router
//!   ([`OriginSink`]): the router hands its messages over, the actor batches and signs them
//!   ([`wire::sign`]). Local publishing waits while any neighbour has more than
//!   [`HIGH_WATER`] bytes queued; a neighbour past [`CUT_OFF`] is cut (it does not read).
//! - A remote stream linked here becomes a peer intent of its origin on the router; every batch
//!   is verified against the origin's key before it is carried on or delivered.
//! - The membership policy dials through the swarm actor and learns addresses from identify
//!   and from neighbours' exchanges.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dndm_core::{Fingerprint, IntentAd, LocalChange, PeerId, Route, RoutePattern, RouterPort};
use futures::AsyncReadExt as _;
use libp2p::{Multiaddr, StreamProtocol};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::overlay::membership::{Membership, MembershipConfig, Offer};
use crate::overlay::wire::{self, Message};
use crate::overlay::{Action, Frame, Overlay, OverlayStats};
use crate::swarm::Command;

mod link;
mod local;
mod peers;
use link::{Reader, Writer};
use local::Delivery;

/// The tree protocol id on libp2p streams.
pub const TREE_PROTOCOL: StreamProtocol = StreamProtocol::new("/dndm/tree/1.0.0");

/// Bytes queued to one neighbour above which local publishing waits.
pub(crate) const HIGH_WATER: usize = 1 << 20;
/// Bytes queued to one neighbour above which it is cut: it does not read.
pub(crate) const CUT_OFF: usize = 64 << 20;
/// Most messages, and bytes, in one published batch.
const BATCH_PAYLOADS: usize = 256;
const BATCH_BYTES: usize = 64 << 10;
/// Events from link readers and the swarm actor (bounded: readers wait, which back-pressures
/// their neighbours).
const EVENTS: usize = 1024;
/// Messages of local routes waiting to be batched.
const PUBLISHES: usize = 1024;
/// Most addresses remembered for peers not connected.
const ADDRESS_BOOK: usize = 4096;
const TICK: Duration = Duration::from_millis(100);
/// A connection without a tree link that is up is closed after this long.
const LINKLESS_GRACE: Duration = Duration::from_secs(3);

/// Counters of the multi-hop layer ([`MeshEndpoint::tree_stats`](crate::MeshEndpoint::tree_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TreeStats {
    /// The tree machine's counters.
    pub overlay: OverlayStats,
    /// Neighbours now (links with a tree stream).
    pub neighbours: usize,
    /// Most neighbours at any time since the start.
    pub max_neighbours: usize,
    /// Links refused by the membership bound (the peer got an exchange of other peers).
    pub refused: u64,
    /// Links closed for a message that did not decode or check.
    pub bad_messages: u64,
    /// Batches whose origin signature failed (the link that carried one is closed).
    pub bad_signatures: u64,
    /// Neighbours cut because they stopped reading.
    pub cut_slow: u64,
    /// Messages local subscribers could not take: no link, a decode error, or a subscriber so
    /// far behind that the router held more than 64 MiB (or 65,536 messages) of the stream for
    /// it. Never silent: each is also logged.
    pub undeliverable: u64,
    /// Links that went down (closed by either side, or their connection closed), refusals
    /// not counted.
    pub links_lost: u64,
    /// Bytes written to tree streams (the tree protocol's messages with their length
    /// prefixes; libp2p's Noise and Yamux framing not included).
    pub bytes_sent: u64,
    /// Bytes read from tree streams (as `bytes_sent`).
    pub bytes_received: u64,
    /// Dials the membership policy asked for.
    pub dials: u64,
    /// Dials that failed, were refused or went unanswered.
    pub dial_failures: u64,
    /// Peers known but not connected (the passive view).
    pub known_peers: usize,
    /// Connections closed because they carried no tree link for 3 s.
    pub linkless_closed: u64,
}

/// Bytes through every tree stream of the node, counted by the link tasks.
#[derive(Debug, Default)]
pub(crate) struct WireBytes {
    pub(crate) sent: std::sync::atomic::AtomicU64,
    pub(crate) received: std::sync::atomic::AtomicU64,
}

/// What the actor is told.
#[derive(Debug)]
pub(crate) enum TreeEvent {
    /// A tree stream to a peer opened (either direction).
    Stream(libp2p::PeerId, libp2p::Stream),
    /// A neighbour sent a message.
    Message {
        peer: PeerId,
        link: u64,
        message: Message,
    },
    /// A link ended: `bad` names a message that broke the protocol.
    Closed {
        peer: PeerId,
        link: u64,
        bad: Option<String>,
    },
    /// Identify told us where a peer listens.
    Addresses(PeerId, Vec<Multiaddr>),
    /// A dial the policy asked for failed: the peer is unreachable.
    DialFailed(PeerId),
    /// A dial the policy asked for did not start or was cut short on this side (a connection
    /// to the peer exists or is being made, this node's connection limit): no fault of the peer.
    DialBusy(PeerId),
    /// A libp2p connection to a peer closed: its tree stream may be dead, whether or not the
    /// stream noticed (a stream on a closed connection may never wake its reader).
    PeerGone(PeerId),
}

/// The actor's handles, kept by the endpoint.
#[derive(Debug, Clone)]
pub(crate) struct TreeHandle {
    pub(crate) events: mpsc::Sender<TreeEvent>,
    /// The swarm actor's notices (addresses, failed dials, closed connections): unbounded, so
    /// none is lost; as many as the swarm's own events.
    pub(crate) notices: mpsc::UnboundedSender<TreeEvent>,
    pub(crate) locals: mpsc::UnboundedSender<LocalChange>,
}

/// What the actor shows of its trees, refreshed every tick.
#[derive(Debug, Clone, Default)]
pub(crate) struct TreeView {
    pub(crate) streams: Vec<crate::overlay::StreamInfo<PeerId>>,
    pub(crate) neighbours: Vec<TreeNeighbour>,
}

/// A tree link as [`MeshEndpoint::tree_neighbours`](crate::MeshEndpoint::tree_neighbours)
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TreeNeighbour {
    /// The peer.
    pub peer: PeerId,
    /// Both sides took the link (hellos exchanged); otherwise it is being refused or greeted.
    pub up: bool,
    /// Bytes queued to it, not yet written.
    pub queued: usize,
}

#[derive(Debug)]
struct Neighbour {
    link: u64,
    /// What our hello told the peer.
    offer: Offer,
    /// Both sides accepted: the machine knows the neighbour.
    up: bool,
    out: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    /// Close the libp2p connection once the queue is written (refused or evicted).
    disconnect: Arc<AtomicBool>,
}

/// The multi-hop actor. See the module docs.
pub(crate) struct Trees {
    me: PeerId,
    keypair: dndm_core::Keypair,
    port: Arc<dyn RouterPort>,
    overlay: Overlay<PeerId>,
    membership: Membership<PeerId>,
    neighbours: HashMap<PeerId, Neighbour>,
    next_link: u64,
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// Local intents by route.
    intents: HashMap<Route, IntentAd>,
    /// Remote streams' fingerprints, from their announcements.
    fingerprints: HashMap<(PeerId, Route), Fingerprint>,
    /// Sinks of remote streams linked here.
    sinks: HashMap<(PeerId, Route), Delivery>,
    events: mpsc::Receiver<TreeEvent>,
    events_tx: mpsc::Sender<TreeEvent>,
    notices: mpsc::UnboundedReceiver<TreeEvent>,
    locals: mpsc::UnboundedReceiver<LocalChange>,
    publishes: mpsc::Receiver<(Route, Bytes)>,
    publishes_tx: mpsc::Sender<(Route, Bytes)>,
    commands: mpsc::Sender<Command>,
    listening: Arc<dyn Fn() -> Vec<Multiaddr> + Send + Sync>,
    connected: Arc<dyn Fn() -> Vec<libp2p::PeerId> + Send + Sync>,
    /// Connected peers seen without a link that is up, and since when.
    linkless: HashMap<libp2p::PeerId, Instant>,
    drained: Arc<Notify>,
    wire_bytes: Arc<WireBytes>,
    stats: TreeStats,
    stats_tx: watch::Sender<TreeStats>,
    view: Arc<std::sync::Mutex<TreeView>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// What the actor needs from the endpoint.
pub(crate) struct TreeSetup {
    pub(crate) keypair: dndm_core::Keypair,
    pub(crate) port: Arc<dyn RouterPort>,
    pub(crate) overlay: crate::overlay::OverlayConfig,
    pub(crate) max_peers: usize,
    pub(crate) seed: u64,
    pub(crate) bootstrap: Vec<(PeerId, Vec<Multiaddr>)>,
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) listening: Arc<dyn Fn() -> Vec<Multiaddr> + Send + Sync>,
    /// Peers with a live libp2p connection.
    pub(crate) connected: Arc<dyn Fn() -> Vec<libp2p::PeerId> + Send + Sync>,
    pub(crate) stats: watch::Sender<TreeStats>,
    pub(crate) view: Arc<std::sync::Mutex<TreeView>>,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
}

impl Trees {
    /// An actor and the handles to reach it.
    pub(crate) fn new(setup: TreeSetup) -> (Self, TreeHandle) {
        let me = setup.keypair.peer_id();
        let (events_tx, events) = mpsc::channel(EVENTS);
        // Bounded by what feeds them, not by a capacity: the router's changes (one per first or
        // last local route) and the swarm's connection events; neither may be dropped.
        #[allow(clippy::disallowed_methods)]
        let (locals_tx, locals) = mpsc::unbounded_channel();
        #[allow(clippy::disallowed_methods)]
        let (notices_tx, notices) = mpsc::unbounded_channel();
        let (publishes_tx, publishes) = mpsc::channel(PUBLISHES);
        // Two connection slots (of libp2p's `max_peers`) stay free for connections being
        // greeted: a needy newcomer must get as far as its hello to be taken, and with one
        // slot a single connection being refused elsewhere kept it out (the 100-node tests saw
        // most dials denied by the connection limit).
        let spare = if setup.max_peers >= 4 { 2 } else { 1 };
        let mut membership = Membership::new(
            me,
            MembershipConfig::new(setup.max_peers.saturating_sub(spare).max(1)),
            setup.seed,
        );
        let mut addresses = HashMap::new();
        for (peer, addrs) in setup.bootstrap {
            addresses.insert(peer, addrs);
            membership.bootstrap([peer]);
        }
        let handle = TreeHandle {
            events: events_tx.clone(),
            notices: notices_tx,
            locals: locals_tx,
        };
        let actor = Self {
            me,
            keypair: setup.keypair,
            port: setup.port,
            overlay: Overlay::new(me, setup.overlay),
            membership,
            neighbours: HashMap::new(),
            next_link: 0,
            addresses,
            intents: HashMap::new(),
            fingerprints: HashMap::new(),
            sinks: HashMap::new(),
            events,
            events_tx,
            notices,
            locals,
            publishes,
            publishes_tx,
            commands: setup.commands,
            listening: setup.listening,
            connected: setup.connected,
            linkless: HashMap::new(),
            drained: Arc::new(Notify::new()),
            wire_bytes: Arc::default(),
            stats: TreeStats::default(),
            stats_tx: setup.stats,
            view: setup.view,
            tracker: setup.tracker,
            cancel: setup.cancel,
        };
        (actor, handle)
    }

    /// Runs until the endpoint closes.
    pub(crate) async fn run(mut self, local: Vec<LocalChange>) {
        for change in local {
            self.on_local(change);
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let congested = self.congested();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                Some(change) = self.locals.recv() => self.on_local(change),
                Some(notice) = self.notices.recv() => self.on_event(notice),
                Some(event) = self.events.recv() => self.on_event(event),
                Some(first) = self.publishes.recv(), if !congested => self.on_publish(first),
                () = self.drained.notified(), if congested => {}
                _ = tick.tick() => {
                    let now = Instant::now();
                    self.membership.tick(now);
                    self.overlay.tick(now);
                    self.sweep(now);
                    let mut neighbours: Vec<TreeNeighbour> = self
                        .neighbours
                        .iter()
                        .map(|(peer, n)| TreeNeighbour {
                            peer: *peer,
                            up: n.up,
                            queued: n.queued.load(Ordering::Relaxed),
                        })
                        .collect();
                    neighbours.sort_by_key(|n| n.peer);
                    let view = TreeView { streams: self.overlay.streams(), neighbours };
                    // Nothing that can panic runs under this lock.
                    *self.view.lock().unwrap_or_else(|p| p.into_inner()) = view;
                }
            }
            self.carry_out().await;
        }
        for ((origin, route), _) in self.sinks.drain() {
            self.port.remove_peer_intent(&origin, &route);
        }
    }

    fn congested(&self) -> bool {
        self.neighbours
            .values()
            .any(|n| n.queued.load(Ordering::Relaxed) > HIGH_WATER)
    }

    fn on_local(&mut self, change: LocalChange) {
        let now = Instant::now();
        match change {
            LocalChange::IntentAdded(ad) => {
                let route = ad.route.clone();
                self.intents.insert(route.clone(), ad);
                self.overlay.add_intent(route, now);
            }
            LocalChange::IntentRemoved(ad) => {
                self.intents.remove(&ad.route);
                self.overlay.remove_intent(&ad.route, now);
            }
            LocalChange::InterestAdded(ad) => self.overlay.add_interest(ad.pattern),
            LocalChange::InterestRemoved(ad) => self.overlay.remove_interest(&ad.pattern),
            // Services are not carried over trees.
            _ => {}
        }
    }

    fn on_event(&mut self, event: TreeEvent) {
        match event {
            TreeEvent::Stream(peer_id, stream) => self.on_stream(peer_id, stream),
            TreeEvent::Message {
                peer,
                link,
                message,
            } => {
                if self.neighbours.get(&peer).is_some_and(|n| n.link == link) {
                    self.on_message(peer, message);
                }
            }
            TreeEvent::Closed { peer, link, bad } => {
                if self.neighbours.get(&peer).is_none_or(|n| n.link != link) {
                    return;
                }
                if let Some(reason) = bad {
                    tracing::warn!(%peer, %reason, "tree link closed: bad message");
                    self.stats.bad_messages += 1;
                }
                // A connection without a tree link has no use: closing it leaves both sides
                // in one clear state (not connected), which the policy repairs by dialing.
                self.drop_neighbour(peer, true);
            }
            TreeEvent::Addresses(peer, addrs) => self.remember(peer, addrs),
            // Only the policy's own dials count (the swarm reports every failed dial).
            TreeEvent::DialFailed(peer) => {
                if self.membership.is_dialing(&peer) {
                    tracing::debug!(%peer, "tree dial failed");
                    self.membership.dial_failed(peer);
                }
            }
            TreeEvent::DialBusy(peer) => {
                if self.membership.is_dialing(&peer) {
                    tracing::debug!(%peer, "tree dial busy");
                    self.membership.dial_busy(peer, Instant::now());
                }
            }
            TreeEvent::PeerGone(peer) => {
                self.connection_gone(peer);
            }
        }
    }

    fn on_stream(&mut self, peer_id: libp2p::PeerId, stream: libp2p::Stream) {
        let Some(peer) = crate::swarm::dndm_peer(&peer_id) else {
            return;
        };
        if self.neighbours.contains_key(&peer) {
            // A new stream replaces the old one: what was in flight on it may be lost, so the
            // machine sees the link go and come back (children rejoin from their position).
            self.drop_neighbour(peer, false);
        }
        let offer = self.membership.offer(&peer);
        self.spawn_link(peer, peer_id, stream, offer);
        let peers = self.membership.introduce(peer);
        let peers = self.with_addresses(peers);
        self.send(peer, &Message::Hello { offer, peers });
    }

    /// The peer's hello: both sides decide alike from the two offers; the link is up when
    /// both take it. A side that refuses closes the connection.
    fn on_hello(&mut self, peer: PeerId, theirs: Offer) {
        let Some(neighbour) = self.neighbours.get(&peer) else {
            return;
        };
        if neighbour.up {
            return;
        }
        let mine = neighbour.offer;
        let they_take_us = Membership::<PeerId>::verdict(theirs, mine);
        if !self.membership.connected(peer, theirs) {
            // Refused: the membership asked for the disconnect.
            self.stats.refused += 1;
            return;
        }
        if !they_take_us {
            // The peer is full and closes the connection itself.
            self.neighbours.remove(&peer);
            tracing::debug!(%peer, "refused by the peer");
            self.membership.refused(peer, Instant::now());
            return;
        }
        if let Some(neighbour) = self.neighbours.get_mut(&peer) {
            neighbour.up = true;
        }
        self.overlay.neighbour_up(peer);
        self.stats.max_neighbours = self
            .stats
            .max_neighbours
            .max(self.membership.active().len());
    }

    fn on_message(&mut self, peer: PeerId, message: Message) {
        match message {
            Message::Peers { peers, reply } => self.exchanged(peer, peers, reply),
            Message::Hello { offer, peers } => {
                self.learn(peers);
                self.on_hello(peer, offer);
            }
            Message::Frame(frame, fingerprint) => {
                match &frame {
                    Frame::Announce {
                        origin,
                        route,
                        alive,
                        ..
                    } => {
                        let key = (*origin, route.clone());
                        match fingerprint.filter(|_| *alive) {
                            Some(fingerprint) => {
                                self.fingerprints.insert(key, fingerprint);
                            }
                            None if !alive => {
                                self.fingerprints.remove(&key);
                            }
                            None => {}
                        }
                    }
                    Frame::Data(batch) if !wire::verify(batch) => {
                        tracing::warn!(%peer, origin = %batch.origin, route = %batch.route, "batch with a bad signature; closing the link");
                        self.stats.bad_signatures += 1;
                        self.drop_neighbour(peer, true);
                        return;
                    }
                    _ => {}
                }
                if self.neighbours.get(&peer).is_some_and(|n| n.up) {
                    self.overlay.handle(peer, frame, Instant::now());
                }
            }
        }
    }

    /// Carries out what the machines asked for.
    async fn carry_out(&mut self) {
        loop {
            if let Some(action) = self.membership.poll_action() {
                self.on_membership(action);
                continue;
            }
            let Some(action) = self.overlay.poll_action() else {
                break;
            };
            match action {
                Action::Send { to, frame } => self.send_frame(to, frame),
                Action::Linked { origin, route } => self.link(origin, route),
                Action::Unlinked { origin, route } => {
                    if self.sinks.remove(&(origin, route.clone())).is_some() {
                        self.port.remove_peer_intent(&origin, &route);
                    }
                }
                Action::Deliver { batch, skip, .. } => self.deliver(&batch, skip),
                Action::Lost {
                    origin,
                    route,
                    count,
                } => {
                    tracing::warn!(%origin, %route, count, "messages lost on a tree");
                }
                Action::Wanted(route) => self.wanted(route),
                Action::Unwanted(route) => {
                    self.port
                        .remove_peer_interest(&self.me, &RoutePattern::from(route));
                }
            }
        }
        self.stats.overlay = self.overlay.stats();
        self.stats.neighbours = self.membership.active().len();
        (self.stats.dials, self.stats.dial_failures) = self.membership.dial_counts();
        self.stats.known_peers = self.membership.passive().count();
        self.stats.bytes_sent = self.wire_bytes.sent.load(Ordering::Relaxed);
        self.stats.bytes_received = self.wire_bytes.received.load(Ordering::Relaxed);
        self.stats_tx.send_if_modified(|old| {
            let changed = *old != self.stats;
            *old = self.stats;
            changed
        });
    }

    fn send_frame(&mut self, to: PeerId, frame: Frame<PeerId>) {
        let fingerprint = match &frame {
            Frame::Announce { origin, route, .. } if *origin == self.me => {
                self.intents.get(route).map(|ad| ad.fingerprint)
            }
            Frame::Announce { origin, route, .. } => {
                self.fingerprints.get(&(*origin, route.clone())).copied()
            }
            _ => None,
        };
        self.send(to, &Message::Frame(frame, fingerprint));
    }

    fn send(&mut self, to: PeerId, message: &Message) {
        let Some(neighbour) = self.neighbours.get(&to) else {
            return;
        };
        let bytes = wire::encode(message);
        let queued = neighbour.queued.fetch_add(bytes.len(), Ordering::Relaxed) + bytes.len();
        let _ = neighbour.out.send(bytes);
        if queued > CUT_OFF {
            tracing::warn!(peer = %to, queued, "tree neighbour stopped reading; cutting it");
            self.stats.cut_slow += 1;
            self.drop_neighbour(to, true);
        }
    }

    /// A connection to `peer` closed or is being closed: drops it as a neighbour (with its
    /// other connections, see `Closed`), or ends a dial of ours that connected and closed
    /// before the peers greeted (its connection limit, say: a refusal; the peer stays known
    /// and the dial slot is free again). Returns whether it was a neighbour.
    fn connection_gone(&mut self, peer: PeerId) -> bool {
        if self.neighbours.contains_key(&peer) {
            self.drop_neighbour(peer, true);
            return true;
        }
        if self.membership.is_dialing(&peer) {
            tracing::debug!(%peer, "tree dial closed before the hellos");
            self.membership.refused(peer, Instant::now());
        }
        false
    }

    /// Removes a neighbour; `disconnect` also closes the libp2p connection once its queue is
    /// written.
    fn drop_neighbour(&mut self, peer: PeerId, disconnect: bool) {
        if let Some(neighbour) = self.neighbours.remove(&peer) {
            neighbour.disconnect.store(disconnect, Ordering::Relaxed);
            if neighbour.up {
                self.stats.links_lost += 1;
                tracing::debug!(%peer, disconnect, "tree link down");
            }
        }
        self.overlay.neighbour_down(peer);
        self.membership.disconnected(peer);
    }

    fn spawn_link(
        &mut self,
        peer: PeerId,
        peer_id: libp2p::PeerId,
        stream: libp2p::Stream,
        offer: Offer,
    ) {
        self.next_link += 1;
        let link = self.next_link;
        let (read, write) = stream.split();
        // Bounded in bytes, not messages: past `CUT_OFF` queued bytes the neighbour is cut.
        #[allow(clippy::disallowed_methods)]
        let (out, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let disconnect = Arc::new(AtomicBool::new(false));
        let cancel = self.cancel.clone();
        let reader = Reader {
            peer,
            link,
            events: self.events_tx.clone(),
            received: self.wire_bytes.clone(),
        };
        self.tracker.spawn(reader.run(read, cancel.clone()));
        let writer = Writer {
            peer,
            link,
            events: self.events_tx.clone(),
            rx,
            queued: queued.clone(),
            drained: self.drained.clone(),
            sent: self.wire_bytes.clone(),
            disconnect: disconnect.clone(),
            commands: self.commands.clone(),
            peer_id,
        };
        self.tracker.spawn(writer.run(write, cancel));
        let neighbour = Neighbour {
            link,
            offer,
            up: false,
            out,
            queued,
            disconnect,
        };
        self.neighbours.insert(peer, neighbour);
    }
}
