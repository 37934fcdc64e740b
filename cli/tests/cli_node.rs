//! `dndm node`, `pub`, `sub`, `peers`, `routes` and `keygen` as a person would use them: two
//! node processes from TOML files (the second bootstrapped to the first), a `dndm sub` attached
//! to node 2 and a `dndm pub` attached to node 1, the lines typed into `pub` printed by `sub`,
//! peers with RTTs, Prometheus metrics with real counts, and one clear line for a bad config.

#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;

use support::{GUARD, Proc, Scratch, http_get, node_toml, start_node};

#[test]
fn two_nodes_carry_lines_from_pub_to_sub_and_show_peers_and_metrics() {
    let dir = Scratch::new("cli-node");
    let n1_toml = dir.file("n1.toml", &node_toml("n1", None));
    let mut n1 = start_node("n1", &n1_toml, &[]);
    let n2_toml = dir.file("n2.toml", &node_toml("n2", Some(&n1.mesh)));
    // Node 2 also subscribes, so its own counters move.
    let mut n2 = start_node("n2", &n2_toml, &["--subscribe", "chat.**"]);

    // The `dndm sub` runs until the publisher has confirmed delivery: `pub` exits 0 only when
    // every linked subscriber acknowledged every line, and a subscriber that exits on its own
    // (`--count`) may take its last acknowledgement with it (the case of `tests/cli_pub.rs`).
    let sub = Proc::spawn("sub", &["sub", "chat.*", "--bootstrap", &n2.mesh]);
    // Two subscribers: node 2's and the `dndm sub` process.
    let mut publisher = Proc::spawn(
        "pub",
        &[
            "pub",
            "chat.room1",
            "--subscribers",
            "2",
            "--wait",
            "90",
            "--bootstrap",
            &n1.mesh,
        ],
    );
    let lines = ["hello mesh", "ünïcode ✓", "third line"];
    for line in lines {
        publisher.write(&format!("{line}\n"));
    }
    publisher.close_stdin();

    for line in lines {
        assert_eq!(sub.line(GUARD), line);
    }
    for line in lines {
        assert_eq!(n2.proc.line(GUARD), line);
    }
    let status = publisher.wait(GUARD);
    assert!(status.success(), "pub: {}", publisher.stderr());
    assert!(
        publisher.stderr().contains(
            "sent 3 message(s) on dndm.Text@chat.room1; 2 of 2 linked peer(s) confirmed, 0 left"
        ),
        "{}",
        publisher.stderr()
    );
    drop(sub);

    // Node 2 sees node 1 with a session and an RTT.
    let peers = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args([
            "peers",
            "--node",
            &n2.metrics,
            "--wait-for",
            "1",
            "--timeout",
            "90",
        ])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&peers.stdout);
    assert!(
        peers.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&peers.stderr)
    );
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with(&n1.peer_id))
        .unwrap_or_else(|| panic!("node 1 missing from:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "up", "{row}");
    assert_eq!(cells[3], "ms", "{row}");
    assert!(cells[2].parse::<f64>().unwrap() > 0.0, "{row}");
    assert!(cells.contains(&"direct"), "the path: {row}");
    assert!(
        table.lines().any(|l| l == "reachability unknown"),
        "AutoNAT is off, so reachability is unknown:\n{table}"
    );

    let routes = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["routes", "--node", &n2.metrics])
        .output()
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    let local = routes
        .lines()
        .find(|l| l.contains("dndm.Text@chat.**") && l.contains("local"))
        .unwrap_or_else(|| panic!("no local interest in:\n{routes}"));
    assert!(local.contains("DropOldest"), "{local}");

    // Prometheus text with the messages node 2 received, per route and per peer.
    let (head, metrics) = http_get(&n2.metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(
        metrics.contains(r#"dndm_messages_received_total{node="n2",route="dndm.Text@chat.**"} 3"#),
        "{metrics}"
    );
    let peer_received: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("dndm_peer_messages_received_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    // The publisher's session closed in order when it exited, and a closed link leaves the
    // peer list (its counters with it); node 1 sent nothing. So at most the three lines.
    assert!(peer_received <= 3, "{metrics}");
    let connected: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"dndm_peers_connected{node="n2"} "#))
        .unwrap()
        .parse()
        .unwrap();
    assert!(connected >= 1, "{metrics}");
    assert!(metrics.contains("dndm_peer_rtt_seconds{"), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    let (head, _) = http_get(&n2.metrics, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, snapshot) = http_get(&n1.metrics, "/snapshot");
    assert!(head.contains("application/json"), "{head}");
    assert!(snapshot.contains(&n1.peer_id), "{snapshot}");

    // End of input stops a node cleanly.
    n2.proc.close_stdin();
    assert!(n2.proc.wait(GUARD).success(), "n2: {}", n2.proc.stderr());
    n1.proc.close_stdin();
    assert!(n1.proc.wait(GUARD).success(), "n1: {}", n1.proc.stderr());
}

#[test]
fn a_bad_config_gives_one_line_naming_the_field() {
    let dir = Scratch::new("cli-bad-config");
    let bad = dir.file("bad.toml", "[mesh]\nmax_peers = 0\n");
    let output = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["node", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("mesh.max_peers = 0"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let typo = dir.file("typo.toml", "[mesh]\nmax_peer = 3\n");
    let output = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["node", "--config", typo.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("max_peer"), "{stderr}");
}

#[test]
fn keygen_creates_a_private_identity_and_shows_it() {
    let dir = Scratch::new("cli-keygen");
    let key = dir.path().join("node.key");
    let key = key.to_str().unwrap();
    let created = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["keygen", "--out", key])
        .output()
        .unwrap();
    assert!(created.status.success());
    let peer_id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    assert!(peer_id.starts_with("12D3KooW"), "{peer_id}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let shown = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["keygen", "--out", key, "--show"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), peer_id);
    let again = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["keygen", "--out", key])
        .output()
        .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("already exists"),
        "{stderr}"
    );
}
