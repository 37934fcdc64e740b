//! zstd settings and dictionaries.
//!
//! A batch is compressed when its body reaches [`Compression::threshold`] bytes, and the
//! compressed form is kept only when it is smaller (announced length and dictionary id
//! included). Small typed messages compress poorly on their own; a dictionary trained on
//! samples of one route type ([`Dictionary::train`]) fixes that. Peers announce the
//! dictionary ids they hold in their hello; a sender uses a dictionary only if the receiver
//! announced it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use zstd::dict::DecoderDictionary;

use crate::error::DictionaryError;

/// zstd settings of an [`Encoder`](crate::Encoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    level: i32,
    threshold: usize,
}

/// A zstd dictionary with its negotiated id. Cheap to clone.
#[derive(Clone)]
pub struct Dictionary {
    inner: Arc<DictionaryInner>,
}

struct DictionaryInner {
    id: u32,
    bytes: Bytes,
    decoder: DecoderDictionary<'static>,
}

impl Compression {
    /// zstd level used by [`Compression::default`].
    pub const DEFAULT_LEVEL: i32 = 3;
    /// Body size in bytes from which [`Compression::default`] compresses.
    pub const DEFAULT_THRESHOLD: usize = dndm_core::DEFAULT_COMPRESSION_THRESHOLD;

    /// zstd at `level` (1 fastest to 19 strongest; out-of-range values are clamped by zstd)
    /// for bodies of at least `threshold` bytes.
    pub fn new(level: i32, threshold: usize) -> Self {
        Self { level, threshold }
    }

    /// The zstd level.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Smallest body compressed.
    pub fn threshold(&self) -> usize {
        self.threshold
    }
}

impl Default for Compression {
    fn default() -> Self {
        Self::new(Self::DEFAULT_LEVEL, Self::DEFAULT_THRESHOLD)
    }
}

impl Dictionary {
    /// Wraps dictionary bytes (a trained zstd dictionary, or raw content) under `id`.
    ///
    /// # Errors
    /// [`DictionaryError::Empty`] for empty bytes; [`DictionaryError::Zstd`] when zstd refuses
    /// them.
    pub fn new(id: u32, bytes: impl Into<Bytes>) -> Result<Self, DictionaryError> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(DictionaryError::Empty { id });
        }
        let decoder = DecoderDictionary::try_copy(&bytes)
            .map_err(|source| DictionaryError::Zstd { id, source })?;
        Ok(Self {
            inner: Arc::new(DictionaryInner { id, bytes, decoder }),
        })
    }

    /// Trains a dictionary of at most `max_size` bytes from sample messages of one route type.
    ///
    /// # Errors
    /// [`DictionaryError::Zstd`] when training fails (typically: too few or too small samples;
    /// zstd wants dozens of samples and several times `max_size` of input).
    pub fn train<S: AsRef<[u8]>>(
        id: u32,
        samples: &[S],
        max_size: usize,
    ) -> Result<Self, DictionaryError> {
        let bytes = zstd::dict::from_samples(samples, max_size)
            .map_err(|source| DictionaryError::Zstd { id, source })?;
        Self::new(id, bytes)
    }

    /// The negotiated id.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The dictionary bytes (to persist or ship to peers).
    pub fn as_bytes(&self) -> &Bytes {
        &self.inner.bytes
    }

    pub(crate) fn decoder(&self) -> &DecoderDictionary<'static> {
        &self.inner.decoder
    }
}

impl fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dictionary")
            .field("id", &self.inner.id)
            .field("len", &self.inner.bytes.len())
            .finish()
    }
}
