//! The Noise handshake and identity preamble over any byte stream (tokio I/O): what a remote
//! endpoint runs on each connection, and what the mesh runs as its libp2p security upgrade.

use bytes::BytesMut;
use dndm_core::PeerId;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{Channel, NoiseError, PREAMBLE_LEN, PreambleError, parse_preamble};

/// Bytes read at once during a handshake.
const READ_CHUNK: usize = 64 * 1024;

/// Why [`handshake`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The Noise handshake failed (a bad message, a cipher outside the offer, a wrong key).
    #[error("noise: {0}")]
    Noise(#[from] NoiseError),
    /// Reading or writing the stream failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended before the peer's identity preamble.
    #[error("connection closed during the handshake")]
    Eof,
    /// The peer's identity preamble was refused.
    #[error("identity preamble: {0}")]
    Preamble(#[from] PreambleError),
}

/// Runs `channel`'s Noise handshake over `io`, then sends `preamble` (our identity and its
/// binding to our static key, [`super::encode_preamble`]) and reads and checks the peer's.
///
/// Each side sends its preamble without waiting for the other's, so the handshake costs no
/// round trip beyond Noise's. Returns the channel, ready for transport messages, the
/// plaintext read past the peer's preamble, and the peer's identity. It does not time out:
/// the caller bounds it.
///
/// # Errors
/// [`HandshakeError`] naming the failure; the stream should then be dropped.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    mut channel: Channel,
    preamble: &[u8; PREAMBLE_LEN],
) -> Result<(Channel, BytesMut, PeerId), HandshakeError> {
    let mut plain = BytesMut::new();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut sent_identity = false;
    loop {
        if channel.is_established() && !sent_identity {
            channel.write(preamble)?;
            sent_identity = true;
        }
        let mut wrote = false;
        while let Some(out) = channel.poll_transmit() {
            io.write_all(&out).await?;
            wrote = true;
        }
        if wrote {
            // A no-op on sockets; buffered streams need it before we wait for the answer.
            io.flush().await?;
        }
        while let Some(chunk) = channel.poll_plaintext() {
            plain.extend_from_slice(&chunk);
        }
        if plain.len() >= PREAMBLE_LEN {
            let theirs = plain.split_to(PREAMBLE_LEN);
            let remote_static = channel
                .remote_static()
                .ok_or(HandshakeError::Noise(NoiseError::NotEstablished))?;
            let peer = parse_preamble(&theirs, &remote_static)?;
            return Ok((channel, plain, peer));
        }
        buf.clear();
        if io.read_buf(&mut buf).await? == 0 {
            return Err(HandshakeError::Eof);
        }
        channel.handle_input(&buf)?;
    }
}
