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

use bytes::Bytes;
use dndm_core::{CallError, PayloadSink, PeerId, Route};
use tokio::sync::{mpsc, oneshot, watch};

use crate::endpoint::{Handoff, Inner, lock};
use crate::link::{Link, LocalSet, Offer};
use crate::session::Session;

mod commands;
mod events;
mod io;
mod sinks;

use io::{Input, Io, Wait};

pub(crate) use sinks::{Command, Credits, Lane, LinkRequester, LinkSink, Publish};

/// Commands queued per link (requests, answers, flushes; publishes go through the lane, bounded
/// by their sinks' credits). Bounded: a full queue back-pressures the callers.
pub(crate) const LINK_COMMANDS: usize = 1024;

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
    /// Publishes of local intents, queued by the peer-interest sinks.
    lane: Arc<Lane>,
    /// Publishes taken from the lane that the session had no room for yet, in order.
    backlog: std::collections::VecDeque<Publish>,
    /// Commands that arrived behind the backlog, in order.
    deferred: std::collections::VecDeque<Command>,
    local: watch::Receiver<LocalSet>,
    /// Fan-in sinks of the peer's intents.
    fan_ins: crate::FastMap<Route, Arc<dyn PayloadSink>>,
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
        lane: Arc::new(Lane::default()),
        backlog: std::collections::VecDeque::new(),
        deferred: std::collections::VecDeque::new(),
        fan_ins: crate::FastMap::default(),
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
    let left = driver.lane.close();
    driver.backlog.extend(left);
    driver.drain_commands();
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
            let wait = self.write_out(true);
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
            let can_send = self.link.can_send();
            if can_send && (!self.backlog.is_empty() || !self.deferred.is_empty()) {
                // The session made room for what was held back.
                self.commands_batch(None).await;
                continue;
            }
            // Past this point nothing is held back while the session has room, so commands
            // never overtake earlier publishes.
            let deadline = self.link.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                () = self.inner.cancel.cancelled() => {
                    self.close().await;
                    return false;
                }
                command = self.commands.recv(), if can_send => {
                    if let Some(command) = command {
                        self.commands_batch(Some(command)).await;
                    }
                }
                () = self.lane.ready(), if can_send => self.commands_batch(None).await,
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
                input = next_input(&mut self.io, wait) => {
                    if let Some(input) = input { self.on_input(input); }
                }
                () = sleep_until(deadline) => self.link.handle_timeout(now()),
            }
        }
    }

    /// Closes the session in order: commands already queued go in first (what the session
    /// cannot send is reported undelivered), then the peer gets our Close.
    async fn close(&mut self) {
        self.drain_commands();
        self.link.close("endpoint closing", now());
        // Everything the link has goes to the writer, which finishes it after we are gone
        // (within its stall timeout: the endpoint's close waits for it).
        let stall = self.inner.config.session.idle_timeout;
        let deadline = tokio::time::Instant::now() + stall;
        loop {
            // No corking: the writer gets everything now, to finish after we are gone.
            let wait = self.write_out(false);
            if wait == Wait::Input {
                break;
            }
            // Reads meanwhile go to the link (they may carry acks that make room).
            match tokio::time::timeout_at(deadline, next_input(&mut self.io, wait)).await {
                Ok(Some(input)) => self.on_input(input),
                Ok(None) => {}
                Err(_) => break,
            }
        }
        self.dispatch();
    }

    /// Feeds the session every publish and command queued, in order, whether or not it has
    /// room (what it refuses is reported undelivered).
    fn drain_commands(&mut self) {
        let t = now();
        loop {
            self.lane.take(&mut self.backlog);
            if let Some(publish) = self.backlog.pop_front() {
                self.publish(publish, t);
            } else if let Some(command) = self
                .deferred
                .pop_front()
                .or_else(|| self.commands.try_recv().ok())
            {
                self.command(command, t);
            } else {
                return;
            }
        }
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
        self.io = Some(Io::start(
            io,
            done,
            self.inner.config.session.idle_timeout,
            &self.inner.tracker,
        ));
        lock(&self.inner.active).insert(self.peer);
        // Watchers of `has_connection` learn of it.
        self.inner.link_state.send_modify(|v| *v += 1);
        self.link.handle_connect(channel, rest, preferred, now());
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Data(buf) => {
                // Before the acks this input may carry, which measure the link.
                if let Some(io) = &self.io {
                    self.link
                        .handle_transport(io.writes_pending() > 0, io.take_pushback());
                }
                self.link.handle_input(&buf, now());
                if let Some(io) = &self.io {
                    io.recycle_read(buf);
                }
            }
            Input::Ended(failure) => self.link.handle_transport_failure(failure, now()),
        }
    }

    /// Hands what the link has to the writer while it has room, and says what to wait for.
    ///
    /// While the writer is busy, a partial write waits (autocorking): it could not go out
    /// sooner anyway, and what the publishers add meanwhile joins its batches. A whole write's
    /// worth goes at once, so large messages keep the writer fed without a pause.
    fn write_out(&mut self, cork: bool) -> Wait {
        let t = now();
        loop {
            let Some(io) = self.io.as_mut() else {
                return Wait::Input;
            };
            if cork && io.writes_pending() > 0 && !self.link.has_full_write() {
                return Wait::Idle;
            }
            let Some((slot, mut buf)) = io.try_reserve() else {
                return Wait::Room;
            };
            if self.link.poll_transmit_into(t, &mut buf) {
                slot.send(buf);
            } else {
                drop(slot);
                io.keep(buf);
                return Wait::Input;
            }
        }
    }
}

/// The next input of the connection (`None`: what `wait` names happened first), or never
/// without a connection.
async fn next_input(io: &mut Option<Io>, wait: Wait) -> Option<Input> {
    match io {
        Some(io) => io.next(wait).await,
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
