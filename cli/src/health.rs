//! Liveness and readiness of a node (`GET /healthz`, `GET /readyz`, `dndm status`).
//!
//! *Live* means the process answers: `/healthz` is 200 as long as the HTTP task runs, which a
//! wedged runtime would not. *Ready* means the node does what it is configured for: its
//! endpoints are attached and listening, every `node.required_peers` entry has a session, no
//! dial target's circuit breaker is open, and the router is not closed. Readiness is a pure
//! function of a [`NodeSnapshot`], so `/readyz` and `dndm status` cannot disagree.

use crate::metrics::NodeSnapshot;

/// Why a node is not ready: one reason per line, in the order checked.
pub(crate) fn not_ready(snapshot: Option<&NodeSnapshot>, required: &[String]) -> Vec<String> {
    let Some(snapshot) = snapshot else {
        return vec!["starting: endpoints are not attached yet".to_owned()];
    };
    let mut reasons = Vec::new();
    if snapshot.closed {
        reasons.push("the router is closed".to_owned());
    }
    for peer in required {
        let connected = snapshot
            .peers
            .iter()
            .any(|view| &view.peer == peer && view.connected);
        if !connected {
            reasons.push(format!("required peer {peer} is not connected"));
        }
    }
    for breaker in &snapshot.breakers {
        if breaker.open {
            reasons.push(format!(
                "circuit breaker open for {} after {} failed dial(s)",
                breaker.target, breaker.failures
            ));
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{BreakerView, PeerView};

    fn snapshot() -> NodeSnapshot {
        serde_json::from_value(serde_json::json!({
            "node": "n", "peer_id": "me", "closed": false, "listening": [], "endpoints": [],
            "intents": [], "interests": [], "links": [], "services": [], "peers": [],
            "fingerprint_mismatches": 0, "type_mismatches": 0, "remote": null,
        }))
        .expect("a minimal snapshot")
    }

    fn peer(id: &str, connected: bool) -> PeerView {
        let mut view: PeerView = serde_json::from_value(serde_json::json!({
            "peer": id, "endpoint": "remote", "addresses": [], "connected": connected,
            "rtt_us": null, "messages_sent": 0, "messages_received": 0, "failures": 0,
            "path": null,
        }))
        .expect("a minimal peer");
        view.connected = connected;
        view
    }

    #[test]
    fn a_node_is_ready_when_attached_with_its_required_peers_and_no_open_breaker() {
        assert_eq!(
            not_ready(None, &[]),
            ["starting: endpoints are not attached yet"]
        );
        let mut state = snapshot();
        assert!(not_ready(Some(&state), &[]).is_empty());

        let required = ["gateway".to_owned()];
        assert_eq!(
            not_ready(Some(&state), &required),
            ["required peer gateway is not connected"]
        );
        state.peers.push(peer("gateway", false));
        assert_eq!(not_ready(Some(&state), &required).len(), 1);
        state.peers.push(peer("gateway", true));
        assert!(not_ready(Some(&state), &required).is_empty());

        state.breakers.push(BreakerView {
            target: "tcp:10.0.0.1:7000".to_owned(),
            open: true,
            failures: 5,
        });
        state.closed = true;
        assert_eq!(
            not_ready(Some(&state), &required),
            [
                "the router is closed",
                "circuit breaker open for tcp:10.0.0.1:7000 after 5 failed dial(s)"
            ]
        );
    }
}
