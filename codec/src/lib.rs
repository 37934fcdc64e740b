//! dndm wire codec (not yet implemented: this crate has no public API yet; see the codec issue).
