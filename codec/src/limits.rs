//! Hard limits on everything a peer controls: sizes and counts, checked before allocating.

use std::fmt;

use dndm_core::MAX_ROUTE_LEN;

use crate::header::HEADER_LEN;

/// Smallest accepted `max_frame_len`: room for a header, a batch prefix and a signature.
pub const MIN_FRAME_LEN: u32 = 128;

/// Largest accepted `max_frame_len` and `max_decompressed_len` (1 GiB).
pub const MAX_LIMIT_LEN: u32 = 1 << 30;

/// The limits a [`Decoder`](crate::Decoder) enforces on received frames and an
/// [`Encoder`](crate::Encoder) enforces on frames it builds (so that a peer with the same limits
/// accepts them).
///
/// A `Limits` value is always valid: build one with [`Limits::builder`] or take
/// [`Limits::default`]. Every default is listed on its builder method.
///
/// ```
/// use dndm_codec::Limits;
///
/// let limits = Limits::builder().max_frame_len(1 << 20).build()?;
/// assert_eq!(limits.max_frame_len(), 1 << 20);
/// assert!(Limits::builder().max_frame_len(0).build().is_err());
/// # Ok::<(), dndm_codec::LimitsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_frame_len: u32,
    max_batch_messages: u32,
    max_route_len: u32,
    max_decompressed_len: u32,
    max_routes: u32,
    max_text_len: u32,
    max_opaque_len: u32,
    max_dictionaries: u32,
}

/// Builds a validated [`Limits`]; starts from the defaults.
#[derive(Debug, Clone, Copy)]
pub struct LimitsBuilder {
    limits: Limits,
}

/// A [`Limits`] field out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("limits.{field} = {value} is invalid: {reason}")]
pub struct LimitsError {
    /// The offending field.
    pub field: &'static str,
    /// Its value.
    pub value: u64,
    /// Why it is out of range.
    pub reason: &'static str,
}

/// Which limit a [`LimitError`] hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// [`Limits::max_frame_len`].
    FrameLen,
    /// [`Limits::max_batch_messages`].
    BatchMessages,
    /// [`Limits::max_route_len`].
    RouteLen,
    /// [`Limits::max_decompressed_len`].
    DecompressedLen,
    /// [`Limits::max_routes`].
    Routes,
    /// [`Limits::max_text_len`].
    TextLen,
    /// [`Limits::max_opaque_len`].
    OpaqueLen,
    /// [`Limits::max_dictionaries`].
    Dictionaries,
}

/// A size or count above its limit, found while encoding or decoding.
///
/// Displays as `frame length 9000000 exceeds max_frame_len 4194304`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("{what} {value} exceeds {} {max}", .kind.name())]
pub struct LimitError {
    /// The limit hit.
    pub kind: LimitKind,
    /// What was measured, e.g. `frame length` or `hello.node_name length`.
    pub what: &'static str,
    /// The measured value.
    pub value: u64,
    /// The limit.
    pub max: u64,
}

impl Limits {
    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder {
            limits: Self::default(),
        }
    }

    /// Largest frame in bytes, header included. Default 4 MiB.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Most messages in one batch. Default 4096.
    pub fn max_batch_messages(&self) -> u32 {
        self.max_batch_messages
    }

    /// Longest route, pattern or hashed route text in bytes. Default and maximum
    /// [`MAX_ROUTE_LEN`] (1024).
    pub fn max_route_len(&self) -> u32 {
        self.max_route_len
    }

    /// Largest decompressed batch body in bytes (the zip-bomb guard). Default 4 MiB.
    pub fn max_decompressed_len(&self) -> u32 {
        self.max_decompressed_len
    }

    /// Most route declarations (intents, interests and removals together) in one hello or
    /// advert. Default 16384.
    pub fn max_routes(&self) -> u32 {
        self.max_routes
    }

    /// Longest text field (node name, close reason, response error message) in bytes.
    /// Default 1024.
    pub fn max_text_len(&self) -> u32 {
        self.max_text_len
    }

    /// Longest opaque byte field (hello public key and key binding). Default 256.
    pub fn max_opaque_len(&self) -> u32 {
        self.max_opaque_len
    }

    /// Most dictionary ids in a hello's capabilities. Default 64.
    pub fn max_dictionaries(&self) -> u32 {
        self.max_dictionaries
    }

    /// Limits that accept any frame length (for header parsing where the length is checked
    /// against the bytes at hand instead).
    pub(crate) fn permissive() -> Self {
        Self {
            max_frame_len: u32::MAX,
            ..Self::default()
        }
    }

    /// Checks `value <= max` for one limit.
    pub(crate) fn check(
        kind: LimitKind,
        what: &'static str,
        value: usize,
        max: u32,
    ) -> Result<(), LimitError> {
        if value as u64 > u64::from(max) {
            return Err(LimitError {
                kind,
                what,
                value: value as u64,
                max: u64::from(max),
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: 4 << 20,
            max_batch_messages: 4096,
            max_route_len: MAX_ROUTE_LEN as u32,
            max_decompressed_len: 4 << 20,
            max_routes: 16384,
            max_text_len: 1024,
            max_opaque_len: 256,
            max_dictionaries: 64,
        }
    }
}

impl LimitsBuilder {
    /// Sets [`Limits::max_frame_len`]: from [`MIN_FRAME_LEN`] to [`MAX_LIMIT_LEN`].
    pub fn max_frame_len(mut self, value: u32) -> Self {
        self.limits.max_frame_len = value;
        self
    }

    /// Sets [`Limits::max_batch_messages`]: at least 1.
    pub fn max_batch_messages(mut self, value: u32) -> Self {
        self.limits.max_batch_messages = value;
        self
    }

    /// Sets [`Limits::max_route_len`]: from 3 (`a@b`) to [`MAX_ROUTE_LEN`].
    pub fn max_route_len(mut self, value: u32) -> Self {
        self.limits.max_route_len = value;
        self
    }

    /// Sets [`Limits::max_decompressed_len`]: from 1 to [`MAX_LIMIT_LEN`].
    pub fn max_decompressed_len(mut self, value: u32) -> Self {
        self.limits.max_decompressed_len = value;
        self
    }

    /// Sets [`Limits::max_routes`]: at least 1.
    pub fn max_routes(mut self, value: u32) -> Self {
        self.limits.max_routes = value;
        self
    }

    /// Sets [`Limits::max_text_len`]: any value (0 forbids text).
    pub fn max_text_len(mut self, value: u32) -> Self {
        self.limits.max_text_len = value;
        self
    }

    /// Sets [`Limits::max_opaque_len`]: any value (0 forbids key material in hellos).
    pub fn max_opaque_len(mut self, value: u32) -> Self {
        self.limits.max_opaque_len = value;
        self
    }

    /// Sets [`Limits::max_dictionaries`]: any value (0 disables dictionaries).
    pub fn max_dictionaries(mut self, value: u32) -> Self {
        self.limits.max_dictionaries = value;
        self
    }

    /// Checks every field and returns the limits.
    ///
    /// # Errors
    /// [`LimitsError`] naming the first field out of range.
    pub fn build(self) -> Result<Limits, LimitsError> {
        let l = self.limits;
        let err = |field, value: u32, reason| LimitsError {
            field,
            value: u64::from(value),
            reason,
        };
        if !(MIN_FRAME_LEN..=MAX_LIMIT_LEN).contains(&l.max_frame_len) {
            return Err(err(
                "max_frame_len",
                l.max_frame_len,
                "must be between 128 and 1073741824",
            ));
        }
        if l.max_batch_messages == 0 {
            return Err(err(
                "max_batch_messages",
                l.max_batch_messages,
                "must be at least 1",
            ));
        }
        if !(3..=MAX_ROUTE_LEN as u32).contains(&l.max_route_len) {
            return Err(err(
                "max_route_len",
                l.max_route_len,
                "must be between 3 and 1024",
            ));
        }
        if !(1..=MAX_LIMIT_LEN).contains(&l.max_decompressed_len) {
            return Err(err(
                "max_decompressed_len",
                l.max_decompressed_len,
                "must be between 1 and 1073741824",
            ));
        }
        if l.max_routes == 0 {
            return Err(err("max_routes", l.max_routes, "must be at least 1"));
        }
        debug_assert!(MIN_FRAME_LEN as usize > HEADER_LEN);
        Ok(l)
    }
}

impl LimitKind {
    /// The limit's field name in [`Limits`], e.g. `max_frame_len`.
    pub fn name(self) -> &'static str {
        match self {
            Self::FrameLen => "max_frame_len",
            Self::BatchMessages => "max_batch_messages",
            Self::RouteLen => "max_route_len",
            Self::DecompressedLen => "max_decompressed_len",
            Self::Routes => "max_routes",
            Self::TextLen => "max_text_len",
            Self::OpaqueLen => "max_opaque_len",
            Self::Dictionaries => "max_dictionaries",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_builder_checks_each_field() {
        let d = Limits::default();
        assert_eq!(Limits::builder().build(), Ok(d));
        assert_eq!(d.max_frame_len(), 4_194_304);
        let e = Limits::builder().max_frame_len(64).build().unwrap_err();
        assert_eq!(e.field, "max_frame_len");
        assert_eq!(
            e.to_string(),
            "limits.max_frame_len = 64 is invalid: must be between 128 and 1073741824"
        );
        assert_eq!(
            Limits::builder()
                .max_batch_messages(0)
                .build()
                .unwrap_err()
                .field,
            "max_batch_messages"
        );
        assert_eq!(
            Limits::builder()
                .max_route_len(2000)
                .build()
                .unwrap_err()
                .field,
            "max_route_len"
        );
        assert_eq!(
            Limits::builder()
                .max_decompressed_len(0)
                .build()
                .unwrap_err()
                .field,
            "max_decompressed_len"
        );
        assert_eq!(
            Limits::builder().max_routes(0).build().unwrap_err().field,
            "max_routes"
        );
    }

    #[test]
    fn limit_error_names_value_and_limit() {
        let e =
            Limits::check(LimitKind::FrameLen, "frame length", 9_000_000, 4_194_304).unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame length 9000000 exceeds max_frame_len 4194304"
        );
        assert!(Limits::check(LimitKind::FrameLen, "frame length", 10, 10).is_ok());
    }
}
