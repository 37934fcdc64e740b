//! Kademlia provider keys for routes, so subscribers find publishers beyond their neighbours.
//!
//! A publisher of `T@a.b.c` provides the keys of `T@`, `T@a`, `T@a.b` and `T@a.b.c`; a
//! subscriber looks up the key of its pattern's literal prefix: `T@a.b.c` for an exact route,
//! `T@a` for `T@a.*.c` or `T@a.**`, and `T@` for `T@**`. Every publisher a pattern can match
//! provides that key.
//!
//! A key is not the text but its BLAKE3 keyed hash under the mesh's [`RouteKey`], so the DHT
//! stores 32 opaque bytes per route and prefix. Under the public [`RouteKey::DEFAULT`] anyone
//! can hash a name they guess and confirm it; under a private key (`mesh.route_key`) nobody
//! without the key can tell which routes the records stand for.

use std::fmt;

use dndm_core::{Route, RoutePattern};
use libp2p::kad::RecordKey;

/// The BLAKE3 key-derivation context that turns a `mesh.route_key` secret into a [`RouteKey`].
const DERIVE_CONTEXT: &str = "dndm 2026-12 mesh route key v1";

/// The mesh-wide key of the hashes that stand for routes in DHT provider records. Every node
/// of a mesh needs the same key to find the others' routes.
///
/// `Debug` does not show a private key.
#[derive(Clone, PartialEq, Eq)]
pub struct RouteKey([u8; 32]);

impl RouteKey {
    /// The public default key (the text `dndm public mesh route key v1.0.`): meshes that keep
    /// it find each other's routes, and anyone can confirm a route name they guess.
    pub const DEFAULT: RouteKey = RouteKey(*b"dndm public mesh route key v1.0.");

    /// The key derived from a secret shared by the nodes of a private mesh (BLAKE3
    /// `derive_key`; use at least 16 random bytes, e.g. `openssl rand -hex 32`).
    pub fn from_secret(secret: &str) -> Self {
        Self(blake3::derive_key(DERIVE_CONTEXT, secret.as_bytes()))
    }

    /// The hash that stands for `route` in the DHT: the key of the provider record a
    /// publisher of `route` announces for the full route.
    pub fn route_hash(&self, route: &Route) -> [u8; 32] {
        self.hash(route.type_name(), route.path())
    }

    /// The keys a publisher of `route` provides: the type alone, then each path prefix.
    pub(crate) fn provided(&self, route: &Route) -> Vec<RecordKey> {
        let mut keys = vec![self.key(route.type_name(), "")];
        let mut path = String::new();
        for segment in route.segments() {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(segment);
            keys.push(self.key(route.type_name(), &path));
        }
        keys
    }

    /// The key a subscriber of `pattern` looks up.
    pub(crate) fn wanted(&self, pattern: &RoutePattern) -> RecordKey {
        self.key(pattern.type_name(), &pattern.literal_prefix())
    }

    /// `T@path` under this key. A type name holds no `@`, so the input is unambiguous.
    fn hash(&self, type_name: &str, path: &str) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(type_name.as_bytes());
        hasher.update(b"@");
        hasher.update(path.as_bytes());
        *hasher.finalize().as_bytes()
    }

    fn key(&self, type_name: &str, path: &str) -> RecordKey {
        RecordKey::new(&self.hash(type_name, path))
    }
}

impl Default for RouteKey {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::DEFAULT {
            f.write_str("RouteKey(default)")
        } else {
            f.write_str("RouteKey(<private>)")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn route(s: &str) -> Route {
        s.parse().unwrap()
    }

    fn pattern(s: &str) -> RoutePattern {
        s.parse().unwrap()
    }

    #[test]
    fn every_pattern_that_matches_a_route_looks_up_a_key_its_publisher_provides() {
        for key in [
            RouteKey::DEFAULT,
            RouteKey::from_secret("a private mesh secret"),
        ] {
            let publisher = route("test.Reading@robot.arm.imu");
            let provided = key.provided(&publisher);
            assert_eq!(provided.len(), 4);
            for p in [
                "test.Reading@robot.arm.imu",
                "test.Reading@robot.*.imu",
                "test.Reading@robot.arm.*",
                "test.Reading@robot.**",
                "test.Reading@*.arm.imu",
                "test.Reading@**",
            ] {
                let p = pattern(p);
                assert!(p.matches(&publisher), "{p}");
                assert!(
                    provided.contains(&key.wanted(&p)),
                    "{p} looks up a provided key"
                );
            }
        }
    }

    #[test]
    fn keys_do_not_cross_types_or_prefix_strings() {
        let key = RouteKey::DEFAULT;
        let provided = key.provided(&route("test.Reading@robot.arm"));
        assert!(!provided.contains(&key.wanted(&pattern("test.Other@robot.arm"))));
        assert!(!provided.contains(&key.wanted(&pattern("test.Reading@robot.ar"))));
        assert!(!provided.contains(&key.wanted(&pattern("test.Reading@robot.arm.x"))));
    }

    #[test]
    fn keys_are_keyed_hashes_not_route_text() {
        let r = route("test.Reading@robot.arm");
        let private = RouteKey::from_secret("a private mesh secret");
        let public = RouteKey::DEFAULT.provided(&r);
        let hidden = private.provided(&r);
        for (a, b) in public.iter().zip(&hidden) {
            assert_ne!(a, b, "another key, other hashes");
            for k in [a, b] {
                assert_eq!(k.as_ref().len(), 32);
                let text = String::from_utf8_lossy(k.as_ref());
                assert!(!text.contains("robot") && !text.contains("Reading"));
            }
        }
        assert_eq!(
            public.last().unwrap().as_ref(),
            RouteKey::DEFAULT.route_hash(&r)
        );
        assert_eq!(hidden.last().unwrap().as_ref(), private.route_hash(&r));
        // The public key is what it says: the documented text.
        assert_eq!(
            RouteKey::DEFAULT.route_hash(&r),
            *blake3::keyed_hash(
                b"dndm public mesh route key v1.0.",
                b"test.Reading@robot.arm"
            )
            .as_bytes()
        );
        assert_eq!(format!("{private:?}"), "RouteKey(<private>)");
        assert_eq!(format!("{:?}", RouteKey::default()), "RouteKey(default)");
    }
}
