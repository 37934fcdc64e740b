//! The link machine's events, handed to the router without waiting.

use std::collections::HashMap;
use std::sync::Arc;

use dndm_core::{
    BudgetKind, CallError, PayloadSink, PeerId, RequestSink, Route, RouterPort, SinkError,
    Undelivered,
};
use tokio::sync::mpsc;

use super::commands::{call_error, response_error};
use super::{Command, Driver, LinkRequester, LinkSink, Ready, now};
use crate::endpoint::{Ended, Handoff, PeerLink, lock};
use crate::link::Event;
use crate::session::{Event as SessionEvent, LinkFailure};

impl Driver {
    /// Acts on the link's events; never waits.
    pub(super) fn dispatch(&mut self) {
        let port = self.inner.port.get().cloned();
        let mut flushed = Vec::new();
        let mut fed: Vec<Route> = Vec::new();
        let mut routes_changed = false;
        while let Some(event) = self.next_event() {
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
                Event::Flushed(id) => flushed.push(id),
                Event::Retired => {
                    tracing::info!(peer = %self.peer, "peer away past its grace period; retired");
                    if let Some(port) = &port {
                        port.remove_peer(&self.peer);
                    }
                    // Its routes are gone from the router, with whatever their fan-ins held.
                    self.fan_ins.clear();
                    self.draining.clear();
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
        // A subscriber of the peer's messages that is nearly full (or full, holding messages
        // back) pauses that route at the peer.
        let t = now();
        let mut paused = false;
        for route in fed {
            if let Some(sink) = self.fan_ins.get(&route) {
                let pressure = pressure(&**sink);
                paused |= pressure > 0;
                self.link.handle_backlog(&route, pressure, t);
                // What our subscribers made of it goes back to the publisher.
                self.link.handle_feedback(&route, sink.feedback(), t);
            }
        }
        if paused && self.ready.is_none() {
            self.arm_ready();
        }
        if paused {
            self.check_held(t);
        }
        self.report();
        if routes_changed {
            // Watchers of `links()` see the peer's new route set.
            self.inner.link_state.send_modify(|v| *v += 1);
        }
        // Answered after the report: whoever a flush wakes sees `links()` up to date.
        for id in flushed {
            if let Some(done) = self.flushes.remove(&id) {
                let _ = done.send(());
            }
        }
    }

    /// Closes the connection of a peer whose messages held for full subscribers (it was asked
    /// to pause those routes) pass `budget.held_bytes`.
    fn check_held(&mut self, t: std::time::Instant) {
        let limit = self.inner.config.session.budget.held_bytes;
        let held: usize = self
            .link
            .paused_routes()
            .filter_map(|route| self.fan_in(route))
            .map(|sink| sink.held_bytes())
            .sum();
        if held > limit {
            let failure = LinkFailure::OverBudget {
                budget: BudgetKind::HeldBytes,
                limit,
                what: format!("{held} bytes held for full subscribers on paused routes"),
            };
            self.link.handle_transport_failure(failure, t);
        }
    }

    /// The link's next event; frames that waited for the decoded-bytes budget are decoded
    /// once what came before them was handed on.
    fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.link.poll_event() {
                return Some(event);
            }
            if !self.link.resume_input(now()) {
                return None;
            }
            // Counted as a pace, not a fault: the peer's frames waited for the budget.
            lock(&self.inner.stats)
                .over_budget
                .add(BudgetKind::DecodedBytes);
        }
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
                // Declared again while its fan-in still drains: keep that one (still linked),
                // so what it holds stays ahead of what comes next.
                if let Some(fan_in) = self.draining.remove(&route) {
                    self.fan_ins.insert(route, fan_in);
                    return;
                }
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
                let fan_in = self.fan_ins.remove(&route);
                match fan_in {
                    // What it still holds was acknowledged to the peer: deliver it first (the
                    // route stays paused, so the fan-in keeps being pumped), then withdraw.
                    Some(fan_in) if fan_in.backlog() > 0 => {
                        self.draining.insert(route, fan_in);
                    }
                    _ => {
                        self.link.handle_backlog(&route, 0, now());
                        if let Some(port) = port {
                            port.remove_peer_intent(&self.peer, &route);
                        }
                    }
                }
            }
            SessionEvent::PeerInterestAdded(ad) => {
                // At most what the session holds for one paused route, so a message the link
                // accepted is never refused for room later.
                let config = &self.inner.config;
                let window = config.route_window.min(config.session.send_queue);
                let sink: Arc<dyn PayloadSink> = Arc::new(LinkSink::new(self.lane.clone(), window));
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
                let Some(port) = port else { return };
                // At most `budget.requests` of this peer's requests are served at once; more
                // are answered `Busy` without running anything.
                let Ok(permit) = self.serving.clone().try_acquire_owned() else {
                    lock(&self.inner.stats)
                        .over_budget
                        .add(BudgetKind::Requests);
                    let busy = CallError::Busy(format!(
                        "{} requests of this peer are being served ({})",
                        self.inner.config.session.budget.requests,
                        BudgetKind::Requests
                    ));
                    let refused =
                        self.link
                            .handle_respond(&route, id, Err(response_error(busy)), now());
                    if let Err(e) = refused {
                        tracing::debug!(peer = %self.peer, %route, error = %e, "busy answer not sent");
                    }
                    return;
                };
                let answer = port.handle_request(&self.peer, &route, payload);
                let commands = self.commands_tx.clone();
                // Answered in its own task: a slow handler must not stall the link.
                self.inner.tracker.spawn(async move {
                    let result = answer.await;
                    drop(permit);
                    let _ = commands
                        .send(Command::Respond {
                            route,
                            to: id,
                            result,
                        })
                        .await;
                });
            }
            SessionEvent::Response { id, result } => {
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(result.map_err(call_error));
                }
            }
            SessionEvent::Settled { route, count } => self.credits.give_back(&route, count),
            SessionEvent::Undelivered {
                route,
                count,
                reason,
            } => {
                self.credits.give_back(&route, count);
                self.undelivered(&route, count, reason);
            }
            SessionEvent::Feedback { route, feedback } => {
                if let Some(port) = self.inner.port.get() {
                    port.report_feedback(&self.peer, &route, feedback);
                }
            }
            SessionEvent::Rtt(rtt) => self.rtt = Some(rtt),
            SessionEvent::SignedBatch(batch) => self.inner.record(*batch),
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

    pub(super) fn undelivered(&self, route: &Route, count: u64, reason: Undelivered) {
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
                LinkFailure::OverBudget { budget, .. } => stats.over_budget.add(*budget),
                _ => {}
            }
            drop(stats);
            if matches!(failure, LinkFailure::OverBudget { .. }) {
                tracing::warn!(peer = %self.peer, %failure, "peer over budget; connection closed");
            } else {
                tracing::debug!(peer = %self.peer, %failure, "connection lost");
            }
        }
        // After an orderly close the peer ends its side once it read ours.
        let linger = failure.is_none().then_some(super::io::LINGER);
        if let Some(mut io) = self.io.take() {
            // The connection's last bytes (our Close) go to its writer, not to the next one.
            let mut rest = Vec::new();
            while self.link.poll_transmit_into(now(), &mut rest) {}
            if let Some(done) = io.done.take() {
                let _ = done.send(Ended { opened, failure });
            }
            io.finish(rest, &self.inner.tracker, linger);
        }
        lock(&self.inner.active).remove(&self.peer);
        self.inner.link_state.send_modify(|v| *v += 1);
    }

    /// Pumps every paused fan-in whose subscriber made room; resumes the routes that drained.
    /// The fan-in of the peer's `route`, also while it drains after a withdrawal.
    fn fan_in(&self, route: &Route) -> Option<&Arc<dyn PayloadSink>> {
        self.fan_ins.get(route).or_else(|| self.draining.get(route))
    }

    pub(super) fn pump_fan_ins(&mut self) {
        let t = now();
        let paused: Vec<Route> = self.link.paused_routes().cloned().collect();
        for route in paused {
            let left = self.fan_in(&route).map_or(0, |sink| {
                sink.pump();
                pressure(&**sink)
            });
            self.link.handle_backlog(&route, left, t);
            if left == 0
                && self.draining.remove(&route).is_some()
                && let Some(port) = self.inner.port.get()
            {
                port.remove_peer_intent(&self.peer, &route);
            }
        }
        self.arm_ready();
    }

    fn arm_ready(&mut self) {
        let sinks: Vec<Arc<dyn PayloadSink>> = self
            .link
            .paused_routes()
            .filter_map(|route| self.fan_in(route).cloned())
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
    pub(super) fn report(&self) {
        if self.gone {
            return;
        }
        let session = self.link.session();
        let info = PeerLink {
            peer: self.peer,
            connected: session.is_open(),
            rtt: self.rtt,
            stats: session.stats(),
            peer_intents: self.peer_intents.clone(),
            peer_interests: self.peer_interests.clone(),
            unacked: (self.commands.len() + session.queued() + session.unacked_batches()) as u64,
        };
        let state = |i: &PeerLink| {
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
    pub(super) fn retire(&mut self, links: &mut HashMap<PeerId, mpsc::Sender<Handoff>>) {
        // Under the links lock, like `hand_off`'s send: no connection is queued after this,
        // and while this link's open queue is in `links` no other link of the peer exists.
        self.gone = true;
        links.remove(&self.peer);
        lock(&self.inner.infos).remove(&self.peer);
        lock(&self.inner.commands).remove(&self.peer);
        self.connections.close();
    }
}

/// Messages a fan-in holds back, plus one while a subscriber is nearly full: above zero the
/// peer's route is paused.
fn pressure(sink: &dyn PayloadSink) -> usize {
    sink.backlog() + usize::from(sink.congested())
}
