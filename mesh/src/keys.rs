//! Kademlia provider keys for routes, so subscribers find publishers beyond their neighbours.
//!
//! A publisher of `T@a.b.c` provides `T@`, `T@a`, `T@a.b` and `T@a.b.c`; a subscriber looks up
//! the key of its pattern's literal prefix: `T@a.b.c` for an exact route, `T@a` for `T@a.*.c`
//! or `T@a.**`, and `T@` for `T@**`. Every publisher a pattern can match provides that key.

use dndm_core::{Route, RoutePattern};
use libp2p::kad::RecordKey;

/// Keys are namespaced so they cannot collide with other applications' records.
const NAMESPACE: &str = "/dndm/route/";

fn key(type_name: &str, path: &str) -> RecordKey {
    RecordKey::new(&format!("{NAMESPACE}{type_name}@{path}"))
}

/// The keys a publisher of `route` provides: the type alone, then each path prefix.
pub(crate) fn provided(route: &Route) -> Vec<RecordKey> {
    let mut keys = vec![key(route.type_name(), "")];
    let mut path = String::new();
    for segment in route.segments() {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(segment);
        keys.push(key(route.type_name(), &path));
    }
    keys
}

/// The key a subscriber of `pattern` looks up.
pub(crate) fn wanted(pattern: &RoutePattern) -> RecordKey {
    key(pattern.type_name(), &pattern.literal_prefix())
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
        let publisher = route("test.Reading@robot.arm.imu");
        let provided = provided(&publisher);
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
                provided.contains(&wanted(&p)),
                "{p} looks up a provided key"
            );
        }
    }

    #[test]
    fn keys_do_not_cross_types_or_prefix_strings() {
        let provided = provided(&route("test.Reading@robot.arm"));
        assert!(!provided.contains(&wanted(&pattern("test.Other@robot.arm"))));
        assert!(!provided.contains(&wanted(&pattern("test.Reading@robot.ar"))));
        assert!(!provided.contains(&wanted(&pattern("test.Reading@robot.arm.x"))));
    }
}
