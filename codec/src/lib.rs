//! The dndm wire codec: session frames to bytes and back, with zstd compression, ed25519
//! batch signatures and hard limits on everything a peer controls.
//!
//! This crate sits between `dndm-core` (routes, identity) and the session layers
//! (`dndm-remote`, `dndm-mesh`), which speak it over every link. It is pure functions on bytes:
//! no I/O, no tokio, no libp2p. The byte layout of every frame is in `docs/protocol.md`; the
//! schema is `proto/dndm.proto`, compiled at build time without a system `protoc`.
//!
//! - [`Frame`] is one of [`Hello`], [`Batch`], [`Ack`], [`Advert`], [`Ping`], [`Pong`],
//!   [`Close`]; every value that decodes is valid (routes parsed, fingerprints 8 bytes, counts
//!   and lengths within [`Limits`]).
//! - [`Encoder`] / [`Decoder`] turn frames into [`Bytes`] and back; [`split_frame`] cuts frames
//!   out of a stream buffer, checking each header before reserving room for its body.
//! - Batches carry per-session route ids, optional reliable sequence numbers and
//!   request/response correlation; payloads are [`Bytes`], so a message encoded once is shared
//!   by every link. Batches may be zstd-compressed (optionally with a per-route-type
//!   [`Dictionary`]) and signed ([`BatchOptions::sign`], [`verify_batch`]).
//!
//! # Usage
//!
//! ```
//! use bytes::Bytes;
//! use dndm_codec::{
//!     Batch, BatchMessage, BatchOptions, Compression, Decoder, Encoder, Frame, Limits,
//!     SessionId, verify_batch,
//! };
//! use dndm_core::Keypair;
//!
//! let limits = Limits::default();
//! let mut encoder = Encoder::new(limits).with_compression(Compression::default());
//! let mut decoder = Decoder::new(limits);
//! let key = Keypair::from_seed([7; 32]);
//! let session = SessionId::from_bytes([1; 32]);
//!
//! // Encode a message once; every link's batch shares the same bytes.
//! let payload = Bytes::from_static(b"imu sample");
//! let batch = Batch {
//!     first_seq: 10,
//!     last_seq: 10,
//!     messages: vec![BatchMessage { route_id: 1, seq: Some(10), payload, ..Default::default() }],
//! };
//! let frame = encoder.encode_batch(&batch, &BatchOptions::new().sign(&key, &session))?;
//!
//! // Receiver: verify (cheap, before decompressing), then decode.
//! verify_batch(&frame, &session, &key.public())?;
//! assert_eq!(decoder.decode(&frame)?, Frame::Batch(batch));
//!
//! // A different session, or any changed byte, fails verification.
//! assert!(verify_batch(&frame, &SessionId::from_bytes([2; 32]), &key.public()).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! None. zstd (with dictionary training) and ed25519 are always on.
//!
//! # Differences from DNDM (Go)
//!
//! - DNDM frames are `magic | total | header size | header | message size | message` with a
//!   protobuf header per message and the route as text; dndm has a fixed 12-byte header
//!   (magic, version, kind, flags, length) and batches many messages per frame, naming routes
//!   by per-session ids declared in the hello and adverts.
//! - DNDM reserves a `signature` header field but never signs; dndm signs batches with
//!   ed25519 over a domain-separated encoding bound to the session and the sequence range.
//! - DNDM has no compression; dndm compresses batches with zstd (kept only when smaller),
//!   optionally with negotiated dictionaries.
//! - DNDM caps only the protobuf header (2048 bytes) and reads frames with single `Read`s;
//!   dndm checks every size and count a peer controls before allocating, and a bad frame is a
//!   typed error for that link only.
//! - DNDM's hello carries no routes and no identity; dndm's carries the full route set, the
//!   identity key binding, capabilities and resume state.
//! - Hashed routes cross the wire (DNDM cannot send them).

mod batch;
mod codec;
mod compress;
mod convert;
mod error;
mod frame;
mod header;
mod limits;
mod proto;
pub mod record;
mod sign;
mod wire;

pub use batch::declared_len;
pub use bytes::Bytes;
pub use codec::{BatchOptions, Decoder, Encoder};
pub use compress::{Compression, Dictionary};
pub use error::{DecodeError, DictionaryError, EncodeError, SignatureError};
pub use frame::{
    Ack, Advert, Batch, BatchMessage, Capabilities, Close, CloseCode, Correlation, DeclPattern,
    DeclRoute, Frame, Hello, IntentDecl, InterestDecl, Ping, Pong, ResponseError, ResumeState,
    RouteFeedback,
};
pub use header::{FrameHeader, FrameKind, HEADER_LEN, MAGIC, PROTOCOL_VERSION, split_frame};
pub use limits::{
    LimitError, LimitKind, Limits, LimitsBuilder, LimitsError, MAX_LIMIT_LEN, MIN_FRAME_LEN,
};
pub use sign::{SIGNATURE_LEN, SessionId, verify_batch};

/// Encodes a message once into shareable bytes for [`BatchMessage::payload`].
pub fn encode_payload<M: prost::Message>(message: &M) -> Bytes {
    Bytes::from(message.encode_to_vec())
}
