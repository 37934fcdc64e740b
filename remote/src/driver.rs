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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use dndm_codec::ResponseError;
use dndm_core::{
    CallError, PayloadSink, PeerId, RequestSink, Route, RouterPort, SinkError, Undelivered,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use crate::endpoint::{ByteStream, Ended, Handoff, Inner, LinkInfo, lock};
use crate::link::{Event, Link, LocalSet, Offer};
use crate::session::{Event as SessionEvent, LinkFailure, Session, SessionSendError};

/// Commands queued per link (publishes from local intents, requests, flushes). Bounded: a full
/// queue back-pressures the publishers (each only up to its send timeout).
pub(crate) const LINK_COMMANDS: usize = 1024;
/// Read buffer size per connection.
const READ_CHUNK: usize = 64 * 1024;
/// Most bytes read ahead while a write waits for the peer.
const READ_AHEAD: usize = 4 * 1024 * 1024;

/// A command for a link task.
pub(crate) enum Command {
    Publish {
        route: Route,
        payload: Bytes,
        /// Given back when the message is settled or reported undelivered.
        credit: Arc<Credit>,
    },
    /// A request to the peer's service on `route`; the answer goes to `reply`.
    Request {
        route: Route,
        payload: Bytes,
        reply: oneshot::Sender<Result<Bytes, CallError>>,
    },
    /// The answer to the peer's request `to` for the local service on `route`.
    Respond {
        route: Route,
        to: u64,
        result: Result<Bytes, CallError>,
    },
    /// Answer once the peer acknowledged everything queued before this command.
    Flush(oneshot::Sender<()>),
}

/// A window of messages a peer interest may have inside its link.
#[derive(Debug)]
pub(crate) struct Credit {
    used: AtomicUsize,
    window: usize,
    room: Notify,
}

impl Credit {
    pub(crate) fn new(window: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            window: window.max(1),
            room: Notify::new(),
        }
    }

    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used < self.window).then_some(used + 1)
            })
            .is_ok()
    }

    async fn take(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before checking: a give-back between the check and the wait wakes us.
            room.as_mut().enable();
            if self.try_take() {
                return;
            }
            room.await;
        }
    }

    fn give_back(&self, count: usize) {
        self.used.fetch_sub(count, Ordering::AcqRel);
        self.room.notify_waiters();
    }
}

/// Gives a credit back unless the message it was taken for entered the link.
struct Taken<'a>(Option<&'a Credit>);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(credit) = self.0 {
            credit.give_back(1);
        }
    }
}

/// The sink a peer's interest gets: queues publishes for the link task, within its credit.
#[derive(Debug)]
pub(crate) struct LinkSink {
    commands: mpsc::Sender<Command>,
    credit: Arc<Credit>,
}

#[async_trait::async_trait]
impl PayloadSink for LinkSink {
    async fn send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.credit.take().await;
        let mut taken = Taken(Some(&self.credit));
        let command = Command::Publish {
            route: route.clone(),
            payload,
            credit: self.credit.clone(),
        };
        self.commands
            .send(command)
            .await
            .map_err(|_| SinkError::Closed)?;
        taken.0 = None;
        Ok(())
    }

    fn try_send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        if !self.credit.try_take() {
            return Err(SinkError::Full);
        }
        let command = Command::Publish {
            route: route.clone(),
            payload,
            credit: self.credit.clone(),
        };
        self.commands.try_send(command).map_err(|e| {
            self.credit.give_back(1);
            match e {
                mpsc::error::TrySendError::Full(_) => SinkError::Full,
                mpsc::error::TrySendError::Closed(_) => SinkError::Closed,
            }
        })
    }
}

/// The sink a peer's service gets: queues requests for the link task.
#[derive(Debug)]
pub(crate) struct LinkRequester(pub(crate) mpsc::Sender<Command>);

#[async_trait::async_trait]
impl RequestSink for LinkRequester {
    async fn call(&self, route: &Route, payload: Bytes) -> Result<Bytes, CallError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Request {
            route: route.clone(),
            payload,
            reply,
        };
        self.0.send(command).await.map_err(|_| CallError::Closed)?;
        answer.await.map_err(|_| CallError::Closed)?
    }
}

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
    /// Credits of messages inside the link, per route in queue order (run-length).
    credits: HashMap<Route, VecDeque<(Arc<Credit>, usize)>>,
    /// Requests sent to the peer, waiting for their answers.
    pending: HashMap<u64, oneshot::Sender<Result<Bytes, CallError>>>,
    next_id: u64,
    flushes: HashMap<u64, oneshot::Sender<()>>,
    /// Resolves when a paused fan-in's subscriber made room.
    ready: Option<Ready>,
    rtt: Option<std::time::Duration>,
    peer_intents: Arc<[Route]>,
    peer_interests: Arc<[dndm_core::RoutePattern]>,
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
        credits: HashMap::new(),
        pending: HashMap::new(),
        next_id: 0,
        flushes: HashMap::new(),
        ready: None,
        rtt: None,
        peer_intents: Arc::from([]),
        peer_interests: Arc::from([]),
    };
    lock(&driver.inner.commands).insert(peer, driver.commands_tx.clone());
    driver.sync_local();
    let retired = driver.run().await;
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
            if self.link.session().is_closed() || self.inner.cancel.is_cancelled() {
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
                    self.link.close("endpoint closing", now());
                    if self.io.is_some() {
                        let _ = self.write_out().await;
                    }
                    self.dispatch();
                    return false;
                }
                command = self.commands.recv(), if can_send => {
                    if let Some(command) = command {
                        self.commands_batch(command).await;
                    }
                }
                changed = self.local.changed() => {
                    if changed.is_ok() { self.sync_local(); }
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

    /// Takes `first` and everything queued that the session accepts, so one batch (one
    /// encryption, one signature, one write) carries it all.
    async fn commands_batch(&mut self, first: Command) {
        if self.local.has_changed().unwrap_or(false) {
            // Route changes first: a publish may be for a route just added.
            self.sync_local();
        }
        let mut next = Some(first);
        let mut taken = 0usize;
        let mut lingered = false;
        loop {
            while let Some(command) = next {
                self.command(command);
                taken += 1;
                next = if self.link.can_send() {
                    self.commands.try_recv().ok()
                } else {
                    None
                };
            }
            // A busy publisher (more than one message was waiting): let it run once more
            // before sealing the batch. No timer: one yield.
            if lingered || taken < 2 || !self.link.can_send() {
                break;
            }
            lingered = true;
            tokio::task::yield_now().await;
            next = self.commands.try_recv().ok();
        }
    }

    fn command(&mut self, command: Command) {
        let t = now();
        match command {
            Command::Publish {
                route,
                payload,
                credit,
            } => match self.link.handle_publish(&route, payload, t) {
                Ok(()) => {
                    let queue = self.credits.entry(route).or_default();
                    match queue.back_mut() {
                        Some((last, count)) if Arc::ptr_eq(last, &credit) => *count += 1,
                        _ => queue.push_back((credit, 1)),
                    }
                }
                Err(e) => {
                    credit.give_back(1);
                    let reason = match e {
                        SessionSendError::TooLarge { .. } => Undelivered::TooLarge,
                        SessionSendError::Full => Undelivered::Timeout,
                        _ => Undelivered::Closed,
                    };
                    tracing::debug!(peer = %self.peer, %route, error = %e, "publish not sent");
                    self.undelivered(&route, 1, reason);
                }
            },
            Command::Request {
                route,
                payload,
                reply,
            } => {
                self.next_id += 1;
                let id = self.next_id;
                match self.link.handle_request(&route, payload, id, t) {
                    Ok(()) => {
                        // Callers that gave up leave their entry behind; forget those.
                        self.pending.retain(|_, reply| !reply.is_closed());
                        self.pending.insert(id, reply);
                    }
                    Err(SessionSendError::UnknownRoute(route)) => {
                        let _ = reply.send(Err(CallError::NoService(route)));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(CallError::Closed));
                    }
                }
            }
            Command::Respond { route, to, result } => {
                let result = result.map_err(|e| match e {
                    CallError::Handler(message) => ResponseError { code: 1, message },
                    other => ResponseError {
                        code: 2,
                        message: other.to_string(),
                    },
                });
                if let Err(e) = self.link.handle_respond(&route, to, result, t) {
                    tracing::debug!(peer = %self.peer, %route, error = %e, "response not sent");
                }
            }
            Command::Flush(done) => {
                self.next_id += 1;
                self.flushes.insert(self.next_id, done);
                self.link.handle_flush(self.next_id, t);
            }
        }
    }

    fn sync_local(&mut self) {
        let wanted = self.local.borrow_and_update().clone();
        self.link.handle_local(wanted, self.commands.len(), now());
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
                    let input = io.input.split();
                    self.link.handle_input(&input, t);
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
        while let Some(bytes) = self.link.poll_transmit(now()) {
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
            let input = io.input.split();
            self.link.handle_input(&input, now());
        }
        if let Some(failure) = ended {
            self.link.handle_transport_failure(failure, now());
        }
        Ok(())
    }

    /// Acts on the link's events; never waits.
    fn dispatch(&mut self) {
        let port = self.inner.port.get().cloned();
        let mut fed: Vec<Route> = Vec::new();
        let mut routes_changed = false;
        while let Some(event) = self.link.poll_event() {
            match event {
                Event::Session(event) => {
                    routes_changed |= matches!(
                        event,
                        SessionEvent::PeerIntentAdded(_)
                            | SessionEvent::PeerIntentRemoved(_)
                            | SessionEvent::PeerInterestAdded(_)
                            | SessionEvent::PeerInterestRemoved(_)
                    );
                    self.session_event(event, port.as_deref(), &mut fed);
                }
                Event::ConnectionEnded {
                    opened,
                    failure,
                    decrypt_failed,
                } => self.connection_ended(opened, failure, decrypt_failed),
                Event::Flushed(id) => {
                    if let Some(done) = self.flushes.remove(&id) {
                        let _ = done.send(());
                    }
                }
                Event::Retired => {
                    tracing::info!(peer = %self.peer, "peer away past its grace period; retired");
                    if let Some(port) = &port {
                        port.remove_peer(&self.peer);
                    }
                    self.fan_ins.clear();
                    self.ready = None;
                    for (_, reply) in self.pending.drain() {
                        let _ = reply.send(Err(CallError::Closed));
                    }
                    lock(&self.inner.stats).retired_peers += 1;
                    self.inner.link_state.send_modify(|v| *v += 1);
                    routes_changed = true;
                }
            }
        }
        if routes_changed {
            self.peer_intents = self.link.session().peer_intents().into();
            self.peer_interests = self.link.session().peer_interests().into();
        }
        // A peer's messages that wait for a full subscriber pause that route at the peer.
        let t = now();
        let mut paused = false;
        for route in fed {
            if let Some(sink) = self.fan_ins.get(&route) {
                let backlog = sink.backlog();
                paused |= backlog > 0;
                self.link.handle_backlog(&route, backlog, t);
            }
        }
        if paused && self.ready.is_none() {
            self.arm_ready();
        }
        self.report();
    }

    fn session_event(
        &mut self,
        event: SessionEvent,
        port: Option<&dyn RouterPort>,
        fed: &mut Vec<Route>,
    ) {
        match event {
            SessionEvent::Message { route, payload, .. } => {
                if let Some(sink) = self.fan_ins.get(&route) {
                    match sink.try_send(&route, payload) {
                        Err(SinkError::Full) => lock(&self.inner.stats).flow_overruns += 1,
                        Err(e @ SinkError::Decode { .. }) => {
                            tracing::debug!(peer = %self.peer, %route, error = %e, "message does not decode");
                        }
                        _ => {}
                    }
                    if fed.last() != Some(&route) {
                        fed.push(route);
                    }
                }
            }
            SessionEvent::PeerIntentAdded(ad) => {
                let route = ad.route.clone();
                match port.map(|p| p.add_peer_intent(&self.peer, ad)) {
                    Some(Ok(sink)) => {
                        self.fan_ins.insert(route, sink);
                    }
                    Some(Err(e)) => {
                        tracing::warn!(peer = %self.peer, %route, error = %e, "peer intent refused");
                        lock(&self.inner.stats).refused_routes += 1;
                    }
                    None => {}
                }
            }
            SessionEvent::PeerIntentRemoved(route) => {
                self.fan_ins.remove(&route);
                self.link.handle_backlog(&route, 0, now());
                if let Some(port) = port {
                    port.remove_peer_intent(&self.peer, &route);
                }
            }
            SessionEvent::PeerInterestAdded(ad) => {
                let sink: Arc<dyn PayloadSink> = Arc::new(LinkSink {
                    commands: self.commands_tx.clone(),
                    credit: Arc::new(Credit::new(self.inner.config.route_window)),
                });
                if let Some(Err(e)) = port.map(|p| p.add_peer_interest(&self.peer, ad, sink)) {
                    tracing::warn!(peer = %self.peer, error = %e, "peer interest refused");
                    lock(&self.inner.stats).refused_routes += 1;
                }
            }
            SessionEvent::PeerInterestRemoved(pattern) => {
                if let Some(port) = port {
                    port.remove_peer_interest(&self.peer, &pattern);
                }
            }
            SessionEvent::PeerServiceAdded(ad) => {
                let sink: Arc<dyn RequestSink> = Arc::new(LinkRequester(self.commands_tx.clone()));
                if let Some(port) = port {
                    port.add_peer_service(&self.peer, ad, sink);
                }
            }
            SessionEvent::PeerServiceRemoved(route) => {
                if let Some(port) = port {
                    port.remove_peer_service(&self.peer, &route);
                }
            }
            SessionEvent::Request { route, id, payload } => {
                if let Some(port) = port {
                    let answer = port.handle_request(&self.peer, &route, payload);
                    let commands = self.commands_tx.clone();
                    // Answered in its own task: a slow handler must not stall the link.
                    self.inner.tracker.spawn(async move {
                        let result = answer.await;
                        let _ = commands
                            .send(Command::Respond {
                                route,
                                to: id,
                                result,
                            })
                            .await;
                    });
                }
            }
            SessionEvent::Response { id, result } => {
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(result.map_err(|e| CallError::Handler(e.message)));
                }
            }
            SessionEvent::Settled { route, count } => self.give_back(&route, count),
            SessionEvent::Undelivered {
                route,
                count,
                reason,
            } => {
                self.give_back(&route, count);
                self.undelivered(&route, count, reason);
            }
            SessionEvent::Rtt(rtt) => self.rtt = Some(rtt),
            SessionEvent::Established { resumed, .. } => {
                tracing::debug!(resumed, "session established");
                // Shown connected before the peer's routes are linked (they follow this
                // event): whoever a link wakes sees the link up.
                self.report();
            }
            SessionEvent::Closed {
                by_peer, reason, ..
            } => tracing::info!(peer = %self.peer, by_peer, %reason, "link closed"),
            _ => {}
        }
    }

    /// Gives back the credits of `count` messages on `route`, oldest first.
    fn give_back(&mut self, route: &Route, mut count: u64) {
        let Some(queue) = self.credits.get_mut(route) else {
            return;
        };
        while count > 0 {
            let Some((credit, held)) = queue.front_mut() else {
                break;
            };
            let n = (*held as u64).min(count);
            credit.give_back(n as usize);
            *held -= n as usize;
            count -= n;
            if *held == 0 {
                queue.pop_front();
            }
        }
        if queue.is_empty() {
            self.credits.remove(route);
        }
    }

    fn undelivered(&self, route: &Route, count: u64, reason: Undelivered) {
        lock(&self.inner.stats).undelivered += count;
        if let Some(port) = self.inner.port.get() {
            port.report_undelivered(&self.peer, route, count, reason);
        }
    }

    fn connection_ended(&mut self, opened: bool, failure: Option<LinkFailure>, decrypt: bool) {
        if let Some(failure) = &failure {
            let mut stats = lock(&self.inner.stats);
            stats.link_failures += 1;
            match failure {
                _ if decrypt => stats.decrypt_failures += 1,
                LinkFailure::Signature(_) => stats.signature_failures += 1,
                LinkFailure::Decode(_) | LinkFailure::Protocol(_) => stats.bad_frames += 1,
                _ => {}
            }
            drop(stats);
            tracing::debug!(peer = %self.peer, %failure, "connection lost");
        }
        if let Some(io) = self.io.take()
            && let Some(done) = io.done
        {
            let _ = done.send(Ended { opened, failure });
        }
        lock(&self.inner.active).remove(&self.peer);
    }

    /// Pumps every paused fan-in whose subscriber made room; resumes the routes that drained.
    fn pump_fan_ins(&mut self) {
        let t = now();
        let paused: Vec<Route> = self.link.paused_routes().cloned().collect();
        for route in paused {
            let left = self.fan_ins.get(&route).map_or(0, |sink| sink.pump());
            self.link.handle_backlog(&route, left, t);
        }
        self.arm_ready();
    }

    fn arm_ready(&mut self) {
        let sinks: Vec<Arc<dyn PayloadSink>> = self
            .link
            .paused_routes()
            .filter_map(|route| self.fan_ins.get(route).cloned())
            .collect();
        self.ready = (!sinks.is_empty()).then(|| -> Ready {
            Box::pin(async move {
                let mut waits: Vec<_> = sinks.iter().map(|sink| sink.ready()).collect();
                // The first subscriber with room ends the wait.
                std::future::poll_fn(|cx| {
                    if waits
                        .iter_mut()
                        .any(|wait| wait.as_mut().poll(cx).is_ready())
                    {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
            })
        });
    }

    /// Publishes this link's state for [`RemoteEndpoint::links`](crate::endpoint::RemoteEndpoint::links).
    fn report(&self) {
        let session = self.link.session();
        let info = LinkInfo {
            peer: self.peer,
            connected: session.is_open(),
            rtt: self.rtt,
            stats: session.stats(),
            peer_intents: self.peer_intents.clone(),
            peer_interests: self.peer_interests.clone(),
            unacked: (self.commands.len() + session.queued() + session.unacked_batches()) as u64,
        };
        let state = |i: &LinkInfo| {
            let s = &i.stats;
            let flow = s.pauses_sent + s.pauses_received;
            (i.connected, s.failures, i.unacked == 0, flow)
        };
        let now = state(&info);
        let previous = lock(&self.inner.infos).insert(self.peer, info);
        // Wake watchers only on state changes, not on every batch's counters.
        let changed = previous.is_none_or(|p| state(&p) != now);
        if changed {
            self.inner.link_state.send_modify(|v| *v += 1);
        }
    }

    /// Takes this link out of the endpoint (`links` locked), closing its connection queue: new
    /// connections of the peer start a new link. Call once, right before the task ends.
    fn retire(&mut self, links: &mut HashMap<PeerId, mpsc::Sender<Handoff>>) {
        // Under the links lock, like `hand_off`'s send: no connection is queued after this,
        // and while this link's open queue is in `links` no other link of the peer exists.
        links.remove(&self.peer);
        lock(&self.inner.infos).remove(&self.peer);
        lock(&self.inner.commands).remove(&self.peer);
        self.connections.close();
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
