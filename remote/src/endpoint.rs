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
//! get no further leave nothing behind. Every task is tracked; [`Endpoint::close`] cancels them, each
//! link closes its session in order (the peer sees the reason), and `close` returns when all
//! have ended.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::BytesMut;
use dndm_core::{
    BudgetKind, CallError, Endpoint, EndpointError, Keypair, LocalChange, PeerId, RouterPort,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::backoff::{Backoff, CircuitBreaker};
use crate::driver::{Command, link_task};
use crate::link::{LocalSet, Secure};
use crate::noise::{self, Channel, PREAMBLE_LEN, PreambleError, StaticKey};
use crate::session::LinkFailure;

mod config;

pub use config::{ByteStream, Connector, RemoteConfig, Target};

/// Connections waiting to be adopted by a link task. Beyond it a new connection of that peer is
/// dropped at once (and counted as a handshake failure) rather than waiting.
const LINK_CONNECTIONS: usize = 4;
/// Read buffer size per connection.
const READ_CHUNK: usize = 64 * 1024;

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
    /// on the allow-list, or 4 connections of that peer already wait. A bad
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
    pub(crate) infos: Mutex<HashMap<PeerId, LinkInfo>>,
    /// Each link's command queue, for [`RemoteEndpoint::flush`].
    pub(crate) commands: Mutex<HashMap<PeerId, mpsc::Sender<Command>>>,
    /// Peers whose link is running a connection now (hello exchanged or not).
    pub(crate) active: Mutex<HashSet<PeerId>>,
    /// Bumped whenever a link connects, fails, closes or goes away; see `link_changes`.
    pub(crate) link_state: watch::Sender<u64>,
    pub(crate) bound: Mutex<Vec<Target>>,
    pub(crate) stats: Mutex<RemoteStats>,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
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
    /// everything acknowledged ([`LinkInfo::unacked`] becomes 0), pauses or is paused by its
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
                let preamble = noise::encode_preamble(&inner.keypair.public(), &inner.binding);
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
    let remote_static = channel
        .remote_static()
        .ok_or_else(|| HandshakeError::Frame("noise channel not established".into()))?;
    let peer = noise::parse_preamble(&preamble, &remote_static).map_err(|e| match e {
        PreambleError::Binding(e) => HandshakeError::Noise(e),
        e => HandshakeError::Frame(e.to_string()),
    })?;
    Ok((channel, rest, peer))
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
