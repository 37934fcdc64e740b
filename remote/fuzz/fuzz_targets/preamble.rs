//! cargo-fuzz target `preamble`: `cargo +nightly fuzz run preamble` from `remote/`.
#![no_main]

#[path = "../../tests/support/fuzz.rs"]
mod fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::preamble(data));
