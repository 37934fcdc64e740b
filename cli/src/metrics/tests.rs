//! Tests of the Prometheus export: names, labels and values from snapshots and live links.
use std::sync::Arc;
use std::time::Duration;

use dndm::remote::endpoint::{RemoteConfig, RemoteEndpoint};
use dndm::{PublishOptions, Router};

use super::snapshot::RemoteStatsView;
use super::*;

/// Failure guard of the waits below.
const GUARD: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_router_with_traffic_renders_prometheus_text_and_json() {
    let router = Router::builder().name("n1").build().unwrap();
    let mut sub = router.subscribe::<dndm::builtin::Text>("chat.*").unwrap();
    let publisher = router.publish::<dndm::builtin::Text>("chat.room1").unwrap();
    publisher.send("hi".into()).await.unwrap();
    publisher.send("there".into()).await.unwrap();
    sub.recv().await.unwrap();
    let observed = Observed {
        router: router.clone(),
        peer_id: dndm::Keypair::from_seed([1; 32]).peer_id(),
        mesh: None,
        remote: None,
    };
    let snapshot = observed.snapshot();
    let text = render(&snapshot);
    assert!(
        text.contains("dndm_messages_sent_total{node=\"n1\",route=\"dndm.Text@chat.room1\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("dndm_messages_received_total{node=\"n1\",route=\"dndm.Text@chat.*\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dndm_queue_depth{node=\"n1\",route=\"dndm.Text@chat.*\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE dndm_peers_connected gauge"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    let json = serde_json::to_string(&snapshot).unwrap();
    let back: NodeSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back.intents[0].sent, 2);
    assert_eq!(back.interests[0].queue.as_ref().unwrap().delivered, 1);
    router.close().await;
}

/// A snapshot with remote and mesh counters set, so every metric is registered.
async fn snapshot_with_endpoint_counters() -> NodeSnapshot {
    let router = Router::builder().name("n1").build().unwrap();
    let observed = Observed {
        router: router.clone(),
        peer_id: dndm::Keypair::from_seed([1; 32]).peer_id(),
        mesh: None,
        remote: None,
    };
    let mut snapshot = observed.snapshot();
    router.close().await;
    let stats = RemoteStatsView {
        handshake_failures: 1,
        link_failures: 2,
        dial_failures: 3,
        refused_routes: 4,
        signature_failures: 5,
        bad_frames: 6,
        decrypt_failures: 7,
        undelivered: 8,
        retired_peers: 9,
        flow_overruns: 10,
        over_budget: BTreeMap::from([("handshakes".to_owned(), 12), ("routes".to_owned(), 13)]),
    };
    snapshot.remote = Some(stats.clone());
    snapshot.mesh = Some(RemoteStatsView {
        decrypt_failures: 0,
        undelivered: 18,
        over_budget: BTreeMap::from([("routes".to_owned(), 2)]),
        ..stats
    });
    snapshot.mesh_connections = Some(MeshStatsView {
        refused_not_allowed: 21,
        refused_over_limit: 22,
        dials_not_allowed: 23,
    });
    snapshot.intents.push(IntentView {
        id: 1,
        route: "dndm.Text@chat.room1".to_owned(),
        fingerprint: "f".to_owned(),
        reliable: true,
        origin: "local".to_owned(),
        subscribers: 1,
        sent: 40,
        send_failures: 0,
        undelivered: 11,
        undelivered_by_reason: BTreeMap::from([
            ("timeout".to_owned(), 8),
            ("peer_gone".to_owned(), 3),
        ]),
        peer_feedback: Vec::new(),
    });
    snapshot.peers.push(PeerView {
        peer: "12D3KooWpeer".to_owned(),
        endpoint: "remote:tcp:10.0.0.2:7000".to_owned(),
        addresses: Vec::new(),
        connected: true,
        rtt_us: Some(1500),
        messages_sent: 40,
        messages_received: 2,
        failures: 1,
        path: None,
        acked: 27,
        undelivered: 11,
        retransmitted: 3,
        unacked: 2,
        batches_sent: 5,
        bytes_sent: 4096,
        pauses_sent: 6,
        pauses_received: 4,
    });
    snapshot
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<String> {
    text.lines()
        .find(|line| {
            line.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .map(str::to_owned)
}

#[tokio::test]
async fn session_figures_of_each_peer_and_undelivered_messages_are_exported() {
    let snapshot = snapshot_with_endpoint_counters().await;
    let text = render(&snapshot);
    let peer = [("peer", "12D3KooWpeer"), ("endpoint", "remote")];
    for (name, value) in [
        ("dndm_peer_acked_total", "27"),
        ("dndm_peer_undelivered_total", "11"),
        ("dndm_peer_retransmitted_total", "3"),
        ("dndm_peer_unacked", "2"),
        ("dndm_peer_batches_sent_total", "5"),
        ("dndm_peer_bytes_sent_total", "4096"),
        ("dndm_peer_pauses_sent_total", "6"),
        ("dndm_peer_pauses_received_total", "4"),
        ("dndm_peer_messages_sent_total", "40"),
        ("dndm_peer_failures_total", "1"),
    ] {
        assert_eq!(
            sample(&text, name, &peer).as_deref(),
            Some(value),
            "{name}: {text}"
        );
    }
    for (reason, value) in [
        ("timeout", "8"),
        ("peer_gone", "3"),
        ("peer_restarted", "0"),
        ("too_large", "0"),
        ("closed", "0"),
    ] {
        assert_eq!(
            sample(
                &text,
                "dndm_undelivered_total",
                &[("route", "dndm.Text@chat.room1"), ("reason", reason)]
            )
            .as_deref(),
            Some(value),
            "{reason}: {text}"
        );
    }
    assert!(
        text.lines().any(|line| line
            == "dndm_undelivered_total{node=\"n1\",route=\"dndm.Text@chat.room1\",reason=\"timeout\"} 8"),
        "{text}"
    );
    for (name, endpoint, value) in [
        ("dndm_endpoint_undelivered_total", "remote", "8"),
        ("dndm_endpoint_undelivered_total", "mesh", "18"),
        ("dndm_retired_peers_total", "remote", "9"),
        ("dndm_flow_overruns_total", "mesh", "10"),
    ] {
        assert_eq!(
            sample(&text, name, &[("endpoint", endpoint)]).as_deref(),
            Some(value),
            "{name} {endpoint}: {text}"
        );
    }

    // JSON from a node that predates these figures still parses, with zeros.
    let mut json = serde_json::to_value(&snapshot).unwrap();
    json["peers"][0].as_object_mut().unwrap().remove("acked");
    json["intents"][0]
        .as_object_mut()
        .unwrap()
        .remove("undelivered");
    json["intents"][0]
        .as_object_mut()
        .unwrap()
        .remove("undelivered_by_reason");
    json["remote"]
        .as_object_mut()
        .unwrap()
        .remove("retired_peers");
    let back: NodeSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back.peers[0].acked, 0);
    assert_eq!(back.peers[0].unacked, 2);
    assert_eq!(back.intents[0].undelivered, 0);
    assert!(back.intents[0].undelivered_by_reason.is_empty());
    assert_eq!(back.remote.unwrap().retired_peers, 0);
}

/// Routers `a` and `b` (identities from seeds `sa`, `sb`), their remote endpoints linked over
/// an in-memory pipe, as the mesh hands over its streams.
async fn linked_pair(sa: u8, sb: u8) -> (Router, RemoteEndpoint, Router, RemoteEndpoint) {
    let (ka, kb) = (
        dndm::Keypair::from_seed([sa; 32]),
        dndm::Keypair::from_seed([sb; 32]),
    );
    let (ida, idb) = (ka.peer_id(), kb.peer_id());
    let a = Router::builder().name("a").build().unwrap();
    let ea = RemoteEndpoint::new(ka, RemoteConfig::default()).unwrap();
    a.attach(Arc::new(ea.clone())).await.unwrap();
    let b = Router::builder().name("b").build().unwrap();
    let eb = RemoteEndpoint::new(kb, RemoteConfig::default()).unwrap();
    b.attach(Arc::new(eb.clone())).await.unwrap();
    let (one, other) = tokio::io::duplex(64 * 1024);
    ea.adopt_authenticated(idb, Box::new(one), true);
    eb.adopt_authenticated(ida, Box::new(other), false);
    (a, ea, b, eb)
}

#[tokio::test]
async fn a_remote_peer_s_acknowledgements_reach_the_metrics() {
    // Two routers linked by remote endpoints over an in-memory pipe (as the mesh hands
    // over its streams): the figures come from the link, through `PeerLink::peer_info`.
    let (a, ea, b, eb) = linked_pair(1, 2).await;
    let (ida, idb) = (ea.peer_id(), eb.peer_id());

    let publisher = a
        .publish_with::<dndm::builtin::Text>(
            "metrics.acked",
            PublishOptions::default().qos(dndm::Qos::reliable()),
        )
        .unwrap();
    let mut subscriber = b.subscribe::<dndm::builtin::Text>("metrics.acked").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    for line in ["one", "two", "three"] {
        publisher.send(line.into()).await.unwrap();
    }
    for _ in 0..3 {
        tokio::time::timeout(GUARD, subscriber.recv())
            .await
            .unwrap()
            .unwrap();
    }
    tokio::time::timeout(GUARD, ea.flush(&idb))
        .await
        .unwrap()
        .unwrap();

    let observed = Observed {
        router: a.clone(),
        peer_id: ida,
        mesh: None,
        remote: Some(ea),
    };
    let text = render(&observed.snapshot());
    let peer_id = idb.to_string();
    let peer = [("peer", peer_id.as_str()), ("endpoint", "remote")];
    let value = |name: &str| {
        sample(&text, name, &peer)
            .unwrap_or_else(|| panic!("no {name} for {peer_id}: {text}"))
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(value("dndm_peer_acked_total"), 3, "{text}");
    assert_eq!(value("dndm_peer_unacked"), 0, "{text}");
    assert_eq!(value("dndm_peer_undelivered_total"), 0, "{text}");
    assert!(value("dndm_peer_batches_sent_total") >= 1, "{text}");
    assert!(value("dndm_peer_bytes_sent_total") > 0, "{text}");
    for reason in Undelivered::ALL {
        assert_eq!(
            sample(
                &text,
                "dndm_undelivered_total",
                &[
                    ("route", "dndm.Text@metrics.acked"),
                    ("reason", reason.as_str())
                ]
            )
            .as_deref(),
            Some("0"),
            "{reason}: {text}"
        );
    }
    b.close().await;
    a.close().await;
}

#[tokio::test]
async fn a_message_too_large_for_the_peer_is_exported_with_its_reason() {
    // Two routers linked by remote endpoints over an in-memory pipe. A message larger than
    // the session's frame limit (`max_frame_len`, 4 MiB by default) is accepted by the
    // publisher, then given up by the link, which reports it on the intent.
    let (a, ea, b, _eb) = linked_pair(3, 4).await;
    let ida = ea.peer_id();

    let publisher = a.publish::<dndm::builtin::Text>("metrics.large").unwrap();
    let _subscriber = b.subscribe::<dndm::builtin::Text>("metrics.large").unwrap();
    publisher.wait_for_interest(GUARD).await.unwrap();
    let mut events = publisher.events();
    publisher.send("x".repeat(5 << 20).into()).await.unwrap();
    let reason = tokio::time::timeout(GUARD, async {
        loop {
            if let dndm::LinkEvent::Undelivered { reason, .. } = events.recv().await.unwrap() {
                break reason;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reason, Undelivered::TooLarge);
    assert_eq!(publisher.undelivered_by(Undelivered::TooLarge), 1);

    let observed = Observed {
        router: a.clone(),
        peer_id: ida,
        mesh: None,
        remote: Some(ea),
    };
    let snapshot = observed.snapshot();
    let text = render(&snapshot);
    let route = "dndm.Text@metrics.large";
    for (reason, value) in [("too_large", "1"), ("timeout", "0"), ("peer_gone", "0")] {
        assert_eq!(
            sample(
                &text,
                "dndm_undelivered_total",
                &[("route", route), ("reason", reason)]
            )
            .as_deref(),
            Some(value),
            "{reason}: {text}"
        );
    }
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: NodeSnapshot = serde_json::from_str(&json).unwrap();
    let intent = back.intents.iter().find(|i| i.route == route).unwrap();
    assert_eq!(intent.undelivered, 1);
    assert_eq!(
        intent.undelivered_by_reason,
        BTreeMap::from([("too_large".to_owned(), 1)])
    );
    b.close().await;
    a.close().await;
}

#[tokio::test]
async fn decrypt_failures_are_exported_next_to_signature_failures() {
    let text = render(&snapshot_with_endpoint_counters().await);
    let by_endpoint = |name: &str, endpoint: &str| sample(&text, name, &[("endpoint", endpoint)]);
    assert_eq!(
        by_endpoint("dndm_decrypt_failures_total", "remote").as_deref(),
        Some("7"),
        "{text}"
    );
    // The mesh has no dndm Noise layer: no sample rather than a permanent 0.
    assert_eq!(
        by_endpoint("dndm_decrypt_failures_total", "mesh"),
        None,
        "{text}"
    );
    assert_eq!(
        by_endpoint("dndm_signature_failures_total", "mesh").as_deref(),
        Some("5"),
        "{text}"
    );

    // JSON from a node that predates the counter still parses.
    let mut json = serde_json::to_value(snapshot_with_endpoint_counters().await).unwrap();
    json["remote"]
        .as_object_mut()
        .unwrap()
        .remove("decrypt_failures");
    let back: NodeSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back.remote.unwrap().decrypt_failures, 0);
}

#[tokio::test]
async fn budget_crossings_are_exported_per_budget_and_endpoint() {
    let text = render(&snapshot_with_endpoint_counters().await);
    let crossed = |endpoint: &str, budget: &str| {
        sample(
            &text,
            "dndm_budget_exceeded_total",
            &[("endpoint", endpoint), ("budget", budget)],
        )
    };
    assert_eq!(
        crossed("remote", "handshakes").as_deref(),
        Some("12"),
        "{text}"
    );
    assert_eq!(crossed("remote", "routes").as_deref(), Some("13"), "{text}");
    assert_eq!(crossed("mesh", "routes").as_deref(), Some("2"), "{text}");
    // Every budget has a sample on each endpoint, 0 included, labelled with its config key.
    for kind in dndm::core::BudgetKind::ALL {
        for endpoint in ["remote", "mesh"] {
            assert!(
                crossed(endpoint, kind.key()).is_some(),
                "{endpoint} {kind}: {text}"
            );
        }
    }
    assert_eq!(crossed("remote", "links").as_deref(), Some("0"), "{text}");

    // From live counters: the view keys each count by its budget.
    let mut counts = dndm::remote::endpoint::BudgetCounts::default();
    counts.add(dndm::core::BudgetKind::ConnectionsPerPeer);
    counts.add(dndm::core::BudgetKind::ConnectionsPerPeer);
    let mut stats = dndm::remote::endpoint::RemoteStats::default();
    stats.over_budget = counts;
    let view = RemoteStatsView::from(stats);
    assert_eq!(view.over_budget.get("connections_per_peer"), Some(&2));

    // JSON from a node that predates the counts still parses (no crossings).
    let mut json = serde_json::to_value(snapshot_with_endpoint_counters().await).unwrap();
    json["remote"]
        .as_object_mut()
        .unwrap()
        .remove("over_budget");
    let back: NodeSnapshot = serde_json::from_value(json).unwrap();
    assert!(back.remote.unwrap().over_budget.is_empty());
}

#[tokio::test]
async fn every_exported_metric_is_documented() {
    let text = render(&snapshot_with_endpoint_counters().await);
    let operations = include_str!("../../../docs/operations.md");
    let undocumented: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        })
        .filter(|name| !operations.contains(&format!("| `{name}` |")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exported but missing from the metrics table of docs/operations.md: {undocumented:?}"
    );
}

#[tokio::test]
async fn mesh_refusals_are_exported_by_reason() {
    let text = render(&snapshot_with_endpoint_counters().await);
    for line in [
        "dndm_mesh_refused_connections_total{node=\"n1\",reason=\"not_allowed\"} 21",
        "dndm_mesh_refused_connections_total{node=\"n1\",reason=\"over_limit\"} 22",
        "dndm_mesh_dials_not_allowed_total{node=\"n1\"} 23",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
}

/// The metric names (`..._total` for counters) of every family `render` registers.
fn exported_families(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        })
        .collect()
}

/// The `dndm_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("dndm_"))
        .collect()
}

#[tokio::test]
async fn the_grafana_dashboard_has_a_panel_for_every_exported_family_and_no_other() {
    let mut snapshot = snapshot_with_endpoint_counters().await;
    // A family without samples is not exported: a local subscriber fills the queue families.
    snapshot.interests.push(InterestView {
        id: 2,
        pattern: "dndm.Text@chat.*".to_owned(),
        fingerprint: "f".to_owned(),
        origin: "local".to_owned(),
        publishers: 1,
        queue: Some(QueueView {
            len: 1,
            capacity: 8,
            overflow: "drop_oldest".to_owned(),
            accepted: 3,
            delivered: 2,
            dropped_oldest: 0,
            dropped_newest: 0,
            decode_errors: 0,
        }),
    });
    snapshot.breakers.push(BreakerView {
        target: "tcp:10.0.0.1:7000".to_owned(),
        open: true,
        failures: 5,
    });
    let families = exported_families(&render(&snapshot));
    assert!(
        families.len() >= 41,
        "every family has samples: {families:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../deploy/grafana/dndm.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut queried: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id: {panel}"
        );
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap().to_owned();
        for target in panel["targets"].as_array().unwrap() {
            for name in metric_names(target["expr"].as_str().unwrap()) {
                queried
                    .entry(name.to_owned())
                    .or_default()
                    .push(title.clone());
            }
        }
    }
    let missing: Vec<&String> = families
        .iter()
        .filter(|f| !queried.contains_key(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "exported but without a panel in deploy/grafana/dndm.json: {missing:?}"
    );
    let unknown: Vec<&String> = queried.keys().filter(|q| !families.contains(q)).collect();
    assert!(
        unknown.is_empty(),
        "deploy/grafana/dndm.json queries metrics the node does not export: {unknown:?}"
    );
    let shared: Vec<_> = queried
        .iter()
        .filter(|(_, titles)| titles.len() > 1)
        .collect();
    assert!(shared.is_empty(), "one panel per family: {shared:?}");
}
