//! Reconnect delays: exponential backoff with jitter, a per-peer circuit breaker, and the pause
//! of an accept loop that runs out of resources.
//!
//! All are plain state machines: time and randomness come in from the caller, so tests drive
//! them in virtual time with a seeded generator.

use std::time::Duration;

/// Exponential backoff with "equal jitter": the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(initial * 2^n, max)`. Bounded, never zero, spread so that peers
/// that lost a link together do not all redial at once.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff from `initial` doubling up to `max` (`max` is raised to `initial` if lower).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay; `random` is a uniformly random `u64` from the caller's generator.
    pub fn next_delay(&mut self, random: u64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos().max(1);
        // `span` fits in u64 because `max` does for any sane configuration; saturate otherwise.
        let offset = u64::try_from(u128::from(random) % span).unwrap_or(u64::MAX);
        (half + Duration::from_nanos(offset)).max(Duration::from_millis(1))
    }

    /// Number of delays handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Back to the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// State of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are refused until the stored instant (as an offset of the caller's clock).
    Open {
        /// When the breaker lets one trial call through.
        until: Duration,
    },
    /// One trial call is in flight; its outcome closes or re-opens the breaker.
    HalfOpen,
}

/// A per-peer circuit breaker: after `threshold` consecutive failures it opens for `cool_down`,
/// then lets one trial through (half-open). A dead peer costs one attempt per cool-down.
///
/// Time is the caller's clock as a `Duration` since any fixed origin.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    cool_down: Duration,
    failures: u32,
    state: BreakerState,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` (at least 1) consecutive failures.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cool_down,
            failures: 0,
            state: BreakerState::Closed,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether a call may start at `now`; moves `Open` to `HalfOpen` once the cool-down passed.
    pub fn allow(&mut self, now: Duration) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    /// The call succeeded: close and forget failures.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    /// The call failed at `now`.
    pub fn on_failure(&mut self, now: Duration) {
        self.failures = self.failures.saturating_add(1);
        if self.state == BreakerState::HalfOpen || self.failures >= self.threshold {
            self.state = BreakerState::Open {
                until: now + self.cool_down,
            };
        }
    }
}

/// First pause of an accept loop after a resource error ([`AcceptBackoff`]).
pub const ACCEPT_PAUSE_INITIAL: Duration = Duration::from_millis(100);
/// Longest pause of an accept loop after resource errors ([`AcceptBackoff`]).
pub const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// What an accept loop does after `accept` failed ([`AcceptBackoff::handle_error`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptAction {
    /// The error concerned only the one connection (reset or aborted while queued): accept
    /// again at once.
    Retry,
    /// The process or the system is out of a resource (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`...): accepting again at once would fail again at once, for as long as a
    /// connection waits in the backlog. Wait `delay`, then accept again.
    Pause {
        /// How long to wait.
        delay: Duration,
        /// Whether this error starts an episode: log it. Later errors of the same episode are
        /// not worth a line each; [`AcceptBackoff::handle_accept`] ends the episode.
        first: bool,
    },
}

/// The pauses of an accept loop whose `accept` fails: a resource error (out of file
/// descriptors, buffers or memory) pauses [`ACCEPT_PAUSE_INITIAL`], doubling up to
/// [`ACCEPT_PAUSE_MAX`], until a connection is accepted again. Without it the loop would spin
/// at full CPU and log a line per failure for as long as a connection waits in the backlog.
///
/// Call [`handle_error`](Self::handle_error) after each failed `accept` and do what it says;
/// call [`handle_accept`](Self::handle_accept) after each accepted connection. No jitter: one
/// loop has no one to spread out from.
#[derive(Debug, Clone)]
pub struct AcceptBackoff {
    initial: Duration,
    max: Duration,
    /// Resource errors since the last accepted connection (the episode).
    errors: u64,
}

impl AcceptBackoff {
    /// A backoff pausing `initial` first, doubling up to `max` (raised to `initial` if lower).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            errors: 0,
        }
    }

    /// `accept` failed with `error`: what to do now.
    pub fn handle_error(&mut self, error: &std::io::Error) -> AcceptAction {
        if is_connection_error(error.kind()) {
            return AcceptAction::Retry;
        }
        let doublings = u32::try_from(self.errors.min(31)).unwrap_or(31);
        let delay = self.initial.saturating_mul(1u32 << doublings).min(self.max);
        self.errors = self.errors.saturating_add(1);
        AcceptAction::Pause {
            delay,
            first: self.errors == 1,
        }
    }

    /// A connection was accepted. Returns the number of resource errors of the episode this
    /// ends (log that the loop recovered), or `None` when there was none.
    pub fn handle_accept(&mut self) -> Option<u64> {
        let errors = std::mem::take(&mut self.errors);
        (errors > 0).then_some(errors)
    }

    /// Resource errors since the last accepted connection.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

impl Default for AcceptBackoff {
    /// [`ACCEPT_PAUSE_INITIAL`] up to [`ACCEPT_PAUSE_MAX`].
    fn default() -> Self {
        Self::new(ACCEPT_PAUSE_INITIAL, ACCEPT_PAUSE_MAX)
    }
}

/// Whether an `accept` error concerned only the connection being accepted (the peer reset or
/// gave up while it waited in the backlog), as opposed to the listener or the process.
fn is_connection_error(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind;
    matches!(
        kind,
        ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_max_within_jitter_bounds() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS);
        let ceilings: Vec<_> = (0..6)
            .map(|i| {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay(i * 7919);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} not in [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
                ceiling
            })
            .collect();
        assert_eq!(
            ceilings,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        backoff.reset();
        assert_eq!(backoff.ceiling(), 100 * MS);
    }

    #[test]
    fn extreme_random_values_stay_in_bounds() {
        let mut backoff = Backoff::new(MS, 10 * MS);
        for random in [0, 1, u64::MAX] {
            let d = backoff.next_delay(random);
            assert!(d >= MS && d <= 10 * MS, "{d:?}");
        }
        let mut huge = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..100 {
            huge.next_delay(u64::MAX);
        }
    }

    #[test]
    fn breaker_opens_after_threshold_half_opens_after_cool_down() {
        let mut breaker = CircuitBreaker::new(3, 1000 * MS);
        let t0 = Duration::ZERO;
        for _ in 0..2 {
            assert!(breaker.allow(t0));
            breaker.on_failure(t0);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.on_failure(t0);
        assert_eq!(breaker.state(), BreakerState::Open { until: 1000 * MS });
        assert!(!breaker.allow(999 * MS));
        assert!(breaker.allow(1000 * MS), "one trial after the cool-down");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(!breaker.allow(1000 * MS), "only one trial at a time");
        breaker.on_failure(1001 * MS);
        assert_eq!(
            breaker.state(),
            BreakerState::Open { until: 2001 * MS },
            "a failed trial re-opens"
        );
        assert!(breaker.allow(2001 * MS));
        breaker.on_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.allow(2001 * MS));
    }

    /// `EMFILE` as the OS reports it (24 on Linux and the BSDs).
    fn emfile() -> std::io::Error {
        std::io::Error::from_raw_os_error(24)
    }

    #[test]
    fn resource_errors_pause_longer_until_an_accept_ends_the_episode() {
        let mut backoff = AcceptBackoff::default();
        let actions: Vec<_> = (0..6).map(|_| backoff.handle_error(&emfile())).collect();
        let delays: Vec<_> = actions
            .iter()
            .map(|a| match a {
                AcceptAction::Pause { delay, .. } => *delay,
                AcceptAction::Retry => panic!("EMFILE must pause"),
            })
            .collect();
        assert_eq!(
            delays,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        let firsts: Vec<_> = actions
            .iter()
            .map(|a| matches!(a, AcceptAction::Pause { first: true, .. }))
            .collect();
        assert_eq!(
            firsts,
            [true, false, false, false, false, false],
            "one log line"
        );
        assert_eq!(backoff.handle_accept(), Some(6));
        assert_eq!(backoff.handle_accept(), None);
        // A new episode starts from the first pause and is logged again.
        assert_eq!(
            backoff.handle_error(&emfile()),
            AcceptAction::Pause {
                delay: 100 * MS,
                first: true
            }
        );
    }

    #[test]
    fn errors_of_one_connection_retry_at_once_and_start_no_episode() {
        let mut backoff = AcceptBackoff::default();
        for kind in [
            std::io::ErrorKind::ConnectionAborted,
            std::io::ErrorKind::ConnectionReset,
        ] {
            assert_eq!(
                backoff.handle_error(&kind.into()),
                AcceptAction::Retry,
                "{kind:?}"
            );
        }
        assert_eq!(backoff.errors(), 0);
        assert_eq!(backoff.handle_accept(), None);
        // Other failures (ENFILE, ENOBUFS, ENOMEM, anything unknown) pause.
        for code in [23, 105, 12] {
            let error = std::io::Error::from_raw_os_error(code);
            assert!(
                matches!(backoff.handle_error(&error), AcceptAction::Pause { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn a_long_episode_stays_at_the_max() {
        let mut backoff = AcceptBackoff::new(MS, 10 * MS);
        for _ in 0..100 {
            backoff.handle_error(&emfile());
        }
        assert_eq!(
            backoff.handle_error(&emfile()),
            AcceptAction::Pause {
                delay: 10 * MS,
                first: false
            }
        );
    }
}
