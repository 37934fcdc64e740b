//! ed25519 batch signatures.
//!
//! A signed batch ends with a 64-byte ed25519 signature over the 32-byte BLAKE3 digest of
//!
//! ```text
//! "dndm/batch-signature/v2\0"            24 bytes, domain separator
//! session id                             32 bytes
//! first_seq (u64 BE) || last_seq (u64 BE) 16 bytes
//! the frame up to the signature          header (with the SIGNED flag and the full length),
//!                                        batch prefix and (compressed) messages
//! ```
//!
//! Signing the digest instead of the bytes themselves: ed25519 hashes its message with SHA-512
//! twice to sign and once to verify; BLAKE3 once over the frame is several times faster, and
//! the signature still commits to every byte (BLAKE3 is collision resistant at 256 bits).
//!
//! The session id ties a batch to one session (no cross-session replay); the sequence range
//! lets the session reject replays inside a session before decompressing; the header bytes
//! cover the flags, so compression or dictionary flags cannot be flipped.

use std::fmt;

use dndm_core::{Keypair, PublicKey};

use crate::batch::BatchParts;
use crate::error::SignatureError;
use crate::header::{FrameHeader, FrameKind};
use crate::limits::Limits;

/// Length of a batch signature.
pub const SIGNATURE_LEN: usize = 64;

/// Domain separator in front of every signed batch.
pub(crate) const SIGNATURE_DOMAIN: &[u8] = b"dndm/batch-signature/v2\0";

/// Identifies one session between two peers (e.g. the Noise handshake hash); bound into every
/// batch signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId([u8; 32]);

impl SessionId {
    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 bytes.
    pub const fn to_bytes(self) -> [u8; 32] {
        self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId(")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        write!(f, ")")
    }
}

/// The digest a batch signature signs (see the module docs), hashed without copying the frame.
pub(crate) fn signed_message(
    session: &SessionId,
    first_seq: u64,
    last_seq: u64,
    frame_without_signature: &[u8],
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(SIGNATURE_DOMAIN);
    hasher.update(&session.0);
    hasher.update(&first_seq.to_be_bytes());
    hasher.update(&last_seq.to_be_bytes());
    hasher.update(frame_without_signature);
    *hasher.finalize().as_bytes()
}

/// Signs a finished batch frame whose last [`SIGNATURE_LEN`] bytes are reserved (zero).
pub(crate) fn sign_in_place(
    frame: &mut [u8],
    key: &Keypair,
    session: &SessionId,
    first_seq: u64,
    last_seq: u64,
) {
    let split = frame.len().saturating_sub(SIGNATURE_LEN);
    let (signed, sig) = frame.split_at_mut(split);
    let signature = key.sign(&signed_message(session, first_seq, last_seq, signed));
    sig.copy_from_slice(&signature);
}

/// Verifies the signature of a batch frame (as received, before decoding) for `session`
/// under the peer's `key`.
///
/// Cheap checks come first: the header and batch prefix are parsed, nothing is decompressed.
///
/// # Errors
/// [`SignatureError::Malformed`] when the frame is not a well-formed batch,
/// [`SignatureError::Unsigned`] when it carries no signature, [`SignatureError::Invalid`]
/// when the signature does not verify (any byte of the frame changed, another session, or
/// another key).
pub fn verify_batch(
    frame: &[u8],
    session: &SessionId,
    key: &PublicKey,
) -> Result<(), SignatureError> {
    let header =
        FrameHeader::parse(frame, &Limits::permissive()).map_err(SignatureError::Malformed)?;
    if header.kind() != FrameKind::Batch {
        return Err(SignatureError::NotBatch {
            kind: header.kind(),
        });
    }
    let parts = BatchParts::split(&header, frame).map_err(SignatureError::Malformed)?;
    let Some(signature) = parts.signature else {
        return Err(SignatureError::Unsigned);
    };
    let signed = frame
        .get(..frame.len().saturating_sub(SIGNATURE_LEN))
        .unwrap_or_default();
    let message = signed_message(session, parts.first_seq, parts.last_seq, signed);
    if key.verify(&message, &signature) {
        Ok(())
    } else {
        Err(SignatureError::Invalid {
            peer: key.peer_id(),
        })
    }
}
