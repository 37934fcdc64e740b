//! Message schemas as the wire sees them, and whether one side can read what the other writes.
//!
//! A [`Schema`] lists a message's fields by number: the kind of value each carries on the wire
//! (a varint of some width, 32 or 64 fixed bits, bytes, UTF-8 text, or a nested message with
//! its own schema) and whether it repeats. That is exactly what decides whether bytes written
//! by one definition decode, unchanged, under another, so it is what dndm compares when two
//! peers use one type name ([`compatibility`]).
//!
//! [`Schema::of`] reads it from the type's own prost decoder (by probing it): no
//! descriptor, derive or build step beyond the `prost::Message` the type already has, so
//! `prost-build` output and hand-written structs are treated alike. What the wire cannot show
//! is not seen: field names, `sint32` versus `uint32`, `float` versus `fixed32`, and fields
//! numbered above [`MAX_PROBED_FIELD`].

use std::fmt;

mod probe;
mod wire;

pub use probe::MAX_PROBED_FIELD;

/// Deepest nesting of message fields a schema describes (deeper ones are [`Kind::Message`]
/// with no schema; a message that contains itself ends there).
pub const MAX_SCHEMA_DEPTH: usize = 8;

/// Largest encoded schema accepted from a peer, in bytes.
pub const MAX_SCHEMA_LEN: usize = 16 * 1024;

/// A message's fields as the wire sees them, sorted by number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Schema {
    fields: Vec<Field>,
}

/// One field of a [`Schema`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    /// The field number (tag).
    pub number: u32,
    /// What its values are on the wire.
    pub kind: Kind,
    /// Whether it holds a list.
    pub repeated: bool,
}

/// What a field's values are on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// `bool`.
    Bool,
    /// `int32` or an enum: 32 bits, negative values sign-extended to 64.
    Int32,
    /// `uint32` or `sint32`: 32 bits, never sign-extended.
    Uint32,
    /// `int64`, `uint64` or `sint64`.
    Varint64,
    /// `fixed32`, `sfixed32` or `float`.
    Fixed32,
    /// `fixed64`, `sfixed64` or `double`.
    Fixed64,
    /// `bytes`: any octets.
    Bytes,
    /// `string`: UTF-8 text.
    String,
    /// A nested message; `None` below [`MAX_SCHEMA_DEPTH`].
    Message(Option<Box<Schema>>),
}

/// A field inside nested messages: numbers from the outer message in, shown `3.1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FieldPath(pub Vec<u32>);

/// Whether an interest's schema reads what an intent's schema writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compatibility {
    /// The same schema.
    Identical,
    /// Different, but every value the publisher writes is read unchanged by the subscriber;
    /// fields only one side knows are skipped by the other (protobuf's own rule).
    Compatible {
        /// Fields the publisher's schema has and the subscriber's lacks (ignored when read).
        added: Vec<FieldPath>,
        /// Fields the subscriber's schema has and the publisher's lacks (read as defaults).
        removed: Vec<FieldPath>,
    },
}

/// Why two schemas of one type name cannot be linked: the first field (in number order) whose
/// values one side writes and the other cannot read unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("field {field} is {publisher} at the publisher but {subscriber} at the subscriber")]
pub struct SchemaConflict {
    /// The field.
    pub field: FieldPath,
    /// What the publisher's schema has there.
    pub publisher: String,
    /// What the subscriber's schema has there.
    pub subscriber: String,
}

/// Why encoded schema bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// More than [`MAX_SCHEMA_LEN`] bytes.
    #[error("schema of {0} bytes is larger than {MAX_SCHEMA_LEN}")]
    TooLarge(usize),
    /// The bytes do not describe a schema.
    #[error("malformed schema: {0}")]
    Malformed(&'static str),
}

impl Schema {
    /// The schema of `T`, read from its prost decoder (see the module docs).
    pub fn of<T: prost::Message + Default>() -> Self {
        probe::schema_of::<T>()
    }

    /// A schema of these fields (sorted by number; a later duplicate number replaces an
    /// earlier one).
    pub fn from_fields(fields: impl IntoIterator<Item = Field>) -> Self {
        let mut fields: Vec<Field> = fields.into_iter().collect();
        fields.sort_by_key(|f| f.number);
        fields.dedup_by(|later, earlier| {
            let same = later.number == earlier.number;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Self { fields }
    }

    /// The fields, by number.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The canonical encoding: equal schemas, equal bytes. [`Schema::decode`] reads it back.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        wire::encode(self, &mut out);
        out
    }

    /// Reads [`Schema::encode`]'s bytes, bounded in size ([`MAX_SCHEMA_LEN`]) and depth.
    ///
    /// # Errors
    /// [`SchemaError`] naming what is wrong; never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self, SchemaError> {
        if bytes.len() > MAX_SCHEMA_LEN {
            return Err(SchemaError::TooLarge(bytes.len()));
        }
        wire::decode(bytes)
    }
}

/// Whether `subscriber` reads what `publisher` writes: [`Compatibility`], or the first field
/// that would arrive garbled or fail to decode.
///
/// # Errors
/// [`SchemaConflict`] naming the field and both sides' kinds.
pub fn compatibility(
    publisher: &Schema,
    subscriber: &Schema,
) -> Result<Compatibility, SchemaConflict> {
    if publisher == subscriber {
        return Ok(Compatibility::Identical);
    }
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    compare(
        publisher,
        subscriber,
        &mut Vec::new(),
        &mut added,
        &mut removed,
    )?;
    Ok(Compatibility::Compatible { added, removed })
}

fn compare(
    publisher: &Schema,
    subscriber: &Schema,
    path: &mut Vec<u32>,
    added: &mut Vec<FieldPath>,
    removed: &mut Vec<FieldPath>,
) -> Result<(), SchemaConflict> {
    let (mut w, mut r) = (
        publisher.fields.iter().peekable(),
        subscriber.fields.iter().peekable(),
    );
    loop {
        let at = |number: u32, path: &Vec<u32>| {
            let mut full = path.clone();
            full.push(number);
            FieldPath(full)
        };
        match (w.peek(), r.peek()) {
            (None, None) => return Ok(()),
            (Some(f), None) => {
                added.push(at(f.number, path));
                w.next();
            }
            (None, Some(f)) => {
                removed.push(at(f.number, path));
                r.next();
            }
            (Some(a), Some(b)) if a.number < b.number => {
                added.push(at(a.number, path));
                w.next();
            }
            (Some(a), Some(b)) if a.number > b.number => {
                removed.push(at(b.number, path));
                r.next();
            }
            (Some(a), Some(b)) => {
                let conflict = || SchemaConflict {
                    field: at(a.number, path),
                    publisher: a.describe(),
                    subscriber: b.describe(),
                };
                // A list sent to a single field loses all but its last value (or, packed,
                // does not decode); a single value sent to a list arrives as a list of one.
                if (a.repeated && !b.repeated) || !a.kind.reads_as(&b.kind) {
                    return Err(conflict());
                }
                if let (Kind::Message(Some(inner_a)), Kind::Message(Some(inner_b))) =
                    (&a.kind, &b.kind)
                {
                    path.push(a.number);
                    let nested = compare(inner_a, inner_b, path, added, removed);
                    path.pop();
                    nested?;
                }
                w.next();
                r.next();
            }
        }
    }
}

impl Kind {
    /// Whether a reader of `reader` gets every value written as `self` unchanged (nested
    /// messages are compared field by field by the caller).
    fn reads_as(&self, reader: &Kind) -> bool {
        use Kind::*;
        match (self, reader) {
            // 0 and 1 are the same in every integer kind.
            (Bool, Bool | Int32 | Uint32 | Varint64) => true,
            (Int32, Int32 | Varint64) => true,
            (Uint32, Uint32 | Varint64) => true,
            (Varint64, Varint64) => true,
            (Fixed32, Fixed32) | (Fixed64, Fixed64) => true,
            (String, String | Bytes) => true,
            (Bytes, Bytes) => true,
            (Message(_), Message(_) | Bytes) => true,
            _ => false,
        }
    }

    /// A short name: `int32/enum`, `string`, `message`...
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int32 => "int32/enum",
            Kind::Uint32 => "uint32/sint32",
            Kind::Varint64 => "int64/uint64/sint64",
            Kind::Fixed32 => "fixed32/sfixed32/float",
            Kind::Fixed64 => "fixed64/sfixed64/double",
            Kind::Bytes => "bytes",
            Kind::String => "string",
            Kind::Message(_) => "message",
        }
    }
}

impl Field {
    fn describe(&self) -> String {
        if self.repeated {
            format!("repeated {}", self.kind.name())
        } else {
            self.kind.name().to_owned()
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, number) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{number}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
