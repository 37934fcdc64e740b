//! A simulated network between two [`Session`]s, in virtual time (feature `test-utils`).
//!
//! Deterministic for a seed: latency, jitter (which reorders frames), loss, duplication and
//! periodic disconnects, with no runtime and no sleeping. The clock jumps to the next thing that
//! can happen (a frame arriving, a session timer, a reconnect). Use it to test code built on
//! sessions, or the sessions themselves. Disconnects come every N frames or every N messages
//! sent; [`Pair::pause`] holds one side's frames (a peer that stops acknowledging while still
//! connected); counters on [`Pair`] say which faults really happened.
//!
//! Faults apply to data frames (`Batch`, `Ack`, `Ping`, `Pong`). Control frames (`Hello`,
//! `Advert`, `Close`) only suffer latency and disconnects: every real transport a session runs
//! over is ordered and lossless while connected, and a lost connection is what disconnects model.

use std::time::{Duration, Instant};

use bytes::Bytes;
use dndm_codec::{FrameHeader, FrameKind, Limits, SessionId};

use crate::session::{Connection, Event, LinkFailure, Session};

/// Fault knobs of a [`Pair`] (build with `..SimConfig::default()`).
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One-way delay of every frame.
    pub latency: Duration,
    /// Link speed in bytes per second, each way: a frame occupies the link for its length
    /// divided by this, so a sender cannot outrun the network.
    pub bandwidth: u64,
    /// Extra random delay in `[0, jitter)` per frame; frames overtake each other.
    pub jitter: Duration,
    /// Probability that a data frame is lost.
    pub loss: f64,
    /// Probability that a data frame arrives twice.
    pub duplicate: f64,
    /// Cut the connection after this many frames delivered (both ways); `None` never.
    pub disconnect_every: Option<u64>,
    /// Cut the connection each time the sessions sent this many more messages (first
    /// transmissions, both ways, counted by their `messages_sent`); checked as frames arrive.
    /// `None` never. Independent of `disconnect_every`.
    pub disconnect_every_messages: Option<u64>,
    /// How long a cut connection stays down.
    pub reconnect_after: Duration,
    /// Seed of the fault generator.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(1),
            bandwidth: 100_000_000,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            disconnect_every: None,
            disconnect_every_messages: None,
            reconnect_after: Duration::from_millis(50),
            seed: 1,
        }
    }
}

/// Which session of a [`Pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Session `a` (the dialer).
    A,
    /// Session `b`.
    B,
}

impl Side {
    fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }
}

#[derive(Debug)]
struct InFlight {
    at: Instant,
    /// Insertion order, to break ties deterministically.
    order: u64,
    to: Side,
    generation: u64,
    frame: Bytes,
}

/// Two sessions joined by a simulated network.
#[derive(Debug)]
pub struct Pair {
    /// The dialing session.
    pub a: Session,
    /// The other session.
    pub b: Session,
    config: SimConfig,
    now: Instant,
    rng: u64,
    in_flight: Vec<InFlight>,
    order: u64,
    generation: u64,
    connected: bool,
    reconnect_at: Option<Instant>,
    /// Per side (A, B): a frame taken from the session and waiting for the link, and when the
    /// link is free again.
    held: [Option<Bytes>; 2],
    link_free_at: [Instant; 2],
    frames: u64,
    /// Messages sent (both sessions) at which the next message-count disconnect happens.
    next_message_cut: Option<u64>,
    /// Per destination (A, B): the highest send order delivered so far.
    delivered_order: [u64; 2],
    /// Per sending side (A, B): its frames stay with its session (see [`Pair::pause`]).
    paused: [bool; 2],
    events_a: Vec<Event>,
    events_b: Vec<Event>,
    /// Connections cut so far.
    pub disconnects: u64,
    /// Data frames dropped so far.
    pub dropped: u64,
    /// Data frames sent twice so far.
    pub duplicated: u64,
    /// Frames delivered after a frame sent later (to the same side) so far.
    pub reordered: u64,
}

impl Pair {
    /// Joins two sessions; call [`Pair::connect`] to start.
    pub fn new(a: Session, b: Session, config: SimConfig) -> Self {
        let rng = config.seed ^ 0x9e37_79b9_7f4a_7c15;
        let now = Instant::now();
        let next_message_cut = config.disconnect_every_messages;
        Self {
            a,
            b,
            config,
            now,
            rng,
            in_flight: Vec::new(),
            order: 0,
            generation: 0,
            connected: false,
            reconnect_at: None,
            held: [None, None],
            link_free_at: [now, now],
            frames: 0,
            next_message_cut,
            delivered_order: [0, 0],
            paused: [false, false],
            events_a: Vec::new(),
            events_b: Vec::new(),
            disconnects: 0,
            dropped: 0,
            duplicated: 0,
            reordered: 0,
        }
    }

    /// The virtual now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Opens a connection between the two sessions.
    pub fn connect(&mut self) {
        self.generation += 1;
        self.connected = true;
        self.reconnect_at = None;
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&self.generation.to_be_bytes());
        let info = Connection {
            session_id: SessionId::from_bytes(id),
            binding: None,
            expected_peer: None,
        };
        self.a.handle_connect(self.now, info.clone());
        self.b.handle_connect(self.now, info);
    }

    /// Cuts the connection; frames in flight are lost. It comes back after `reconnect_after`.
    pub fn disconnect(&mut self) {
        if !self.connected {
            return;
        }
        self.connected = false;
        self.disconnects += 1;
        self.in_flight.clear();
        self.held = [None, None];
        let failure = LinkFailure::Transport("simulated disconnect".into());
        self.a.handle_disconnect(failure.clone());
        self.b.handle_disconnect(failure);
        self.reconnect_at = Some(self.now + self.config.reconnect_after);
    }

    /// Stops taking frames from `side`'s session: they wait in it (and what it has not sent
    /// cannot be acknowledged or answered) until [`Pair::resume`]. Frames to `side` still
    /// arrive. Models a peer that stops acknowledging while the connection stays up.
    pub fn pause(&mut self, side: Side) {
        self.paused[side.index()] = true;
    }

    /// Takes frames from `side`'s session again (see [`Pair::pause`]).
    pub fn resume(&mut self, side: Side) {
        self.paused[side.index()] = false;
    }

    /// Takes the events a session reported so far.
    pub fn events(&mut self, side: Side) -> Vec<Event> {
        self.collect_events();
        match side {
            Side::A => std::mem::take(&mut self.events_a),
            Side::B => std::mem::take(&mut self.events_b),
        }
    }

    /// Runs until `done` holds or nothing can happen any more within `limit` of virtual time.
    /// Returns whether `done` held.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            if done(self) {
                return true;
            }
            if !self.step(end) {
                return done(self);
            }
        }
    }

    /// Does one thing: sends what the sessions have, delivers the next due frame, or advances
    /// the clock. False when nothing is left before `end`.
    pub fn step(&mut self, end: Instant) -> bool {
        self.collect_events();
        let mut progressed = self.flush();
        if let Some(index) = self.next_due() {
            let frame = self.in_flight.swap_remove(index);
            let last = &mut self.delivered_order[frame.to.index()];
            if frame.order < *last {
                self.reordered += 1;
            }
            *last = (*last).max(frame.order);
            match frame.to {
                Side::A => self.a.handle_frame(self.now, frame.frame),
                Side::B => self.b.handle_frame(self.now, frame.frame),
            }
            self.frames += 1;
            if let Some(every) = self.config.disconnect_every
                && self.frames.is_multiple_of(every)
            {
                self.disconnect();
            }
            let sent = self.a.stats().messages_sent + self.b.stats().messages_sent;
            if let Some(at) = self.next_message_cut
                && sent >= at
            {
                self.next_message_cut = self
                    .config
                    .disconnect_every_messages
                    .map(|every| at + every);
                self.disconnect();
            }
            progressed = true;
        }
        if progressed {
            return true;
        }
        let link = |i: usize| {
            self.held[i]
                .as_ref()
                .filter(|_| !self.paused[i])
                .map(|_| self.link_free_at[i])
        };
        let next = [
            self.in_flight.iter().map(|f| f.at).min(),
            link(0),
            link(1),
            self.a.poll_timeout(),
            self.b.poll_timeout(),
            self.reconnect_at,
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(at) if at <= end => {
                self.now = self.now.max(at);
                if self.reconnect_at.is_some_and(|r| r <= self.now) {
                    self.connect();
                }
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
                true
            }
            _ => {
                // Nothing happens before `end`: the time passes all the same.
                self.now = self.now.max(end);
                false
            }
        }
    }

    fn collect_events(&mut self) {
        while let Some(event) = self.a.poll_event() {
            self.events_a.push(event);
        }
        while let Some(event) = self.b.poll_event() {
            self.events_b.push(event);
        }
    }

    /// Moves frames from the sessions onto idle links; true if any moved.
    fn flush(&mut self) -> bool {
        let mut moved = false;
        for (i, from) in [(0, Side::A), (1, Side::B)] {
            while !self.paused[i] {
                if self.held[i].is_none() {
                    self.held[i] = match from {
                        Side::A => self.a.poll_transmit(self.now),
                        Side::B => self.b.poll_transmit(self.now),
                    };
                }
                let Some(frame) = self.held[i].take_if(|_| self.link_free_at[i] <= self.now) else {
                    break;
                };
                moved = true;
                if !self.connected {
                    continue;
                }
                let busy =
                    frame.len() as u128 * 1_000_000_000 / u128::from(self.config.bandwidth.max(1));
                self.link_free_at[i] = self.now + Duration::from_nanos(busy as u64);
                let to = if from == Side::A { Side::B } else { Side::A };
                self.send(to, frame);
            }
        }
        moved
    }

    fn send(&mut self, to: Side, frame: Bytes) {
        let data = FrameHeader::parse(&frame, &Limits::default()).is_ok_and(|h| {
            matches!(
                h.kind(),
                FrameKind::Batch | FrameKind::Ack | FrameKind::Ping | FrameKind::Pong
            )
        });
        if data && self.chance(self.config.loss) {
            self.dropped += 1;
            return;
        }
        let copies = if data && self.chance(self.config.duplicate) {
            self.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let jitter = if data { self.jitter() } else { Duration::ZERO };
            self.order += 1;
            self.in_flight.push(InFlight {
                at: self.link_free_at[if to == Side::B { 0 } else { 1 }]
                    + self.config.latency
                    + jitter,
                order: self.order,
                to,
                generation: self.generation,
                frame: frame.clone(),
            });
        }
    }

    /// The in-flight frame to deliver now: due, earliest, then oldest. Control frames keep
    /// their order relative to every earlier frame (ordered transports never reorder them).
    fn next_due(&self) -> Option<usize> {
        self.in_flight
            .iter()
            .enumerate()
            .filter(|(_, f)| f.at <= self.now && f.generation == self.generation)
            .min_by_key(|(_, f)| (f.at, f.order))
            .map(|(i, _)| i)
    }

    fn next_random(&mut self) -> u64 {
        // SplitMix64: small, fast, and deterministic for a seed.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_random() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn jitter(&mut self) -> Duration {
        let nanos = self.config.jitter.as_nanos() as u64;
        if nanos == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.next_random() % nanos)
        }
    }
}
