//! Reading a prost type's schema from its own decoder.
//!
//! prost's generated `decode` keeps the fields it knows and skips the others, and refuses a
//! known field sent with a wire type it does not accept; `encode` writes back what was kept.
//! So for each field number and wire type, decoding one crafted field into a default message
//! and encoding it again tells whether the field exists, how its values travel, and (from what
//! comes back) their width: a varint of `u32::MAX` returns sign-extended from an `int32`,
//! `2^64 - 1` returns cut to 32 bits from a `uint32`, `2` returns as `1` from a `bool`. A
//! nested message is probed the same way through its parent, one level deeper.

use super::wire::{put_varint, take_varint};
use super::{Field, Kind, MAX_SCHEMA_DEPTH, Schema};

/// Highest field number probed: fields numbered above it are not seen (override
/// `dndm::Message::schema` for such types).
pub const MAX_PROBED_FIELD: u32 = 1024;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

pub(super) fn schema_of<T: prost::Message + Default>() -> Schema {
    probe_at::<T>(&[], 0)
}

/// The schema of the message at `path` (field numbers from the top) inside `T`.
fn probe_at<T: prost::Message + Default>(path: &[u32], depth: usize) -> Schema {
    let Some(baseline) = reencode::<T>(&wrap(path, &[])) else {
        return Schema::default();
    };
    let fields = (1..=MAX_PROBED_FIELD)
        .filter_map(|number| probe_field::<T>(path, number, depth, &baseline))
        .collect();
    Schema { fields }
}

fn probe_field<T: prost::Message + Default>(
    path: &[u32],
    number: u32,
    depth: usize,
    baseline: &[u8],
) -> Option<Field> {
    // Whether `T` keeps field `number` sent as `wire` with `value`.
    let kept = |wire: u8, value: &[u8]| {
        let mut field = key(number, wire);
        field.extend_from_slice(value);
        reencode::<T>(&wrap(path, &field)).filter(|out| out != baseline)
    };
    let varint = kept(VARINT, &varint_bytes(1)).is_some();
    let fixed64 = kept(FIXED64, &[1, 0, 0, 0, 0, 0, 0, 0]).is_some();
    let fixed32 = kept(FIXED32, &[1, 0, 0, 0]).is_some();
    let text = kept(LEN, &[1, b'a']).is_some();
    let empty = kept(LEN, &[0]).is_some();
    // Repeated numbers take both their own wire type and packed runs (here of one element).
    let packed = |element: &[u8]| {
        let mut run = varint_bytes(element.len() as u64);
        run.extend_from_slice(element);
        kept(LEN, &run).is_some()
    };
    let kind = if varint {
        varint_kind(|value| {
            let out = kept(VARINT, &varint_bytes(value))?;
            first_varint(&descend(&out, path)?, number)
        })
    } else if fixed64 {
        Kind::Fixed64
    } else if fixed32 {
        Kind::Fixed32
    } else if kept(LEN, &[1, 0xff]).is_some() {
        Kind::Bytes
    } else if text {
        Kind::String
    } else if empty {
        Kind::Message(if depth + 1 < MAX_SCHEMA_DEPTH {
            let mut inner = path.to_vec();
            inner.push(number);
            Some(Box::new(probe_at::<T>(&inner, depth + 1)))
        } else {
            None
        })
    } else {
        return None;
    };
    let repeated = match kind {
        Kind::Bytes | Kind::String | Kind::Message(_) => {
            // Sent twice: a list keeps both, a single field the last.
            let one: &[u8] = if matches!(kind, Kind::Message(_)) {
                &[0]
            } else {
                &[1, b'a']
            };
            let mut twice = key(number, LEN);
            twice.extend_from_slice(one);
            twice.extend_from_slice(&key(number, LEN));
            twice.extend_from_slice(one);
            reencode::<T>(&wrap(path, &twice))
                .and_then(|out| descend(&out, path))
                .is_some_and(|inner| occurrences(&inner, number) > 1)
        }
        Kind::Fixed64 => packed(&[1, 0, 0, 0, 0, 0, 0, 0]),
        Kind::Fixed32 => packed(&[1, 0, 0, 0]),
        _ => packed(&[1]),
    };
    Some(Field {
        number,
        kind,
        repeated,
    })
}

/// The varint kind from what comes back for a few values (`None`: nothing came back).
fn varint_kind(back: impl Fn(u64) -> Option<u64>) -> Kind {
    if back(2) == Some(1) {
        Kind::Bool
    } else if back(u64::from(u32::MAX)) == Some(u64::MAX) {
        Kind::Int32
    } else if back(u64::MAX) == Some(u64::from(u32::MAX)) {
        Kind::Uint32
    } else {
        Kind::Varint64
    }
}

/// `bytes` decoded as `T` and encoded again; `None` when `T` refuses them.
fn reencode<T: prost::Message + Default>(bytes: &[u8]) -> Option<Vec<u8>> {
    T::decode(bytes).ok().map(|message| message.encode_to_vec())
}

/// `inner` as the content of the message at `path`.
fn wrap(path: &[u32], inner: &[u8]) -> Vec<u8> {
    let mut bytes = inner.to_vec();
    for &number in path.iter().rev() {
        let mut outer = key(number, LEN);
        put_varint(bytes.len() as u64, &mut outer);
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    bytes
}

fn key(number: u32, wire: u8) -> Vec<u8> {
    varint_bytes((u64::from(number) << 3) | u64::from(wire))
}

fn varint_bytes(value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(value, &mut out);
    out
}

/// One field as read from encoded bytes.
enum Value<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Fixed,
}

/// The fields of a message's encoding; `None` if it is malformed.
fn fields(mut bytes: &[u8]) -> Option<Vec<(u32, Value<'_>)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = take_varint(&mut bytes).ok()?;
        let number = u32::try_from(key >> 3).ok()?;
        let value = match (key & 7) as u8 {
            VARINT => Value::Varint(take_varint(&mut bytes).ok()?),
            LEN => {
                let len = usize::try_from(take_varint(&mut bytes).ok()?).ok()?;
                let (content, rest) = (bytes.get(..len)?, bytes.get(len..)?);
                bytes = rest;
                Value::Len(content)
            }
            FIXED64 => {
                bytes = bytes.get(8..)?;
                Value::Fixed
            }
            FIXED32 => {
                bytes = bytes.get(4..)?;
                Value::Fixed
            }
            _ => return None,
        };
        out.push((number, value));
    }
    Some(out)
}

/// The encoding of the message at `path` inside `bytes`.
fn descend(bytes: &[u8], path: &[u32]) -> Option<Vec<u8>> {
    let mut current = bytes.to_vec();
    for &number in path {
        let inner = fields(&current)?
            .into_iter()
            .find_map(|(n, value)| match value {
                Value::Len(content) if n == number => Some(content.to_vec()),
                _ => None,
            })?;
        current = inner;
    }
    Some(current)
}

/// The first varint of field `number`, sent alone or as the first of a packed run.
fn first_varint(bytes: &[u8], number: u32) -> Option<u64> {
    fields(bytes)?
        .into_iter()
        .find_map(|(n, value)| match value {
            Value::Varint(v) if n == number => Some(v),
            Value::Len(mut run) if n == number => take_varint(&mut run).ok(),
            _ => None,
        })
}

/// How many times field `number` occurs in a message's encoding.
fn occurrences(bytes: &[u8], number: u32) -> usize {
    fields(bytes).map_or(0, |all| all.iter().filter(|(n, _)| *n == number).count())
}
