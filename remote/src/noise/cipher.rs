//! The transport cipher a channel's handshake agrees on (docs/protocol.md, "Connection
//! setup"): the handshake payloads that carry the offer and the choice.

use super::{Channel, NoiseError};

/// The AEAD of a channel's transport messages, agreed in the handshake (docs/protocol.md,
/// Connection setup): AES-256-GCM when both sides have AES in hardware (about 3× ChaCha20's
/// speed on such CPUs), else ChaCha20-Poly1305 (fast in software everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// ChaCha20-Poly1305, as `Noise_XX_25519_ChaChaPoly_BLAKE2s` defines it.
    ChaChaPoly,
    /// AES-256-GCM with keys derived from the handshake's split keys.
    AesGcm,
}

impl Cipher {
    /// What this machine runs fastest: AES-256-GCM where the CPU has AES and carry-less
    /// multiplication instructions, else ChaCha20-Poly1305.
    pub fn preferred() -> Cipher {
        #[cfg(target_arch = "x86_64")]
        let hardware = std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq");
        #[cfg(target_arch = "aarch64")]
        let hardware = std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let hardware = false;
        if hardware {
            Cipher::AesGcm
        } else {
            Cipher::ChaChaPoly
        }
    }

    /// Its byte in the handshake payloads.
    pub(super) fn wire(self) -> u8 {
        match self {
            Cipher::ChaChaPoly => 0,
            Cipher::AesGcm => 1,
        }
    }

    pub(super) fn from_wire(byte: u8) -> Option<Cipher> {
        match byte {
            0 => Some(Cipher::ChaChaPoly),
            1 => Some(Cipher::AesGcm),
            _ => None,
        }
    }
}

impl Channel {
    /// The payload of our next handshake message: the first carries our preferred cipher,
    /// the second the agreed one (see docs/protocol.md), the third nothing.
    pub(super) fn payload_to_write(&self) -> Vec<u8> {
        match (self.messages, self.cipher) {
            (0, _) => vec![self.prefer.wire()],
            (1, Some(cipher)) if !self.legacy => vec![cipher.wire()],
            _ => Vec::new(),
        }
    }

    /// Checks the payload of the peer's handshake message and takes what it says.
    pub(super) fn payload_read(&mut self, payload: &[u8]) -> Result<(), NoiseError> {
        let unexpected = || NoiseError::HandshakePayload { len: payload.len() };
        match (self.messages, payload) {
            // The initiator's offer: AES-256-GCM only if both sides prefer it.
            (0, []) => {
                self.legacy = true;
                self.cipher = Some(Cipher::ChaChaPoly);
            }
            (0, &[offer]) => {
                let offer = Cipher::from_wire(offer).ok_or_else(|| {
                    NoiseError::Handshake(format!("unknown transport cipher {offer} offered"))
                })?;
                self.cipher = Some(
                    if offer == Cipher::AesGcm && self.prefer == Cipher::AesGcm {
                        Cipher::AesGcm
                    } else {
                        Cipher::ChaChaPoly
                    },
                );
            }
            // A responder that ignores payloads (plain snow): ChaCha20-Poly1305. The payload
            // is authenticated, so nobody in between can strip it.
            (1, []) => self.cipher = Some(Cipher::ChaChaPoly),
            // The responder's choice: one we offered (ChaCha20-Poly1305 always is).
            (1, &[choice]) => match Cipher::from_wire(choice) {
                Some(Cipher::AesGcm) if self.prefer != Cipher::AesGcm => {
                    return Err(NoiseError::Handshake(
                        "the responder chose AES-256-GCM, which we did not offer".to_owned(),
                    ));
                }
                Some(cipher) => self.cipher = Some(cipher),
                None => {
                    return Err(NoiseError::Handshake(format!(
                        "unknown transport cipher {choice} chosen"
                    )));
                }
            },
            (2, []) => {}
            _ => return Err(unexpected()),
        }
        Ok(())
    }
}
