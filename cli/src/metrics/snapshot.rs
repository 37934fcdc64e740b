//! The node's state as served at `/snapshot` ([`NodeSnapshot`]): the router's [`Snapshot`] in
//! serializable form plus the endpoints' addresses and counters, taken from the [`Observed`]
//! parts of a running node.

use std::collections::BTreeMap;

use dndm::mesh::MeshEndpoint;
use dndm::remote::backoff::BreakerState;
use dndm::remote::endpoint::RemoteEndpoint;
use dndm::{Origin, PeerId, Router, Snapshot};
use serde::{Deserialize, Serialize};

/// The parts of a running node that are observed.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub(crate) router: Router,
    pub(crate) peer_id: PeerId,
    pub(crate) mesh: Option<MeshEndpoint>,
    pub(crate) remote: Option<RemoteEndpoint>,
}

impl Observed {
    /// A consistent copy of the router's state plus the endpoints' addresses and counters.
    pub(crate) fn snapshot(&self) -> NodeSnapshot {
        let mut listening = Vec::new();
        if let Some(mesh) = &self.mesh {
            listening.extend(
                mesh.listening()
                    .iter()
                    .map(|a| format!("{a}/p2p/{}", self.peer_id)),
            );
        }
        if let Some(remote) = &self.remote {
            listening.extend(remote.bound().iter().map(ToString::to_string));
        }
        let remote = self
            .remote
            .as_ref()
            .map(|r| RemoteStatsView::from(r.stats()));
        let mesh = self.mesh.as_ref().map(|m| RemoteStatsView::from(m.stats()));
        let mut snapshot =
            NodeSnapshot::new(self.router.snapshot(), self.peer_id, listening, remote);
        snapshot.mesh = mesh;
        if let Some(remote) = &self.remote {
            snapshot.breakers = remote
                .dials()
                .into_iter()
                .map(|dial| BreakerView {
                    target: dial.target.to_string(),
                    open: matches!(dial.breaker, BreakerState::Open { .. }),
                    failures: dial.failures,
                })
                .collect();
        }
        if let Some(mesh) = &self.mesh {
            let stats = mesh.mesh_stats();
            snapshot.mesh_connections = Some(MeshStatsView {
                refused_not_allowed: stats.refused_not_allowed,
                refused_over_limit: stats.refused_over_limit,
                dials_not_allowed: stats.dials_not_allowed,
            });
            snapshot.reachability = Some(mesh.reachability().to_string());
            snapshot.relays = mesh
                .relay_reservations()
                .iter()
                .map(|r| match (&r.error, r.reserved) {
                    (_, true) => format!("{} reserved", r.relay),
                    (Some(why), false) => format!("{} not reserved: {why}", r.relay),
                    (None, false) => format!("{} not reserved yet", r.relay),
                })
                .collect();
        }
        snapshot
    }
}

/// A node's state as served at `/snapshot`: the router [`Snapshot`] in serializable form, plus
/// the node's PeerId, listen addresses and remote-link counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeSnapshot {
    pub(crate) node: String,
    pub(crate) peer_id: String,
    pub(crate) closed: bool,
    /// Mesh multiaddrs (with `/p2p/<PeerId>`) and remote-link listen addresses.
    pub(crate) listening: Vec<String>,
    pub(crate) endpoints: Vec<String>,
    pub(crate) intents: Vec<IntentView>,
    pub(crate) interests: Vec<InterestView>,
    pub(crate) links: Vec<LinkView>,
    pub(crate) services: Vec<String>,
    pub(crate) peers: Vec<PeerView>,
    pub(crate) fingerprint_mismatches: u64,
    pub(crate) type_mismatches: u64,
    /// Matches refused because the schemas conflict. Missing (0) in snapshots of older nodes.
    #[serde(default)]
    pub(crate) schema_conflicts: u64,
    /// Links made between two compatible versions of a type. Missing (0) in older snapshots.
    #[serde(default)]
    pub(crate) compatible_links: u64,
    /// Counters of the remote-link endpoint, when one is attached.
    pub(crate) remote: Option<RemoteStatsView>,
    /// Session counters of the mesh endpoint, if any.
    #[serde(default)]
    pub(crate) mesh: Option<RemoteStatsView>,
    /// Whether peers can reach this node directly (AutoNAT's verdict), with a mesh.
    #[serde(default)]
    pub(crate) reachability: Option<String>,
    /// The node's relay reservations: `<relay> reserved`, or `<relay> not reserved: <why>`.
    #[serde(default)]
    pub(crate) relays: Vec<String>,
    /// Counters of the mesh's libp2p layer, with a mesh. Missing in snapshots of older nodes.
    #[serde(default)]
    pub(crate) mesh_connections: Option<MeshStatsView>,
    /// The remote-link dial targets and their circuit breakers. Missing (empty) in snapshots of
    /// older nodes.
    #[serde(default)]
    pub(crate) breakers: Vec<BreakerView>,
    /// Why the node is not ready (empty when it is), computed from this very snapshot, as
    /// `/readyz` would answer. Missing in snapshots of older nodes.
    #[serde(default)]
    pub(crate) not_ready: Option<Vec<String>>,
}

/// A dial target's circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BreakerView {
    /// The target, e.g. `tcp:10.0.0.5:7000`.
    pub(crate) target: String,
    /// Whether dials to it wait out a cool-down.
    pub(crate) open: bool,
    /// Consecutive failed dials.
    pub(crate) failures: u32,
}

/// Counters of the mesh's libp2p layer (`MeshStats`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct MeshStatsView {
    /// Incoming connections of peers not on the allow-list.
    pub(crate) refused_not_allowed: u64,
    /// Incoming connections refused by a connection limit.
    pub(crate) refused_over_limit: u64,
    /// Dials the allow-list refused.
    pub(crate) dials_not_allowed: u64,
}

/// One intent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IntentView {
    pub(crate) id: u64,
    pub(crate) route: String,
    pub(crate) fingerprint: String,
    pub(crate) reliable: bool,
    /// `local`, or the declaring peer's id.
    pub(crate) origin: String,
    pub(crate) subscribers: usize,
    pub(crate) sent: u64,
    pub(crate) send_failures: u64,
    /// Messages that reached no peer subscriber (local intents). Missing in snapshots of older
    /// nodes.
    #[serde(default)]
    pub(crate) undelivered: u64,
    /// `undelivered` by reason (`Undelivered::as_str()` → count), non-zero reasons only.
    /// Missing (empty) in snapshots of older nodes.
    #[serde(default)]
    pub(crate) undelivered_by_reason: BTreeMap<String, u64>,
    /// What peers' subscribers reported about this intent's messages. Missing (empty) in
    /// snapshots of older nodes.
    #[serde(default)]
    pub(crate) peer_feedback: Vec<PeerFeedbackView>,
}

/// What one peer's subscribers reported about an intent's messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerFeedbackView {
    pub(crate) peer: String,
    /// Messages its subscribers dropped (full queues), in total.
    pub(crate) dropped: u64,
    /// The fullest subscriber's queue at the last report.
    pub(crate) lag: u64,
    pub(crate) capacity: u64,
}

/// One interest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InterestView {
    pub(crate) id: u64,
    pub(crate) pattern: String,
    pub(crate) fingerprint: String,
    /// `local`, or the declaring peer's id.
    pub(crate) origin: String,
    pub(crate) publishers: usize,
    /// Local interests only.
    pub(crate) queue: Option<QueueView>,
}

/// A local interest's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueueView {
    pub(crate) len: usize,
    pub(crate) capacity: usize,
    pub(crate) overflow: String,
    pub(crate) accepted: u64,
    pub(crate) delivered: u64,
    pub(crate) dropped_oldest: u64,
    pub(crate) dropped_newest: u64,
    pub(crate) decode_errors: u64,
}

/// One link: intent id to interest id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LinkView {
    pub(crate) intent: u64,
    pub(crate) interest: u64,
    /// `identical`, or `compatible` with the fields only one side has (`+4` the publisher's,
    /// `-3` the subscriber's). Missing in snapshots of older nodes.
    #[serde(default = "identical")]
    pub(crate) compatibility: String,
}

fn identical() -> String {
    "identical".to_owned()
}

/// A link's compatibility as `/snapshot` shows it.
fn compatibility_text(compatibility: &dndm::core::Compatibility) -> String {
    match compatibility {
        dndm::core::Compatibility::Compatible { added, removed } => {
            let fields: Vec<String> = added
                .iter()
                .map(|f| format!("+{f}"))
                .chain(removed.iter().map(|f| format!("-{f}")))
                .collect();
            format!("compatible ({})", fields.join(" "))
        }
        _ => identical(),
    }
}

/// One peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerView {
    pub(crate) peer: String,
    pub(crate) endpoint: String,
    pub(crate) addresses: Vec<String>,
    pub(crate) connected: bool,
    pub(crate) rtt_us: Option<u64>,
    pub(crate) messages_sent: u64,
    pub(crate) messages_received: u64,
    pub(crate) failures: u64,
    pub(crate) path: Option<String>,
    /// Session figures of [`dndm::core::PeerInfo`]; missing (0) in snapshots of older nodes.
    #[serde(default)]
    pub(crate) acked: u64,
    #[serde(default)]
    pub(crate) undelivered: u64,
    #[serde(default)]
    pub(crate) retransmitted: u64,
    #[serde(default)]
    pub(crate) unacked: u64,
    #[serde(default)]
    pub(crate) batches_sent: u64,
    #[serde(default)]
    pub(crate) bytes_sent: u64,
    #[serde(default)]
    pub(crate) pauses_sent: u64,
    #[serde(default)]
    pub(crate) pauses_received: u64,
}

/// Counters of a remote-link endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RemoteStatsView {
    pub(crate) handshake_failures: u64,
    pub(crate) link_failures: u64,
    pub(crate) dial_failures: u64,
    pub(crate) refused_routes: u64,
    pub(crate) signature_failures: u64,
    pub(crate) bad_frames: u64,
    /// Connections closed because a Noise transport message did not decrypt. Always 0 for the
    /// mesh, whose streams libp2p decrypts. Missing in snapshots of older nodes.
    #[serde(default)]
    pub(crate) decrypt_failures: u64,
    /// Messages of local intents given up on any link of the endpoint (kept when a link goes).
    /// This and the next two are missing (0) in snapshots of older nodes.
    #[serde(default)]
    pub(crate) undelivered: u64,
    /// Peers retired after staying away past their grace period.
    #[serde(default)]
    pub(crate) retired_peers: u64,
    /// Peer messages dropped because the peer kept sending on a route it was asked to pause.
    #[serde(default)]
    pub(crate) flow_overruns: u64,
    /// Times each `[remote.budget]` budget was crossed, by its key (`routes`, `handshakes`...).
    /// Missing (empty) in snapshots of older nodes.
    #[serde(default)]
    pub(crate) over_budget: BTreeMap<String, u64>,
}

impl From<dndm::remote::endpoint::RemoteStats> for RemoteStatsView {
    fn from(stats: dndm::remote::endpoint::RemoteStats) -> Self {
        Self {
            handshake_failures: stats.handshake_failures,
            link_failures: stats.link_failures,
            dial_failures: stats.dial_failures,
            refused_routes: stats.refused_routes,
            signature_failures: stats.signature_failures,
            bad_frames: stats.bad_frames,
            decrypt_failures: stats.decrypt_failures,
            undelivered: stats.undelivered,
            retired_peers: stats.retired_peers,
            flow_overruns: stats.flow_overruns,
            over_budget: stats
                .over_budget
                .iter()
                .map(|(kind, count)| (kind.key().to_owned(), count))
                .collect(),
        }
    }
}

impl NodeSnapshot {
    fn new(
        snapshot: Snapshot,
        peer_id: PeerId,
        listening: Vec<String>,
        remote: Option<RemoteStatsView>,
    ) -> Self {
        let origin = |origin: &Origin| match origin {
            Origin::Local => "local".to_owned(),
            Origin::Peer(peer) => peer.to_string(),
            other => format!("{other:?}"),
        };
        Self {
            node: snapshot.node.clone(),
            peer_id: peer_id.to_string(),
            closed: snapshot.closed,
            listening,
            endpoints: snapshot.endpoints.clone(),
            intents: snapshot
                .intents
                .iter()
                .map(|i| IntentView {
                    id: i.id.get(),
                    route: i.route.to_string(),
                    fingerprint: i.fingerprint.to_string(),
                    reliable: i.qos.is_reliable(),
                    origin: origin(&i.origin),
                    subscribers: i.subscribers,
                    sent: i.sent,
                    send_failures: i.send_failures,
                    undelivered: i.undelivered,
                    undelivered_by_reason: i
                        .undelivered_by_reason
                        .iter()
                        .map(|(reason, count)| (reason.as_str().to_owned(), *count))
                        .collect(),
                    peer_feedback: i
                        .peer_feedback
                        .iter()
                        .map(|(peer, f)| PeerFeedbackView {
                            peer: peer.to_string(),
                            dropped: f.dropped_oldest + f.dropped_newest,
                            lag: f.lag,
                            capacity: f.capacity,
                        })
                        .collect(),
                })
                .collect(),
            interests: snapshot
                .interests
                .iter()
                .map(|i| InterestView {
                    id: i.id.get(),
                    pattern: i.pattern.to_string(),
                    fingerprint: i.fingerprint.to_string(),
                    origin: origin(&i.origin),
                    publishers: i.publishers,
                    queue: i.queue.as_ref().map(|q| QueueView {
                        len: q.len,
                        capacity: q.capacity,
                        overflow: format!("{:?}", q.overflow),
                        accepted: q.accepted,
                        delivered: q.delivered,
                        dropped_oldest: q.dropped_oldest,
                        dropped_newest: q.dropped_newest,
                        decode_errors: q.decode_errors,
                    }),
                })
                .collect(),
            links: snapshot
                .links
                .iter()
                .map(|l| LinkView {
                    intent: l.intent.get(),
                    interest: l.interest.get(),
                    compatibility: compatibility_text(&l.compatibility),
                })
                .collect(),
            services: snapshot.services.iter().map(ToString::to_string).collect(),
            peers: snapshot
                .peers
                .iter()
                .map(|p| PeerView {
                    peer: p.peer.to_string(),
                    endpoint: p.endpoint.clone(),
                    addresses: p.addresses.clone(),
                    connected: p.connected,
                    rtt_us: p
                        .rtt
                        .map(|r| u64::try_from(r.as_micros()).unwrap_or(u64::MAX)),
                    messages_sent: p.messages_sent,
                    messages_received: p.messages_received,
                    failures: p.failures,
                    path: p.path.clone(),
                    acked: p.acked,
                    undelivered: p.undelivered,
                    retransmitted: p.retransmitted,
                    unacked: p.unacked,
                    batches_sent: p.batches_sent,
                    bytes_sent: p.bytes_sent,
                    pauses_sent: p.pauses_sent,
                    pauses_received: p.pauses_received,
                })
                .collect(),
            fingerprint_mismatches: snapshot.counters.fingerprint_mismatches,
            type_mismatches: snapshot.counters.type_mismatches,
            schema_conflicts: snapshot.counters.schema_conflicts,
            compatible_links: snapshot.counters.compatible_links,
            remote,
            mesh: None,
            reachability: None,
            relays: Vec::new(),
            mesh_connections: None,
            breakers: Vec::new(),
            not_ready: None,
        }
    }
}
