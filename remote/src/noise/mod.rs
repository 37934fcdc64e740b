//! The Noise layer of a remote link: a sans-IO `Noise_XX_25519_ChaChaPoly_BLAKE2s` channel.
//!
//! A [`Channel`] turns a raw, reliable byte stream (TCP, a Unix socket, an in-memory pipe) into
//! an encrypted, authenticated byte stream. It does no I/O and keeps no clock: the driver reads
//! bytes from the socket and hands them to [`Channel::handle_input`], then writes whatever
//! [`Channel::poll_transmit`] returns and delivers whatever [`Channel::poll_plaintext`] returns
//! to the session layer.
//!
//! # Handshake
//!
//! Noise `XX` takes three messages: the initiator sends its ephemeral key (`-> e`), the responder
//! answers with its ephemeral and encrypted static key (`<- e, ee, s, es`), and the initiator
//! finishes with its encrypted static key (`-> s, se`). All three carry an **empty** payload: the
//! dndm hello (protocol version, ed25519 identity and its signature over the Noise static key,
//! see [`sign_binding`] and [`verify_binding`]) travels in the first encrypted frame of the
//! session instead. A non-empty handshake payload is a protocol error. After the handshake both
//! sides hold the same [`Channel::handshake_hash`] and know the peer's static key
//! ([`Channel::remote_static`]). The initiator's first message is queued on construction; the
//! initiator is established once it has queued the third message, the responder once it has
//! read it.
//!
//! # Framing
//!
//! Every Noise message, handshake or transport, goes on the stream as a 2-byte big-endian
//! length followed by that many bytes:
//!
//! ```text
//! +----------------+---------------------------------+
//! | len: u16 (BE)  | Noise message, 1..=65535 bytes  |
//! +----------------+---------------------------------+
//! ```
//!
//! A length of 0 is rejected ([`NoiseError::ZeroLength`]). A transport message holds at most
//! [`MAX_NOISE_MESSAGE`] − [`NOISE_TAG_LEN`] plaintext bytes; [`Channel::write`] splits longer
//! plaintext over several messages. The plaintext is a byte **stream**: message boundaries carry
//! no meaning, and the session layer reassembles its own frames from it.
//!
//! # Call order
//!
//! 1. Construct with [`Channel::initiator`] or [`Channel::responder`]; drain
//!    [`Channel::poll_transmit`] to the socket (the initiator has its first message ready).
//! 2. For every read from the socket: [`Channel::handle_input`], then drain
//!    [`Channel::poll_plaintext`] and [`Channel::poll_transmit`] until both return `None`.
//! 3. Once [`Channel::is_established`]: [`Channel::write`] plaintext, then drain
//!    [`Channel::poll_transmit`].
//!
//! # Limits
//!
//! The channel buffers at most one incomplete message (≤ 2 + 65535 bytes, allocated only as its
//! bytes arrive); complete messages are decrypted straight from the caller's slice. Decrypted
//! plaintext waits in the channel until [`Channel::poll_plaintext`] takes it; the caller must
//! drain it after each [`Channel::handle_input`]. If more than [`MAX_PLAINTEXT_BACKLOG`] bytes are
//! still queued when `handle_input` is called, it refuses the input with
//! [`NoiseError::Backlog`] without consuming it.
//!
//! Any error from [`Channel::handle_input`] is a protocol failure: the channel is then failed for
//! good and further calls return [`NoiseError::Failed`]; the driver closes the link.

use std::fmt;

use bytes::{Bytes, BytesMut};
use dndm_core::{Keypair, PeerId, PeerIdError, PublicKey};
use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
use snow::{Builder, HandshakeState, params::NoiseParams};

mod cipher;
mod framing;
#[cfg(feature = "runtime")]
pub mod stream;
mod transport;

pub use cipher::Cipher;

use framing::{push_message, split_message};
use transport::Transport;

/// The Noise protocol name used by every dndm remote link.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// The largest Noise message (handshake or transport), in bytes, as the Noise spec fixes it.
pub const MAX_NOISE_MESSAGE: usize = 65535;

/// The ChaChaPoly authentication tag that every encrypted Noise message carries, in bytes.
pub const NOISE_TAG_LEN: usize = 16;

/// The most plaintext bytes one transport message carries.
pub const MAX_PLAINTEXT_PER_MESSAGE: usize = MAX_NOISE_MESSAGE - NOISE_TAG_LEN;

/// Undrained decrypted plaintext (1 MiB) above which [`Channel::handle_input`] refuses input
/// with [`NoiseError::Backlog`]: a caller that drains [`Channel::poll_plaintext`] after every
/// `handle_input` never reaches it.
pub const MAX_PLAINTEXT_BACKLOG: usize = 1 << 20;

/// The domain separator that prefixes a binding message (see [`binding_message`]).
pub const BINDING_DOMAIN: &[u8] = b"dndm-noise-binding-v1\0";

/// Length of an X25519 key, in bytes.
const KEY_LEN: usize = 32;

/// Length of an ed25519 public key, in bytes.
const IDENTITY_LEN: usize = 32;

/// Length of the identity preamble each side sends first on an established channel: its
/// ed25519 public key, then that key's signature over its Noise static key ([`sign_binding`]).
pub const PREAMBLE_LEN: usize = IDENTITY_LEN + 64;

/// Length of the frame header: a big-endian `u16` message length.
const HEADER_LEN: usize = 2;

/// Room for one outgoing handshake message. The largest `XX` message is the second one: 32 (e)
/// + 32 + 16 (encrypted s) + 1 + 16 (the one-byte cipher choice and its tag) = 97 bytes.
const HANDSHAKE_BUF_LEN: usize = 256;

/// An X25519 static keypair for Noise, generated by snow's resolver from the OS RNG.
///
/// A node generates one at start (a fresh key per process is fine) and proves that its
/// ed25519 identity owns it with [`sign_binding`]. The private half is never printed.
pub struct StaticKey {
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
}

/// One Noise connection as a sans-IO state machine: handshake, then transport.
///
/// Methods by category (the module docs give the call order):
/// - constructors: [`Channel::initiator`], [`Channel::responder`];
/// - input: [`Channel::handle_input`] (bytes read from the socket), [`Channel::write`]
///   (plaintext to send, after the handshake);
/// - output: [`Channel::poll_transmit`] (bytes to write to the socket),
///   [`Channel::poll_plaintext`] (decrypted stream bytes);
/// - state: [`Channel::is_established`], [`Channel::remote_static`],
///   [`Channel::handshake_hash`].
pub struct Channel {
    state: State,
    /// At most one incomplete length-prefixed message (header included).
    input: Vec<u8>,
    /// Length-prefixed messages waiting for [`Channel::poll_transmit`].
    transmit: Vec<u8>,
    /// Decrypted plaintext waiting for [`Channel::poll_plaintext`].
    plaintext: BytesMut,
    /// Set when the handshake finishes.
    handshake_hash: Option<[u8; 32]>,
    /// Set when the handshake finishes.
    remote_static: Option<[u8; KEY_LEN]>,
    /// The transport cipher this side prefers.
    prefer: Cipher,
    /// The transport cipher agreed (the initiator learns it from the second message).
    cipher: Option<Cipher>,
    /// Handshake messages written and read so far.
    messages: u8,
    /// The initiator's first message had no payload (a peer from before cipher agreement):
    /// ChaCha20-Poly1305, and our answer carries none either.
    legacy: bool,
}

enum State {
    Handshake(Box<HandshakeState>),
    Transport(Box<Transport>),
    Failed,
}

/// Why a Noise operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoiseError {
    /// snow rejected a handshake message from the peer (malformed, wrong key, bad tag).
    #[error("noise handshake failed: {0}")]
    Handshake(String),
    /// A handshake message carried a payload; dndm handshake payloads are empty.
    #[error("noise handshake message carried a {len}-byte payload, expected 0")]
    HandshakePayload {
        /// Payload length in bytes.
        len: usize,
    },
    /// A transport message did not decrypt: tampered, truncated, replayed or garbage.
    #[error("noise transport message of {len} bytes failed to decrypt")]
    Decrypt {
        /// Message length in bytes (without the length prefix).
        len: usize,
    },
    /// A message length prefix was 0.
    #[error("noise message length prefix is 0, expected 1..=65535")]
    ZeroLength,
    /// [`Channel::write`] was called before the handshake finished.
    #[error("noise channel is not established: the handshake has not finished")]
    NotEstablished,
    /// The peer sent a handshake message while it was our turn to send one.
    #[error("unexpected noise handshake message of {len} bytes: it is our turn to send")]
    UnexpectedHandshakeMessage {
        /// Message length in bytes.
        len: usize,
    },
    /// Undrained plaintext exceeds [`MAX_PLAINTEXT_BACKLOG`]; the input was not consumed.
    #[error(
        "{queued} bytes of decrypted plaintext not drained, limit {limit}: \
         call poll_plaintext after each handle_input"
    )]
    Backlog {
        /// Plaintext bytes queued.
        queued: usize,
        /// [`MAX_PLAINTEXT_BACKLOG`].
        limit: usize,
    },
    /// An earlier error failed the channel; it must be dropped.
    #[error("noise channel failed earlier and must be dropped")]
    Failed,
    /// The ed25519 signature binding a Noise static key to an identity is malformed or wrong.
    #[error("noise static key binding rejected: {0}")]
    Binding(String),
    /// snow failed outside peer input (key generation, setup, encryption, nonce exhaustion).
    #[error("noise error: {0}")]
    Snow(String),
}

/// Why the peer's identity preamble ([`parse_preamble`]) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreambleError {
    /// The preamble is not [`PREAMBLE_LEN`] bytes long.
    #[error("identity preamble of {len} bytes, expected {PREAMBLE_LEN}")]
    Length {
        /// Its length.
        len: usize,
    },
    /// The first 32 bytes are not an ed25519 public key.
    #[error("{0}")]
    Key(#[source] PeerIdError),
    /// The key's signature does not cover the peer's Noise static key.
    #[error(transparent)]
    Binding(NoiseError),
}

impl StaticKey {
    /// Generates a fresh X25519 keypair with snow's resolver and the OS RNG.
    ///
    /// # Errors
    /// [`NoiseError::Snow`] when the RNG or the key exchange cannot be set up.
    pub fn generate() -> Result<StaticKey, NoiseError> {
        let keypair = Builder::new(params()?)
            .generate_keypair()
            .map_err(|e| NoiseError::Snow(format!("generating static key: {e}")))?;
        let private = key_array(&keypair.private, "private")?;
        let public = key_array(&keypair.public, "public")?;
        Ok(StaticKey { private, public })
    }

    /// The public half, as sent in the handshake and signed by [`sign_binding`].
    pub fn public(&self) -> [u8; KEY_LEN] {
        self.public
    }
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKey")
            .field("public", &Hex(&self.public))
            .finish_non_exhaustive()
    }
}

impl Drop for StaticKey {
    fn drop(&mut self) {
        // Best effort without unsafe: overwrite the secret before the memory is released.
        self.private.fill(0);
        std::hint::black_box(&self.private);
    }
}

impl Channel {
    /// A channel that starts the handshake; its first message is ready in
    /// [`Channel::poll_transmit`].
    ///
    /// # Errors
    /// [`NoiseError::Snow`] when snow cannot build the handshake or write the first message.
    pub fn initiator(static_key: &StaticKey) -> Result<Channel, NoiseError> {
        Channel::initiator_preferring(static_key, Cipher::preferred())
    }

    /// As [`Channel::initiator`], offering `prefer` as the transport cipher.
    ///
    /// # Errors
    /// As [`Channel::initiator`].
    pub fn initiator_preferring(
        static_key: &StaticKey,
        prefer: Cipher,
    ) -> Result<Channel, NoiseError> {
        let handshake = builder(static_key)?
            .build_initiator()
            .map_err(|e| NoiseError::Snow(format!("building initiator: {e}")))?;
        let mut channel = Channel::new(handshake, prefer);
        channel.advance_handshake().map_err(|e| match e {
            NoiseError::Handshake(msg) => NoiseError::Snow(msg),
            other => other,
        })?;
        Ok(channel)
    }

    /// A channel that waits for the initiator's first message.
    ///
    /// # Errors
    /// [`NoiseError::Snow`] when snow cannot build the handshake.
    pub fn responder(static_key: &StaticKey) -> Result<Channel, NoiseError> {
        Channel::responder_preferring(static_key, Cipher::preferred())
    }

    /// As [`Channel::responder`], agreeing to AES-256-GCM only if `prefer` is it too.
    ///
    /// # Errors
    /// As [`Channel::responder`].
    pub fn responder_preferring(
        static_key: &StaticKey,
        prefer: Cipher,
    ) -> Result<Channel, NoiseError> {
        let handshake = builder(static_key)?
            .build_responder()
            .map_err(|e| NoiseError::Snow(format!("building responder: {e}")))?;
        Ok(Channel::new(handshake, prefer))
    }

    /// The transport cipher, once the handshake finished.
    pub fn cipher(&self) -> Option<Cipher> {
        match &self.state {
            State::Transport(transport) => Some(transport.cipher()),
            _ => None,
        }
    }

    /// Feeds bytes read from the socket, split anywhere: processes every complete
    /// length-prefixed message (handshake steps, decryption) and buffers the incomplete tail.
    ///
    /// Afterwards drain [`Channel::poll_plaintext`] and [`Channel::poll_transmit`].
    ///
    /// # Errors
    /// - [`NoiseError::Backlog`] when more than [`MAX_PLAINTEXT_BACKLOG`] plaintext bytes are
    ///   undrained; nothing was consumed and the channel stays usable.
    /// - A protocol failure ([`NoiseError::ZeroLength`], [`NoiseError::Handshake`],
    ///   [`NoiseError::HandshakePayload`], [`NoiseError::UnexpectedHandshakeMessage`],
    ///   [`NoiseError::Decrypt`], [`NoiseError::Snow`]): the channel is failed for good.
    ///   Plaintext decrypted before the bad message stays available.
    /// - [`NoiseError::Failed`] when an earlier call failed the channel.
    pub fn handle_input(&mut self, bytes: &[u8]) -> Result<(), NoiseError> {
        if matches!(self.state, State::Failed) {
            return Err(NoiseError::Failed);
        }
        if self.plaintext.len() > MAX_PLAINTEXT_BACKLOG {
            return Err(NoiseError::Backlog {
                queued: self.plaintext.len(),
                limit: MAX_PLAINTEXT_BACKLOG,
            });
        }
        let result = self.process_input(bytes);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Like [`Channel::handle_input`], but appends the decrypted plaintext straight to `out`
    /// (no copy through the channel's own buffer) and leaves bounding `out` to the caller.
    /// Plaintext already queued in the channel comes first.
    ///
    /// # Errors
    /// As [`Channel::handle_input`], without [`NoiseError::Backlog`].
    pub fn handle_input_into(
        &mut self,
        bytes: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), NoiseError> {
        if matches!(self.state, State::Failed) {
            return Err(NoiseError::Failed);
        }
        if !self.plaintext.is_empty() {
            out.extend_from_slice(&self.plaintext);
            self.plaintext.clear();
        }
        // Decrypt into `out`'s buffer: the two swaps move no bytes.
        std::mem::swap(&mut self.plaintext, out);
        let result = self.process_input(bytes);
        std::mem::swap(&mut self.plaintext, out);
        if result.is_err() {
            self.fail();
        }
        result
    }

    /// Encrypts `plaintext` (any length, including 0) into as many transport messages as
    /// needed, each carrying at most [`MAX_PLAINTEXT_PER_MESSAGE`] bytes, and queues them for
    /// [`Channel::poll_transmit`].
    ///
    /// # Errors
    /// - [`NoiseError::NotEstablished`] before the handshake finished (nothing is queued).
    /// - [`NoiseError::Failed`] when the channel failed earlier.
    /// - [`NoiseError::Snow`] when encryption fails (nonce exhaustion); the channel is failed.
    pub fn write(&mut self, plaintext: &[u8]) -> Result<(), NoiseError> {
        let mut transmit = std::mem::take(&mut self.transmit);
        let result = self.write_into(plaintext, &mut transmit);
        self.transmit = transmit;
        result
    }

    /// Like [`Channel::write`], but appends the transport messages to `out` (a buffer the
    /// caller reuses) instead of queueing them. Bytes already queued for
    /// [`Channel::poll_transmit`] are not included: take them first with
    /// [`Channel::transmit_into`].
    ///
    /// # Errors
    /// As [`Channel::write`]; on error `out` is left as it was.
    pub fn write_into(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let transport = match &mut self.state {
            State::Transport(transport) => transport,
            State::Handshake(_) => return Err(NoiseError::NotEstablished),
            State::Failed => return Err(NoiseError::Failed),
        };
        let messages = plaintext.len().div_ceil(MAX_PLAINTEXT_PER_MESSAGE);
        out.reserve(plaintext.len() + messages * (HEADER_LEN + NOISE_TAG_LEN));
        let begin = out.len();
        let mut result = Ok(());
        // Each message: length, the plaintext copied once and sealed in place, its tag.
        for chunk in plaintext.chunks(MAX_PLAINTEXT_PER_MESSAGE) {
            let len = (chunk.len() + NOISE_TAG_LEN) as u16;
            out.extend_from_slice(&len.to_be_bytes());
            let start = out.len();
            out.extend_from_slice(chunk);
            match transport.seal(&mut out[start..]) {
                Ok(tag) => out.extend_from_slice(tag.as_ref()),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() {
            out.truncate(begin);
            self.fail();
        }
        result
    }

    /// Moves the bytes queued for [`Channel::poll_transmit`] to the end of `out`.
    pub fn transmit_into(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.transmit);
    }

    /// Takes the bytes to write to the socket (whole length-prefixed messages, possibly
    /// several), or `None` when nothing is queued.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.transmit.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.transmit)))
    }

    /// Takes the decrypted plaintext produced by [`Channel::handle_input`], or `None` when
    /// nothing is queued. Chunk boundaries carry no meaning: it is a byte stream.
    pub fn poll_plaintext(&mut self) -> Option<Bytes> {
        (!self.plaintext.is_empty()).then(|| self.plaintext.split().freeze())
    }

    /// Bytes of an incomplete message held from earlier input: the next input's plaintext is
    /// at most this plus the input's own length.
    pub fn buffered_input(&self) -> usize {
        self.input.len()
    }

    /// Whether the handshake finished and the channel carries transport messages.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Transport(_))
    }

    /// The peer's Noise static public key, once the handshake finished. Check it with
    /// [`verify_binding`] against the identity the peer claims.
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.remote_static
    }

    /// snow's handshake hash (unique to this handshake, equal on both sides), once the
    /// handshake finished. Usable for channel binding.
    pub fn handshake_hash(&self) -> Option<[u8; 32]> {
        self.handshake_hash
    }

    fn new(handshake: HandshakeState, prefer: Cipher) -> Channel {
        Channel {
            state: State::Handshake(Box::new(handshake)),
            input: Vec::new(),
            transmit: Vec::new(),
            plaintext: BytesMut::new(),
            handshake_hash: None,
            remote_static: None,
            prefer,
            cipher: None,
            messages: 0,
            legacy: false,
        }
    }

    fn process_input(&mut self, mut bytes: &[u8]) -> Result<(), NoiseError> {
        while !bytes.is_empty() {
            if self.input.is_empty() {
                // Fast path: a whole message straight from the caller's slice, no copy.
                if let Some((message, rest)) = split_message(bytes)? {
                    self.handle_message(message)?;
                    bytes = rest;
                    continue;
                }
            }
            // Slow path: complete the header, then the body, of one buffered message.
            let missing = self.missing_input();
            let (head, rest) = bytes.split_at(missing.min(bytes.len()));
            if self.input.len() == HEADER_LEN {
                // The body length is known (and bounded by u16): allocate exactly once.
                self.input.reserve_exact(missing);
            }
            self.input.extend_from_slice(head);
            bytes = rest;
            let buffered = std::mem::take(&mut self.input);
            let result = match split_message(&buffered) {
                Ok(Some((message, _))) => self.handle_message(message).map(|()| true),
                Ok(None) => Ok(false),
                Err(e) => Err(e),
            };
            self.input = buffered;
            if result? {
                self.input.clear();
            }
        }
        Ok(())
    }

    /// Bytes still needed to complete the buffered header or message (> 0 when called with
    /// an incomplete buffer).
    fn missing_input(&self) -> usize {
        match self.input.first_chunk::<HEADER_LEN>() {
            None => HEADER_LEN.saturating_sub(self.input.len()),
            Some(header) => (HEADER_LEN + usize::from(u16::from_be_bytes(*header)))
                .saturating_sub(self.input.len()),
        }
    }

    fn handle_message(&mut self, message: &[u8]) -> Result<(), NoiseError> {
        let len = message.len();
        match &mut self.state {
            State::Handshake(handshake) => {
                if handshake.is_my_turn() {
                    return Err(NoiseError::UnexpectedHandshakeMessage { len });
                }
                let mut payload = vec![0; len];
                let payload_len = handshake.read_message(message, &mut payload).map_err(|e| {
                    NoiseError::Handshake(format!("reading {len}-byte message: {e}"))
                })?;
                self.payload_read(&payload[..payload_len])?;
                self.messages += 1;
                self.advance_handshake()
            }
            State::Transport(transport) => {
                // Copied once, opened in place: no zero-filled buffer.
                let start = self.plaintext.len();
                self.plaintext.extend_from_slice(message);
                match transport.open(&mut self.plaintext[start..]) {
                    Some(n) => {
                        self.plaintext.truncate(start + n);
                        Ok(())
                    }
                    None => {
                        self.plaintext.truncate(start);
                        Err(NoiseError::Decrypt { len })
                    }
                }
            }
            State::Failed => Err(NoiseError::Failed),
        }
    }

    /// Writes our next handshake message if it is our turn, and switches to transport mode
    /// once the handshake is finished.
    fn advance_handshake(&mut self) -> Result<(), NoiseError> {
        let payload = self.payload_to_write();
        let State::Handshake(handshake) = &mut self.state else {
            return Ok(());
        };
        if handshake.is_my_turn() && !handshake.is_handshake_finished() {
            push_message(&mut self.transmit, HANDSHAKE_BUF_LEN, |out| {
                handshake.write_message(&payload, out)
            })
            .map_err(|e| NoiseError::Handshake(format!("writing handshake message: {e}")))?;
            self.messages += 1;
        }
        if !handshake.is_handshake_finished() {
            return Ok(());
        }
        let State::Handshake(mut handshake) = std::mem::replace(&mut self.state, State::Failed)
        else {
            return Err(NoiseError::Failed);
        };
        let hash = handshake
            .get_handshake_hash()
            .try_into()
            .map_err(|_| NoiseError::Handshake("handshake hash is not 32 bytes".to_owned()))?;
        let remote = handshake
            .get_remote_static()
            .and_then(|key| key.try_into().ok())
            .ok_or_else(|| NoiseError::Handshake("no 32-byte remote static key".to_owned()))?;
        let cipher = self
            .cipher
            .ok_or_else(|| NoiseError::Handshake("no transport cipher agreed".to_owned()))?;
        let transport = Transport::new(
            handshake.is_initiator(),
            handshake.dangerously_get_raw_split(),
            cipher,
        )?;
        self.handshake_hash = Some(hash);
        self.remote_static = Some(remote);
        self.state = State::Transport(Box::new(transport));
        Ok(())
    }

    fn fail(&mut self) {
        self.state = State::Failed;
        self.input = Vec::new();
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Handshake(handshake) if handshake.is_initiator() => "handshake (initiator)",
            State::Handshake(_) => "handshake (responder)",
            State::Transport(_) => "transport",
            State::Failed => "failed",
        };
        f.debug_struct("Channel")
            .field("state", &state)
            .field("buffered_input", &self.input.len())
            .field("queued_transmit", &self.transmit.len())
            .field("queued_plaintext", &self.plaintext.len())
            .field("remote_static", &self.remote_static.as_ref().map(Hex))
            .finish_non_exhaustive()
    }
}

impl NoiseError {
    /// Whether retrying (on a new connection) might succeed without anything changing. Always
    /// `false`: every Noise error is a protocol, authentication or usage failure.
    pub fn is_transient(&self) -> bool {
        match self {
            NoiseError::Handshake(_)
            | NoiseError::HandshakePayload { .. }
            | NoiseError::Decrypt { .. }
            | NoiseError::ZeroLength
            | NoiseError::NotEstablished
            | NoiseError::UnexpectedHandshakeMessage { .. }
            | NoiseError::Backlog { .. }
            | NoiseError::Failed
            | NoiseError::Binding(_)
            | NoiseError::Snow(_) => false,
        }
    }
}

/// The message an identity signs to claim a Noise static key: [`BINDING_DOMAIN`] followed by
/// the 32-byte static public key.
pub fn binding_message(static_public: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(BINDING_DOMAIN.len() + KEY_LEN);
    message.extend_from_slice(BINDING_DOMAIN);
    message.extend_from_slice(static_public);
    message
}

/// Signs [`binding_message`] with the node's ed25519 identity: sent in the session hello so the
/// peer can check that this identity owns the Noise static key it authenticated.
pub fn sign_binding(keypair: &Keypair, static_public: &[u8; 32]) -> [u8; 64] {
    keypair.sign(&binding_message(static_public))
}

/// Checks that `signature` is `public`'s signature over [`binding_message`] of
/// `static_public` (the peer's [`Channel::remote_static`]).
///
/// # Errors
/// [`NoiseError::Binding`] when the signature is not 64 bytes or does not verify.
pub fn verify_binding(
    public: &PublicKey,
    static_public: &[u8; 32],
    signature: &[u8],
) -> Result<(), NoiseError> {
    let signature: &[u8; 64] = signature.try_into().map_err(|_| {
        NoiseError::Binding(format!("signature length {} is not 64", signature.len()))
    })?;
    if public.verify(&binding_message(static_public), signature) {
        Ok(())
    } else {
        Err(NoiseError::Binding(format!(
            "signature by {} does not cover noise static key {}",
            public.peer_id(),
            Hex(static_public)
        )))
    }
}

/// Our identity preamble: `public`, then its binding signature over our Noise static key
/// ([`sign_binding`]). Written first on an established channel.
pub fn encode_preamble(public: &PublicKey, binding: &[u8; 64]) -> [u8; PREAMBLE_LEN] {
    let mut preamble = [0u8; PREAMBLE_LEN];
    preamble[..IDENTITY_LEN].copy_from_slice(&public.to_bytes());
    preamble[IDENTITY_LEN..].copy_from_slice(binding);
    preamble
}

/// Parses the peer's identity preamble (the first [`PREAMBLE_LEN`] plaintext bytes of an
/// established channel) and checks that its key signs `remote_static`, the peer's Noise static
/// key ([`Channel::remote_static`]). Returns the peer it proves. Pure: the endpoint's handshake
/// calls it, and the `preamble` fuzz target feeds it arbitrary bytes.
///
/// # Errors
/// [`PreambleError::Length`] for any other length, [`PreambleError::Key`] when the key is not
/// an ed25519 point, [`PreambleError::Binding`] when the signature does not verify.
pub fn parse_preamble(
    preamble: &[u8],
    remote_static: &[u8; KEY_LEN],
) -> Result<PeerId, PreambleError> {
    if preamble.len() != PREAMBLE_LEN {
        return Err(PreambleError::Length {
            len: preamble.len(),
        });
    }
    let (key, signature) = preamble.split_at(IDENTITY_LEN);
    let mut bytes = [0u8; IDENTITY_LEN];
    bytes.copy_from_slice(key);
    let key = PublicKey::from_bytes(&bytes).map_err(PreambleError::Key)?;
    verify_binding(&key, remote_static, signature).map_err(PreambleError::Binding)?;
    Ok(key.peer_id())
}

fn params() -> Result<NoiseParams, NoiseError> {
    NOISE_PARAMS
        .parse()
        .map_err(|e| NoiseError::Snow(format!("parsing {NOISE_PARAMS}: {e}")))
}

fn builder(static_key: &StaticKey) -> Result<Builder<'_>, NoiseError> {
    // ring for the transport cipher (the hot path), the pure-Rust resolver for the rest
    // (ring has no X25519 or BLAKE2s in snow).
    let resolver = FallbackResolver::new(Box::new(RingResolver), Box::new(DefaultResolver));
    Builder::with_resolver(params()?, Box::new(resolver))
        .local_private_key(&static_key.private)
        .map_err(|e| NoiseError::Snow(format!("setting static key: {e}")))
}

fn key_array(bytes: &[u8], half: &str) -> Result<[u8; KEY_LEN], NoiseError> {
    bytes.try_into().map_err(|_| {
        NoiseError::Snow(format!(
            "{half} static key is {} bytes, expected {KEY_LEN}",
            bytes.len()
        ))
    })
}

/// Lowercase hex for keys in `Debug` and error text.
struct Hex<'a>(&'a [u8; KEY_LEN]);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

#[cfg(test)]
mod tests;
