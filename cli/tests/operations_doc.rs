//! `docs/operations.md` documents every configuration key, and only keys that exist: a key
//! added to `Config` without a row in the reference fails here, and so does a row left behind by
//! a removed or renamed key. Its example environment overrides must load, too.

#![allow(clippy::unwrap_used)]

use dndm_cli::Config;

const DOC: &str = include_str!("../../docs/operations.md");

#[test]
fn every_config_key_is_documented() {
    let keys = Config::keys();
    assert!(keys.len() > 20, "Config::keys() lists every key: {keys:?}");
    let missing: Vec<&String> = keys
        .iter()
        .filter(|key| !DOC.contains(&format!("| `{key}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md has no reference row (| `key` |) for {missing:?}"
    );
}

#[test]
fn every_documented_key_exists() {
    let keys = Config::keys();
    let sections = ["node.", "router.", "remote.", "mesh.", "metrics."];
    let documented: Vec<&str> = DOC
        .lines()
        .filter_map(|line| {
            line.strip_prefix("| `")?
                .split_once('`')
                .map(|(key, _)| key)
        })
        .filter(|key| sections.iter().any(|s| key.starts_with(s)))
        .collect();
    assert!(!documented.is_empty(), "no reference rows found");
    let unknown: Vec<&&str> = documented
        .iter()
        .filter(|key| !keys.iter().any(|k| k == **key))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/operations.md documents keys Config does not have: {unknown:?}"
    );
}

#[test]
fn the_documented_overrides_are_accepted() {
    // The `DNDM_SECTION__KEY=value` lines of the doc's example, applied together.
    let vars: Vec<(String, String)> = DOC
        .lines()
        .filter_map(|line| line.strip_prefix("DNDM_"))
        .filter_map(|rest| {
            let (name, value) = rest.split_once('=')?;
            let value = value.split("  ").next().unwrap_or_default().trim();
            Some((format!("DNDM_{name}"), value.trim_matches('\'').to_owned()))
        })
        .collect();
    assert!(vars.len() >= 5, "{vars:?}");
    let config = Config::default()
        .with_env_overrides(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .unwrap_or_else(|e| panic!("{vars:?}: {e}"));
    assert_eq!(config.mesh.max_peers, 8);
    assert_eq!(config.remote.connect.len(), 2);
}
