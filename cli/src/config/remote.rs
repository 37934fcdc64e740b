//! The `[remote]` section: point-to-point links, their ACL and (in `budget.rs`) budgets.

use super::*;

/// The `[remote]` section: point-to-point links over TCP or Unix sockets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RemoteSection {
    /// Whether the node listens and connects. Default false.
    pub enabled: bool,
    /// Addresses to listen on: `host:port` socket addresses or `unix:<path>`. Default none.
    pub listen: Vec<String>,
    /// Addresses to connect to (and reconnect to with backoff): `host:port` socket addresses or
    /// `unix:<path>`, optionally prefixed by `<peer id>@` to accept only that identity there.
    /// Default none.
    pub connect: Vec<String>,
    /// How long a link may take to complete its handshake, in milliseconds. Default 5000; 1 to
    /// 600 000.
    pub handshake_timeout_ms: u64,
    /// Interval between keepalives on an idle link, in milliseconds. Default 1000; 1 to 600 000.
    pub keepalive_ms: u64,
    /// Silence after which a link is considered dead and closed, in milliseconds. Default
    /// 10 000; greater than `keepalive_ms`, at most 3 600 000.
    pub idle_timeout_ms: u64,
    /// Largest frame sent or accepted, in bytes; a peer sending more is disconnected. Default
    /// 4 MiB; 1024 to 64 MiB.
    pub max_frame_len: usize,
    /// Reliable messages kept per link for retransmission after a reconnect; beyond it the
    /// publisher is back-pressured. Default 4096; 1 to 1 048 576.
    pub retransmit_buffer: usize,
    /// How long a peer that completed a hello may stay away before it is retired (its routes
    /// withdrawn, what was queued for it reported undelivered), in milliseconds. Default
    /// 30 000; 1 to 3 600 000.
    pub peer_grace_ms: u64,
    /// Messages one peer interest may have inside its link (queued, or unacknowledged on
    /// reliable routes); beyond it a publisher waits at most its send timeout, then the
    /// message is dropped for that peer and reported. Default 8192; 1 to 8192 (what a link
    /// holds for one paused route).
    pub route_window: usize,
    /// Whether frames are signed. Default [`Signing::Batch`].
    pub signing: Signing,
    /// Payloads at least this long (in bytes) are compressed. Default 512; at most
    /// `max_frame_len`.
    pub compression_threshold: usize,
    /// First reconnect delay, in milliseconds; doubled on each failure. Default 100; 1 to
    /// 3 600 000.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, in milliseconds. Default 30 000; at least `backoff_initial_ms`,
    /// at most 3 600 000.
    pub backoff_max_ms: u64,
    /// PeerIds allowed to complete a handshake; empty allows every peer. Default empty.
    pub allow_peers: Vec<String>,
    /// Per-route access control, as `[[remote.acl]]` rules. None (the default) lets every peer
    /// publish and subscribe to anything; with rules, a peer may publish on a route or
    /// subscribe with a pattern only if a rule for it grants that, and a declaration no rule
    /// grants closes its link.
    pub acl: Vec<AclRuleSection>,
    /// What one peer, or a crowd of connections, may make the node spend: the
    /// `[remote.budget]` table. Remote and mesh links share it.
    pub budget: BudgetConfig,
}

/// One `[[remote.acl]]` rule: what some peers may publish and subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AclRuleSection {
    /// PeerIds the rule applies to; empty applies it to every peer.
    pub peers: Vec<String>,
    /// Route patterns (`TypeName@path`, with `*` and `**`) the peers may publish on.
    pub publish: Vec<String>,
    /// Route patterns the peers may subscribe with (a subscription must lie within one).
    pub subscribe: Vec<String>,
    /// Request route patterns of local services the peers may call.
    pub call: Vec<String>,
}

impl Default for RemoteSection {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: Vec::new(),
            connect: Vec::new(),
            handshake_timeout_ms: 5000,
            keepalive_ms: 1000,
            idle_timeout_ms: 10_000,
            max_frame_len: 4 * 1024 * 1024,
            retransmit_buffer: 4096,
            peer_grace_ms: 30_000,
            route_window: 8192,
            signing: Signing::OnRequest,
            compression_threshold: dndm::core::DEFAULT_COMPRESSION_THRESHOLD,
            backoff_initial_ms: 100,
            backoff_max_ms: 30_000,
            allow_peers: Vec::new(),
            acl: Vec::new(),
            budget: BudgetConfig::default(),
        }
    }
}

impl RemoteSection {
    /// [`RemoteSection::handshake_timeout_ms`] as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// [`RemoteSection::keepalive_ms`] as a duration.
    pub fn keepalive(&self) -> Duration {
        Duration::from_millis(self.keepalive_ms)
    }

    /// [`RemoteSection::idle_timeout_ms`] as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// [`RemoteSection::peer_grace_ms`] as a duration.
    pub fn peer_grace(&self) -> Duration {
        Duration::from_millis(self.peer_grace_ms)
    }

    /// [`RemoteSection::backoff_initial_ms`] as a duration.
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms)
    }

    /// [`RemoteSection::backoff_max_ms`] as a duration.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }

    pub(super) fn check(&self, problems: &mut Problems) {
        for (index, address) in self.listen.iter().enumerate() {
            check_link_address(problems, "remote.listen", index, address, false);
        }
        for (index, address) in self.connect.iter().enumerate() {
            check_link_address(problems, "remote.connect", index, address, true);
        }
        problems.range(
            "remote.handshake_timeout_ms",
            self.handshake_timeout_ms,
            1,
            MAX_LINK_MS,
        );
        problems.range("remote.keepalive_ms", self.keepalive_ms, 1, MAX_LINK_MS);
        if self.idle_timeout_ms <= self.keepalive_ms {
            problems.invalid(
                "remote.idle_timeout_ms",
                self.idle_timeout_ms,
                format!(
                    "must be greater than remote.keepalive_ms ({})",
                    self.keepalive_ms
                ),
            );
        } else {
            problems.range("remote.idle_timeout_ms", self.idle_timeout_ms, 1, MAX_MS);
        }
        problems.range(
            "remote.max_frame_len",
            self.max_frame_len,
            MIN_FRAME_LEN,
            MAX_FRAME_LEN,
        );
        problems.range(
            "remote.retransmit_buffer",
            self.retransmit_buffer,
            1,
            1_048_576,
        );
        problems.range("remote.peer_grace_ms", self.peer_grace_ms, 1, MAX_MS);
        problems.range("remote.route_window", self.route_window, 1, 8192);
        problems.extend(self.budget.problems());
        if self.compression_threshold > self.max_frame_len {
            problems.invalid(
                "remote.compression_threshold",
                self.compression_threshold,
                format!(
                    "must be at most remote.max_frame_len ({})",
                    self.max_frame_len
                ),
            );
        }
        problems.range(
            "remote.backoff_initial_ms",
            self.backoff_initial_ms,
            1,
            MAX_MS,
        );
        if self.backoff_max_ms < self.backoff_initial_ms {
            problems.invalid(
                "remote.backoff_max_ms",
                self.backoff_max_ms,
                format!(
                    "must be at least remote.backoff_initial_ms ({})",
                    self.backoff_initial_ms
                ),
            );
        } else {
            problems.range("remote.backoff_max_ms", self.backoff_max_ms, 1, MAX_MS);
        }
        check_each::<PeerId>(
            problems,
            "remote.allow_peers",
            &self.allow_peers,
            "a PeerId",
        );
        for (index, rule) in self.acl.iter().enumerate() {
            check_each::<PeerId>(
                problems,
                &format!("remote.acl[{index}].peers"),
                &rule.peers,
                "a PeerId",
            );
            let lists = [
                ("publish", &rule.publish),
                ("subscribe", &rule.subscribe),
                ("call", &rule.call),
            ];
            for (what, patterns) in lists {
                check_each::<RoutePattern>(
                    problems,
                    &format!("remote.acl[{index}].{what}"),
                    patterns,
                    "a route pattern (TypeName@path)",
                );
            }
        }
    }
}
