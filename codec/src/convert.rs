//! Conversions between the generated protobuf structs and the validated frame types, and the
//! hand-written batch body encoder (the hot path: no intermediate protobuf structs).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut as _, Bytes};
use dndm_core::{Fingerprint, Qos, Reliability, Schema};
use prost::Message as _;

use crate::error::DecodeError;
use crate::frame::{
    Ack, Advert, BatchMessage, Capabilities, Close, CloseCode, Correlation, DeclPattern, DeclRoute,
    Frame, Hello, IntentDecl, InterestDecl, Ping, Pong, ResponseError, ResumeState, RouteFeedback,
};
use crate::header::FrameKind;
use crate::limits::{LimitKind, Limits};
use crate::proto;
use crate::wire::{self, Field};

// ---------------------------------------------------------------------------------------------
// Rust -> protobuf (control frames)

/// The protobuf body of a non-batch frame, ready to encode.
pub(crate) enum Body {
    Hello(proto::Hello),
    Ack(proto::Ack),
    Advert(proto::Advert),
    Ping(proto::Ping),
    Pong(proto::Pong),
    Close(proto::Close),
}

impl Body {
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Self::Hello(m) => m.encoded_len(),
            Self::Ack(m) => m.encoded_len(),
            Self::Advert(m) => m.encoded_len(),
            Self::Ping(m) => m.encoded_len(),
            Self::Pong(m) => m.encoded_len(),
            Self::Close(m) => m.encoded_len(),
        }
    }

    pub(crate) fn encode_raw(&self, buf: &mut Vec<u8>) {
        match self {
            Self::Hello(m) => m.encode_raw(buf),
            Self::Ack(m) => m.encode_raw(buf),
            Self::Advert(m) => m.encode_raw(buf),
            Self::Ping(m) => m.encode_raw(buf),
            Self::Pong(m) => m.encode_raw(buf),
            Self::Close(m) => m.encode_raw(buf),
        }
    }
}

/// The protobuf body of a control frame; the batch itself for a batch frame.
pub(crate) fn to_body(frame: &Frame) -> Result<Body, &crate::frame::Batch> {
    Ok(match frame {
        Frame::Batch(batch) => return Err(batch),
        Frame::Hello(h) => Body::Hello(proto::Hello {
            protocol_version: h.protocol_version,
            public_key: h.public_key.clone(),
            key_binding: h.key_binding.clone(),
            node_name: h.node_name.clone(),
            intents: h.intents.iter().map(intent_to).collect(),
            interests: h.interests.iter().map(interest_to).collect(),
            capabilities: Some(proto::Capabilities {
                zstd: h.capabilities.zstd,
                dictionary_ids: h.capabilities.dictionary_ids.clone(),
                max_frame_len: h.capabilities.max_frame_len,
                max_batch_messages: h.capabilities.max_batch_messages,
                max_decompressed_len: h.capabilities.max_decompressed_len,
                signed_batches: h.capabilities.signed_batches,
            }),
            resume: h.resume.map(|r| proto::ResumeState {
                session_epoch: r.session_epoch,
                last_received_seq: r.last_received_seq,
                last_sent_seq: r.last_sent_seq,
                peer_epoch: r.peer_epoch,
                first_unacked_seq: r.first_unacked_seq,
            }),
        }),
        Frame::Ack(a) => Body::Ack(proto::Ack {
            cumulative_seq: a.cumulative_seq,
        }),
        Frame::Advert(a) => Body::Advert(proto::Advert {
            intents_added: a.intents_added.iter().map(intent_to).collect(),
            intents_removed: a.intents_removed.clone(),
            interests_added: a.interests_added.iter().map(interest_to).collect(),
            interests_removed: a.interests_removed.clone(),
            paused: a.paused.clone(),
            resumed: a.resumed.clone(),
            feedback: a
                .feedback
                .iter()
                .map(|f| proto::RouteFeedback {
                    id: f.id,
                    dropped_oldest: f.dropped_oldest,
                    dropped_newest: f.dropped_newest,
                    lag: f.lag,
                    capacity: f.capacity,
                })
                .collect(),
        }),
        Frame::Ping(p) => Body::Ping(proto::Ping { nonce: p.nonce }),
        Frame::Pong(p) => Body::Pong(proto::Pong { nonce: p.nonce }),
        Frame::Close(c) => Body::Close(proto::Close {
            code: c.code.0,
            reason: c.reason.clone(),
        }),
    })
}

fn intent_to(i: &IntentDecl) -> proto::IntentDecl {
    use proto::intent_decl::Route;
    proto::IntentDecl {
        id: i.id,
        route: Some(match &i.route {
            DeclRoute::Plain(r) => Route::Plain(r.as_str().to_owned()),
            DeclRoute::Hashed(h) => Route::Hashed(h.to_string()),
        }),
        fingerprint: i.fingerprint.to_bytes().to_vec(),
        schema: i.schema.as_ref().map(|s| s.encode()).unwrap_or_default(),
        qos: Some(proto::Qos {
            reliability: match i.qos.reliability {
                Reliability::BestEffort => proto::Reliability::BestEffort,
                Reliability::Reliable => proto::Reliability::Reliable,
            } as i32,
        }),
    }
}

fn interest_to(i: &InterestDecl) -> proto::InterestDecl {
    use proto::interest_decl::Pattern;
    proto::InterestDecl {
        id: i.id,
        pattern: Some(match &i.pattern {
            DeclPattern::Plain(p) => Pattern::Plain(p.as_str().to_owned()),
            DeclPattern::Hashed(h) => Pattern::Hashed(h.to_string()),
        }),
        fingerprint: i.fingerprint.to_bytes().to_vec(),
        schema: i.schema.as_ref().map(|s| s.encode()).unwrap_or_default(),
        history: i.history,
    }
}

// ---------------------------------------------------------------------------------------------
// protobuf -> Rust (control frames)

/// Decodes the body of a non-batch frame, counting repeated fields before prost allocates.
pub(crate) fn decode_body(
    kind: FrameKind,
    body: Bytes,
    limits: &Limits,
) -> Result<Frame, DecodeError> {
    let pb = |source| DecodeError::Protobuf { kind, source };
    Ok(match kind {
        FrameKind::Hello => {
            precount_hello(&body, limits)?;
            hello_from(proto::Hello::decode(body).map_err(pb)?, limits)?
        }
        FrameKind::Advert => {
            precount_advert(&body, limits)?;
            advert_from(proto::Advert::decode(body).map_err(pb)?, limits)?
        }
        FrameKind::Ack => Frame::Ack(Ack {
            cumulative_seq: proto::Ack::decode(body).map_err(pb)?.cumulative_seq,
        }),
        FrameKind::Ping => Frame::Ping(Ping {
            nonce: proto::Ping::decode(body).map_err(pb)?.nonce,
        }),
        FrameKind::Pong => Frame::Pong(Pong {
            nonce: proto::Pong::decode(body).map_err(pb)?.nonce,
        }),
        FrameKind::Close => {
            let c = proto::Close::decode(body).map_err(pb)?;
            Frame::Close(Close {
                code: CloseCode(c.code),
                reason: c.reason,
            })
        }
        FrameKind::Batch => {
            return Err(DecodeError::Malformed {
                kind,
                reason: "batch body decoded as a control frame",
            });
        }
    })
}

fn precount_hello(body: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    let kind = FrameKind::Hello;
    let (mut routes, mut dicts) = (0usize, 0usize);
    let mut nested: Result<(), &'static str> = Ok(());
    wire::for_each_field(body, |tag, value| match (tag, value) {
        (5 | 6, _) => routes += 1,
        (7, Field::Bytes(caps)) => {
            let r = wire::for_each_field(caps, |tag, value| {
                if tag == 2 {
                    dicts += wire::scalar_entries(value);
                }
            });
            if r.is_err() {
                nested = r;
            }
        }
        _ => {}
    })
    .and(nested)
    .map_err(|reason| DecodeError::Malformed { kind, reason })?;
    Limits::check(
        LimitKind::Routes,
        "hello route count",
        routes,
        limits.max_routes(),
    )?;
    Limits::check(
        LimitKind::Dictionaries,
        "hello.capabilities.dictionary_ids count",
        dicts,
        limits.max_dictionaries(),
    )?;
    Ok(())
}

fn precount_advert(body: &[u8], limits: &Limits) -> Result<(), DecodeError> {
    let mut routes = 0usize;
    wire::for_each_field(body, |tag, value| match tag {
        1 | 3 | 7 => routes += 1,
        2 | 4 | 5 | 6 => routes += wire::scalar_entries(value),
        _ => {}
    })
    .map_err(|reason| DecodeError::Malformed {
        kind: FrameKind::Advert,
        reason,
    })?;
    Limits::check(
        LimitKind::Routes,
        "advert route count",
        routes,
        limits.max_routes(),
    )?;
    Ok(())
}

fn hello_from(h: proto::Hello, limits: &Limits) -> Result<Frame, DecodeError> {
    let mut schemas = Schemas::default();
    let caps = h.capabilities.ok_or(DecodeError::Missing {
        field: "hello.capabilities",
    })?;
    let hello = Hello {
        protocol_version: h.protocol_version,
        public_key: h.public_key,
        key_binding: h.key_binding,
        node_name: h.node_name,
        intents: h
            .intents
            .into_iter()
            .map(|i| intent_from(i, limits, &mut schemas))
            .collect::<Result<_, _>>()?,
        interests: h
            .interests
            .into_iter()
            .map(|i| interest_from(i, limits, &mut schemas))
            .collect::<Result<_, _>>()?,
        capabilities: Capabilities {
            zstd: caps.zstd,
            dictionary_ids: caps.dictionary_ids,
            max_frame_len: caps.max_frame_len,
            max_batch_messages: caps.max_batch_messages,
            max_decompressed_len: caps.max_decompressed_len,
            signed_batches: caps.signed_batches,
        },
        resume: h.resume.map(|r| ResumeState {
            session_epoch: r.session_epoch,
            last_received_seq: r.last_received_seq,
            last_sent_seq: r.last_sent_seq,
            peer_epoch: r.peer_epoch,
            first_unacked_seq: r.first_unacked_seq,
        }),
    };
    Ok(Frame::Hello(hello))
}

fn advert_from(a: proto::Advert, limits: &Limits) -> Result<Frame, DecodeError> {
    let mut schemas = Schemas::default();
    Ok(Frame::Advert(Advert {
        intents_added: a
            .intents_added
            .into_iter()
            .map(|i| intent_from(i, limits, &mut schemas))
            .collect::<Result<_, _>>()?,
        intents_removed: a.intents_removed,
        interests_added: a
            .interests_added
            .into_iter()
            .map(|i| interest_from(i, limits, &mut schemas))
            .collect::<Result<_, _>>()?,
        interests_removed: a.interests_removed,
        paused: a.paused,
        resumed: a.resumed,
        feedback: a
            .feedback
            .into_iter()
            .map(|f| RouteFeedback {
                id: f.id,
                dropped_oldest: f.dropped_oldest,
                dropped_newest: f.dropped_newest,
                lag: f.lag,
                capacity: f.capacity,
            })
            .collect(),
    }))
}

/// Checks a route text's length (`what`), then parses it (`field`).
fn parse<T: std::str::FromStr<Err = dndm_core::RouteParseError>>(
    text: &str,
    (field, what): (&'static str, &'static str),
    limits: &Limits,
) -> Result<T, DecodeError> {
    Limits::check(
        LimitKind::RouteLen,
        what,
        text.len(),
        limits.max_route_len(),
    )?;
    text.parse()
        .map_err(|source| DecodeError::Route { field, source })
}

fn fingerprint(bytes: &[u8], field: &'static str) -> Result<Fingerprint, DecodeError> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| DecodeError::Invalid {
        field,
        reason: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(Fingerprint::from_bytes(raw))
}

/// Distinct schemas of one frame's bytes (all but one of a frame's declarations of one type
/// share the first's), whose total is at most [`MAX_FRAME_SCHEMA_BYTES`]: what decoding them
/// keeps alive stays small whatever the frame holds.
#[derive(Default)]
struct Schemas {
    decoded: HashMap<Vec<u8>, Arc<Schema>>,
    bytes: usize,
}

/// Largest total of distinct schema bytes one frame may declare.
pub(crate) const MAX_FRAME_SCHEMA_BYTES: usize = 256 * 1024;

impl Schemas {
    /// A declared schema: none when empty, else one that decodes within its bounds.
    fn decode(
        &mut self,
        bytes: &[u8],
        field: &'static str,
    ) -> Result<Option<Arc<Schema>>, DecodeError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        if let Some(schema) = self.decoded.get(bytes) {
            return Ok(Some(schema.clone()));
        }
        self.bytes += bytes.len();
        if self.bytes > MAX_FRAME_SCHEMA_BYTES {
            return Err(DecodeError::Invalid {
                field,
                reason: format!(
                    "distinct schemas of more than {MAX_FRAME_SCHEMA_BYTES} bytes in one frame"
                ),
            });
        }
        let schema = Schema::decode(bytes)
            .map(Arc::new)
            .map_err(|error| DecodeError::Invalid {
                field,
                reason: error.to_string(),
            })?;
        self.decoded.insert(bytes.to_vec(), schema.clone());
        Ok(Some(schema))
    }
}

const INTENT_ROUTE: (&str, &str) = ("intent.route", "intent route length");
const INTEREST_PATTERN: (&str, &str) = ("interest.pattern", "interest pattern length");

fn intent_from(
    i: proto::IntentDecl,
    limits: &Limits,
    schemas: &mut Schemas,
) -> Result<IntentDecl, DecodeError> {
    use proto::intent_decl::Route;
    let route = match i.route {
        Some(Route::Plain(s)) => DeclRoute::Plain(parse(&s, INTENT_ROUTE, limits)?),
        Some(Route::Hashed(s)) => DeclRoute::Hashed(parse(&s, INTENT_ROUTE, limits)?),
        None => {
            return Err(DecodeError::Missing {
                field: "intent.route",
            });
        }
    };
    let qos = i.qos.ok_or(DecodeError::Missing {
        field: "intent.qos",
    })?;
    let qos = match proto::Reliability::try_from(qos.reliability) {
        Ok(proto::Reliability::BestEffort) => Qos::best_effort(),
        Ok(proto::Reliability::Reliable) => Qos::reliable(),
        Err(_) => {
            return Err(DecodeError::Invalid {
                field: "intent.qos.reliability",
                reason: format!("unknown value {}", qos.reliability),
            });
        }
    };
    Ok(IntentDecl {
        id: i.id,
        route,
        fingerprint: fingerprint(&i.fingerprint, "intent.fingerprint")?,
        qos,
        schema: schemas.decode(&i.schema, "intent.schema")?,
    })
}

fn interest_from(
    i: proto::InterestDecl,
    limits: &Limits,
    schemas: &mut Schemas,
) -> Result<InterestDecl, DecodeError> {
    use proto::interest_decl::Pattern;
    let pattern = match i.pattern {
        Some(Pattern::Plain(s)) => DeclPattern::Plain(parse(&s, INTEREST_PATTERN, limits)?),
        Some(Pattern::Hashed(s)) => DeclPattern::Hashed(parse(&s, INTEREST_PATTERN, limits)?),
        None => {
            return Err(DecodeError::Missing {
                field: "interest.pattern",
            });
        }
    };
    Ok(InterestDecl {
        id: i.id,
        pattern,
        fingerprint: fingerprint(&i.fingerprint, "interest.fingerprint")?,
        schema: schemas.decode(&i.schema, "interest.schema")?,
        history: i.history,
    })
}

// ---------------------------------------------------------------------------------------------
// Batch bodies

/// Decodes a (decompressed) batch body: counts messages, then lets prost slice the payloads
/// out of `body` without copying.
pub(crate) fn decode_batch_body(
    body: Bytes,
    limits: &Limits,
) -> Result<Vec<BatchMessage>, DecodeError> {
    let kind = FrameKind::Batch;
    let mut count = 0usize;
    wire::for_each_field(&body, |tag, _| {
        if tag == 1 {
            count += 1;
        }
    })
    .map_err(|reason| DecodeError::Malformed { kind, reason })?;
    Limits::check(
        LimitKind::BatchMessages,
        "batch message count",
        count,
        limits.max_batch_messages(),
    )?;
    let decoded =
        proto::BatchBody::decode(body).map_err(|source| DecodeError::Protobuf { kind, source })?;
    decoded.messages.into_iter().map(message_from).collect()
}

fn message_from(m: proto::BatchMessage) -> Result<BatchMessage, DecodeError> {
    let correlation = match (m.request_id, m.response_to, m.error) {
        (None, None, None) => Correlation::None,
        (Some(id), None, None) => Correlation::Request { id },
        (None, Some(to), error) => Correlation::Response {
            to,
            error: error.map(|e| ResponseError {
                code: e.code,
                message: e.message,
            }),
        },
        (Some(id), Some(to), _) => {
            return Err(DecodeError::Invalid {
                field: "batch.messages.request_id",
                reason: format!("request_id {id} and response_to {to} are both set"),
            });
        }
        (_, None, Some(_)) => {
            return Err(DecodeError::Invalid {
                field: "batch.messages.error",
                reason: "error set on a message that is not a response".to_owned(),
            });
        }
    };
    Ok(BatchMessage {
        route_id: m.route_id,
        seq: m.seq,
        correlation,
        payload: m.payload,
    })
}

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Length of a length-delimited field with a one-byte key.
fn ld_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn error_len(e: &ResponseError) -> usize {
    (if e.code != 0 {
        1 + varint_len(e.code.into())
    } else {
        0
    }) + (if e.message.is_empty() {
        0
    } else {
        ld_len(e.message.len())
    })
}

fn message_len(m: &BatchMessage) -> usize {
    let mut len = 0;
    if m.route_id != 0 {
        len += 1 + varint_len(m.route_id.into());
    }
    if let Some(seq) = m.seq {
        len += 1 + varint_len(seq);
    }
    match &m.correlation {
        Correlation::None => {}
        Correlation::Request { id } => len += 1 + varint_len(*id),
        Correlation::Response { to, error } => {
            len += 1 + varint_len(*to);
            if let Some(e) = error {
                len += ld_len(error_len(e));
            }
        }
    }
    if !m.payload.is_empty() {
        len += ld_len(m.payload.len());
    }
    len
}

/// Encoded length of a batch body.
pub(crate) fn batch_body_len(messages: &[BatchMessage]) -> usize {
    messages.iter().map(|m| ld_len(message_len(m))).sum()
}

/// Appends the protobuf `BatchBody` for `messages` to `buf`.
pub(crate) fn encode_batch_body(messages: &[BatchMessage], buf: &mut Vec<u8>) {
    for m in messages {
        buf.put_u8(0x0a); // field 1, length-delimited
        put_varint(buf, message_len(m) as u64);
        if m.route_id != 0 {
            buf.put_u8(0x08);
            put_varint(buf, m.route_id.into());
        }
        if let Some(seq) = m.seq {
            buf.put_u8(0x10);
            put_varint(buf, seq);
        }
        match &m.correlation {
            Correlation::None => {}
            Correlation::Request { id } => {
                buf.put_u8(0x18);
                put_varint(buf, *id);
            }
            Correlation::Response { to, error } => {
                buf.put_u8(0x20);
                put_varint(buf, *to);
                if let Some(e) = error {
                    buf.put_u8(0x2a);
                    put_varint(buf, error_len(e) as u64);
                    if e.code != 0 {
                        buf.put_u8(0x08);
                        put_varint(buf, e.code.into());
                    }
                    if !e.message.is_empty() {
                        buf.put_u8(0x12);
                        put_varint(buf, e.message.len() as u64);
                        buf.put_slice(e.message.as_bytes());
                    }
                }
            }
        }
        if !m.payload.is_empty() {
            buf.put_u8(0x32);
            put_varint(buf, m.payload.len() as u64);
            buf.put_slice(&m.payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX.into(), u64::MAX] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "value {v}");
        }
    }

    #[test]
    fn hand_encoded_batch_matches_prost() {
        let messages = vec![
            BatchMessage::default(),
            BatchMessage {
                route_id: 300,
                seq: Some(0),
                correlation: Correlation::Response {
                    to: 9,
                    error: Some(ResponseError {
                        code: 2,
                        message: "boom".into(),
                    }),
                },
                payload: Bytes::from_static(b"hello"),
            },
        ];
        let mut ours = Vec::new();
        encode_batch_body(&messages, &mut ours);
        assert_eq!(ours.len(), batch_body_len(&messages));
        let theirs = proto::BatchBody {
            messages: vec![
                proto::BatchMessage::default(),
                proto::BatchMessage {
                    route_id: 300,
                    seq: Some(0),
                    request_id: None,
                    response_to: Some(9),
                    error: Some(proto::ResponseError {
                        code: 2,
                        message: "boom".into(),
                    }),
                    payload: Bytes::from_static(b"hello"),
                },
            ],
        }
        .encode_to_vec();
        assert_eq!(ours, theirs);
        assert_eq!(
            decode_batch_body(Bytes::from(ours), &Limits::default()).unwrap(),
            messages
        );
    }
}
