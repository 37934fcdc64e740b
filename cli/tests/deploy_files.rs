//! The files under `deploy/` run the `dndm` they ship with: the systemd unit and the container
//! start `dndm node` with flags it has, their `DNDM_*` settings are config keys that load with
//! the example `node.toml`, and the identity file lands in their state directory. (The Grafana
//! dashboard is checked against the exported metrics in `cli/src/metrics/tests.rs`.)

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use dndm_cli::Config;

const UNIT: &str = include_str!("../../deploy/systemd/dndm.service");
const CONTAINERFILE: &str = include_str!("../../deploy/container/Containerfile");
const NODE_TOML: &str = include_str!("../../deploy/node.toml");

/// The value of each `Key=value` line of the unit.
fn unit_values<'a>(key: &'a str) -> impl Iterator<Item = &'static str> + 'a {
    UNIT.lines()
        .filter_map(move |line| line.strip_prefix(key)?.strip_prefix('='))
}

/// The `NAME=value` pairs of the unit's `Environment=` lines.
fn unit_env() -> Vec<(String, String)> {
    unit_values("Environment")
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// The Containerfile's instructions, continuation lines joined and comments left out.
fn instructions() -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in CONTAINERFILE
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        match line.trim_end().strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    joined.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    joined
}

/// The `NAME=value` pairs of the runtime stage's `ENV` instruction.
fn container_env() -> Vec<(String, String)> {
    instructions()
        .iter()
        .filter_map(|i| i.strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap();
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

/// The JSON array of an instruction (`CMD ["node", ...]`).
fn exec_form(instruction: &str) -> Vec<String> {
    let line = instructions()
        .into_iter()
        .find_map(|i| {
            i.strip_prefix(&format!("{instruction} "))
                .map(str::to_owned)
        })
        .unwrap();
    serde_json::from_str(&line).unwrap()
}

#[test]
fn the_unit_and_the_container_run_dndm_node_with_the_same_existing_flags() {
    let exec_start: Vec<&str> = unit_values("ExecStart")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(exec_start[..2], ["/usr/local/bin/dndm", "node"]);
    let mut container = exec_form("ENTRYPOINT");
    container.extend(exec_form("CMD"));
    assert_eq!(
        container, exec_start,
        "the container runs what the unit runs"
    );

    let help = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["node", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    for flag in exec_start.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "dndm node has no {flag}: {help}");
    }
}

#[test]
fn the_example_config_loads_with_each_deployment_s_overrides() {
    let base = Config::from_toml_str(NODE_TOML).unwrap();
    assert!(base.mesh.enabled && base.metrics.enabled);

    let unit = base.clone().with_env_overrides(unit_env()).unwrap();
    let state = unit_values("StateDirectory").next().unwrap();
    assert_eq!(
        unit.node.identity_file,
        Some(PathBuf::from(format!("/var/lib/{state}/identity.key"))),
        "the identity lives in the unit's StateDirectory"
    );
    assert_eq!(unit.metrics.listen, "127.0.0.1:9464", "scraped on the host");

    let container = base.with_env_overrides(container_env()).unwrap();
    assert_eq!(
        container.node.identity_file,
        Some(PathBuf::from("/var/lib/dndm/identity.key"))
    );
    assert!(CONTAINERFILE.contains("VOLUME [\"/var/lib/dndm\"]"));
    let port = container.metrics.listen.rsplit(':').next().unwrap();
    assert_eq!(container.metrics.listen, format!("0.0.0.0:{port}"));
    let exposed = instructions()
        .into_iter()
        .find_map(|i| i.strip_prefix("EXPOSE ").map(str::to_owned))
        .unwrap();
    assert!(
        exposed
            .split_whitespace()
            .any(|p| p == format!("{port}/tcp")),
        "the metrics port {port} is exposed: {exposed}"
    );
}
