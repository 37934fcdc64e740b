//! Whether compression pays in time, not only in bytes.
//!
//! Compression that shrinks a batch can still slow a link down: on loopback or a fast LAN the
//! transport moves bytes faster than zstd makes them smaller, and the receiver pays for
//! decompression too. Two measurements decide, both on the session's `now` (tests stay
//! deterministic):
//!
//! - **What it costs.** Every [`WINDOW`], the time the encoder spent compressing is compared
//!   with the window. While the transport never pushed back (every write went straight into
//!   the connection), the network was not the limit, so compression bought no speed; if it
//!   also took more than [`CPU_SHARE`] of the window, the link goes plain. It tries
//!   compression again after [`RETRY`] (the data or the rate may have changed). A quiet link
//!   keeps compressing: there it costs next to nothing and saves bandwidth.
//! - **What it gets.** Once the transport pushes back (the network or the peer is the limit),
//!   an A/B trial of goodput decides: while the link is saturated, it counts the payload bytes
//!   the peer acknowledges per window, with and without compression, and keeps the faster
//!   mode, measuring the other one again every [`RETRY`].

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
/// The share of a window that compressing may take on a link that does not push back.
pub(super) const CPU_SHARE: f64 = 0.02;
/// The longest plain holds after the cost decided before compression is measured again.
pub(super) const MAX_COST_RETRY: Duration = Duration::from_secs(80);

/// The trial's state; see the module docs.
#[derive(Debug, Clone)]
pub(super) struct CompressionTrial {
    compress: bool,
    /// The current A/B window: its start, and the payload bytes and messages taken in it
    /// while saturated.
    window: Option<(Instant, u64, u64)>,
    /// The transport pushed back in the current A/B window.
    window_pushed_back: bool,
    /// The current cost window: its start, and the time spent compressing in it.
    cost: Option<(Instant, Duration)>,
    /// The transport pushed back in the current cost window.
    cost_pushed_back: bool,
    /// When the cost made the link go plain.
    plain_since: Option<Instant>,
    /// How long plain holds after the cost decided: [`RETRY`], doubled each time the cost
    /// decides again in a row (up to [`MAX_COST_RETRY`]), so data that never pays costs ever
    /// less.
    cost_retry: Duration,
    /// The current cost window follows a retry.
    retried: bool,
    /// A write was under way when the last input arrived.
    busy: bool,
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
            window_pushed_back: false,
            cost: None,
            cost_pushed_back: false,
            plain_since: None,
            cost_retry: RETRY,
            retried: false,
            busy: false,
            rates: [None, None],
        }
    }
}

impl CompressionTrial {
    /// Whether batches are compressed now.
    pub(super) fn compress(&self) -> bool {
        self.compress
    }

    /// What the transport was doing when input arrived: `busy`, a write was under way (we
    /// produce as fast as the connection takes bytes: saturated); `pushed_back`, a write found
    /// the connection full since the last call.
    pub(super) fn transport(&mut self, busy: bool, pushed_back: bool) {
        self.busy = busy;
        self.window_pushed_back |= pushed_back;
        self.cost_pushed_back |= pushed_back;
    }

    /// Whether the last input found a write under way.
    pub(super) fn busy(&self) -> bool {
        self.busy
    }

    /// The peer acknowledged `messages` messages of `bytes` payload bytes at `now`;
    /// `saturated`: more wait to be sent; `spent`: time spent compressing since the last call.
    /// An unsaturated moment ends the A/B window without a measurement.
    pub(super) fn record(
        &mut self,
        now: Instant,
        bytes: usize,
        messages: usize,
        saturated: bool,
        spent: Duration,
    ) {
        self.weigh_cost(now, spent);
        if !saturated {
            self.window = None;
            self.window_pushed_back = false;
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
        self.window = None;
        // Only a link the transport holds back compares the modes: elsewhere both send as
        // fast as this side's CPU allows, and the cost alone decides.
        if std::mem::take(&mut self.window_pushed_back) {
            self.rates[usize::from(self.compress)] = Some(measured);
            self.decide(measured);
        }
    }

    /// The cost measurement; see the module docs.
    fn weigh_cost(&mut self, now: Instant, spent: Duration) {
        if let Some(since) = self.plain_since
            && now.saturating_duration_since(since) >= self.cost_retry
        {
            // Measure the cost again: the data or the rate may have changed.
            self.plain_since = None;
            self.compress = true;
            self.cost = None;
            self.retried = true;
        }
        let (start, total) = self.cost.get_or_insert((now, Duration::ZERO));
        *total += spent;
        let elapsed = now.saturating_duration_since(*start);
        if elapsed < WINDOW {
            return;
        }
        let share = total.as_secs_f64() / elapsed.as_secs_f64();
        self.cost = None;
        let pushed_back = std::mem::take(&mut self.cost_pushed_back);
        if self.compress && !pushed_back && share > CPU_SHARE {
            if self.retried {
                // Measured again, and still too dear: wait longer next time.
                self.cost_retry = (self.cost_retry * 2).min(MAX_COST_RETRY);
            }
            self.compress = false;
            self.plain_since = Some(now);
        } else if self.compress {
            // Compression paid its way (or the network limits the link): back to the start.
            self.cost_retry = RETRY;
        }
        self.retried = false;
    }

    fn decide(&mut self, last: Measured) {
        let fresh = |m: Option<Measured>| m.filter(|m| m.fresh(last.at, last.size)).map(|m| m.rate);
        match (fresh(self.rates[0]), fresh(self.rates[1])) {
            (Some(plain), Some(compressed)) => {
                // A measured decision replaces one made on cost.
                self.plain_since = None;
                self.compress = plain < compressed * MARGIN;
            }
            // Compression went off on its cost lately: it held our CPU back, so it is not
            // tried again before its retry.
            (Some(_), None) if self.plain_since.is_some() => {}
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
            // Limited by the network: the transport pushes back.
            trial.transport(true, true);
            trial.record(now, bytes, bytes / size, true, Duration::ZERO);
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

    /// Records saturated steps of 10 ms for `span` without pushback, compressing `spent` per
    /// step; returns the end time.
    fn unhindered(
        trial: &mut CompressionTrial,
        from: Instant,
        span: Duration,
        spent: Duration,
    ) -> Instant {
        let step = Duration::from_millis(10);
        let mut now = from;
        while now < from + span {
            now += step;
            trial.transport(true, false);
            trial.record(now, 1_000_000, 1000, true, spent);
        }
        now
    }

    /// Steps as [`unhindered`] until the trial compresses; returns the time then (twice).
    fn until_compressing(
        trial: &mut CompressionTrial,
        from: Instant,
        spent: Duration,
    ) -> (Instant, Instant) {
        let mut now = from;
        while !trial.compress() {
            assert!(now - from < MAX_COST_RETRY * 2, "compression never retried");
            now = unhindered(trial, now, Duration::from_millis(10), spent);
        }
        (now, now)
    }

    #[test]
    fn compression_that_costs_cpu_on_a_link_that_never_pushes_back_goes_plain() {
        let mut trial = CompressionTrial::default();
        let t0 = Instant::now();
        // 1 ms of every 10 compressing (10 %), every write straight into the connection.
        let t = unhindered(
            &mut trial,
            t0,
            WINDOW + Duration::from_millis(10),
            Duration::from_millis(1),
        );
        assert!(
            !trial.compress(),
            "compression bought no speed and cost 10 % of the CPU"
        );
        assert_eq!(trial.rates, [None, None], "no A/B figure without pushback");
        let decided = t;
        // A pushed-back window measures plain, and does not bring compression back early.
        let t = window(&mut trial, t, 300_000_000);
        assert!(
            !trial.compress(),
            "compression held the CPU back: not before its retry"
        );
        // Plain holds for a while, then the cost is measured again: still 10 %, so plain
        // again, and each retry waits twice as long as the last.
        let t = unhindered(&mut trial, t, RETRY / 2, Duration::from_millis(1));
        assert!(!trial.compress());
        let (t, first) = until_compressing(&mut trial, t, Duration::from_millis(1));
        assert!(first - decided >= RETRY, "retried after {RETRY:?}");
        let t = unhindered(&mut trial, t, WINDOW * 2, Duration::from_millis(1));
        assert!(!trial.compress(), "still too dear");
        let (t, second) = until_compressing(&mut trial, t, Duration::from_millis(1));
        assert!(second - first >= RETRY * 2, "the retry backs off");
        // Cheap now: compression stays.
        let t = unhindered(&mut trial, t, WINDOW * 3, Duration::ZERO);
        assert!(trial.compress());
        // Once the transport pushes back, the A/B trial decides: plain is measured next.
        let t = window(&mut trial, t, 100_000_000);
        assert!(!trial.compress());
        window(&mut trial, t, 80_000_000);
        assert!(
            trial.compress(),
            "compressed is faster on the pushed-back link"
        );
    }

    #[test]
    fn cheap_compression_stays_on_a_link_that_never_pushes_back() {
        let mut trial = CompressionTrial::default();
        // 0.1 ms of every 10 (1 %): below the share.
        unhindered(
            &mut trial,
            Instant::now(),
            WINDOW * 10,
            Duration::from_micros(100),
        );
        assert!(trial.compress());
    }

    #[test]
    fn an_idle_link_measures_nothing() {
        let mut trial = CompressionTrial::default();
        let t0 = Instant::now();
        for i in 0..1000u32 {
            trial.record(
                t0 + Duration::from_millis(u64::from(i)),
                1 << 20,
                16,
                false,
                Duration::ZERO,
            );
        }
        assert!(trial.compress());
        assert_eq!(trial.rates, [None, None]);
    }
}
