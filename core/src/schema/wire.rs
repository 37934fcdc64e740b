//! The compact, canonical encoding of a [`Schema`] carried in adverts:
//! `schema := varint(count) field*`, `field := varint(number) u8(kind | repeated << 7)
//! [schema when the kind is a probed message]`, fields in increasing number order.

use super::{Field, Kind, MAX_SCHEMA_DEPTH, Schema, SchemaError};

/// Largest protobuf field number.
const MAX_FIELD_NUMBER: u32 = (1 << 29) - 1;

const REPEATED: u8 = 0x80;

fn code(kind: &Kind) -> u8 {
    match kind {
        Kind::Bool => 0,
        Kind::Int32 => 1,
        Kind::Uint32 => 2,
        Kind::Varint64 => 3,
        Kind::Fixed32 => 4,
        Kind::Fixed64 => 5,
        Kind::Bytes => 6,
        Kind::String => 7,
        Kind::Message(None) => 8,
        Kind::Message(Some(_)) => 9,
    }
}

pub(super) fn encode(schema: &Schema, out: &mut Vec<u8>) {
    put_varint(schema.fields.len() as u64, out);
    for field in &schema.fields {
        put_varint(u64::from(field.number), out);
        out.push(code(&field.kind) | if field.repeated { REPEATED } else { 0 });
        if let Kind::Message(Some(inner)) = &field.kind {
            encode(inner, out);
        }
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<Schema, SchemaError> {
    let mut input = bytes;
    let schema = decode_at(&mut input, 0)?;
    if !input.is_empty() {
        return Err(SchemaError::Malformed("bytes after the schema"));
    }
    Ok(schema)
}

fn decode_at(input: &mut &[u8], depth: usize) -> Result<Schema, SchemaError> {
    if depth > MAX_SCHEMA_DEPTH {
        return Err(SchemaError::Malformed("nested deeper than allowed"));
    }
    let count = take_varint(input)?;
    // Each field takes at least two bytes: a count beyond that is a lie.
    if count > input.len() as u64 / 2 {
        return Err(SchemaError::Malformed("more fields than bytes"));
    }
    let mut fields = Vec::new();
    let mut last = 0;
    for _ in 0..count {
        let number = u32::try_from(take_varint(input)?)
            .ok()
            .filter(|n| (1..=MAX_FIELD_NUMBER).contains(n))
            .ok_or(SchemaError::Malformed("field number out of range"))?;
        if number <= last {
            return Err(SchemaError::Malformed("field numbers not increasing"));
        }
        last = number;
        let (&byte, rest) = input
            .split_first()
            .ok_or(SchemaError::Malformed("field without a kind"))?;
        *input = rest;
        let kind = match byte & !REPEATED {
            0 => Kind::Bool,
            1 => Kind::Int32,
            2 => Kind::Uint32,
            3 => Kind::Varint64,
            4 => Kind::Fixed32,
            5 => Kind::Fixed64,
            6 => Kind::Bytes,
            7 => Kind::String,
            8 => Kind::Message(None),
            9 => Kind::Message(Some(Box::new(decode_at(input, depth + 1)?))),
            _ => return Err(SchemaError::Malformed("unknown field kind")),
        };
        fields.push(Field {
            number,
            kind,
            repeated: byte & REPEATED != 0,
        });
    }
    Ok(Schema { fields })
}

pub(super) fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(super) fn take_varint(input: &mut &[u8]) -> Result<u64, SchemaError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input
            .split_first()
            .ok_or(SchemaError::Malformed("truncated varint"))?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(SchemaError::Malformed("varint longer than 10 bytes"))
}
