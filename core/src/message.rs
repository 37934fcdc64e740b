//! The message bound and type fingerprints.
//!
//! Every type carried by dndm is a prost message with a protobuf full name ([`prost::Name`]).
//! The full name is the `TypeName` of its routes; the [`Fingerprint`] tells two schemas that
//! share a name apart, so peers with incompatible definitions are refused instead of linked.

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use sha2::{Digest as _, Sha256};

use crate::schema::Schema;

/// Domain separator for fingerprints.
const FINGERPRINT_DOMAIN: &[u8] = b"dndm-fingerprint-v1\0";

/// A message type that dndm can route: a prost message with a protobuf full name.
///
/// Implement it with one line: the schema and its fingerprint are read from the prost type.
/// Override [`Message::fingerprint`] to refuse every other version regardless of schema:
///
/// ```
/// #[derive(Clone, PartialEq, prost::Message)]
/// pub struct Imu {
///     #[prost(float, tag = "1")]
///     pub ax: f32,
/// }
/// impl prost::Name for Imu {
///     const NAME: &'static str = "Imu";
///     const PACKAGE: &'static str = "example";
/// }
/// impl dndm_core::Message for Imu {}
///
/// use dndm_core::Message as _;
/// assert_eq!(Imu::type_name(), "example.Imu");
/// assert_eq!(Imu::schema().fields()[0].number, 1);
/// assert_eq!(
///     Imu::fingerprint(),
///     dndm_core::Fingerprint::of_schema("example.Imu", &Imu::schema().encode())
/// );
/// ```
pub trait Message: prost::Message + prost::Name + Default + Send + Sync + 'static {
    /// The route type name: the protobuf full name (`package.Message`).
    fn type_name() -> String {
        Self::full_name()
    }

    /// The type's wire schema, advertised with its intents and interests so that a peer with
    /// another version of the type can tell whether the two read each other
    /// ([`compatibility`](crate::schema::compatibility)). The default reads it from the type's
    /// prost decoder, once per type ([`Schema::of`]).
    fn schema() -> Arc<Schema> {
        cached::<Self>().0
    }

    /// The schema fingerprint advertised with every intent and interest of this type: equal
    /// fingerprints link at once. The default hashes the full name and [`Message::schema`], so
    /// two versions of a type differ and are then linked only if their schemas are
    /// compatible. An override (e.g. `Fingerprint::of_schema(name, b"v2")`) makes the
    /// fingerprint the only test: a peer whose fingerprint differs is refused, whatever its
    /// schema.
    fn fingerprint() -> Fingerprint {
        cached::<Self>().1
    }
}

/// Whether `fingerprint` is the default one of `type_name` with `schema` (not an override):
/// only then may a differing peer be linked on its schema.
pub fn fingerprint_is_of_schema(
    type_name: &str,
    fingerprint: Fingerprint,
    schema: &Schema,
) -> bool {
    Fingerprint::of_schema(type_name, &schema.encode()) == fingerprint
}

/// A type's probed schema and its default fingerprint.
type Probed = (Arc<Schema>, Fingerprint);

/// The probed schema of `T` and its default fingerprint, computed once per type.
fn cached<T: Message>() -> Probed {
    static CACHE: OnceLock<Mutex<HashMap<TypeId, Probed>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let known = cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&TypeId::of::<T>())
        .cloned();
    if let Some(known) = known {
        return known;
    }
    // Probed outside the lock: a nested type's probe may run meanwhile.
    let schema = Arc::new(Schema::of::<T>());
    let fingerprint = Fingerprint::of_schema(&T::full_name(), &schema.encode());
    cache
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(TypeId::of::<T>())
        .or_insert((schema, fingerprint))
        .clone()
}

/// A short hash of a message schema (8 bytes of SHA-256, shown as 16 hex digits).
///
/// Two routes link only if their type names and fingerprints are equal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    /// The fingerprint of a type known only by its full name.
    pub fn of_name(full_name: &str) -> Self {
        Self::of_schema(full_name, &[])
    }

    /// The fingerprint of a type's full name plus schema bytes: an encoded file descriptor, or a
    /// version string such as `b"v2"`.
    pub fn of_schema(full_name: &str, schema: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(FINGERPRINT_DOMAIN);
        hasher.update((full_name.len() as u64).to_le_bytes());
        hasher.update(full_name.as_bytes());
        hasher.update(schema);
        let digest = hasher.finalize();
        let mut out = [0; 8];
        out.copy_from_slice(&digest[..8]);
        Self(out)
    }

    /// Wraps raw fingerprint bytes (as carried on the wire).
    pub const fn from_bytes(bytes: [u8; 8]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_names_and_schemas() {
        let a = Fingerprint::of_name("a.B");
        assert_eq!(a, Fingerprint::of_name("a.B"));
        assert_ne!(a, Fingerprint::of_name("a.C"));
        assert_ne!(a, Fingerprint::of_schema("a.B", b"v2"));
        // Length prefix: the split between name and schema matters.
        assert_ne!(
            Fingerprint::of_schema("a.B", b"x"),
            Fingerprint::of_schema("a.Bx", b"")
        );
        assert_eq!(a.to_string().len(), 16);
        assert_eq!(Fingerprint::from_bytes(a.to_bytes()), a);
    }
}
