//! Core types of dndm, the typed publish/subscribe library: routes, patterns, the message bound,
//! type fingerprints, QoS, identity, the setting types the components share (overflow policy,
//! signing, peer budgets) and the [`Endpoint`] trait. The node's file schema is not here: it lives
//! with the command-line tool (`dndm-cli`).
//!
//! This crate sits at the bottom of the workspace: `dndm-codec`, `dndm-router`, `dndm-remote`
//! and `dndm-mesh` build on it. It does no I/O beyond reading and writing identity files, and never depends on tokio or libp2p.
//!
//! # Usage
//!
//! ```
//! use dndm_core::{Route, RoutePattern};
//!
//! let route: Route = "example.Imu@robot.arm.imu".parse()?;
//! let pattern: RoutePattern = "example.Imu@robot.*.imu".parse()?;
//! assert!(pattern.matches(&route));
//! assert!(!"example.Imu@robot.**".parse::<RoutePattern>()?.matches(&"example.Gps@robot.a".parse()?));
//! assert!("example.Imu@robot..imu".parse::<Route>().is_err());
//! # Ok::<(), dndm_core::RouteParseError>(())
//! ```
//!
//! # Feature flags
//!
//! None yet.
//!
//! # Differences from DNDM (Go)
//!
//! - Routes are validated values; patterns match whole segments (`*`, `**`), never string
//!   prefixes, and hashed routes (`prefix#digest`) parse, display and cross the wire.
//! - A schema [`Fingerprint`] travels with every route, so a type-name collision is refused and
//!   reported instead of delivering garbage.
//! - Peer budgets are checked against their ranges ([`BudgetConfig::validate`]), naming the key.

mod budget;
mod endpoint;
mod identity;
mod message;
mod qos;
pub mod recycle;
mod route;
pub mod schema;
mod settings;

pub use budget::{BudgetConfig, BudgetKind, InvalidSetting};
pub use endpoint::{
    CallError, CallFuture, Endpoint, EndpointError, IntentAd, InterestAd, LinkError, LocalChange,
    PayloadSink, PeerInfo, RequestSink, RouterPort, ServiceAd, SinkError, SubscriberFeedback,
    Undelivered,
};
pub use identity::{IdentityError, Keypair, PeerId, PeerIdError, PublicKey};
pub use message::{Fingerprint, Message, fingerprint_is_of_schema};
pub use qos::{Qos, Reliability};
pub use route::{DIGEST_LEN, HashedRoute, MAX_ROUTE_LEN, Route, RouteParseError, RoutePattern};
pub use schema::{Compatibility, Schema, SchemaConflict};
pub use settings::{DEFAULT_COMPRESSION_THRESHOLD, Overflow, Signing};
