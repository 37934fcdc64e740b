//! The `config` fuzz harness: [`Config::from_toml_str`] then [`Config::with_env_overrides`].
//! Shared by the cargo-fuzz target (`cli/fuzz/fuzz_targets/config.rs`) and the corpus replay
//! test (`core/tests/config_corpus.rs`). Must return without panicking for any input.
//!
//! The input is text (invalid UTF-8 replaced) split at NUL bytes: the first piece is the TOML
//! file, each further piece one environment variable `NAME=value`.
#![allow(dead_code, unreachable_pub)]

use dndm_cli::Config;

/// Names of the fuzz targets, as corpus directory names (`cli/fuzz/corpus/<target>/`).
pub const TARGETS: [&str; 1] = ["config"];

/// Parses the TOML piece, applies the variables to the result (or to the defaults when the
/// TOML is refused), and checks that every configuration accepted is valid and survives
/// [`Config::to_toml_string`] and [`Config::from_toml_str`] unchanged.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut pieces = text.split('\0');
    let file = pieces.next().unwrap_or_default();
    let vars: Vec<(&str, &str)> = pieces
        .map(|piece| piece.split_once('=').unwrap_or((piece, "")))
        .collect();
    let base = match Config::from_toml_str(file) {
        Ok(config) => {
            round_trip(&config);
            config
        }
        Err(error) => {
            let _ = error.to_string();
            let _ = error.problems();
            Config::default()
        }
    };
    match base.with_env_overrides(vars) {
        Ok(config) => round_trip(&config),
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

fn round_trip(config: &Config) {
    if let Err(error) = config.validate() {
        panic!("an accepted config does not validate: {error}");
    }
    let text = match config.to_toml_string() {
        Ok(text) => text,
        Err(error) => panic!("a valid config does not serialise: {error}"),
    };
    match Config::from_toml_str(&text) {
        Ok(back) => assert_eq!(&back, config, "round trip through {text:?}"),
        Err(error) => panic!("re-parsing {text:?}: {error}"),
    }
}

/// Seed inputs: the presets, every key set, and environment overrides of each kind.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<String> = vec![
        String::new(),
        Config::lan_mesh().to_toml_string().unwrap_or_default(),
        Config::default().to_toml_string().unwrap_or_default(),
        "[mesh]\nenabled = true\nmax_peers = 20\n\0DNDM_NODE__NAME=robot1".into(),
        "[mesh]\nmax_peers = 0\n".into(),
        "[node]\nname = \"a b\"\nidentity_file = \"id.key\"\n[router]\noverflow = \"block\"\n"
            .into(),
        "[remote]\nenabled = true\nlisten = [\"127.0.0.1:7000\", \"unix:/tmp/s\"]\n\
         \0DNDM_REMOTE__CONNECT=127.0.0.1:1,[::1]:2\0DNDM_REMOTE__BUDGET__ROUTES=8"
            .into(),
        "[[remote.acl]]\npeers = [\"*\"]\npublish = [\"test.Reading@robot.**\"]\n\
         subscribe = [\"test.Reading@**\"]\ncall = []\n\
         \0DNDM_REMOTE__ACL=[{publish = [\"a.B@c\"]}]"
            .into(),
        "\0DNDM_MESH__MAX_PEERS=32\0DNDM_MESH_MAX_PEERS=1\0DNDM_ROUTER__QUEUE_CAPACITY=true".into(),
        "\0DNDM_REMOTE__LISTEN=[\"127.0.0.1:7000\"]\0DNDM_NODE__NAME=42\0DNDM_METRICS__LISTEN="
            .into(),
    ];
    seeds.dedup();
    seeds.into_iter().map(String::into_bytes).collect()
}
