//! The ring against a sequential model: one `Block` and one `DropOldest` reader, random
//! sends, forced sends and reads, on a ring small enough to wrap often.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;
use crate::queue::{Queue, Receiver};
use dndm_core::Overflow;

#[derive(Debug, Clone, Copy)]
enum Op {
    Offer,
    Force,
    PopBlock,
    PopOldest,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Offer),
        1 => Just(Op::Force),
        2 => Just(Op::PopBlock),
        2 => Just(Op::PopOldest),
    ]
}

proptest! {
    #[test]
    fn block_reader_is_exact_and_drop_oldest_reader_is_consistent(
        block_window in 1usize..=8,
        oldest_window in 1usize..=8,
        release_all in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..400),
    ) {
        // `release_all`: every message counts as huge, so the publisher releases each one
        // as soon as both readers passed it (and never one they have not).
        let size: fn(&u64) -> usize = if release_all { |_| RETAIN_BYTES } else { |_| 8 };
        let ring = Arc::new(Ring::new(8, size));
        let block = Arc::new(Queue::new(block_window, Overflow::Block));
        let oldest = Arc::new(Queue::new(oldest_window, Overflow::DropOldest));
        block.link_to(&ring, HandleId(1));
        oldest.link_to(&ring, HandleId(2));
        let (mut block_rx, mut oldest_rx) = (Receiver::new(block), Receiver::new(oldest));
        // Model of the Block reader: every message since its position, and whether it
        // was left out for it.
        let mut pending: VecDeque<(u64, bool)> = VecDeque::new();
        let (mut written, mut last_oldest) = (0u64, None::<u64>);
        for op in ops {
            let unread = pending.iter().filter(|(_, skipped)| !skipped).count();
            let room = unread < block_window && pending.len() < 8;
            match op {
                Op::Offer => {
                    let offered = ring.offer(Arc::new(written));
                    prop_assert_eq!(offered.is_ok(), room, "room decides");
                    if room {
                        pending.push_back((written, false));
                        written += 1;
                    }
                }
                Op::Force if pending.len() < 8 => {
                    let left_out = ring.force(Arc::new(written));
                    prop_assert_eq!(left_out, usize::from(!room));
                    pending.push_back((written, !room));
                    written += 1;
                }
                Op::Force => {}
                Op::PopBlock => {
                    while pending.front().is_some_and(|(_, skipped)| *skipped) {
                        pending.pop_front();
                    }
                    let expected = pending.pop_front().map(|(seq, _)| seq);
                    let got = block_rx.try_pop().ok().map(|m| *m);
                    prop_assert_eq!(got, expected, "Block: exactly the model's next");
                }
                Op::PopOldest => {
                    if let Ok(m) = oldest_rx.try_pop() {
                        prop_assert!(*m < written, "only written messages");
                        prop_assert!(last_oldest.is_none_or(|l| *m > l), "in order, once");
                        prop_assert!(
                            *m + oldest_window as u64 >= written,
                            "DropOldest: one of the newest {} (got {}, written {})",
                            oldest_window, *m, written
                        );
                        last_oldest = Some(*m);
                    }
                }
            }
            let (len, counters) = block_rx.queue().stats();
            prop_assert_eq!(len, pending.iter().filter(|(_, s)| !s).count());
            prop_assert_eq!(counters.dropped_oldest, 0, "Block never drops");
            let (len, counters) = oldest_rx.queue().stats();
            prop_assert!(len <= oldest_window);
            prop_assert_eq!(counters.accepted, written, "every message accounted for");
        }
    }
}
