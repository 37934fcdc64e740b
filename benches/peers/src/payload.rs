//! Payload pools: one large buffer per process, sliced per message.
//!
//! Slicing a pool is zero-copy (`Bytes::slice`), so building a payload costs the publisher
//! nothing measurable, while consecutive messages still carry different bytes: zstd finds no
//! repetition in the random pool (it is far larger than any batch), and finds the usual
//! structure of telemetry text in the compressible one.

use std::fmt::Write as _;

use bytes::Bytes;

/// Size of either pool. Larger than any batch dndm compresses (zstd runs per batch), so no
/// batch can contain the same random bytes twice; the same for both kinds, so that the
/// publisher's cache misses on reading the pool cost the same in both passes.
const POOL_LEN: usize = 16 << 20;

/// Distance between the starts of consecutive slices beyond the slice itself: odd and prime,
/// so offsets do not fall into step with the pool length.
const SKEW: usize = 4099;

/// What the payload bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// Uniformly random bytes (a seeded xorshift PRNG): incompressible.
    Random,
    /// JSON-like telemetry lines with varying numbers: zstd shrinks it several times.
    Compressible,
}

impl Kind {
    /// The label used in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::Compressible => "compressible",
        }
    }
}

/// A large buffer of one [`Kind`] of bytes, handed out in slices.
#[derive(Debug, Clone)]
pub(crate) struct Pool {
    bytes: Bytes,
}

impl Pool {
    /// Builds the pool for `kind`, deterministically (same bytes on every run).
    pub(crate) fn new(kind: Kind) -> Self {
        let bytes = match kind {
            Kind::Random => random_bytes(POOL_LEN),
            Kind::Compressible => telemetry_text(POOL_LEN),
        };
        Self {
            bytes: Bytes::from(bytes),
        }
    }

    /// The largest payload [`Self::slice`] can hand out.
    pub(crate) fn max_len(&self) -> usize {
        self.bytes.len() / 2
    }

    /// The payload of message number `seq`, `len` bytes long (at most [`Self::max_len`]).
    pub(crate) fn slice(&self, seq: u64, len: usize) -> Bytes {
        let span = self.bytes.len() - len;
        // Truncation of seq is harmless: it only picks where in the pool to start.
        let start = (seq as usize).wrapping_mul(len + SKEW) % span.max(1);
        self.bytes.slice(start..start + len)
    }
}

/// `len` bytes from xorshift64*, seeded with a constant.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `len` bytes of newline-separated JSON telemetry records whose numbers vary.
fn telemetry_text(len: usize) -> Vec<u8> {
    let noise = random_bytes(len / 16);
    let mut text = String::with_capacity(len + 256);
    let mut i = 0usize;
    while text.len() < len {
        let n = |k: usize| f64::from(noise[(i * 8 + k) % noise.len()]);
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            r#"{{"node":"edge-{:02}","seq":{},"ts":{:.6},"temp_c":{:.2},"rh":{:.1},"accel":[{:.3},{:.3},{:.3}],"status":"{}"}}"#,
            i % 16,
            i,
            1_712_000_000.0 + i as f64 * 0.01,
            18.0 + n(0) / 25.0,
            30.0 + n(1) / 6.0,
            (n(2) - 128.0) / 1000.0,
            -0.98 + (n(3) - 128.0) / 5000.0,
            (n(4) - 128.0) / 1000.0,
            if n(5) > 250.0 { "warn" } else { "ok" },
        );
        i += 1;
    }
    let mut bytes = text.into_bytes();
    bytes.truncate(len);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_have_the_asked_length_and_differ() {
        let pool = Pool::new(Kind::Random);
        for len in [8, 1024, 65536, pool.max_len()] {
            let a = pool.slice(0, len);
            let b = pool.slice(1, len);
            assert_eq!(a.len(), len);
            assert_eq!(b.len(), len);
            assert_ne!(a, b);
        }
    }

    #[test]
    fn text_is_text() {
        let pool = Pool::new(Kind::Compressible);
        let slice = pool.slice(7, 1024);
        assert!(slice.iter().all(|b| b.is_ascii()));
    }
}
