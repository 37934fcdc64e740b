//! The 12-byte frame header and stream splitting.
//!
//! ```text
//! 0      4        5      6      7         8            12
//! +------+--------+------+------+---------+------------+------------------+
//! | "dndm" magic  | ver  | kind | flags   | reserved 0 | body length BE32 | body ...
//! +------+--------+------+------+---------+------------+------------------+
//! ```
//!
//! The header is checked (magic, version, kind, flags, reserved byte and total length against
//! [`Limits::max_frame_len`]) before anything is allocated for the body.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::error::DecodeError;
use crate::limits::{LimitError, LimitKind, Limits};

/// Length of the frame header in bytes.
pub const HEADER_LEN: usize = 12;

/// The four magic bytes that open every frame: ASCII `dndm`.
pub const MAGIC: [u8; 4] = *b"dndm";

/// The wire protocol version this crate speaks, carried in every frame header.
pub const PROTOCOL_VERSION: u8 = 1;

/// Batch flag: the batch body is zstd-compressed.
pub(crate) const FLAG_ZSTD: u8 = 0x01;
/// Batch flag: the compression used a dictionary (requires [`FLAG_ZSTD`]).
pub(crate) const FLAG_DICT: u8 = 0x02;
/// Batch flag: a 64-byte ed25519 signature ends the frame.
pub(crate) const FLAG_SIGNED: u8 = 0x04;

/// Which frame a header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// [`Hello`](crate::Hello), kind byte 1.
    Hello,
    /// [`Batch`](crate::Batch), kind byte 2.
    Batch,
    /// [`Ack`](crate::Ack), kind byte 3.
    Ack,
    /// [`Advert`](crate::Advert), kind byte 4.
    Advert,
    /// [`Ping`](crate::Ping), kind byte 5.
    Ping,
    /// [`Pong`](crate::Pong), kind byte 6.
    Pong,
    /// [`Close`](crate::Close), kind byte 7.
    Close,
}

/// A parsed and checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    kind: FrameKind,
    flags: u8,
    body_len: u32,
}

impl FrameKind {
    /// The kind byte on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Hello => 1,
            Self::Batch => 2,
            Self::Ack => 3,
            Self::Advert => 4,
            Self::Ping => 5,
            Self::Pong => 6,
            Self::Close => 7,
        }
    }

    /// The kind for a wire byte, if known.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::Batch,
            3 => Self::Ack,
            4 => Self::Advert,
            5 => Self::Ping,
            6 => Self::Pong,
            7 => Self::Close,
            _ => return None,
        })
    }

    /// Lowercase name, as shown in errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Batch => "batch",
            Self::Ack => "ack",
            Self::Advert => "advert",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Close => "close",
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FrameHeader {
    /// Parses and checks the header at the start of `bytes` (which may hold more than the
    /// header, e.g. the whole frame or a partial stream buffer).
    ///
    /// # Errors
    /// [`DecodeError::Truncated`] when fewer than [`HEADER_LEN`] bytes are given; a bad magic,
    /// version, kind, flags or reserved byte; [`DecodeError::Limit`] when the announced frame
    /// length exceeds [`Limits::max_frame_len`].
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, DecodeError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::Truncated {
                len: bytes.len(),
                needed: HEADER_LEN,
            });
        };
        let [
            m0,
            m1,
            m2,
            m3,
            version,
            kind,
            flags,
            reserved,
            l0,
            l1,
            l2,
            l3,
        ] = *h;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(DecodeError::BadMagic {
                found: [m0, m1, m2, m3],
            });
        }
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion { version });
        }
        let kind = FrameKind::from_byte(kind).ok_or(DecodeError::UnknownKind { kind })?;
        let flags_ok = match kind {
            FrameKind::Batch => {
                flags & !(FLAG_ZSTD | FLAG_DICT | FLAG_SIGNED) == 0
                    && (flags & FLAG_DICT == 0 || flags & FLAG_ZSTD != 0)
            }
            _ => flags == 0,
        };
        if !flags_ok {
            return Err(DecodeError::InvalidFlags { kind, flags });
        }
        if reserved != 0 {
            return Err(DecodeError::Reserved { value: reserved });
        }
        let body_len = u32::from_be_bytes([l0, l1, l2, l3]);
        let header = Self {
            kind,
            flags,
            body_len,
        };
        // In u64: a 4 GiB body length plus the header does not fit a 32-bit usize.
        let frame_len = header.wire_len();
        if frame_len > u64::from(limits.max_frame_len()) {
            return Err(LimitError {
                kind: LimitKind::FrameLen,
                what: "frame length",
                value: frame_len,
                max: u64::from(limits.max_frame_len()),
            }
            .into());
        }
        Ok(header)
    }

    /// Builds a header; `flags` must be valid for `kind` (crate-internal).
    pub(crate) fn new(kind: FrameKind, flags: u8, body_len: u32) -> Self {
        Self {
            kind,
            flags,
            body_len,
        }
    }

    /// The header's 12 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let [l0, l1, l2, l3] = self.body_len.to_be_bytes();
        let [m0, m1, m2, m3] = MAGIC;
        [
            m0,
            m1,
            m2,
            m3,
            PROTOCOL_VERSION,
            self.kind.to_byte(),
            self.flags,
            0,
            l0,
            l1,
            l2,
            l3,
        ]
    }

    /// The frame kind.
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// Length of the body after the header.
    pub fn body_len(&self) -> usize {
        self.body_len as usize
    }

    /// Length of the whole frame, header included. A parsed header's always fits a `usize`
    /// (it is at most [`Limits::max_frame_len`]); a length that would not saturates to
    /// `usize::MAX` instead of wrapping.
    pub fn frame_len(&self) -> usize {
        usize::try_from(self.wire_len()).unwrap_or(usize::MAX)
    }

    /// Length of the whole frame, header included, in a type it always fits.
    fn wire_len(&self) -> u64 {
        HEADER_LEN as u64 + u64::from(self.body_len)
    }

    /// Whether the batch body is zstd-compressed.
    pub fn is_compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }

    /// Whether the batch was compressed with a dictionary.
    pub fn uses_dictionary(&self) -> bool {
        self.flags & FLAG_DICT != 0
    }

    /// Whether the batch ends with an ed25519 signature.
    pub fn is_signed(&self) -> bool {
        self.flags & FLAG_SIGNED != 0
    }
}

/// Splits one complete frame off the front of a stream buffer.
///
/// Returns `Ok(None)` while the frame is incomplete (having reserved room for the rest once the
/// header has been checked), and the frame's bytes once it is complete. The header is checked
/// against `limits` before any room is reserved, so a header announcing 4 GiB is an error, not
/// an allocation.
///
/// # Errors
/// The header errors of [`FrameHeader::parse`]; the buffer is then in an undefined position and
/// the link should be closed.
///
/// ```
/// use bytes::BytesMut;
/// use dndm_codec::{Encoder, Frame, Limits, Ping, split_frame};
///
/// let frame = Encoder::new(Limits::default()).encode(&Frame::Ping(Ping { nonce: 7 }))?;
/// let mut buf = BytesMut::from(&frame[..5]);
/// assert_eq!(split_frame(&mut buf, &Limits::default())?, None);
/// buf.extend_from_slice(&frame[5..]);
/// assert_eq!(split_frame(&mut buf, &Limits::default())?, Some(frame));
/// assert!(buf.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn split_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Bytes>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let header = FrameHeader::parse(buf, limits)?;
    let len = header.frame_len();
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    Ok(Some(buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8, flags: u8, len: u32) -> Vec<u8> {
        let mut v = b"dndm".to_vec();
        v.extend_from_slice(&[1, kind, flags, 0]);
        v.extend_from_slice(&len.to_be_bytes());
        v
    }

    #[test]
    fn four_gib_header_is_rejected_before_allocating() {
        let limits = Limits::default();
        let mut buf = BytesMut::from(&header(2, 0, u32::MAX)[..]);
        let cap = buf.capacity();
        let err = split_frame(&mut buf, &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame length 4294967307 exceeds max_frame_len 4194304"
        );
        assert_eq!(buf.capacity(), cap, "no room reserved for the body");
    }

    #[test]
    fn the_largest_body_length_neither_overflows_nor_wraps() {
        // On a 32-bit target `12 + u32::MAX` does not fit a usize: it must not panic (debug)
        // or wrap to a tiny frame (release).
        let h = FrameHeader::new(FrameKind::Batch, 0, u32::MAX);
        assert_eq!(h.wire_len(), 4_294_967_307);
        let expected = usize::try_from(4_294_967_307u64).unwrap_or(usize::MAX);
        assert_eq!(h.frame_len(), expected);
        assert!(h.frame_len() >= h.body_len(), "never wraps below the body");
    }

    #[test]
    fn header_checks_each_field() {
        let l = Limits::default();
        assert!(matches!(
            FrameHeader::parse(&header(2, 0, 0)[..11], &l),
            Err(DecodeError::Truncated { len: 11, .. })
        ));
        let mut bad = header(2, 0, 0);
        bad[0] = b'x';
        assert!(matches!(
            FrameHeader::parse(&bad, &l),
            Err(DecodeError::BadMagic { .. })
        ));
        bad = header(2, 0, 0);
        bad[4] = 2;
        assert!(matches!(
            FrameHeader::parse(&bad, &l),
            Err(DecodeError::UnsupportedVersion { version: 2 })
        ));
        assert!(matches!(
            FrameHeader::parse(&header(9, 0, 0), &l),
            Err(DecodeError::UnknownKind { kind: 9 })
        ));
        assert!(matches!(
            FrameHeader::parse(&header(3, FLAG_ZSTD, 0), &l),
            Err(DecodeError::InvalidFlags { .. })
        ));
        assert!(matches!(
            FrameHeader::parse(&header(2, FLAG_DICT, 0), &l),
            Err(DecodeError::InvalidFlags { .. })
        ));
        assert!(matches!(
            FrameHeader::parse(&header(2, 0x80, 0), &l),
            Err(DecodeError::InvalidFlags { .. })
        ));
        bad = header(2, 0, 0);
        bad[7] = 1;
        assert!(matches!(
            FrameHeader::parse(&bad, &l),
            Err(DecodeError::Reserved { value: 1 })
        ));
        let h = FrameHeader::parse(&header(2, FLAG_ZSTD | FLAG_DICT | FLAG_SIGNED, 5), &l).unwrap();
        assert!(h.is_compressed() && h.uses_dictionary() && h.is_signed());
        assert_eq!(h.frame_len(), 17);
        assert_eq!(h.to_bytes().to_vec(), header(2, 7, 5));
    }
}
