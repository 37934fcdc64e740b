//! dndm remote links: a session protocol that carries typed pub/sub between two routers over
//! any ordered byte stream, secured with Noise.
//!
//! This crate sits on `dndm-codec` (frames) and `dndm-core` (identity, routes). Its protocol
//! logic is sans-IO: [`session::Session`] (hello, adverts, batching, sequence numbers, acks,
//! retransmission, resume, keepalive), [`noise::Channel`] (the Noise XX handshake and transport
//! encryption), [`backoff`] (reconnect delays and a circuit breaker). Time and randomness come
//! in from the caller. The tokio driver, [`endpoint::RemoteEndpoint`], runs them over TCP and
//! Unix sockets and joins them to a router as a [`dndm_core::Endpoint`].
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

pub mod acl;
pub mod backoff;
#[cfg(feature = "runtime")]
pub mod endpoint;
pub mod noise;
pub mod session;
#[cfg(any(test, feature = "test-utils"))]
pub mod sim;
