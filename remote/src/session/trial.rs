//! Whether compression pays in time, not only in bytes: an online A/B trial of goodput.
//!
//! Compression that shrinks a batch can still slow a link down: on loopback or a fast LAN the
//! transport moves bytes faster than zstd makes them smaller, and the receiver pays for
//! decompression too. The session therefore measures what it gets: while it has a backlog
//! (it is sending as fast as the link takes messages), it counts the payload bytes the peer
//! acknowledges per window, with and without compression, and keeps the faster mode; it tries
//! the other mode again every [`RETRY`], since the network or the data may have changed. A
//! link that is not saturated measures nothing and keeps its mode: there, compression costs
//! no throughput and saves bandwidth. Time is the session's `now`, so tests stay
//! deterministic.

use std::time::{Duration, Instant};

/// Batches in flight (sent, not yet acknowledged) from which a link counts as saturated even
/// with nothing queued.
pub(super) const IN_FLIGHT_BATCHES: usize = 8;
/// One measuring window.
pub(super) const WINDOW: Duration = Duration::from_millis(200);
/// How long a decision holds before the other mode is measured again.
pub(super) const RETRY: Duration = Duration::from_secs(5);
/// Compression is kept unless plain sends at least this much faster (it also saves bytes
/// on the wire, which a loaded network needs more than the measurement shows).
const MARGIN: f64 = 1.1;

/// The trial's state; see the module docs.
#[derive(Debug, Clone)]
pub(super) struct CompressionTrial {
    compress: bool,
    /// The current window: its start, and the payload bytes and messages taken in it while
    /// saturated.
    window: Option<(Instant, u64, u64)>,
    /// The last measured figure of each mode: `[plain, compressed]`.
    rates: [Option<Measured>; 2],
}

/// One window's result.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    /// Payload bytes per second.
    rate: f64,
    /// When the window ended.
    at: Instant,
    /// The mean message size in it: figures for other message sizes do not compare.
    size: f64,
}

impl Measured {
    /// Whether this figure still compares with one taken at `now` for messages of `size`.
    fn fresh(&self, now: Instant, size: f64) -> bool {
        now.saturating_duration_since(self.at) < RETRY
            && self.size <= size * SIZE_DRIFT
            && size <= self.size * SIZE_DRIFT
    }
}

/// Mean message sizes within this factor of each other compare; beyond it the other mode is
/// measured again (the data changed).
const SIZE_DRIFT: f64 = 2.0;

impl Default for CompressionTrial {
    fn default() -> Self {
        Self {
            compress: true,
            window: None,
            rates: [None, None],
        }
    }
}

impl CompressionTrial {
    /// Whether batches are compressed now.
    pub(super) fn compress(&self) -> bool {
        self.compress
    }

    /// The peer acknowledged `messages` messages of `bytes` payload bytes at `now`;
    /// `saturated`: more wait to be sent. An unsaturated moment ends the window without a
    /// measurement.
    pub(super) fn record(&mut self, now: Instant, bytes: usize, messages: usize, saturated: bool) {
        if !saturated {
            self.window = None;
            return;
        }
        let (start, sum, count) = self.window.get_or_insert((now, 0, 0));
        *sum += bytes as u64;
        *count += messages as u64;
        let elapsed = now.saturating_duration_since(*start);
        if elapsed < WINDOW || *count == 0 {
            return;
        }
        let measured = Measured {
            rate: *sum as f64 / elapsed.as_secs_f64(),
            at: now,
            size: *sum as f64 / *count as f64,
        };
        self.rates[usize::from(self.compress)] = Some(measured);
        self.window = None;
        self.decide(measured);
    }

    fn decide(&mut self, last: Measured) {
        let fresh = |m: Option<Measured>| m.filter(|m| m.fresh(last.at, last.size)).map(|m| m.rate);
        match (fresh(self.rates[0]), fresh(self.rates[1])) {
            (Some(plain), Some(compressed)) => self.compress = plain < compressed * MARGIN,
            // The other mode's figure is missing, stale or for other data: measure it next.
            _ => self.compress = !self.compress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `rate` bytes/s in messages of `size` bytes, in 10 ms steps for `span`, saturated;
    /// returns the end time.
    fn run_sized(
        trial: &mut CompressionTrial,
        from: Instant,
        span: Duration,
        rate: u64,
        size: usize,
    ) -> Instant {
        let step = Duration::from_millis(10);
        let mut now = from;
        while now < from + span {
            now += step;
            let bytes = (rate / 100) as usize;
            trial.record(now, bytes, bytes / size, true);
        }
        now
    }

    /// As [`run_sized`], with messages of 1,000 bytes.
    fn run(trial: &mut CompressionTrial, from: Instant, span: Duration, rate: u64) -> Instant {
        run_sized(trial, from, span, rate, 1000)
    }

    /// One measuring window (and a step) at `rate`.
    fn window(trial: &mut CompressionTrial, from: Instant, rate: u64) -> Instant {
        run(trial, from, WINDOW + Duration::from_millis(10), rate)
    }

    #[test]
    fn the_faster_mode_wins_and_the_other_is_tried_again_later() {
        let mut trial = CompressionTrial::default();
        assert!(trial.compress());
        let t0 = Instant::now();
        // Compressed: 100 MB/s for a window, then plain is measured: 300 MB/s.
        let t = window(&mut trial, t0, 100_000_000);
        assert!(!trial.compress(), "the other mode is measured next");
        let t = window(&mut trial, t, 300_000_000);
        assert!(!trial.compress(), "plain is faster here");
        // Plain stays while the compressed figure is fresh...
        let t = run(&mut trial, t, RETRY / 2, 300_000_000);
        assert!(!trial.compress());
        // ...and compression is measured again once it is stale.
        run(&mut trial, t, RETRY, 300_000_000);
        assert!(trial.compress(), "retried after {RETRY:?}");
    }

    #[test]
    fn compression_stays_when_it_is_as_fast() {
        let mut trial = CompressionTrial::default();
        let t0 = Instant::now();
        let t = window(&mut trial, t0, 200_000_000);
        let t = window(&mut trial, t, 210_000_000);
        assert!(
            trial.compress(),
            "within the margin, compression saves the bytes"
        );
        run(&mut trial, t, WINDOW * 3, 200_000_000);
        assert!(trial.compress());
    }

    #[test]
    fn other_data_is_measured_again() {
        let mut trial = CompressionTrial::default();
        let t0 = Instant::now();
        // Compression wins on small messages...
        let t = window(&mut trial, t0, 300_000_000);
        let t = window(&mut trial, t, 100_000_000);
        assert!(trial.compress());
        // ...then the messages grow 64-fold: plain is measured again at once.
        run_sized(
            &mut trial,
            t,
            WINDOW + Duration::from_millis(10),
            300_000_000,
            64_000,
        );
        assert!(!trial.compress(), "the new data's plain figure is taken");
    }

    #[test]
    fn an_idle_link_measures_nothing() {
        let mut trial = CompressionTrial::default();
        let t0 = Instant::now();
        for i in 0..1000u32 {
            trial.record(t0 + Duration::from_millis(u64::from(i)), 1 << 20, 16, false);
        }
        assert!(trial.compress());
        assert_eq!(trial.rates, [None, None]);
    }
}
