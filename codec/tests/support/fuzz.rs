//! The fuzz harness: one function per decoder. Shared by the cargo-fuzz targets
//! (`codec/fuzz/fuzz_targets/`), the stable fuzz driver (`codec/examples/fuzz_decode.rs`) and
//! the corpus replay test (`codec/tests/corpus.rs`). Each must return without panicking for any
//! input.
#![allow(dead_code, unreachable_pub)]

use bytes::{Bytes, BytesMut};
use dndm_codec::{
    Decoder, Dictionary, Encoder, FrameHeader, Limits, SessionId, split_frame, verify_batch,
};
use dndm_core::Keypair;

/// Names of the fuzz targets, as corpus directory names.
pub const TARGETS: [&str; 3] = ["decode_frame", "split_stream", "verify_batch"];

/// The dictionary fuzz inputs may refer to (id 1).
pub fn dictionary() -> Dictionary {
    Dictionary::new(
        1,
        b"example.Imu@robot.arm.imu telemetry sample robot.arm0".to_vec(),
    )
    .expect("non-empty dictionary")
}

/// Session and key the `verify_batch` seeds are signed with.
pub fn signer() -> (Keypair, SessionId) {
    (Keypair::from_seed([3; 32]), SessionId::from_bytes([0; 32]))
}

/// Decodes one frame; whatever decodes must re-encode and decode to the same value.
pub fn decode_frame(data: &[u8]) {
    let limits = Limits::default();
    let _ = FrameHeader::parse(data, &limits);
    let bytes = Bytes::copy_from_slice(data);
    let mut decoder = Decoder::new(limits).with_dictionary(dictionary());
    if let Ok(frame) = decoder.decode(&bytes) {
        // Re-encoding can only fail on the frame length (a compressed batch re-encoded plain).
        match Encoder::new(limits).encode(&frame) {
            Ok(again) => {
                let back = decoder.decode(&again).expect("re-encoded frame decodes");
                assert_eq!(back, frame, "round trip of a decoded frame");
            }
            Err(dndm_codec::EncodeError::Limit(_)) => {}
            Err(e) => panic!("decoded frame does not re-encode: {e}"),
        }
    }
}

/// Splits a byte stream into frames (fed in chunks of varying size) and decodes each.
pub fn split_stream(data: &[u8]) {
    let limits = Limits::default();
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let chunk = 1 + data.first().map_or(0, |b| usize::from(*b) % 64);
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match split_frame(&mut buf, &limits) {
                Ok(Some(frame)) => {
                    let _ = decoder.decode(&frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Verifies a batch signature; then decodes it if it verified.
pub fn verify_batch_target(data: &[u8]) {
    let (key, session) = signer();
    if verify_batch(data, &session, &key.public()).is_ok() {
        let _ = Decoder::new(Limits::default()).decode(&Bytes::copy_from_slice(data));
    }
}

/// Runs every target on `data`.
pub fn all(data: &[u8]) {
    decode_frame(data);
    split_stream(data);
    verify_batch_target(data);
}
