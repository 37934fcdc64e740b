//! `dndm bench` runs every link kind to completion, reports a row per link, and draws SVG
//! charts with `--svg`.

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
fn bench_writes_svg_charts_naming_every_case() {
    let dir = tempfile::tempdir().unwrap();
    let charts = dir.path().join("charts");
    let out = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args([
            "bench",
            "--links",
            "in-process",
            "remote",
            "--messages",
            "200",
            "--round-trips",
            "50",
            "--svg",
        ])
        .arg(&charts)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dndm bench failed: {stderr}");
    // Not a terminal: one progress line per case (3 sizes and the round trips, per link).
    let cases: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("bench ["))
        .collect();
    assert_eq!(cases.len(), 8, "{stderr}");
    assert!(
        cases[7].starts_with("bench [8/8] remote: 50 round trips"),
        "{stderr}"
    );

    for (file, labels) in [
        (
            "throughput.svg",
            &[
                "in-process",
                "remote",
                "8 B",
                "1 KiB",
                "64 KiB",
                "messages/s",
                "MB/s",
            ][..],
        ),
        (
            "latency.svg",
            &["in-process: p50", "remote: p50", "p50", "p90", "max"][..],
        ),
    ] {
        let path = charts.join(file);
        assert!(
            stderr.contains(&format!("wrote {}", path.display())),
            "{stderr}"
        );
        let svg = std::fs::read_to_string(&path).unwrap();
        let document = roxmltree::Document::parse(&svg).unwrap();
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg", "{file}");
        assert_eq!(
            root.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg")
        );
        let text: Vec<&str> = document
            .descendants()
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        for label in labels {
            assert!(
                text.iter().any(|t| t.contains(label)),
                "{label} in {file}: {text:?}"
            );
        }
        assert!(
            !text.iter().any(|t| t.contains("mesh")),
            "only the links asked for: {text:?}"
        );
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
