//! dndm: typed, decentralized publish/subscribe.
//!
//! Applications declare **intents** ("I publish `T` on this path") and **interests** ("I want
//! `T` on this path or pattern"); a [`Router`] links them and hands out typed handles
//! ([`Intent<T>`], [`Interest<T>`]). A route is `TypeName@path`, where `TypeName` is the protobuf
//! full name of `T`.
//!
//! This facade re-exports the public API of the workspace crates: `dndm-core` (routes,
//! identity, config, the [`Endpoint`] trait) and `dndm-router` (the router). Remote links and the
//! libp2p mesh will plug in as endpoints; until they land, dndm works in process.
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
//! None yet; `remote` and `mesh` arrive with those crates.
//!
//! # Differences from DNDM (Go)
//!
//! See the crate docs of `dndm-core` and `dndm-router`: validated routes with segment-aware
//! patterns, schema fingerprints, bounded queues with explicit overflow policies, receives that
//! wait instead of polling, and a close that wakes every waiter and ends every task.

#[doc(inline)]
pub use dndm_core::{
    Config, ConfigError, Endpoint, Fingerprint, HashedRoute, Keypair, Message, PeerId, Qos,
    Reliability, Route, RouteParseError, RoutePattern,
};
#[doc(inline)]
pub use dndm_router::*;

/// Everything in `dndm-core`, for what the top level does not re-export.
pub mod core {
    pub use dndm_core::*;
}
