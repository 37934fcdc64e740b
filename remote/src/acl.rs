//! Per-route access control for remote links: which peers may publish on which routes,
//! subscribe with which patterns and call which services.
//!
//! An [`Acl`] is either unrestricted ([`Acl::allow_all`], the default) or a list of
//! [`AclRule`]s. A rule applies to some peers ([`PeerMatch`]) and grants them publish and
//! subscribe rights by [`RoutePattern`]. What no rule grants is denied, so an ACL with rules
//! is an allow-list; [`Acl::deny_all`] is one with no rules at all.
//!
//! - A peer may **publish** on a route (declare an intent) if some rule that applies to the
//!   peer has a publish pattern that [matches](RoutePattern::matches) the route.
//! - A peer may **subscribe** with a pattern (declare an interest) if some rule that applies to
//!   the peer has a subscribe pattern that [`covers`] it: every route the interest could ever
//!   match is one the rule allows. A broad interest is never granted because some of its
//!   routes happen to be allowed; the peer must ask for what it may see.
//!
//! - A peer may **call** a service if some rule that applies to the peer has a call pattern
//!   that matches the service's request route.
//!
//! The [session](crate::session::Session) checks every declaration of the peer, in its hello
//! and in later adverts, and ends the connection with
//! [`LinkFailure::Denied`](crate::session::LinkFailure::Denied) on the first denied one. A
//! request to a service the peer may not call is answered with an error and counted.
//!
//! The ACL also limits what a peer **learns**: the hello and adverts declare to a peer only our
//! intents it may subscribe to ([`Acl::may_see`]), our interests it may publish to
//! ([`Acl::may_feed`]) and our services it may call.

use std::collections::HashSet;

use dndm_core::{PeerId, Route, RoutePattern};

/// Which peers an [`AclRule`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMatch {
    /// Every peer.
    Any,
    /// Only these peers.
    Only(HashSet<PeerId>),
}

impl PeerMatch {
    /// Whether `peer` is one of the peers this matches.
    pub fn matches(&self, peer: &PeerId) -> bool {
        match self {
            Self::Any => true,
            Self::Only(peers) => peers.contains(peer),
        }
    }
}

/// One grant: the peers it applies to, the routes they may publish on and the patterns they may
/// subscribe with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    /// The peers this rule applies to.
    pub peers: PeerMatch,
    /// A route matched by one of these patterns may be published on.
    pub publish: Vec<RoutePattern>,
    /// An interest pattern covered (see [`covers`]) by one of these may be subscribed with.
    pub subscribe: Vec<RoutePattern>,
    /// A service whose request route is matched by one of these may be called.
    pub call: Vec<RoutePattern>,
}

impl AclRule {
    /// A rule for every peer that grants nothing yet.
    pub fn any_peer() -> Self {
        Self {
            peers: PeerMatch::Any,
            publish: Vec::new(),
            subscribe: Vec::new(),
            call: Vec::new(),
        }
    }

    /// A rule for only these peers that grants nothing yet.
    pub fn for_peers(peers: impl IntoIterator<Item = PeerId>) -> Self {
        Self {
            peers: PeerMatch::Only(peers.into_iter().collect()),
            publish: Vec::new(),
            subscribe: Vec::new(),
            call: Vec::new(),
        }
    }

    /// Also grants publishing on routes matched by `pattern`.
    #[must_use]
    pub fn publish(mut self, pattern: RoutePattern) -> Self {
        self.publish.push(pattern);
        self
    }

    /// Also grants subscribing with patterns covered by `pattern`.
    #[must_use]
    pub fn subscribe(mut self, pattern: RoutePattern) -> Self {
        self.subscribe.push(pattern);
        self
    }

    /// Also grants calling services whose request route `pattern` matches.
    #[must_use]
    pub fn call(mut self, pattern: RoutePattern) -> Self {
        self.call.push(pattern);
        self
    }

    /// Whether this rule applies to `peer`.
    pub fn applies_to(&self, peer: &PeerId) -> bool {
        self.peers.matches(peer)
    }
}

/// Access control for the declarations of remote peers. See the module docs.
///
/// [`Acl::default`] is [`Acl::allow_all`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    /// `None`: no restriction. `Some`: only what one of the rules grants.
    rules: Option<Vec<AclRule>>,
}

impl Acl {
    /// No restriction: every peer may publish and subscribe on every route (the default).
    pub fn allow_all() -> Self {
        Self { rules: None }
    }

    /// Nothing is allowed until rules are added with [`Acl::with_rule`].
    pub fn deny_all() -> Self {
        Self {
            rules: Some(Vec::new()),
        }
    }

    /// Only what one of `rules` grants is allowed (nothing, if `rules` is empty).
    pub fn from_rules(rules: impl IntoIterator<Item = AclRule>) -> Self {
        Self {
            rules: Some(rules.into_iter().collect()),
        }
    }

    /// Adds a rule. On an [`Acl::allow_all`] this turns it into an allow-list of just this rule.
    #[must_use]
    pub fn with_rule(mut self, rule: AclRule) -> Self {
        self.rules.get_or_insert_with(Vec::new).push(rule);
        self
    }

    /// Whether this ACL restricts nothing.
    pub fn is_allow_all(&self) -> bool {
        self.rules.is_none()
    }

    /// The rules (empty for [`Acl::allow_all`], which needs none).
    pub fn rules(&self) -> &[AclRule] {
        self.rules.as_deref().unwrap_or_default()
    }

    /// Whether `peer` may publish on `route`: some rule that applies to it has a publish
    /// pattern matching the route.
    pub fn may_publish(&self, peer: &PeerId, route: &Route) -> bool {
        self.granted(peer, |rule| rule.publish.iter().any(|p| p.matches(route)))
    }

    /// Whether `peer` may subscribe with `pattern`: some rule that applies to it has a
    /// subscribe pattern that [`covers`] it.
    pub fn may_subscribe(&self, peer: &PeerId, pattern: &RoutePattern) -> bool {
        self.granted(peer, |rule| {
            rule.subscribe
                .iter()
                .any(|allowed| covers(allowed, pattern))
        })
    }

    /// Whether `peer` may call the service whose request route is `route`.
    pub fn may_call(&self, peer: &PeerId, route: &Route) -> bool {
        self.granted(peer, |rule| rule.call.iter().any(|p| p.matches(route)))
    }

    /// Whether `peer` may learn of our intent on `route`: it may subscribe to that route.
    pub fn may_see(&self, peer: &PeerId, route: &Route) -> bool {
        self.granted(peer, |rule| rule.subscribe.iter().any(|p| p.matches(route)))
    }

    /// Whether `peer` may learn of our interest `pattern`: it may publish on some route the
    /// pattern matches.
    pub fn may_feed(&self, peer: &PeerId, pattern: &RoutePattern) -> bool {
        self.granted(peer, |rule| {
            rule.publish
                .iter()
                .any(|allowed| intersects(allowed, pattern))
        })
    }

    /// Whether some rule that applies to `peer` satisfies `grant` (always, without rules).
    fn granted(&self, peer: &PeerId, grant: impl Fn(&AclRule) -> bool) -> bool {
        match &self.rules {
            None => true,
            Some(rules) => rules.iter().any(|r| r.applies_to(peer) && grant(r)),
        }
    }
}

/// One segment of a pattern's path, as [`covers`] compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    /// Exactly this text.
    Literal(&'a str),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more trailing segments (only ever last; the pattern parser ensures it).
    Rest,
}

impl<'a> Segment<'a> {
    fn parse(text: &'a str) -> Self {
        match text {
            "*" => Self::One,
            "**" => Self::Rest,
            literal => Self::Literal(literal),
        }
    }
}

/// Whether `rule` covers `pattern`: both have the same type name and every route `pattern` can
/// match is matched by `rule`.
///
/// The check walks both paths segment by segment:
///
/// - a `**` in the rule covers whatever is left of the pattern (`T@robot.**` covers
///   `T@robot.*.imu`, `T@robot.arm`, `T@robot.**` and `T@robot`);
/// - a `*` in the rule covers one `*` or one literal segment of the pattern (`T@robot.*` covers
///   `T@robot.arm` and `T@robot.*`);
/// - a literal in the rule covers only the same literal;
/// - a `**` in the pattern is covered only by a `**` in the rule at the same position
///   (`T@robot.*` does not cover `T@robot.**`);
/// - otherwise both paths must end at the same segment.
///
/// It is conservative: when it says yes, the pattern can never match a route the rule does not.
/// It may say no where the two happen to select the same routes only because a route's path is
/// never empty, e.g. rule `T@*.**` and pattern `T@**`; write the rule as `T@**` instead.
pub fn covers(rule: &RoutePattern, pattern: &RoutePattern) -> bool {
    if rule.type_name() != pattern.type_name() {
        return false;
    }
    let mut rule_segments = rule.path().split('.').map(Segment::parse);
    let mut pattern_segments = pattern.path().split('.').map(Segment::parse);
    loop {
        match (rule_segments.next(), pattern_segments.next()) {
            (Some(Segment::Rest), _) | (None, None) => return true,
            (_, Some(Segment::Rest)) | (None, Some(_)) | (Some(_), None) => return false,
            (Some(Segment::One), Some(_)) => {}
            (Some(Segment::Literal(r)), Some(Segment::Literal(p))) if r == p => {}
            (Some(Segment::Literal(_)), Some(_)) => return false,
        }
    }
}

/// Whether some route matches both `a` and `b`. Like [`covers`], it errs on the side of yes
/// only where a route's path would have to be empty.
pub fn intersects(a: &RoutePattern, b: &RoutePattern) -> bool {
    if a.type_name() != b.type_name() {
        return false;
    }
    let mut a_segments = a.path().split('.').map(Segment::parse);
    let mut b_segments = b.path().split('.').map(Segment::parse);
    loop {
        match (a_segments.next(), b_segments.next()) {
            (Some(Segment::Rest), _) | (_, Some(Segment::Rest)) | (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Segment::One), Some(_)) | (Some(_), Some(Segment::One)) => {}
            (Some(Segment::Literal(x)), Some(Segment::Literal(y))) if x == y => {}
            (Some(Segment::Literal(_)), Some(Segment::Literal(_))) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dndm_core::Keypair;
    use proptest::prelude::*;

    fn pattern(s: &str) -> RoutePattern {
        s.parse().unwrap()
    }

    fn route(s: &str) -> Route {
        s.parse().unwrap()
    }

    fn peer(seed: u8) -> PeerId {
        Keypair::from_seed([seed; 32]).peer_id()
    }

    #[test]
    fn covers_examples() {
        let yes = [
            ("T@robot.**", "T@robot.*.imu"),
            ("T@robot.**", "T@robot.arm"),
            ("T@robot.**", "T@robot.**"),
            ("T@robot.**", "T@robot"),
            ("T@robot.**", "T@robot.*"),
            ("T@robot.*", "T@robot.arm"),
            ("T@robot.*", "T@robot.*"),
            ("T@*.imu", "T@robot.imu"),
            ("T@**", "T@**"),
            ("T@**", "T@a.*.b.**"),
            ("T@a.b", "T@a.b"),
        ];
        for (rule, p) in yes {
            assert!(covers(&pattern(rule), &pattern(p)), "{rule} covers {p}");
        }
        let no = [
            ("T@robot.*", "T@robot.**"),
            ("T@robot.**", "T@**"),
            ("T@robot.**", "T@robots"),
            ("T@robot.**", "T@*.arm"),
            ("T@robot.arm", "T@robot.*"),
            ("T@robot.arm", "T@robot.arm.x"),
            ("T@robot.arm.x", "T@robot.arm"),
            ("T@robot.*", "T@robot"),
            ("T@robot.*", "T@robot.arm.x"),
            ("T@robot.**", "U@robot.arm"),
            // Conservative: equivalent only because paths are never empty.
            ("T@*.**", "T@**"),
        ];
        for (rule, p) in no {
            assert!(
                !covers(&pattern(rule), &pattern(p)),
                "{rule} does not cover {p}"
            );
        }
    }

    #[test]
    fn allow_all_allows_everything_and_deny_all_nothing() {
        let (p, r, i) = (peer(1), route("T@a.b"), pattern("T@**"));
        let all = Acl::default();
        assert!(all.is_allow_all());
        assert!(all.may_publish(&p, &r) && all.may_subscribe(&p, &i));
        let none = Acl::deny_all();
        assert!(!none.is_allow_all());
        assert!(!none.may_publish(&p, &r) && !none.may_subscribe(&p, &i));
        assert_eq!(Acl::from_rules([]), none);
    }

    #[test]
    fn rules_grant_publish_and_subscribe_separately() {
        let acl = Acl::allow_all().with_rule(
            AclRule::any_peer()
                .publish(pattern("T@robot.**"))
                .subscribe(pattern("T@robot.*")),
        );
        let p = peer(1);
        assert!(acl.may_publish(&p, &route("T@robot.arm.joint")));
        assert!(!acl.may_publish(&p, &route("T@secret.x")));
        assert!(!acl.may_publish(&p, &route("U@robot.arm")));
        assert!(acl.may_subscribe(&p, &pattern("T@robot.arm")));
        assert!(acl.may_subscribe(&p, &pattern("T@robot.*")));
        assert!(!acl.may_subscribe(&p, &pattern("T@robot.**")));
        assert!(!acl.may_subscribe(&p, &pattern("T@**")));
    }

    #[test]
    fn peer_scoped_rules_apply_only_to_their_peers() {
        let acl = Acl::from_rules([
            AclRule::any_peer().publish(pattern("T@public.**")),
            AclRule::for_peers([peer(1)])
                .publish(pattern("T@secret.**"))
                .subscribe(pattern("T@secret.**")),
        ]);
        let secret = route("T@secret.x");
        assert!(acl.may_publish(&peer(1), &secret));
        assert!(!acl.may_publish(&peer(2), &secret));
        assert!(acl.may_publish(&peer(2), &route("T@public.y")));
        assert!(acl.may_subscribe(&peer(1), &pattern("T@secret.*")));
        assert!(!acl.may_subscribe(&peer(2), &pattern("T@secret.*")));
        assert_eq!(acl.rules().len(), 2);
    }

    #[test]
    fn calls_and_visibility_follow_the_rules() {
        let acl = Acl::from_rules([AclRule::any_peer()
            .publish(pattern("T@robot.*"))
            .subscribe(pattern("T@public.**"))
            .call(pattern("Req@admin.status"))]);
        let p = peer(1);
        assert!(acl.may_call(&p, &route("Req@admin.status")));
        assert!(!acl.may_call(&p, &route("Req@admin.reboot")));
        assert!(acl.may_see(&p, &route("T@public.news")));
        assert!(!acl.may_see(&p, &route("T@vault.keys")));
        assert!(acl.may_feed(&p, &pattern("T@robot.arm")));
        assert!(acl.may_feed(&p, &pattern("T@**")));
        assert!(!acl.may_feed(&p, &pattern("T@vault.*")));
        assert!(!acl.may_feed(&p, &pattern("U@robot.arm")));
        let none = Acl::deny_all();
        assert!(!none.may_call(&p, &route("Req@admin.status")));
        assert!(!none.may_see(&p, &route("T@public.news")));
        assert!(Acl::allow_all().may_call(&p, &route("Req@admin.reboot")));
    }

    /// One pattern segment from a small alphabet, so rules and patterns often line up.
    fn arb_segment() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[ab]",
            2 => Just("*".to_owned()),
        ]
    }

    /// A pattern over type `T` or `U`: 1..4 segments, optionally ending in `**`.
    fn arb_pattern() -> impl Strategy<Value = RoutePattern> {
        (
            prop_oneof![Just("T"), Just("U")],
            prop::collection::vec(arb_segment(), 0..4),
            any::<bool>(),
        )
            .prop_map(|(type_name, mut segments, rest)| {
                if rest || segments.is_empty() {
                    segments.push("**".to_owned());
                }
                format!("{type_name}@{}", segments.join("."))
                    .parse()
                    .unwrap()
            })
    }

    /// A concrete route matched by `pattern`: `*` filled with one segment, `**` with
    /// `rest_len` segments (at least one if the path would be empty otherwise). `fill` supplies
    /// the segment texts.
    fn fill(pattern: &RoutePattern, fill: &[String], rest_len: usize) -> Route {
        let mut fill = fill.iter().cycle();
        let mut path = Vec::new();
        for segment in pattern.path().split('.') {
            match segment {
                "*" => path.push(fill.next().unwrap().clone()),
                "**" => {
                    let n = if path.is_empty() {
                        rest_len.max(1)
                    } else {
                        rest_len
                    };
                    path.extend(fill.by_ref().take(n).cloned());
                }
                literal => path.push(literal.to_owned()),
            }
        }
        Route::new(pattern.type_name(), &path.join(".")).unwrap()
    }

    proptest! {
        #[test]
        fn covered_patterns_only_match_routes_the_rule_matches(
            rule in arb_pattern(),
            p in arb_pattern(),
            fills in prop::collection::vec("[abc]", 1..6),
            rest_len in 0usize..4,
        ) {
            let route = fill(&p, &fills, rest_len);
            prop_assert!(p.matches(&route), "{p} matches its own filling {route}");
            if covers(&rule, &p) {
                prop_assert!(rule.matches(&route), "{rule} covers {p} but not {route}");
            }
        }

        #[test]
        fn patterns_sharing_a_route_intersect(
            a in arb_pattern(),
            b in arb_pattern(),
            fills in prop::collection::vec("[abc]", 1..6),
            rest_len in 0usize..4,
        ) {
            let route = fill(&a, &fills, rest_len);
            if b.matches(&route) {
                prop_assert!(intersects(&a, &b) && intersects(&b, &a), "{a} and {b} share {route}");
            }
            prop_assert_eq!(intersects(&a, &b), intersects(&b, &a));
        }

        #[test]
        fn every_pattern_covers_itself_and_is_covered_by_its_type_wildcard(p in arb_pattern()) {
            prop_assert!(covers(&p, &p));
            let all: RoutePattern = format!("{}@**", p.type_name()).parse().unwrap();
            prop_assert!(covers(&all, &p));
        }
    }
}
