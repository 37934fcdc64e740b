//! What a remote endpoint is told: where to listen and dial, and its settings (also from a
//! node's config file).

#[cfg(unix)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dndm_core::PeerId;
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(doc)]
use super::{RemoteEndpoint, RemoteStats};
use dndm_core::InvalidSetting;

use crate::session::{SessionConfig, require};

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
    pub(super) fn expected_peer(&self) -> Option<PeerId> {
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
    /// How long a peer that got through a hello may stay away (no connection) before it is
    /// retired: its interests and intents are withdrawn from the router (publishers see
    /// `Unlinked`) and what was queued or unacknowledged for it is reported undelivered
    /// ([`dndm_core::Undelivered::PeerGone`]). Back within it, the session resumes losslessly;
    /// back later, it links afresh. Default 30 s.
    pub peer_grace: Duration,
    /// Messages one peer interest may have inside the link (queued, or sent and not yet
    /// acknowledged on reliable routes). Past it, a publisher waits up to its send timeout,
    /// then the message is dropped for that peer and reported. At most `session.send_queue`
    /// takes effect (what the session holds for one paused route). Default 8192.
    pub route_window: usize,
    /// Seed of the generator that spreads redial delays over `[d/2, d]` (the jitter of the
    /// backoff, [`RemoteConfig::jitter_rng`]). `None` (default) seeds it from the OS, so nodes
    /// that lost their links together do not redial together; a fixed seed gives the same
    /// delays on every run (tests).
    pub jitter_seed: Option<u64>,
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
            peer_grace: Duration::from_secs(30),
            route_window: 8192,
            jitter_seed: None,
        }
    }
}

impl RemoteConfig {
    /// The generator for backoff jitter: seeded with [`RemoteConfig::jitter_seed`], or from
    /// the OS when that is `None`. An endpoint makes one and draws every redial's jitter from
    /// it (or from generators forked from it), so a fixed seed fixes every delay.
    pub fn jitter_rng(&self) -> fastrand::Rng {
        fastrand::Rng::with_seed(self.jitter_seed.unwrap_or_else(super::os_random))
    }

    /// Checks every setting, the session's too ([`SessionConfig::validate`]); a config from a
    /// validated node file always passes. [`RemoteEndpoint::new`] calls it, so a config built
    /// in code is checked as one from a file is.
    ///
    /// # Errors
    /// The first [`InvalidSetting`], naming the field and its value.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.session.validate()?;
        let positive = "must be longer than zero";
        require(
            !self.handshake_timeout.is_zero(),
            "handshake_timeout",
            self.handshake_timeout,
            positive,
        )?;
        require(
            !self.backoff_initial.is_zero(),
            "backoff_initial",
            self.backoff_initial,
            positive,
        )?;
        require(
            self.backoff_max >= self.backoff_initial,
            "backoff_max",
            self.backoff_max,
            &format!(
                "must be at least backoff_initial ({:?})",
                self.backoff_initial
            ),
        )?;
        require(
            self.breaker_threshold > 0,
            "breaker_threshold",
            self.breaker_threshold,
            "must be at least 1",
        )?;
        require(
            !self.breaker_cool_down.is_zero(),
            "breaker_cool_down",
            self.breaker_cool_down,
            positive,
        )?;
        require(
            !self.peer_grace.is_zero(),
            "peer_grace",
            self.peer_grace,
            positive,
        )?;
        require(
            self.route_window > 0,
            "route_window",
            self.route_window,
            "must be at least 1",
        )
    }
}
