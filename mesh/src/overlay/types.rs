//! The machine's vocabulary: its tuning, the batches it carries, the frames neighbours
//! exchange, the actions it asks for, and what it shows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dndm_core::Route;

use super::Seq;

/// Tuning of the dissemination machine.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverlayConfig {
    /// Batches of each carried stream kept to serve children that join or switch (repair).
    pub cache_batches: usize,
    /// Bytes of payload kept per carried stream, at most (whichever bound is hit first).
    pub cache_bytes: usize,
    /// How often an origin announces its routes again (new epoch). Announcements expire after
    /// three refresh periods without one.
    pub refresh: Duration,
    /// Longest path, in hops; longer announcements are ignored.
    pub max_hops: u8,
    /// How long an origin keeps numbering and caching a route's batches after its last child
    /// left. A child that switches paths rejoins within it and misses nothing; past it the
    /// route is no longer wanted (and batches are no longer numbered).
    pub linger: Duration,
    /// A `Join` its parent has not answered within this long is sent again (the parent
    /// answers a repeated `Join` like the first).
    pub join_retry: Duration,
}

impl Default for OverlayConfig {
    fn default() -> Self {
        Self {
            cache_batches: 1024,
            cache_bytes: 8 << 20,
            refresh: Duration::from_secs(30),
            max_hops: 32,
            linger: Duration::from_secs(30),
            join_retry: Duration::from_secs(5),
        }
    }
}

/// A batch of messages of one stream, as published by its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<P> {
    /// The publishing node.
    pub origin: P,
    /// The route published on.
    pub route: Route,
    /// Sequence number of the first payload; the others follow.
    pub first: Seq,
    /// Encoded messages.
    pub payloads: Vec<Bytes>,
    /// The origin's authentication of the batch (opaque here; a signature in the mesh).
    pub auth: Bytes,
}

impl<P> Batch<P> {
    /// One past the last sequence number in the batch.
    pub fn end(&self) -> Seq {
        self.first + self.payloads.len() as Seq
    }

    /// Payload bytes.
    pub fn bytes(&self) -> usize {
        self.payloads.iter().map(Bytes::len).sum()
    }
}

/// What neighbours say to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<P> {
    /// `origin` publishes `route`; the sender is `hops` away from it ([`UNREACHABLE`](super::UNREACHABLE): no
    /// longer). `alive = false` withdraws the route.
    Announce {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
        /// The origin's announcement epoch: newer ones supersede older ones.
        epoch: u64,
        /// The sender's distance to the origin.
        hops: u8,
        /// False: the origin withdrew the route.
        alive: bool,
    },
    /// Make me your child on this stream; send me batches from `from` on (`None`: from now).
    Join {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
        /// The first sequence number wanted.
        from: Option<Seq>,
    },
    /// You are my child: every batch from `next` on will reach you.
    Joined {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
        /// The `from` of the `Join` answered.
        from: Option<Seq>,
        /// The first sequence number you will get.
        next: Seq,
    },
    /// I am no longer your child on this stream.
    Leave {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
    },
    /// A batch, forwarded unchanged from the origin.
    Data(Arc<Batch<P>>),
    /// Sequence numbers `first..end` of the stream will never come (no cache holds them).
    Gap {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
        /// First missing sequence number.
        first: Seq,
        /// One past the last missing one.
        end: Seq,
    },
    /// I lost my path to `origin`: announce an epoch newer than `epoch`. Forwarded toward the
    /// origin.
    Refresh {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
        /// The newest epoch the asker knows.
        epoch: u64,
    },
}

/// What the machine asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Send a frame to a neighbour (in order, reliably, on the link to it).
    Send {
        /// The neighbour.
        to: P,
        /// The frame.
        frame: Frame<P>,
    },
    /// A remote stream now reaches this node's subscribers: every batch from here on will be
    /// delivered (or reported lost).
    Linked {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
    },
    /// A remote stream no longer reaches this node (withdrawn, expired, or no subscriber left).
    Unlinked {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
    },
    /// Deliver `batch.payloads[skip..]` to local subscribers of `batch.route`.
    Deliver {
        /// The batch.
        batch: Arc<Batch<P>>,
        /// Payloads at the front already delivered.
        skip: usize,
        /// Hops the batch travelled.
        hops: u8,
    },
    /// `count` messages of a linked stream will never arrive.
    Lost {
        /// The publisher.
        origin: P,
        /// Its route.
        route: Route,
        /// How many.
        count: u64,
    },
    /// Some node joined the tree of a local route: start handing its messages to
    /// [`Overlay::publish`](super::Overlay::publish).
    Wanted(Route),
    /// Nobody is in the tree of a local route any more.
    Unwanted(Route),
}

/// Counters of one node's dissemination machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OverlayStats {
    /// Batches received from a parent and carried (delivered or forwarded).
    pub received: u64,
    /// Batches received again (already had them): the cost of repairs and parent switches.
    pub duplicates: u64,
    /// Batches from a neighbour that is not (or no longer) the parent, ignored.
    pub stale: u64,
    /// Batch copies sent to children.
    pub forwarded: u64,
    /// Messages reported lost to local subscribers.
    pub lost: u64,
    /// Parent changes.
    pub parent_switches: u64,
    /// Epoch refreshes asked for.
    pub refreshes_asked: u64,
    /// `Join`s sent again because the parent had not answered ([`OverlayConfig::join_retry`]).
    pub joins_retried: u64,
}

/// One stream as a node sees it ([`Overlay::streams`](super::Overlay::streams)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfo<P> {
    /// The publisher.
    pub origin: P,
    /// Its route.
    pub route: Route,
    /// This node's distance to the origin ([`UNREACHABLE`](super::UNREACHABLE): no path now).
    pub hops: u8,
    /// The newest announcement epoch heard.
    pub epoch: u64,
    /// The neighbour toward the origin.
    pub parent: Option<P>,
    /// In the tree (a `Join` went to the parent).
    pub joined: bool,
    /// The parent answered the latest `Join`.
    pub confirmed: bool,
    /// Neighbours this node forwards the stream to.
    pub children: usize,
    /// A local subscription matches.
    pub subscribed: bool,
    /// The next sequence number expected.
    pub next: Option<Seq>,
    /// Batches kept for repairs.
    pub cached: usize,
}
