//! Small setting types shared by the components: a queue's overflow policy and when remote
//! links sign. (The node's file schema maps onto them; it lives with the command-line tool.)

use serde::{Deserialize, Serialize};

/// Batches at least this long (their encoded body, in bytes) are considered for zstd by default:
/// the one default of `remote.compression_threshold` and of `dndm_codec::Compression`.
pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 512;

/// What a full queue does with a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Drop the oldest queued message to make room (counted as a drop). The default: slow
    /// subscribers see the newest data.
    #[default]
    DropOldest,
    /// Drop the new message (counted as a drop); the queue keeps the oldest data.
    DropNewest,
    /// Make the sender wait for room, up to `router.send_timeout_ms`.
    Block,
}

/// Whether remote links sign what they send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signing {
    /// Sign every batch with the node's ed25519 identity and require the peer to do the same
    /// (each of its batches is verified before it is decoded): for links whose messages must
    /// stay verifiable after they leave the link (recorded, relayed, cached). Peers see it in
    /// the hello and sign for this node too.
    Batch,
    /// Sign and verify batches only on sessions whose peer runs [`Signing::Batch`]. Otherwise
    /// the link's own authentication (Noise on remote links, libp2p's Noise on the mesh) proves
    /// every frame to this peer, and no signature costs time on the way. The default.
    #[default]
    OnRequest,
    /// Never sign; a peer that requires signatures is refused at its hello. Only for trusted
    /// networks (the handshake still authenticates the peer).
    Off,
}
