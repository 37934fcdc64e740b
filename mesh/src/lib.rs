//! dndm over a libp2p mesh: dndm sessions on a `/dndm/1.0.0` libp2p stream per peer, next to
//! identify, ping and Kademlia (server mode) answering as any libp2p node would.
//!
//! This crate sits on `dndm-remote`: the libp2p connection (TCP or memory transport, Noise,
//! Yamux) authenticates the peer, so each dndm stream runs the same session protocol as a remote
//! link, minus the Noise layer (`RemoteEndpoint::adopt_authenticated`); reliable routes resume
//! when a peer reconnects. One actor task owns the `Swarm`.
//!
//! # Status
//!
//! First cut: static peers (dial addresses, redialed with backoff and jitter when lost) and
//! Kademlia routing-table entries from identify. Not yet here: DNS-SD/mDNS discovery, provider
//! records for routes, the connection policy beyond a full mesh, mesh introspection in
//! snapshots.
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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dndm_core::{Endpoint, EndpointError, Keypair, LocalChange, PeerId, RouterPort};
use dndm_remote::backoff::Backoff;
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint};
use futures::StreamExt as _;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, StreamProtocol, Swarm, identify, kad, noise, ping, tcp, yamux};
use tokio::sync::mpsc;
use tokio_util::compat::FuturesAsyncReadCompatExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The dndm protocol id on libp2p streams.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dndm/1.0.0");

/// How often the swarm actor checks that every connected peer has a live dndm stream.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// How long an idle libp2p connection stays open.
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Which libp2p transport the swarm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Transport {
    /// TCP (listen on `/ip4/…/tcp/…`).
    #[default]
    Tcp,
    /// libp2p's in-process memory transport (`/memory/N`), for tests.
    Memory,
}

/// Settings of a [`MeshEndpoint`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MeshConfig {
    /// The transport.
    pub transport: Transport,
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Peers to dial at start (static bootstrap).
    pub dial: Vec<Multiaddr>,
    /// The session settings of the dndm streams (listen/dial targets there are ignored).
    pub remote: RemoteConfig,
}

/// Why the mesh could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshError {
    /// Building the libp2p stack failed.
    #[error("libp2p setup: {0}")]
    Setup(String),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    stream: libp2p_stream::Behaviour,
}

/// A router endpoint on a libp2p mesh. See the crate docs.
#[derive(Debug, Clone)]
pub struct MeshEndpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    config: MeshConfig,
    keypair: Keypair,
    /// The session engine: one link per peer, fed with libp2p streams.
    links: RemoteEndpoint,
    listening: Mutex<Vec<Multiaddr>>,
    started: OnceLock<()>,
    /// Commands for the swarm actor, once started.
    commands: OnceLock<mpsc::Sender<Command>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// Commands queued for the swarm actor. Bounded: operator commands are rare.
const COMMANDS: usize = 64;

/// What the swarm actor is asked to do.
#[derive(Debug)]
enum Command {
    /// Close every connection to a peer.
    Disconnect(libp2p::PeerId),
    /// Dial a configured address again (after its backoff delay).
    Redial(Multiaddr),
}

impl MeshEndpoint {
    /// A mesh endpoint with this identity (the libp2p PeerId equals the dndm one).
    ///
    /// # Errors
    /// [`EndpointError::Config`] when the session engine cannot be set up.
    pub fn new(keypair: Keypair, config: MeshConfig) -> Result<Self, EndpointError> {
        let mut remote = config.remote.clone();
        remote.listen.clear();
        remote.dial.clear();
        let links = RemoteEndpoint::new(keypair.clone(), remote)?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: format!("mesh:{}", keypair.peer_id()),
                config,
                keypair,
                links,
                listening: Mutex::new(Vec::new()),
                started: OnceLock::new(),
                commands: OnceLock::new(),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// Addresses the swarm listens on (known once the listeners are up).
    pub fn listening(&self) -> Vec<Multiaddr> {
        self.inner
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Closes every connection to `peer` (configured peers are redialed with backoff).
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
    pub fn links(&self) -> Vec<dndm_remote::endpoint::LinkInfo> {
        self.inner.links.links()
    }

    /// A receiver that changes whenever a link connects, fails, closes or goes away.
    pub fn link_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.links.link_changes()
    }

    /// Peers with a dndm link.
    pub fn peers(&self) -> Vec<PeerId> {
        self.inner.links.peers()
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.inner.keypair.peer_id()
    }

    fn swarm(&self) -> Result<Swarm<Behaviour>, MeshError> {
        let keypair =
            libp2p::identity::Keypair::ed25519_from_bytes(self.inner.keypair.secret_seed())
                .map_err(|e| MeshError::Setup(e.to_string()))?;
        let behaviour = |key: &libp2p::identity::Keypair| {
            let peer = key.public().to_peer_id();
            let identify = identify::Behaviour::new(identify::Config::new(
                "/dndm/id/1.0.0".to_owned(),
                key.public(),
            ));
            let mut kad = kad::Behaviour::new(peer, kad::store::MemoryStore::new(peer));
            kad.set_mode(Some(kad::Mode::Server));
            Behaviour {
                identify,
                ping: ping::Behaviour::default(),
                kad,
                stream: libp2p_stream::Behaviour::new(),
            }
        };
        let setup = |e: &dyn std::fmt::Display| MeshError::Setup(e.to_string());
        let swarm = match self.inner.config.transport {
            Transport::Tcp => libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| setup(&e))?
                .with_behaviour(behaviour)
                .map_err(|e| setup(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
                .build(),
            Transport::Memory => libp2p::SwarmBuilder::with_existing_identity(keypair)
                .with_tokio()
                .with_other_transport(|key| {
                    use libp2p::Transport as _;
                    let noise = noise::Config::new(key)
                        .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
                    Ok(libp2p::core::transport::MemoryTransport::default()
                        .upgrade(libp2p::core::upgrade::Version::V1)
                        .authenticate(noise)
                        .multiplex(yamux::Config::default()))
                })
                .map_err(|e| setup(&e))?
                .with_behaviour(behaviour)
                .map_err(|e| setup(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT))
                .build(),
        };
        Ok(swarm)
    }
}

/// The dndm PeerId of a libp2p peer (ed25519 keys only).
fn dndm_peer(peer: &libp2p::PeerId) -> Option<PeerId> {
    PeerId::from_bytes(&peer.to_bytes()).ok()
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
        let mut swarm = self.swarm().map_err(|e| config_error(e.to_string()))?;
        for addr in &inner.config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| config_error(format!("listen on {addr}: {e}")))?;
        }
        let mut dials = HashMap::new();
        for addr in &inner.config.dial {
            dial(&mut swarm, &mut dials, addr.clone())
                .map_err(|e| config_error(format!("dial {addr}: {e}")))?;
        }
        let (commands_tx, commands) = mpsc::channel(COMMANDS);
        let _ = inner.commands.set(commands_tx.clone());
        let mut control = swarm.behaviour().stream.new_control();
        let mut incoming = control
            .accept(PROTOCOL)
            .map_err(|e| config_error(format!("register {PROTOCOL}: {e}")))?;
        inner.links.start(port, local).await?;

        // Streams peers open to us.
        let links = inner.links.clone();
        let cancel = inner.cancel.clone();
        inner.tracker.spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    next = incoming.next() => next,
                };
                let Some((peer, stream)) = next else { break };
                match dndm_peer(&peer) {
                    Some(peer) => links.adopt_authenticated(peer, Box::new(stream.compat())),
                    None => tracing::warn!(%peer, "dndm stream from a non-ed25519 peer refused"),
                }
            }
        });
        // The swarm actor.
        inner.tracker.spawn(run_swarm(
            inner.clone(),
            swarm,
            control,
            Redials {
                dials,
                commands,
                commands_tx,
            },
        ));
        Ok(())
    }

    fn on_local_change(&self, change: LocalChange) {
        self.inner.links.on_local_change(change);
    }

    async fn close(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.links.close().await;
    }
}

/// Dials of configured addresses, by connection, so a lost one is redialed.
struct Redials {
    dials: HashMap<ConnectionId, Multiaddr>,
    commands: mpsc::Receiver<Command>,
    commands_tx: mpsc::Sender<Command>,
}

/// Dials `addr`, remembering the connection id.
fn dial(
    swarm: &mut Swarm<Behaviour>,
    dials: &mut HashMap<ConnectionId, Multiaddr>,
    addr: Multiaddr,
) -> Result<(), libp2p::swarm::DialError> {
    let opts = DialOpts::unknown_peer_id().address(addr.clone()).build();
    let id = opts.connection_id();
    swarm.dial(opts)?;
    dials.insert(id, addr);
    Ok(())
}

/// Opens the dndm stream to `peer_id` unless a link to it is up; only the side with the lower
/// PeerId opens, so a pair has one stream.
fn open_if_needed(
    inner: &Arc<Inner>,
    control: &libp2p_stream::Control,
    local: libp2p::PeerId,
    peer_id: libp2p::PeerId,
) {
    if local >= peer_id {
        return;
    }
    let Some(peer) = dndm_peer(&peer_id) else {
        return;
    };
    if inner.links.is_connected(&peer) {
        return;
    }
    let mut control = control.clone();
    let links = inner.links.clone();
    let cancel = inner.cancel.clone();
    inner.tracker.spawn(async move {
        let opened = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            opened = control.open_stream(peer_id, PROTOCOL) => opened,
        };
        match opened {
            Ok(stream) => links.adopt_authenticated(peer, Box::new(stream.compat())),
            Err(e) => tracing::debug!(%peer_id, error = %e, "dndm stream not opened"),
        }
    });
}

/// Owns the swarm: records listen addresses, feeds Kademlia from identify, and opens the dndm
/// stream on every new connection (from the side with the lower PeerId, so there is one).
async fn run_swarm(
    inner: Arc<Inner>,
    mut swarm: Swarm<Behaviour>,
    control: libp2p_stream::Control,
    mut redials: Redials,
) {
    let mut backoffs: HashMap<Multiaddr, Backoff> = HashMap::new();
    let mut random = u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let local = *swarm.local_peer_id();
    // libp2p-stream drops inbound streams that arrive faster than they are accepted, and a
    // dndm stream can die while its connection lives: check every connected peer now and then.
    let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            biased;
            () = inner.cancel.cancelled() => break,
            event = swarm.select_next_some() => event,
            Some(command) = redials.commands.recv() => {
                match command {
                    Command::Disconnect(peer) => {
                        let _ = swarm.disconnect_peer_id(peer);
                    }
                    Command::Redial(addr) => {
                        if let Err(e) = dial(&mut swarm, &mut redials.dials, addr.clone()) {
                            tracing::debug!(%addr, error = %e, "redial failed");
                        }
                    }
                }
                continue;
            }
            _ = reconcile.tick() => {
                let peers: Vec<libp2p::PeerId> = swarm.connected_peers().copied().collect();
                for peer_id in peers {
                    open_if_needed(&inner, &control, local, peer_id);
                }
                continue;
            }
        };
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                inner
                    .listening
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                if let Some(addr) = redials.dials.get(&connection_id) {
                    backoffs.remove(addr);
                }
                open_if_needed(&inner, &control, local, peer_id);
            }
            // A configured peer is gone (or could not be reached): dial it again after a
            // backoff delay.
            SwarmEvent::ConnectionClosed {
                connection_id,
                num_established: 0,
                ..
            }
            | SwarmEvent::OutgoingConnectionError { connection_id, .. } => {
                if let Some(addr) = redials.dials.remove(&connection_id) {
                    random = random.wrapping_add(0x9e37_79b9_7f4a_7c15).rotate_left(17);
                    let config = &inner.config.remote;
                    let delay = backoffs
                        .entry(addr.clone())
                        .or_insert_with(|| Backoff::new(config.backoff_initial, config.backoff_max))
                        .next_delay(random);
                    let commands = redials.commands_tx.clone();
                    let cancel = inner.cancel.clone();
                    inner.tracker.spawn(async move {
                        #[allow(clippy::disallowed_methods)]
                        // Redial backoff: a timer is the point.
                        let wait = tokio::time::sleep(delay);
                        tokio::select! {
                            biased;
                            () = cancel.cancelled() => {}
                            () = wait => {
                                let _ = commands.send(Command::Redial(addr)).await;
                            }
                        }
                    });
                }
            }
            // Another connection to the peer remains: the dndm stream may have been on the one
            // that closed.
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } if num_established > 0 => {
                open_if_needed(&inner, &control, local, peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                for addr in info.listen_addrs {
                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            _ => {}
        }
    }
}
