//! The message bound and type fingerprints.
//!
//! Every type carried by dndm is a prost message with a protobuf full name ([`prost::Name`]).
//! The full name is the `TypeName` of its routes; the [`Fingerprint`] tells two schemas that
//! share a name apart, so peers with incompatible definitions are refused instead of linked.

use std::fmt;

use sha2::{Digest as _, Sha256};

/// Domain separator for fingerprints.
const FINGERPRINT_DOMAIN: &[u8] = b"dndm-fingerprint-v1\0";

/// A message type that dndm can route: a prost message with a protobuf full name.
///
/// Implement it with one line; override [`Message::fingerprint`] when the schema changes
/// incompatibly under the same name (bump a version string, or hash the file descriptor):
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
/// assert_eq!(Imu::fingerprint(), dndm_core::Fingerprint::of_name("example.Imu"));
/// ```
pub trait Message: prost::Message + prost::Name + Default + Send + Sync + 'static {
    /// The route type name: the protobuf full name (`package.Message`).
    fn type_name() -> String {
        Self::full_name()
    }

    /// The schema fingerprint advertised with every intent and interest of this type.
    /// The default hashes the full name only.
    fn fingerprint() -> Fingerprint {
        Fingerprint::of_name(&Self::full_name())
    }
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
