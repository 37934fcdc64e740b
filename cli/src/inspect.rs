//! `dndm peers` and `dndm routes`: tables from a running node's `GET /snapshot`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::http;
use crate::metrics::{LinkView, NodeSnapshot};

/// How often `dndm peers --wait-for` and `dndm status --wait-for` ask again.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// Arguments of `dndm peers`.
#[derive(Debug, clap::Args)]
pub(crate) struct PeersArgs {
    /// The node's metrics address, as printed by `dndm node` (http://127.0.0.1:9464).
    #[arg(long, value_name = "URL")]
    node: String,
    /// Wait until at least N peers have a session up and a measured RTT.
    #[arg(long, value_name = "N")]
    wait_for: Option<usize>,
    /// Longest wait of --wait-for, in seconds.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    timeout: Duration,
}

/// Arguments of `dndm routes`.
#[derive(Debug, clap::Args)]
pub(crate) struct RoutesArgs {
    /// The node's metrics address, as printed by `dndm node` (http://127.0.0.1:9464).
    #[arg(long, value_name = "URL")]
    node: String,
    /// Refresh every SECONDS (default 1) until interrupted: a live route graph.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1", value_parser = crate::parse_seconds)]
    watch: Option<Duration>,
    /// With --watch: stop after this many refreshes.
    #[arg(long, value_name = "N", requires = "watch")]
    count: Option<u64>,
}

/// Fetches and parses the node's snapshot.
pub(crate) async fn fetch(node: &str) -> anyhow::Result<NodeSnapshot> {
    let body = http::get(node, "/snapshot")
        .await
        .with_context(|| format!("cannot read the snapshot of {node}"))?;
    serde_json::from_str(&body).with_context(|| format!("{node}/snapshot is not a dndm snapshot"))
}

/// One row of the links table: the two sides, the peer on the other side (if any) with its
/// RTT, messages through the link, drops and lag at the subscriber, and the schemas' match.
fn link_row(s: &NodeSnapshot, link: &LinkView, short: &dyn Fn(&str) -> String) -> Vec<String> {
    let intent = s.intents.iter().find(|i| i.id == link.intent);
    let interest = s.interests.iter().find(|i| i.id == link.interest);
    let route = intent.map_or("?", |i| i.route.as_str()).to_owned();
    let pattern = interest.map_or("?", |i| i.pattern.as_str()).to_owned();
    let remote = |origin: &str| (origin != "local").then(|| origin.to_owned());
    let peer = interest
        .and_then(|i| remote(&i.origin))
        .or_else(|| intent.and_then(|i| remote(&i.origin)));
    let rtt = peer
        .as_deref()
        .and_then(|p| s.peers.iter().find(|v| v.peer == p))
        .and_then(|v| v.rtt_us)
        .map_or_else(|| "-".to_owned(), |us| format!("{:.2} ms", us as f64 / 1e3));
    let queue = interest.and_then(|i| i.queue.as_ref());
    // A local subscriber shows its own queue; a peer's, what its node reported.
    let (messages, drops, lag) = match (queue, intent, peer.as_deref()) {
        (Some(q), _, _) => (
            q.delivered.to_string(),
            (q.dropped_oldest + q.dropped_newest + q.decode_errors).to_string(),
            format!("{}/{}", q.len, q.capacity),
        ),
        (None, Some(i), Some(p)) => {
            let reported = i.peer_feedback.iter().find(|f| f.peer == p);
            (
                i.sent.to_string(),
                reported.map_or_else(|| "0".to_owned(), |f| f.dropped.to_string()),
                reported.map_or_else(|| "-".to_owned(), |f| format!("{}/{}", f.lag, f.capacity)),
            )
        }
        _ => ("-".into(), "-".into(), "-".into()),
    };
    vec![
        link.intent.to_string(),
        link.interest.to_string(),
        route,
        pattern,
        peer.as_deref().map_or_else(|| "local".to_owned(), short),
        rtt,
        messages,
        drops,
        lag,
        link.compatibility.clone(),
    ]
}

/// Peers with a session up and an RTT.
fn ready_peers(snapshot: &NodeSnapshot) -> usize {
    snapshot
        .peers
        .iter()
        .filter(|p| p.connected && p.rtt_us.is_some())
        .count()
}

/// Runs `dndm peers`.
pub(crate) async fn peers(args: PeersArgs) -> anyhow::Result<()> {
    let mut snapshot = fetch(&args.node).await?;
    if let Some(want) = args.wait_for {
        let mut tick = tokio::time::interval(POLL);
        let started = tokio::time::Instant::now();
        while ready_peers(&snapshot) < want {
            if started.elapsed() >= args.timeout {
                bail!(
                    "{} of {want} peers have a session and an RTT after {:.1} s",
                    ready_peers(&snapshot),
                    args.timeout.as_secs_f64()
                );
            }
            tick.tick().await;
            snapshot = fetch(&args.node).await?;
        }
    }
    print!("{}", peers_table(&snapshot));
    Ok(())
}

/// The peers table of a snapshot.
pub(crate) fn peers_table(snapshot: &NodeSnapshot) -> String {
    let mut out = format!(
        "node {} {} ({} peers, {} connected)\n",
        snapshot.node,
        snapshot.peer_id,
        snapshot.peers.len(),
        snapshot.peers.iter().filter(|p| p.connected).count()
    );
    if let Some(reachability) = &snapshot.reachability {
        out.push_str(&format!("reachability {reachability}\n"));
    }
    for relay in &snapshot.relays {
        out.push_str(&format!("relay {relay}\n"));
    }
    let rows = snapshot
        .peers
        .iter()
        .map(|p| {
            vec![
                p.peer.clone(),
                if p.connected { "up" } else { "down" }.to_owned(),
                p.rtt_us
                    .map_or_else(|| "-".to_owned(), |us| format!("{:.2} ms", us as f64 / 1e3)),
                p.messages_sent.to_string(),
                p.messages_received.to_string(),
                p.acked.to_string(),
                p.unacked.to_string(),
                p.retransmitted.to_string(),
                p.undelivered.to_string(),
                p.failures.to_string(),
                p.endpoint.split(':').next().unwrap_or_default().to_owned(),
                p.path.clone().unwrap_or_else(|| "-".to_owned()),
                if p.addresses.is_empty() {
                    "-".to_owned()
                } else {
                    p.addresses.join(" ")
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PEER",
            "SESSION",
            "RTT",
            "SENT",
            "RECEIVED",
            "ACKED",
            "UNACKED",
            "RESENT",
            "UNDELIVERED",
            "FAILURES",
            "ENDPOINT",
            "PATH",
            "ADDRESSES",
        ],
        rows,
    ));
    out
}

/// Runs `dndm routes`.
pub(crate) async fn routes(args: RoutesArgs) -> anyhow::Result<()> {
    let Some(every) = args.watch else {
        print!("{}", routes_table(&fetch(&args.node).await?));
        return Ok(());
    };
    let clear = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut tick = tokio::time::interval(every);
    let mut shown = 0u64;
    while args.count.is_none_or(|count| shown < count) {
        tick.tick().await;
        let table = routes_table(&fetch(&args.node).await?);
        if clear {
            // Home and clear the screen: the graph redrawn in place.
            print!("\x1b[H\x1b[2J");
        }
        print!("{table}");
        if !clear {
            println!("--");
        }
        shown += 1;
    }
    Ok(())
}

/// The routes, links and queues of a snapshot.
pub(crate) fn routes_table(s: &NodeSnapshot) -> String {
    let short = |origin: &str| {
        if origin == "local" || origin.len() <= 16 {
            origin.to_owned()
        } else {
            format!("peer …{}", &origin[origin.len() - 8..])
        }
    };
    let mut out = format!(
        "node {} {} (endpoints: {})\n",
        s.node,
        s.peer_id,
        if s.endpoints.is_empty() {
            "none".to_owned()
        } else {
            s.endpoints.join(", ")
        }
    );
    let _ = writeln!(out, "\nintents");
    out.push_str(&table(
        &[
            "ID",
            "ROUTE",
            "ORIGIN",
            "QOS",
            "SUBSCRIBERS",
            "SENT",
            "FAILURES",
            "UNDELIVERED",
        ],
        s.intents
            .iter()
            .map(|i| {
                vec![
                    i.id.to_string(),
                    i.route.clone(),
                    short(&i.origin),
                    if i.reliable {
                        "reliable"
                    } else {
                        "best-effort"
                    }
                    .to_owned(),
                    i.subscribers.to_string(),
                    i.sent.to_string(),
                    i.send_failures.to_string(),
                    i.undelivered.to_string(),
                ]
            })
            .collect(),
    ));
    let _ = writeln!(out, "\ninterests");
    out.push_str(&table(
        &[
            "ID",
            "PATTERN",
            "ORIGIN",
            "PUBLISHERS",
            "QUEUE",
            "POLICY",
            "DELIVERED",
            "DROPPED",
        ],
        s.interests
            .iter()
            .map(|i| {
                let (queue, policy, delivered, dropped) = match &i.queue {
                    Some(q) => (
                        format!("{}/{}", q.len, q.capacity),
                        q.overflow.clone(),
                        q.delivered.to_string(),
                        format!(
                            "{} (oldest {}, newest {}, decode {})",
                            q.dropped_oldest + q.dropped_newest + q.decode_errors,
                            q.dropped_oldest,
                            q.dropped_newest,
                            q.decode_errors
                        ),
                    ),
                    None => ("-".into(), "-".into(), "-".into(), "-".into()),
                };
                vec![
                    i.id.to_string(),
                    i.pattern.clone(),
                    short(&i.origin),
                    i.publishers.to_string(),
                    queue,
                    policy,
                    delivered,
                    dropped,
                ]
            })
            .collect(),
    ));
    let _ = writeln!(out, "\nlinks");
    out.push_str(&table(
        &[
            "INTENT", "INTEREST", "ROUTE", "PATTERN", "PEER", "RTT", "MESSAGES", "DROPS", "LAG",
            "SCHEMA",
        ],
        s.links.iter().map(|l| link_row(s, l, &short)).collect(),
    ));
    let _ = writeln!(
        out,
        "\nservices: {}",
        if s.services.is_empty() {
            "none".to_owned()
        } else {
            s.services.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "refused matches: {} fingerprint, {} schema, {} type; {} compatible links",
        s.fingerprint_mismatches, s.schema_conflicts, s.type_mismatches, s.compatible_links
    );
    if let Some(r) = &s.remote {
        let _ = writeln!(
            out,
            "remote links: {} handshake failures, {} link failures, {} dial failures, {} refused routes",
            r.handshake_failures, r.link_failures, r.dial_failures, r.refused_routes
        );
        let _ = writeln!(
            out,
            "remote connections closed: {} bad signatures, {} bad frames, {} decrypt failures",
            r.signature_failures, r.bad_frames, r.decrypt_failures
        );
        let _ = writeln!(
            out,
            "remote peers: {} undelivered messages, {} retired peers, {} flow overruns",
            r.undelivered, r.retired_peers, r.flow_overruns
        );
        over_budget_line(&mut out, "remote", &r.over_budget);
    }
    if let Some(m) = &s.mesh {
        // No decrypt failures: libp2p decrypts mesh streams.
        let _ = writeln!(
            out,
            "mesh connections closed: {} bad signatures, {} bad frames",
            m.signature_failures, m.bad_frames
        );
        let _ = writeln!(
            out,
            "mesh peers: {} undelivered messages, {} retired peers, {} flow overruns",
            m.undelivered, m.retired_peers, m.flow_overruns
        );
        over_budget_line(&mut out, "mesh", &m.over_budget);
    }
    out
}

/// A left-aligned text table; `(none)` when there are no rows.
/// One line naming the budgets `endpoint` saw crossed, if any (`remote over budget: handshakes
/// 3, links 1`).
fn over_budget_line(out: &mut String, endpoint: &str, counts: &BTreeMap<String, u64>) {
    let crossed: Vec<String> = counts
        .iter()
        .filter(|&(_, &count)| count > 0)
        .map(|(key, count)| format!("{key} {count}"))
        .collect();
    if !crossed.is_empty() {
        let _ = writeln!(out, "{endpoint} over budget: {}", crossed.join(", "));
    }
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    if rows.is_empty() {
        return "  (none)\n".to_owned();
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::from(" ");
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, " {cell:<width$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot with one peer and one local intent whose delivery figures are set.
    fn snapshot() -> NodeSnapshot {
        serde_json::from_value(serde_json::json!({
            "node": "n1",
            "peer_id": "12D3KooWself",
            "closed": false,
            "listening": [],
            "endpoints": ["remote"],
            "intents": [{
                "id": 1, "route": "dndm.Text@chat.room1", "fingerprint": "f",
                "reliable": true, "origin": "local", "subscribers": 1,
                "sent": 40, "send_failures": 0, "undelivered": 11,
                "peer_feedback": [
                    {"peer": "12D3KooWpeer", "dropped": 16, "lag": 4, "capacity": 4}
                ]
            }],
            "interests": [{
                "id": 2, "pattern": "dndm.Text@chat.*", "fingerprint": "f",
                "origin": "12D3KooWpeer", "publishers": 1, "queue": null
            }],
            "links": [{"intent": 1, "interest": 2, "compatibility": "compatible (-4)"}],
            "services": [],
            "peers": [{
                "peer": "12D3KooWpeer", "endpoint": "remote:tcp:10.0.0.2:7000",
                "addresses": [], "connected": true, "rtt_us": 1500,
                "messages_sent": 40, "messages_received": 2, "failures": 1, "path": null,
                "acked": 27, "undelivered": 11, "retransmitted": 3, "unacked": 2
            }],
            "fingerprint_mismatches": 0,
            "type_mismatches": 0,
            "remote": {
                "handshake_failures": 0, "link_failures": 0, "dial_failures": 0,
                "refused_routes": 0, "signature_failures": 0, "bad_frames": 0,
                "undelivered": 13, "retired_peers": 1, "flow_overruns": 0
            }
        }))
        .unwrap()
    }

    /// The cell under `header` in the row starting with `first` (cells start where their
    /// header does).
    fn cell(table: &str, first: &str, header: &str) -> String {
        let mut lines = table.lines().skip_while(|l| !l.contains(header));
        let head = lines
            .next()
            .unwrap_or_else(|| panic!("no {header}:\n{table}"));
        let row = lines
            .find(|l| l.trim_start().starts_with(first))
            .unwrap_or_else(|| panic!("no row {first}:\n{table}"));
        let at = head.find(&format!(" {header}")).unwrap() + 1;
        row[at..].split_whitespace().next().unwrap().to_owned()
    }

    #[test]
    fn the_tables_show_what_peers_acknowledged_and_what_never_reached_them() {
        let s = snapshot();
        let peers = peers_table(&s);
        for (header, value) in [
            ("ACKED", "27"),
            ("UNACKED", "2"),
            ("RESENT", "3"),
            ("UNDELIVERED", "11"),
            ("FAILURES", "1"),
        ] {
            assert_eq!(cell(&peers, "12D3KooWpeer", header), value, "{peers}");
        }
        let routes = routes_table(&s);
        assert_eq!(cell(&routes, "1", "UNDELIVERED"), "11", "{routes}");
        assert!(
            routes
                .lines()
                .any(|l| l
                    == "remote peers: 13 undelivered messages, 1 retired peers, 0 flow overruns"),
            "{routes}"
        );
    }

    #[test]
    fn the_links_table_shows_the_peer_its_rtt_drops_lag_and_schema_match() {
        let routes = routes_table(&snapshot());
        let links = routes.split_once("\nlinks\n").unwrap().1;
        for (header, value) in [
            ("PEER", "12D3KooWpeer"),
            ("RTT", "1.50"),
            ("MESSAGES", "40"),
            ("DROPS", "16"),
            ("LAG", "4/4"),
            ("SCHEMA", "compatible"),
        ] {
            assert_eq!(cell(links, "1", header), value, "{links}");
        }
        assert!(links.contains("compatible (-4)"), "{links}");
    }
}
