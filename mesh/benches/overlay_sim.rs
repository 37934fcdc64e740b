//! The mesh policy and multi-hop delivery simulated in virtual time (no sockets): 1,000 nodes
//! with at most 8 neighbours each, with and without churn.
//!
//! `cargo bench -p dndm-mesh --bench overlay_sim` (add `-- --nodes N`, `-- --seed S`).
//!
//! Prints one row per scenario: delivery ratio to nodes that stayed, hops p50/p99/max, batch
//! copies sent per published message, copies received twice per message, the time from a
//! node's start (bootstrapped with one random earlier node) to its subscription being linked,
//! and the same after a rejoin. Numbers are recorded in `docs/benchmarks.md`.
#![allow(missing_docs, clippy::unwrap_used, unreachable_pub)]

use std::time::{Duration, Instant};

use dndm_mesh::overlay::sim::{SimConfig, run};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let nodes = arg("--nodes", 1000) as usize;
    let seed = arg("--seed", 1);
    // `--rows 3` leaves out the slow last row (every node hears 999 streams).
    let rows = arg("--rows", 4) as usize;
    println!(
        "| scenario | stayers complete | delivery | lost | hops p50/p99/max | copies/msg | dup/msg | join→linked p50/p99 | rejoin p50 | max degree | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let scenarios: [(&str, f64, usize, bool); 4] = [
        ("1 publisher → all, no churn", 0.0, 1, false),
        ("1 publisher → all, 10 % churn", 0.1, 1, false),
        ("1 publisher → all, 30 % churn", 0.3, 1, false),
        ("all publish → 1 `**` subscriber", 0.0, nodes - 1, true),
    ];
    for (name, churn, publishers, wildcard) in scenarios.into_iter().take(rows) {
        let mut config = SimConfig::new(nodes, 8);
        config.seed = seed;
        config.churn = churn;
        config.publishers = publishers;
        config.wildcard = wildcard;
        config.subscribers = if wildcard { 1 } else { nodes - 1 };
        config.messages = if wildcard { 20 } else { 1000 };
        config.join_spacing = Duration::from_millis(10);
        let started = Instant::now();
        let r = run(&config);
        println!(
            "| {name} | {}/{} | {:.5} | {} | {}/{}/{} | {:.1} | {:.2} | {:.0?}/{:.0?} | {:.0?} | {} | {:.1?} |",
            r.stayers_complete,
            r.stayers,
            r.delivery_ratio,
            r.lost,
            r.hops_p50,
            r.hops_p99,
            r.hops_max,
            r.transmissions_per_message,
            r.duplicates_per_message,
            r.convergence_p50,
            r.convergence_p99,
            r.rejoin_p50,
            r.max_degree,
            started.elapsed(),
        );
    }
}
