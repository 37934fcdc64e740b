//! The README's demo command starts a local mesh, runs to completion and prints a final report
//! whose numbers add up: every lossless subscriber got every reliable message, the lossy one
//! counted what it dropped, and every node had peers.

#![allow(clippy::unwrap_used)]

use std::process::Command;

const SENSORS: u64 = 2;
const MESSAGES: u64 = 300;

/// The `A/B` before ` received` in a report line.
fn received(line: &str) -> (u64, u64) {
    let field = line
        .split_whitespace()
        .take_while(|w| *w != "received,")
        .last()
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    let (got, of) = field.split_once('/').unwrap();
    (got.parse().unwrap(), of.parse().unwrap())
}

#[test]
fn demo_runs_a_mesh_and_reports() {
    let output = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["demo", "--nodes", "3", "--messages", &MESSAGES.to_string()])
        .output()
        .expect("the dndm binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    let report = stdout
        .split_once("final report\n")
        .unwrap_or_else(|| panic!("no final report in:\n{stdout}"))
        .1;
    let total = SENSORS * MESSAGES;
    assert!(
        report.contains(&format!("{SENSORS} sensors, {total} reliable messages")),
        "{report}"
    );

    let subscribers: Vec<&str> = report
        .lines()
        .filter(|l| l.trim_start().starts_with("subscriber"))
        .collect();
    let lossless: Vec<&str> = subscribers
        .iter()
        .copied()
        .filter(|l| l.contains("(Block)"))
        .collect();
    assert_eq!(lossless.len(), 2, "{report}");
    for line in lossless {
        assert_eq!(received(line), (total, total), "{line}");
        assert!(line.contains(" 0 lost, in order per sensor"), "{line}");
    }
    let lossy = subscribers
        .iter()
        .find(|l| l.contains("(DropOldest)"))
        .unwrap_or_else(|| panic!("no lossy subscriber in:\n{report}"));
    let (got, of) = received(lossy);
    let dropped: u64 = lossy
        .split("received, ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((of, got + dropped), (total, total), "{lossy}");

    let service = report
        .lines()
        .find(|l| l.trim_start().starts_with("service"))
        .unwrap();
    let requests: u64 = service
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(requests > 0, "{service}");

    let peers = report
        .lines()
        .find(|l| l.trim_start().starts_with("peers"))
        .unwrap();
    let counts: Vec<u64> = peers
        .trim_start()
        .trim_start_matches("peers")
        .split(" (sessions up)")
        .next()
        .unwrap()
        .split(',')
        .map(|node| node.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(counts.len(), 3, "{peers}");
    assert!(counts.iter().all(|&n| n > 0), "{peers}");
    assert_eq!(report.trim_end().lines().last(), Some("ok"), "{report}");
}

#[test]
fn bad_arguments_give_one_clear_line_and_a_failure_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["demo", "--messages", "0"])
        .output()
        .expect("the dndm binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--messages"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
