//! What a running node exposes: a serializable mirror of the router's [`Snapshot`] plus endpoint
//! counters ([`NodeSnapshot`], served as JSON at `/snapshot`), and the Prometheus metrics
//! derived from it at scrape time ([`render`], served at `/metrics`).
//!
//! Nothing here touches a hot path: every scrape takes one [`Router::snapshot`] and reads the
//! endpoints' counters, then builds a fresh registry.
//!
//! Metrics (OpenMetrics text; every sample carries `node="<name>"`):
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `dndm_messages_sent_total` | `route` | messages sent by local intents |
//! | `dndm_send_failures_total` | `route` | local sends that failed |
//! | `dndm_undelivered_total` | `route`, `reason` | messages of local intents that reached no peer subscriber; `reason` is `Undelivered::as_str()`: `timeout`, `peer_gone`, `peer_restarted`, `too_large`, `closed` (every reason has a sample, 0 included) |
//! | `dndm_messages_received_total` | `route` (a pattern) | messages handed to local subscribers |
//! | `dndm_messages_dropped_total` | `route`, `reason` | `dropped_oldest`, `dropped_newest`, `decode_error` |
//! | `dndm_queue_depth`, `dndm_queue_capacity` | `route` | local subscriber queues |
//! | `dndm_intents`, `dndm_interests` | `origin` (`local`, `peer`) | declared routes |
//! | `dndm_links`, `dndm_services` | | linked pairs, served routes |
//! | `dndm_peers_connected`, `dndm_peers_known` | | peers with a session up, all peers |
//! | `dndm_peer_rtt_seconds` | `peer`, `endpoint` | last measured round trip |
//! | `dndm_peer_messages_sent_total`, `dndm_peer_messages_received_total` | `peer`, `endpoint` | session traffic |
//! | `dndm_peer_failures_total` | `peer`, `endpoint` | connections that failed (each followed by a reconnect) |
//! | `dndm_peer_acked_total`, `dndm_peer_undelivered_total`, `dndm_peer_retransmitted_total` | `peer`, `endpoint` | reliable messages acknowledged, messages given up, reliable messages resent |
//! | `dndm_peer_unacked` | `peer`, `endpoint` | messages waiting to be batched plus batches not acknowledged yet |
//! | `dndm_peer_batches_sent_total`, `dndm_peer_bytes_sent_total` | `peer`, `endpoint` | batches (resends included) and frame bytes sent |
//! | `dndm_peer_pauses_sent_total`, `dndm_peer_pauses_received_total` | `peer`, `endpoint` | flow-control pauses asked of the peer, and by it |
//! | `dndm_signature_failures_total`, `dndm_bad_frames_total` | `endpoint` | connections closed for a bad signature, or for a frame that does not decode |
//! | `dndm_decrypt_failures_total` | `endpoint` (`remote` only) | connections closed because a Noise transport message did not decrypt |
//! | `dndm_endpoint_undelivered_total`, `dndm_retired_peers_total`, `dndm_flow_overruns_total` | `endpoint` | messages given up on all links (kept when links go), peers retired after their grace period, peer messages dropped past a pause |
//! | `dndm_budget_exceeded_total` | `endpoint`, `budget` | times a peer or a connection crossed a `[remote.budget]` budget; `budget` is its key (`routes`, `handshakes`...; every budget has a sample, 0 included) |
//! | `dndm_remote_handshake_failures_total`, `..._link_failures_total`, `..._dial_failures_total`, `..._refused_routes_total` | | remote-link endpoint counters |
//! | `dndm_mesh_refused_connections_total` | `reason` (`not_allowed`, `over_limit`) | incoming libp2p connections the mesh refused |
//! | `dndm_remote_dial_breaker_open` | `target` | 1 while a remote-link dial target's circuit breaker is open |
//! | `dndm_mesh_dials_not_allowed_total` | | mesh dials the allow-list refused |
//! | `dndm_fingerprint_mismatches_total`, `dndm_schema_conflicts_total`, `dndm_type_mismatches_total` | | refused matches |
//! | `dndm_compatible_links_total` | | links made between two different but compatible schemas of one type |

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use dndm::Undelivered;
use dndm::core::BudgetKind;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Content type of [`render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

mod snapshot;

#[cfg(test)]
pub(crate) use snapshot::{BreakerView, IntentView, InterestView, MeshStatsView, QueueView};
pub(crate) use snapshot::{LinkView, NodeSnapshot, Observed, PeerView};

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// A registry being filled for one scrape.
struct Scrape(Registry);

impl Scrape {
    fn counters(&mut self, name: &str, help: &str, samples: BTreeMap<Labels, u64>) {
        let family = Family::<Labels, Counter>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).inc_by(value);
        }
        self.0.register(name, help, family);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        self.0.register(name, help, counter);
    }

    fn gauges(&mut self, name: &str, help: &str, samples: BTreeMap<Labels, i64>) {
        let family = Family::<Labels, Gauge>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).set(value);
        }
        self.0.register(name, help, family);
    }

    fn gauge(&mut self, name: &str, help: &str, value: i64) {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        self.0.register(name, help, gauge);
    }

    fn gauges_f64(&mut self, name: &str, help: &str, samples: BTreeMap<Labels, f64>) {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (labels, value) in samples {
            family.get_or_create(&labels).set(value);
        }
        self.0.register(name, help, family);
    }
}

/// Adds `value` to the sample with `labels`.
fn add<V: std::ops::AddAssign + Default>(map: &mut BTreeMap<Labels, V>, labels: Labels, value: V) {
    *map.entry(labels).or_default() += value;
}

/// Saturating conversion for gauges.
fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Saturating conversion of a count for gauges.
fn gauge_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The labels of a peer's samples.
fn peer_labels(peer: &PeerView) -> Labels {
    vec![
        ("peer", peer.peer.clone()),
        ("endpoint", endpoint_kind(&peer.endpoint)),
    ]
}

/// A per-peer counter: name, help and where its value is.
type PeerCounter = (&'static str, &'static str, fn(&PeerView) -> u64);

/// The per-peer session counters, labelled with [`peer_labels`].
const PEER_COUNTERS: [PeerCounter; 10] = [
    (
        "dndm_peer_messages_sent",
        "Messages sent to a peer on its session",
        |p| p.messages_sent,
    ),
    (
        "dndm_peer_messages_received",
        "Messages received from a peer on its session",
        |p| p.messages_received,
    ),
    (
        "dndm_peer_failures",
        "Connections to a peer that failed (each followed by a reconnect attempt)",
        |p| p.failures,
    ),
    (
        "dndm_peer_acked",
        "Reliable messages a peer acknowledged",
        |p| p.acked,
    ),
    (
        "dndm_peer_undelivered",
        "Messages of local intents handed to a peer's link that will never reach it",
        |p| p.undelivered,
    ),
    (
        "dndm_peer_retransmitted",
        "Reliable messages sent to a peer again because it had not acknowledged them",
        |p| p.retransmitted,
    ),
    (
        "dndm_peer_batches_sent",
        "Batches sent to a peer, resends included",
        |p| p.batches_sent,
    ),
    (
        "dndm_peer_bytes_sent",
        "Bytes of frames sent to a peer",
        |p| p.bytes_sent,
    ),
    (
        "dndm_peer_pauses_sent",
        "Times this node asked a peer to hold back a route (a local subscriber was full)",
        |p| p.pauses_sent,
    ),
    (
        "dndm_peer_pauses_received",
        "Times a peer asked this node to hold back a route",
        |p| p.pauses_received,
    ),
];

/// The kind of an endpoint from its name (`mesh:<id>` → `mesh`).
fn endpoint_kind(name: &str) -> String {
    name.split(':').next().unwrap_or(name).to_owned()
}

/// The Prometheus (OpenMetrics text) exposition of `snapshot`.
pub(crate) fn render(snapshot: &NodeSnapshot) -> String {
    let node: [(Cow<'static, str>, Cow<'static, str>); 1] =
        [(Cow::Borrowed("node"), Cow::Owned(snapshot.node.clone()))];
    let mut scrape = Scrape(Registry::with_labels(node.into_iter()));

    let (mut sent, mut failures, mut undelivered) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut intents = BTreeMap::new();
    for intent in &snapshot.intents {
        let local = intent.origin == "local";
        add(
            &mut intents,
            vec![("origin", if local { "local" } else { "peer" }.to_owned())],
            1,
        );
        if local {
            let route = vec![("route", intent.route.clone())];
            add(&mut sent, route.clone(), intent.sent);
            add(&mut failures, route.clone(), intent.send_failures);
            // Every known reason gets a sample (0 until it happens, so `increase()` sees the
            // first loss); a reason only a newer node knows is kept too.
            let known = Undelivered::ALL.iter().map(|r| (r.as_str(), 0));
            let reported = intent
                .undelivered_by_reason
                .iter()
                .map(|(r, count)| (r.as_str(), *count));
            for (reason, count) in known.chain(reported) {
                let mut labels = route.clone();
                labels.push(("reason", reason.to_owned()));
                add(&mut undelivered, labels, count);
            }
        }
    }
    let (mut received, mut dropped) = (BTreeMap::new(), BTreeMap::new());
    let (mut depth, mut capacity) = (BTreeMap::new(), BTreeMap::new());
    let mut interests = BTreeMap::new();
    for interest in &snapshot.interests {
        let local = interest.origin == "local";
        add(
            &mut interests,
            vec![("origin", if local { "local" } else { "peer" }.to_owned())],
            1,
        );
        let Some(queue) = &interest.queue else {
            continue;
        };
        let route = || vec![("route", interest.pattern.clone())];
        add(&mut received, route(), queue.delivered);
        for (reason, count) in [
            ("dropped_oldest", queue.dropped_oldest),
            ("dropped_newest", queue.dropped_newest),
            ("decode_error", queue.decode_errors),
        ] {
            let mut labels = route();
            labels.push(("reason", reason.to_owned()));
            add(&mut dropped, labels, count);
        }
        add(&mut depth, route(), gauge_value(queue.len));
        add(&mut capacity, route(), gauge_value(queue.capacity));
    }
    scrape.counters("dndm_messages_sent", "Messages sent by local intents", sent);
    scrape.counters(
        "dndm_send_failures",
        "Sends by local intents that failed",
        failures,
    );
    scrape.counters(
        "dndm_undelivered",
        "Messages of local intents that reached no peer subscriber, by reason (timeout, peer_gone, peer_restarted, too_large, closed)",
        undelivered,
    );
    scrape.counters(
        "dndm_messages_received",
        "Messages handed to local subscribers, by subscribed pattern",
        received,
    );
    scrape.counters(
        "dndm_messages_dropped",
        "Messages dropped by local subscriber queues, by reason",
        dropped,
    );
    scrape.gauges(
        "dndm_queue_depth",
        "Messages waiting in local subscriber queues",
        depth,
    );
    scrape.gauges(
        "dndm_queue_capacity",
        "Capacity of local subscriber queues",
        capacity,
    );
    scrape.gauges("dndm_intents", "Declared intents, by origin", intents);
    scrape.gauges("dndm_interests", "Declared interests, by origin", interests);
    scrape.gauge(
        "dndm_links",
        "Intent-interest pairs linked",
        gauge_value(snapshot.links.len()),
    );
    scrape.gauge(
        "dndm_services",
        "Request/response routes served (local and peer)",
        gauge_value(snapshot.services.len()),
    );

    let connected = snapshot.peers.iter().filter(|p| p.connected).count();
    scrape.gauge(
        "dndm_peers_connected",
        "Peers with a session up",
        gauge_value(connected),
    );
    scrape.gauge(
        "dndm_peers_known",
        "Peers known to the endpoints, connected or not",
        gauge_value(snapshot.peers.len()),
    );
    let mut rtt = BTreeMap::new();
    let mut unacked = BTreeMap::new();
    for peer in &snapshot.peers {
        let labels = peer_labels(peer);
        if let Some(us) = peer.rtt_us {
            rtt.insert(labels.clone(), us as f64 / 1e6);
        }
        add(&mut unacked, labels, gauge_u64(peer.unacked));
    }
    scrape.gauges_f64(
        "dndm_peer_rtt_seconds",
        "Last measured round trip to a peer",
        rtt,
    );
    scrape.gauges(
        "dndm_peer_unacked",
        "What a peer has not acknowledged yet: messages waiting to be batched plus batches sent",
        unacked,
    );
    for (name, help, value) in PEER_COUNTERS {
        let mut samples = BTreeMap::new();
        for peer in &snapshot.peers {
            add(&mut samples, peer_labels(peer), value(peer));
        }
        scrape.counters(name, help, samples);
    }
    let mut signature_failures = BTreeMap::new();
    let mut bad_frames = BTreeMap::new();
    let mut decrypt_failures = BTreeMap::new();
    let (mut endpoint_undelivered, mut retired, mut overruns) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    let mut over_budget = BTreeMap::new();
    if let Some(remote) = &snapshot.remote {
        // Remote links only: mesh streams have no dndm Noise layer (libp2p decrypts them, and
        // a libp2p decryption failure closes the libp2p connection without a dndm count).
        add(
            &mut decrypt_failures,
            vec![("endpoint", "remote".to_owned())],
            remote.decrypt_failures,
        );
    }
    for (kind, stats) in [("remote", &snapshot.remote), ("mesh", &snapshot.mesh)] {
        if let Some(stats) = stats {
            add(
                &mut signature_failures,
                vec![("endpoint", kind.to_owned())],
                stats.signature_failures,
            );
            add(
                &mut bad_frames,
                vec![("endpoint", kind.to_owned())],
                stats.bad_frames,
            );
            let labels = vec![("endpoint", kind.to_owned())];
            add(&mut endpoint_undelivered, labels.clone(), stats.undelivered);
            add(&mut retired, labels.clone(), stats.retired_peers);
            add(&mut overruns, labels, stats.flow_overruns);
            // Every budget has a sample, 0 included; a key an older node did not know reads 0.
            for budget in BudgetKind::ALL {
                let count = stats.over_budget.get(budget.key()).copied().unwrap_or(0);
                let labels = vec![
                    ("endpoint", kind.to_owned()),
                    ("budget", budget.key().to_owned()),
                ];
                add(&mut over_budget, labels, count);
            }
        }
    }
    scrape.counters(
        "dndm_signature_failures",
        "Connections closed because a batch signature did not verify",
        signature_failures,
    );
    scrape.counters(
        "dndm_bad_frames",
        "Connections closed because the peer sent a frame that does not decode or breaks the protocol",
        bad_frames,
    );
    scrape.counters(
        "dndm_decrypt_failures",
        "Connections closed because a Noise transport message did not decrypt (tampered, truncated or replayed ciphertext)",
        decrypt_failures,
    );
    scrape.counters(
        "dndm_endpoint_undelivered",
        "Messages of local intents an endpoint's links gave up, all peers and reasons (kept when a link goes away)",
        endpoint_undelivered,
    );
    scrape.counters(
        "dndm_retired_peers",
        "Peers retired after staying away past their grace period",
        retired,
    );
    scrape.counters(
        "dndm_budget_exceeded",
        "Times a peer or a connection crossed a [remote.budget] budget (a link closed, a connection refused, a request answered Busy)",
        over_budget,
    );
    scrape.counters(
        "dndm_flow_overruns",
        "Peer messages dropped because the peer kept sending on a route it was asked to pause",
        overruns,
    );
    if let Some(remote) = &snapshot.remote {
        scrape.counter(
            "dndm_remote_handshake_failures",
            "Remote-link connections refused before reaching a link: Noise handshake, identity preamble, allow-list, or a connection budget",
            remote.handshake_failures,
        );
        scrape.counter(
            "dndm_remote_link_failures",
            "Remote-link connections that failed after the hello",
            remote.link_failures,
        );
        scrape.counter(
            "dndm_remote_dial_failures",
            "Remote-link dials that failed",
            remote.dial_failures,
        );
        scrape.counter(
            "dndm_remote_refused_routes",
            "Peer routes refused by the router (fingerprint mismatch)",
            remote.refused_routes,
        );
    }
    if !snapshot.breakers.is_empty() {
        let open = snapshot
            .breakers
            .iter()
            .map(|b| (vec![("target", b.target.clone())], i64::from(b.open)))
            .collect();
        scrape.gauges(
            "dndm_remote_dial_breaker_open",
            "1 while the circuit breaker of a remote-link dial target is open (dials wait out a cool-down), else 0",
            open,
        );
    }
    if let Some(mesh) = snapshot.mesh_connections {
        let reason = |r: &str| vec![("reason", r.to_owned())];
        scrape.counters(
            "dndm_mesh_refused_connections",
            "Incoming mesh connections refused: peer not on the allow-list, or a connection limit",
            BTreeMap::from([
                (reason("not_allowed"), mesh.refused_not_allowed),
                (reason("over_limit"), mesh.refused_over_limit),
            ]),
        );
        scrape.counter(
            "dndm_mesh_dials_not_allowed",
            "Mesh dials refused because the peer is not on the allow-list",
            mesh.dials_not_allowed,
        );
    }
    scrape.counter(
        "dndm_fingerprint_mismatches",
        "Matches refused because schema fingerprints differ",
        snapshot.fingerprint_mismatches,
    );
    scrape.counter(
        "dndm_schema_conflicts",
        "Matches refused because two schemas of one type name do not read each other",
        snapshot.schema_conflicts,
    );
    scrape.counter(
        "dndm_compatible_links",
        "Links made between two different but compatible schemas of one type name",
        snapshot.compatible_links,
    );
    scrape.counter(
        "dndm_type_mismatches",
        "Matches refused because one type name is bound to two types",
        snapshot.type_mismatches,
    );

    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &scrape.0);
    text
}

#[cfg(test)]
mod tests;
