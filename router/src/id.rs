//! Names of things in one router: handle ids and where a handle lives. The bottom of the
//! router's module graph (it imports nothing of the crate).

use std::fmt;

use dndm_core::PeerId;

/// Identifies an intent, an interest or a service within one router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandleId(pub(crate) u64);

impl HandleId {
    /// The numeric id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for HandleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where the other side of a link lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Origin {
    /// In this router.
    Local,
    /// At a peer reached through an endpoint.
    Peer(PeerId),
}
