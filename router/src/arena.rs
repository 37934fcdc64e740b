//! Where an intent encodes its messages for peers: slices of one shared chunk.
//!
//! Encoding each message into its own `Vec` costs an allocation on the publisher's thread, a
//! second one the first time the `Bytes` is cloned (it is promoted to shared), and two frees on
//! whichever thread drops the last copy, usually a link task's (a cross-thread free, which
//! takes the allocator's arena lock). Small messages are therefore encoded back to back into
//! a chunk of [`CHUNK`] bytes and handed out as slices of it: no allocation per message, and a
//! clone is one atomic increment.
//!
//! The chunk is per intent, so what one route's messages keep alive is a run of that route's
//! messages: a peer that holds messages back pins at most one partly used chunk beyond the
//! bytes it holds. Messages larger than [`LARGEST`] get their own buffer (they would waste
//! most of a chunk). Chunks start small and double as they fill, and a few are kept to be
//! used again once all their messages are dropped ([`dndm_core::recycle`]).

use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use dndm_core::recycle::Recycler;
use prost::Message;

/// Bytes of one chunk.
pub(crate) const CHUNK: usize = 64 * 1024;
/// The largest encoded message taken from a chunk.
pub(crate) const LARGEST: usize = CHUNK / 8;

/// Bytes of an intent's first chunk: the chunks double up to [`CHUNK`] as they fill, so an
/// intent that sends little holds little.
const FIRST: usize = 4 * 1024;
/// Chunks kept for reuse once every message in them is dropped (see
/// [`dndm_core::recycle`]): without them, each new chunk is fresh memory faulted in.
const SPARES: usize = 4;

/// One intent's chunk; see the module docs.
#[derive(Debug)]
pub(crate) struct Arena {
    chunk: Mutex<(BytesMut, Recycler)>,
}

impl Default for Arena {
    fn default() -> Self {
        Self {
            chunk: Mutex::new((BytesMut::new(), Recycler::growing(FIRST, CHUNK, SPARES))),
        }
    }
}

impl Arena {
    /// `message`, encoded.
    pub(crate) fn encode<M: Message>(&self, message: &M) -> Bytes {
        let len = message.encoded_len();
        if len > LARGEST {
            return Bytes::from(message.encode_to_vec());
        }
        // Another thread sending on the same intent at this instant: encode apart rather than
        // wait for it.
        let Ok(mut guard) = self.chunk.try_lock() else {
            return Bytes::from(message.encode_to_vec());
        };
        let (chunk, recycler) = &mut *guard;
        // The old chunk lives on in the slices handed out, and is taken again once they are
        // all dropped.
        recycler.make_room(chunk, len);
        // Cannot fail: a `BytesMut` grows as needed, and has the room anyway.
        message
            .encode(chunk)
            .unwrap_or_else(|_| unreachable!("a chunk with room for {len} bytes"));
        chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Blob {
        #[prost(uint64, tag = "1")]
        seq: u64,
        #[prost(bytes = "vec", tag = "2")]
        data: Vec<u8>,
    }

    fn blob(seq: u64, len: usize) -> Blob {
        Blob {
            seq,
            data: (0..len).map(|i| (i as u64 ^ seq) as u8).collect(),
        }
    }

    #[test]
    fn every_message_decodes_to_itself_across_chunk_boundaries() {
        let arena = Arena::default();
        let sizes = [0, 1, 7, 100, 1000, LARGEST - 8, LARGEST + 1, CHUNK * 2];
        let mut kept = Vec::new();
        for seq in 0..2000u64 {
            let message = blob(seq, sizes[seq as usize % sizes.len()]);
            let bytes = arena.encode(&message);
            assert_eq!(bytes.len(), message.encoded_len());
            kept.push((message, bytes));
        }
        // Later messages never overwrote earlier ones.
        for (message, bytes) in kept {
            assert_eq!(Blob::decode(bytes).ok(), Some(message));
        }
    }

    #[test]
    fn small_messages_share_a_chunk_and_large_ones_do_not() {
        let arena = Arena::default();
        let a = arena.encode(&blob(1, 10));
        let b = arena.encode(&blob(2, 10));
        // Back to back in one chunk.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let large = arena.encode(&blob(3, LARGEST));
        let c = arena.encode(&blob(4, 10));
        assert_ne!(b.as_ptr().wrapping_add(b.len()), large.as_ptr());
        assert_eq!(b.as_ptr().wrapping_add(b.len()), c.as_ptr());
    }
}
