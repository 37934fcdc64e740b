//! dndm remote links (not yet implemented: this crate has no public API yet; see the remote-links issue).
