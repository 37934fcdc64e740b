//! [`Encoder`] and [`Decoder`]: frames to bytes and back.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use bytes::{BufMut as _, Bytes};
use dndm_core::Keypair;
use zstd::bulk::{Compressor, Decompressor};
use zstd::dict::EncoderDictionary;

use crate::batch::{BatchParts, SEQ_RANGE_LEN};
use crate::compress::{Compression, Dictionary};
use crate::convert;
use crate::error::{DecodeError, EncodeError};
use crate::frame::{Batch, Frame};
use crate::header::{FLAG_DICT, FLAG_SIGNED, FLAG_ZSTD, FrameHeader, FrameKind, HEADER_LEN};
use crate::limits::{LimitKind, Limits};
use crate::sign::{SIGNATURE_LEN, SessionId, sign_in_place};

/// Turns frames into bytes. One per link (it keeps zstd state), not shared between threads.
///
/// It enforces its [`Limits`] on what it builds: give it the peer's announced limits so the
/// peer accepts every frame it produces.
pub struct Encoder {
    limits: Limits,
    compression: Option<Compression>,
    dictionaries: HashMap<u32, Dictionary>,
    prepared: HashMap<u32, EncoderDictionary<'static>>,
    compressor: Option<Compressor<'static>>,
    scratch: Vec<u8>,
    compressed: Vec<u8>,
    /// Whether compression paid off lately, per route (the first message's route id): data
    /// that does not compress (random, already compressed) costs one cheap attempt per 2^streak
    /// batches of that route (up to `MAX_SKIP`) instead of one per batch, while other routes
    /// still compress.
    adaptive: HashMap<u32, Adaptive>,
    /// Output of a sample compression.
    sample: Vec<u8>,
    /// Time spent compressing since [`Encoder::take_compress_time`] last took it.
    compress_time: std::time::Duration,
}

/// Most batches sent uncompressed between two attempts on incompressible data.
const MAX_SKIP: u32 = 64;
/// Routes whose compression history is kept; beyond it the history starts afresh.
const MAX_ADAPTIVE_ROUTES: usize = 4096;
/// Bodies at least this long are judged by a sample before all of it is compressed.
const SAMPLE_FROM: usize = 16 * 1024;
/// Bytes of a body compressed as its sample.
const SAMPLE_LEN: usize = 4 * 1024;

/// What compression achieved lately on one route.
#[derive(Debug, Clone, Copy, Default)]
struct Adaptive {
    /// Consecutive batches whose compression did not pay.
    streak: u32,
    /// Batches to send uncompressed before the next attempt.
    skip: u32,
}

impl Adaptive {
    /// Whether this batch should try compression (counts a skipped one).
    fn attempt(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Records whether compression paid off (saved at least an eighth).
    fn record(&mut self, paid: bool) {
        if paid {
            *self = Self::default();
        } else {
            self.streak = self.streak.saturating_add(1);
            self.skip = 1u32
                .checked_shl(self.streak)
                .unwrap_or(MAX_SKIP)
                .min(MAX_SKIP)
                - 1;
        }
    }
}

/// Whether `compressed` bytes for `raw` bytes is worth the receiver's decompression: at least
/// an eighth saved.
fn pays(compressed: usize, raw: usize) -> bool {
    compressed + raw / 8 <= raw
}

/// Whether a batch body of `raw` bytes, `payload` of them message payloads, compressed to
/// `compressed` bytes pays: an eighth saved overall and, when framing (route ids, sequence
/// numbers, lengths) is most of the body, an eighth of the payloads saved even if the framing
/// compressed to nothing. So framing alone never turns compression on: a batch of small random
/// payloads is mostly framing, and compressing it costs both sides more CPU than it saves.
fn pays_on_payloads(compressed: usize, raw: usize, payload: usize) -> bool {
    let framing = raw.saturating_sub(payload);
    pays(compressed, raw) && (framing <= payload || pays(compressed, payload))
}

/// Per-batch encoding options: dictionary and signature.
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchOptions<'a> {
    dictionary: Option<u32>,
    signer: Option<(&'a Keypair, &'a SessionId)>,
    uncompressed: bool,
}

/// Turns bytes into frames. One per link (it keeps zstd state), not shared between threads.
pub struct Decoder {
    limits: Limits,
    dictionaries: HashMap<u32, Dictionary>,
    decompressor: Option<Decompressor<'static>>,
}

impl Encoder {
    /// An encoder enforcing `limits`, without compression.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            compression: None,
            dictionaries: HashMap::new(),
            prepared: HashMap::new(),
            compressor: None,
            scratch: Vec::new(),
            compressed: Vec::new(),
            adaptive: HashMap::new(),
            sample: Vec::new(),
            compress_time: std::time::Duration::ZERO,
        }
    }

    /// Time spent compressing since the last call (what compression costs this side's CPU).
    pub fn take_compress_time(&mut self) -> std::time::Duration {
        std::mem::take(&mut self.compress_time)
    }

    /// Compresses batches with `compression` (use only if the peer announced zstd).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(compression);
        self.compressor = None;
        self.prepared.clear();
        self
    }

    /// Makes `dictionary` available to [`BatchOptions::dictionary`] (use only if the peer
    /// announced its id).
    pub fn with_dictionary(mut self, dictionary: Dictionary) -> Self {
        self.prepared.remove(&dictionary.id());
        self.dictionaries.insert(dictionary.id(), dictionary);
        self
    }

    /// Encodes one frame. A batch is compressed per the encoder's settings, without dictionary
    /// and unsigned; use [`Encoder::encode_batch`] for more.
    ///
    /// # Errors
    /// [`EncodeError::Limit`] when the frame breaks a limit, [`EncodeError::Invalid`] when a
    /// field breaks a protocol rule.
    pub fn encode(&mut self, frame: &Frame) -> Result<Bytes, EncodeError> {
        frame.validate(&self.limits)?;
        let body = match convert::to_body(frame) {
            Ok(body) => body,
            Err(batch) => return self.encode_valid_batch(batch, &BatchOptions::default()),
        };
        let body_len = body.encoded_len();
        let frame_len = self.check_frame_len(body_len)?;
        let mut out = Vec::with_capacity(frame_len);
        let header = FrameHeader::new(frame.kind(), 0, body_len as u32);
        out.put_slice(&header.to_bytes());
        body.encode_raw(&mut out);
        debug_assert_eq!(out.len(), frame_len);
        Ok(Bytes::from(out))
    }

    /// Encodes a batch with per-batch options: dictionary compression and an ed25519
    /// signature.
    ///
    /// # Errors
    /// As [`Encoder::encode`], and [`EncodeError::UnknownDictionary`] for a dictionary this
    /// encoder does not hold, [`EncodeError::Compress`] if zstd fails.
    pub fn encode_batch(
        &mut self,
        batch: &Batch,
        options: &BatchOptions<'_>,
    ) -> Result<Bytes, EncodeError> {
        batch.validate(&self.limits)?;
        self.encode_valid_batch(batch, options)
    }

    /// The limits this encoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn encode_valid_batch(
        &mut self,
        batch: &Batch,
        options: &BatchOptions<'_>,
    ) -> Result<Bytes, EncodeError> {
        if let Some(id) = options.dictionary
            && !self.dictionaries.contains_key(&id)
        {
            return Err(EncodeError::UnknownDictionary { id });
        }
        let raw_len = convert::batch_body_len(&batch.messages);
        let signature_len = if options.signer.is_some() {
            SIGNATURE_LEN
        } else {
            0
        };
        let compressed = match self.compression {
            Some(c)
                if !options.uncompressed
                    && raw_len >= c.threshold()
                    && raw_len <= self.limits.max_decompressed_len() as usize =>
            {
                let key = batch.messages.first().map_or(0, |m| m.route_id);
                if self.adaptive.len() >= MAX_ADAPTIVE_ROUTES && !self.adaptive.contains_key(&key) {
                    self.adaptive.clear();
                }
                let mut adaptive = self.adaptive.get(&key).copied().unwrap_or_default();
                let compressed = if adaptive.attempt() {
                    let started = std::time::Instant::now();
                    let compressed = self.compress(batch, raw_len, c, options.dictionary);
                    self.compress_time += started.elapsed();
                    let compressed = compressed?;
                    adaptive.record(compressed.is_some());
                    compressed
                } else {
                    None
                };
                self.adaptive.insert(key, adaptive);
                compressed
            }
            _ => None,
        };
        let mut flags = 0;
        let (prefix_len, payload_len) = match compressed {
            Some(dict) => {
                flags |= FLAG_ZSTD;
                if dict.is_some() {
                    flags |= FLAG_DICT;
                }
                (
                    SEQ_RANGE_LEN + 4 + if dict.is_some() { 4 } else { 0 },
                    self.compressed.len(),
                )
            }
            None => (SEQ_RANGE_LEN, raw_len),
        };
        if options.signer.is_some() {
            flags |= FLAG_SIGNED;
        }
        let body_len = prefix_len + payload_len + signature_len;
        let frame_len = self.check_frame_len(body_len)?;
        let mut out = Vec::with_capacity(frame_len);
        out.put_slice(&FrameHeader::new(FrameKind::Batch, flags, body_len as u32).to_bytes());
        out.put_u64(batch.first_seq);
        out.put_u64(batch.last_seq);
        match compressed {
            Some(dict) => {
                if let Some(id) = dict {
                    out.put_u32(id);
                }
                out.put_u32(raw_len as u32);
                out.put_slice(&self.compressed);
            }
            None => convert::encode_batch_body(&batch.messages, &mut out),
        }
        if let Some((key, session)) = options.signer {
            out.put_bytes(0, SIGNATURE_LEN);
            sign_in_place(&mut out, key, session, batch.first_seq, batch.last_seq);
        }
        debug_assert_eq!(out.len(), frame_len);
        Ok(Bytes::from(out))
    }

    /// Compresses the batch body into `self.compressed`. Returns `Some(dictionary used)` when
    /// the compressed form pays (saves at least an eighth), `None` to send it uncompressed.
    #[allow(clippy::option_option)]
    fn compress(
        &mut self,
        batch: &Batch,
        raw_len: usize,
        compression: Compression,
        dictionary: Option<u32>,
    ) -> Result<Option<Option<u32>>, EncodeError> {
        let map = |source| EncodeError::Compress { source };
        self.scratch.clear();
        self.scratch.reserve(raw_len);
        convert::encode_batch_body(&batch.messages, &mut self.scratch);
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(raw_len));
        match dictionary.and_then(|id| self.dictionaries.get(&id)) {
            Some(dict) => {
                let id = dict.id();
                let prepared = match self.prepared.entry(id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(
                        EncoderDictionary::try_copy(dict.as_bytes(), compression.level())
                            .map_err(map)?,
                    ),
                };
                Compressor::with_prepared_dictionary(prepared)
                    .and_then(|mut c| {
                        trim_frame_header(&mut c)?;
                        c.compress_to_buffer(&self.scratch, &mut self.compressed)
                    })
                    .map_err(map)?;
            }
            None => {
                let compressor = match &mut self.compressor {
                    Some(c) => c,
                    slot => {
                        let mut c = Compressor::new(compression.level()).map_err(map)?;
                        trim_frame_header(&mut c).map_err(map)?;
                        slot.insert(c)
                    }
                };
                // A large body is judged by a sample from its middle first: random or
                // already-compressed data costs a 4 KiB attempt, not a whole-body one.
                if raw_len >= SAMPLE_FROM {
                    let at = raw_len / 2 - SAMPLE_LEN / 2;
                    let sample = &self.scratch[at..at + SAMPLE_LEN];
                    self.sample.clear();
                    self.sample
                        .reserve(zstd::zstd_safe::compress_bound(SAMPLE_LEN));
                    compressor
                        .compress_to_buffer(sample, &mut self.sample)
                        .map_err(map)?;
                    if !pays(self.sample.len(), SAMPLE_LEN) {
                        return Ok(None);
                    }
                }
                compressor
                    .compress_to_buffer(&self.scratch, &mut self.compressed)
                    .map_err(map)?;
            }
        }
        let overhead = 4 + if dictionary.is_some() { 4 } else { 0 };
        let payload: usize = batch.messages.iter().map(|m| m.payload.len()).sum();
        if pays_on_payloads(self.compressed.len() + overhead, raw_len, payload) {
            Ok(Some(dictionary))
        } else {
            Ok(None)
        }
    }

    fn check_frame_len(&self, body_len: usize) -> Result<usize, EncodeError> {
        let frame_len = HEADER_LEN.saturating_add(body_len);
        Limits::check(
            LimitKind::FrameLen,
            "frame length",
            frame_len,
            self.limits.max_frame_len(),
        )?;
        Ok(frame_len)
    }
}

/// Leaves out of the zstd frame what the batch prefix already carries (decompressed length,
/// dictionary id) and the checksum (the link is authenticated): smaller small batches.
fn trim_frame_header(c: &mut Compressor<'_>) -> std::io::Result<()> {
    use zstd::zstd_safe::CParameter;
    c.set_parameter(CParameter::ContentSizeFlag(false))?;
    c.set_parameter(CParameter::DictIdFlag(false))?;
    c.set_parameter(CParameter::ChecksumFlag(false))
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("limits", &self.limits)
            .field("compression", &self.compression)
            .field(
                "dictionaries",
                &self.dictionaries.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<'a> BatchOptions<'a> {
    /// Defaults: compressed per the encoder's settings, no dictionary, unsigned.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compresses with dictionary `id` (when the batch is compressed at all).
    pub fn dictionary(mut self, id: u32) -> Self {
        self.dictionary = Some(id);
        self
    }

    /// Signs the batch with `key` for `session`.
    pub fn sign(mut self, key: &'a Keypair, session: &'a SessionId) -> Self {
        self.signer = Some((key, session));
        self
    }

    /// Never compresses this batch.
    pub fn uncompressed(mut self) -> Self {
        self.uncompressed = true;
        self
    }
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            dictionaries: HashMap::new(),
            decompressor: None,
        }
    }

    /// Accepts batches compressed with `dictionary` (announce its id in the hello).
    pub fn with_dictionary(mut self, dictionary: Dictionary) -> Self {
        self.dictionaries.insert(dictionary.id(), dictionary);
        self
    }

    /// Decodes one whole frame (as split by [`split_frame`](crate::split_frame)).
    ///
    /// Batch payloads are slices of `frame` (or of the decompressed body): no copy. A signed
    /// batch decodes without its signature being checked; call
    /// [`verify_batch`](crate::verify_batch) first when signatures are required.
    ///
    /// # Errors
    /// [`DecodeError`] for anything but a valid frame within the limits; never panics.
    pub fn decode(&mut self, frame: &Bytes) -> Result<Frame, DecodeError> {
        let header = FrameHeader::parse(frame, &self.limits)?;
        if header.kind() == FrameKind::Batch {
            return self.decode_batch(&header, frame).map(Frame::Batch);
        }
        if frame.len() != header.frame_len() {
            return Err(DecodeError::LengthMismatch {
                declared: header.frame_len(),
                actual: frame.len(),
            });
        }
        let frame = convert::decode_body(header.kind(), frame.slice(HEADER_LEN..), &self.limits)?;
        frame.validate(&self.limits)?;
        Ok(frame)
    }

    /// The limits this decoder enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn decode_batch(&mut self, header: &FrameHeader, frame: &Bytes) -> Result<Batch, DecodeError> {
        let parts = BatchParts::split(header, frame)?;
        let payload = frame.slice(parts.payload.clone());
        let body = match parts.raw_len {
            None => payload,
            Some(raw_len) => self.decompress(&payload, raw_len, parts.dictionary)?,
        };
        let batch = Batch {
            first_seq: parts.first_seq,
            last_seq: parts.last_seq,
            messages: convert::decode_batch_body(body, &self.limits)?,
        };
        batch.validate(&self.limits)?;
        Ok(batch)
    }

    /// Decompresses into a buffer of exactly the announced length, checked against the limit
    /// first: a zstd bomb fails without allocating more than the limit.
    fn decompress(
        &mut self,
        payload: &[u8],
        raw_len: u32,
        dictionary: Option<u32>,
    ) -> Result<Bytes, DecodeError> {
        let declared = raw_len as usize;
        Limits::check(
            LimitKind::DecompressedLen,
            "decompressed length",
            declared,
            self.limits.max_decompressed_len(),
        )?;
        let map = |source| DecodeError::Decompress { source };
        let mut out = Vec::with_capacity(declared);
        match dictionary {
            Some(id) => {
                let dict = self
                    .dictionaries
                    .get(&id)
                    .ok_or(DecodeError::UnknownDictionary { id })?;
                Decompressor::with_prepared_dictionary(dict.decoder())
                    .and_then(|mut d| d.decompress_to_buffer(payload, &mut out))
                    .map_err(map)?;
            }
            None => {
                let decompressor = match &mut self.decompressor {
                    Some(d) => d,
                    slot => slot.insert(Decompressor::new().map_err(map)?),
                };
                decompressor
                    .decompress_to_buffer(payload, &mut out)
                    .map_err(map)?;
            }
        }
        if out.len() != declared {
            return Err(DecodeError::DecompressedLenMismatch {
                declared,
                actual: out.len(),
            });
        }
        Ok(Bytes::from(out))
    }
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("limits", &self.limits)
            .field(
                "dictionaries",
                &self.dictionaries.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}
