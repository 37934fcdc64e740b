//! The swarm actor: one task owns the libp2p `Swarm` and applies the connection policy.
//!
//! Policy, in order:
//! - Every connection gets one dndm stream, opened by the side with the lower PeerId, or by a
//!   side that sought the peer out as a provider of a route it wants.
//! - Below `full_mesh_threshold` connected peers, every peer learned of (mDNS, Kademlia routing
//!   updates) is dialed: small meshes are full meshes.
//! - Publishers provide Kademlia records for their routes and path prefixes; subscribers look
//!   their patterns up, periodically, and dial the providers.
//! - Connections stay at or under `max_peers` (libp2p's connection limits refuse more); when
//!   the bound is reached, a connection that carries no dndm traffic is closed to keep a slot
//!   free for a wanted provider or a newcomer.
//! - Configured peers, mDNS peers and wanted providers are redialed with exponential backoff
//!   and jitter after a loss, through a per-peer circuit breaker.
//! - A connection whose dndm session went silent (the path died without a FIN or an RST; see
//!   `swarm/silence.rs`) is closed and counts as lost at once: the peer is redialed as above
//!   even while libp2p still waits for that connection's close to finish.
//! - With an allow-list, other peers are refused at the libp2p layer and never dialed (see
//!   `swarm/behaviour.rs` and `swarm/admission.rs`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dndm_core::{PeerId, Route, RoutePattern};
use dndm_remote::backoff::{Backoff, CircuitBreaker};
use futures::StreamExt as _;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, Swarm, identify, ping};
use tokio::sync::{mpsc, watch};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;

use crate::discovery::{Found, Mdns, advertisable};

mod admission;
mod behaviour;
mod dht;
mod relaying;
mod secure;
mod shutdown;
mod silence;
mod trees;
pub(crate) use behaviour::{Behaviour, BehaviourEvent, build};
pub(crate) use silence::{Silent, Watched};

use crate::{Inner, PROTOCOL};

/// How often the actor reconciles streams, lookups and provider records.
const TICK: Duration = Duration::from_millis(500);

/// How long an idle libp2p connection (no stream, no query) stays open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Provider records are published again this often (in ticks): remote stores expire them.
/// After a change, sooner: from `REPROVIDE_FIRST_TICKS`, doubling.
const REPROVIDE_TICKS: u64 = 120;
const REPROVIDE_FIRST_TICKS: u64 = 4;

/// At most one eviction for refused newcomers per this long.
const EVICT_SPACING: Duration = Duration::from_millis(250);

/// A lookup that found every provider connected is repeated after this many ticks; one that
/// did not is retried sooner, doubling from 1 tick up to `LOOKUP_RETRY_MAX`.
const LOOKUP_SETTLED_TICKS: u64 = 60;
const LOOKUP_RETRY_MAX: u64 = 8;

/// Connections younger than this are never evicted (their sessions are still declaring).
const EVICT_GRACE: Duration = Duration::from_secs(5);
const BARE_GRACE: Duration = Duration::from_secs(1);

/// Consecutive failed dials that open a peer's circuit breaker, and how long it stays open.
const BREAKER_THRESHOLD: u32 = 5;
const BREAKER_COOL_DOWN: Duration = Duration::from_secs(30);

/// What the actor is asked to do (bounded queue: operator commands and timers only).
#[derive(Debug)]
pub(crate) enum Command {
    /// Close every connection to a peer.
    Disconnect(libp2p::PeerId),
    /// Dial a configured address again (after its backoff delay).
    Redial(Multiaddr),
    /// Dial a known peer again (after its backoff delay).
    RedialPeer(libp2p::PeerId),
    /// A dndm stream open to the peer finished (opened or failed).
    Opened(libp2p::PeerId),
    /// Ask a configured relay for a reservation again (after its backoff delay).
    Reserve(Multiaddr),
    /// Dial a peer the multi-hop membership policy chose, on these addresses.
    DialPeer(libp2p::PeerId, Vec<Multiaddr>),
}

/// The local routes the actor announces and looks up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Routes {
    pub(crate) intents: BTreeSet<Route>,
    pub(crate) interests: HashSet<RoutePattern>,
}

/// The dndm PeerId of a libp2p peer (ed25519 keys only).
pub(crate) fn dndm_peer(peer: &libp2p::PeerId) -> Option<PeerId> {
    PeerId::from_bytes(&peer.to_bytes()).ok()
}

/// Why the actor keeps a peer connected.
#[derive(Debug, Default)]
struct Known {
    /// Addresses to dial it on.
    addrs: Vec<Multiaddr>,
    /// Found on the LAN (mDNS): redial after a loss.
    lan: bool,
    /// A provider of a route we want: redial after a loss.
    wanted: bool,
    backoff: Option<Backoff>,
    breaker: Option<CircuitBreaker>,
    /// A redial is scheduled.
    redial_pending: bool,
}

/// A lookup of a pattern's providers.
#[derive(Debug)]
struct Lookup {
    due: u64,
    retry: u64,
    running: Option<QueryId>,
    /// Whether the last run found a provider that is not connected.
    missing: bool,
    /// Whether the last run found a provider earlier runs had not.
    new: bool,
    /// Providers found so far.
    seen: HashSet<libp2p::PeerId>,
}

/// The swarm actor's state.
pub(crate) struct Actor {
    inner: Arc<Inner>,
    swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    local: libp2p::PeerId,
    commands: mpsc::Receiver<Command>,
    commands_tx: mpsc::Sender<Command>,
    routes: watch::Receiver<Routes>,
    applied: Routes,
    mdns: Option<Mdns>,
    /// Configured dials by connection, so a lost one is redialed.
    dials: HashMap<ConnectionId, Multiaddr>,
    dial_backoffs: HashMap<Multiaddr, Backoff>,
    known: HashMap<libp2p::PeerId, Known>,
    /// Stream opens in flight.
    opening: HashSet<libp2p::PeerId>,
    /// Provider keys we announce, with how many local intents need each.
    provided: HashMap<RecordKey, usize>,
    lookups: HashMap<RecordKey, Lookup>,
    queries: HashMap<QueryId, RecordKey>,
    bootstrapped: bool,
    /// A peer became wanted or LAN (or stopped being LAN): introspection needs a fresh copy.
    known_changed: bool,
    reprovide_at: u64,
    reprovide_every: u64,
    last_eviction: Option<Instant>,
    /// Connections we dialed to known peers (the circuit breaker counts only these).
    peer_dials: HashSet<ConnectionId>,
    /// Peers reached through configured addresses.
    configured: HashSet<libp2p::PeerId>,
    /// When each connected peer's first live connection was established.
    since: HashMap<libp2p::PeerId, Instant>,
    ticks: u64,
    started: Instant,
    /// Jitter for every redial and reservation retry (seeded once, from
    /// `remote.jitter_seed` or the OS).
    jitter: fastrand::Rng,
    /// Circuit listeners by relay (reservations, see `relaying.rs`).
    relay_listeners: HashMap<libp2p::core::transport::ListenerId, Multiaddr>,
    reservation_backoff: HashMap<Multiaddr, Backoff>,
    /// Configured dials whose connection closed while another connection to the peer lived
    /// on (a relayed dial replaced by a hole-punched connection, a redial that found the peer
    /// already reached another way and went idle): redialed when the peer's last connection
    /// closes, not at once (each such redial would go idle and close again).
    dial_fallback: HashMap<libp2p::PeerId, Multiaddr>,
    /// Connections closed because their dndm session went silent, until libp2p reports them
    /// closed (which waits for a flush that a dead path may never allow).
    closing: HashSet<ConnectionId>,
    /// When each live connection was established (as this actor learned of it).
    established: HashMap<ConnectionId, Instant>,
}

impl Actor {
    /// An actor for `swarm`; `dials` are the configured dials already started.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: Arc<Inner>,
        swarm: Swarm<Behaviour>,
        control: libp2p_stream::Control,
        commands: mpsc::Receiver<Command>,
        commands_tx: mpsc::Sender<Command>,
        routes: watch::Receiver<Routes>,
        mdns: Option<Mdns>,
        dials: HashMap<ConnectionId, Multiaddr>,
    ) -> Self {
        let local = *swarm.local_peer_id();
        let jitter = inner.config.remote.jitter_rng();
        Self {
            inner,
            swarm,
            control,
            local,
            commands,
            commands_tx,
            routes,
            applied: Routes::default(),
            mdns,
            dials,
            dial_backoffs: HashMap::new(),
            known: HashMap::new(),
            opening: HashSet::new(),
            provided: HashMap::new(),
            lookups: HashMap::new(),
            queries: HashMap::new(),
            bootstrapped: false,
            known_changed: false,
            reprovide_at: REPROVIDE_TICKS,
            reprovide_every: REPROVIDE_TICKS,
            last_eviction: None,
            since: HashMap::new(),
            configured: HashSet::new(),
            peer_dials: HashSet::new(),
            ticks: 0,
            started: Instant::now(),
            jitter,
            relay_listeners: HashMap::new(),
            reservation_backoff: HashMap::new(),
            dial_fallback: HashMap::new(),
            closing: HashSet::new(),
            established: HashMap::new(),
        }
    }

    /// Runs until the endpoint closes; then closes the connections in order (see
    /// `swarm/shutdown.rs`, bounded by the session idle timeout) and withdraws the mDNS record.
    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.routes_changed();
        self.start_relays();
        loop {
            tokio::select! {
                biased;
                () = self.inner.cancel.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_event(event),
                Some(command) = self.commands.recv() => self.on_command(command),
                () = self.inner.silent.reported() => {
                    for peer in self.inner.silent.take() {
                        self.replace_silent(peer);
                    }
                }
                changed = self.routes.changed() => {
                    if changed.is_ok() {
                        self.routes_changed();
                    }
                }
                found = next_found(self.mdns.as_ref()) => match found {
                    Some(found) => self.on_found(found),
                    None => self.mdns = None,
                },
                _ = tick.tick() => self.on_tick(),
            }
            if self.known_changed {
                self.known_changed = false;
                self.publish_state();
            }
        }
        self.close_connections(self.inner.config.remote.session.idle_timeout)
            .await;
        if let Some(mdns) = self.mdns.take() {
            mdns.stop().await;
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Disconnect(peer) => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Redial(addr) => {
                let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, addr);
                    }
                    Err(e) => tracing::debug!(%addr, error = %e, "redial failed"),
                }
            }
            Command::RedialPeer(peer) => {
                if let Some(known) = self.known.get_mut(&peer) {
                    known.redial_pending = false;
                }
                if !self.live(&peer) {
                    self.dial_peer(peer);
                }
            }
            Command::Opened(peer) => {
                self.opening.remove(&peer);
            }
            Command::Reserve(relay) => self.reserve(relay),
            Command::DialPeer(peer, addrs) => {
                let opts = DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, error = %e, "tree dial not started");
                    self.tell_trees_dial_failed(&peer, &e);
                }
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.on_nat_event(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                // Provider records carry the provider's external addresses; without any, a
                // subscriber that does not already know us cannot dial us. Listen addresses are
                // the candidates: loopback ones only when we were asked to listen on loopback.
                let loopback_wanted = self.inner.config.listen.iter().any(is_loopback);
                if !is_loopback(&address) || loopback_wanted {
                    self.swarm.add_external_address(address.clone());
                }
                self.inner.state().listening.push(address);
                self.inner.listen_changes.send_modify(|n| *n += 1);
                self.register_mdns();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.swarm.remove_external_address(&address);
                self.inner.state().listening.retain(|a| a != &address);
                self.inner.listen_changes.send_modify(|n| *n += 1);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    self.open_tree_stream(peer_id);
                }
                self.peer_dials.remove(&connection_id);
                if let Some(addr) = self.dials.get(&connection_id) {
                    self.dial_backoffs.remove(addr);
                    self.configured.insert(peer_id);
                }
                if let Some(known) = self.known.get_mut(&peer_id) {
                    known.backoff = None;
                    if let Some(breaker) = known.breaker.as_mut() {
                        breaker.on_success();
                    }
                }
                self.inner
                    .state()
                    .connections
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, endpoint.get_remote_address().clone());
                self.since.entry(peer_id).or_insert_with(Instant::now);
                self.established.insert(connection_id, Instant::now());
                self.open_if_needed(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.closing.remove(&connection_id);
                self.established.remove(&connection_id);
                {
                    let mut state = self.inner.state();
                    if let Some(conns) = state.connections.get_mut(&peer_id) {
                        conns.remove(&connection_id);
                        if conns.is_empty() {
                            state.connections.remove(&peer_id);
                        }
                    }
                }
                self.on_dial_closed(peer_id, connection_id);
                if num_established == 0 {
                    self.tell_trees(crate::trees::TreeEvent::PeerGone, &peer_id);
                    self.since.remove(&peer_id);
                    self.redial_peer_later(peer_id);
                } else {
                    // The dndm stream may have been on the connection that closed.
                    self.open_if_needed(peer_id);
                    // So may the tree stream (there is no telling which connection carries
                    // it, and its reader may never wake): the trees drop the link and the
                    // peer; the membership policy dials again if it needs to.
                    self.tell_trees(crate::trees::TreeEvent::PeerGone, &peer_id);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.on_dial_error(peer_id, &error);
                if let Some(addr) = self.dials.remove(&connection_id) {
                    self.redial_address(addr);
                }
                // Only our own dials count, and not those our connection limit refused:
                // Kademlia's query dials and a busy moment are not evidence that the peer is
                // unreachable.
                if let Some(peer) = peer_id {
                    self.tell_trees_dial_failed(&peer, &error);
                }
                let ours = self.peer_dials.remove(&connection_id);
                let refused_here = matches!(error, libp2p::swarm::DialError::Denied { .. });
                if let Some(peer) = peer_id.filter(|_| ours) {
                    let now = self.started.elapsed();
                    if let Some(known) = self.known.get_mut(&peer)
                        && !refused_here
                    {
                        known
                            .breaker
                            .get_or_insert_with(|| {
                                CircuitBreaker::new(BREAKER_THRESHOLD, BREAKER_COOL_DOWN)
                            })
                            .on_failure(now);
                    }
                    self.redial_peer_later(peer);
                }
            }
            SwarmEvent::IncomingConnectionError {
                peer_id,
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            } => self.on_incoming_denied(peer_id, &cause),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if self.inner.config.multi_hop {
                    let addrs: Vec<Multiaddr> =
                        info.listen_addrs.into_iter().filter(dialable).collect();
                    self.tell_trees(|p| crate::trees::TreeEvent::Addresses(p, addrs), &peer_id);
                    return;
                }
                for addr in info.listen_addrs {
                    if dialable(&addr) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
                // Kademlia bootstraps by itself once its routing table has entries.
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
                peer,
                result: Ok(rtt),
                ..
            })) => {
                self.inner.state().ping_rtt.insert(peer, rtt);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            _ => {}
        }
    }

    /// Registers this node on the LAN once a TCP listen port is known.
    fn register_mdns(&mut self) {
        let Some(mdns) = self.mdns.as_mut() else {
            return;
        };
        let listening = self.inner.state().listening.clone();
        let Some(port) = listening.iter().find_map(tcp_port) else {
            return;
        };
        let name = self.inner.config.remote.session.node_name.clone();
        if let Err(e) = mdns.register(&name, port, &listening) {
            tracing::warn!(error = %e, "mDNS registration failed; LAN peers will not find us");
        }
    }

    /// Whether the node still meets every peer it learns of.
    fn dense(&self) -> bool {
        // In multi-hop mode the membership policy chooses whom to meet.
        !self.inner.config.multi_hop
            && self.swarm.connected_peers().count() < self.inner.config.full_mesh_threshold
    }

    /// Opens the dndm stream to `peer` unless one runs or is being opened, and only to peers
    /// worth a session: providers we sought out (either side of the pair may open then: the
    /// provider does not know it is wanted), and, from the side with the lower PeerId so a pair
    /// has one stream, configured and LAN peers and any peer while the mesh is small. Other
    /// connections (Kademlia queries) get no session and close when idle.
    fn open_if_needed(&mut self, peer_id: libp2p::PeerId) {
        // Multi-hop mode runs no dndm sessions: trees carry publish/subscribe.
        if self.inner.config.multi_hop {
            return;
        }
        let known = self.known.get(&peer_id);
        let wanted = known.is_some_and(|k| k.wanted);
        let kept = known.is_some_and(|k| k.lan) || self.configured.contains(&peer_id);
        let small = self.swarm.connected_peers().count() <= self.inner.config.full_mesh_threshold;
        let ours = self.local < peer_id && (kept || small);
        // On a connection being closed, the stream would only fail: wait for the new one.
        if !(wanted || ours)
            || self.opening.contains(&peer_id)
            || !self.live(&peer_id)
            || self.inner.closing.is_cancelled()
        {
            return;
        }
        let Some(peer) = dndm_peer(&peer_id) else {
            return;
        };
        if self.inner.links.has_connection(&peer) {
            return;
        }
        self.opening.insert(peer_id);
        let mut control = self.control.clone();
        let links = self.inner.links.clone();
        // No stream is opened once the mesh is closing: its link would only miss the Close.
        let closing = self.inner.closing.clone();
        let done = self.commands_tx.clone();
        let silent = self.inner.silent.clone();
        let idle = self.inner.config.remote.session.idle_timeout;
        self.inner.tracker.spawn(async move {
            let opened = tokio::select! {
                biased;
                () = closing.cancelled() => return,
                opened = control.open_stream(peer_id, PROTOCOL) => opened,
            };
            match opened {
                Ok(stream) => {
                    let stream = Watched::new(stream.compat(), peer_id, silent, idle);
                    links.adopt_authenticated(peer, Box::new(stream), true);
                }
                Err(e) => tracing::debug!(%peer_id, error = %e, "dndm stream not opened"),
            }
            let _ = done.send(Command::Opened(peer_id)).await;
        });
    }

    /// Dials a known peer (its addresses, plus whatever Kademlia knows), unless its breaker is
    /// open.
    fn dial_peer(&mut self, peer: libp2p::PeerId) {
        if peer == self.local || !self.allowed(&peer) {
            return;
        }
        let now = self.started.elapsed();
        let known = self.known.entry(peer).or_default();
        if let Some(breaker) = known.breaker.as_mut()
            && !breaker.allow(now)
        {
            tracing::debug!(%peer, "circuit breaker open; dial skipped");
            return;
        }
        // Connections being closed for silence do not count: libp2p still lists them until
        // their close finishes, which a dead path can hold up.
        let condition = if self.swarm.is_connected(&peer) {
            PeerCondition::NotDialing
        } else {
            PeerCondition::DisconnectedAndNotDialing
        };
        let opts = DialOpts::peer_id(peer)
            .addresses(known.addrs.clone())
            .extend_addresses_through_behaviour()
            .condition(condition)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.peer_dials.insert(id);
            }
            Err(e) => tracing::debug!(%peer, error = %e, "dial not started"),
        }
    }

    /// After a loss: redial a LAN peer or wanted provider with backoff and jitter.
    fn redial_peer_later(&mut self, peer: libp2p::PeerId) {
        if self.inner.cancel.is_cancelled() {
            return;
        }
        let random = self.jitter.u64(..);
        let config = &self.inner.config.remote;
        let Some(known) = self.known.get_mut(&peer) else {
            return;
        };
        if !(known.lan || known.wanted) || known.redial_pending {
            return;
        }
        known.redial_pending = true;
        let delay = known
            .backoff
            .get_or_insert_with(|| Backoff::new(config.backoff_initial, config.backoff_max))
            .next_delay(random);
        self.later(delay, Command::RedialPeer(peer));
    }

    /// After a configured dial's connection ended: dial the address again after a backoff.
    fn redial_address(&mut self, addr: Multiaddr) {
        // In multi-hop mode the membership policy decides whom to dial (a bootstrap peer
        // included); redialing it on every lost connection only knocked on a full node.
        if self.inner.config.multi_hop {
            return;
        }
        let random = self.jitter.u64(..);
        let config = &self.inner.config.remote;
        let delay = self
            .dial_backoffs
            .entry(addr.clone())
            .or_insert_with(|| Backoff::new(config.backoff_initial, config.backoff_max))
            .next_delay(random);
        self.later(delay, Command::Redial(addr));
    }

    /// Queues `command` for the actor after `delay` (a tracked timer task).
    fn later(&self, delay: Duration, command: Command) {
        let commands = self.commands_tx.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            #[allow(clippy::disallowed_methods)]
            // Redial backoff: a timer is the point.
            let wait = tokio::time::sleep(delay);
            tokio::select! {
                biased;
                () = cancel.cancelled() => {}
                () = wait => {
                    let _ = commands.send(command).await;
                }
            }
        });
    }

    /// Before dialing a wanted provider at the bound: free a slot.
    fn make_room_for_wanted(&mut self) {
        if self.swarm.connected_peers().count() >= self.inner.config.max_peers {
            self.evict_idle();
        }
    }

    /// Closes the connection to one peer that is not worth its slot: not wanted, not
    /// configured, connected for longer than a grace period, and with no dndm route in common
    /// with us (nothing sent or received, no matching intent or interest). Peers without a
    /// dndm session go first.
    fn evict_idle(&mut self) {
        // In multi-hop mode every connection is a tree link the membership policy chose;
        // none is idle in this sense (no dndm session tells).
        if self.inner.config.multi_hop {
            return;
        }
        let links: HashMap<PeerId, dndm_remote::endpoint::PeerLink> = self
            .inner
            .links
            .links()
            .into_iter()
            .map(|l| (l.peer, l))
            .collect();
        let configured: HashSet<libp2p::PeerId> = self
            .inner
            .config
            .dial
            .iter()
            .filter_map(|a| match a.iter().last() {
                Some(Protocol::P2p(peer)) => Some(peer),
                _ => None,
            })
            .collect();
        let routes = &self.applied;
        let useful = |link: &dndm_remote::endpoint::PeerLink| {
            link.stats.messages_sent + link.stats.messages_received > 0
                || link
                    .peer_interests
                    .iter()
                    .any(|p| routes.intents.iter().any(|r| p.matches(r)))
                || link
                    .peer_intents
                    .iter()
                    .any(|r| routes.interests.iter().any(|p| p.matches(r)))
        };
        let mut victim: Option<(bool, libp2p::PeerId)> = None;
        for peer in self.swarm.connected_peers() {
            let link = dndm_peer(peer).and_then(|p| links.get(&p));
            let has_session = link.is_some_and(|l| l.connected);
            // A session is still declaring its routes for a while; a bare connection (a
            // Kademlia query, or a seeker about to open its stream) needs only a moment.
            let grace = if has_session { EVICT_GRACE } else { BARE_GRACE };
            let settled = self.since.get(peer).is_some_and(|t| t.elapsed() >= grace);
            let wanted = self.known.get(peer).is_some_and(|k| k.wanted);
            if !settled || wanted || configured.contains(peer) || self.configured.contains(peer) {
                continue;
            }
            if link.is_some_and(useful) {
                continue;
            }
            if victim.is_none_or(|(session, _)| session && !has_session) {
                victim = Some((has_session, *peer));
            }
        }
        if let Some((_, victim)) = victim {
            self.last_eviction = Some(Instant::now());
            tracing::debug!(peer = %victim, "connection bound reached; closing an idle connection");
            let _ = self.swarm.disconnect_peer_id(victim);
        }
    }

    /// Copies what introspection shows into the shared state.
    fn publish_state(&mut self) {
        let wanted: Vec<libp2p::PeerId> = self
            .known
            .iter()
            .filter(|(_, k)| k.wanted)
            .map(|(p, _)| *p)
            .collect();
        let lan: Vec<libp2p::PeerId> = self
            .known
            .iter()
            .filter(|(_, k)| k.lan)
            .map(|(p, _)| *p)
            .collect();
        let mut state = self.inner.state();
        state.wanted = wanted;
        state.lan = lan;
    }
}

/// The next mDNS result, or never when discovery is off.
async fn next_found(mdns: Option<&Mdns>) -> Option<Found> {
    match mdns {
        Some(mdns) => mdns.next().await,
        None => std::future::pending().await,
    }
}

/// The TCP port of a listen address that other hosts can reach: a plain `/ip4|ip6/…/tcp/…`
/// address (not a relayed one, whose port is the relay's) that is [`advertisable`].
fn tcp_port(addr: &Multiaddr) -> Option<u16> {
    let mut iter = addr.iter();
    match (iter.next(), iter.next(), iter.next()) {
        (Some(Protocol::Ip4(_) | Protocol::Ip6(_)), Some(Protocol::Tcp(port)), None)
            if advertisable(addr) =>
        {
            Some(port)
        }
        _ => None,
    }
}

/// Whether an address is on the loopback interface (or in-process memory: the same host).
fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        Protocol::Memory(_) => true,
        _ => false,
    })
}

/// Whether an address a peer reports is worth dialing (not unspecified).
fn dialable(addr: &Multiaddr) -> bool {
    !addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_unspecified(),
        Protocol::Ip6(ip) => ip.is_unspecified(),
        _ => false,
    })
}
