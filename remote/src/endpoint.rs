//! The remote endpoint: TCP and Unix-socket listeners and dialers, one task per peer link, and
//! the [`Endpoint`] implementation that joins them to a router.
//!
//! Tasks: one accept loop per listener, one dial loop per target (redialing with backoff and a
//! circuit breaker), one handshake task per new connection, and one link task per peer (the
//! driver, `driver/`). The link task owns that peer's [`Link`](crate::link::Link) machine (and
//! its [`Session`](crate::session::Session)) for its whole life, across reconnects, so reliable
//! messages resume where they stopped; connections are handed to it after the Noise handshake and the
//! peer's identity preamble (its ed25519 key and that key's signature over its Noise static key)
//! identify the peer, and only if that signature verifies and the allow-list (if any) admits the
//! peer. A link whose peer never completed a hello ends with its connection, so identities that
//! get no further leave nothing behind.
//!
//! What a crowd of connections may cost is bounded by `[remote.budget]`
//! ([`BudgetConfig`](dndm_core::BudgetConfig)): at most `handshakes` inbound handshakes run at
//! once (a connection beyond it is closed as soon as it is accepted), at most `links` peers
//! have a link (a new identity beyond it is refused after its handshake), and at most
//! `connections_per_peer` connections of one identity wait for its link. Each refusal counts
//! in [`RemoteStats::handshake_failures`] and [`RemoteStats::over_budget`]. An accept loop that
//! runs out of file descriptors or memory pauses ([`AcceptBackoff`]) instead of spinning.
//! Every task is tracked; [`Endpoint::close`] cancels them, each
//! link closes its session in order (the peer sees the reason), and `close` returns when all
//! have ended.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use dndm_core::{
    BudgetKind, CallError, Endpoint, EndpointError, Keypair, LocalChange, PeerId, RouterPort,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::backoff::{AcceptAction, AcceptBackoff, Backoff, BreakerState, CircuitBreaker};
use crate::driver::{Command, link_task};
use crate::link::{LocalSet, Secure};
use crate::noise::{self, Channel, PreambleError, StaticKey};
use crate::session::LinkFailure;

mod config;
mod connections;
mod record;

use connections::{Listener, accept_loop, dial_loop, hand_off, start_handshake};

pub use config::{ByteStream, Connector, RemoteConfig, Target};

/// The state of one peer link ([`RemoteEndpoint::links`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerLink {
    /// The peer.
    pub peer: PeerId,
    /// Whether a connection is up and the hello exchanged.
    pub connected: bool,
    /// The last measured round trip.
    pub rtt: Option<Duration>,
    /// Session counters (messages and batches sent, resends, drops...).
    pub stats: crate::session::SessionStats,
    /// Routes the peer declared it publishes on.
    pub peer_intents: Arc<[dndm_core::Route]>,
    /// Patterns the peer declared it subscribes to.
    pub peer_interests: Arc<[dndm_core::RoutePattern]>,
    /// What the peer has not acknowledged yet: publishes waiting in the link's queue or to be
    /// batched, plus sent batches. Zero means the peer has everything sent so far;
    /// [`RemoteEndpoint::link_changes`] fires when it becomes zero.
    pub unacked: u64,
}

impl PeerLink {
    /// This link as a snapshot entry of `endpoint`.
    pub fn peer_info(&self, endpoint: &str) -> dndm_core::PeerInfo {
        let mut info = dndm_core::PeerInfo::new(self.peer, endpoint);
        info.connected = self.connected;
        info.rtt = self.rtt;
        info.messages_sent = self.stats.messages_sent;
        info.messages_received = self.stats.messages_received;
        info.failures = self.stats.failures;
        info.acked = self.stats.acked;
        info.undelivered = self.stats.undelivered;
        info.retransmitted = self.stats.retransmitted;
        info.unacked = self.unacked;
        info.batches_sent = self.stats.batches_sent;
        info.bytes_sent = self.stats.bytes_sent;
        info.pauses_sent = self.stats.pauses_sent;
        info.pauses_received = self.stats.pauses_received;
        info
    }
}

/// Counters of a [`RemoteEndpoint`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStats {
    /// Connections dropped before reaching a link: the Noise handshake or identity preamble
    /// failed (timeout, garbage, a key that does not sign the Noise static key), the peer is not
    /// on the allow-list, or a connection budget refused it (`handshakes`, `links`,
    /// `connections_per_peer`; those also count in [`over_budget`](Self::over_budget)). A bad
    /// hello counts as a link failure.
    pub handshake_failures: u64,
    /// Connections that ended with a failure after the hello.
    pub link_failures: u64,
    /// Dials that failed.
    pub dial_failures: u64,
    /// Peer routes the router refused (fingerprint mismatch).
    pub refused_routes: u64,
    /// Connections closed because a batch's signature did not verify.
    pub signature_failures: u64,
    /// Connections closed because the peer sent a frame that does not decode or breaks the
    /// protocol.
    pub bad_frames: u64,
    /// Connections closed because a Noise transport message did not decrypt (tampered,
    /// truncated or replayed ciphertext). Also a link failure; not counted in `bad_frames`.
    pub decrypt_failures: u64,
    /// Messages of local intents that will never reach a peer (all links, all reasons; each
    /// also reported on its intent). Kept when a link goes away.
    pub undelivered: u64,
    /// Peers retired after staying away past [`RemoteConfig::peer_grace`].
    pub retired_peers: u64,
    /// Peer messages dropped because a full local subscriber's hold overflowed (the peer kept
    /// sending on a route it was asked to pause).
    pub flow_overruns: u64,
    /// Times a peer or a connection crossed each budget of `[remote.budget]` (a closed link, a
    /// refused connection, a request answered `Busy`...). Kept when a link goes away.
    pub over_budget: BudgetCounts,
    /// Signed batches handed to the recorder ([`RemoteEndpoint::recorder`]).
    pub recorded: u64,
    /// Signed batches the recorder did not get: it fell behind by its channel's capacity.
    pub record_dropped: u64,
}

/// Counts per [`BudgetKind`]: how often each budget was crossed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetCounts([u64; BudgetKind::ALL.len()]);

impl BudgetCounts {
    /// How often `kind` was crossed.
    pub fn get(&self, kind: BudgetKind) -> u64 {
        self.0[kind.index()]
    }

    /// Counts one crossing of `kind`.
    pub fn add(&mut self, kind: BudgetKind) {
        self.0[kind.index()] += 1;
    }

    /// Every budget with its count, in [`BudgetKind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (BudgetKind, u64)> + '_ {
        BudgetKind::ALL.iter().map(|&kind| (kind, self.get(kind)))
    }

    /// All crossings together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Links a router to peers over TCP and Unix sockets. See the module docs.
#[derive(Debug, Clone)]
pub struct RemoteEndpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) config: RemoteConfig,
    pub(crate) keypair: Keypair,
    pub(crate) static_key: StaticKey,
    /// Our binding signature over our Noise static key.
    pub(crate) binding: [u8; 64],
    /// Our session epoch, the same for every peer's session: a peer's link task started again
    /// (after a connection that never got through a hello) is the same incarnation to the
    /// peer, which then resumes instead of dropping what it sent as lost to a restart.
    pub(crate) epoch: u64,
    pub(crate) port: OnceLock<Arc<dyn RouterPort>>,
    /// The local route set; link tasks follow it.
    pub(crate) local: watch::Sender<LocalSet>,
    pub(crate) links: Mutex<HashMap<PeerId, mpsc::Sender<Handoff>>>,
    /// What each link last reported about itself.
    pub(crate) infos: Mutex<HashMap<PeerId, PeerLink>>,
    /// Each link's command queue, for [`RemoteEndpoint::flush`].
    pub(crate) commands: Mutex<HashMap<PeerId, mpsc::Sender<Command>>>,
    /// Peers whose link is running a connection now (hello exchanged or not).
    pub(crate) active: Mutex<HashSet<PeerId>>,
    /// Bumped whenever a link connects, fails, closes or goes away; see `link_changes`.
    pub(crate) link_state: watch::Sender<u64>,
    pub(crate) bound: Mutex<Vec<Target>>,
    /// One entry per `config.dial` target, in order: its dial loop's circuit breaker.
    pub(crate) dials: Mutex<Vec<DialStatus>>,
    pub(crate) stats: Mutex<RemoteStats>,
    /// Inbound handshakes in progress: `budget.handshakes` permits.
    pub(crate) handshakes: Arc<Semaphore>,
    /// Set while the handshake budget refuses connections (logged once per episode).
    pub(crate) handshakes_full: AtomicBool,
    /// Set while the link budget refuses new peers (logged once per episode).
    pub(crate) links_full: AtomicBool,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
    /// Where signed batches go when recording (`session.record`).
    pub(crate) recorder: OnceLock<mpsc::Sender<dndm_codec::record::Record>>,
}

/// A handshaken connection handed to a peer's link task.
pub(crate) struct Handoff {
    pub(crate) io: Box<dyn ByteStream>,
    pub(crate) channel: Secure,
    /// Plaintext already read after the identity preamble.
    pub(crate) rest: BytesMut,
    /// Told how the connection ended (dial loops wait on it).
    pub(crate) done: Option<oneshot::Sender<Ended>>,
    /// Opened by the peer with the lower PeerId. When both peers open a connection at once,
    /// both keep that one, so they do not each wait for a hello on a different connection.
    pub(crate) preferred: bool,
}

/// How a connection handed to a link ended, for the dial loop that opened it.
#[derive(Debug)]
pub(crate) struct Ended {
    /// Whether the peer's hello was accepted on it.
    pub(crate) opened: bool,
    /// Why it failed; `None` when it closed in order.
    pub(crate) failure: Option<LinkFailure>,
}

impl Ended {
    /// Whether the dial worked: the session opened and nothing ended it that redialing cannot
    /// fix (a refusal, a protocol violation).
    fn is_success(&self) -> bool {
        self.opened && self.failure.as_ref().is_none_or(LinkFailure::is_transient)
    }
}

/// Why a connection failed before its hand-off.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("noise: {0}")]
    Noise(#[from] noise::NoiseError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("first frame: {0}")]
    Frame(String),
    #[error("timed out")]
    Timeout,
    #[error("connection closed during the handshake")]
    Eof,
    #[error("peer {0} is not allowed")]
    NotAllowed(PeerId),
    #[error("dialed {expected} but the node there is {actual}")]
    UnexpectedPeer { expected: PeerId, actual: PeerId },
    #[error(
        "{waiting} connections of peer {peer} already wait for its link (remote.budget.connections_per_peer)"
    )]
    Busy { peer: PeerId, waiting: usize },
    #[error("peer {peer} refused: {links} peers already have a link (remote.budget.links)")]
    TooManyLinks { peer: PeerId, links: usize },
    #[error("endpoint closing")]
    Closing,
}

impl RemoteEndpoint {
    /// A remote endpoint with this identity and settings.
    ///
    /// # Errors
    /// [`EndpointError::Config`] naming the field and value of a setting that cannot work
    /// ([`RemoteConfig::validate`]), or when the Noise key cannot be generated.
    pub fn new(keypair: Keypair, config: RemoteConfig) -> Result<Self, EndpointError> {
        let name = format!("remote:{}", keypair.peer_id());
        config.validate().map_err(|e| EndpointError::Config {
            endpoint: name.clone(),
            reason: e.to_string(),
        })?;
        let static_key = StaticKey::generate().map_err(|e| EndpointError::Config {
            endpoint: name.clone(),
            reason: e.to_string(),
        })?;
        let binding = noise::sign_binding(&keypair, &static_key.public());
        let handshakes = config.session.budget.handshakes.min(Semaphore::MAX_PERMITS);
        let dials = config
            .dial
            .iter()
            .map(|target| DialStatus {
                target: target.clone(),
                breaker: BreakerState::Closed,
                failures: 0,
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                name,
                config,
                keypair,
                static_key,
                binding,
                epoch: new_epoch(),
                port: OnceLock::new(),
                local: watch::Sender::new(LocalSet::default()),
                links: Mutex::new(HashMap::new()),
                infos: Mutex::new(HashMap::new()),
                link_state: watch::Sender::new(0),
                active: Mutex::new(HashSet::new()),
                commands: Mutex::new(HashMap::new()),
                bound: Mutex::new(Vec::new()),
                dials: Mutex::new(dials),
                stats: Mutex::new(RemoteStats::default()),
                handshakes: Arc::new(Semaphore::new(handshakes)),
                handshakes_full: AtomicBool::new(false),
                links_full: AtomicBool::new(false),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
                recorder: OnceLock::new(),
            }),
        })
    }

    /// The addresses actually bound (a TCP port 0 resolved), after start.
    pub fn bound(&self) -> Vec<Target> {
        lock(&self.inner.bound).clone()
    }

    /// One entry per dial target (`RemoteConfig::dial`), in order: whether its circuit breaker
    /// lets dials through, for readiness checks and operators.
    pub fn dials(&self) -> Vec<DialStatus> {
        lock(&self.inner.dials).clone()
    }

    /// One entry per peer link: connection state, last RTT and session counters.
    pub fn links(&self) -> Vec<PeerLink> {
        let mut infos: Vec<PeerLink> = lock(&self.inner.infos).values().cloned().collect();
        infos.sort_by_key(|i| i.peer);
        infos
    }

    /// A receiver that changes whenever a link connects, fails, closes or goes away, has
    /// everything acknowledged ([`PeerLink::unacked`] becomes 0), pauses or is paused by its
    /// peer, its peer is retired, or a connection fails its handshake
    /// ([`RemoteStats::handshake_failures`]): wait on it (`changed().await`) and read
    /// [`links`](Self::links) or [`stats`](Self::stats) instead of polling.
    pub fn link_changes(&self) -> watch::Receiver<u64> {
        self.inner.link_state.subscribe()
    }

    /// Whether the link to `peer` has a connection up (hello exchanged).
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        lock(&self.inner.infos)
            .get(peer)
            .is_some_and(|info| info.connected)
    }

    /// Waits until `peer` has acknowledged every message published to it before this call
    /// (across reconnects: the session resends what was not acknowledged).
    ///
    /// # Errors
    /// [`CallError::Closed`] when there is no link to `peer` or it ends first. Bound the wait
    /// with a timeout: a peer that never comes back never acknowledges.
    pub async fn flush(&self, peer: &PeerId) -> Result<(), CallError> {
        let commands = lock(&self.inner.commands)
            .get(peer)
            .cloned()
            .ok_or(CallError::Closed)?;
        let (done, flushed) = oneshot::channel();
        commands
            .send(Command::Flush(done))
            .await
            .map_err(|_| CallError::Closed)?;
        flushed.await.map_err(|_| CallError::Closed)
    }

    /// Whether the link to `peer` is running a connection (possibly still exchanging hellos):
    /// a new stream to it now would only wait behind the current one.
    pub fn has_connection(&self, peer: &PeerId) -> bool {
        lock(&self.inner.active).contains(peer)
    }

    /// Peers with a link (connected or reconnecting).
    pub fn peers(&self) -> Vec<PeerId> {
        lock(&self.inner.links).keys().copied().collect()
    }

    /// Counters.
    pub fn stats(&self) -> RemoteStats {
        *lock(&self.inner.stats)
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.inner.keypair.peer_id()
    }

    /// Runs a link to `peer` over a stream that the transport already authenticated and
    /// encrypted (a libp2p stream): no Noise layer and no identity preamble; the peer's hello
    /// must carry `peer`'s key. Batch signatures (if on) bind to both peers' ids.
    /// `opened_here`: whether this side opened the stream (if both sides open one at once,
    /// both keep the one the lower PeerId opened).
    pub fn adopt_authenticated(
        &self,
        peer: PeerId,
        stream: Box<dyn ByteStream>,
        opened_here: bool,
    ) {
        let preferred = opened_here == (self.inner.keypair.peer_id() < peer);
        let inner = self.inner.clone();
        let channel = Secure::plain();
        let handoff = Handoff {
            io: stream,
            channel,
            rest: BytesMut::new(),
            done: None,
            preferred,
        };
        if let Err(e) = hand_off(&inner, peer, handoff) {
            tracing::debug!(%peer, error = %e, "adopted stream not handed off");
        }
    }

    /// Runs a link over a stream the caller accepted itself (any transport), as the responder.
    /// The endpoint must be started; the stream is dropped if the endpoint is closed, or at once
    /// when `budget.handshakes` handshakes are already in progress.
    pub fn accept_stream(&self, stream: Box<dyn ByteStream>) {
        start_handshake(&self.inner, stream);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code that can panic runs under these locks, so a poisoned one is consistent.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait::async_trait]
impl Endpoint for RemoteEndpoint {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn start(
        &self,
        port: Arc<dyn RouterPort>,
        local: Vec<LocalChange>,
    ) -> Result<(), EndpointError> {
        let inner = &self.inner;
        if inner.port.set(port).is_err() {
            return Err(EndpointError::State {
                endpoint: inner.name.clone(),
                reason: "already started",
            });
        }
        for change in local {
            self.on_local_change(change);
        }
        let io = |source| EndpointError::Io {
            endpoint: inner.name.clone(),
            source,
        };
        let cannot_listen = |target: &Target, error: std::io::Error| EndpointError::Listen {
            endpoint: inner.name.clone(),
            address: target.to_string(),
            reason: error.to_string(),
        };
        // Bind everything first, so a failure leaves nothing running.
        let mut listeners = Vec::new();
        for target in &inner.config.listen {
            match target {
                Target::Tcp(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr)
                        .await
                        .map_err(|e| cannot_listen(target, e))?;
                    lock(&inner.bound).push(Target::Tcp(listener.local_addr().map_err(io)?));
                    listeners.push(Listener::Tcp(listener));
                }
                #[cfg(unix)]
                Target::Unix(path) => {
                    let listener = tokio::net::UnixListener::bind(path)
                        .map_err(|e| cannot_listen(target, e))?;
                    lock(&inner.bound).push(target.clone());
                    listeners.push(Listener::Unix(listener));
                }
                Target::Custom(connector) => {
                    return Err(EndpointError::Config {
                        endpoint: inner.name.clone(),
                        reason: format!(
                            "cannot listen on custom target {connector:?}; use accept_stream"
                        ),
                    });
                }
                Target::Peer { .. } => {
                    return Err(EndpointError::Config {
                        endpoint: inner.name.clone(),
                        reason: format!(
                            "cannot listen on {target}: a peer is pinned only where we dial \
                             (use session.allow_peers to restrict who connects)"
                        ),
                    });
                }
            }
        }
        for listener in listeners {
            inner.tracker.spawn(accept_loop(inner.clone(), listener));
        }
        // One generator per endpoint; each dial loop draws from its own fork, so a target's
        // delays depend only on the seed and its place in the list.
        let mut jitter = inner.config.jitter_rng();
        for (i, target) in inner.config.dial.iter().enumerate() {
            inner
                .tracker
                .spawn(dial_loop(inner.clone(), target.clone(), i, jitter.fork()));
        }
        Ok(())
    }

    fn on_local_change(&self, change: LocalChange) {
        self.inner.local.send_modify(|set| match change {
            LocalChange::IntentAdded(ad) => {
                set.intents.insert(ad);
            }
            LocalChange::IntentRemoved(ad) => {
                set.intents.remove(&ad);
            }
            LocalChange::InterestAdded(ad) => {
                set.interests.insert(ad);
            }
            LocalChange::InterestRemoved(ad) => {
                set.interests.remove(&ad);
            }
            LocalChange::ServiceAdded(ad) => {
                set.services.insert(ad);
            }
            LocalChange::ServiceRemoved(ad) => {
                set.services.remove(&ad);
            }
            other => tracing::warn!(?other, "unknown local change ignored"),
        });
    }

    fn peers(&self) -> Vec<dndm_core::PeerInfo> {
        self.links()
            .into_iter()
            .map(|link| link.peer_info(&self.inner.name))
            .collect()
    }

    async fn close(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        #[cfg(unix)]
        for target in &self.inner.config.listen {
            if let Target::Unix(path) = target {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A dial target and the state of its circuit breaker ([`RemoteEndpoint::dials`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DialStatus {
    /// The target dialled.
    pub target: Target,
    /// Whether dials go through (`Closed`), wait out a cool-down (`Open`), or one trial is in
    /// flight (`HalfOpen`). `Open`'s instant is relative to the dial loop's start.
    pub breaker: BreakerState,
    /// Consecutive failed dials (or links that failed before they worked); 0 after a success.
    pub failures: u32,
}

/// A random session epoch; it only needs to differ between process starts.
fn new_epoch() -> u64 {
    os_random()
}

/// A random `u64` from the OS (the clock and process id stand in when the OS has no
/// randomness to give: what it seeds only needs to differ between processes).
fn os_random() -> u64 {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        seed = (u64::from(std::process::id()) ^ clock).to_le_bytes();
    }
    u64::from_le_bytes(seed)
}
