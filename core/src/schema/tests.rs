#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::wire::put_varint;
use super::*;

#[derive(Clone, PartialEq, prost::Message)]
struct Inner {
    #[prost(bool, tag = "1")]
    on: bool,
}

/// Every kind the probe tells apart, hand-derived.
#[derive(Clone, PartialEq, prost::Message)]
struct V1 {
    #[prost(int32, tag = "1")]
    count: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(double, repeated, tag = "3")]
    samples: Vec<f64>,
    #[prost(message, optional, tag = "4")]
    inner: Option<Inner>,
    #[prost(bytes = "vec", tag = "5")]
    blob: Vec<u8>,
    #[prost(uint32, tag = "6")]
    flags: u32,
    #[prost(sint64, tag = "7")]
    offset: i64,
    #[prost(float, tag = "8")]
    ratio: f32,
    #[prost(string, repeated, tag = "9")]
    tags: Vec<String>,
    #[prost(message, repeated, tag = "10")]
    children: Vec<Inner>,
    #[prost(bool, tag = "11")]
    ok: bool,
    #[prost(int32, repeated, tag = "700")]
    far: Vec<i32>,
}

/// V1 plus a field.
#[derive(Clone, PartialEq, prost::Message)]
struct V2 {
    #[prost(int32, tag = "1")]
    count: i32,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(double, repeated, tag = "3")]
    samples: Vec<f64>,
    #[prost(message, optional, tag = "4")]
    inner: Option<Inner>,
    #[prost(bytes = "vec", tag = "5")]
    blob: Vec<u8>,
    #[prost(uint32, tag = "6")]
    flags: u32,
    #[prost(sint64, tag = "7")]
    offset: i64,
    #[prost(float, tag = "8")]
    ratio: f32,
    #[prost(string, repeated, tag = "9")]
    tags: Vec<String>,
    #[prost(message, repeated, tag = "10")]
    children: Vec<Inner>,
    #[prost(bool, tag = "11")]
    ok: bool,
    #[prost(int32, repeated, tag = "700")]
    far: Vec<i32>,
    #[prost(string, tag = "12")]
    added: String,
}

fn field(number: u32, kind: Kind, repeated: bool) -> Field {
    Field {
        number,
        kind,
        repeated,
    }
}

#[test]
fn the_probe_reads_every_kind_from_a_prost_type() {
    let inner = Schema::from_fields([field(1, Kind::Bool, false)]);
    let expected = Schema::from_fields([
        field(1, Kind::Int32, false),
        field(2, Kind::String, false),
        field(3, Kind::Fixed64, true),
        field(4, Kind::Message(Some(Box::new(inner.clone()))), false),
        field(5, Kind::Bytes, false),
        field(6, Kind::Uint32, false),
        field(7, Kind::Varint64, false),
        field(8, Kind::Fixed32, false),
        field(9, Kind::String, true),
        field(10, Kind::Message(Some(Box::new(inner))), true),
        field(11, Kind::Bool, false),
        field(700, Kind::Int32, true),
    ]);
    assert_eq!(Schema::of::<V1>(), expected);
    assert_eq!(Schema::of::<Inner>().fields().len(), 1);
}

#[test]
fn an_added_field_is_compatible_both_ways_and_a_retyped_one_is_refused() {
    let (v1, v2) = (Schema::of::<V1>(), Schema::of::<V2>());
    assert_eq!(compatibility(&v1, &v1), Ok(Compatibility::Identical));
    assert_eq!(
        compatibility(&v2, &v1),
        Ok(Compatibility::Compatible {
            added: vec![FieldPath(vec![12])],
            removed: vec![],
        })
    );
    assert_eq!(
        compatibility(&v1, &v2),
        Ok(Compatibility::Compatible {
            added: vec![],
            removed: vec![FieldPath(vec![12])],
        })
    );
    let mut v3 = v1.clone();
    v3.fields[1].kind = Kind::Int32;
    let conflict = compatibility(&v1, &v3).unwrap_err();
    assert_eq!(conflict.field, FieldPath(vec![2]));
    assert_eq!(
        conflict.to_string(),
        "field 2 is string at the publisher but int32/enum at the subscriber"
    );
    // Inside a nested message, the path names it.
    let mut nested = v1.clone();
    let Kind::Message(Some(inner)) = &mut nested.fields[3].kind else {
        panic!("field 4 is a message")
    };
    inner.fields[0].kind = Kind::Fixed32;
    assert_eq!(
        compatibility(&v1, &nested).unwrap_err().field.to_string(),
        "4.1"
    );
}

#[test]
fn the_encoding_is_canonical_and_bounded() {
    let schema = Schema::of::<V2>();
    let bytes = schema.encode();
    assert_eq!(Schema::decode(&bytes).unwrap(), schema);
    assert_eq!(
        Schema::decode(&vec![0; MAX_SCHEMA_LEN + 1]),
        Err(SchemaError::TooLarge(MAX_SCHEMA_LEN + 1))
    );
    // Out of order, a kind that does not exist, and a claimed count past the end.
    for bad in [&[2, 2, 0, 1, 0][..], &[1, 1, 42], &[200, 1, 1, 0]] {
        assert!(Schema::decode(bad).is_err(), "{bad:?}");
    }
}

proptest! {
    #[test]
    fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(schema) = Schema::decode(&bytes) {
            prop_assert_eq!(Schema::decode(&schema.encode()).unwrap(), schema);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `compatibility` agrees with decoding: when it says compatible, every message written
    /// with the publisher's schema decodes under the subscriber's without an error and with
    /// every common field unchanged; when it names a conflict, a message that sets that field
    /// fails to decode or comes out changed.
    #[test]
    fn compatibility_agrees_with_decoding(
        (publisher, subscriber) in prop_oneof![
            (schema(2), schema(2)),
            schema(2).prop_flat_map(|p| (Just(p.clone()), variant(p))),
        ],
        seed in any::<u64>(),
    ) {
        let mut values = Values(seed, false);
        match compatibility(&publisher, &subscriber) {
            Ok(_) => {
                values.1 = true;
                let full = values.message(&publisher, None);
                values.1 = false;
                prop_assert!(
                    reads_unchanged(&full, &subscriber),
                    "every field at its hardest: {publisher:?} -> {subscriber:?}"
                );
                for _ in 0..8 {
                    let message = values.message(&publisher, None);
                    prop_assert!(
                        reads_unchanged(&message, &subscriber),
                        "{publisher:?} -> {subscriber:?}"
                    );
                }
            }
            Err(conflict) => {
                if let Some(message) = values.witness(&publisher, &subscriber, &conflict.field.0) {
                    prop_assert!(
                        !reads_unchanged(&message, &subscriber),
                        "{conflict}: {publisher:?} -> {subscriber:?}"
                    );
                }
            }
        }
    }
}

fn kind(depth: u32) -> BoxedStrategy<Kind> {
    let leaf = prop_oneof![
        Just(Kind::Bool),
        Just(Kind::Int32),
        Just(Kind::Uint32),
        Just(Kind::Varint64),
        Just(Kind::Fixed32),
        Just(Kind::Fixed64),
        Just(Kind::Bytes),
        Just(Kind::String),
    ];
    if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![
            4 => leaf,
            1 => schema(depth - 1).prop_map(|s| Kind::Message(Some(Box::new(s)))),
        ]
        .boxed()
    }
}

/// Random schemas over field numbers 1 to 5, so that two of them share fields.
fn schema(depth: u32) -> BoxedStrategy<Schema> {
    proptest::collection::btree_map(1u32..=5, (kind(depth), any::<bool>()), 0..=4)
        .prop_map(|fields| {
            Schema::from_fields(
                fields
                    .into_iter()
                    .map(|(number, (kind, repeated))| field(number, kind, repeated)),
            )
        })
        .boxed()
}

/// `schema` with each field kept (mostly), retyped, made (or unmade) a list, or dropped, and
/// some fields added: a likely next version of it.
fn variant(base: Schema) -> BoxedStrategy<Schema> {
    let edits = proptest::collection::vec((0u8..10, kind(1)), base.fields().len());
    (edits, schema(1))
        .prop_map(move |(edits, extra)| {
            let mut fields: Vec<Field> = Vec::new();
            for (f, (edit, kind)) in base.fields().iter().zip(edits) {
                match edit {
                    0..=5 => fields.push(f.clone()),
                    6 | 7 => fields.push(field(f.number, kind, f.repeated)),
                    8 => fields.push(field(f.number, f.kind.clone(), !f.repeated)),
                    _ => {}
                }
            }
            let taken: Vec<u32> = base.fields().iter().map(|f| f.number).collect();
            fields.extend(
                extra
                    .fields()
                    .iter()
                    .filter(|f| !taken.contains(&f.number))
                    .cloned(),
            );
            Schema::from_fields(fields)
        })
        .boxed()
}

/// A value as written: varints as their 64 bits, the rest as bytes.
#[derive(Debug, Clone, PartialEq)]
enum Written {
    Varint(u64),
    Fixed(Vec<u8>),
    Len(Vec<u8>),
}

/// A message as written: field number → its values, and its encoding.
struct Message {
    fields: Vec<(u32, Vec<Written>, Kind)>,
    bytes: Vec<u8>,
}

/// A small deterministic generator of values; `extreme` always picks the hardest ones.
struct Values(u64, bool);

impl Values {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value of `kind`, extreme ones often.
    fn value(&mut self, kind: &Kind) -> Written {
        let pick = self.next();
        let extreme = self.1 || pick.is_multiple_of(2);
        match kind {
            Kind::Bool => Written::Varint(pick % 2),
            Kind::Int32 => {
                let v = if extreme { -1 } else { pick as i32 };
                Written::Varint(i64::from(v) as u64)
            }
            Kind::Uint32 => Written::Varint(if extreme {
                u64::from(u32::MAX)
            } else {
                pick % (1 << 32)
            }),
            Kind::Varint64 => Written::Varint(if extreme { (1 << 40) | 5 } else { pick }),
            Kind::Fixed32 => Written::Fixed(pick.to_le_bytes()[..4].to_vec()),
            Kind::Fixed64 => Written::Fixed(pick.to_le_bytes().to_vec()),
            Kind::Bytes => Written::Len(if extreme {
                vec![0xff, 0x80]
            } else {
                pick.to_le_bytes().to_vec()
            }),
            Kind::String => Written::Len(if extreme {
                "é".into()
            } else {
                format!("s{pick}").into_bytes()
            }),
            Kind::Message(schema) => {
                let empty = Schema::default();
                let schema = schema.as_deref().unwrap_or(&empty);
                Written::Len(self.message(schema, None).bytes)
            }
        }
    }

    /// A random message of `schema`; with `force`, that field (path) is always set.
    fn message(&mut self, schema: &Schema, force: Option<&[u32]>) -> Message {
        let mut fields = Vec::new();
        let mut bytes = Vec::new();
        for f in schema.fields() {
            let forced = force
                .and_then(|path| path.split_first())
                .filter(|(n, _)| **n == f.number);
            let count = match (forced, f.repeated) {
                (Some(_), true) => 2,
                (Some(_), false) => 1,
                // Extreme: every field set, lists with two values.
                (None, true) if self.1 => 2,
                (None, false) if self.1 => 1,
                (None, true) => (self.next() % 3) as usize,
                (None, false) => (self.next() % 2) as usize,
            };
            let mut values = Vec::new();
            for _ in 0..count {
                let value = match (&f.kind, forced) {
                    (Kind::Message(Some(inner)), Some((_, rest))) if !rest.is_empty() => {
                        Written::Len(self.message(inner, Some(rest)).bytes)
                    }
                    (kind, _) => self.value(kind),
                };
                values.push(value);
            }
            encode_field(f, &values, &mut bytes);
            fields.push((f.number, values, f.kind.clone()));
        }
        Message { fields, bytes }
    }

    /// A message that exercises the conflict at `path`, if one can be written.
    fn witness(
        &mut self,
        publisher: &Schema,
        subscriber: &Schema,
        path: &[u32],
    ) -> Option<Message> {
        let (w, r) = (field_at(publisher, path)?, field_at(subscriber, path)?);
        // A message sent where a string is read may happen to be valid UTF-8 (an empty one).
        let list_to_single = w.repeated && !r.repeated;
        let invisible =
            matches!(w.kind, Kind::Message(_)) && r.kind == Kind::String && !list_to_single;
        self.1 = true;
        let message = (!invisible).then(|| self.message(publisher, Some(path)));
        self.1 = false;
        message
    }
}

fn field_at<'a>(schema: &'a Schema, path: &[u32]) -> Option<&'a Field> {
    let (first, rest) = path.split_first()?;
    let f = schema.fields().iter().find(|f| f.number == *first)?;
    if rest.is_empty() {
        return Some(f);
    }
    match &f.kind {
        Kind::Message(Some(inner)) => field_at(inner, rest),
        _ => None,
    }
}

fn encode_field(f: &Field, values: &[Written], out: &mut Vec<u8>) {
    let key = |wire: u64, out: &mut Vec<u8>| put_varint((u64::from(f.number) << 3) | wire, out);
    let numeric = !matches!(f.kind, Kind::Bytes | Kind::String | Kind::Message(_));
    if f.repeated && numeric {
        // Repeated numbers are written packed (proto3's default).
        if values.is_empty() {
            return;
        }
        let mut run = Vec::new();
        for value in values {
            match value {
                Written::Varint(v) => put_varint(*v, &mut run),
                Written::Fixed(b) | Written::Len(b) => run.extend_from_slice(b),
            }
        }
        key(2, out);
        put_varint(run.len() as u64, out);
        out.extend_from_slice(&run);
        return;
    }
    for value in values {
        match value {
            Written::Varint(v) => {
                key(0, out);
                put_varint(*v, out);
            }
            Written::Fixed(b) => {
                key(if b.len() == 4 { 5 } else { 1 }, out);
                out.extend_from_slice(b);
            }
            Written::Len(b) => {
                key(2, out);
                put_varint(b.len() as u64, out);
                out.extend_from_slice(b);
            }
        }
    }
}

/// Whether `message` (written with `publisher`) decodes under `subscriber` as a prost decoder
/// would, with every common field's values unchanged.
fn reads_unchanged(message: &Message, subscriber: &Schema) -> bool {
    let Some(read) = decode(&message.bytes, subscriber) else {
        return false;
    };
    message.fields.iter().all(|(number, written, kind)| {
        let Some(reader) = subscriber.fields().iter().find(|f| f.number == *number) else {
            return true;
        };
        let got = read
            .iter()
            .filter(|(n, _)| n == number)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>();
        // A single field keeps the last value it was sent.
        let got = if reader.repeated {
            got
        } else {
            got.into_iter().last().into_iter().collect()
        };
        let want: Vec<Written> = written.clone();
        if got.len() != want.len() {
            return false;
        }
        got.iter()
            .zip(&want)
            .all(|(g, w)| match (&reader.kind, kind, g, w) {
                (
                    Kind::Message(Some(r)),
                    Kind::Message(Some(p)),
                    Written::Len(gb),
                    Written::Len(wb),
                ) => {
                    gb == wb
                        && reads_unchanged(
                            &Message {
                                fields: fields_of(wb, p),
                                bytes: wb.clone(),
                            },
                            r,
                        )
                }
                _ => g == w,
            })
    })
}

/// The values of an encoded message of `schema`, as written.
fn fields_of(bytes: &[u8], schema: &Schema) -> Vec<(u32, Vec<Written>, Kind)> {
    let all = decode(bytes, schema).unwrap_or_default();
    schema
        .fields()
        .iter()
        .map(|f| {
            let values = all
                .iter()
                .filter(|(n, _)| *n == f.number)
                .map(|(_, v)| v.clone())
                .collect();
            (f.number, values, f.kind.clone())
        })
        .collect()
}

/// Decodes as prost would for `schema`: unknown fields skipped, a known field with a wire type
/// it does not take (or invalid UTF-8 for a string, or a malformed nested message) an error;
/// values normalised to what the reader's kind holds.
fn decode(mut bytes: &[u8], schema: &Schema) -> Option<Vec<(u32, Written)>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = super::wire::take_varint(&mut bytes).ok()?;
        let (number, wire) = (u32::try_from(key >> 3).ok()?, key & 7);
        let raw = match wire {
            0 => Written::Varint(super::wire::take_varint(&mut bytes).ok()?),
            1 => {
                let (b, rest) = (bytes.get(..8)?, bytes.get(8..)?);
                bytes = rest;
                Written::Fixed(b.to_vec())
            }
            5 => {
                let (b, rest) = (bytes.get(..4)?, bytes.get(4..)?);
                bytes = rest;
                Written::Fixed(b.to_vec())
            }
            2 => {
                let len = usize::try_from(super::wire::take_varint(&mut bytes).ok()?).ok()?;
                let (b, rest) = (bytes.get(..len)?, bytes.get(len..)?);
                bytes = rest;
                Written::Len(b.to_vec())
            }
            _ => return None,
        };
        let Some(f) = schema.fields().iter().find(|f| f.number == number) else {
            continue;
        };
        let numeric = !matches!(f.kind, Kind::Bytes | Kind::String | Kind::Message(_));
        match (&f.kind, raw) {
            (
                kind @ (Kind::Bool | Kind::Int32 | Kind::Uint32 | Kind::Varint64),
                Written::Varint(v),
            ) => {
                out.push((number, Written::Varint(normalise(kind, v))));
            }
            (Kind::Fixed32, Written::Fixed(b)) if b.len() == 4 => {
                out.push((number, Written::Fixed(b)))
            }
            (Kind::Fixed64, Written::Fixed(b)) if b.len() == 8 => {
                out.push((number, Written::Fixed(b)))
            }
            (kind, Written::Len(run)) if numeric && f.repeated => {
                let mut run = run.as_slice();
                while !run.is_empty() {
                    let value = match kind {
                        Kind::Fixed32 | Kind::Fixed64 => {
                            let n = if *kind == Kind::Fixed32 { 4 } else { 8 };
                            let (b, rest) = (run.get(..n)?, run.get(n..)?);
                            run = rest;
                            Written::Fixed(b.to_vec())
                        }
                        _ => Written::Varint(normalise(
                            kind,
                            super::wire::take_varint(&mut run).ok()?,
                        )),
                    };
                    out.push((number, value));
                }
            }
            (Kind::Bytes, Written::Len(b)) => out.push((number, Written::Len(b))),
            (Kind::String, Written::Len(b)) => {
                std::str::from_utf8(&b).ok()?;
                out.push((number, Written::Len(b)));
            }
            (Kind::Message(inner), Written::Len(b)) => {
                let empty = Schema::default();
                decode(&b, inner.as_deref().unwrap_or(&empty))?;
                out.push((number, Written::Len(b)));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// What a reader of `kind` holds for varint `v`, as the 64 bits it would write back.
fn normalise(kind: &Kind, v: u64) -> u64 {
    match kind {
        Kind::Bool => u64::from(v != 0),
        Kind::Int32 => i64::from(v as i32) as u64,
        Kind::Uint32 => u64::from(v as u32),
        _ => v,
    }
}
