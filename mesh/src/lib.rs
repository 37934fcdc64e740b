//! dndm libp2p mesh (not yet implemented: this crate has no public API yet; see the mesh issue).
