//! The dndm [`Router`]: typed intents ([`Intent<T>`]) and interests ([`Interest<T>`]) linked by
//! route, with bounded per-subscriber queues, request/response, and endpoints that reach peers.
//!
//! This crate sits on `dndm-core` and never names a transport: remote links and the libp2p mesh
//! plug in through [`dndm_core::Endpoint`] ([`Router::attach`]). In-process delivery shares one
//! `Arc<T>` among all subscribers (no copy) and spawns no task; only services do.
//!
//! # Usage
//!
//! ```
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Imu { #[prost(float, tag = "1")] pub ax: f32 }
//! # impl prost::Name for Imu { const NAME: &'static str = "Imu"; const PACKAGE: &'static str = "example"; }
//! # impl dndm_core::Message for Imu {}
//! use dndm_router::Router;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let router = Router::builder().name("robot").build()?;
//! let mut imu = router.subscribe::<Imu>("robot.*.imu")?;
//! let arm = router.publish::<Imu>("robot.arm.imu")?;
//! assert_eq!(arm.subscriber_count(), 1);
//!
//! arm.send(Imu { ax: 9.81 }).await?;
//! assert_eq!(imu.recv().await?.ax, 9.81);
//!
//! router.close().await;
//! assert!(imu.recv().await.is_err(), "closed interests wake with an error");
//! # Ok(()) }
//! ```
//!
//! # Queues and overflow
//!
//! Every interest has a bounded queue; when it is full, its [`Overflow`] policy decides:
//! `DropOldest` (default: evict the oldest), `DropNewest` (discard the new message), or `Block`
//! (the publisher waits, up to its send timeout). Drops are counted ([`QueueStats`]).
//!
//! In process, a publisher writes each message once into its own ring, and its `Block` and
//! `DropOldest` subscribers read it from there, each within a window of its capacity: the
//! capacity then bounds what waits from each local publisher (for the first eight publishers
//! of a subscriber; the rest, and peers, share its queue). The ring may keep messages its
//! subscribers have read alive for a while (about 1 MiB of them, or a lap of the ring for small
//! messages) until newer ones replace them or the publisher closes.
//!
//! # Feature flags
//!
//! None.
//!
//! # Differences from DNDM (Go)
//!
//! - Receives wait on a waker (`recv().await`, `recv_timeout`, `Stream`), never poll; close
//!   wakes every waiter with an error.
//! - One bounded queue per subscriber with an explicit overflow policy and drop counters,
//!   instead of a single overwritten buffer.
//! - Patterns match whole segments; a type-name collision with another schema is refused and
//!   reported ([`LinkEvent::Refused`]).
//! - Every task is tracked: [`Router::close`] returns when all have ended.

// The modules form layers; each imports only from layers below it (docs/architecture.md, "The
// router's modules"), bottom to top:
//   id, sync, error | events, snapshot, signal | ring | queue | delivery, services | linker
//   | shared | intent, interest | router | service
mod arena;
mod delivery;
mod error;
mod events;
mod history;
mod id;
mod intent;
mod interest;
#[cfg(all(test, dndm_loom))]
mod interleavings;
mod linker;
mod queue;
mod raw;
mod ring;
mod router;
mod service;
mod services;
mod shared;
mod signal;
mod snapshot;
mod sync;

pub use dndm_core::{Overflow, Undelivered};
pub use error::{
    BuildError, HandlerError, PublishError, RecvError, RecvTimeoutError, RequestError, SendError,
    SendErrorKind, ServeError, SubscribeError, TryRecvError, WaitError,
};
pub use events::{EventsError, LinkEvent, LinkEvents};
pub use history::{DEFAULT_HISTORY_BYTES, MAX_HISTORY};
pub use id::{HandleId, Origin};
pub use intent::Intent;
pub use interest::Interest;
pub use raw::RawMessage;
pub use router::{MAX_QUEUE_CAPACITY, PublishOptions, Router, RouterBuilder, SubscribeOptions};
pub use service::Service;
pub use snapshot::{IntentInfo, InterestInfo, LinkInfo, QueueStats, RouterCounters, Snapshot};
