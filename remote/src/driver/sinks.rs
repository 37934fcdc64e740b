//! What publishers and callers hold to reach a link task: peer-interest sinks with a credit
//! window, and the requester of a peer's services.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use dndm_core::{CallError, PayloadSink, RequestSink, Route, SinkError};
use tokio::sync::{Notify, mpsc, oneshot};

/// A publish of a local intent, queued for a link task.
pub(crate) struct Publish {
    pub(super) route: Route,
    pub(super) payload: Bytes,
    /// Given back when the message is settled or reported undelivered.
    pub(super) credit: Arc<Credit>,
}

/// The publishes queued for one link task: a locked list rather than a channel, so a burst
/// costs the link task one wake-up and one swap, not a channel operation per message. Its
/// length is bounded by the credits of the link's sinks. Other commands keep their channel;
/// the task takes the publishes queued before each of them first, so a flush still covers
/// every publish queued before it.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    queue: std::sync::Mutex<LaneQueue>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct LaneQueue {
    publishes: Vec<Publish>,
    closed: bool,
}

impl std::fmt::Debug for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish")
            .field("route", &self.route)
            .field("len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneQueue> {
        // A panic while holding the lock leaves the list whole: keep using it.
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `publish`; the link task is woken when the list was empty.
    fn push(&self, publish: Publish) -> Result<(), SinkError> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(SinkError::Closed);
        }
        let was_empty = queue.publishes.is_empty();
        queue.publishes.push(publish);
        drop(queue);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Moves what is queued to the end of `into`.
    pub(super) fn take(&self, into: &mut std::collections::VecDeque<Publish>) {
        let mut queue = self.lock();
        into.extend(queue.publishes.drain(..));
    }

    /// Publishes queued now.
    pub(super) fn len(&self) -> usize {
        self.lock().publishes.len()
    }

    /// Resolves when publishes were queued since the last wake-up (maybe already taken).
    pub(super) async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Refuses every later publish and returns those still queued.
    pub(super) fn close(&self) -> Vec<Publish> {
        let mut queue = self.lock();
        queue.closed = true;
        std::mem::take(&mut queue.publishes)
    }
}

/// A command for a link task.
pub(crate) enum Command {
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
    pub(super) fn new(window: usize) -> Self {
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

    pub(super) fn give_back(&self, count: usize) {
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
    lane: Arc<Lane>,
    credit: Arc<Credit>,
}

impl LinkSink {
    /// A sink for one peer interest, with room for `window` messages inside the link.
    pub(super) fn new(lane: Arc<Lane>, window: usize) -> Self {
        Self {
            lane,
            credit: Arc::new(Credit::new(window)),
        }
    }

    fn publish(&self, route: &Route, payload: Bytes) -> Publish {
        Publish {
            route: route.clone(),
            payload,
            credit: self.credit.clone(),
        }
    }
}

#[async_trait::async_trait]
impl PayloadSink for LinkSink {
    async fn send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        self.credit.take().await;
        let mut taken = Taken(Some(&self.credit));
        self.lane.push(self.publish(route, payload))?;
        taken.0 = None;
        Ok(())
    }

    fn try_send(&self, route: &Route, payload: Bytes) -> Result<(), SinkError> {
        if !self.credit.try_take() {
            return Err(SinkError::Full);
        }
        self.lane
            .push(self.publish(route, payload))
            .inspect_err(|_| {
                self.credit.give_back(1);
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

/// The credits of the messages inside a link, per route in queue order (run-length: one entry
/// per run of messages from one sink). A link has few routes, so a list beats hashing the
/// route on every message.
#[derive(Debug, Default)]
pub(crate) struct Credits {
    routes: Vec<(Route, Runs)>,
}

/// Runs of messages inside the link, oldest first: the credit they took, and how many.
type Runs = VecDeque<(Arc<Credit>, usize)>;

impl Credits {
    /// A message on `route` entered the session with `credit`.
    pub(super) fn take(&mut self, route: Route, credit: Arc<Credit>) {
        let at = match self.routes.iter().position(|(r, _)| *r == route) {
            Some(at) => at,
            None => {
                self.routes.push((route, VecDeque::new()));
                self.routes.len() - 1
            }
        };
        let queue = &mut self.routes[at].1;
        match queue.back_mut() {
            Some((last, count)) if Arc::ptr_eq(last, &credit) => *count += 1,
            _ => queue.push_back((credit, 1)),
        }
    }

    /// `count` messages on `route` left the link (settled or undelivered), oldest first.
    pub(super) fn give_back(&mut self, route: &Route, mut count: u64) {
        let Some(at) = self.routes.iter().position(|(r, _)| r == route) else {
            return;
        };
        let queue = &mut self.routes[at].1;
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
            self.routes.swap_remove(at);
        }
    }
}
