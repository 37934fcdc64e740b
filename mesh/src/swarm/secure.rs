//! `/dndm/noise/1`: the security of the mesh's libp2p connections, with dndm's Noise channel.
//!
//! libp2p's own Noise (`/noise`) seals with ChaCha20-Poly1305 only; on a CPU with AES in
//! hardware that was the largest single cost of a busy mesh link (about a sixth of both
//! processes at 1 KiB messages). This upgrade runs the same Noise XX handshake and identity
//! preamble as a remote link ([`dndm_remote::noise::stream::handshake`]), so both sides agree
//! on AES-256-GCM when both have AES in hardware, and seals what libp2p writes (yamux frames)
//! in messages of up to 64 KiB. A node offers it first and libp2p's `/noise` second
//! (multistream-select picks the first both support), so other libp2p nodes still connect.
//!
//! The peer's identity is its ed25519 key, proved by its signature over its Noise static key:
//! the same key libp2p's PeerId names.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use dndm_core::Keypair;
use dndm_remote::noise::stream::{HandshakeError, handshake};
use dndm_remote::noise::{
    self, Channel, MAX_PLAINTEXT_PER_MESSAGE, NoiseError, PREAMBLE_LEN, StaticKey,
};
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use tokio_util::compat::FuturesAsyncReadCompatExt as _;

/// The protocol name multistream-select negotiates.
const PROTOCOL: &str = "/dndm/noise/1";

/// Ciphertext read from the connection at once.
const READ_CHUNK: usize = 64 * 1024;

/// Why the security upgrade failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecureError {
    /// The handshake failed.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The peer's identity is not a libp2p PeerId (cannot happen for an ed25519 key).
    #[error("peer id: {0}")]
    PeerId(String),
    /// The Noise key could not be generated.
    #[error(transparent)]
    Setup(#[from] NoiseError),
    /// libp2p's Noise failed (a peer that does not speak ours).
    #[error(transparent)]
    Libp2p(#[from] libp2p::noise::Error),
}

/// dndm's Noise for one node: its Noise static key and identity preamble.
struct DndmNoise {
    static_key: StaticKey,
    preamble: [u8; PREAMBLE_LEN],
}

impl DndmNoise {
    /// `keypair`'s, with a fresh Noise static key.
    fn new(keypair: &Keypair) -> Result<Self, SecureError> {
        let static_key = StaticKey::generate()?;
        let binding = noise::sign_binding(keypair, &static_key.public());
        let preamble = noise::encode_preamble(&keypair.public(), &binding);
        Ok(Self {
            static_key,
            preamble,
        })
    }

    /// Runs the handshake over `socket`; the secured connection and the peer it proved.
    async fn upgrade<T>(
        &self,
        socket: T,
        initiator: bool,
    ) -> Result<(libp2p::PeerId, Secured<T>), SecureError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let channel = if initiator {
            Channel::initiator(&self.static_key)?
        } else {
            Channel::responder(&self.static_key)?
        };
        let mut io = socket.compat();
        let (channel, rest, peer) = handshake(&mut io, channel, &self.preamble).await?;
        let peer = libp2p::PeerId::from_bytes(&peer.to_bytes())
            .map_err(|e| SecureError::PeerId(e.to_string()))?;
        Ok((peer, Secured::new(io.into_inner(), channel, rest)))
    }
}

/// What a node offers and accepts, in this order: dndm's Noise, then libp2p's `/noise`.
#[derive(Clone)]
pub(crate) struct Offered {
    ours: Arc<DndmNoise>,
    theirs: libp2p::noise::Config,
}

impl Offered {
    /// Both upgrades for `keypair`'s node (`identity`: the same key in libp2p's form).
    pub(crate) fn new(
        keypair: &Keypair,
        identity: &libp2p::identity::Keypair,
    ) -> Result<Self, SecureError> {
        Ok(Self {
            ours: Arc::new(DndmNoise::new(keypair)?),
            theirs: libp2p::noise::Config::new(identity)?,
        })
    }
}

/// A connection secured by either upgrade.
pub(crate) type Either<T> = futures::future::Either<Secured<T>, libp2p::noise::Output<T>>;

type Selecting<T> =
    Pin<Box<dyn Future<Output = Result<(libp2p::PeerId, Either<T>), SecureError>> + Send>>;

impl UpgradeInfo for Offered {
    type Info = &'static str;
    type InfoIter = std::iter::Chain<std::iter::Once<&'static str>, std::iter::Once<&'static str>>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL).chain(self.theirs.protocol_info())
    }
}

impl Offered {
    async fn upgrade<T>(
        self,
        socket: T,
        info: &'static str,
        initiator: bool,
    ) -> Result<(libp2p::PeerId, Either<T>), SecureError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if info == PROTOCOL {
            let (peer, secured) = self.ours.upgrade(socket, initiator).await?;
            return Ok((peer, futures::future::Either::Left(secured)));
        }
        let (peer, output) = if initiator {
            self.theirs.upgrade_outbound(socket, info).await?
        } else {
            self.theirs.upgrade_inbound(socket, info).await?
        };
        Ok((peer, futures::future::Either::Right(output)))
    }
}

impl<T> InboundConnectionUpgrade<T> for Offered
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (libp2p::PeerId, Either<T>);
    type Error = SecureError;
    type Future = Selecting<T>;

    fn upgrade_inbound(self, socket: T, info: Self::Info) -> Self::Future {
        Box::pin(self.upgrade(socket, info, false))
    }
}

impl<T> OutboundConnectionUpgrade<T> for Offered
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = (libp2p::PeerId, Either<T>);
    type Error = SecureError;
    type Future = Selecting<T>;

    fn upgrade_outbound(self, socket: T, info: Self::Info) -> Self::Future {
        Box::pin(self.upgrade(socket, info, true))
    }
}

/// A connection secured by [`DndmNoise`]: what is written is sealed in messages of up to
/// [`MAX_PLAINTEXT_PER_MESSAGE`] bytes (one when full or on flush), what is read is opened.
pub(crate) struct Secured<T> {
    io: T,
    channel: Channel,
    /// Written and not sealed yet.
    plain_out: Vec<u8>,
    /// Sealed and not written yet, from `sent`.
    out: Vec<u8>,
    sent: usize,
    /// Opened and not read yet.
    plain_in: BytesMut,
    /// Ciphertext read buffer (zero-filled once).
    read_buf: Vec<u8>,
}

impl<T> Secured<T> {
    fn new(io: T, channel: Channel, rest: BytesMut) -> Self {
        Self {
            io,
            channel,
            plain_out: Vec::new(),
            out: Vec::new(),
            sent: 0,
            plain_in: rest,
            read_buf: Vec::new(),
        }
    }

    /// Seals what was written into `out`.
    fn seal(&mut self) -> io::Result<()> {
        if self.plain_out.is_empty() {
            return Ok(());
        }
        let result = self.channel.write_into(&self.plain_out, &mut self.out);
        self.plain_out.clear();
        result.map_err(io::Error::other)
    }
}

impl<T: AsyncWrite + Unpin> Secured<T> {
    /// Writes everything sealed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Secured<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.plain_out.len() >= MAX_PLAINTEXT_PER_MESSAGE {
            // One full message waits at most: the connection is the limit.
            ready!(this.poll_drain(cx))?;
            this.seal()?;
            // Start writing it now; what does not go out now goes on the next call.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
        }
        let n = buf
            .len()
            .min(MAX_PLAINTEXT_PER_MESSAGE - this.plain_out.len());
        this.plain_out.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.seal()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.io).poll_close(cx)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Secured<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.plain_in.is_empty() {
                let n = buf.len().min(this.plain_in.len());
                buf[..n].copy_from_slice(&this.plain_in[..n]);
                this.plain_in.advance(n);
                return Poll::Ready(Ok(n));
            }
            if this.read_buf.is_empty() {
                this.read_buf = vec![0; READ_CHUNK];
            }
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, &mut this.read_buf))?;
            if n == 0 {
                // A message cut short by the end of the connection is an error, not an end.
                if this.channel.buffered_input() > 0 {
                    return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                }
                return Poll::Ready(Ok(0));
            }
            this.channel
                .handle_input_into(&this.read_buf[..n], &mut this.plain_in)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_util::compat::TokioAsyncReadCompatExt as _;

    use super::*;

    fn upgrades() -> (DndmNoise, DndmNoise, Keypair, Keypair) {
        let (a, b) = (Keypair::from_seed([1; 32]), Keypair::from_seed([2; 32]));
        (
            DndmNoise::new(&a).unwrap(),
            DndmNoise::new(&b).unwrap(),
            a,
            b,
        )
    }

    #[tokio::test]
    async fn both_sides_learn_each_other_and_bytes_cross_both_ways_intact() {
        let (ua, ub, a, b) = upgrades();
        let (x, y) = tokio::io::duplex(4096);
        let (one, two) = tokio::join!(ua.upgrade(x.compat(), true), ub.upgrade(y.compat(), false));
        let ((peer_b, mut sa), (peer_a, mut sb)) = (one.unwrap(), two.unwrap());
        assert_eq!(peer_b.to_bytes(), b.peer_id().to_bytes());
        assert_eq!(peer_a.to_bytes(), a.peer_id().to_bytes());
        // More than one sealed message, written in pieces smaller and larger than one.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = data.clone();
        let writer = async move {
            for piece in sent.chunks(20_000) {
                sa.write_all(piece).await.unwrap();
            }
            sa.flush().await.unwrap();
            sa.close().await.unwrap();
            sa
        };
        let reader = async move {
            let mut got = Vec::new();
            sb.read_to_end(&mut got).await.unwrap();
            (got, sb)
        };
        let (mut sa, (got, mut sb)) = tokio::join!(writer, reader);
        assert_eq!(got, data);
        // The other way too.
        sb.write_all(b"back").await.unwrap();
        sb.close().await.unwrap();
        let mut back = Vec::new();
        sa.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"back");
    }

    #[tokio::test]
    async fn ours_is_offered_first_and_libp2p_noise_still_works() {
        let offered = |seed: u8| {
            let keypair = Keypair::from_seed([seed; 32]);
            let identity =
                libp2p::identity::Keypair::ed25519_from_bytes(keypair.secret_seed()).unwrap();
            Offered::new(&keypair, &identity).unwrap()
        };
        let (a, b) = (offered(1), offered(2));
        assert_eq!(
            a.protocol_info().collect::<Vec<_>>(),
            [PROTOCOL, "/noise"],
            "multistream-select takes the dialer's first protocol the listener supports"
        );
        for (protocol, ours) in [(PROTOCOL, true), ("/noise", false)] {
            let (x, y) = tokio::io::duplex(1 << 16);
            let (one, two) = tokio::join!(
                a.clone().upgrade(x.compat(), protocol, true),
                b.clone().upgrade(y.compat(), protocol, false)
            );
            let ((peer_b, mut sa), (_, mut sb)) = (one.unwrap(), two.unwrap());
            assert_eq!(
                peer_b.to_bytes(),
                Keypair::from_seed([2; 32]).peer_id().to_bytes()
            );
            assert_eq!(
                matches!(sa, futures::future::Either::Left(_)),
                ours,
                "{protocol}"
            );
            sa.write_all(b"ping").await.unwrap();
            sa.flush().await.unwrap();
            let mut got = [0u8; 4];
            sb.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        }
    }

    #[tokio::test]
    async fn a_tampered_message_is_an_error_not_data() {
        let (ua, ub, _, _) = upgrades();
        let (x, y) = tokio::io::duplex(1 << 20);
        let (one, two) = tokio::join!(ua.upgrade(x.compat(), true), ub.upgrade(y.compat(), false));
        let ((_, mut sa), (_, sb)) = (one.unwrap(), two.unwrap());
        sa.write_all(b"hello").await.unwrap();
        sa.flush().await.unwrap();
        // Take the sealed message off b's connection, flip a bit, and hand it to b's channel
        // over a new pipe.
        let mut raw = sb.io.into_inner();
        let mut sealed = vec![0u8; 64];
        let n = tokio::io::AsyncReadExt::read(&mut raw, &mut sealed)
            .await
            .unwrap();
        sealed.truncate(n);
        sealed[n - 1] ^= 1;
        let (mut p, q) = tokio::io::duplex(1024);
        tokio::io::AsyncWriteExt::write_all(&mut p, &sealed)
            .await
            .unwrap();
        let mut tampered = Secured::new(q.compat(), sb.channel, BytesMut::new());
        let mut got = [0u8; 16];
        let error = tampered.read(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
