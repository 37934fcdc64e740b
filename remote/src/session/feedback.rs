//! Subscriber feedback: what our subscribers made of the peer's routes goes back to the peer
//! (cumulative drops, and the lag of a subscriber at least half full, at most every
//! [`FEEDBACK_INTERVAL`], only when changed), and what the peer's subscribers made of ours comes in as [`Event::Feedback`] with
//! the increase since the last report.

use std::time::Duration;

use dndm_codec::RouteFeedback;
use dndm_core::SubscriberFeedback;

use super::*;

/// Shortest time between two feedback adverts on one session.
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(100);

/// Feedback state of a session, both ways.
#[derive(Debug, Default)]
pub(super) struct Feedback {
    /// To send: the latest state of each of the peer's routes that changed.
    pending: BTreeMap<u32, RouteFeedback>,
    /// Last sent, per peer route id (unchanged states are not sent again).
    sent: HashMap<u32, RouteFeedback>,
    /// When the last feedback advert went out.
    sent_at: Option<Instant>,
    /// Last received, per id of our intents: reports carry totals, events carry increases.
    received: HashMap<u32, RouteFeedback>,
}

impl Session {
    /// Reports what our subscribers made of the peer's `route` (cumulative drops since its
    /// sink was made, current lag); sent when changed, at most every [`FEEDBACK_INTERVAL`].
    pub fn report_feedback(&mut self, route: &Route, feedback: SubscriberFeedback, now: Instant) {
        let Some(id) = self.peer_intent_id(route) else {
            return;
        };
        // A subscriber less than half full is keeping up: its lag is not worth an advert (a
        // steady stream would otherwise send one every interval).
        let slow = feedback.lag.saturating_mul(2) >= feedback.capacity.max(1);
        let state = RouteFeedback {
            id,
            dropped_oldest: feedback.dropped_oldest,
            dropped_newest: feedback.dropped_newest,
            lag: if slow { feedback.lag } else { 0 },
            capacity: feedback.capacity,
        };
        if self.feedback.sent.get(&id) == Some(&state) {
            self.feedback.pending.remove(&id);
            return;
        }
        self.feedback.pending.insert(id, state);
        self.flush_feedback(now);
    }

    /// Sends what is pending if the interval since the last feedback advert has passed.
    pub(super) fn flush_feedback(&mut self, now: Instant) {
        if self.feedback.pending.is_empty() || !self.is_open() {
            return;
        }
        if let Some(at) = self.feedback.sent_at
            && now < at + FEEDBACK_INTERVAL
        {
            return;
        }
        let states: Vec<RouteFeedback> = std::mem::take(&mut self.feedback.pending)
            .into_values()
            .collect();
        for state in &states {
            self.feedback.sent.insert(state.id, *state);
        }
        self.feedback.sent_at = Some(now);
        let advert = Advert {
            feedback: states,
            ..Advert::default()
        };
        self.queue_frame(&Frame::Advert(advert), now);
    }

    /// When pending feedback may go out (pending feedback that never waited for the interval
    /// waits for a connection instead, and goes out after the hello).
    pub(super) fn feedback_deadline(&self) -> Option<Instant> {
        if self.feedback.pending.is_empty() {
            return None;
        }
        self.feedback.sent_at.map(|at| at + FEEDBACK_INTERVAL)
    }

    /// The peer's feedback on our intents: an event per route with the increase.
    pub(super) fn on_feedback(&mut self, states: &[RouteFeedback]) {
        for state in states {
            if state.id >= SERVICE_ID_BASE {
                continue;
            }
            let Some(route) = self.local.intents.get(&state.id).map(|ad| ad.route.clone()) else {
                continue;
            };
            let before = self
                .feedback
                .received
                .insert(state.id, *state)
                .unwrap_or_default();
            // A count below the last one: the peer's sink was made anew (a reconnect).
            let increase = |now: u64, then: u64| if now >= then { now - then } else { now };
            self.events.push_back(Event::Feedback {
                route,
                feedback: SubscriberFeedback {
                    dropped_oldest: increase(state.dropped_oldest, before.dropped_oldest),
                    dropped_newest: increase(state.dropped_newest, before.dropped_newest),
                    lag: state.lag,
                    capacity: state.capacity,
                },
            });
        }
    }

    /// Forgets feedback state and the peer's schemas (the peer restarted, or its routes were
    /// forgotten).
    pub(super) fn reset_feedback(&mut self) {
        self.feedback = Feedback::default();
        self.peer_schemas = super::hashed::PeerSchemas::default();
    }
}
