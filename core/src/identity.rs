//! Identity: an ed25519 keypair and the [`PeerId`] derived from it.
//!
//! The PeerId is derived exactly as libp2p derives it for ed25519 keys (an identity multihash of
//! the protobuf-encoded public key, shown in base58), so one identity serves remote links and the
//! libp2p mesh, and dndm PeerIds read the same as libp2p's (`12D3KooW…`).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};

/// Length of an encoded [`PeerId`] for an ed25519 key: 2 bytes of multihash header, 4 bytes of
/// protobuf header and the 32-byte key.
const PEER_ID_LEN: usize = 38;

/// Header of an ed25519 PeerId: identity multihash (code 0, length 36), then the protobuf
/// `PublicKey { Type = Ed25519 (1), Data = 32 bytes }` header.
const PEER_ID_HEADER: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// First line of an identity file.
const FILE_MAGIC: &str = "dndm-identity-v1 ed25519";

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the identity file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The identity file is not in the expected format.
    #[error("identity file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The identity file can be read by other users.
    #[error("identity file {path} has mode {mode:o}; it must not be readable by others (0600)")]
    Permissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The system's random number generator failed.
    #[error("random number generator failed: {0}")]
    Rng(String),
}

/// Why a PeerId or public key could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdError {
    /// Not base58.
    #[error("peer id {input:?} is not base58")]
    NotBase58 {
        /// The offending text.
        input: String,
    },
    /// Not an ed25519 identity multihash.
    #[error("peer id {input:?} is not an ed25519 identity multihash ({len} bytes)")]
    NotEd25519 {
        /// The offending text.
        input: String,
        /// Decoded length.
        len: usize,
    },
    /// The key bytes are not a valid ed25519 point.
    #[error("public key is not a valid ed25519 key")]
    InvalidKey,
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 raw key bytes.
    ///
    /// # Errors
    /// [`PeerIdError::InvalidKey`] when the bytes are not a valid point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, PeerIdError> {
        VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| PeerIdError::InvalidKey)
    }

    /// The 32 raw key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The PeerId of this key.
    pub fn peer_id(&self) -> PeerId {
        let mut bytes = [0; PEER_ID_LEN];
        bytes[..6].copy_from_slice(&PEER_ID_HEADER);
        bytes[6..].copy_from_slice(self.0.as_bytes());
        PeerId(bytes)
    }

    /// Verifies an ed25519 signature over `message` (strict: rejects malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.peer_id())
    }
}

/// An ed25519 keypair: the long-term identity of a node.
pub struct Keypair(SigningKey);

impl Keypair {
    /// Generates a new keypair from the operating system's random number generator.
    ///
    /// # Errors
    /// [`IdentityError::Rng`] when the system RNG fails.
    pub fn generate() -> Result<Self, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| IdentityError::Rng(e.to_string()))?;
        Ok(Self::from_seed(seed))
    }

    /// The keypair whose secret key is `seed` (deterministic; for tests and key files).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The PeerId of this keypair.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The 32-byte secret seed. Handle with care.
    pub fn secret_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Loads a keypair from `path`, refusing files readable by other users.
    ///
    /// # Errors
    /// [`IdentityError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io {
            path: shown.clone(),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissions { path: shown, mode });
            }
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let malformed = |reason| IdentityError::Malformed {
            path: shown.clone(),
            reason,
        };
        let mut lines = text.lines();
        if lines.next() != Some(FILE_MAGIC) {
            return Err(malformed("first line is not the dndm identity header"));
        }
        let key = lines
            .next()
            .ok_or_else(|| malformed("the key line is missing"))?;
        let seed = STANDARD
            .decode(key.trim())
            .map_err(|_| malformed("the key is not base64"))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| malformed("the key is not 32 bytes"))?;
        Ok(Self::from_seed(seed))
    }

    /// Writes the keypair to `path`, created with mode 0600 (fails if the file exists).
    ///
    /// # Errors
    /// [`IdentityError::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        use std::io::Write as _;
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let text = format!("{FILE_MAGIC}\n{}\n", STANDARD.encode(self.secret_seed()));
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// Loads the keypair at `path`, or generates one and saves it there if the file is missing.
    ///
    /// # Errors
    /// As [`Keypair::load`] and [`Keypair::save`].
    pub fn load_or_generate(path: &Path) -> Result<Self, IdentityError> {
        match Self::load(path) {
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                let keypair = Self::generate()?;
                keypair.save(path)?;
                Ok(keypair)
            }
            other => other,
        }
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        write!(f, "Keypair({})", self.peer_id())
    }
}

impl Clone for Keypair {
    fn clone(&self) -> Self {
        Self(SigningKey::from_bytes(&self.0.to_bytes()))
    }
}

/// A peer's identity: the libp2p-compatible hash of its ed25519 public key, shown in base58.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; PEER_ID_LEN]);

impl PeerId {
    /// The encoded bytes (an identity multihash, as libp2p's `PeerId::to_bytes`).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_vec()
    }

    /// Parses encoded bytes (as libp2p's `PeerId::from_bytes`), ed25519 keys only.
    ///
    /// # Errors
    /// [`PeerIdError`] when the bytes are not an ed25519 identity multihash of a valid key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PeerIdError> {
        let array: [u8; PEER_ID_LEN] = bytes.try_into().map_err(|_| PeerIdError::NotEd25519 {
            input: bs58::encode(bytes).into_string(),
            len: bytes.len(),
        })?;
        if array[..6] != PEER_ID_HEADER {
            return Err(PeerIdError::NotEd25519 {
                input: bs58::encode(bytes).into_string(),
                len: bytes.len(),
            });
        }
        let id = Self(array);
        id.public_key()?;
        Ok(id)
    }

    /// The public key this PeerId embeds.
    ///
    /// # Errors
    /// [`PeerIdError::InvalidKey`] when the embedded bytes are not a valid point.
    pub fn public_key(&self) -> Result<PublicKey, PeerIdError> {
        let mut key = [0; 32];
        key.copy_from_slice(&self.0[6..]);
        PublicKey::from_bytes(&key)
    }
}

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(input)
            .into_vec()
            .map_err(|_| PeerIdError::NotBase58 {
                input: input.to_owned(),
            })?;
        Self::from_bytes(&bytes)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(&self.0).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_matches_libp2p_derivation() {
        for seed in [[0u8; 32], [7u8; 32], [255u8; 32]] {
            let ours = Keypair::from_seed(seed);
            let mut secret = seed;
            let theirs = libp2p_identity::Keypair::ed25519_from_bytes(&mut secret).unwrap();
            let theirs_id = theirs.public().to_peer_id();
            assert_eq!(ours.peer_id().to_string(), theirs_id.to_string());
            assert_eq!(ours.peer_id().to_bytes(), theirs_id.to_bytes());
            assert!(ours.peer_id().to_string().starts_with("12D3KooW"));
        }
    }

    #[test]
    fn peer_id_parses_and_rejects() {
        let id = Keypair::from_seed([1; 32]).peer_id();
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        assert!(matches!(
            "0OIl".parse::<PeerId>(),
            Err(PeerIdError::NotBase58 { .. })
        ));
        let err = "abc".parse::<PeerId>().unwrap_err();
        assert!(matches!(err, PeerIdError::NotEd25519 { .. }), "{err}");
    }

    #[test]
    fn sign_and_verify() {
        let keys = Keypair::from_seed([3; 32]);
        let sig = keys.sign(b"hello");
        assert!(keys.public().verify(b"hello", &sig));
        assert!(!keys.public().verify(b"hellO", &sig));
        assert!(!Keypair::from_seed([4; 32]).public().verify(b"hello", &sig));
    }

    #[test]
    fn save_load_round_trip_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let created = Keypair::load_or_generate(&path).unwrap();
        let loaded = Keypair::load_or_generate(&path).unwrap();
        assert_eq!(created.peer_id(), loaded.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = Keypair::load(&path).unwrap_err();
            assert!(
                matches!(err, IdentityError::Permissions { mode: 0o644, .. }),
                "{err}"
            );
        }
        assert!(created.save(&path).is_err(), "save never overwrites");
    }

    #[test]
    fn malformed_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        Keypair::from_seed([1; 32]).save(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "garbage\n").unwrap();
        let err = Keypair::load(&path).unwrap_err().to_string();
        assert!(err.contains("is malformed: first line"), "{err}");
    }
}
