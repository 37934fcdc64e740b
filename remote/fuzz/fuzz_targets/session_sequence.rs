//! cargo-fuzz target `session_sequence`: `cargo +nightly fuzz run session_sequence` from `remote/`.
#![no_main]

#[path = "../../tests/support/fuzz.rs"]
mod fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::session_sequence(data));
