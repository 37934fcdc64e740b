//! The ceiling: one tokio TCP connection, a 4-byte length prefix, buffered writes, no crypto.
//!
//! Frames are `u32` length (big endian), `u8` kind, body. Kind [`DATA`] is counted by the
//! child, kind [`PING`] is echoed back as `u32` length and body.

use anyhow::Context as _;
use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::Link;
use crate::harness::{Counter, report};

/// Frame kind of a data message.
const DATA: u8 = 1;
/// Frame kind of a ping.
const PING: u8 = 2;
/// Read and write buffer size on both ends.
const BUFFER: usize = 256 * 1024;

/// Child: accepts one connection, counts data frames, echoes pings, until stdin closes.
pub(crate) async fn serve(counter: Counter) -> anyhow::Result<()> {
    let stdin_closed = counter.serve_stdin();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    report(&format!("listen {}", listener.local_addr()?));
    let (socket, _) = listener.accept().await?;
    socket.set_nodelay(true)?;
    tokio::select! {
        biased;
        _ = stdin_closed => Ok(()),
        result = serve_connection(socket, counter) => result,
    }
}

async fn serve_connection(socket: TcpStream, counter: Counter) -> anyhow::Result<()> {
    let (rd, wr) = socket.into_split();
    let mut rd = BufReader::with_capacity(BUFFER, rd);
    let mut wr = BufWriter::new(wr);
    let mut body = Vec::new();
    loop {
        let Ok(len) = rd.read_u32().await else {
            return Ok(()); // the parent closed the connection
        };
        let kind = rd.read_u8().await?;
        body.resize(len as usize, 0);
        rd.read_exact(&mut body).await?;
        match kind {
            DATA => counter.hit(),
            _ => {
                wr.write_u32(len).await?;
                wr.write_all(&body).await?;
                wr.flush().await?;
            }
        }
    }
}

/// Parent: the dialing end.
#[derive(Debug)]
pub(crate) struct RawLink {
    rd: BufReader<OwnedReadHalf>,
    wr: BufWriter<OwnedWriteHalf>,
    pong: Vec<u8>,
}

impl RawLink {
    /// Connects to the child at `address`.
    pub(crate) async fn connect(address: &str) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to {address}"))?;
        socket.set_nodelay(true)?;
        let (rd, wr) = socket.into_split();
        Ok(Self {
            rd: BufReader::new(rd),
            wr: BufWriter::with_capacity(BUFFER, wr),
            pong: Vec::new(),
        })
    }

    async fn write_frame(&mut self, kind: u8, body: &[u8]) -> anyhow::Result<()> {
        let len = u32::try_from(body.len()).context("frame longer than u32::MAX")?;
        self.wr.write_u32(len).await?;
        self.wr.write_u8(kind).await?;
        self.wr.write_all(body).await?;
        Ok(())
    }
}

impl Link for RawLink {
    async fn send(&mut self, _seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.write_frame(DATA, &payload).await
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.wr.flush().await?)
    }

    async fn round_trip(&mut self, _seq: u64, payload: Bytes) -> anyhow::Result<()> {
        self.write_frame(PING, &payload).await?;
        self.wr.flush().await?;
        let len = self.rd.read_u32().await? as usize;
        self.pong.resize(len, 0);
        self.rd.read_exact(&mut self.pong).await?;
        Ok(())
    }

    async fn close(mut self) -> anyhow::Result<()> {
        Ok(self.wr.shutdown().await?)
    }
}
