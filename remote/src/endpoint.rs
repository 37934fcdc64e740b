//! The remote endpoint: TCP and Unix-socket listeners and dialers, one task per peer link, and
//! the [`Endpoint`] implementation that joins them to a router.
//!
//! Tasks: one accept loop per listener, one dial loop per target (redialing with backoff and a
//! circuit breaker), one handshake task per new connection, and one link task per peer. The link
//! task owns that peer's [`Session`] for its whole life, across reconnects, so reliable messages
//! resume where they stopped; connections are handed to it after the Noise handshake and the
//! peer's identity preamble (its ed25519 key and that key's signature over its Noise static key)
//! identify the peer, and only if that signature verifies and the allow-list (if any) admits the
//! peer. A link whose peer never completed a hello ends with its connection, so identities that
//! get no further leave nothing behind. Every task is tracked; [`Endpoint::close`] cancels them, each
//! link closes its session in order (the peer sees the reason), and `close` returns when all
//! have ended.

use std::collections::{HashMap, HashSet};
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dndm_codec::{CloseCode, Correlation, ResponseError, SessionId, split_frame};
use dndm_core::{
    CallError, Endpoint, EndpointError, IntentAd, InterestAd, Keypair, LocalChange, PayloadSink,
    PeerId, PublicKey, RequestSink, Route, RouterPort, ServiceAd, SinkError,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::acl::{Acl, AclRule};
use crate::backoff::{Backoff, CircuitBreaker};
use crate::noise::{self, Channel, StaticKey};
use crate::session::{
    Binding, Connection, Event, LinkFailure, Session, SessionConfig, SessionSendError,
};

/// Commands queued per link (publishes from local intents). Bounded: a full queue
/// back-pressures the publishers.
const LINK_COMMANDS: usize = 1024;
/// Connections waiting to be adopted by a link task. Beyond it a new connection of that peer is
/// dropped at once (and counted as a handshake failure) rather than waiting.
const LINK_CONNECTIONS: usize = 4;
/// Length of an ed25519 public key.
const IDENTITY_LEN: usize = 32;
/// Length of the identity preamble: the sender's ed25519 public key, then that key's signature
/// over the sender's Noise static key ([`noise::sign_binding`]).
const PREAMBLE_LEN: usize = IDENTITY_LEN + 64;
/// Read buffer size per connection.
const READ_CHUNK: usize = 64 * 1024;

/// Most bytes read ahead while a write waits for the peer.
const READ_AHEAD: usize = 4 * 1024 * 1024;

/// Where to listen or dial.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Target {
    /// A TCP address.
    Tcp(std::net::SocketAddr),
    /// A Unix socket path.
    #[cfg(unix)]
    Unix(PathBuf),
    /// Any byte stream a [`Connector`] opens (dial only; hand inbound streams to
    /// [`RemoteEndpoint::accept_stream`]).
    Custom(Arc<dyn Connector>),
    /// Dial `target` and accept only `peer` there (dial only): a node at that address with
    /// another identity, however valid, is cut after the handshake and counted in
    /// [`RemoteStats::handshake_failures`]. In config files: `<peer id>@<address>`.
    Peer {
        /// The identity the node at `target` must prove.
        peer: PeerId,
        /// Where to dial.
        target: Box<Target>,
    },
}

impl Target {
    /// `target`, accepting only `peer` there.
    pub fn pinned(peer: PeerId, target: Target) -> Target {
        Target::Peer {
            peer,
            target: Box::new(target),
        }
    }

    /// The peer this target pins, if any.
    fn expected_peer(&self) -> Option<PeerId> {
        match self {
            Self::Peer { peer, .. } => Some(*peer),
            _ => None,
        }
    }
}

/// A byte stream a link can run over: anything `AsyncRead + AsyncWrite`.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for T {}

/// Opens byte streams to one peer, for dialing over transports other than TCP and Unix sockets
/// (a serial line, a tunnel, an in-memory pipe in tests). The dial loop calls it on every
/// (re)connection attempt.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug + 'static {
    /// Opens a new stream.
    ///
    /// # Errors
    /// Any I/O error; the dial loop backs off and retries.
    async fn connect(&self) -> std::io::Result<Box<dyn ByteStream>>;
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
            #[cfg(unix)]
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::Custom(connector) => write!(f, "custom:{connector:?}"),
            Self::Peer { peer, target } => write!(f, "{peer}@{target}"),
        }
    }
}

/// Settings of a [`RemoteEndpoint`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteConfig {
    /// Listen on these.
    pub listen: Vec<Target>,
    /// Dial these (and redial them when the link drops).
    pub dial: Vec<Target>,
    /// The session protocol settings.
    pub session: SessionConfig,
    /// The Noise handshake and the identity preamble must finish within this (the hello that
    /// follows is bounded by the session's idle timeout).
    pub handshake_timeout: Duration,
    /// First redial delay; doubles up to `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    /// Longest redial delay.
    pub backoff_max: Duration,
    /// Consecutive failed dials that open a target's circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses dials.
    pub breaker_cool_down: Duration,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            dial: Vec::new(),
            session: SessionConfig::default(),
            handshake_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(30),
        }
    }
}

impl RemoteConfig {
    /// Settings from the `[remote]` and `[node]` sections of a validated [`dndm_core::Config`]:
    /// `listen`/`connect` (`host:port` or `unix:/path`), timeouts, `retransmit_buffer`,
    /// `signing`, `compression_threshold`, `max_frame_len`, backoff, `allow_peers` and the
    /// `[[remote.acl]]` rules.
    ///
    /// # Errors
    /// [`EndpointError::Config`] naming the key when a value does not fit (a config that passed
    /// `validate()` always fits).
    pub fn from_config(config: &dndm_core::Config) -> Result<Self, EndpointError> {
        let remote = &config.remote;
        let bad = |key: &str, value: &dyn std::fmt::Display, reason: &dyn std::fmt::Display| {
            EndpointError::Config {
                endpoint: "remote".into(),
                reason: format!("remote.{key} = {value} is invalid: {reason}"),
            }
        };
        let target = |key: &str, text: &String| -> Result<Target, EndpointError> {
            // `<peer id>@<address>` pins the identity expected at a dialed address.
            let (peer, address) = match text.split_once('@') {
                Some((peer, address)) if key == "connect" => match peer.parse::<PeerId>() {
                    Ok(peer) => (Some(peer), address),
                    Err(_) => (None, text.as_str()),
                },
                _ => (None, text.as_str()),
            };
            #[cfg(unix)]
            let unix = address
                .strip_prefix("unix:")
                .map(|path| Target::Unix(path.into()));
            #[cfg(not(unix))]
            let unix = None;
            let base = match unix {
                Some(target) => target,
                None => Target::Tcp(address.parse().map_err(|e| bad(key, text, &e))?),
            };
            Ok(match peer {
                Some(peer) => Target::pinned(peer, base),
                None => base,
            })
        };
        let mut out = Self::default();
        for text in &remote.listen {
            out.listen.push(target("listen", text)?);
        }
        for text in &remote.connect {
            out.dial.push(target("connect", text)?);
        }
        out.handshake_timeout = remote.handshake_timeout();
        out.backoff_initial = remote.backoff_initial();
        out.backoff_max = remote.backoff_max();
        let session = &mut out.session;
        session.node_name = config.node.name.clone();
        session.keepalive = remote.keepalive();
        session.idle_timeout = remote.idle_timeout();
        session.retransmit_capacity = remote.retransmit_buffer;
        session.sign_batches = remote.signing == dndm_core::Signing::Batch;
        session.compression = Some(dndm_codec::Compression::new(
            dndm_codec::Compression::DEFAULT_LEVEL,
            remote.compression_threshold,
        ));
        let frame_len = u32::try_from(remote.max_frame_len)
            .map_err(|e| bad("max_frame_len", &remote.max_frame_len, &e))?;
        session.limits = dndm_codec::Limits::builder()
            .max_frame_len(frame_len)
            .build()
            .map_err(|e| bad("max_frame_len", &remote.max_frame_len, &e))?;
        if !remote.allow_peers.is_empty() {
            let mut allowed = HashSet::new();
            for text in &remote.allow_peers {
                allowed.insert(
                    text.parse::<PeerId>()
                        .map_err(|e| bad("allow_peers", text, &e))?,
                );
            }
            session.allow_peers = Some(allowed);
        }
        if !remote.acl.is_empty() {
            let mut rules = Vec::new();
            for (index, rule) in remote.acl.iter().enumerate() {
                let mut peers = Vec::new();
                for text in &rule.peers {
                    let key = format!("acl[{index}].peers");
                    peers.push(text.parse::<PeerId>().map_err(|e| bad(&key, text, &e))?);
                }
                let mut out_rule = if peers.is_empty() {
                    AclRule::any_peer()
                } else {
                    AclRule::for_peers(peers)
                };
                for text in &rule.publish {
                    let key = format!("acl[{index}].publish");
                    out_rule = out_rule.publish(text.parse().map_err(|e| bad(&key, text, &e))?);
                }
                for text in &rule.subscribe {
                    let key = format!("acl[{index}].subscribe");
                    out_rule = out_rule.subscribe(text.parse().map_err(|e| bad(&key, text, &e))?);
                }
                rules.push(out_rule);
            }
            session.acl = Acl::from_rules(rules);
        }
        Ok(out)
    }
}

/// The state of one peer link ([`RemoteEndpoint::links`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkInfo {
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

impl LinkInfo {
    /// This link as a snapshot entry of `endpoint`.
    pub fn peer_info(&self, endpoint: &str) -> dndm_core::PeerInfo {
        let mut info = dndm_core::PeerInfo::new(self.peer, endpoint);
        info.connected = self.connected;
        info.rtt = self.rtt;
        info.messages_sent = self.stats.messages_sent;
        info.messages_received = self.stats.messages_received;
        info.failures = self.stats.failures;
        info
    }
}

/// Counters of a [`RemoteEndpoint`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteStats {
    /// Connections dropped before reaching a link: the Noise handshake or identity preamble
    /// failed (timeout, garbage, a key that does not sign the Noise static key), the peer is not
    /// on the allow-list, or [`LINK_CONNECTIONS`] connections of that peer already wait. A bad
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
}

/// Links a router to peers over TCP and Unix sockets. See the module docs.
#[derive(Debug, Clone)]
pub struct RemoteEndpoint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    config: RemoteConfig,
    keypair: Keypair,
    static_key: StaticKey,
    /// Our binding signature over our Noise static key.
    binding: [u8; 64],
    /// Our session epoch, the same for every peer's session: a peer's link task started again
    /// (after a connection that never got through a hello) is the same incarnation to the
    /// peer, which then resumes instead of dropping what it sent as lost to a restart.
    epoch: u64,
    port: OnceLock<Arc<dyn RouterPort>>,
    /// The local route set; link tasks follow it.
    local: watch::Sender<LocalSet>,
    links: Mutex<HashMap<PeerId, mpsc::Sender<Handoff>>>,
    /// What each link last reported about itself.
    infos: Mutex<HashMap<PeerId, LinkInfo>>,
    /// Each link's command queue, for [`RemoteEndpoint::flush`].
    commands: Mutex<HashMap<PeerId, mpsc::Sender<Command>>>,
    /// Peers whose link is running a connection now (hello exchanged or not).
    active: Mutex<HashSet<PeerId>>,
    /// Bumped whenever a link connects, fails, closes or goes away; see `link_changes`.
    link_state: watch::Sender<u64>,
    bound: Mutex<Vec<Target>>,
    stats: Mutex<RemoteStats>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

/// The local intents and interests a link advertises.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LocalSet {
    intents: HashSet<IntentAd>,
    interests: HashSet<InterestAd>,
    services: HashSet<ServiceAd>,
}

/// A handshaken connection handed to a peer's link task.
struct Handoff {
    io: Box<dyn ByteStream>,
    channel: Secure,
    /// Plaintext already read after the identity preamble.
    rest: BytesMut,
    /// Told how the connection ended (dial loops wait on it).
    done: Option<oneshot::Sender<Ended>>,
    /// Opened by the peer with the lower PeerId. When both peers open a connection at once,
    /// both keep that one, so they do not each wait for a hello on a different connection.
    preferred: bool,
}

/// How a connection handed to a link ended, for the dial loop that opened it.
#[derive(Debug)]
struct Ended {
    /// Whether the peer's hello was accepted on it.
    opened: bool,
    /// Why it failed; `None` when it closed in order.
    failure: Option<LinkFailure>,
}

impl Ended {
    /// Whether the dial worked: the session opened and nothing ended it that redialing cannot
    /// fix (a refusal, a protocol violation).
    fn is_success(&self) -> bool {
        self.opened && self.failure.as_ref().is_none_or(LinkFailure::is_transient)
    }
}

/// The security layer of a connection: our Noise channel, or none when the transport already
/// authenticated and encrypted it (a libp2p stream).
enum Secure {
    Noise(Channel),
    Plain { out: BytesMut },
}

impl Secure {
    fn write(&mut self, frame: &[u8]) -> Result<(), noise::NoiseError> {
        match self {
            Self::Noise(channel) => channel.write(frame),
            Self::Plain { out, .. } => {
                out.extend_from_slice(frame);
                Ok(())
            }
        }
    }

    fn poll_transmit(&mut self) -> Option<Bytes> {
        match self {
            Self::Noise(channel) => channel.poll_transmit(),
            Self::Plain { out, .. } => (!out.is_empty()).then(|| out.split().freeze()),
        }
    }

    /// Decrypts `bytes` and appends the plaintext to `out` (the link's frame buffer).
    fn handle_input_into(
        &mut self,
        bytes: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), noise::NoiseError> {
        match self {
            Self::Noise(channel) => channel.handle_input_into(bytes, out),
            Self::Plain { .. } => {
                out.extend_from_slice(bytes);
                Ok(())
            }
        }
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
    #[error("{LINK_CONNECTIONS} connections of peer {0} already wait for its link")]
    Busy(PeerId),
    #[error("endpoint closing")]
    Closing,
}

impl RemoteEndpoint {
    /// A remote endpoint with this identity and settings.
    ///
    /// # Errors
    /// [`EndpointError::Config`] when the Noise key cannot be generated.
    pub fn new(keypair: Keypair, config: RemoteConfig) -> Result<Self, EndpointError> {
        let name = format!("remote:{}", keypair.peer_id());
        let static_key = StaticKey::generate().map_err(|e| EndpointError::Config {
            endpoint: name.clone(),
            reason: e.to_string(),
        })?;
        let binding = noise::sign_binding(&keypair, &static_key.public());
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
                stats: Mutex::new(RemoteStats::default()),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// The addresses actually bound (a TCP port 0 resolved), after start.
    pub fn bound(&self) -> Vec<Target> {
        lock(&self.inner.bound).clone()
    }

    /// One entry per peer link: connection state, last RTT and session counters.
    pub fn links(&self) -> Vec<LinkInfo> {
        let mut infos: Vec<LinkInfo> = lock(&self.inner.infos).values().cloned().collect();
        infos.sort_by_key(|i| i.peer);
        infos
    }

    /// A receiver that changes whenever a link connects, fails, closes or goes away, has
    /// everything acknowledged ([`LinkInfo::unacked`] becomes 0), or a connection fails its
    /// handshake ([`RemoteStats::handshake_failures`]): wait on it (`changed().await`) and read
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
        let channel = Secure::Plain {
            out: BytesMut::new(),
        };
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
    /// The endpoint must be started; the stream is dropped if the endpoint is closed.
    pub fn accept_stream(&self, stream: Box<dyn ByteStream>) {
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            if let Err(e) = handshake(&inner, stream, false, None, None).await {
                tracing::debug!(error = %e, "inbound handshake failed");
            }
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
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
        // Bind everything first, so a failure leaves nothing running.
        let mut listeners = Vec::new();
        for target in &inner.config.listen {
            match target {
                Target::Tcp(addr) => {
                    let listener = tokio::net::TcpListener::bind(addr).await.map_err(io)?;
                    lock(&inner.bound).push(Target::Tcp(listener.local_addr().map_err(io)?));
                    listeners.push(Listener::Tcp(listener));
                }
                #[cfg(unix)]
                Target::Unix(path) => {
                    let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
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
        for (i, target) in inner.config.dial.iter().enumerate() {
            inner
                .tracker
                .spawn(dial_loop(inner.clone(), target.clone(), i as u64));
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

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

async fn accept_loop(inner: Arc<Inner>, listener: Listener) {
    loop {
        let accepted: std::io::Result<Box<dyn ByteStream>> = tokio::select! {
            biased;
            () = inner.cancel.cancelled() => return,
            accepted = async {
                match &listener {
                    Listener::Tcp(l) => l.accept().await.map(|(s, _)| {
                        let _ = s.set_nodelay(true);
                        Box::new(s) as Box<dyn ByteStream>
                    }),
                    #[cfg(unix)]
                    Listener::Unix(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn ByteStream>),
                }
            } => accepted,
        };
        match accepted {
            Ok(io) => {
                let inner2 = inner.clone();
                inner.tracker.spawn(async move {
                    if let Err(e) = handshake(&inner2, io, false, None, None).await {
                        tracing::debug!(error = %e, "inbound handshake failed");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

async fn dial_loop(inner: Arc<Inner>, target: Target, seed: u64) {
    let mut backoff = Backoff::new(inner.config.backoff_initial, inner.config.backoff_max);
    let mut breaker = CircuitBreaker::new(
        inner.config.breaker_threshold,
        inner.config.breaker_cool_down,
    );
    let origin = tokio::time::Instant::now();
    let mut random = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(std::process::id());
    loop {
        if inner.cancel.is_cancelled() {
            return;
        }
        let now = origin.elapsed();
        let failure = if breaker.allow(now) {
            match dial(&target).await {
                Ok(io) => {
                    let (done_tx, done_rx) = oneshot::channel();
                    let expected = target.expected_peer();
                    match handshake(&inner, io, true, Some(done_tx), expected).await {
                        Ok(()) => {
                            // Wait for the link to end (or the endpoint to close). The dial
                            // worked only if the session opened and did not end in a refusal.
                            let ended = tokio::select! {
                                biased;
                                () = inner.cancel.cancelled() => return,
                                ended = done_rx => ended,
                            };
                            match ended {
                                Ok(ended) if ended.is_success() => {
                                    breaker.on_success();
                                    backoff.reset();
                                    false
                                }
                                Ok(ended) => {
                                    tracing::debug!(%target, ?ended, "link failed before it worked");
                                    true
                                }
                                // Dropped unrun (the link ended first).
                                Err(_) => true,
                            }
                        }
                        Err(e) => {
                            tracing::debug!(%target, error = %e, "outbound handshake failed");
                            true
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(%target, error = %e, "dial failed");
                    lock(&inner.stats).dial_failures += 1;
                    true
                }
            }
        } else {
            false
        };
        if failure {
            breaker.on_failure(origin.elapsed());
        }
        random = random.wrapping_add(0x9e37_79b9_7f4a_7c15).rotate_left(17);
        let delay = backoff.next_delay(random);
        #[allow(clippy::disallowed_methods)]
        // Backoff between dials: the one place a timer is the point.
        let wait = tokio::time::sleep(delay);
        tokio::select! {
            biased;
            () = inner.cancel.cancelled() => return,
            () = wait => {}
        }
    }
}

async fn dial(mut target: &Target) -> std::io::Result<Box<dyn ByteStream>> {
    while let Target::Peer { target: inner, .. } = target {
        target = inner;
    }
    match target {
        Target::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        #[cfg(unix)]
        Target::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        Target::Custom(connector) => connector.connect().await,
        Target::Peer { .. } => Err(std::io::Error::other("unwrapped above")),
    }
}

/// Counts a connection that failed its handshake or was refused at hand-off, and tells
/// [`RemoteEndpoint::link_changes`] listeners.
fn handshake_failed(inner: &Inner) {
    lock(&inner.stats).handshake_failures += 1;
    inner.link_state.send_modify(|v| *v += 1);
}

/// Runs the Noise handshake and the identity preamble, then hands the connection to the peer's
/// link task (creating it on first contact). With `expected`, any other identity is refused.
async fn handshake(
    inner: &Arc<Inner>,
    mut io: Box<dyn ByteStream>,
    initiator: bool,
    done: Option<oneshot::Sender<Ended>>,
    expected: Option<PeerId>,
) -> Result<(), HandshakeError> {
    match secure(inner, &mut io, initiator).await {
        Ok((channel, rest, peer)) => {
            if let Some(expected) = expected.filter(|expected| *expected != peer) {
                handshake_failed(inner);
                return Err(HandshakeError::UnexpectedPeer {
                    expected,
                    actual: peer,
                });
            }
            let preferred = initiator == (inner.keypair.peer_id() < peer);
            let handoff = Handoff {
                io,
                channel: Secure::Noise(channel),
                rest,
                done,
                preferred,
            };
            hand_off(inner, peer, handoff)
        }
        Err(e) => {
            // Counted while the connection is still open: whoever sees it close sees the count.
            handshake_failed(inner);
            Err(e)
        }
    }
}

/// The Noise handshake and the identity preamble; returns the channel, the plaintext read past
/// the preamble, and the peer.
async fn secure(
    inner: &Arc<Inner>,
    io: &mut Box<dyn ByteStream>,
    initiator: bool,
) -> Result<(Channel, BytesMut, PeerId), HandshakeError> {
    // After the Noise handshake each side sends its identity preamble before any frame: its
    // 32-byte ed25519 public key and that key's signature over its Noise static key. Both learn
    // and verify the peer without waiting for each other, so a connection reaches the peer's
    // link only once it proved that identity; the session then checks the hello against it.
    let work = async {
        let mut channel = if initiator {
            Channel::initiator(&inner.static_key)?
        } else {
            Channel::responder(&inner.static_key)?
        };
        let mut plain = BytesMut::new();
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let mut sent_identity = false;
        loop {
            if channel.is_established() && !sent_identity {
                let mut preamble = [0u8; PREAMBLE_LEN];
                preamble[..IDENTITY_LEN].copy_from_slice(&inner.keypair.public().to_bytes());
                preamble[IDENTITY_LEN..].copy_from_slice(&inner.binding);
                channel.write(&preamble)?;
                sent_identity = true;
            }
            while let Some(out) = channel.poll_transmit() {
                io.write_all(&out).await?;
            }
            while let Some(chunk) = channel.poll_plaintext() {
                plain.extend_from_slice(&chunk);
            }
            if plain.len() >= PREAMBLE_LEN {
                let preamble = plain.split_to(PREAMBLE_LEN);
                return Ok((channel, plain, preamble));
            }
            buf.clear();
            if io.read_buf(&mut buf).await? == 0 {
                return Err(HandshakeError::Eof);
            }
            channel.handle_input(&buf)?;
        }
    };
    let (channel, rest, preamble) = tokio::select! {
        biased;
        () = inner.cancel.cancelled() => return Err(HandshakeError::Closing),
        result = tokio::time::timeout(inner.config.handshake_timeout, work) => {
            result.map_err(|_| HandshakeError::Timeout)??
        }
    };
    let (key, signature) = preamble.split_at(IDENTITY_LEN);
    let key: [u8; IDENTITY_LEN] = key
        .try_into()
        .map_err(|_| HandshakeError::Frame("short identity".into()))?;
    let key = PublicKey::from_bytes(&key).map_err(|e| HandshakeError::Frame(e.to_string()))?;
    let remote_static = channel
        .remote_static()
        .ok_or_else(|| HandshakeError::Frame("noise channel not established".into()))?;
    noise::verify_binding(&key, &remote_static, signature)?;
    Ok((channel, rest, key.peer_id()))
}

/// Gives a secured connection to the peer's link task, starting one on first contact. Never
/// waits: a peer not on the allow-list, or one whose link already has [`LINK_CONNECTIONS`]
/// connections waiting, is refused and counted as a handshake failure.
fn hand_off(inner: &Arc<Inner>, peer: PeerId, handoff: Handoff) -> Result<(), HandshakeError> {
    let refused = |e: HandshakeError| {
        // Counted while the connection is still open: whoever sees it close sees the count.
        handshake_failed(inner);
        Err(e)
    };
    if let Some(allowed) = &inner.config.session.allow_peers
        && !allowed.contains(&peer)
    {
        return refused(HandshakeError::NotAllowed(peer));
    }
    // Sent under the lock: a link task retires (leaves `links` and closes its queue) under it
    // too, so a connection never lands in a queue nobody reads.
    let mut links = lock(&inner.links);
    let sender = match links.get(&peer) {
        Some(tx) if !tx.is_closed() => tx.clone(),
        _ => {
            let (tx, rx) = mpsc::channel(LINK_CONNECTIONS);
            links.insert(peer, tx.clone());
            // Every log line of the link carries its peer.
            let span = tracing::info_span!("link", %peer);
            inner
                .tracker
                .spawn(link_task(inner.clone(), peer, rx).instrument(span));
            tx
        }
    };
    match sender.try_send(handoff) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(_handoff)) => {
            drop(links);
            refused(HandshakeError::Busy(peer))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(HandshakeError::Closing),
    }
}

/// A command for a link task.
enum Command {
    Publish {
        route: Route,
        payload: Bytes,
    },
    /// A request to the peer's service on `route`; the answer goes to `reply`.
    Request {
        route: Route,
        payload: Bytes,
        reply: oneshot::Sender<Result<Bytes, CallError>>,
    },
    /// The answer to the peer's request `to` for the local service on `route`.
    Respond {
        route: Route,
        to: u64,
        result: Result<Bytes, CallError>,
    },
    /// Answer once the peer acknowledged everything queued before this command.
    Flush(oneshot::Sender<()>),
}

/// The sink a peer's service gets: queues requests for the link task.
#[derive(Debug)]
struct LinkRequester(mpsc::Sender<Command>);

#[async_trait::async_trait]
impl RequestSink for LinkRequester {
    async fn call(&self, route: &Route, payload: Bytes) -> Result<Bytes, CallError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Request {
            route: route.clone(),
            payload,
            reply,
        };
        self.0.send(command).await.map_err(|_| CallError::Closed)?;
        answer.await.map_err(|_| CallError::Closed)?
    }
}

/// The sink a peer's interest gets: queues publishes for the link task.
#[derive(Debug)]
struct LinkSink(mpsc::Sender<Command>);

#[async_trait::async_trait]
impl PayloadSink for LinkSink {
    async fn send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.0
            .send(Command::Publish {
                route: route.clone(),
                payload,
            })
            .await
            .map_err(|_| SinkError::Closed)
    }

    fn try_send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.0
            .try_send(Command::Publish {
                route: route.clone(),
                payload,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SinkError::Full,
                mpsc::error::TrySendError::Closed(_) => SinkError::Closed,
            })
    }
}

/// State of one peer's link, across connections.
struct Link {
    inner: Arc<Inner>,
    peer: PeerId,
    session: Session,
    /// Local routes as last given to the session.
    applied: LocalSet,
    local: watch::Receiver<LocalSet>,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    /// Fan-in sinks of the peer's intents.
    fan_ins: HashMap<Route, Arc<dyn PayloadSink>>,
    /// Requests sent to the peer, waiting for their answers.
    pending: HashMap<u64, oneshot::Sender<Result<Bytes, CallError>>>,
    next_request: u64,
    rtt: Option<Duration>,
    /// Commands to process before withdrawing intents: messages a publisher sent before it
    /// dropped its intent are queued ahead of the withdrawal and must still go out.
    hold_removals: usize,
    /// The peer's declared routes, refreshed when it declares or withdraws one (shared: every
    /// report copies them).
    peer_intents: Arc<[dndm_core::Route]>,
    peer_interests: Arc<[dndm_core::RoutePattern]>,
    /// New connections from the handshake tasks, and the one to run next.
    connections: mpsc::Receiver<Handoff>,
    next: Option<Handoff>,
    /// Flushes waiting for the peer to acknowledge up to a sequence number.
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    /// Whether the peer's hello was accepted on the current connection.
    opened: bool,
    /// Whether the current connection failed because a Noise message did not decrypt.
    decrypt_failed: bool,
}

/// A random session epoch; it only needs to differ between process starts (the clock stands
/// in when the OS has no randomness to give).
fn new_epoch() -> u64 {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        seed = (u64::from(std::process::id()) ^ clock).to_le_bytes();
    }
    u64::from_le_bytes(seed)
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

async fn link_task(inner: Arc<Inner>, peer: PeerId, connections: mpsc::Receiver<Handoff>) {
    let epoch = inner.epoch;
    let (commands_tx, commands) = mpsc::channel(LINK_COMMANDS);
    let mut link = Link {
        session: Session::new(inner.config.session.clone(), inner.keypair.clone(), epoch),
        applied: LocalSet::default(),
        local: inner.local.subscribe(),
        inner,
        peer,
        commands_tx,
        commands,
        fan_ins: HashMap::new(),
        pending: HashMap::new(),
        next_request: 0,
        rtt: None,
        hold_removals: 0,
        peer_intents: Arc::from([]),
        peer_interests: Arc::from([]),
        connections,
        next: None,
        flushes: Vec::new(),
        opened: false,
        decrypt_failed: false,
    };
    lock(&link.inner.commands).insert(link.peer, link.commands_tx.clone());
    link.sync_local();
    // Whether the loop already retired the link.
    let retired = loop {
        if link.inner.cancel.is_cancelled() {
            break false;
        }
        let handoff = if let Some(next) = link.next.take() {
            next
        } else {
            tokio::select! {
            biased;
            () = link.inner.cancel.cancelled() => break false,
            handoff = link.connections.recv() => match handoff {
                Some(h) => h,
                None => break false,
            },
            // While disconnected, keep following route changes so the next hello is current.
            changed = link.local.changed() => {
                if changed.is_ok() { link.sync_local(); }
                continue;
            }
            }
        };
        let failure = link.run(handoff).await;
        if link.session.is_closed() || link.inner.cancel.is_cancelled() {
            break false;
        }
        if let Some(failure) = &failure {
            tracing::debug!(peer = %link.peer, %failure, "link lost; waiting for the next connection");
        }
        // A peer that never got through a hello keeps no link: otherwise every identity that
        // passes the handshake once would leave a task and a session behind for good.
        if link.session.peer().is_none() && link.next.is_none() {
            let inner = link.inner.clone();
            let mut links = lock(&inner.links);
            match link.connections.try_recv() {
                Ok(next) => link.next = Some(next),
                Err(_) => {
                    link.retire_locked(&mut links);
                    break true;
                }
            }
        }
    };
    // A link retired in the loop never took a hello, so it registered nothing with the router.
    // Otherwise withdraw the peer's routes while this link is still the peer's: once it leaves
    // `links`, a new link of the peer may register routes that `remove_peer` must not touch.
    if !retired {
        if let Some(port) = link.inner.port.get() {
            port.remove_peer(&link.peer);
        }
        link.retire();
    }
    link.inner.link_state.send_modify(|v| *v += 1);
}

impl Link {
    /// Takes this link out of the endpoint, closing its connection queue: new connections of the
    /// peer start a new link. Call once, right before the task ends.
    fn retire(&mut self) {
        let inner = self.inner.clone();
        self.retire_locked(&mut lock(&inner.links));
    }

    /// [`Link::retire`] with `links` already locked.
    fn retire_locked(&mut self, links: &mut HashMap<PeerId, mpsc::Sender<Handoff>>) {
        // Under the links lock, like `hand_off`'s send: no connection is queued after this, and
        // while this link's open queue is in `links` no other link of the peer exists, so the
        // entries removed here are this link's.
        links.remove(&self.peer);
        lock(&self.inner.infos).remove(&self.peer);
        lock(&self.inner.commands).remove(&self.peer);
        self.connections.close();
    }

    /// Brings the session's local routes in line with the endpoint's.
    fn sync_local(&mut self) {
        let mut current = self.local.borrow_and_update().clone();
        let t = now();
        let withdrawn: Vec<IntentAd> = self
            .applied
            .intents
            .difference(&current.intents)
            .cloned()
            .collect();
        if !withdrawn.is_empty() && self.hold_removals == 0 {
            self.hold_removals = self.commands.len();
        }
        if self.hold_removals > 0 {
            // Keep the withdrawn intents declared until what was queued before is processed.
            current.intents.extend(withdrawn);
        }
        for ad in self.applied.intents.difference(&current.intents) {
            self.session.remove_local_intent(&ad.route, t);
        }
        for ad in self.applied.interests.difference(&current.interests) {
            self.session.remove_local_interest(&ad.pattern, t);
        }
        for ad in current.intents.difference(&self.applied.intents) {
            self.session.add_local_intent(ad.clone(), t);
        }
        for ad in current.interests.difference(&self.applied.interests) {
            self.session.add_local_interest(ad.clone(), t);
        }
        for ad in self.applied.services.difference(&current.services) {
            self.session.remove_local_service(&ad.route, t);
        }
        for ad in current.services.difference(&self.applied.services) {
            self.session.add_local_service(ad.clone(), t);
        }
        self.applied = current;
    }

    /// Publishes this link's state for [`RemoteEndpoint::links`].
    fn report(&self) {
        let info = LinkInfo {
            peer: self.peer,
            connected: self.session.is_open(),
            rtt: self.rtt,
            stats: self.session.stats(),
            peer_intents: self.peer_intents.clone(),
            peer_interests: self.peer_interests.clone(),
            unacked: (self.commands.len() + self.session.queued() + self.session.unacked_batches())
                as u64,
        };
        let state = (info.connected, info.stats.failures, info.unacked == 0);
        let previous = lock(&self.inner.infos).insert(self.peer, info);
        // Wake watchers only on state changes, not on every batch's counters.
        let changed =
            previous.is_none_or(|p| (p.connected, p.stats.failures, p.unacked == 0) != state);
        if changed {
            self.inner.link_state.send_modify(|v| *v += 1);
        }
    }

    /// Applies one command to the session.
    fn command(&mut self, command: Command) {
        if self.hold_removals > 0 {
            self.hold_removals -= 1;
            if self.hold_removals == 0 {
                // The publish below was the last one queued before the withdrawal; the session
                // keeps its order, so the withdrawal advert follows it.
                self.command(command);
                self.sync_local();
                return;
            }
        }
        match command {
            Command::Publish { route, payload } => {
                if let Err(e) = self.session.send(&route, payload, Correlation::None) {
                    tracing::debug!(peer = %self.peer, %route, error = %e, "publish not sent");
                }
            }
            Command::Request {
                route,
                payload,
                reply,
            } => {
                self.next_request += 1;
                let id = self.next_request;
                match self.session.request(&route, payload, id) {
                    Ok(()) => {
                        self.pending.insert(id, reply);
                    }
                    Err(SessionSendError::UnknownRoute(route)) => {
                        let _ = reply.send(Err(CallError::NoService(route)));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(CallError::Closed));
                    }
                }
            }
            Command::Respond { route, to, result } => {
                let result = result.map_err(|e| match e {
                    CallError::Handler(message) => ResponseError { code: 1, message },
                    other => ResponseError {
                        code: 2,
                        message: other.to_string(),
                    },
                });
                if let Err(e) = self.session.respond(&route, to, result) {
                    tracing::debug!(peer = %self.peer, %route, error = %e, "response not sent");
                }
            }
            Command::Flush(done) => {
                let target = self.session.enqueued_through();
                if self.session.acked_through() >= target {
                    let _ = done.send(());
                } else {
                    self.flushes.push((target, done));
                }
            }
        }
    }

    /// Runs one connection until it ends. Returns the failure, if it failed.
    async fn run(&mut self, handoff: Handoff) -> Option<LinkFailure> {
        let Handoff {
            io,
            mut channel,
            rest,
            done,
            preferred,
        } = handoff;
        let (mut reader, mut writer) = tokio::io::split(io);
        let info = match &channel {
            Secure::Noise(noise) => {
                let (Some(remote_static), Some(hash)) =
                    (noise.remote_static(), noise.handshake_hash())
                else {
                    return Some(LinkFailure::Protocol(
                        "noise channel not established".into(),
                    ));
                };
                Connection {
                    session_id: SessionId::from_bytes(hash),
                    binding: Some(Binding {
                        local_signature: self.inner.binding,
                        remote_static,
                    }),
                    expected_peer: Some(self.peer),
                }
            }
            Secure::Plain { .. } => Connection {
                session_id: plain_session_id(&self.inner.keypair.peer_id(), &self.peer),
                binding: None,
                expected_peer: Some(self.peer),
            },
        };
        self.opened = false;
        self.decrypt_failed = false;
        self.session.handle_connect(now(), info);
        lock(&self.inner.active).insert(self.peer);
        let mut plain = rest;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let limits = self.inner.config.session.limits;
        let failure = loop {
            // Frames already read after the hello.
            loop {
                match split_frame(&mut plain, &limits) {
                    Ok(Some(frame)) => self.session.handle_frame(now(), frame),
                    Ok(None) => break,
                    Err(e) => {
                        self.session
                            .handle_disconnect(LinkFailure::Decode(e.to_string()));
                        break;
                    }
                }
            }
            let mut ended = None;
            if let Err(failure) = self
                .flush(&mut channel, &mut writer, &mut reader, &mut buf, &mut ended)
                .await
            {
                self.session.handle_disconnect(failure);
            }
            // What arrived while we were writing.
            if !buf.is_empty() {
                self.handle_input(&mut channel, &mut buf, &mut plain);
            }
            if let Some(failure) = ended {
                self.session.handle_disconnect(failure);
            }
            let end = self.events().await;
            if !self.flushes.is_empty() {
                let acked = self.session.acked_through();
                let (reached, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
                    .into_iter()
                    .partition(|(target, _)| *target <= acked);
                self.flushes = waiting;
                for (_, done) in reached {
                    let _ = done.send(());
                }
            }
            self.report();
            if let Some(end) = end {
                break end;
            }
            let deadline = self
                .session
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            let can_send = self.session.can_send();
            tokio::select! {
                biased;
                () = self.inner.cancel.cancelled() => {
                    self.session.close(CloseCode(0), "endpoint closing");
                    let mut ended = None;
                    let _ = self
                        .flush(&mut channel, &mut writer, &mut reader, &mut buf, &mut ended)
                        .await;
                    break None;
                }
                read = reader.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => self.session.handle_disconnect(LinkFailure::Transport("connection closed by peer".into())),
                        Ok(_) => self.handle_input(&mut channel, &mut buf, &mut plain),
                        Err(e) => self.session.handle_disconnect(LinkFailure::Transport(e.to_string())),
                    }
                }
                changed = self.local.changed() => {
                    if changed.is_ok() { self.sync_local(); }
                }
                handoff = self.connections.recv(), if self.next.is_none() => {
                    if let Some(new) = handoff {
                        if self.session.is_open() {
                            // The current connection works; the new one waits for it to end.
                            self.next = Some(new);
                        } else if new.preferred || !preferred {
                            // Both sides opened a connection before either hello: keep the
                            // lower PeerId's (or the newer of the same kind).
                            self.next = Some(new);
                            self.session.handle_disconnect(LinkFailure::Transport("superseded by a newer connection".into()));
                        } else {
                            tracing::debug!(peer = %self.peer, "connection from both sides; keeping ours");
                        }
                    }
                }
                command = self.commands.recv(), if can_send => {
                    // Route changes first: a publish may be for a route just added.
                    if self.local.has_changed().unwrap_or(false) { self.sync_local(); }
                    // Take everything queued that the session accepts, so one batch (one
                    // encryption, one signature, one write) carries it all.
                    let mut next = command;
                    let mut taken = 0usize;
                    let mut lingered = false;
                    loop {
                        while let Some(command) = next {
                            self.command(command);
                            taken += 1;
                            next = if self.session.can_send() { self.commands.try_recv().ok() } else { None };
                        }
                        // A busy publisher (more than one message was waiting): let it run
                        // once more before sealing the batch, so batches (signatures,
                        // encryptions, writes) are fewer and fuller. No timer: one yield.
                        if lingered || taken < 2 || !self.session.can_send() {
                            break;
                        }
                        lingered = true;
                        tokio::task::yield_now().await;
                        next = self.commands.try_recv().ok();
                    }
                }
                () = sleep_until(deadline) => self.session.handle_timeout(now()),
            }
        };
        lock(&self.inner.active).remove(&self.peer);
        if let Some(done) = done {
            let _ = done.send(Ended {
                opened: self.opened,
                failure: failure.clone(),
            });
        }
        failure
    }

    /// Decrypts what was read (`input`, emptied) into `plain`. Ciphertext that does not
    /// decrypt is the peer's (or an attacker's) doing, not a network drop: the connection fails
    /// with a non-transient failure, counted in [`RemoteStats::decrypt_failures`].
    fn handle_input(&mut self, channel: &mut Secure, input: &mut BytesMut, plain: &mut BytesMut) {
        // Plaintext decrypted before a bad message is still the peer's, in order.
        let result = channel.handle_input_into(input, plain);
        input.clear();
        if let Err(e) = result {
            self.decrypt_failed = true;
            self.session
                .handle_disconnect(LinkFailure::Decode(format!("noise: {e}")));
        }
    }

    /// Writes what the session and the channel have to send. While a write waits for the peer
    /// to read, this keeps reading into `input` (up to a bound), so two peers writing to each
    /// other at once cannot deadlock; the end of the peer's stream goes to `ended`. A write
    /// that makes no progress for the idle timeout fails the connection (a peer gone silently
    /// must not block the link, its keepalives and its timers).
    async fn flush<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
        &mut self,
        channel: &mut Secure,
        writer: &mut W,
        reader: &mut R,
        input: &mut BytesMut,
        ended: &mut Option<LinkFailure>,
    ) -> Result<(), LinkFailure> {
        let t = now();
        while let Some(frame) = self.session.poll_transmit(t) {
            channel
                .write(&frame)
                .map_err(|e| LinkFailure::Transport(format!("noise: {e}")))?;
        }
        let stall = self.inner.config.session.idle_timeout;
        let stalled = || LinkFailure::Transport(format!("write stalled for {stall:?}"));
        while let Some(bytes) = channel.poll_transmit() {
            let deadline = tokio::time::Instant::now() + stall;
            let mut write = std::pin::pin!(writer.write_all(&bytes));
            loop {
                tokio::select! {
                    biased;
                    written = &mut write => {
                        written.map_err(|e| LinkFailure::Transport(e.to_string()))?;
                        break;
                    }
                    read = reader.read_buf(input), if ended.is_none() && input.len() < READ_AHEAD => {
                        match read {
                            Ok(0) => *ended = Some(LinkFailure::Transport("connection closed by peer".into())),
                            Ok(_) => {}
                            Err(e) => *ended = Some(LinkFailure::Transport(e.to_string())),
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => return Err(stalled()),
                }
            }
        }
        match tokio::time::timeout(stall, writer.flush()).await {
            Ok(flushed) => flushed.map_err(|e| LinkFailure::Transport(e.to_string())),
            Err(_) => Err(stalled()),
        }
    }

    /// Handles the session's events; `Some` when the connection ended (`Some(None)`: closed in
    /// order).
    async fn events(&mut self) -> Option<Option<LinkFailure>> {
        let port = self.inner.port.get().cloned();
        while let Some(event) = self.session.poll_event() {
            if matches!(
                event,
                Event::PeerIntentAdded(_)
                    | Event::PeerIntentRemoved(_)
                    | Event::PeerInterestAdded(_)
                    | Event::PeerInterestRemoved(_)
            ) {
                self.peer_intents = self.session.peer_intents().into();
                self.peer_interests = self.session.peer_interests().into();
            }
            match event {
                Event::Message { route, payload, .. } => {
                    if let Some(sink) = self.fan_ins.get(&route)
                        && let Err(e) = sink.send(&route, payload).await
                    {
                        tracing::debug!(peer = %self.peer, %route, error = %e, "message not delivered");
                    }
                }
                Event::PeerIntentAdded(ad) => {
                    let route = ad.route.clone();
                    match port.as_ref().map(|p| p.add_peer_intent(&self.peer, ad)) {
                        Some(Ok(sink)) => {
                            self.fan_ins.insert(route, sink);
                        }
                        Some(Err(e)) => {
                            tracing::warn!(peer = %self.peer, %route, error = %e, "peer intent refused");
                            lock(&self.inner.stats).refused_routes += 1;
                        }
                        None => {}
                    }
                }
                Event::PeerIntentRemoved(route) => {
                    self.fan_ins.remove(&route);
                    if let Some(port) = &port {
                        port.remove_peer_intent(&self.peer, &route);
                    }
                }
                Event::PeerInterestAdded(ad) => {
                    let sink: Arc<dyn PayloadSink> = Arc::new(LinkSink(self.commands_tx.clone()));
                    if let Some(Err(e)) = port
                        .as_ref()
                        .map(|p| p.add_peer_interest(&self.peer, ad, sink))
                    {
                        tracing::warn!(peer = %self.peer, error = %e, "peer interest refused");
                        lock(&self.inner.stats).refused_routes += 1;
                    }
                }
                Event::PeerInterestRemoved(pattern) => {
                    if let Some(port) = &port {
                        port.remove_peer_interest(&self.peer, &pattern);
                    }
                }
                Event::Disconnected(failure) => {
                    let mut stats = lock(&self.inner.stats);
                    stats.link_failures += 1;
                    match &failure {
                        _ if self.decrypt_failed => stats.decrypt_failures += 1,
                        LinkFailure::Signature(_) => stats.signature_failures += 1,
                        LinkFailure::Decode(_) | LinkFailure::Protocol(_) => stats.bad_frames += 1,
                        _ => {}
                    }
                    drop(stats);
                    return Some(Some(failure));
                }
                Event::Closed {
                    by_peer, reason, ..
                } => {
                    tracing::info!(peer = %self.peer, by_peer, %reason, "link closed");
                    return Some(None);
                }
                Event::PeerServiceAdded(ad) => {
                    let sink: Arc<dyn RequestSink> =
                        Arc::new(LinkRequester(self.commands_tx.clone()));
                    if let Some(port) = &port {
                        port.add_peer_service(&self.peer, ad, sink);
                    }
                }
                Event::PeerServiceRemoved(route) => {
                    if let Some(port) = &port {
                        port.remove_peer_service(&self.peer, &route);
                    }
                }
                Event::Request { route, id, payload } => {
                    if let Some(port) = &port {
                        let answer = port.handle_request(&self.peer, &route, payload);
                        let commands = self.commands_tx.clone();
                        // Answered in its own task: a slow handler must not stall the link.
                        self.inner.tracker.spawn(async move {
                            let result = answer.await;
                            let _ = commands
                                .send(Command::Respond {
                                    route,
                                    to: id,
                                    result,
                                })
                                .await;
                        });
                    }
                }
                Event::Response { id, result } => {
                    if let Some(reply) = self.pending.remove(&id) {
                        let _ = reply.send(result.map_err(|e| CallError::Handler(e.message)));
                    }
                }
                Event::Rtt(rtt) => self.rtt = Some(rtt),
                Event::Established { resumed, .. } => {
                    self.opened = true;
                    tracing::debug!(resumed, "session established");
                    // Shown connected before the peer's routes are linked (they follow this
                    // event): whoever a link wakes sees the link up.
                    self.report();
                }
                Event::SendReady => {}
            }
        }
        None
    }
}

/// The session id of a link without Noise: the same on both sides, bound to the two peers.
fn plain_session_id(a: &PeerId, b: &PeerId) -> SessionId {
    let (low, high) = if a < b { (a, b) } else { (b, a) };
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"dndm/plain-session/v1\0");
    hasher.update(&low.to_bytes());
    hasher.update(&high.to_bytes());
    SessionId::from_bytes(*hasher.finalize().as_bytes())
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
