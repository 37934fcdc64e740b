//! Proptest strategies and sample frames shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use dndm_codec::{
    Ack, Advert, Batch, BatchMessage, Capabilities, Close, CloseCode, Correlation, DeclPattern,
    DeclRoute, Frame, Hello, IntentDecl, InterestDecl, Limits, Ping, Pong, ResponseError,
    ResumeState,
};
use dndm_core::{Fingerprint, Qos, Route, RoutePattern};
use proptest::collection::vec;
use proptest::prelude::*;

pub fn type_name() -> impl Strategy<Value = String> {
    "[a-z]{1,6}(\\.[a-z]{1,6}){0,2}\\.[A-Z][A-Za-z0-9]{0,8}"
}

pub fn segment() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,8}"
}

pub fn route() -> impl Strategy<Value = Route> {
    (type_name(), vec(segment(), 1..5))
        .prop_map(|(t, segs)| Route::new(&t, &segs.join(".")).expect("strategy makes valid routes"))
}

pub fn pattern() -> impl Strategy<Value = RoutePattern> {
    (
        type_name(),
        vec(prop_oneof![3 => segment(), 1 => Just("*".to_owned())], 1..4),
        any::<bool>(),
    )
        .prop_map(|(t, mut segs, rest)| {
            if rest {
                segs.push("**".to_owned());
            }
            format!("{t}@{}", segs.join("."))
                .parse()
                .expect("strategy makes valid patterns")
        })
}

pub fn fingerprint() -> impl Strategy<Value = Fingerprint> {
    any::<[u8; 8]>().prop_map(Fingerprint::from_bytes)
}

pub fn qos() -> impl Strategy<Value = Qos> {
    prop_oneof![Just(Qos::best_effort()), Just(Qos::reliable())]
}

pub fn intent() -> impl Strategy<Value = IntentDecl> {
    (
        any::<u32>(),
        route(),
        0usize..4,
        any::<bool>(),
        fingerprint(),
        qos(),
        schema(),
    )
        .prop_map(
            |(id, r, prefix, hashed, fingerprint, qos, schema)| IntentDecl {
                id,
                route: if hashed {
                    DeclRoute::Hashed(r.hashed(prefix))
                } else {
                    DeclRoute::Plain(r)
                },
                fingerprint,
                qos,
                schema,
            },
        )
}

/// No schema, or a small one (nested message included).
pub fn schema() -> impl Strategy<Value = Option<std::sync::Arc<dndm_core::Schema>>> {
    use dndm_core::schema::{Field, Kind};
    (any::<bool>(), 1u32..2000, any::<bool>()).prop_map(|(some, number, repeated)| {
        some.then(|| {
            let inner = dndm_core::Schema::from_fields([Field {
                number: 1,
                kind: Kind::String,
                repeated: false,
            }]);
            std::sync::Arc::new(dndm_core::Schema::from_fields([
                Field {
                    number,
                    kind: Kind::Varint64,
                    repeated,
                },
                Field {
                    number: number + 1,
                    kind: Kind::Message(Some(Box::new(inner))),
                    repeated: false,
                },
            ]))
        })
    })
}

pub fn interest() -> impl Strategy<Value = InterestDecl> {
    (
        any::<u32>(),
        prop_oneof![
            pattern().prop_map(DeclPattern::Plain),
            (route(), 0usize..3).prop_map(|(r, n)| DeclPattern::Hashed(r.hashed(n)))
        ],
        fingerprint(),
        schema(),
        any::<u32>(),
    )
        .prop_map(|(id, pattern, fingerprint, schema, history)| InterestDecl {
            id,
            pattern,
            fingerprint,
            schema,
            history,
        })
}

pub fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("\\PC{{0,{max}}}"))
        .expect("valid regex")
        .prop_filter("within max bytes", move |s| s.len() <= max)
}

pub fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u32>(),
        vec(any::<u8>(), 0..64),
        vec(any::<u8>(), 0..80),
        text(40),
        vec(intent(), 0..6),
        vec(interest(), 0..6),
        (
            any::<bool>(),
            vec(any::<u32>(), 0..5),
            any::<[u32; 3]>(),
            any::<bool>(),
        ),
        proptest::option::of(any::<[u64; 5]>()),
    )
        .prop_map(
            |(v, pk, kb, name, intents, interests, (zstd, dicts, lims, signed), resume)| Hello {
                protocol_version: v,
                public_key: pk,
                key_binding: kb,
                node_name: name,
                intents,
                interests,
                capabilities: Capabilities {
                    zstd,
                    dictionary_ids: dicts,
                    max_frame_len: lims[0],
                    max_batch_messages: lims[1],
                    max_decompressed_len: lims[2],
                    signed_batches: signed,
                },
                resume: resume.map(|[a, b, c, d, e]| ResumeState {
                    session_epoch: a,
                    last_received_seq: b,
                    last_sent_seq: c,
                    peer_epoch: d,
                    first_unacked_seq: e,
                }),
            },
        )
}

pub fn correlation() -> impl Strategy<Value = Correlation> {
    prop_oneof![
        Just(Correlation::None),
        any::<u64>().prop_map(|id| Correlation::Request { id }),
        (any::<u64>(), proptest::option::of((any::<u32>(), text(20)))).prop_map(|(to, e)| {
            Correlation::Response {
                to,
                error: e.map(|(code, message)| ResponseError { code, message }),
            }
        }),
    ]
}

/// Payloads: empty, tiny, or compressible telemetry-like bytes.
pub fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::new()),
        vec(any::<u8>(), 1..16).prop_map(Bytes::from),
        (any::<u8>(), 16usize..600).prop_map(|(b, n)| Bytes::from(vec![b; n])),
    ]
}

pub fn batch() -> impl Strategy<Value = Batch> {
    (
        any::<u64>(),
        0u64..1000,
        vec(
            (any::<u32>(), any::<Option<u64>>(), correlation(), payload()),
            0..20,
        ),
    )
        .prop_map(|(first, span, msgs)| {
            let last = first.saturating_add(span);
            Batch {
                first_seq: first,
                last_seq: last,
                messages: msgs
                    .into_iter()
                    .map(|(route_id, seq, correlation, payload)| BatchMessage {
                        route_id,
                        seq: seq.map(|s| first + s % (last - first + 1)),
                        correlation,
                        payload,
                    })
                    .collect(),
            }
        })
}

pub fn advert() -> impl Strategy<Value = Advert> {
    (
        vec(intent(), 0..5),
        vec(any::<u32>(), 0..5),
        vec(interest(), 0..5),
        vec(any::<u32>(), 0..5),
        (vec(any::<u32>(), 0..3), vec(any::<u32>(), 0..3)),
        vec(any::<(u32, u64, u64, u64, u64)>(), 0..3),
    )
        .prop_map(|(ia, ir, sa, sr, (paused, resumed), feedback)| Advert {
            intents_added: ia,
            intents_removed: ir,
            interests_added: sa,
            interests_removed: sr,
            paused,
            resumed,
            feedback: feedback
                .into_iter()
                .map(|(id, dropped_oldest, dropped_newest, lag, capacity)| {
                    dndm_codec::RouteFeedback {
                        id,
                        dropped_oldest,
                        dropped_newest,
                        lag,
                        capacity,
                    }
                })
                .collect(),
        })
}

pub fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        hello().prop_map(Frame::Hello),
        batch().prop_map(Frame::Batch),
        any::<u64>().prop_map(|cumulative_seq| Frame::Ack(Ack { cumulative_seq })),
        advert().prop_map(Frame::Advert),
        any::<u64>().prop_map(|nonce| Frame::Ping(Ping { nonce })),
        any::<u64>().prop_map(|nonce| Frame::Pong(Pong { nonce })),
        (any::<u32>(), text(40)).prop_map(|(c, reason)| Frame::Close(Close {
            code: CloseCode(c),
            reason
        })),
    ]
}

/// A fixed set of valid frames of every kind (the fuzz corpus seeds).
pub fn samples() -> Vec<Frame> {
    let r: Route = "example.Imu@robot.arm.imu".parse().expect("valid");
    let fp = Fingerprint::of_name("example.Imu");
    let intent = IntentDecl {
        id: 1,
        route: DeclRoute::Plain(r.clone()),
        fingerprint: fp,
        schema: None,
        qos: Qos::reliable(),
    };
    let interest = InterestDecl {
        id: 2,
        pattern: DeclPattern::Plain("example.Imu@robot.*.imu".parse().expect("valid")),
        fingerprint: fp,
        schema: None,
        history: 0,
    };
    let hashed = IntentDecl {
        id: 3,
        route: DeclRoute::Hashed(r.hashed(1)),
        fingerprint: fp,
        schema: None,
        qos: Qos::best_effort(),
    };
    vec![
        Frame::Hello(Hello {
            protocol_version: 1,
            public_key: vec![7; 32],
            key_binding: vec![9; 64],
            node_name: "arm-controller".into(),
            intents: vec![intent.clone(), hashed],
            interests: vec![interest.clone()],
            capabilities: Capabilities {
                dictionary_ids: vec![1, 2],
                ..Capabilities::new(&Limits::default())
            },
            resume: Some(ResumeState {
                session_epoch: 3,
                last_received_seq: 100,
                last_sent_seq: 90,
                peer_epoch: 7,
                first_unacked_seq: 80,
            }),
        }),
        Frame::Batch(telemetry_batch(0, 4)),
        Frame::Batch(Batch {
            first_seq: 5,
            last_seq: 6,
            messages: vec![
                BatchMessage {
                    route_id: 4,
                    seq: Some(5),
                    correlation: Correlation::Request { id: 77 },
                    payload: Bytes::from_static(b"req"),
                },
                BatchMessage {
                    route_id: 4,
                    seq: None,
                    correlation: Correlation::Response {
                        to: 76,
                        error: Some(ResponseError {
                            code: 3,
                            message: "not found".into(),
                        }),
                    },
                    payload: Bytes::new(),
                },
            ],
        }),
        Frame::Ack(Ack { cumulative_seq: 42 }),
        Frame::Advert(Advert {
            intents_added: vec![intent],
            intents_removed: vec![9, 10],
            interests_added: vec![interest],
            interests_removed: vec![11],
            paused: vec![12],
            resumed: vec![13],
            feedback: vec![dndm_codec::RouteFeedback {
                id: 14,
                dropped_oldest: 3,
                dropped_newest: 0,
                lag: 7,
                capacity: 8,
            }],
        }),
        Frame::Ping(Ping { nonce: 12345 }),
        Frame::Pong(Pong { nonce: 12345 }),
        Frame::Close(Close {
            code: CloseCode::SHUTDOWN,
            reason: "bye".into(),
        }),
    ]
}

/// A realistic IMU telemetry sample, protobuf-encoded by hand (timestamp, frame id, 9 floats).
pub fn telemetry_payload(i: u64) -> Bytes {
    let mut v = Vec::with_capacity(64);
    v.push(0x08);
    let mut t = 1_700_000_000_000_000u64 + i * 10_000;
    while t >= 0x80 {
        v.push((t as u8) | 0x80);
        t >>= 7;
    }
    v.push(t as u8);
    v.extend_from_slice(b"\x12\x0arobot.arm0");
    for (k, base) in [0.01f32, -0.02, 9.81, 0.001, 0.002, -0.003, 0.3, 0.1, 0.9]
        .into_iter()
        .enumerate()
    {
        v.push(((k as u8 + 3) << 3) | 5);
        // Sensor noise: a hash of (sample, axis), no short period.
        let mut z =
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (k as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let jitter = ((z % 2001) as f32 - 1000.0) / 100_000.0;
        v.extend_from_slice(&(base + jitter).to_le_bytes());
    }
    Bytes::from(v)
}

/// A batch of `n` telemetry messages starting at sequence `first`.
pub fn telemetry_batch(first: u64, n: u64) -> Batch {
    Batch {
        first_seq: first,
        last_seq: first + n.max(1) - 1,
        messages: (0..n)
            .map(|i| BatchMessage {
                route_id: 1 + (i % 3) as u32,
                seq: Some(first + i),
                correlation: Correlation::None,
                payload: telemetry_payload(first + i),
            })
            .collect(),
    }
}

/// A realistic status telemetry message (strings, enums, counters), protobuf-encoded by hand.
pub fn status_payload(i: u64) -> Bytes {
    const STATES: [&str; 4] = ["idle", "moving", "charging", "fault"];
    let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut v = Vec::with_capacity(96);
    let mut field = |tag: u8, s: &str| {
        v.push((tag << 3) | 2);
        v.push(s.len() as u8);
        v.extend_from_slice(s.as_bytes());
    };
    field(1, &format!("robot-arm-{:02}", z % 16));
    field(2, STATES[(z >> 8) as usize % 4]);
    field(3, "fw v2.3.1-rc4");
    field(
        4,
        if z.is_multiple_of(7) {
            "joint 3 over temperature"
        } else {
            "ok"
        },
    );
    v.push(5 << 3);
    v.push((z >> 16) as u8 % 101); // battery percent
    v.push(6 << 3);
    let mut up = 100_000 + i;
    while up >= 0x80 {
        v.push((up as u8) | 0x80);
        up >>= 7;
    }
    v.push(up as u8);
    Bytes::from(v)
}
