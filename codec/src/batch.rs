//! The fixed, cleartext part of a batch frame.
//!
//! ```text
//! header (12) | first_seq u64 BE | last_seq u64 BE | [dictionary id u32 BE] | [decompressed
//! length u32 BE] | messages (BatchBody protobuf, zstd-compressed if flagged) | [signature 64]
//! ```

use std::ops::Range;

use crate::Limits;
use crate::error::DecodeError;
use crate::header::{FrameHeader, FrameKind, HEADER_LEN};
use crate::sign::SIGNATURE_LEN;

/// Length of the sequence range at the start of a batch body.
pub(crate) const SEQ_RANGE_LEN: usize = 16;

/// A batch frame cut into its parts; no allocation, nothing decompressed.
#[derive(Debug)]
pub(crate) struct BatchParts {
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) dictionary: Option<u32>,
    /// The announced decompressed length, when compressed.
    pub(crate) raw_len: Option<u32>,
    /// Where the (compressed) messages are in the frame.
    pub(crate) payload: Range<usize>,
    pub(crate) signature: Option<[u8; SIGNATURE_LEN]>,
}

/// Reads a big-endian integer of `N` bytes at `*pos`, advancing it.
fn take<const N: usize>(frame: &[u8], pos: &mut usize, end: usize) -> Result<[u8; N], DecodeError> {
    let bytes = frame
        .get(*pos..*pos + N)
        .filter(|_| *pos + N <= end)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(DecodeError::Truncated {
            len: frame.len(),
            needed: *pos + N + (frame.len() - end),
        })?;
    *pos += N;
    Ok(bytes)
}

impl BatchParts {
    /// Splits a whole batch frame (header included) whose header is `header`.
    pub(crate) fn split(header: &FrameHeader, frame: &[u8]) -> Result<Self, DecodeError> {
        if frame.len() != header.frame_len() {
            return Err(DecodeError::LengthMismatch {
                declared: header.frame_len(),
                actual: frame.len(),
            });
        }
        let mut end = frame.len();
        let mut signature = None;
        if header.is_signed() {
            let min = HEADER_LEN + SEQ_RANGE_LEN + SIGNATURE_LEN;
            if end < min {
                return Err(DecodeError::Truncated {
                    len: end,
                    needed: min,
                });
            }
            end -= SIGNATURE_LEN;
            let mut pos = end;
            signature = Some(take::<SIGNATURE_LEN>(frame, &mut pos, frame.len())?);
        }
        let mut pos = HEADER_LEN;
        let first_seq = u64::from_be_bytes(take(frame, &mut pos, end)?);
        let last_seq = u64::from_be_bytes(take(frame, &mut pos, end)?);
        let dictionary = if header.uses_dictionary() {
            Some(u32::from_be_bytes(take(frame, &mut pos, end)?))
        } else {
            None
        };
        let raw_len = if header.is_compressed() {
            Some(u32::from_be_bytes(take(frame, &mut pos, end)?))
        } else {
            None
        };
        Ok(Self {
            first_seq,
            last_seq,
            dictionary,
            raw_len,
            payload: pos..end,
            signature,
        })
    }
}

/// The most bytes decoding the whole frame `frame` keeps alive: its own length, plus the
/// decompressed length a compressed batch declares. Read from the cleartext prefix, without
/// decompressing or verifying anything, so a receiver can count a frame against a budget
/// before inflating it.
///
/// # Errors
/// As [`FrameHeader::parse`], and [`DecodeError::Truncated`] or
/// [`DecodeError::LengthMismatch`] when `frame` is not one whole frame.
pub fn declared_len(frame: &[u8], limits: &Limits) -> Result<usize, DecodeError> {
    let header = FrameHeader::parse(frame, limits)?;
    if header.kind() == FrameKind::Batch && header.is_compressed() {
        let parts = BatchParts::split(&header, frame)?;
        let raw = parts.raw_len.map_or(0, |len| len as usize);
        return Ok(frame.len() + raw);
    }
    Ok(frame.len())
}
