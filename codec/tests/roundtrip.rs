//! Round trips of every frame type: random values, empty values and maximal values.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod support;

use bytes::Bytes;
use dndm_codec::{
    Ack, Advert, Batch, BatchMessage, BatchOptions, Capabilities, Close, CloseCode, Compression,
    Correlation, DeclPattern, DeclRoute, Decoder, Dictionary, EncodeError, Encoder, Frame, Hello,
    IntentDecl, InterestDecl, LimitKind, Limits, Ping, Pong, ResponseError, ResumeState, SessionId,
    split_frame, verify_batch,
};
use dndm_core::{Fingerprint, Keypair, Qos, Route};
use proptest::prelude::*;

fn roundtrip(frame: &Frame, encoder: &mut Encoder, decoder: &mut Decoder) {
    let bytes = encoder.encode(frame).expect("encodes");
    let decoded = decoder.decode(&bytes).expect("decodes");
    assert_eq!(&decoded, frame);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_frame_round_trips(frame in support::frame()) {
        let limits = Limits::default();
        roundtrip(&frame, &mut Encoder::new(limits), &mut Decoder::new(limits));
    }

    #[test]
    fn every_frame_round_trips_with_compression(frame in support::frame()) {
        let limits = Limits::default();
        let mut enc = Encoder::new(limits).with_compression(Compression::new(3, 0));
        roundtrip(&frame, &mut enc, &mut Decoder::new(limits));
    }

    #[test]
    fn signed_and_dictionary_batches_round_trip(batch in support::batch(), seed in any::<[u8; 32]>()) {
        let limits = Limits::default();
        let dict = Dictionary::new(5, support::telemetry_payload(1).to_vec()).unwrap();
        let mut enc = Encoder::new(limits)
            .with_compression(Compression::new(1, 0))
            .with_dictionary(dict.clone());
        let mut dec = Decoder::new(limits).with_dictionary(dict);
        let key = Keypair::from_seed(seed);
        let session = SessionId::from_bytes(seed);
        let bytes = enc
            .encode_batch(&batch, &BatchOptions::new().dictionary(5).sign(&key, &session))
            .unwrap();
        verify_batch(&bytes, &session, &key.public()).unwrap();
        prop_assert_eq!(dec.decode(&bytes).unwrap(), Frame::Batch(batch));
    }

    #[test]
    fn stream_splitting_recovers_every_frame(
        frames in proptest::collection::vec(support::frame(), 1..6),
        cut in 1usize..64,
    ) {
        let limits = Limits::default();
        let mut enc = Encoder::new(limits);
        let wire: Vec<Bytes> = frames.iter().map(|f| enc.encode(f).unwrap()).collect();
        let all: Vec<u8> = wire.iter().flat_map(|b| b.to_vec()).collect();
        let mut buf = bytes::BytesMut::new();
        let mut out = Vec::new();
        for chunk in all.chunks(cut) {
            buf.extend_from_slice(chunk);
            while let Some(f) = split_frame(&mut buf, &limits).unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, wire);
        prop_assert!(buf.is_empty());
    }
}

#[test]
fn empty_values_round_trip() {
    let limits = Limits::default();
    let (mut enc, mut dec) = (Encoder::new(limits), Decoder::new(limits));
    for frame in [
        Frame::Hello(Hello::default()),
        Frame::Batch(Batch::default()),
        Frame::Batch(Batch {
            messages: vec![BatchMessage::default()],
            ..Batch::default()
        }),
        Frame::Batch(Batch {
            messages: vec![BatchMessage {
                correlation: Correlation::Response {
                    to: 0,
                    error: Some(ResponseError::default()),
                },
                ..BatchMessage::default()
            }],
            ..Batch::default()
        }),
        Frame::Ack(Default::default()),
        Frame::Advert(Default::default()),
        Frame::Ping(Default::default()),
        Frame::Pong(Default::default()),
        Frame::Close(Default::default()),
    ] {
        roundtrip(&frame, &mut enc, &mut dec);
    }
    // The smallest frame: a ping with nonce 0 is the bare header.
    assert_eq!(
        enc.encode(&Frame::Ping(Default::default())).unwrap().len(),
        dndm_codec::HEADER_LEN
    );
}

/// A route of exactly `len` bytes.
fn long_route(len: usize, tag: usize) -> Route {
    let prefix = format!("a.T@p{tag}.");
    let seg = "x".repeat(len - prefix.len());
    format!("{prefix}{seg}").parse().unwrap()
}

#[test]
fn maximal_values_round_trip_and_one_more_is_refused() {
    let limits = Limits::default();
    let (mut enc, mut dec) = (Encoder::new(limits), Decoder::new(limits));
    let max_text = "é".repeat(limits.max_text_len() as usize / 2);
    let fp = Fingerprint::from_bytes([0xff; 8]);
    let n = 500usize; // 500 routes of 1024 bytes each fill ~1 MiB
    let hello = Hello {
        protocol_version: u32::MAX,
        public_key: vec![0xff; limits.max_opaque_len() as usize],
        key_binding: vec![0xee; limits.max_opaque_len() as usize],
        node_name: max_text.clone(),
        intents: (0..n)
            .map(|i| IntentDecl {
                id: u32::MAX - i as u32,
                route: DeclRoute::Plain(long_route(limits.max_route_len() as usize, i)),
                fingerprint: fp,
                schema: None,
                qos: Qos::reliable(),
            })
            .collect(),
        interests: (0..n)
            .map(|i| InterestDecl {
                id: u32::MAX - i as u32,
                pattern: DeclPattern::Plain(long_route(1024, i).into()),
                fingerprint: fp,
                schema: None,
                history: 0,
            })
            .collect(),
        capabilities: Capabilities {
            zstd: true,
            dictionary_ids: (0..limits.max_dictionaries())
                .map(|i| u32::MAX - i)
                .collect(),
            max_frame_len: u32::MAX,
            max_batch_messages: u32::MAX,
            max_decompressed_len: u32::MAX,
            signed_batches: true,
        },
        resume: Some(ResumeState {
            session_epoch: u64::MAX,
            last_received_seq: u64::MAX,
            last_sent_seq: u64::MAX,
            peer_epoch: u64::MAX,
            first_unacked_seq: u64::MAX,
        }),
    };
    roundtrip(&Frame::Hello(hello.clone()), &mut enc, &mut dec);

    let mut too_long = hello.clone();
    too_long.node_name.push('x');
    let err = enc.encode(&Frame::Hello(too_long)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "hello.node_name length 1025 exceeds max_text_len 1024"
    );
    let mut too_many = hello;
    too_many.capabilities.dictionary_ids.push(0);
    assert!(matches!(
        enc.encode(&Frame::Hello(too_many)),
        Err(EncodeError::Limit(e)) if e.kind == LimitKind::Dictionaries
    ));

    let max = limits.max_batch_messages() as usize;
    let batch = Batch {
        first_seq: u64::MAX - 1,
        last_seq: u64::MAX,
        messages: (0..max)
            .map(|i| BatchMessage {
                route_id: u32::MAX,
                seq: Some(u64::MAX - (i as u64 % 2)),
                correlation: Correlation::Response {
                    to: u64::MAX,
                    error: Some(ResponseError {
                        code: u32::MAX,
                        message: "e".repeat(32),
                    }),
                },
                payload: Bytes::from(vec![0xab; 100]),
            })
            .collect(),
    };
    roundtrip(&Frame::Batch(batch.clone()), &mut enc, &mut dec);
    let mut over = batch;
    over.messages.push(BatchMessage::default());
    assert_eq!(
        enc.encode(&Frame::Batch(over)).unwrap_err().to_string(),
        "batch message count 4097 exceeds max_batch_messages 4096"
    );

    let close = Close {
        code: CloseCode(u32::MAX),
        reason: max_text,
    };
    roundtrip(&Frame::Close(close), &mut enc, &mut dec);
}

#[test]
fn maximal_advert_and_scalar_frames_round_trip_and_one_more_route_is_refused() {
    // max_routes entries in all, a quarter per list; routes of max_route_len bytes.
    let limits = Limits::builder().max_routes(1024).build().unwrap();
    let (mut enc, mut dec) = (Encoder::new(limits), Decoder::new(limits));
    let quarter = limits.max_routes() as usize / 4;
    let fp = Fingerprint::from_bytes([0xff; 8]);
    let advert = Advert {
        intents_added: (0..quarter)
            .map(|i| IntentDecl {
                id: u32::MAX - i as u32,
                route: DeclRoute::Plain(long_route(limits.max_route_len() as usize, i)),
                fingerprint: fp,
                schema: None,
                qos: Qos::reliable(),
            })
            .collect(),
        intents_removed: (0..quarter as u32).map(|i| u32::MAX - i).collect(),
        interests_added: (0..quarter)
            .map(|i| InterestDecl {
                id: u32::MAX - i as u32,
                pattern: DeclPattern::Plain(long_route(limits.max_route_len() as usize, i).into()),
                fingerprint: fp,
                schema: None,
                history: 0,
            })
            .collect(),
        interests_removed: (0..quarter as u32).map(|i| u32::MAX - i).collect(),
        ..Advert::default()
    };
    roundtrip(&Frame::Advert(advert.clone()), &mut enc, &mut dec);
    let mut over = advert;
    over.interests_removed.push(0);
    assert!(matches!(
        enc.encode(&Frame::Advert(over)),
        Err(EncodeError::Limit(e)) if e.kind == LimitKind::Routes
    ));

    for frame in [
        Frame::Ack(Ack {
            cumulative_seq: u64::MAX,
        }),
        Frame::Ping(Ping { nonce: u64::MAX }),
        Frame::Pong(Pong { nonce: u64::MAX }),
    ] {
        roundtrip(&frame, &mut enc, &mut dec);
    }
}

#[test]
fn frame_of_exactly_max_frame_len_round_trips_and_one_byte_more_fails() {
    let limits = Limits::builder().max_frame_len(1000).build().unwrap();
    let (mut enc, mut dec) = (Encoder::new(limits), Decoder::new(limits));
    // header 12 + seq range 16 + message key 1 + len 2 + payload key 1 + len 2 + payload
    let batch = |n: usize| Batch {
        messages: vec![BatchMessage {
            payload: Bytes::from(vec![1; n]),
            ..BatchMessage::default()
        }],
        ..Batch::default()
    };
    let exact = enc.encode(&Frame::Batch(batch(1000 - 34))).unwrap();
    assert_eq!(exact.len(), 1000);
    assert_eq!(dec.decode(&exact).unwrap(), Frame::Batch(batch(966)));
    let err = enc.encode(&Frame::Batch(batch(967))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "frame length 1001 exceeds max_frame_len 1000"
    );
}

#[test]
fn compression_is_used_only_when_smaller_and_above_threshold() {
    let limits = Limits::default();
    let mut enc = Encoder::new(limits).with_compression(Compression::default());
    let mut dec = Decoder::new(limits);
    let big = support::telemetry_batch(0, 64);
    let plain = Encoder::new(limits)
        .encode(&Frame::Batch(big.clone()))
        .unwrap();
    let packed = enc.encode(&Frame::Batch(big.clone())).unwrap();
    assert!(
        packed.len() < plain.len(),
        "{} < {}",
        packed.len(),
        plain.len()
    );
    assert_eq!(packed[6] & 1, 1, "zstd flag set");
    assert_eq!(dec.decode(&packed).unwrap(), Frame::Batch(big));
    // Below the threshold: not compressed.
    let small = support::telemetry_batch(0, 1);
    assert_eq!(enc.encode(&Frame::Batch(small)).unwrap()[6], 0);
    // Random bytes do not compress: sent plain even above the threshold.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..4000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let noisy = Batch {
        messages: vec![BatchMessage {
            payload: Bytes::from(noise),
            ..BatchMessage::default()
        }],
        ..Batch::default()
    };
    let out = enc.encode(&Frame::Batch(noisy.clone())).unwrap();
    assert_eq!(out[6], 0, "incompressible batch sent plain");
    assert_eq!(dec.decode(&out).unwrap(), Frame::Batch(noisy));
}

/// A batch of `count` messages of 8 bytes each from `byte(i)`, with sequence numbers and
/// alternating route ids: mostly framing.
fn small_messages(count: u64, byte: impl Fn(u64) -> u8) -> Batch {
    Batch {
        first_seq: 1,
        last_seq: count,
        messages: (1..=count)
            .map(|seq| BatchMessage {
                route_id: 1 + (seq % 2) as u32,
                seq: Some(seq),
                payload: (0..8)
                    .map(|k| byte(seq * 8 + k))
                    .collect::<Vec<u8>>()
                    .into(),
                ..BatchMessage::default()
            })
            .collect(),
    }
}

#[test]
fn framing_alone_never_turns_compression_on() {
    let limits = Limits::default();
    let mut dec = Decoder::new(limits);
    // Random 8-byte payloads: the framing around them compresses, the payloads do not.
    let noisy = small_messages(500, |i| {
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (x >> 56) as u8 ^ (x >> 23) as u8
    });
    let mut enc = Encoder::new(limits).with_compression(Compression::new(3, 0));
    let out = enc.encode(&Frame::Batch(noisy.clone())).unwrap();
    assert_eq!(out[6] & 1, 0, "random small payloads are sent plain");
    assert_eq!(dec.decode(&out).unwrap(), Frame::Batch(noisy));
    // Text payloads of the same size compress: the batch is sent compressed.
    let text = b"{\"temperature\": 21.5, \"unit\": \"C\"}";
    let texty = small_messages(500, |i| text[(i % text.len() as u64) as usize]);
    let mut enc = Encoder::new(limits).with_compression(Compression::new(3, 0));
    let out = enc.encode(&Frame::Batch(texty.clone())).unwrap();
    assert_eq!(out[6] & 1, 1, "compressible small payloads are compressed");
    assert_eq!(dec.decode(&out).unwrap(), Frame::Batch(texty));
}

#[test]
fn dictionary_improves_small_telemetry_batches() {
    let samples: Vec<Bytes> = (0..2000).map(support::telemetry_payload).collect();
    let dict = Dictionary::train(7, &samples, 4096).unwrap();
    let limits = Limits::default();
    let mut plain = Encoder::new(limits).with_compression(Compression::new(3, 0));
    let mut with_dict = Encoder::new(limits)
        .with_compression(Compression::new(3, 0))
        .with_dictionary(dict.clone());
    let batch = support::telemetry_batch(5000, 4);
    let a = plain.encode(&Frame::Batch(batch.clone())).unwrap();
    let b = with_dict
        .encode_batch(&batch, &BatchOptions::new().dictionary(7))
        .unwrap();
    assert!(
        b.len() < a.len(),
        "dictionary {} < plain {}",
        b.len(),
        a.len()
    );
    let mut dec = Decoder::new(limits).with_dictionary(dict);
    assert_eq!(dec.decode(&b).unwrap(), Frame::Batch(batch.clone()));
    // Without the dictionary the receiver gets a typed error.
    assert!(matches!(
        Decoder::new(limits).decode(&b),
        Err(dndm_codec::DecodeError::UnknownDictionary { id: 7 })
    ));
    assert!(matches!(
        plain.encode_batch(&batch, &BatchOptions::new().dictionary(8)),
        Err(EncodeError::UnknownDictionary { id: 8 })
    ));
}

#[test]
fn invalid_batches_are_refused_by_the_encoder() {
    let mut enc = Encoder::new(Limits::default());
    let err = enc
        .encode(&Frame::Batch(Batch {
            first_seq: 5,
            last_seq: 4,
            messages: vec![],
        }))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "batch.first_seq is invalid: first_seq 5 is greater than last_seq 4"
    );
    let err = enc
        .encode(&Frame::Batch(Batch {
            first_seq: 5,
            last_seq: 6,
            messages: vec![BatchMessage {
                seq: Some(7),
                ..Default::default()
            }],
        }))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "batch.messages.seq is invalid: seq 7 is outside the batch range 5..=6"
    );
}

#[test]
fn one_encoded_payload_is_shared_by_every_link() {
    let payload = support::telemetry_payload(1);
    let batch = |route_id| Batch {
        messages: vec![BatchMessage {
            route_id,
            payload: payload.clone(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let limits = Limits::default();
    let a = Encoder::new(limits)
        .encode(&Frame::Batch(batch(1)))
        .unwrap();
    let b = Encoder::new(limits)
        .encode(&Frame::Batch(batch(2)))
        .unwrap();
    // Decoded payloads slice the received frame: no copy.
    let Frame::Batch(d) = Decoder::new(limits).decode(&a).unwrap() else {
        panic!("batch expected")
    };
    let p = &d.messages[0].payload;
    let range = a.as_ptr() as usize..a.as_ptr() as usize + a.len();
    assert!(
        range.contains(&(p.as_ptr() as usize)),
        "payload points into the frame"
    );
    assert_eq!(p, &payload);
    assert_ne!(a, b);
}

#[test]
fn ping_bytes_match_the_worked_example_in_protocol_md() {
    let frame = Encoder::new(Limits::default())
        .encode(&Frame::Ping(dndm_codec::Ping { nonce: 7 }))
        .unwrap();
    assert_eq!(
        &frame[..],
        &[0x64, 0x6e, 0x64, 0x6d, 1, 5, 0, 0, 0, 0, 0, 2, 0x08, 0x07]
    );
}

#[test]
fn after_incompressible_batches_compression_backs_off_then_resumes() {
    let limits = Limits::default();
    let mut enc = Encoder::new(limits).with_compression(Compression::new(3, 0));
    let mut dec = Decoder::new(limits);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = || {
        let bytes: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Batch {
            messages: vec![BatchMessage {
                payload: Bytes::from(bytes),
                ..BatchMessage::default()
            }],
            ..Batch::default()
        }
    };
    for _ in 0..20 {
        let batch = noise();
        let out = enc.encode(&Frame::Batch(batch.clone())).unwrap();
        assert_eq!(out[6], 0, "random data sent plain");
        assert_eq!(dec.decode(&out).unwrap(), Frame::Batch(batch));
    }
    // Compressible data again: some batches go plain while the encoder backs off, but it
    // tries again within 64 batches and keeps compressing from then on.
    let mut plain_before = 0;
    let mut compressed = 0;
    for seq in 0..200u64 {
        let batch = support::telemetry_batch(seq * 8, 8);
        let out = enc.encode(&Frame::Batch(batch.clone())).unwrap();
        assert_eq!(dec.decode(&out).unwrap(), Frame::Batch(batch));
        if out[6] == 0 {
            assert_eq!(compressed, 0, "once compression resumed it stays on");
            plain_before += 1;
        } else {
            compressed += 1;
        }
    }
    assert!(
        plain_before < 64,
        "resumed after {plain_before} plain batches"
    );
    assert!(compressed > 0);
}

#[test]
fn a_frame_decodes_each_distinct_schema_once_and_at_most_256_kib_of_them() {
    use dndm_core::Schema;
    use dndm_core::schema::{Field, Kind};
    use std::sync::Arc;
    let limits = Limits::default();
    let (mut enc, mut dec) = (Encoder::new(limits), Decoder::new(limits));
    // ~14 KB each: 3,500 fields of 4 bytes, different per `tag`.
    let schema = |tag: u32| {
        Arc::new(Schema::from_fields((0..3500).map(|i| Field {
            number: 1 + tag * 10_000 + i,
            kind: Kind::Varint64,
            repeated: false,
        })))
    };
    let advert = |schemas: Vec<Arc<Schema>>| {
        Frame::Advert(Advert {
            intents_added: schemas
                .into_iter()
                .enumerate()
                .map(|(i, schema)| IntentDecl {
                    id: i as u32,
                    route: DeclRoute::Plain(format!("test.Big@r{i}").parse().unwrap()),
                    fingerprint: Fingerprint::from_bytes([1; 8]),
                    schema: Some(schema),
                    qos: Qos::reliable(),
                })
                .collect(),
            ..Advert::default()
        })
    };
    // Forty declarations of one schema: one copy after decoding.
    let shared = enc.encode(&advert(vec![schema(1); 40])).unwrap();
    let Frame::Advert(decoded) = dec.decode(&shared).unwrap() else {
        panic!("an advert")
    };
    let first = decoded.intents_added[0].schema.clone().unwrap();
    assert!(
        decoded
            .intents_added
            .iter()
            .all(|d| Arc::ptr_eq(d.schema.as_ref().unwrap(), &first))
    );
    // Twenty distinct ones (~280 KB): refused, naming the field.
    let distinct = enc.encode(&advert((0..20).map(schema).collect())).unwrap();
    let error = dec.decode(&distinct).unwrap_err().to_string();
    assert!(
        error.contains("intent.schema") && error.contains("distinct schemas"),
        "{error}"
    );
}
