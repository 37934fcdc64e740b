//! Errors, one enum per operation.

use dndm_core::{PeerId, RouteParseError};

use crate::header::{FrameKind, MAGIC, PROTOCOL_VERSION};
use crate::limits::LimitError;

/// Why received bytes are not a valid frame.
///
/// Every variant is a protocol violation by the peer (or corruption): the link should be
/// closed and the error counted. Decoding never panics and never allocates beyond the
/// [`Limits`](crate::Limits).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than a header, or than a fixed part of the body.
    #[error("frame truncated: {len} bytes, need {needed}")]
    Truncated {
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        needed: usize,
    },
    /// The frame does not start with the magic bytes.
    #[error("bad magic {found:02x?}, expected {:02x?}", MAGIC)]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// The header's protocol version is not [`PROTOCOL_VERSION`].
    #[error(
        "protocol version {version} unsupported, this codec speaks {}",
        PROTOCOL_VERSION
    )]
    UnsupportedVersion {
        /// The version byte received.
        version: u8,
    },
    /// The header's kind byte names no frame.
    #[error("frame kind {kind} unknown")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// The header's flags are not valid for its kind.
    #[error("flags {flags:#04x} invalid for {kind} frame")]
    InvalidFlags {
        /// The frame kind.
        kind: FrameKind,
        /// The flags byte received.
        flags: u8,
    },
    /// The header's reserved byte is not zero.
    #[error("reserved header byte {value:#04x} is not zero")]
    Reserved {
        /// The byte received.
        value: u8,
    },
    /// The frame handed to the decoder is not exactly as long as its header says.
    #[error("frame length {actual} does not match header length {declared}")]
    LengthMismatch {
        /// Length announced by the header (header included).
        declared: usize,
        /// Length of the bytes given.
        actual: usize,
    },
    /// A size or count exceeds its limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The protobuf body does not parse.
    #[error("malformed {kind} body")]
    Protobuf {
        /// The frame kind.
        kind: FrameKind,
        /// The protobuf error.
        #[source]
        source: prost::DecodeError,
    },
    /// The protobuf body's wire structure is broken (found before decoding it).
    #[error("malformed {kind} body: {reason}")]
    Malformed {
        /// The frame kind.
        kind: FrameKind,
        /// What is wrong.
        reason: &'static str,
    },
    /// A route, pattern or hashed route in the frame does not parse.
    #[error("invalid route in {field}")]
    Route {
        /// Where the route was.
        field: &'static str,
        /// Why it is invalid.
        #[source]
        source: RouteParseError,
    },
    /// A required field is absent.
    #[error("{field} is missing")]
    Missing {
        /// The absent field.
        field: &'static str,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong, naming the value.
        reason: String,
    },
    /// A batch was compressed with a dictionary this decoder does not hold.
    #[error("zstd dictionary {id} is unknown")]
    UnknownDictionary {
        /// The dictionary id.
        id: u32,
    },
    /// zstd rejected the compressed body (corrupt, or larger than announced).
    #[error("zstd decompression failed")]
    Decompress {
        /// The zstd error.
        #[source]
        source: std::io::Error,
    },
    /// The decompressed body is not as long as announced.
    #[error("decompressed length {actual} does not match announced length {declared}")]
    DecompressedLenMismatch {
        /// Length announced in the batch prefix.
        declared: usize,
        /// Length produced.
        actual: usize,
    },
}

/// Why a frame could not be encoded.
///
/// Encoding checks the same limits and rules as decoding, so whatever encodes decodes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A size or count exceeds its limit.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// A field holds a value the protocol does not allow.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong, naming the value.
        reason: String,
    },
    /// The batch asks for a dictionary this encoder does not hold.
    #[error("zstd dictionary {id} is unknown")]
    UnknownDictionary {
        /// The dictionary id.
        id: u32,
    },
    /// zstd failed.
    #[error("zstd compression failed")]
    Compress {
        /// The zstd error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a batch signature check failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The frame is not a well-formed batch (or fails its header checks).
    #[error("frame is not a well-formed batch")]
    Malformed(#[source] DecodeError),
    /// The frame is not a batch.
    #[error("{kind} frame is not a batch")]
    NotBatch {
        /// The frame's kind.
        kind: FrameKind,
    },
    /// The batch carries no signature.
    #[error("batch is not signed")]
    Unsigned,
    /// The signature does not verify under the peer's key for this session.
    #[error("batch signature does not verify for peer {peer}")]
    Invalid {
        /// The peer whose key was used.
        peer: PeerId,
    },
}

/// Why a zstd dictionary could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DictionaryError {
    /// The dictionary bytes are empty.
    #[error("dictionary {id} is empty")]
    Empty {
        /// The dictionary id.
        id: u32,
    },
    /// zstd refused the dictionary or its training failed.
    #[error("zstd rejected dictionary {id}")]
    Zstd {
        /// The dictionary id.
        id: u32,
        /// The zstd error.
        #[source]
        source: std::io::Error,
    },
}

/// A rule broken by a frame value; shared by the encoder and the decoder.
#[derive(Debug)]
pub(crate) enum Violation {
    Limit(LimitError),
    Invalid { field: &'static str, reason: String },
}

impl From<LimitError> for Violation {
    fn from(e: LimitError) -> Self {
        Self::Limit(e)
    }
}

impl From<Violation> for DecodeError {
    fn from(v: Violation) -> Self {
        match v {
            Violation::Limit(e) => Self::Limit(e),
            Violation::Invalid { field, reason } => Self::Invalid { field, reason },
        }
    }
}

impl From<Violation> for EncodeError {
    fn from(v: Violation) -> Self {
        match v {
            Violation::Limit(e) => Self::Limit(e),
            Violation::Invalid { field, reason } => Self::Invalid { field, reason },
        }
    }
}
