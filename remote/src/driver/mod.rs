//! The tokio driver of one peer link: runs a [`Link`] over the connections handed to it.
//!
//! One task per peer owns the link's state machine for the link's whole life. It waits in one
//! `select!` (shutdown first, then local work before the peer's: commands, route changes, new
//! connections, subscribers that made room, bytes read, the timer), feeds what happened to the
//! machine, writes what the machine has, and hands the machine's events to the router. It
//! never awaits the router or a subscriber: a peer's messages go into local queues with
//! `try_send`, and a full `Block` subscriber pauses only that route, by flow control on the
//! wire. Writes are bounded by the idle timeout, so a silent peer cannot hold the task.
//!
//! Publishers reach the task through [`LinkSink`]s, one per peer interest, each with a credit
//! window: a message takes a credit when it enters the link and gives it back when it is
//! settled (acknowledged, or sent for best effort) or reported undelivered. A sink without
//! credit is full, so a peer that is away or slow holds a publisher at most its send timeout.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dndm_core::{CallError, PayloadSink, PeerId, Route};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::endpoint::{ByteStream, Ended, Handoff, Inner, lock};
use crate::link::{Link, LocalSet, Offer};
use crate::session::{LinkFailure, Session};

mod commands;
mod events;
mod sinks;

pub(crate) use sinks::{Command, Credits, LinkRequester, LinkSink};

/// Commands queued per link (publishes from local intents, requests, flushes). Bounded: a full
/// queue back-pressures the publishers (each only up to its send timeout).
pub(crate) const LINK_COMMANDS: usize = 1024;
/// Read buffer size per connection at first.
const READ_CHUNK: usize = 64 * 1024;
/// Largest read buffer: a connection whose reads fill the buffer gets a larger one, so a
/// 64 KiB Noise message rarely straddles two reads (a straddling one is copied once more).
const READ_CHUNK_MAX: usize = 256 * 1024;
/// Most bytes read ahead while a write waits for the peer.
const READ_AHEAD: usize = 4 * 1024 * 1024;

/// The I/O of the connection the link runs now.
struct Io {
    reader: ReadHalf<Box<dyn ByteStream>>,
    writer: WriteHalf<Box<dyn ByteStream>>,
    /// Bytes read and not yet given to the link.
    input: BytesMut,
    /// How the connection ended while a write waited (read ahead), not yet told to the link.
    ended: Option<LinkFailure>,
    /// Told how the connection ended (dial loops wait on it).
    done: Option<oneshot::Sender<Ended>>,
}

type Ready = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One peer link's task state.
struct Driver {
    inner: Arc<Inner>,
    peer: PeerId,
    link: Link,
    io: Option<Io>,
    /// A connection waiting for the current one to end.
    next: Option<Handoff>,
    connections: mpsc::Receiver<Handoff>,
    commands_tx: mpsc::Sender<Command>,
    commands: mpsc::Receiver<Command>,
    local: watch::Receiver<LocalSet>,
    /// Fan-in sinks of the peer's intents.
    fan_ins: HashMap<Route, Arc<dyn PayloadSink>>,
    /// Fan-ins of intents the peer withdrew while they still held messages for a full
    /// subscriber: the peer had them acknowledged, so they are delivered before the fan-in goes.
    draining: HashMap<Route, Arc<dyn PayloadSink>>,
    /// Credits of messages inside the link.
    credits: Credits,
    /// Permits for the peer's requests served at once (`budget.requests`).
    serving: Arc<tokio::sync::Semaphore>,
    /// Requests sent to the peer, waiting for their answers.
    pending: HashMap<u64, oneshot::Sender<Result<Bytes, CallError>>>,
    next_id: u64,
    flushes: HashMap<u64, oneshot::Sender<()>>,
    /// Resolves when a paused fan-in's subscriber made room.
    ready: Option<Ready>,
    rtt: Option<std::time::Duration>,
    peer_intents: Arc<[Route]>,
    peer_interests: Arc<[dndm_core::RoutePattern]>,
    /// Set once the link left the endpoint: it reports nothing more.
    gone: bool,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Runs the link to `peer` until the endpoint closes, the session closes, or a peer that never
/// got through a hello has no connection left.
pub(crate) async fn link_task(
    inner: Arc<Inner>,
    peer: PeerId,
    connections: mpsc::Receiver<Handoff>,
) {
    let (commands_tx, commands) = mpsc::channel(LINK_COMMANDS);
    let config = &inner.config;
    let session = Session::new(config.session.clone(), inner.keypair.clone(), inner.epoch);
    let serving = Arc::new(tokio::sync::Semaphore::new(config.session.budget.requests));
    let link = Link::new(
        inner.keypair.peer_id(),
        peer,
        inner.binding,
        session,
        config.session.limits,
        config.peer_grace,
    );
    let mut driver = Driver {
        local: inner.local.subscribe(),
        inner,
        peer,
        link,
        io: None,
        next: None,
        connections,
        commands_tx,
        commands,
        fan_ins: HashMap::new(),
        draining: HashMap::new(),
        credits: Credits::default(),
        serving,
        pending: HashMap::new(),
        next_id: 0,
        flushes: HashMap::new(),
        ready: None,
        rtt: None,
        peer_intents: Arc::from([]),
        peer_interests: Arc::from([]),
        gone: false,
    };
    lock(&driver.inner.commands).insert(peer, driver.commands_tx.clone());
    driver.sync_local(0);
    let retired = driver.run().await;
    // Nothing queued for the link ends unaccounted: the closed session refuses each command,
    // and a refused publish is reported undelivered.
    driver.commands.close();
    while let Ok(command) = driver.commands.try_recv() {
        driver.command(command, now());
    }
    driver.dispatch();
    // Withdraw the peer's routes while this link is still the peer's: once it leaves `links`,
    // a new link of the peer may register routes that `remove_peer` must not touch.
    if !retired {
        if let Some(port) = driver.inner.port.get() {
            port.remove_peer(&peer);
        }
        let inner = driver.inner.clone();
        driver.retire(&mut lock(&inner.links));
    }
    for (_, reply) in driver.pending.drain() {
        let _ = reply.send(Err(CallError::Closed));
    }
    driver.inner.link_state.send_modify(|v| *v += 1);
}

impl Driver {
    /// The loop; true when it already retired the link (a peer that never got through a hello).
    async fn run(&mut self) -> bool {
        loop {
            if self.io.is_some()
                && let Err(failure) = self.write_out().await
            {
                self.link.handle_transport_failure(failure, now());
            }
            self.dispatch();
            if self.inner.cancel.is_cancelled() {
                self.close().await;
                return false;
            }
            if self.link.session().is_closed() {
                return false;
            }
            if self.io.is_none() {
                if let Some(next) = self
                    .next
                    .take()
                    .or_else(|| self.connections.try_recv().ok())
                {
                    self.adopt(next);
                    continue;
                }
                // A peer that never got through a hello keeps no link: otherwise every identity
                // that passes the handshake once would leave a task and a session behind.
                if self.link.session().peer().is_none() {
                    let inner = self.inner.clone();
                    let mut links = lock(&inner.links);
                    match self.connections.try_recv() {
                        Ok(next) => self.next = Some(next),
                        Err(_) => {
                            self.retire(&mut links);
                            return true;
                        }
                    }
                    continue;
                }
            }
            let deadline = self.link.poll_timeout().map(tokio::time::Instant::from_std);
            let can_send = self.link.can_send();
            tokio::select! {
                biased;
                () = self.inner.cancel.cancelled() => {
                    self.close().await;
                    return false;
                }
                command = self.commands.recv(), if can_send => {
                    if let Some(command) = command {
                        self.commands_batch(command).await;
                    }
                }
                changed = self.local.changed() => {
                    if changed.is_ok() { self.sync_local(0); }
                }
                handoff = self.connections.recv(), if self.next.is_none() => {
                    if let Some(handoff) = handoff { self.offer(handoff); }
                }
                () = ready(&mut self.ready) => {
                    self.ready = None;
                    self.pump_fan_ins();
                }
                read = read_some(&mut self.io) => self.on_read(read),
                () = sleep_until(deadline) => self.link.handle_timeout(now()),
            }
        }
    }

    /// Closes the session in order: commands already queued go in first (what the session
    /// cannot send is reported undelivered), then the peer gets our Close.
    async fn close(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            self.command(command, now());
        }
        self.link.close("endpoint closing", now());
        if self.io.is_some() {
            let _ = self.write_out().await;
        }
        self.dispatch();
    }

    fn offer(&mut self, handoff: Handoff) {
        match self.link.offer(handoff.preferred) {
            Offer::Adopt => self.adopt(handoff),
            Offer::Queue | Offer::Supersede => self.next = Some(handoff),
            Offer::Refuse => {
                tracing::debug!(peer = %self.peer, "connection from both sides; keeping ours");
            }
        }
    }

    fn adopt(&mut self, handoff: Handoff) {
        let Handoff {
            io,
            channel,
            rest,
            done,
            preferred,
        } = handoff;
        let (reader, writer) = tokio::io::split(io);
        self.io = Some(Io {
            reader,
            writer,
            input: BytesMut::with_capacity(READ_CHUNK),
            ended: None,
            done,
        });
        lock(&self.inner.active).insert(self.peer);
        // Watchers of `has_connection` learn of it.
        self.inner.link_state.send_modify(|v| *v += 1);
        self.link.handle_connect(channel, rest, preferred, now());
    }

    fn on_read(&mut self, read: std::io::Result<usize>) {
        let t = now();
        match read {
            Ok(0) => self.link.handle_transport_failure(
                LinkFailure::Transport("connection closed by peer".into()),
                t,
            ),
            Ok(_) => {
                if let Some(io) = self.io.as_mut() {
                    let filled = io.input.len() >= io.input.capacity();
                    // Cleared, not split: the buffer keeps its capacity for the next read.
                    self.link.handle_input(&io.input, t);
                    io.input.clear();
                    if filled && io.input.capacity() < READ_CHUNK_MAX {
                        io.input
                            .reserve((io.input.capacity() * 2).min(READ_CHUNK_MAX));
                    }
                }
            }
            Err(e) => self
                .link
                .handle_transport_failure(LinkFailure::Transport(e.to_string()), t),
        }
    }

    /// Writes what the link has. While a write waits for the peer to read, this keeps reading
    /// (up to a bound), so two peers writing to each other at once cannot deadlock. A write that
    /// makes no progress for the idle timeout fails the connection.
    async fn write_out(&mut self) -> Result<(), LinkFailure> {
        let stall = self.inner.config.session.idle_timeout;
        let stalled = || LinkFailure::Transport(format!("write stalled for {stall:?}"));
        let t = now();
        while let Some(bytes) = self.link.poll_transmit(t) {
            let Some(io) = self.io.as_mut() else {
                return Ok(());
            };
            let deadline = tokio::time::Instant::now() + stall;
            let mut write = std::pin::pin!(io.writer.write_all(&bytes));
            loop {
                tokio::select! {
                    biased;
                    written = &mut write => {
                        written.map_err(|e| LinkFailure::Transport(e.to_string()))?;
                        break;
                    }
                    read = io.reader.read_buf(&mut io.input), if io.ended.is_none() && io.input.len() < READ_AHEAD => {
                        match read {
                            Ok(0) => io.ended = Some(LinkFailure::Transport("connection closed by peer".into())),
                            Ok(_) => {}
                            Err(e) => io.ended = Some(LinkFailure::Transport(e.to_string())),
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => return Err(stalled()),
                }
            }
        }
        let Some(io) = self.io.as_mut() else {
            return Ok(());
        };
        match tokio::time::timeout(stall, io.writer.flush()).await {
            Ok(flushed) => flushed.map_err(|e| LinkFailure::Transport(e.to_string()))?,
            Err(_) => return Err(stalled()),
        }
        // What arrived while we were writing.
        let ended = io.ended.take();
        if !io.input.is_empty() {
            self.link.handle_input(&io.input, now());
            io.input.clear();
        }
        if let Some(failure) = ended {
            self.link.handle_transport_failure(failure, now());
        }
        Ok(())
    }
}

/// Reads from the connection, or waits forever without one.
async fn read_some(io: &mut Option<Io>) -> std::io::Result<usize> {
    match io {
        Some(io) => io.reader.read_buf(&mut io.input).await,
        None => std::future::pending().await,
    }
}

/// Waits for a paused fan-in to have room, or forever when none is paused.
async fn ready(ready: &mut Option<Ready>) {
    match ready {
        Some(ready) => ready.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
