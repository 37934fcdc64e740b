//! dndm remote links: a session protocol that carries typed pub/sub between two routers over
//! any ordered byte stream, secured with Noise.
//!
//! This crate sits on `dndm-codec` (frames) and `dndm-core` (identity, routes). Its protocol
//! logic is sans-IO: [`session::Session`] (hello, adverts, batching, sequence numbers, acks,
//! retransmission, resume, keepalive, per-route flow control, the fate of every message),
//! [`noise::Channel`] (the Noise XX handshake and transport encryption), [`link::Link`] (one
//! peer link across connections: which connection runs, route-change order, flushes, the grace
//! period after which an absent peer is retired), [`backoff`] (reconnect delays and a circuit
//! breaker). Time and randomness come in from the caller. The tokio driver,
//! [`endpoint::RemoteEndpoint`], runs them over TCP and Unix sockets and joins them to a router
//! as a [`dndm_core::Endpoint`]; it never waits for the router or a subscriber, and waits for a
//! peer at most a publisher's send timeout.
//!
//! # Usage
//!
//! Two routers joined by a remote link: `a` listens on a loopback TCP port, `b` dials it. Once
//! `b`'s interest has crossed the link, a message `a` publishes reaches `b`'s subscriber.
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
//! use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
//! use dndm_router::Router;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Only a failure guard: every wait below ends as soon as its event happens.
//! let guard = Duration::from_secs(20);
//!
//! let a = Router::builder().name("a").build()?;
//! let mut config = RemoteConfig::default();
//! config.listen = vec![Target::Tcp("127.0.0.1:0".parse()?)];
//! let link_a = RemoteEndpoint::new(Keypair::generate()?, config)?;
//! a.attach(Arc::new(link_a.clone())).await?;
//!
//! let b = Router::builder().name("b").build()?;
//! let mut config = RemoteConfig::default();
//! config.dial = link_a.bound(); // the port the listener actually got
//! let link_b = RemoteEndpoint::new(Keypair::generate()?, config)?;
//! b.attach(Arc::new(link_b.clone())).await?;
//!
//! let arm = a.publish::<Imu>("robot.arm.imu")?;
//! let mut imu = b.subscribe::<Imu>("robot.*.imu")?;
//! assert_eq!(arm.wait_for_interest(guard).await?, 1, "b's interest reached a");
//! arm.send(Imu { ax: 9.81 }).await?;
//! assert_eq!(imu.recv_timeout(guard).await?.ax, 9.81);
//! assert_eq!(link_a.peers(), vec![link_b.peer_id()]);
//! assert_eq!(link_a.stats().handshake_failures, 0);
//!
//! b.close().await;
//! a.close().await;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! - `runtime` (default): the tokio driver and [`endpoint::RemoteEndpoint`]. Without it the
//!   crate is pure state machines and compiles without tokio.
//! - `test-utils`: `sim`, a deterministic two-peer network in virtual time (latency, jitter,
//!   loss, duplication, disconnects) to test code built on sessions.
//!
//! # Differences from DNDM (Go)
//!
//! - The hello carries the full route set and resume state; later changes are adverts, and a
//!   closed handle is withdrawn at the peer.
//! - Reliable routes are acknowledged and resent across reconnects; unknown route ids are
//!   counted and ignored instead of killing the connection.
//! - Every connection is authenticated and encrypted (Noise XX), the ed25519 identity is bound to
//!   the Noise key, and batches are signed.

/// The wire codec (frames, signatures, the recording format), as the sessions use it.
pub use dndm_codec as codec;

pub mod acl;
pub mod backoff;
#[cfg(feature = "runtime")]
mod driver;
#[cfg(feature = "runtime")]
pub mod endpoint;
pub mod link;
pub mod noise;
pub mod session;
#[cfg(any(test, feature = "test-utils"))]
pub mod sim;

/// A map for keys looked up on every message (route ids, routes): foldhash instead of SipHash.
/// Keyed per map from a per-process random seed, so a peer cannot aim collisions at it
/// offline; its entries are bounded by the route budgets anyway.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
