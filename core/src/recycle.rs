//! Buffers handed out in slices, and taken again once every slice is gone.
//!
//! Messages are often slices of one large buffer (decrypted input, an encoding chunk), so that
//! buffer lives until the last of them is dropped. Growing it past a slice still held
//! allocates a new one, and with a steady stream that means a large allocation made and freed
//! again and again, often on another thread: what glibc's allocator hands back to the kernel
//! and then faults back in, page by page (about 8 % of a receiver's time at 1 KiB messages,
//! docs/benchmarks.md). [`Recycler`] keeps the buffers left behind and takes the first one
//! that all its slices have left ([`BytesMut::try_reclaim`]) before it allocates.

use std::collections::VecDeque;

use bytes::BytesMut;

/// Buffers left behind, oldest first; see the module docs.
#[derive(Debug)]
pub struct Recycler {
    spares: VecDeque<BytesMut>,
    /// Size of the next new buffer.
    size: usize,
    max: usize,
    keep: usize,
}

impl Recycler {
    /// New buffers of `size` bytes (or what an input needs, if more); at most `keep` kept.
    pub fn new(size: usize, keep: usize) -> Self {
        Self::growing(size, size, keep)
    }

    /// New buffers of `first` bytes, each one twice the last up to `max` (or what an input
    /// needs, if more), so that a buffer that sees little use stays small; at most `keep`
    /// kept.
    pub fn growing(first: usize, max: usize, keep: usize) -> Self {
        Self {
            spares: VecDeque::with_capacity(keep),
            size: first.min(max),
            max,
            keep,
        }
    }

    /// Makes room for `needed` more bytes in `buf`, keeping what it holds.
    pub fn make_room(&mut self, buf: &mut BytesMut, needed: usize) {
        if buf.capacity() - buf.len() >= needed || buf.try_reclaim(needed) {
            return;
        }
        let size = self.size.max(buf.len() + needed);
        let mut next = self.reclaimed(size).unwrap_or_else(|| {
            self.size = (self.size * 2).min(self.max);
            BytesMut::with_capacity(size)
        });
        next.extend_from_slice(buf);
        let mut old = std::mem::replace(buf, next);
        old.clear();
        if self.keep == 0 {
            return;
        }
        if self.spares.len() >= self.keep {
            self.spares.pop_front();
        }
        self.spares.push_back(old);
    }

    /// A kept buffer with room for `size` bytes that no slice holds any more.
    fn reclaimed(&mut self, size: usize) -> Option<BytesMut> {
        let at = self
            .spares
            .iter_mut()
            .position(|spare| spare.try_reclaim(size))?;
        self.spares.remove(at)
    }

    /// Forgets every kept buffer.
    pub fn clear(&mut self) {
        self.spares.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUFFER: usize = 256 * 1024;
    const SPARES: usize = 3;

    #[test]
    fn a_buffer_whose_slices_are_gone_is_used_again() {
        let mut spares = Recycler::new(BUFFER, SPARES);
        let mut plain = BytesMut::new();
        spares.make_room(&mut plain, 100);
        let first = plain.as_ptr();
        plain.extend_from_slice(&[7; 100]);
        let held = plain.split_to(60).freeze();
        // Fill the rest of the buffer and keep part of it: the next input needs another.
        let rest = plain.capacity() - plain.len();
        plain.extend_from_slice(&vec![1; rest]);
        let tail = plain.split_to(plain.len() - 10).freeze();
        spares.make_room(&mut plain, 1000);
        assert_ne!(plain.as_ptr(), first, "the first buffer is still held");
        assert_eq!(&plain[..], &[1; 10], "what it held moved along");
        // Fill the second one too while the first is still held: a third is allocated.
        let rest = plain.capacity() - plain.len();
        plain.extend_from_slice(&vec![2; rest]);
        let second = plain.split().freeze();
        drop((held, tail));
        spares.make_room(&mut plain, 1000);
        assert_eq!(
            plain.as_ptr(),
            first,
            "the first buffer, now free, is taken again"
        );
        assert_eq!(second[0], 1);
    }

    #[test]
    fn growing_buffers_double_up_to_the_most() {
        let mut recycler = Recycler::growing(1024, 4096, 0);
        let mut buf = BytesMut::new();
        let mut sizes = Vec::new();
        let mut held = Vec::new();
        for _ in 0..4 {
            recycler.make_room(&mut buf, 1);
            sizes.push(buf.capacity());
            let rest = buf.capacity() - buf.len();
            buf.extend_from_slice(&vec![0; rest]);
            held.push(buf.split().freeze());
        }
        assert_eq!(sizes, [1024, 2048, 4096, 4096]);
    }

    #[test]
    fn an_input_larger_than_a_buffer_gets_room() {
        let mut spares = Recycler::new(BUFFER, SPARES);
        let mut plain = BytesMut::new();
        plain.extend_from_slice(b"abc");
        spares.make_room(&mut plain, BUFFER * 2);
        assert!(plain.capacity() - plain.len() >= BUFFER * 2);
        assert_eq!(&plain[..], b"abc");
    }

    #[test]
    fn at_most_spares_buffers_are_kept() {
        let mut spares = Recycler::new(BUFFER, SPARES);
        let mut plain = BytesMut::new();
        let mut held = Vec::new();
        for _ in 0..10 {
            spares.make_room(&mut plain, BUFFER);
            let rest = plain.capacity() - plain.len();
            plain.extend_from_slice(&vec![0; rest]);
            held.push(plain.split().freeze());
        }
        assert!(spares.spares.len() <= SPARES);
    }
}
