//! cargo-fuzz target `decode_frame`: `cargo +nightly fuzz run decode_frame` from `codec/`.
#![no_main]

#[path = "../../tests/support/fuzz.rs"]
mod fuzz;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz::decode_frame(data));
