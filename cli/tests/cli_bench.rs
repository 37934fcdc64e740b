//! `dndm bench` runs every link kind to completion and reports a row per link.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn bench_measures_every_link_and_prints_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args([
            "bench",
            "--messages",
            "400",
            "--round-trips",
            "20",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dndm bench failed: {stderr}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let links: Vec<&str> = rows.iter().map(|r| r["link"].as_str().unwrap()).collect();
    assert_eq!(links, ["in-process", "remote", "mesh"]);
    for row in rows {
        let throughput = row["throughput"].as_array().unwrap();
        assert_eq!(throughput.len(), 3, "8 B, 1 KiB, 64 KiB: {row}");
        for cell in throughput {
            assert!(
                cell[1].as_f64().unwrap() > 0.0,
                "a rate for every size: {row}"
            );
        }
        assert!(row["rtt_p99_us"].as_u64().unwrap() >= row["rtt_p50_us"].as_u64().unwrap());
    }
}

#[test]
fn bench_rejects_zero_messages_with_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["bench", "--messages", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: --messages"), "{stderr}");
}
