//! Replays the committed fuzz corpus (`codec/fuzz/corpus/<target>/`) through every decoder.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "support/fuzz.rs"]
mod fuzz;

use std::path::Path;

#[test]
fn committed_corpus_replays_through_every_decoder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut count = 0;
    for target in fuzz::TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            // Every input goes through every decoder, whatever target found it.
            fuzz::all(&data);
            count += 1;
        }
    }
    assert!(count >= 3 * 8, "corpus has only {count} inputs");
}
