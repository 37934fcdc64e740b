//! cargo-fuzz target `verify_batch`: `cargo +nightly fuzz run verify_batch` from `codec/`.
#![no_main]

#[path = "../../tests/support/fuzz.rs"]
mod fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::verify_batch_target(data));
