//! Replays the committed fuzz corpus (`cli/fuzz/corpus/config/`) and the seed inputs through
//! the `config` harness (`support/fuzz.rs`). `write_seeds` (ignored) writes the seeds into the
//! corpus.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/fuzz.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/config")
}

#[test]
fn config_corpus_replays() {
    for seed in fuzz::seeds() {
        fuzz::config(&seed);
    }
    let mut count = 0;
    for entry in std::fs::read_dir(corpus()).unwrap() {
        fuzz::config(&std::fs::read(entry.unwrap().path()).unwrap());
        count += 1;
    }
    assert!(count >= 6, "corpus has {count} inputs");
}

/// Writes the seed inputs as `seed-<n>` files into the corpus:
/// `cargo test -p dndm-cli --test config_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files; run by hand to refresh the seeds"]
fn write_seeds() {
    std::fs::create_dir_all(corpus()).unwrap();
    for (n, seed) in fuzz::seeds().iter().enumerate() {
        std::fs::write(corpus().join(format!("seed-{n}")), seed).unwrap();
    }
}
