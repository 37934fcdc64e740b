//! cargo-fuzz target `split_stream`: `cargo +nightly fuzz run split_stream` from `codec/`.
#![no_main]

#[path = "../../tests/support/fuzz.rs"]
mod fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::split_stream(data));
