//! The socket side of one connection: a reader task and a writer task beside the link's task.
//!
//! The link's task does the protocol work (batching, sealing, opening, decoding, dispatch);
//! the two I/O tasks do the system calls, which on loopback also carry the kernel's TCP
//! processing of the other side. Running them beside the link lets one link use more than
//! one core, and neither direction waits for the other: the reader keeps reading while a write
//! waits for the peer, so two peers writing to each other at once cannot deadlock.
//!
//! Both tasks are bounded: the reader hands at most [`CHUNKS`] chunks ahead, the writer holds
//! at most [`CHUNKS`] writes. Buffers go back to where they came from once used (read buffers
//! to the reader, write buffers to the link's task), so a steady stream allocates nothing: large
//! allocations freed and made again are what glibc's allocator returns to the kernel and then
//! faults back in, page by page. [`Io::finish`] lets the writer finish what it holds (a Close,
//! the last acks) within the stall timeout, then close. After a failure the reader stops at
//! once; after an orderly close it reads on, discarding, until the peer ends its side too
//! (for at most [`LINGER`]): the peer has then read our Close, and we close a connection with
//! nothing unread (a socket closed with unread bytes is reset, and a multiplexed connection
//! closed under a peer that is still writing can fail on the peer's side before it reads our
//! last frames).

use std::future::Future as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::endpoint::{ByteStream, Ended};
use crate::session::LinkFailure;

/// Read buffer size at first.
const READ_CHUNK: usize = 64 * 1024;
/// Largest read buffer: a connection whose reads fill the buffer gets a larger one, so a
/// 64 KiB Noise message rarely straddles two reads (a straddling one is copied once more).
const READ_CHUNK_MAX: usize = 256 * 1024;
/// Chunks read ahead of the link, and writes queued for the writer.
const CHUNKS: usize = 4;
/// Idle buffers kept per direction; more (after a burst) go back to the allocator, so an idle
/// connection holds at most this many of each.
const SPARES: usize = 2;
/// Largest buffer kept for reuse (a write gathers up to 256 KiB plus one frame); a larger one
/// goes back to the allocator.
const KEEP_MAX: usize = 512 * 1024;

/// How long the reader of an orderly closed connection waits for the peer to end its side.
pub(super) const LINGER: Duration = Duration::from_millis(500);

/// A buffer of bytes read or to write.
pub(super) type Buf = Vec<u8>;

/// What the link's task waits for besides input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Input only: the link has nothing more to write.
    Input,
    /// Room for another write: the writer holds [`CHUNKS`] writes and the link has more.
    Room,
    /// The writer to finish what it holds: the link held back a partial write meanwhile, so
    /// what arrives until then joins it (larger batches, fewer seals and system calls).
    Idle,
}

/// Writes handed to the writer and not yet finished, and a signal when they reach zero.
#[derive(Debug, Default)]
struct Pending {
    writes: AtomicUsize,
    idle: Notify,
    /// A write found the connection full since the link last looked.
    pushed_back: AtomicBool,
}

/// What the I/O tasks tell the link's task.
pub(super) enum Input {
    /// Bytes read, in order. Give the buffer back with [`Io::recycle_read`].
    Data(Buf),
    /// The connection ended: read end, read error, write error or a stalled write.
    Ended(LinkFailure),
}

/// The I/O of the connection a link runs now.
pub(super) struct Io {
    input: mpsc::Receiver<Input>,
    output: mpsc::Sender<Buf>,
    /// Read buffers going back to the reader.
    read_spares: mpsc::Sender<Buf>,
    /// Written buffers coming back from the writer.
    write_spares: mpsc::Receiver<Buf>,
    /// A write buffer taken and not used.
    unused: Option<Buf>,
    pending: Arc<Pending>,
    /// Told how the connection ended (dial loops wait on it).
    pub(super) done: Option<oneshot::Sender<Ended>>,
    /// Aborted on drop, unless [`Io::finish`] let it linger.
    reader: Option<JoinHandle<()>>,
}

impl Io {
    /// Starts the reader and the writer of `stream` on `tracker`. A write that makes no progress
    /// for `stall` ends the connection.
    pub(super) fn start(
        stream: Box<dyn ByteStream>,
        done: Option<oneshot::Sender<Ended>>,
        stall: Duration,
        tracker: &TaskTracker,
    ) -> Self {
        let (reader, writer) = tokio::io::split(stream);
        let (input_tx, input) = mpsc::channel(CHUNKS);
        let (output, output_rx) = mpsc::channel(CHUNKS);
        // Giving a buffer back never waits: a full spare list drops it.
        let (read_spares, read_spares_rx) = mpsc::channel(SPARES);
        let (write_spares_tx, write_spares) = mpsc::channel(SPARES);
        let pending = Arc::new(Pending::default());
        let reader = tracker.spawn(read_loop(reader, input_tx.clone(), read_spares_rx));
        // The writer ends by itself once `output` is dropped and what it holds is written.
        drop(tracker.spawn(write_loop(
            writer,
            output_rx,
            Outputs {
                input: input_tx,
                spares: write_spares_tx,
                pending: pending.clone(),
            },
            stall,
        )));
        Self {
            input,
            output,
            read_spares,
            write_spares,
            unused: None,
            pending,
            done,
            reader: Some(reader),
        }
    }

    /// The next input, or `None` when what `wait` names happened first. Never resolves once
    /// both tasks are gone.
    pub(super) async fn next(&mut self, wait: Wait) -> Option<Input> {
        let idle = self.pending.idle.notified();
        tokio::select! {
            input = self.input.recv() => match input {
                Some(input) => Some(input),
                None => std::future::pending().await,
            },
            // A writer that is gone reports why through `input`.
            Ok(_) = self.output.reserve(), if wait == Wait::Room => None,
            // A stored wake-up may be stale (the writer went idle before we looked): the
            // caller then finds the writer busy and waits again.
            () = idle, if wait == Wait::Idle => None,
        }
    }

    /// Whether a write found the connection full since the last call.
    pub(super) fn take_pushback(&self) -> bool {
        self.pending.pushed_back.load(Ordering::Relaxed)
            && self.pending.pushed_back.swap(false, Ordering::Relaxed)
    }

    /// Writes handed to the writer that it has not finished.
    pub(super) fn writes_pending(&self) -> usize {
        self.pending.writes.load(Ordering::Acquire)
    }

    /// A slot for one write and an empty buffer to fill, at once, or `None` while the writer
    /// holds [`CHUNKS`] writes.
    pub(super) fn try_reserve(&mut self) -> Option<(Slot<'_>, Buf)> {
        let permit = self.output.try_reserve().ok()?;
        let buf = self
            .unused
            .take()
            .or_else(|| self.write_spares.try_recv().ok())
            .unwrap_or_default();
        let slot = Slot {
            permit,
            pending: &self.pending,
        };
        Some((slot, buf))
    }

    /// Keeps a write buffer that [`Io::try_reserve`] gave and that stayed empty.
    pub(super) fn keep(&mut self, buf: Buf) {
        self.unused = Some(buf);
    }

    /// Gives a read buffer back to the reader.
    pub(super) fn recycle_read(&self, buf: Buf) {
        recycle(&self.read_spares, buf);
    }

    /// Ends the connection's I/O: the writer writes `rest` (the connection's last bytes, if
    /// any) after what it holds, then closes the connection. The reader stops now, or with
    /// `linger` reads on until the peer ends its side, for at most that long.
    pub(super) fn finish(mut self, rest: Buf, tracker: &TaskTracker, linger: Option<Duration>) {
        if let Some(linger) = linger
            && let Some(reader) = self.reader.take()
        {
            let abort = reader.abort_handle();
            drop(tracker.spawn(async move {
                if tokio::time::timeout(linger, reader).await.is_err() {
                    abort.abort();
                }
            }));
        }
        if !rest.is_empty() {
            self.pending.writes.fetch_add(1, Ordering::AcqRel);
            let output = self.output.clone();
            // Waits for room in the writer, which ends (and fails the send) if it stalls.
            drop(tracker.spawn(async move {
                let _ = output.send(rest).await;
            }));
        }
    }
}

/// Room for one write in the writer's queue.
pub(super) struct Slot<'a> {
    permit: mpsc::Permit<'a, Buf>,
    pending: &'a Pending,
}

impl Slot<'_> {
    /// Hands a filled buffer to the writer.
    pub(super) fn send(self, buf: Buf) {
        // Counted before the writer can see it, so its count never goes below zero.
        self.pending.writes.fetch_add(1, Ordering::AcqRel);
        self.permit.send(buf);
    }
}

/// Where the writer reports to: failures as input, used buffers, finished writes.
struct Outputs {
    input: mpsc::Sender<Input>,
    spares: mpsc::Sender<Buf>,
    pending: Arc<Pending>,
}

/// Gives `buf` back, emptied, unless it grew past [`KEEP_MAX`] or [`SPARES`] wait already.
fn recycle(spares: &mpsc::Sender<Buf>, mut buf: Buf) {
    if buf.capacity() <= KEEP_MAX {
        buf.clear();
        let _ = spares.try_send(buf);
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

async fn read_loop(
    mut reader: ReadHalf<Box<dyn ByteStream>>,
    input: mpsc::Sender<Input>,
    mut spares: mpsc::Receiver<Buf>,
) {
    let mut chunk = READ_CHUNK;
    loop {
        let mut buf = spares.try_recv().unwrap_or_default();
        // Reads go into spare capacity: nothing is zero-filled.
        buf.reserve(chunk);
        let read = match reader.read_buf(&mut buf).await {
            Ok(0) => Input::Ended(LinkFailure::Transport("connection closed by peer".into())),
            Ok(n) => {
                if n >= chunk && chunk < READ_CHUNK_MAX {
                    chunk = (chunk * 2).min(READ_CHUNK_MAX);
                }
                Input::Data(buf)
            }
            Err(e) => Input::Ended(LinkFailure::Transport(e.to_string())),
        };
        let ended = matches!(read, Input::Ended(_));
        if ended {
            let _ = input.send(read).await;
            return;
        }
        if input.send(read).await.is_err() {
            // The link is done with the connection: read on, discarding, until the peer ends
            // its side (the link's `Io::finish` bounds how long).
            let mut scrap = vec![0; 16 * 1024];
            while reader.read(&mut scrap).await.is_ok_and(|n| n > 0) {}
            return;
        }
    }
}

async fn write_loop(
    mut writer: WriteHalf<Box<dyn ByteStream>>,
    mut output: mpsc::Receiver<Buf>,
    outputs: Outputs,
    stall: Duration,
) {
    let Outputs {
        input,
        spares,
        pending,
    } = outputs;
    let stalled = || LinkFailure::Transport(format!("write stalled for {stall:?}"));
    while let Some(buf) = output.recv().await {
        let mut write = std::pin::pin!(tokio::time::timeout(stall, writer.write_all(&buf)));
        let written = std::future::poll_fn(|cx| {
            let poll = write.as_mut().poll(cx);
            if poll.is_pending() {
                // The connection is full: the network or the peer is the limit.
                pending.pushed_back.store(true, Ordering::Relaxed);
            }
            poll
        })
        .await;
        let failure = match written {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(LinkFailure::Transport(e.to_string())),
            Err(_) => Some(stalled()),
        };
        recycle(&spares, buf);
        // Flushed when nothing else is queued (a no-op on sockets, needed on buffered streams).
        let failure = match failure {
            None if output.is_empty() => match tokio::time::timeout(stall, writer.flush()).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(LinkFailure::Transport(e.to_string())),
                Err(_) => Some(stalled()),
            },
            failure => failure,
        };
        // Counted as finished only once flushed: the link holds partial writes back meanwhile.
        if pending.writes.fetch_sub(1, Ordering::AcqRel) == 1 {
            pending.idle.notify_one();
        }
        if let Some(failure) = failure {
            // Nothing queued behind the failed write is pending any more.
            gone(&pending);
            let _ = input.send(Input::Ended(failure)).await;
            return;
        }
    }
    gone(&pending);
    // The link is done with the connection: everything it gave is written.
    let _ = tokio::time::timeout(stall, writer.shutdown()).await;
}

/// The writer is gone: no write is pending, and whoever waits for that is told.
fn gone(pending: &Pending) {
    pending.writes.store(0, Ordering::Release);
    pending.idle.notify_one();
}
