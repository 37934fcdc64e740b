//! Commands from publishers and callers, fed to the link machine in order.

use dndm_codec::ResponseError;
use dndm_core::{BudgetKind, CallError, Undelivered};

use super::{Command, Driver, Publish, now};
use crate::endpoint::lock;
use crate::session::SessionSendError;

impl Driver {
    /// Takes `first` and everything queued that the session accepts, so one batch (one
    /// encryption, one signature, one write) carries it all.
    pub(super) async fn commands_batch(&mut self, first: Option<Command>) {
        if self.local.has_changed().unwrap_or(false) {
            // Route changes first: a publish may be for a route just added.
            // `first` was queued before the change too: it counts among what goes out first.
            self.sync_local(usize::from(first.is_some()));
        }
        let mut next = first;
        let mut taken = 0usize;
        let mut lingered = false;
        // One clock read per batch: the commands of one wake-up happen at once.
        let t = now();
        loop {
            while let Some(command) = next {
                // The publishes queued before this command go first.
                taken += self.publishes();
                if !self.backlog.is_empty() || !self.deferred.is_empty() || !self.link.can_send() {
                    self.deferred.push_back(command);
                    return;
                }
                self.command(command, t);
                taken += 1;
                next = if self.link.can_send() {
                    self.commands.try_recv().ok()
                } else {
                    None
                };
            }
            taken += self.publishes();
            // A busy publisher (more than one message was waiting): let it run once more
            // before sealing the batch. No timer: one yield.
            if lingered || taken < 2 || !self.link.can_send() {
                break;
            }
            lingered = true;
            tokio::task::yield_now().await;
            taken += self.publishes();
            next = if self.backlog.is_empty() {
                self.commands.try_recv().ok()
            } else {
                None
            };
        }
    }

    /// Feeds the session what waits: the publishes held back (it was full), then those queued
    /// in the lane, then commands that arrived behind held-back publishes, while it takes
    /// them; returns how many went in.
    pub(super) fn publishes(&mut self) -> usize {
        let t = now();
        let mut taken = 0;
        loop {
            if self.backlog.is_empty() {
                self.lane.take(&mut self.backlog);
            }
            while self.link.can_send() {
                let Some(publish) = self.backlog.pop_front() else {
                    break;
                };
                self.publish(publish, t);
                taken += 1;
            }
            if !self.backlog.is_empty() || !self.link.can_send() {
                return taken;
            }
            // Commands wait behind publishes queued before them.
            let Some(command) = self.deferred.pop_front() else {
                return taken;
            };
            self.command(command, t);
            taken += 1;
        }
    }

    pub(super) fn publish(&mut self, publish: Publish, t: std::time::Instant) {
        let Publish {
            route,
            payload,
            credit,
        } = publish;
        match self.link.handle_publish(&route, payload, t) {
            Ok(()) => self.credits.take(route, credit),
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
        }
    }

    pub(super) fn command(&mut self, command: Command, t: std::time::Instant) {
        match command {
            Command::Request {
                route,
                payload,
                reply,
            } => {
                self.next_id += 1;
                let id = self.next_id;
                let budget = self.inner.config.session.budget.pending_requests;
                if self.pending.len() >= budget {
                    // Callers that gave up leave their entry behind; forget those (amortised:
                    // only when the budget is reached).
                    self.pending.retain(|_, reply| !reply.is_closed());
                }
                if self.pending.len() >= budget {
                    lock(&self.inner.stats)
                        .over_budget
                        .add(BudgetKind::PendingRequests);
                    let _ = reply.send(Err(CallError::Busy(format!(
                        "{budget} requests to {} wait for answers ({})",
                        self.peer,
                        BudgetKind::PendingRequests
                    ))));
                    return;
                }
                match self.link.handle_request(&route, payload, id, t) {
                    Ok(()) => {
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
                let result = result.map_err(response_error);
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

    /// Applies the endpoint's route set; `in_hand` commands already taken from the queue
    /// were queued before the change as well.
    pub(super) fn sync_local(&mut self, in_hand: usize) {
        let wanted = self.local.borrow_and_update().clone();
        let queued = self.commands.len()
            + self.lane.len()
            + self.backlog.len()
            + self.deferred.len()
            + in_hand;
        self.link.handle_local(wanted, queued, now());
    }
}

/// A local service's failure as the peer receives it.
pub(super) fn response_error(error: CallError) -> ResponseError {
    let (code, message) = match error {
        CallError::Handler(message) => (ResponseError::HANDLER, message),
        CallError::Busy(message) => (ResponseError::BUSY, message),
        CallError::Denied(message) => (ResponseError::DENIED, message),
        other => (ResponseError::FAILED, other.to_string()),
    };
    ResponseError { code, message }
}

/// A peer service's failure as the local caller receives it.
pub(super) fn call_error(error: ResponseError) -> CallError {
    match error.code {
        ResponseError::BUSY => CallError::Busy(error.message),
        ResponseError::DENIED => CallError::Denied(error.message),
        _ => CallError::Handler(error.message),
    }
}
