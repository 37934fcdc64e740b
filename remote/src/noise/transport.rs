//! Noise transport messages with ring, in place.

use ring::aead::{AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};

use super::{Cipher, NoiseError};

/// The blake3 key-derivation context of AES-256-GCM transport keys from the handshake's split
/// keys: a key is never used under two algorithms.
const AES_CONTEXT: &str = "dndm noise transport AES-256-GCM v1";

/// The transport phase: one AEAD key and nonce counter per direction, from the handshake's
/// split. With ChaCha20-Poly1305 exactly as Noise defines transport messages (nonce = 4 zero
/// bytes and the counter in little-endian, empty associated data), so the wire is what snow's
/// `TransportState` reads and writes; with AES-256-GCM the keys are derived from the split
/// keys and the counter is big-endian, as Noise's `AESGCM` has it. Sealing and opening happen
/// in place.
pub(super) struct Transport {
    send: LessSafeKey,
    send_nonce: u64,
    recv: LessSafeKey,
    recv_nonce: u64,
    cipher: Cipher,
}

impl Transport {
    /// Keys for this side from the handshake's split: the initiator sends with the first.
    pub(super) fn new(
        initiator: bool,
        (first, second): ([u8; 32], [u8; 32]),
        cipher: Cipher,
    ) -> Result<Self, NoiseError> {
        let key = |bytes: &[u8; 32]| {
            let made = match cipher {
                Cipher::ChaChaPoly => UnboundKey::new(&CHACHA20_POLY1305, bytes),
                Cipher::AesGcm => {
                    UnboundKey::new(&AES_256_GCM, &blake3::derive_key(AES_CONTEXT, bytes))
                }
            };
            made.map(LessSafeKey::new)
                .map_err(|_| NoiseError::Handshake("split key rejected".to_owned()))
        };
        let (send, recv) = if initiator {
            (key(&first)?, key(&second)?)
        } else {
            (key(&second)?, key(&first)?)
        };
        Ok(Self {
            send,
            send_nonce: 0,
            recv,
            recv_nonce: 0,
            cipher,
        })
    }

    /// The cipher of transport messages.
    pub(super) fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The Noise nonce for `counter`; `None` once the counter is spent (2^64 - 1 is reserved).
    fn nonce(&self, counter: u64) -> Option<Nonce> {
        if counter == u64::MAX {
            return None;
        }
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&match self.cipher {
            Cipher::ChaChaPoly => counter.to_le_bytes(),
            Cipher::AesGcm => counter.to_be_bytes(),
        });
        Some(Nonce::assume_unique_for_key(bytes))
    }

    /// Encrypts `buf` in place and returns its tag.
    pub(super) fn seal(&mut self, buf: &mut [u8]) -> Result<Tag, NoiseError> {
        let nonce = self
            .nonce(self.send_nonce)
            .ok_or_else(|| NoiseError::Snow("send nonce exhausted".to_owned()))?;
        let tag = self
            .send
            .seal_in_place_separate_tag(nonce, Aad::empty(), buf)
            .map_err(|_| NoiseError::Snow(format!("sealing {} bytes", buf.len())))?;
        self.send_nonce += 1;
        Ok(tag)
    }

    /// Decrypts `buf` (ciphertext and tag) in place; the plaintext length.
    pub(super) fn open(&mut self, buf: &mut [u8]) -> Option<usize> {
        let nonce = self.nonce(self.recv_nonce)?;
        let len = self
            .recv
            .open_in_place(nonce, Aad::empty(), buf)
            .ok()?
            .len();
        self.recv_nonce += 1;
        Some(len)
    }
}
