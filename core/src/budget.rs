//! The `[remote.budget]` table: what one peer, or a crowd of connections, may make a node
//! spend. Remote links and mesh links draw on the same budget.
//!
//! Every peer-driven allocation draws from one of these. Crossing `routes` or `held_bytes`
//! closes that peer's link with a typed reason and a counter; crossing `requests` answers the
//! request `Busy`; crossing `pending_requests` fails the local call `Busy`; `decoded_bytes` is
//! a pace, not a fault: frames wait undecoded until what was decoded has been handed on.
//! Crossing `handshakes`, `links` or `connections_per_peer` refuses the new connection. The
//! node carries on in every case.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A setting outside its rule: the dotted key, the value, the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} is invalid: {reason}")]
pub struct InvalidSetting {
    /// The dotted key, e.g. `remote.budget.routes`.
    pub field: String,
    /// The value given.
    pub value: String,
    /// The rule it breaks, e.g. `must be between 1 and 1048576`.
    pub reason: String,
}

/// The `[remote.budget]` table. See the module docs; each field names its default and range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Bytes decoded (decompressed) from one peer's frames and not yet handed on to
    /// subscribers, services or callers. A frame's declared decompressed size counts before it
    /// is inflated; the next frame waits while the budget is spent (one frame is always
    /// decoded when nothing is in flight). Default 16 MiB; 64 KiB to 16 GiB.
    pub decoded_bytes: usize,
    /// Bytes of one peer's messages held for full local subscribers after that peer was asked
    /// to pause; beyond it the link closes. Default 64 MiB; 64 KiB to 16 GiB.
    pub held_bytes: usize,
    /// Routes one peer may have declared at once: intents, interests and services, over the
    /// hello and every advert. Beyond it the link closes. Default 4096; 1 to 1 048 576.
    pub routes: usize,
    /// Requests from one peer that local services serve at once; further requests are
    /// answered `Busy` at once. Default 64; 1 to 65 536.
    pub requests: usize,
    /// Requests to one peer waiting for their answers; a further call fails `Busy` at once.
    /// Default 1024; 1 to 1 048 576.
    pub pending_requests: usize,
    /// Handshakes (Noise and identity preamble) in progress at once per endpoint; a connection
    /// beyond it is closed at once. Default 64; 1 to 65 536.
    pub handshakes: usize,
    /// Peers with a link at once per endpoint; a new identity beyond it is refused after its
    /// handshake. Default 1024; 1 to 1 048 576.
    pub links: usize,
    /// Connections of one identity waiting to take over its link; more are refused. Default
    /// 4; 1 to 64.
    pub connections_per_peer: usize,
}

/// Which budget a peer or a connection crossed; shown as its config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BudgetKind {
    /// [`BudgetConfig::decoded_bytes`].
    DecodedBytes,
    /// [`BudgetConfig::held_bytes`].
    HeldBytes,
    /// [`BudgetConfig::routes`].
    Routes,
    /// [`BudgetConfig::requests`].
    Requests,
    /// [`BudgetConfig::pending_requests`].
    PendingRequests,
    /// [`BudgetConfig::handshakes`].
    Handshakes,
    /// [`BudgetConfig::links`].
    Links,
    /// [`BudgetConfig::connections_per_peer`].
    ConnectionsPerPeer,
}

impl BudgetKind {
    /// Every kind, in declaration order.
    pub const ALL: [BudgetKind; 8] = [
        Self::DecodedBytes,
        Self::HeldBytes,
        Self::Routes,
        Self::Requests,
        Self::PendingRequests,
        Self::Handshakes,
        Self::Links,
        Self::ConnectionsPerPeer,
    ];

    /// This kind's position in [`BudgetKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The key of this budget in `[remote.budget]`, e.g. `"routes"`.
    pub fn key(self) -> &'static str {
        match self {
            Self::DecodedBytes => "decoded_bytes",
            Self::HeldBytes => "held_bytes",
            Self::Routes => "routes",
            Self::Requests => "requests",
            Self::PendingRequests => "pending_requests",
            Self::Handshakes => "handshakes",
            Self::Links => "links",
            Self::ConnectionsPerPeer => "connections_per_peer",
        }
    }
}

impl fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "remote.budget.{}", self.key())
    }
}

/// Smallest accepted byte budget: one read.
const MIN_BYTES: usize = 64 * 1024;
/// Largest accepted byte budget.
const MAX_BYTES: usize = 16 << 30;

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            decoded_bytes: 16 << 20,
            held_bytes: 64 << 20,
            routes: 4096,
            requests: 64,
            pending_requests: 1024,
            handshakes: 64,
            links: 1024,
            connections_per_peer: 4,
        }
    }
}

impl BudgetConfig {
    /// The value of one budget.
    pub fn get(&self, kind: BudgetKind) -> usize {
        match kind {
            BudgetKind::DecodedBytes => self.decoded_bytes,
            BudgetKind::HeldBytes => self.held_bytes,
            BudgetKind::Routes => self.routes,
            BudgetKind::Requests => self.requests,
            BudgetKind::PendingRequests => self.pending_requests,
            BudgetKind::Handshakes => self.handshakes,
            BudgetKind::Links => self.links,
            BudgetKind::ConnectionsPerPeer => self.connections_per_peer,
        }
    }

    /// Checks every budget against its range (for budgets built in code).
    ///
    /// # Errors
    /// The first [`InvalidSetting`], naming the key (`remote.budget.routes`) and value;
    /// [`BudgetConfig::problems`] lists them all.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every budget outside its range.
    pub fn problems(&self) -> Vec<InvalidSetting> {
        let mut problems = Vec::new();
        for kind in BudgetKind::ALL {
            let (min, max) = match kind {
                BudgetKind::DecodedBytes | BudgetKind::HeldBytes => (MIN_BYTES, MAX_BYTES),
                BudgetKind::Requests | BudgetKind::Handshakes => (1, 65_536),
                BudgetKind::ConnectionsPerPeer => (1, 64),
                _ => (1, 1 << 20),
            };
            let value = self.get(kind);
            if value < min || value > max {
                problems.push(InvalidSetting {
                    field: kind.to_string(),
                    value: value.to_string(),
                    reason: format!("must be between {min} and {max}"),
                });
            }
        }
        problems
    }
}
