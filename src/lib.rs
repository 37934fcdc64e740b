//! dndm: typed, decentralized publish/subscribe.
//!
//! Applications declare **intents** ("I publish `T` on this path") and **interests** ("I want
//! `T` on this path or pattern"); a [`Router`] links them and hands out typed handles
//! ([`Intent<T>`], [`Interest<T>`]). A route is `TypeName@path`, where `TypeName` is the protobuf
//! full name of `T`.
//!
//! This facade re-exports the public API of the workspace crates: `dndm-core` (routes,
//! identity, the [`Endpoint`] trait), `dndm-router` (the router) and `dndm-remote`
//! (remote links, attached with [`Router::attach`]) and `dndm-mesh` (the libp2p mesh, attached
//! the same way). [`builtin`] holds schema-free message types (`dndm.Text`, `dndm.Json`,
//! `dndm.Bytes`) shared with the `dndm` command-line tool.
//!
//! # Usage
//!
//! ```
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Imu {
//!     #[prost(float, tag = "1")]
//!     pub ax: f32,
//! }
//! impl prost::Name for Imu {
//!     const NAME: &'static str = "Imu";
//!     const PACKAGE: &'static str = "example";
//! }
//! impl dndm::Message for Imu {}
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = dndm::Router::builder().name("robot").build()?;
//! let mut fusion = router.subscribe::<Imu>("robot.*.imu")?;
//! let arm = router.publish::<Imu>("robot.arm.imu")?;
//! arm.send(Imu { ax: 1.5 }).await?;
//! assert_eq!(fusion.recv().await?.ax, 1.5);
//! router.close().await;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! - `remote` (default): [`remote`], links to peers over TCP and Unix sockets (Noise, signed
//!   batches, acks, resume, reconnect).
//! - `mesh` (default): [`mesh`], dndm sessions over a libp2p swarm (static peers, mDNS and
//!   Kademlia discovery). The `dndm` binary needs it.
//!
//! # Differences from DNDM (Go)
//!
//! See the crate docs of `dndm-core` and `dndm-router`: validated routes with segment-aware
//! patterns, schema fingerprints, bounded queues with explicit overflow policies, receives that
//! wait instead of polling, and a close that wakes every waiter and ends every task.

pub mod builtin;

#[doc(inline)]
pub use dndm_core::{
    Endpoint, Fingerprint, HashedRoute, Keypair, Message, PeerId, Qos, Reliability, Route,
    RouteParseError, RoutePattern,
};
#[doc(inline)]
pub use dndm_router::*;

/// Remote links: [`remote::endpoint::RemoteEndpoint`] and the session protocol.
#[cfg(feature = "remote")]
pub use dndm_remote as remote;

/// The libp2p mesh: [`mesh::MeshEndpoint`].
#[cfg(feature = "mesh")]
pub use dndm_mesh as mesh;

/// Everything in `dndm-core`, for what the top level does not re-export.
pub mod core {
    pub use dndm_core::*;
}
