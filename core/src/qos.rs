//! Quality of service of an intent.

use serde::{Deserialize, Serialize};

/// Whether network links acknowledge and retransmit an intent's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    /// Sent once; a message lost on the network is counted, not retransmitted.
    #[default]
    BestEffort,
    /// Acknowledged and retransmitted; nothing is lost across reconnects while the retransmit
    /// budget holds, and beyond it the publisher is back-pressured or gets an error.
    Reliable,
}

/// Quality of service chosen per intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Qos {
    /// Delivery guarantee on network links. In-process delivery is always lossless up to the
    /// subscriber's queue policy.
    pub reliability: Reliability,
}

impl Qos {
    /// Best effort: no acknowledgements (the default).
    pub const fn best_effort() -> Self {
        Self {
            reliability: Reliability::BestEffort,
        }
    }

    /// Reliable: acknowledged, retransmitted, resumed across reconnects.
    pub const fn reliable() -> Self {
        Self {
            reliability: Reliability::Reliable,
        }
    }

    /// Whether this is [`Reliability::Reliable`].
    pub const fn is_reliable(&self) -> bool {
        matches!(self.reliability, Reliability::Reliable)
    }
}
