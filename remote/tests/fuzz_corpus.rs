//! Replays the committed fuzz corpus (`remote/fuzz/corpus/<target>/`) and the seed inputs
//! through the `session_sequence` and `preamble` harnesses (`support/fuzz.rs`), so CI checks
//! every input the fuzzers kept. `write_seeds` (ignored) writes the seeds into the corpus.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/fuzz.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// Every file under `corpus(target)`, sorted by name.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect()
}

#[test]
fn session_sequence_corpus_replays() {
    let committed = inputs("session_sequence");
    assert!(
        committed.len() >= 6,
        "corpus has {} inputs",
        committed.len()
    );
    for data in fuzz::session_seeds() {
        fuzz::session_sequence(&data);
    }
    for (path, data) in committed {
        eprintln!("{}", path.display());
        fuzz::session_sequence(&data);
    }
}

#[test]
fn preamble_corpus_replays() {
    let committed = inputs("preamble");
    assert!(
        committed.len() >= 6,
        "corpus has {} inputs",
        committed.len()
    );
    for data in fuzz::preamble_seeds() {
        fuzz::preamble(&data);
    }
    for (_, data) in committed {
        // Every input goes through both harnesses, whichever target found it.
        fuzz::preamble(&data);
        fuzz::session_sequence(&data);
    }
}

/// Writes the seed inputs as `seed-<n>` files into the corpus directories:
/// `cargo test -p dndm-remote --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "writes files; run by hand to refresh the seeds"]
fn write_seeds() {
    for (target, seeds) in [
        ("session_sequence", fuzz::session_seeds()),
        ("preamble", fuzz::preamble_seeds()),
    ] {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (n, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{n}")), seed).unwrap();
        }
    }
}
