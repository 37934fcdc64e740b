//! Hostile input: decoding never panics, limits hold before allocation, zstd bombs and
//! tampered signatures are refused with typed errors.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use bytes::{Bytes, BytesMut};
use dndm_codec::{
    Batch, BatchMessage, BatchOptions, Compression, DecodeError, Decoder, Dictionary, Encoder,
    Frame, FrameHeader, LimitKind, Limits, SessionId, SignatureError, split_frame, verify_batch,
};
use dndm_core::Keypair;
use proptest::prelude::*;

/// Feeds `data` to every decoder; returns nothing, must not panic.
fn hammer(data: &[u8]) {
    let limits = Limits::default();
    let bytes = Bytes::copy_from_slice(data);
    let dict = Dictionary::new(1, b"example.Imu robot arm imu telemetry".to_vec()).unwrap();
    let _ = Decoder::new(limits).with_dictionary(dict).decode(&bytes);
    let _ = FrameHeader::parse(data, &limits);
    let key = Keypair::from_seed([3; 32]).public();
    let _ = verify_batch(data, &SessionId::from_bytes([0; 32]), &key);
    let mut buf = BytesMut::from(data);
    let mut dec = Decoder::new(limits);
    while let Ok(Some(frame)) = split_frame(&mut buf, &limits) {
        let _ = dec.decode(&frame);
    }
}

/// Sets the header's length field to match the buffer, so mutations reach the body decoder.
fn fix_len(frame: &mut [u8]) {
    if frame.len() >= 12 {
        let body = (frame.len() - 12) as u32;
        frame[8..12].copy_from_slice(&body.to_be_bytes());
    }
}

fn encoded(frame: &Frame, compress: bool, sign: bool) -> Vec<u8> {
    let mut enc = Encoder::new(Limits::default());
    if compress {
        enc = enc.with_compression(Compression::new(1, 0));
    }
    let key = Keypair::from_seed([3; 32]);
    let session = SessionId::from_bytes([0; 32]);
    match frame {
        Frame::Batch(b) if sign => enc
            .encode_batch(b, &BatchOptions::new().sign(&key, &session))
            .unwrap()
            .to_vec(),
        _ => enc.encode(frame).unwrap().to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        hammer(&data);
    }

    #[test]
    fn random_bodies_behind_a_valid_header_never_panic(
        kind in 1u8..=7,
        flags in 0u8..8,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut data = b"dndm".to_vec();
        data.extend_from_slice(&[1, kind, flags, 0]);
        data.extend_from_slice(&(body.len() as u32).to_be_bytes());
        data.extend_from_slice(&body);
        hammer(&data);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        frame in support::frame(),
        compress in any::<bool>(),
        sign in any::<bool>(),
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        keep_len in any::<bool>(),
    ) {
        let mut data = encoded(&frame, compress, sign);
        for (at, byte, op) in mutations {
            if data.is_empty() {
                break;
            }
            let i = at.index(data.len());
            match op {
                0 => data[i] ^= byte | 1,
                1 => data[i] = byte,
                2 => data.insert(i, byte),
                _ => { data.remove(i); }
            }
        }
        if keep_len {
            fix_len(&mut data);
        }
        hammer(&data);
    }
}

#[test]
fn a_header_announcing_4_gib_is_rejected_before_allocating() {
    let mut header = b"dndm".to_vec();
    header.extend_from_slice(&[1, 2, 0, 0]);
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    let limits = Limits::default();
    let err = Decoder::new(limits)
        .decode(&Bytes::from(header.clone()))
        .unwrap_err();
    assert!(
        matches!(&err, DecodeError::Limit(e) if e.kind == LimitKind::FrameLen),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "frame length 4294967307 exceeds max_frame_len 4194304"
    );
    let mut buf = BytesMut::with_capacity(12);
    buf.extend_from_slice(&header);
    assert!(split_frame(&mut buf, &limits).is_err());
    assert!(
        buf.capacity() < 1024,
        "nothing reserved: {}",
        buf.capacity()
    );
}

/// A batch frame whose compressed payload is `payload`, announcing `raw_len`.
fn compressed_batch(payload: &[u8], raw_len: u32) -> Bytes {
    let body_len = 16 + 4 + payload.len();
    let mut f = b"dndm".to_vec();
    f.extend_from_slice(&[1, 2, 0x01, 0]);
    f.extend_from_slice(&(body_len as u32).to_be_bytes());
    f.extend_from_slice(&[0; 16]);
    f.extend_from_slice(&raw_len.to_be_bytes());
    f.extend_from_slice(payload);
    Bytes::from(f)
}

#[test]
fn a_zstd_bomb_is_rejected() {
    // 64 MiB of zeros compress to a few KiB.
    let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 1).unwrap();
    assert!(bomb.len() < 64 << 10, "bomb is small: {}", bomb.len());
    let limits = Limits::default();
    let mut dec = Decoder::new(limits);

    // Honest announcement: over the limit, refused before decompressing.
    let err = dec.decode(&compressed_batch(&bomb, 64 << 20)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "decompressed length 67108864 exceeds max_decompressed_len 4194304"
    );

    // Lying announcement: within the limit, decompression stops at the announced length.
    let err = dec.decode(&compressed_batch(&bomb, 1000)).unwrap_err();
    assert!(matches!(err, DecodeError::Decompress { .. }), "{err}");
    let err = dec
        .decode(&compressed_batch(&bomb, limits.max_decompressed_len()))
        .unwrap_err();
    assert!(matches!(err, DecodeError::Decompress { .. }), "{err}");

    // Announcing more than the data holds is also an error.
    let small = zstd::bulk::compress(&[0u8; 10], 1).unwrap();
    let err = dec.decode(&compressed_batch(&small, 20)).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::DecompressedLenMismatch {
                declared: 20,
                actual: 10
            }
        ),
        "{err}"
    );
}

#[test]
fn tampering_with_any_byte_of_a_signed_batch_fails_verification() {
    let key = Keypair::from_seed([9; 32]);
    let session = SessionId::from_bytes([4; 32]);
    for compress in [false, true] {
        let mut enc = Encoder::new(Limits::default());
        if compress {
            enc = enc.with_compression(Compression::new(3, 0));
        }
        let frame = enc
            .encode_batch(
                &support::telemetry_batch(100, 12),
                &BatchOptions::new().sign(&key, &session),
            )
            .unwrap();
        assert_eq!(frame[6] & 1, u8::from(compress));
        verify_batch(&frame, &session, &key.public()).unwrap();
        for i in 0..frame.len() {
            // Every byte gets a low-bit flip; header and prefix bytes get more patterns.
            let masks: &[u8] = if i < 40 { &[0x01, 0x80, 0xff] } else { &[0x01] };
            for &mask in masks {
                let mut t = frame.to_vec();
                t[i] ^= mask;
                assert!(
                    verify_batch(&t, &session, &key.public()).is_err(),
                    "flip {mask:#x} at byte {i} of {} (compressed {compress}) verified",
                    frame.len()
                );
            }
        }
        // Truncated or extended frames fail too.
        assert!(verify_batch(&frame[..frame.len() - 1], &session, &key.public()).is_err());
        let mut longer = frame.to_vec();
        longer.push(0);
        assert!(verify_batch(&longer, &session, &key.public()).is_err());
        // Another session or another key fails.
        assert!(matches!(
            verify_batch(&frame, &SessionId::from_bytes([5; 32]), &key.public()),
            Err(SignatureError::Invalid { .. })
        ));
        assert!(matches!(
            verify_batch(&frame, &session, &Keypair::from_seed([1; 32]).public()),
            Err(SignatureError::Invalid { .. })
        ));
    }
}

#[test]
fn stripping_the_signature_is_detected_as_unsigned() {
    let limits = Limits::default();
    let key = Keypair::from_seed([9; 32]);
    let session = SessionId::from_bytes([4; 32]);
    let batch = support::telemetry_batch(1, 2);
    let plain = Encoder::new(limits)
        .encode(&Frame::Batch(batch.clone()))
        .unwrap();
    assert!(matches!(
        verify_batch(&plain, &session, &key.public()),
        Err(SignatureError::Unsigned)
    ));
    let ping = Encoder::new(limits)
        .encode(&Frame::Ping(Default::default()))
        .unwrap();
    assert!(matches!(
        verify_batch(&ping, &session, &key.public()),
        Err(SignatureError::NotBatch { .. })
    ));
    // A signed batch still decodes to the same value (signature stripped).
    let signed = Encoder::new(limits)
        .encode_batch(&batch, &BatchOptions::new().sign(&key, &session))
        .unwrap();
    assert_eq!(
        Decoder::new(limits).decode(&signed).unwrap(),
        Frame::Batch(batch)
    );
}

#[test]
fn a_bad_route_from_a_peer_is_a_typed_error() {
    let limits = Limits::default();
    let hello = support::samples().remove(0);
    let good = Encoder::new(limits).encode(&hello).unwrap().to_vec();
    let needle = b"example.Imu@robot.arm.imu";
    let at = good
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut bad = good.clone();
    bad[at..at + needle.len()].copy_from_slice(b"example.Imu@robot..rm.imu");
    let err = Decoder::new(limits).decode(&Bytes::from(bad)).unwrap_err();
    assert!(matches!(err, DecodeError::Route { .. }), "{err}");
    assert_eq!(err.to_string(), "invalid route in intent.route");
}

#[test]
fn counts_over_the_limit_are_refused_before_decoding() {
    let small = Limits::builder()
        .max_batch_messages(2)
        .max_routes(2)
        .build()
        .unwrap();
    let batch = Encoder::new(Limits::default())
        .encode(&Frame::Batch(support::telemetry_batch(0, 3)))
        .unwrap();
    let err = Decoder::new(small).decode(&batch).unwrap_err();
    assert_eq!(
        err.to_string(),
        "batch message count 3 exceeds max_batch_messages 2"
    );
    let hello = Encoder::new(Limits::default())
        .encode(&support::samples()[0])
        .unwrap();
    let err = Decoder::new(small).decode(&hello).unwrap_err();
    assert_eq!(err.to_string(), "hello route count 3 exceeds max_routes 2");
}

#[test]
fn many_empty_messages_cannot_amplify_memory() {
    // 2 bytes per empty message: a 4 MiB frame could hold 2M of them; the count check refuses
    // it before prost builds the vector.
    let n = 100_000usize;
    let mut body = vec![0u8; 16];
    for _ in 0..n {
        body.extend_from_slice(&[0x0a, 0x00]);
    }
    let mut f = b"dndm".to_vec();
    f.extend_from_slice(&[1, 2, 0, 0]);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    let err = Decoder::new(Limits::default())
        .decode(&Bytes::from(f))
        .unwrap_err();
    assert!(
        matches!(&err, DecodeError::Limit(e) if e.kind == LimitKind::BatchMessages && e.value == n as u64),
        "{err}"
    );
}

#[test]
fn length_mismatch_and_trailing_bytes_are_errors() {
    let limits = Limits::default();
    let frame = Encoder::new(limits)
        .encode(&Frame::Batch(Batch {
            first_seq: 1,
            last_seq: 1,
            messages: vec![BatchMessage::default()],
        }))
        .unwrap();
    let mut longer = frame.to_vec();
    longer.push(0);
    assert!(matches!(
        Decoder::new(limits).decode(&Bytes::from(longer)),
        Err(DecodeError::LengthMismatch { .. })
    ));
    assert!(matches!(
        Decoder::new(limits).decode(&frame.slice(..frame.len() - 1)),
        Err(DecodeError::LengthMismatch { .. })
    ));
}
