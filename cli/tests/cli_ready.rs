//! `/readyz` and `dndm status` follow a required peer: node 2 requires node 1 (a remote link it
//! dials), is ready while the link is up, not ready (naming node 1) when node 1 goes away, and
//! ready again when node 1 comes back with the same identity on the same address.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Command, Output};

use support::{GUARD, Proc, Scratch, http_get};

/// A started remote-link node: its process, PeerId and the lines it printed.
struct Started {
    /// Held: dropping it kills the node.
    _proc: Proc,
    peer_id: String,
    lines: Vec<String>,
}

fn start(name: &str, config: &std::path::Path) -> Started {
    let proc = Proc::spawn(
        name,
        &[
            "node",
            "--config",
            config.to_str().unwrap(),
            "--stop-on-eof",
        ],
    );
    let lines = proc.lines_until("ready", GUARD);
    let peer_id = lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("node {name} ")))
        .unwrap_or_else(|| panic!("{name}: {lines:?}"))
        .to_owned();
    Started {
        _proc: proc,
        peer_id,
        lines,
    }
}

fn field(started: &Started, prefix: &str) -> String {
    started
        .lines
        .iter()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {:?}", started.lines))
        .to_owned()
}

/// `dndm status --node URL --wait-for STATE`, until the state or the guard.
fn status_when(node: &str, state: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["status", "--node", node, "--wait-for", state, "--timeout"])
        .arg(GUARD.as_secs().to_string())
        .output()
        .unwrap()
}

#[test]
fn readyz_follows_a_required_peer_away_and_back() {
    let dir = Scratch::new("cli-ready");
    let identity = dir.path().join("n1.key");
    let n1_toml = |port: &str| {
        format!(
            "[node]\nname = \"n1\"\nidentity_file = \"{}\"\n[remote]\nenabled = true\nlisten = [\"127.0.0.1:{port}\"]\n",
            identity.display()
        )
    };
    let n1 = start("n1", &dir.file("n1.toml", &n1_toml("0")));
    let address = field(&n1, "remote tcp:");
    let port = address.rsplit(':').next().unwrap().to_owned();
    let n2_toml = format!(
        "[node]\nname = \"n2\"\nrequired_peers = [\"{peer}\"]\n\
         [remote]\nenabled = true\nconnect = [\"{peer}@{address}\"]\n\
         backoff_initial_ms = 50\nbackoff_max_ms = 200\n\
         [metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
        peer = n1.peer_id
    );
    let n2 = start("n2", &dir.file("n2.toml", &n2_toml));
    let metrics = field(&n2, "metrics ");

    // Up: ready, for /readyz and for `dndm status` (exit 0).
    let ready = status_when(&metrics, "ready");
    let summary = String::from_utf8_lossy(&ready.stdout);
    assert!(ready.status.success(), "{summary}");
    assert!(summary.starts_with("node       n2 "), "{summary}");
    assert!(summary.contains(&format!("{} up", n1.peer_id)), "{summary}");
    let (head, body) = http_get(&metrics, "/readyz");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ready\n");
    let (head, body) = http_get(&metrics, "/healthz");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "ok\n");
    // The live route graph, refreshed twice (not a terminal: one table after the other).
    let watched = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args([
            "routes", "--node", &metrics, "--watch", "0.1", "--count", "2",
        ])
        .output()
        .unwrap();
    let graph = String::from_utf8_lossy(&watched.stdout);
    assert!(watched.status.success(), "{graph}");
    assert_eq!(graph.matches("\nlinks\n").count(), 2, "{graph}");
    assert_eq!(graph.lines().filter(|l| *l == "--").count(), 2, "{graph}");

    // Node 1 goes away: not ready, naming it (exit 4 and one error line).
    let n1_peer = n1.peer_id.clone();
    drop(n1);
    let gone = status_when(&metrics, "not-ready");
    let stderr = String::from_utf8_lossy(&gone.stderr);
    assert_eq!(gone.status.code(), Some(4), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("required peer {n1_peer} is not connected")),
        "{stderr}"
    );
    let (head, body) = http_get(&metrics, "/readyz");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(body.contains(&n1_peer), "{body}");
    let json = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["status", "--node", &metrics, "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["ready"], false, "{report}");
    assert_eq!(json.status.code(), Some(4));

    // Node 1 comes back (same identity, same address): ready again.
    let n1 = start("n1", &dir.file("n1-again.toml", &n1_toml(&port)));
    assert_eq!(n1.peer_id, n1_peer);
    let back = status_when(&metrics, "ready");
    assert!(
        back.status.success(),
        "{}{}",
        String::from_utf8_lossy(&back.stdout),
        String::from_utf8_lossy(&back.stderr)
    );
    let (head, _) = http_get(&metrics, "/readyz");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(n1);
    drop(n2);
}
