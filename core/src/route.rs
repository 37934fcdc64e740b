//! Routes (`TypeName@path`), hashed routes (`prefix#digest`) and route patterns.
//!
//! A route names one typed stream: the protobuf full name of the message type, an `@`, and a
//! dot-separated path (`example.Imu@robot.sensors.imu`). Every value of [`Route`],
//! [`HashedRoute`] and [`RoutePattern`] is valid by construction: the only ways to make one are
//! [`FromStr`] and constructors that check the same rules.
//!
//! Matching is segment-aware: in a pattern `*` stands for exactly one segment and `**` (last
//! segment only) for zero or more trailing segments, so `a.b.*` matches `a.b.c` but never
//! `a.bc` or `a.b.c.d`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

mod digest;

use digest::text_digest;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

/// Longest route or pattern text accepted, in bytes (type name, `@` and path together).
pub const MAX_ROUTE_LEN: usize = 1024;

/// Length of a hashed route's digest in bytes (SHA-256).
pub const DIGEST_LEN: usize = 32;

/// Domain separator hashed in front of the route text, so route digests cannot collide with
/// digests of other dndm data.
const DIGEST_DOMAIN: &[u8] = b"dndm-route-v1\0";

/// Why a route, hashed route or pattern could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteParseError {
    /// The input was empty.
    #[error("route is empty")]
    Empty,
    /// The input is longer than [`MAX_ROUTE_LEN`].
    #[error("route length {len} exceeds max route length {max}")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
        /// The limit, [`MAX_ROUTE_LEN`].
        max: usize,
    },
    /// There is no `@` between type name and path.
    #[error("route {input:?} has no '@' between type name and path")]
    MissingAt {
        /// The offending input.
        input: String,
    },
    /// The type name is not a protobuf full name (`package.Message`).
    #[error("type name {name:?} is invalid: {reason}")]
    InvalidTypeName {
        /// The offending type name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path after `@` is empty.
    #[error("route {input:?} has an empty path")]
    EmptyPath {
        /// The offending input.
        input: String,
    },
    /// Two dots in a row, or a leading or trailing dot.
    #[error("path {path:?} has an empty segment at index {index}")]
    EmptySegment {
        /// The offending path.
        path: String,
        /// Zero-based index of the empty segment.
        index: usize,
    },
    /// A segment holds a reserved character (`@ # *`), whitespace or a control character.
    #[error("path segment {segment:?} contains forbidden character {ch:?}")]
    ForbiddenChar {
        /// The offending segment.
        segment: String,
        /// The forbidden character.
        ch: char,
    },
    /// A wildcard (`*` or `**`) in a concrete route; only patterns may hold wildcards.
    #[error("route {input:?} contains wildcard segment {segment:?}; only patterns may")]
    WildcardInRoute {
        /// The offending input.
        input: String,
        /// The wildcard segment.
        segment: String,
    },
    /// A `*` mixed with other characters in one segment (`ab*`): wildcards are whole segments.
    #[error(
        "pattern segment {segment:?} mixes '*' with other characters; wildcards are whole segments"
    )]
    PartialWildcard {
        /// The offending segment.
        segment: String,
    },
    /// `**` anywhere but the last segment.
    #[error("'**' at segment index {index} of {path:?} must be the last segment")]
    DoubleStarNotLast {
        /// The offending path.
        path: String,
        /// Zero-based index of the misplaced `**`.
        index: usize,
    },
    /// A hashed route without a `#`.
    #[error("hashed route {input:?} has no '#' between prefix and digest")]
    MissingHash {
        /// The offending input.
        input: String,
    },
    /// A hashed route whose digest is not 32 bytes of URL-safe base64 without padding.
    #[error("hashed route digest {digest:?} is invalid: {reason}")]
    InvalidDigest {
        /// The offending digest text.
        digest: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Checks the length limit shared by every route form.
fn check_len(input: &str) -> Result<(), RouteParseError> {
    if input.is_empty() {
        return Err(RouteParseError::Empty);
    }
    if input.len() > MAX_ROUTE_LEN {
        return Err(RouteParseError::TooLong {
            len: input.len(),
            max: MAX_ROUTE_LEN,
        });
    }
    Ok(())
}

/// Checks a protobuf full name: identifiers `[A-Za-z_][A-Za-z0-9_]*` joined by dots.
fn check_type_name(name: &str) -> Result<(), RouteParseError> {
    let bad = |reason| {
        Err(RouteParseError::InvalidTypeName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    for ident in name.split('.') {
        let mut chars = ident.chars();
        match chars.next() {
            None => return bad("it has an empty component"),
            Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
                return bad("a component does not start with a letter or '_'");
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return bad("it has a character other than letters, digits, '_' and '.'");
        }
    }
    Ok(())
}

/// A character that may not appear inside a path segment.
fn forbidden(c: char) -> bool {
    matches!(c, '@' | '#' | '*' | '.') || c.is_whitespace() || c.is_control()
}

/// Checks one literal path segment.
fn check_literal(segment: &str) -> Result<(), RouteParseError> {
    match segment.chars().find(|&c| forbidden(c)) {
        Some(ch) => Err(RouteParseError::ForbiddenChar {
            segment: segment.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

/// Checks a concrete path (no wildcards). `input` is the whole text, for error messages.
fn check_path(path: &str, input: &str) -> Result<(), RouteParseError> {
    if path.is_empty() {
        return Err(RouteParseError::EmptyPath {
            input: input.to_owned(),
        });
    }
    for (index, segment) in path.split('.').enumerate() {
        if segment.is_empty() {
            return Err(RouteParseError::EmptySegment {
                path: path.to_owned(),
                index,
            });
        }
        if segment == "*" || segment == "**" {
            return Err(RouteParseError::WildcardInRoute {
                input: input.to_owned(),
                segment: segment.to_owned(),
            });
        }
        if segment.contains('*') {
            return Err(RouteParseError::WildcardInRoute {
                input: input.to_owned(),
                segment: segment.to_owned(),
            });
        }
        check_literal(segment)?;
    }
    Ok(())
}

/// Splits `TypeName@path`, checking the length and the type name.
fn split_at_sign(input: &str) -> Result<(&str, &str), RouteParseError> {
    check_len(input)?;
    let (type_name, path) = input
        .split_once('@')
        .ok_or_else(|| RouteParseError::MissingAt {
            input: input.to_owned(),
        })?;
    check_type_name(type_name)?;
    Ok((type_name, path))
}

/// A concrete route: `TypeName@path`.
///
/// Cheap to clone (one reference-counted string). Ordered and compared by its text; hashed by
/// a digest of its text taken once, when it is built (routes are looked up on every message).
#[derive(Clone)]
pub struct Route {
    text: Arc<str>,
    /// Byte index of the `@`; invariant: `text[at] == '@'`.
    at: usize,
    /// `text_digest(&text)`.
    digest: u64,
}

impl Route {
    /// Builds a route from a type name and a path, checking both.
    ///
    /// # Errors
    /// The same as [`Route::from_str`] on `"{type_name}@{path}"`.
    pub fn new(type_name: &str, path: &str) -> Result<Self, RouteParseError> {
        format!("{type_name}@{path}").parse()
    }

    /// The protobuf full name of the message type.
    pub fn type_name(&self) -> &str {
        &self.text[..self.at]
    }

    /// The dot-separated path.
    pub fn path(&self) -> &str {
        &self.text[self.at + 1..]
    }

    /// The path's segments, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        self.path().split('.')
    }

    /// The whole route text, `TypeName@path`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The route's digest: SHA-256 over a domain separator and the route text.
    pub fn digest(&self) -> [u8; DIGEST_LEN] {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_DOMAIN);
        hasher.update(self.text.as_bytes());
        hasher.finalize().into()
    }

    /// The hashed form of this route, keeping the first `prefix_segments` path segments readable
    /// (all of them if the path is shorter; `0` hides the whole path).
    pub fn hashed(&self, prefix_segments: usize) -> HashedRoute {
        let prefix = self
            .segments()
            .take(prefix_segments)
            .collect::<Vec<_>>()
            .join(".");
        HashedRoute {
            prefix: prefix.into(),
            digest: self.digest(),
        }
    }
}

impl FromStr for Route {
    type Err = RouteParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (type_name, path) = split_at_sign(input)?;
        check_path(path, input)?;
        Ok(Self {
            text: input.into(),
            at: type_name.len(),
            digest: text_digest(input),
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Route({})", self.text)
    }
}

/// A hashed route: `prefix#digest`.
///
/// The digest is SHA-256 of the plain route (see [`Route::digest`]) in URL-safe base64 without
/// padding; the prefix is a readable leading part of the path (possibly empty) used for routing.
/// Only someone who knows the exact type and path can produce or match the digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashedRoute {
    prefix: Arc<str>,
    digest: [u8; DIGEST_LEN],
}

impl HashedRoute {
    /// The readable path prefix (may be empty).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The raw digest bytes.
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// Whether `route` hashes to this digest and its path starts with this prefix.
    pub fn matches(&self, route: &Route) -> bool {
        route.digest() == self.digest
            && (self.prefix.is_empty()
                || route.path() == &*self.prefix
                || route
                    .path()
                    .strip_prefix(&*self.prefix)
                    .is_some_and(|r| r.starts_with('.')))
    }
}

impl FromStr for HashedRoute {
    type Err = RouteParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        check_len(input)?;
        let (prefix, digest_text) =
            input
                .split_once('#')
                .ok_or_else(|| RouteParseError::MissingHash {
                    input: input.to_owned(),
                })?;
        if !prefix.is_empty() {
            check_path(prefix, input)?;
        }
        let bad = |reason| RouteParseError::InvalidDigest {
            digest: digest_text.to_owned(),
            reason,
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(digest_text)
            .map_err(|_| bad("not URL-safe base64 without padding"))?;
        let digest: [u8; DIGEST_LEN] = bytes.try_into().map_err(|_| bad("not 32 bytes long"))?;
        // Reject non-canonical encodings (trailing bits set) so display(parse(s)) == s.
        if URL_SAFE_NO_PAD.encode(digest) != digest_text {
            return Err(bad("not in canonical encoding"));
        }
        Ok(Self {
            prefix: prefix.into(),
            digest,
        })
    }
}

impl fmt::Display for HashedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.prefix, URL_SAFE_NO_PAD.encode(self.digest))
    }
}

impl fmt::Debug for HashedRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashedRoute({self})")
    }
}

/// One segment of a [`RoutePattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    /// Matches this exact text.
    Literal(Box<str>),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more trailing segments (last position only).
    Rest,
}

/// A pattern over routes of one type: `TypeName@robot.*.imu`, `TypeName@robot.**`.
///
/// `*` matches exactly one segment; `**`, allowed only as the last segment, matches zero or more
/// trailing segments. Wildcards are whole segments. A pattern without wildcards matches exactly
/// one route.
#[derive(Clone)]
pub struct RoutePattern {
    text: Arc<str>,
    /// Byte index of the `@`; invariant: `text[at] == '@'`.
    at: usize,
    segments: Arc<[Segment]>,
}

impl RoutePattern {
    /// The protobuf full name of the message type this pattern selects.
    pub fn type_name(&self) -> &str {
        &self.text[..self.at]
    }

    /// The path part, wildcards included.
    pub fn path(&self) -> &str {
        &self.text[self.at + 1..]
    }

    /// The whole pattern text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no wildcard, i.e. matches exactly one route.
    pub fn is_exact(&self) -> bool {
        self.segments
            .iter()
            .all(|s| matches!(s, Segment::Literal(_)))
    }

    /// The route this pattern matches if it has no wildcard.
    pub fn as_route(&self) -> Option<Route> {
        self.is_exact().then(|| Route {
            text: self.text.clone(),
            at: self.at,
            digest: text_digest(&self.text),
        })
    }

    /// The literal path segments before the first wildcard, joined by dots (the part a
    /// publisher's prefix announcement must cover).
    pub fn literal_prefix(&self) -> String {
        self.segments
            .iter()
            .map_while(|s| match s {
                Segment::Literal(text) => Some(&**text),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    /// Whether `route` has this pattern's type name and its path matches segment by segment.
    pub fn matches(&self, route: &Route) -> bool {
        self.type_name() == route.type_name() && self.matches_path(route.path())
    }

    /// Whether a path (without type name) matches this pattern's path, segment by segment.
    pub fn matches_path(&self, path: &str) -> bool {
        let mut parts = path.split('.');
        for segment in self.segments.iter() {
            match segment {
                Segment::Rest => return true,
                Segment::One => {
                    if parts.next().is_none() {
                        return false;
                    }
                }
                Segment::Literal(text) => {
                    if parts.next() != Some(&**text) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}

impl FromStr for RoutePattern {
    type Err = RouteParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (type_name, path) = split_at_sign(input)?;
        if path.is_empty() {
            return Err(RouteParseError::EmptyPath {
                input: input.to_owned(),
            });
        }
        let count = path.split('.').count();
        let mut segments = Vec::with_capacity(count);
        for (index, text) in path.split('.').enumerate() {
            let segment = match text {
                "" => {
                    return Err(RouteParseError::EmptySegment {
                        path: path.to_owned(),
                        index,
                    });
                }
                "*" => Segment::One,
                "**" if index + 1 == count => Segment::Rest,
                "**" => {
                    return Err(RouteParseError::DoubleStarNotLast {
                        path: path.to_owned(),
                        index,
                    });
                }
                _ if text.contains('*') => {
                    return Err(RouteParseError::PartialWildcard {
                        segment: text.to_owned(),
                    });
                }
                _ => {
                    check_literal(text)?;
                    Segment::Literal(text.into())
                }
            };
            segments.push(segment);
        }
        Ok(Self {
            text: input.into(),
            at: type_name.len(),
            segments: segments.into(),
        })
    }
}

impl From<Route> for RoutePattern {
    fn from(route: Route) -> Self {
        let segments = route
            .segments()
            .map(|s| Segment::Literal(s.into()))
            .collect();
        Self {
            text: route.text,
            at: route.at,
            segments,
        }
    }
}

impl PartialEq for RoutePattern {
    fn eq(&self, other: &Self) -> bool {
        // `segments` is derived from `text`, so comparing the text is enough.
        self.text == other.text
    }
}

impl Eq for RoutePattern {}

impl std::hash::Hash for RoutePattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Display for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoutePattern({})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn route(s: &str) -> Route {
        s.parse().unwrap()
    }

    fn pattern(s: &str) -> RoutePattern {
        s.parse().unwrap()
    }

    #[test]
    fn parses_route_parts() {
        let r = route("example.Imu@robot.sensors.imu");
        assert_eq!(r.type_name(), "example.Imu");
        assert_eq!(r.path(), "robot.sensors.imu");
        assert_eq!(
            r.segments().collect::<Vec<_>>(),
            ["robot", "sensors", "imu"]
        );
        assert_eq!(r.to_string(), "example.Imu@robot.sensors.imu");
        assert_eq!(Route::new("example.Imu", "robot.sensors.imu").unwrap(), r);
    }

    #[test]
    fn rejects_bad_routes_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            ("", "route is empty"),
            ("no-at-sign", "\"no-at-sign\" has no '@'"),
            ("@a.b", "type name \"\" is invalid"),
            ("1abc@a", "type name \"1abc\" is invalid"),
            ("a..b@x", "type name \"a..b\" is invalid"),
            ("a-b@x", "type name \"a-b\" is invalid"),
            ("T@", "has an empty path"),
            ("T@a..b", "path \"a..b\" has an empty segment at index 1"),
            ("T@.a", "empty segment at index 0"),
            ("T@a.", "empty segment at index 1"),
            ("T@a b", "segment \"a b\" contains forbidden character ' '"),
            ("T@a#b", "forbidden character '#'"),
            ("T@a@b", "forbidden character '@'"),
            ("T@a.*", "contains wildcard segment \"*\""),
            ("T@a.**", "contains wildcard segment \"**\""),
            ("T@a.b*", "contains wildcard segment \"b*\""),
        ];
        for (input, expected) in cases {
            let err = input.parse::<Route>().unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{input:?}: {err:?} lacks {expected:?}"
            );
        }
        let long = format!("T@{}", "a".repeat(MAX_ROUTE_LEN));
        assert_eq!(
            long.parse::<Route>().unwrap_err(),
            RouteParseError::TooLong {
                len: MAX_ROUTE_LEN + 2,
                max: MAX_ROUTE_LEN
            }
        );
    }

    #[test]
    fn rejects_bad_patterns_naming_the_problem() {
        let cases: &[(&str, &str)] = &[
            (
                "T@a.**.b",
                "'**' at segment index 1 of \"a.**.b\" must be the last segment",
            ),
            ("T@a.b*", "pattern segment \"b*\" mixes '*'"),
            ("T@***", "pattern segment \"***\" mixes '*'"),
            ("T@a..*", "empty segment at index 1"),
            ("T@", "empty path"),
            ("T", "has no '@'"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<RoutePattern>().unwrap_err().to_string();
            assert!(
                err.contains(expected),
                "{input:?}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        let p = pattern("T@a.b.*");
        assert!(p.matches(&route("T@a.b.c")));
        assert!(!p.matches(&route("T@a.b")));
        assert!(!p.matches(&route("T@a.b.c.d")));
        assert!(!p.matches(&route("T@a.bc")), "no string-prefix false match");
        assert!(
            !p.matches(&route("T@a.bc.d")),
            "no string-prefix false match"
        );
        assert!(!p.matches(&route("U@a.b.c")), "type name must be equal");
        assert!(pattern("T@*.imu").matches(&route("T@x.imu")));
        assert!(!pattern("T@*.imu").matches(&route("T@x.y.imu")));
    }

    #[test]
    fn double_star_matches_any_suffix_including_none() {
        let p = pattern("T@a.b.**");
        assert!(p.matches(&route("T@a.b")));
        assert!(p.matches(&route("T@a.b.c")));
        assert!(p.matches(&route("T@a.b.c.d.e")));
        assert!(!p.matches(&route("T@a.bc")));
        assert!(!p.matches(&route("T@a")));
        assert!(pattern("T@**").matches(&route("T@anything.at.all")));
        assert_eq!(p.literal_prefix(), "a.b");
    }

    #[test]
    fn exact_pattern_round_trips_to_route() {
        let p = pattern("T@a.b");
        assert!(p.is_exact());
        assert_eq!(p.as_route(), Some(route("T@a.b")));
        assert_eq!(RoutePattern::from(route("T@a.b")), p);
        assert!(pattern("T@a.*").as_route().is_none());
    }

    #[test]
    fn hashed_routes_parse_display_and_match() {
        let r = route("example.Imu@robot.sensors.imu");
        let h = r.hashed(1);
        assert_eq!(h.prefix(), "robot");
        let text = h.to_string();
        assert!(text.starts_with("robot#"), "{text}");
        assert_eq!(text.len(), "robot#".len() + 43);
        let parsed: HashedRoute = text.parse().unwrap();
        assert_eq!(parsed, h);
        assert!(parsed.matches(&r));
        assert!(!parsed.matches(&route("example.Imu@robot.sensors.gps")));
        assert_eq!(r.hashed(0).to_string().chars().next(), Some('#'));
        assert_eq!(r.hashed(9).prefix(), "robot.sensors.imu");

        let err = "robot#abc".parse::<HashedRoute>().unwrap_err().to_string();
        assert!(
            err.contains("\"abc\" is invalid: not 32 bytes long"),
            "{err}"
        );
        let err = "robot".parse::<HashedRoute>().unwrap_err().to_string();
        assert!(err.contains("no '#'"), "{err}");
        let err = "robot#!!".parse::<HashedRoute>().unwrap_err().to_string();
        assert!(err.contains("not URL-safe base64"), "{err}");
    }

    fn arb_segment() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_\\-]{1,8}"
    }

    fn arb_type_name() -> impl Strategy<Value = String> {
        prop::collection::vec("[a-zA-Z_][a-zA-Z0-9_]{0,6}", 1..4).prop_map(|v| v.join("."))
    }

    fn arb_route() -> impl Strategy<Value = Route> {
        (arb_type_name(), prop::collection::vec(arb_segment(), 1..6))
            .prop_map(|(t, p)| Route::new(&t, &p.join(".")).unwrap())
    }

    proptest! {
        #[test]
        fn route_parse_display_round_trip(r in arb_route()) {
            prop_assert_eq!(r.to_string().parse::<Route>().unwrap(), r);
        }

        #[test]
        fn hashed_route_round_trip(r in arb_route(), n in 0usize..8) {
            let h = r.hashed(n);
            prop_assert_eq!(h.to_string().parse::<HashedRoute>().unwrap(), h.clone());
            prop_assert!(h.matches(&r));
        }

        #[test]
        fn pattern_round_trip(r in arb_route(), stars in prop::collection::vec(any::<bool>(), 6), rest: bool) {
            let mut segs: Vec<String> = r.segments()
                .zip(stars)
                .map(|(s, star)| if star { "*".to_owned() } else { s.to_owned() })
                .collect();
            if rest { segs.push("**".to_owned()); }
            let text = format!("{}@{}", r.type_name(), segs.join("."));
            let p: RoutePattern = text.parse().unwrap();
            prop_assert_eq!(p.to_string().parse::<RoutePattern>().unwrap(), p.clone());
            // Replacing segments of a route by `*` (and adding `**`) still matches that route.
            prop_assert!(p.matches(&r));
        }

        #[test]
        fn double_star_matches_every_extension(r in arb_route(), extra in prop::collection::vec(arb_segment(), 0..4)) {
            let p: RoutePattern = format!("{}@{}.**", r.type_name(), r.path()).parse().unwrap();
            let longer = if extra.is_empty() { r.path().to_owned() } else { format!("{}.{}", r.path(), extra.join(".")) };
            prop_assert!(p.matches(&Route::new(r.type_name(), &longer).unwrap()));
        }

        #[test]
        fn star_never_matches_other_segment_counts(r in arb_route(), extra in prop::collection::vec(arb_segment(), 1..3)) {
            let stars = vec!["*"; r.segments().count()].join(".");
            let p: RoutePattern = format!("{}@{}", r.type_name(), stars).parse().unwrap();
            prop_assert!(p.matches(&r));
            let longer = format!("{}.{}", r.path(), extra.join("."));
            prop_assert!(!p.matches(&Route::new(r.type_name(), &longer).unwrap()));
        }

        #[test]
        fn literal_pattern_never_prefix_matches(r in arb_route(), tail in "[a-z]{1,4}") {
            // `path + tail` glued to the last segment must not match the literal pattern.
            let p = RoutePattern::from(r.clone());
            let glued = Route::new(r.type_name(), &format!("{}{}", r.path(), tail)).unwrap();
            prop_assert!(!p.matches(&glued));
        }

        #[test]
        fn parsing_arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Route>();
            let _ = s.parse::<RoutePattern>();
            let _ = s.parse::<HashedRoute>();
        }
    }
}
