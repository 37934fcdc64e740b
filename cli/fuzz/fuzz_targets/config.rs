//! cargo-fuzz target `config`: `cargo +nightly fuzz run config` from `cli/`.
#![no_main]

#[path = "../../tests/support/fuzz.rs"]
mod fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::config(data));
