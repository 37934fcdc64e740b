//! What an intent keeps for late subscribers ([`PublishOptions::history`]), and how a new
//! subscriber gets it without a duplicate or a gap at the seam.
//!
//! The seam: a send records its message and loads the intent's subscriber list under the
//! history's lock; a subscriber that asks for history is handed the kept messages and added to
//! that list under the same lock. So every message is either in what the subscriber was handed
//! (recorded before it was added) or delivered to it live (recorded after), never both. The
//! handed messages go into the subscriber's queue ahead of anything live, so they come first.
//!
//! [`PublishOptions::history`]: crate::PublishOptions::history

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The most messages an intent keeps, or a subscriber asks for.
pub const MAX_HISTORY: usize = 1 << 20;

/// The bytes (encoded size) an intent keeps at most, unless
/// [`PublishOptions::history_bytes`](crate::PublishOptions::history_bytes) says otherwise.
pub const DEFAULT_HISTORY_BYTES: usize = 4 << 20;

/// How much an intent keeps: the last `messages`, at most `bytes` of them (encoded), none older
/// than `age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
    pub(crate) age: Option<Duration>,
}

/// The kept messages, oldest first, each with its encoded size and when it was sent.
#[derive(Debug)]
pub(crate) struct History<T> {
    limits: Limits,
    items: VecDeque<(Arc<T>, usize, Instant)>,
    bytes: usize,
}

impl<T> History<T> {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            items: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Keeps a sent message, letting the oldest go past the limits. A message larger than the
    /// byte bound is not kept (nor is anything before it).
    pub(crate) fn record(&mut self, message: Arc<T>, size: usize, now: Instant) {
        self.items.push_back((message, size, now));
        self.bytes += size;
        self.trim(now);
    }

    /// The latest `n` kept messages (fewer if fewer are kept), oldest first.
    pub(crate) fn latest(&mut self, n: usize, now: Instant) -> Vec<Arc<T>> {
        self.trim(now);
        let skip = self.items.len().saturating_sub(n);
        self.items
            .iter()
            .skip(skip)
            .map(|(m, _, _)| m.clone())
            .collect()
    }

    /// Messages kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn trim(&mut self, now: Instant) {
        let too_old = |at: Instant| {
            self.limits
                .age
                .is_some_and(|age| now.saturating_duration_since(at) > age)
        };
        while let Some((_, size, at)) = self.items.front() {
            let over = self.items.len() > self.limits.messages || self.bytes > self.limits.bytes;
            if !over && !too_old(*at) {
                break;
            }
            self.bytes -= size;
            self.items.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: usize, bytes: usize, age: Option<Duration>) -> Limits {
        Limits {
            messages,
            bytes,
            age,
        }
    }

    fn values(items: Vec<Arc<u32>>) -> Vec<u32> {
        items.into_iter().map(|m| *m).collect()
    }

    #[test]
    fn keeps_the_last_messages_within_count_and_bytes() {
        let now = Instant::now();
        let mut h = History::new(limits(3, 100, None));
        for i in 0..10 {
            h.record(Arc::new(i), 10, now);
        }
        assert_eq!(values(h.latest(2, now)), vec![8, 9]);
        assert_eq!(values(h.latest(5, now)), vec![7, 8, 9], "at most 3 kept");
        let mut h = History::new(limits(100, 25, None));
        for i in 0..10 {
            h.record(Arc::new(i), 10, now);
        }
        assert_eq!(
            values(h.latest(100, now)),
            vec![8, 9],
            "at most 25 bytes kept"
        );
        h.record(Arc::new(10), 30, now);
        assert_eq!(h.len(), 0, "a message over the byte bound is not kept");
    }

    #[test]
    fn lets_messages_older_than_the_age_go() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut h = History::new(limits(100, 1000, Some(second * 5)));
        for i in 0..10u32 {
            h.record(Arc::new(i), 1, start + second * i);
        }
        let now = start + second * 12;
        assert_eq!(values(h.latest(100, now)), vec![7, 8, 9]);
    }
}
