//! dndm over a libp2p mesh: dndm sessions on a `/dndm/1.0.0` libp2p stream per peer, next to
//! identify, ping and Kademlia (server mode) answering as any libp2p node would.
//!
//! This crate sits on `dndm-remote`: the libp2p connection (TCP or memory transport, dndm's
//! Noise as the security upgrade `/dndm/noise/1` with libp2p's `/noise` as a fallback, Yamux)
//! authenticates the peer, so each dndm stream runs the same session protocol as a remote
//! link, minus the Noise layer (`RemoteEndpoint::adopt_authenticated`, which checks that the
//! hello's key is the connection's PeerId); reliable routes resume when a peer reconnects. One
//! actor task owns the `Swarm`.
//!
//! Peers are found three ways: configured addresses ([`MeshConfig::dial`], redialed with
//! backoff), DNS-SD over mDNS on the LAN ([`MeshConfig::mdns`], service
//! [`SERVICE_TYPE`]), and Kademlia: publishers provide records for their routes and path
//! prefixes, subscribers look their patterns up and dial the providers. Small meshes are full
//! meshes (below [`MeshConfig::full_mesh_threshold`] peers); connections stay within
//! [`MeshConfig::max_peers`]. See `swarm.rs` for the policy.
//!
//! The DHT is dndm's own ([`KAD_PROTOCOL`], `/dndm/kad/1.0.0`, unless
//! [`MeshConfig::kad_protocol`] joins the IPFS one), and its provider keys are keyed hashes of
//! route names ([`RouteKey`]), never the names. With an allow-list
//! (`RemoteConfig::session.allow_peers`), other peers are refused at the libp2p layer before
//! any protocol serves them, and counted ([`MeshStats`]).
//!
//! # Usage
//!
//! Two nodes on libp2p's in-process memory transport ([`Transport::Memory`]; the whole libp2p
//! stack runs, only the sockets are in memory): `b` dials `a`, the pair opens a dndm session,
//! and a message `a` publishes reaches `b`'s subscriber.
//!
//! ```
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Imu { #[prost(float, tag = "1")] pub ax: f32 }
//! # impl prost::Name for Imu { const NAME: &'static str = "Imu"; const PACKAGE: &'static str = "example"; }
//! # impl dndm_core::Message for Imu {}
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use dndm_core::Keypair;
//! use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
//! use dndm_router::Router;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Only a failure guard: every wait below ends as soon as its event happens.
//! let guard = Duration::from_secs(20);
//! // Memory ports are process-wide; this one is unlikely to be taken.
//! let address: libp2p::Multiaddr =
//!     format!("/memory/{}", u64::from(std::process::id()) * 100 + 77).parse()?;
//!
//! let a = Router::builder().name("a").build()?;
//! let mut config = MeshConfig::default();
//! config.transport = Transport::Memory;
//! config.listen = vec![address.clone()];
//! let mesh_a = MeshEndpoint::new(Keypair::generate()?, config)?;
//! a.attach(Arc::new(mesh_a.clone())).await?;
//!
//! let b = Router::builder().name("b").build()?;
//! let mut config = MeshConfig::default();
//! config.transport = Transport::Memory;
//! config.dial = vec![address];
//! let mesh_b = MeshEndpoint::new(Keypair::generate()?, config)?;
//! b.attach(Arc::new(mesh_b.clone())).await?;
//!
//! let arm = a.publish::<Imu>("robot.arm.imu")?;
//! let mut imu = b.subscribe::<Imu>("robot.*.imu")?;
//! assert_eq!(arm.wait_for_interest(guard).await?, 1, "b's interest reached a");
//! arm.send(Imu { ax: 9.81 }).await?;
//! assert_eq!(imu.recv_timeout(guard).await?.ax, 9.81);
//! assert_eq!(mesh_a.peers(), vec![mesh_b.peer_id()]);
//!
//! b.close().await;
//! a.close().await;
//! # Ok(()) }
//! ```
//!
//! On a network, keep the default TCP transport and listen on a TCP address; peers on the LAN
//! find each other over mDNS:
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let router = dndm_router::Router::builder().name("robot").build()?;
//! let mut config = dndm_mesh::MeshConfig::default();
//! config.listen = vec!["/ip4/0.0.0.0/tcp/0".parse()?];
//! let mesh = dndm_mesh::MeshEndpoint::new(dndm_core::Keypair::generate()?, config)?;
//! router.attach(Arc::new(mesh)).await?;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! None.
//!
//! # Differences from DNDM (Go)
//!
//! DNDM's mesh speaks its own TCP protocol; dndm uses a standard libp2p stack, so libp2p tools
//! and nodes can identify, ping and query a dndm node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use dndm_core::{Endpoint, EndpointError, Keypair, LocalChange, PeerId, PeerInfo, RouterPort};
use dndm_remote::endpoint::RemoteEndpoint;
use futures::StreamExt as _;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use tokio::sync::{mpsc, watch};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod config;
mod discovery;
mod keys;
mod nat;
pub mod overlay;
mod swarm;
mod trees;

pub use config::{MeshConfig, Transport};
pub use discovery::SERVICE_TYPE;
pub use keys::RouteKey;
/// libp2p's address and protocol-name types, as [`MeshConfig`] uses them.
pub use libp2p::{Multiaddr, StreamProtocol};
pub use nat::{Path, Reachability, RelayLimits, RelayReservation};
use swarm::{Command, Routes, Silent, Watched, dndm_peer};
pub use trees::{TREE_PROTOCOL, TreeNeighbour, TreeStats};

/// The dndm protocol id on libp2p streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dndm/1.0.0");

/// The Kademlia protocol id a mesh uses by default ([`MeshConfig::kad_protocol`]): dndm nodes
/// form their own DHT instead of joining the public IPFS one (`libp2p::kad::PROTOCOL_NAME`,
/// `/ipfs/kad/1.0.0`).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/dndm/kad/1.0.0");

/// Most incoming libp2p connections in their handshake (Noise, Yamux) at once; more are refused
/// before any handshake work and counted in [`MeshStats::refused_over_limit`]. Bounds what
/// connections that never finish their handshake can hold (each holds a socket and a Noise
/// state until libp2p's upgrade timeout).
pub const MAX_PENDING_INCOMING: u32 = 64;

/// Commands queued for the swarm actor. Bounded: operator commands and timers only.
const COMMANDS: usize = 256;

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// Building the libp2p stack failed.
    #[error("libp2p setup: {0}")]
    Setup(String),
}

/// Counters of the libp2p layer ([`MeshEndpoint::mesh_stats`]); the dndm sessions' are in
/// [`MeshEndpoint::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshStats {
    /// Incoming connections refused because the peer is not on the allow-list
    /// (`remote.allow_peers`): closed right after Noise authenticated the peer, before
    /// identify, ping, Kademlia, relay or a dndm stream served it.
    pub refused_not_allowed: u64,
    /// Incoming connections refused by a connection limit: [`MAX_PENDING_INCOMING`]
    /// handshakes, or [`MeshConfig::max_peers`] established connections.
    pub refused_over_limit: u64,
    /// Dials refused because the peer is not on the allow-list (Kademlia dials the peers other
    /// nodes name).
    pub dials_not_allowed: u64,
}

/// One peer as the mesh sees it ([`MeshEndpoint::mesh_peers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MeshPeer {
    /// The peer.
    pub peer: PeerId,
    /// Remote addresses of the live libp2p connections.
    pub addresses: Vec<Multiaddr>,
    /// Live libp2p connections.
    pub connections: usize,
    /// Whether the dndm session is up.
    pub session: bool,
    /// Session round trip, else libp2p ping's.
    pub rtt: Option<Duration>,
    /// Sought out as a provider of a wanted route.
    pub wanted: bool,
    /// Found on the LAN over mDNS.
    pub lan: bool,
    /// Messages sent to and received from the peer on the dndm session.
    pub messages_sent: u64,
    /// Messages received from the peer.
    pub messages_received: u64,
    /// Session connections that failed.
    pub failures: u64,
    /// Direct, or only through a relay's circuit.
    pub path: Path,
    /// Why a relayed peer stayed relayed: the last hole punching (DCUtR) failure, e.g.
    /// `failed to hole-punch connection: giving up after 3 dial attempts` behind a symmetric
    /// NAT. `None` on a direct path.
    pub relay_reason: Option<String>,
}

/// A router endpoint on a libp2p mesh. See the crate docs.
#[derive(Debug, Clone)]
pub struct MeshEndpoint {
    inner: Arc<Inner>,
}

/// What the actor shares for introspection.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) listening: Vec<Multiaddr>,
    pub(crate) connections: HashMap<libp2p::PeerId, HashMap<ConnectionId, Multiaddr>>,
    pub(crate) ping_rtt: HashMap<libp2p::PeerId, Duration>,
    pub(crate) wanted: Vec<libp2p::PeerId>,
    pub(crate) lan: Vec<libp2p::PeerId>,
    /// Connections that run through a relay's circuit.
    pub(crate) relayed: std::collections::HashSet<ConnectionId>,
    /// The last hole punching failure per peer (cleared when it succeeds).
    pub(crate) hole_punch_failures: HashMap<libp2p::PeerId, String>,
    pub(crate) reachability: Reachability,
    pub(crate) reservations: Vec<RelayReservation>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    name: String,
    pub(crate) config: MeshConfig,
    keypair: Keypair,
    /// The session engine: one link per peer, fed with libp2p streams.
    pub(crate) links: RemoteEndpoint,
    state: Mutex<State>,
    started: OnceLock<()>,
    /// Commands for the swarm actor, once started.
    commands: OnceLock<mpsc::Sender<Command>>,
    /// Local routes, for provider records and lookups.
    routes: watch::Sender<Routes>,
    /// Bumped when a listen address comes or goes ([`MeshEndpoint::wait_listening`]).
    pub(crate) listen_changes: watch::Sender<u64>,
    /// Counters of the libp2p layer, written by the actor.
    pub(crate) stats: watch::Sender<MeshStats>,
    /// The multi-hop actor's handles, once started in multi-hop mode.
    pub(crate) tree: OnceLock<trees::TreeHandle>,
    /// Counters of the multi-hop layer, written by its actor.
    pub(crate) tree_stats: watch::Sender<TreeStats>,
    /// The trees as the multi-hop actor last showed them.
    pub(crate) tree_view: Arc<Mutex<trees::TreeView>>,
    /// Peers whose dndm stream went silent, for the actor (see `swarm/silence.rs`).
    pub(crate) silent: Arc<Silent>,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
    /// Cancelled when [`Endpoint::close`] begins (and with `cancel`): from then on no dndm
    /// stream is accepted or opened, so the links can close in order while the swarm still
    /// carries their last frames.
    pub(crate) closing: CancellationToken,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // No code that can panic runs under this lock, so a poisoned one is consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl MeshEndpoint {
    /// A mesh endpoint with this identity (the libp2p PeerId equals the dndm one).
    ///
    /// # Errors
    /// [`EndpointError::Config`] when the settings are inconsistent (naming the value) or the
    /// session engine cannot be set up.
    pub fn new(keypair: Keypair, config: MeshConfig) -> Result<Self, EndpointError> {
        config.validate()?;
        let mut remote = config.remote.clone();
        remote.listen.clear();
        remote.dial.clear();
        let links = RemoteEndpoint::new(keypair.clone(), remote)?;
        let cancel = CancellationToken::new();
        Ok(Self {
            inner: Arc::new(Inner {
                name: format!("mesh:{}", keypair.peer_id()),
                config,
                keypair,
                links,
                state: Mutex::new(State::default()),
                started: OnceLock::new(),
                commands: OnceLock::new(),
                routes: watch::Sender::new(Routes::default()),
                listen_changes: watch::Sender::new(0),
                stats: watch::Sender::new(MeshStats::default()),
                tree: OnceLock::new(),
                tree_stats: watch::Sender::new(TreeStats::default()),
                tree_view: Arc::default(),
                silent: Arc::new(Silent::default()),
                tracker: TaskTracker::new(),
                closing: cancel.child_token(),
                cancel,
            }),
        })
    }

    /// Addresses the swarm listens on (known once the listeners are up).
    pub fn listening(&self) -> Vec<Multiaddr> {
        self.inner.state().listening.clone()
    }

    /// The listen addresses, once there is at least one (after `start`, when the listeners are
    /// up). Bound it with a timeout: a node configured with no listen address never has one.
    pub async fn wait_listening(&self) -> Vec<Multiaddr> {
        let mut changes = self.inner.listen_changes.subscribe();
        loop {
            let listening = self.listening();
            if !listening.is_empty() || changes.changed().await.is_err() {
                return listening;
            }
        }
    }

    /// Closes every connection to `peer` (configured, LAN and wanted peers are redialed with
    /// backoff).
    pub fn disconnect(&self, peer: PeerId) {
        let (Some(commands), Ok(peer)) = (
            self.inner.commands.get(),
            libp2p::PeerId::from_bytes(&peer.to_bytes()),
        ) else {
            return;
        };
        if commands.try_send(Command::Disconnect(peer)).is_err() {
            tracing::warn!(%peer, "mesh command queue full; disconnect dropped");
        }
    }

    /// One entry per peer link: connection state, last RTT and session counters.
    pub fn links(&self) -> Vec<dndm_remote::endpoint::PeerLink> {
        self.inner.links.links()
    }

    /// The signed batches peers send over direct sessions from now on, as records of a
    /// recording (see `RemoteEndpoint::recorder`). Needs `remote.session.record` and
    /// `remote.session.signing = Signing::Batch`. Multi-hop tree batches are not recorded.
    ///
    /// # Errors
    /// As `RemoteEndpoint::recorder`.
    pub fn recorder(
        &self,
        capacity: usize,
    ) -> Result<tokio::sync::mpsc::Receiver<dndm_codec::record::Record>, EndpointError> {
        self.inner.links.recorder(capacity)
    }

    /// A receiver that changes whenever a link connects, fails, closes or goes away.
    pub fn link_changes(&self) -> watch::Receiver<u64> {
        self.inner.links.link_changes()
    }

    /// Waits until `peer` has acknowledged every message published to it before this call
    /// (see `RemoteEndpoint::flush`). Bound it with a timeout.
    ///
    /// # Errors
    /// [`dndm_core::CallError::Closed`] when there is no link to `peer` or it ends first.
    pub async fn flush(&self, peer: &PeerId) -> Result<(), dndm_core::CallError> {
        self.inner.links.flush(peer).await
    }

    /// Counters of the dndm sessions: link failures, signature failures, bad frames, refused
    /// routes.
    pub fn stats(&self) -> dndm_remote::endpoint::RemoteStats {
        self.inner.links.stats()
    }

    /// Counters of the libp2p layer: connections refused (not on the allow-list, over a
    /// limit) and dials the allow-list refused.
    pub fn mesh_stats(&self) -> MeshStats {
        *self.inner.stats.borrow()
    }

    /// A receiver of [`Self::mesh_stats`] that changes whenever a counter does.
    pub fn mesh_stats_changes(&self) -> watch::Receiver<MeshStats> {
        self.inner.stats.subscribe()
    }

    /// Peers with a dndm link.
    pub fn peers(&self) -> Vec<PeerId> {
        self.inner.links.peers()
    }

    /// Live libp2p connections (all peers, with or without a dndm session).
    pub fn connection_count(&self) -> usize {
        self.inner
            .state()
            .connections
            .values()
            .map(HashMap::len)
            .sum()
    }

    /// Every peer with a libp2p connection or a dndm link: addresses, connections, session
    /// state, RTT, why it is known, counters. Sorted by PeerId.
    pub fn mesh_peers(&self) -> Vec<MeshPeer> {
        self.mesh_peers_with(&self.links_by_peer())
    }

    /// Whether other nodes can dial this one, as AutoNAT last found ([`Reachability::Unknown`]
    /// until a probe finished, and always when [`MeshConfig::autonat`] is off).
    pub fn reachability(&self) -> Reachability {
        self.inner.state().reachability.clone()
    }

    /// The slots this node holds (or failed to get) on the relays of [`MeshConfig::relays`].
    pub fn relay_reservations(&self) -> Vec<RelayReservation> {
        self.inner.state().reservations.clone()
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.inner.keypair.peer_id()
    }
}

#[async_trait::async_trait]
impl Endpoint for MeshEndpoint {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn start(
        &self,
        port: Arc<dyn RouterPort>,
        local: Vec<LocalChange>,
    ) -> Result<(), EndpointError> {
        let inner = &self.inner;
        let config_error = |reason: String| EndpointError::Config {
            endpoint: inner.name.clone(),
            reason,
        };
        if inner.started.set(()).is_err() {
            return Err(EndpointError::State {
                endpoint: inner.name.clone(),
                reason: "already started",
            });
        }
        let mut swarm =
            swarm::build(&inner.keypair, &inner.config).map_err(|e| config_error(e.to_string()))?;
        for addr in &inner.config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| EndpointError::Listen {
                    endpoint: inner.name.clone(),
                    address: addr.to_string(),
                    reason: with_causes(&e),
                })?;
        }
        for addr in &inner.config.external {
            swarm.add_external_address(addr.clone());
        }
        let mut dials = HashMap::new();
        for addr in &inner.config.dial {
            let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
            let id = opts.connection_id();
            swarm
                .dial(opts)
                .map_err(|e| config_error(format!("dial {addr}: {e}")))?;
            dials.insert(id, addr.clone());
        }
        let mdns = if inner.config.mdns && inner.config.transport == Transport::Tcp {
            Some(
                discovery::Mdns::start(*swarm.local_peer_id())
                    .map_err(|e| config_error(format!("mDNS: {e}")))?,
            )
        } else {
            None
        };
        let (commands_tx, commands) = mpsc::channel(COMMANDS);
        let _ = inner.commands.set(commands_tx.clone());
        let mut control = swarm.behaviour().stream.new_control();
        let mut incoming = control
            .accept(PROTOCOL)
            .map_err(|e| config_error(format!("register {PROTOCOL}: {e}")))?;
        for change in &local {
            self.follow(change);
        }
        let multi_hop = inner.config.multi_hop;
        let (for_trees, for_links): (Vec<LocalChange>, Vec<LocalChange>) =
            local.into_iter().partition(|c| multi_hop && trees_carry(c));
        if multi_hop {
            self.start_trees(&mut control, port.clone(), &commands_tx, for_trees)
                .map_err(config_error)?;
        }
        inner.links.start(port, for_links).await?;

        // Streams peers open to us, until the mesh starts closing: dropping `incoming` makes
        // libp2p-stream refuse new dndm streams, so no link starts while the links close.
        let links = inner.links.clone();
        let closing = inner.closing.clone();
        let silent = inner.silent.clone();
        let idle = inner.config.remote.session.idle_timeout;
        inner.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = closing.cancelled() => break,
                    next = incoming.next() => next,
                };
                let Some((peer, stream)) = next else { break };
                match dndm_peer(&peer) {
                    Some(dndm) => {
                        let stream = Watched::new(stream.compat(), peer, silent.clone(), idle);
                        links.adopt_authenticated(dndm, Box::new(stream), false);
                    }
                    None => tracing::warn!(%peer, "dndm stream from a non-ed25519 peer refused"),
                }
            }
        });
        let actor = swarm::Actor::new(
            inner.clone(),
            swarm,
            control,
            commands,
            commands_tx,
            inner.routes.subscribe(),
            mdns,
            dials,
        );
        // Every log line of the swarm actor carries this node's PeerId.
        let span = tracing::info_span!("mesh", local = %inner.keypair.peer_id());
        inner
            .tracker
            .spawn(tracing::Instrument::instrument(actor.run(), span));
        Ok(())
    }

    fn on_local_change(&self, change: LocalChange) {
        if let Some(tree) = self.inner.tree.get().filter(|_| trees_carry(&change)) {
            // The actor ends only when the endpoint closes; a change after that is moot.
            let _ = tree.locals.send(change);
            return;
        }
        self.follow(&change);
        self.inner.links.on_local_change(change);
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let links = self.links_by_peer();
        self.mesh_peers_with(&links)
            .into_iter()
            .map(|p| {
                // A peer with a link reports the link's delivery figures (acked, undelivered,
                // retransmitted...); the mesh adds what only it knows.
                let mut info = match links.get(&p.peer) {
                    Some(link) => link.peer_info(&self.inner.name),
                    None => PeerInfo::new(p.peer, self.inner.name.clone()),
                };
                info.addresses = p.addresses.iter().map(ToString::to_string).collect();
                info.connected = p.session;
                info.rtt = info.rtt.or(p.rtt);
                info.path = Some(p.path.to_string());
                info
            })
            .collect()
    }

    /// Closes the links first, while the swarm still carries their streams: each session sends
    /// what it still owes its peer (acknowledgements, the batches its retransmit buffer admits)
    /// and its Close, so the peer sees an orderly close rather than a lost connection. Every
    /// write is bounded by the session's idle timeout, so a peer that stopped reading holds
    /// this up at most that long. Then the swarm actor stops: it closes its libp2p connections
    /// in order, so yamux writes those last frames before its GoAway (again within the idle
    /// timeout), and the mesh's tasks end.
    async fn close(&self) {
        let inner = &self.inner;
        inner.closing.cancel();
        inner.links.close().await;
        inner.cancel.cancel();
        inner.tracker.close();
        inner.tracker.wait().await;
        // A stream handed to the links just before `closing` was seen may have started a link
        // after they closed; it ends at once (the links are cancelled): wait for it too.
        inner.links.close().await;
    }
}

/// Whether trees carry this change in multi-hop mode (publish/subscribe; services stay on
/// sessions).
fn trees_carry(change: &LocalChange) -> bool {
    matches!(
        change,
        LocalChange::IntentAdded(_)
            | LocalChange::IntentRemoved(_)
            | LocalChange::InterestAdded(_)
            | LocalChange::InterestRemoved(_)
    )
}

impl MeshEndpoint {
    /// Starts the multi-hop actor and the acceptor of tree streams.
    fn start_trees(
        &self,
        control: &mut libp2p_stream::Control,
        port: Arc<dyn RouterPort>,
        commands: &mpsc::Sender<Command>,
        local: Vec<LocalChange>,
    ) -> Result<(), String> {
        let inner = &self.inner;
        let mut incoming = control
            .accept(TREE_PROTOCOL)
            .map_err(|e| format!("register {TREE_PROTOCOL}: {e}"))?;
        let bootstrap = inner
            .config
            .dial
            .iter()
            .filter_map(|addr| match addr.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(peer)) => {
                    Some((dndm_peer(&peer)?, vec![addr.clone()]))
                }
                _ => None,
            })
            .collect();
        let state = inner.clone();
        let connections = inner.clone();
        let setup = trees::TreeSetup {
            keypair: inner.keypair.clone(),
            port,
            overlay: inner.config.tree.clone(),
            max_peers: inner.config.max_peers,
            seed: inner.config.remote.jitter_rng().u64(..),
            bootstrap,
            commands: commands.clone(),
            listening: Arc::new(move || state.state().listening.clone()),
            connected: Arc::new(move || {
                let state = connections.state();
                state.connections.keys().copied().collect()
            }),
            stats: inner.tree_stats.clone(),
            view: inner.tree_view.clone(),
            tracker: inner.tracker.clone(),
            cancel: inner.cancel.clone(),
        };
        let (actor, handle) = trees::Trees::new(setup);
        let events = handle.events.clone();
        let _ = inner.tree.set(handle);
        let closing = inner.closing.clone();
        inner.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = closing.cancelled() => break,
                    next = incoming.next() => next,
                };
                let Some((peer, stream)) = next else { break };
                if events
                    .send(trees::TreeEvent::Stream(peer, stream))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let span = tracing::info_span!("trees", local = %inner.keypair.peer_id());
        inner
            .tracker
            .spawn(tracing::Instrument::instrument(actor.run(local), span));
        Ok(())
    }

    /// Counters of the multi-hop layer (all zero unless [`MeshConfig::multi_hop`]).
    pub fn tree_stats(&self) -> TreeStats {
        *self.inner.tree_stats.borrow()
    }

    /// The trees this node knows in multi-hop mode, as of the actor's last tick (100 ms): each
    /// stream's path to its origin, parent, children and position.
    pub fn tree_streams(&self) -> Vec<overlay::StreamInfo<PeerId>> {
        self.inner
            .tree_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .streams
            .clone()
    }

    /// The tree links in multi-hop mode, as of the actor's last tick.
    pub fn tree_neighbours(&self) -> Vec<TreeNeighbour> {
        self.inner
            .tree_view
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .neighbours
            .clone()
    }

    /// A receiver that sees [`MeshEndpoint::tree_stats`] change.
    pub fn tree_stats_changes(&self) -> watch::Receiver<TreeStats> {
        self.inner.tree_stats.subscribe()
    }

    /// Keeps the route set the actor announces in line with the router's.
    fn follow(&self, change: &LocalChange) {
        self.inner.routes.send_if_modified(|routes| match change {
            LocalChange::IntentAdded(ad) => routes.intents.insert(ad.route.clone()),
            LocalChange::IntentRemoved(ad) => routes.intents.remove(&ad.route),
            LocalChange::InterestAdded(ad) => routes.interests.insert(ad.pattern.clone()),
            LocalChange::InterestRemoved(ad) => routes.interests.remove(&ad.pattern),
            _ => false,
        });
    }

    /// The links' entries by peer, read once for one consistent view.
    fn links_by_peer(&self) -> HashMap<PeerId, dndm_remote::endpoint::PeerLink> {
        self.inner
            .links
            .links()
            .into_iter()
            .map(|l| (l.peer, l))
            .collect()
    }

    /// [`MeshEndpoint::mesh_peers`] from these links.
    fn mesh_peers_with(
        &self,
        links: &HashMap<PeerId, dndm_remote::endpoint::PeerLink>,
    ) -> Vec<MeshPeer> {
        let state = self.inner.state();
        let mut peers: HashMap<PeerId, MeshPeer> = HashMap::new();
        let blank = |peer: PeerId| MeshPeer {
            peer,
            addresses: Vec::new(),
            connections: 0,
            session: false,
            rtt: None,
            wanted: false,
            lan: false,
            messages_sent: 0,
            messages_received: 0,
            failures: 0,
            path: Path::Direct,
            relay_reason: None,
        };
        for (peer_id, conns) in &state.connections {
            let Some(peer) = dndm_peer(peer_id) else {
                continue;
            };
            let entry = peers.entry(peer).or_insert_with(|| blank(peer));
            entry.connections = conns.len();
            entry.addresses = conns.values().cloned().collect();
            entry.addresses.sort();
            entry.rtt = state.ping_rtt.get(peer_id).copied();
            entry.wanted = state.wanted.contains(peer_id);
            entry.lan = state.lan.contains(peer_id);
            if !conns.is_empty() && conns.keys().all(|id| state.relayed.contains(id)) {
                entry.path = Path::Relayed;
                entry.relay_reason = state.hole_punch_failures.get(peer_id).cloned();
            }
        }
        for (&peer, link) in links {
            let entry = peers.entry(peer).or_insert_with(|| blank(peer));
            entry.session = link.connected;
            entry.rtt = link.rtt.or(entry.rtt);
            entry.messages_sent = link.stats.messages_sent;
            entry.messages_received = link.stats.messages_received;
            entry.failures = link.stats.failures;
        }
        let mut peers: Vec<MeshPeer> = peers.into_values().collect();
        peers.sort_by_key(|p| p.peer);
        peers
    }
}

/// An error and its causes on one line: libp2p's transport errors show their cause only as a
/// source (`TransportError::Other` displays nothing of its own).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !inner_text.is_empty() && !text.contains(&inner_text) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
