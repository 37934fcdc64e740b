//! Unit tests of the parent module.
use super::*;

fn fields(error: &ConfigError) -> Vec<&str> {
    error
        .problems()
        .iter()
        .filter_map(|problem| match problem {
            ConfigError::Invalid { field, .. } => Some(field.as_str()),
            _ => None,
        })
        .collect()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn peer() -> String {
    dndm::Keypair::from_seed([7; 32]).peer_id().to_string()
}

#[test]
fn default_and_presets_are_valid() {
    Config::default().validate().unwrap();
    Config::in_process().validate().unwrap();
    exemplar().validate().unwrap();
    let mesh = Config::lan_mesh();
    mesh.validate().unwrap();
    assert!(mesh.mesh.enabled && mesh.mesh.mdns);
    assert_eq!(mesh.mesh.listen, ["/ip4/0.0.0.0/tcp/0"]);
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
}

#[test]
fn defaults_are_as_documented() {
    let c = Config::default();
    assert_eq!(c.node.name, "dndm");
    assert_eq!(c.node.identity_file, None);
    assert_eq!(c.router.queue_capacity, 1024);
    assert_eq!(c.router.overflow, Overflow::DropOldest);
    assert_eq!(c.router.send_timeout(), Duration::from_secs(1));
    assert_eq!(c.router.request_timeout(), Duration::from_secs(5));
    assert_eq!(c.router.max_concurrent_requests, 256);
    assert!(!c.remote.enabled);
    assert_eq!(c.remote.handshake_timeout(), Duration::from_secs(5));
    assert_eq!(c.remote.keepalive(), Duration::from_secs(1));
    assert_eq!(c.remote.idle_timeout(), Duration::from_secs(10));
    assert_eq!(c.remote.max_frame_len, 4 << 20);
    assert_eq!(c.remote.retransmit_buffer, 4096);
    assert_eq!(c.remote.signing, Signing::OnRequest);
    assert_eq!(c.remote.compression_threshold, 512);
    assert_eq!(c.remote.backoff_initial(), Duration::from_millis(100));
    assert_eq!(c.remote.backoff_max(), Duration::from_secs(30));
    assert!(!c.mesh.enabled && c.mesh.mdns);
    assert_eq!((c.mesh.max_peers, c.mesh.full_mesh_threshold), (50, 16));
    assert!(!c.metrics.enabled);
    assert_eq!(c.metrics.listen, "127.0.0.1:9464");
}

#[test]
fn toml_round_trip() {
    let mut c = Config::lan_mesh();
    c.node.name = "robot-1".to_owned();
    c.node.identity_file = Some(PathBuf::from("/var/lib/dndm/id"));
    c.router.overflow = Overflow::Block;
    c.remote.enabled = true;
    c.remote.listen = vec!["0.0.0.0:7000".to_owned(), "unix:/run/dndm.sock".to_owned()];
    c.remote.connect = vec!["[::1]:7001".to_owned(), format!("{}@10.0.0.9:7000", peer())];
    c.remote.signing = Signing::Off;
    c.remote.allow_peers = vec![peer()];
    c.mesh.bootstrap = vec![format!("/ip4/10.0.0.1/tcp/4001/p2p/{}", peer())];
    c.metrics.enabled = true;
    let text = c.to_toml_string().unwrap();
    assert!(text.contains("overflow = \"block\""), "{text}");
    assert!(text.contains("signing = \"off\""), "{text}");
    assert_eq!(Config::from_toml_str(&text).unwrap(), c);
}

#[test]
fn multi_hop_reaches_the_mesh_config() {
    let c = Config::from_toml_str("[mesh]\nmulti_hop = true\n").unwrap();
    assert!(c.mesh.multi_hop);
    assert!(super::mesh_config(&c).unwrap().multi_hop);
    assert!(!super::mesh_config(&Config::default()).unwrap().multi_hop);
}

#[test]
fn enums_are_snake_case() {
    let c = Config::from_toml_str(
        "[router]\noverflow = \"drop_newest\"\n[remote]\nsigning = \"off\"\n",
    )
    .unwrap();
    assert_eq!(c.router.overflow, Overflow::DropNewest);
    assert_eq!(c.remote.signing, Signing::Off);
    let error = Config::from_toml_str("[router]\noverflow = \"DropNewest\"\n").unwrap_err();
    assert!(matches!(error, ConfigError::Parse { .. }), "{error}");
}

#[test]
fn each_rule_is_enforced_and_names_the_field() {
    let bad_peer = "[remote]\nallow_peers = [\"12D3Koo\"]";
    let cases: &[(&str, &str)] = &[
        ("[node]\nname = \"\"", "node.name"),
        ("[node]\nname = \"has space\"", "node.name"),
        ("[node]\nname = \"tab\\there\"", "node.name"),
        ("[node]\nname = \"bell\\u0007\"", "node.name"),
        (
            &format!("[node]\nname = \"{}\"", "x".repeat(65)),
            "node.name",
        ),
        ("[node]\nidentity_file = \"\"", "node.identity_file"),
        ("[router]\nqueue_capacity = 0", "router.queue_capacity"),
        (
            "[router]\nqueue_capacity = 1048577",
            "router.queue_capacity",
        ),
        ("[router]\nsend_timeout_ms = 0", "router.send_timeout_ms"),
        (
            "[router]\nsend_timeout_ms = 3600001",
            "router.send_timeout_ms",
        ),
        (
            "[router]\nrequest_timeout_ms = 0",
            "router.request_timeout_ms",
        ),
        (
            "[router]\nrequest_timeout_ms = 3600001",
            "router.request_timeout_ms",
        ),
        (
            "[router]\nmax_concurrent_requests = 0",
            "router.max_concurrent_requests",
        ),
        (
            "[router]\nmax_concurrent_requests = 65537",
            "router.max_concurrent_requests",
        ),
        ("[remote]\nlisten = [\"localhost\"]", "remote.listen[0]"),
        (
            "[remote]\nlisten = [\"0.0.0.0:1\", \"unix:\"]",
            "remote.listen[1]",
        ),
        ("[remote]\nconnect = [\"10.0.0.1\"]", "remote.connect[0]"),
        (
            "[[remote.acl]]\npeers = [\"nobody\"]",
            "remote.acl[0].peers[0]",
        ),
        (
            "[[remote.acl]]\npublish = [\"dndm.Text@a.*\"]\n[[remote.acl]]\nsubscribe = [\"no-type-name\"]",
            "remote.acl[1].subscribe[0]",
        ),
        // A peer pin names a peer id, and only where we dial.
        (
            "[remote]\nconnect = [\"not-a-peer@10.0.0.1:7000\"]",
            "remote.connect[0]",
        ),
        (
            "[remote]\nlisten = [\"12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA@10.0.0.1:7000\"]",
            "remote.listen[0]",
        ),
        (
            "[remote]\nhandshake_timeout_ms = 0",
            "remote.handshake_timeout_ms",
        ),
        (
            "[remote]\nhandshake_timeout_ms = 600001",
            "remote.handshake_timeout_ms",
        ),
        ("[remote]\nkeepalive_ms = 0", "remote.keepalive_ms"),
        (
            "[remote]\nkeepalive_ms = 600001\nidle_timeout_ms = 700000",
            "remote.keepalive_ms",
        ),
        (
            "[remote]\nidle_timeout_ms = 3600001",
            "remote.idle_timeout_ms",
        ),
        (
            "[remote]\nmax_frame_len = 1023\ncompression_threshold = 0",
            "remote.max_frame_len",
        ),
        ("[remote]\nmax_frame_len = 67108865", "remote.max_frame_len"),
        (
            "[remote]\nretransmit_buffer = 0",
            "remote.retransmit_buffer",
        ),
        (
            "[remote]\nretransmit_buffer = 1048577",
            "remote.retransmit_buffer",
        ),
        ("[remote]\npeer_grace_ms = 0", "remote.peer_grace_ms"),
        ("[remote]\nroute_window = 0", "remote.route_window"),
        ("[remote]\nroute_window = 8193", "remote.route_window"),
        (
            "[remote]\nbackoff_initial_ms = 0",
            "remote.backoff_initial_ms",
        ),
        (
            "[remote]\nbackoff_max_ms = 3600001",
            "remote.backoff_max_ms",
        ),
        (bad_peer, "remote.allow_peers[0]"),
        ("[mesh]\nlisten = [\"ip4/0.0.0.0/tcp/0\"]", "mesh.listen[0]"),
        ("[mesh]\nlisten = [\"/\"]", "mesh.listen[0]"),
        (
            "[mesh]\nbootstrap = [\"/ip4/10.0.0.1/tcp/4001\"]",
            "mesh.bootstrap[0]",
        ),
        (
            "[mesh]\nbootstrap = [\"/ip4/10.0.0.1/tcp/4001/p2p/\"]",
            "mesh.bootstrap[0]",
        ),
        ("[mesh]\nmax_peers = 10001", "mesh.max_peers"),
        (
            "[mesh]\nfull_mesh_threshold = 0",
            "mesh.full_mesh_threshold",
        ),
        ("[metrics]\nlisten = \"localhost:9464\"", "metrics.listen"),
    ];
    for (text, field) in cases {
        let error = Config::from_toml_str(text).unwrap_err();
        assert_eq!(fields(&error), [*field], "{text}: {error}");
        assert!(
            error.to_string().starts_with(&format!("{field} = ")),
            "{error}"
        );
    }
}

#[test]
fn boundary_values_are_accepted() {
    let text = format!(
        "[node]\nname = \"{}\"\n[router]\nqueue_capacity = 1048576\nsend_timeout_ms = 1\n\
         [remote]\nlisten = [\"unix:x\", \"[::]:0\"]\nkeepalive_ms = 1\nidle_timeout_ms = 2\n\
         max_frame_len = 1024\ncompression_threshold = 1024\nbackoff_initial_ms = 7\n\
         backoff_max_ms = 7\n[mesh]\nmax_peers = 1\nfull_mesh_threshold = 1\n",
        "n".repeat(64)
    );
    let c = Config::from_toml_str(&text).unwrap();
    assert_eq!(c.remote.max_frame_len, 1024);
}

#[test]
fn display_names_field_value_and_limit() {
    let error =
        Config::from_toml_str("[mesh]\nmax_peers = 0\nfull_mesh_threshold = 1").unwrap_err();
    assert_eq!(
        error.to_string(),
        "mesh.max_peers = 0 is invalid: must be between 1 and 10000"
    );
    let error = Config::from_toml_str("[node]\nname = \"a b\"").unwrap_err();
    assert_eq!(
        error.to_string(),
        "node.name = \"a b\" is invalid: must not contain whitespace or control characters"
    );
}

#[test]
fn disabled_sections_are_still_validated() {
    let error = Config::from_toml_str("[mesh]\nenabled = false\nmax_peers = 0\n").unwrap_err();
    assert_eq!(fields(&error), ["mesh.max_peers"]);
    assert_eq!(
        error.to_string(),
        "mesh.max_peers = 0 is invalid: must be between 1 and 10000"
    );
    let error =
        Config::from_toml_str("[mesh]\nmax_peers = 0\nfull_mesh_threshold = 0\n").unwrap_err();
    assert_eq!(
        fields(&error),
        ["mesh.max_peers", "mesh.full_mesh_threshold"]
    );
    assert!(error.to_string().ends_with("(and 1 more)"), "{error}");
    let error =
        Config::from_toml_str("[remote]\nenabled = false\nconnect = [\"nope\"]\n").unwrap_err();
    assert_eq!(fields(&error), ["remote.connect[0]"]);
    let mut c = Config::default();
    c.metrics.listen = "bad".to_owned();
    assert_eq!(fields(&c.validate().unwrap_err()), ["metrics.listen"]);
}

#[test]
fn every_problem_is_reported() {
    let mut c = Config::default();
    c.node.name = String::new();
    c.router.queue_capacity = 0;
    c.remote.retransmit_buffer = 0;
    c.mesh.max_peers = 20_000;
    c.metrics.listen = String::new();
    let error = c.validate().unwrap_err();
    assert_eq!(
        fields(&error),
        [
            "node.name",
            "router.queue_capacity",
            "remote.retransmit_buffer",
            "mesh.max_peers",
            "metrics.listen"
        ]
    );
    assert!(error.to_string().ends_with("(and 4 more)"), "{error}");
}

#[test]
fn cross_field_rules() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[remote]\nkeepalive_ms = 5000\nidle_timeout_ms = 5000",
            "remote.idle_timeout_ms",
            "must be greater than remote.keepalive_ms (5000)",
        ),
        (
            "[remote]\nbackoff_initial_ms = 500\nbackoff_max_ms = 499",
            "remote.backoff_max_ms",
            "must be at least remote.backoff_initial_ms (500)",
        ),
        (
            "[mesh]\nmax_peers = 8\nfull_mesh_threshold = 9",
            "mesh.full_mesh_threshold",
            "must be between 1 and mesh.max_peers (8)",
        ),
        (
            "[remote]\nmax_frame_len = 2048\ncompression_threshold = 2049",
            "remote.compression_threshold",
            "must be at most remote.max_frame_len (2048)",
        ),
    ];
    for (text, field, reason) in cases {
        let error = Config::from_toml_str(text).unwrap_err();
        assert_eq!(fields(&error), [*field], "{text}: {error}");
        assert!(error.to_string().ends_with(reason), "{error}");
    }
}

#[test]
fn unknown_toml_keys_and_wrong_types_are_rejected() {
    for text in [
        "[mesh]\nmax_peer = 8\n",
        "[nodes]\nname = \"x\"\n",
        "top = 1\n",
        "[router]\nqueue_capacity = \"big\"\n",
        "[router]\nqueue_capacity = -1\n",
        "[remote\n",
    ] {
        let error = Config::from_toml_str(text).unwrap_err();
        assert!(
            matches!(error, ConfigError::Parse { path: None, .. }),
            "{text}: {error}"
        );
    }
    let error = Config::from_toml_str("[node]\nname = \"a\"\n[mesh]\nmax_peer = 8\n").unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("cannot parse config at line 4: "),
        "{text}"
    );
    assert!(text.contains("max_peer"), "{text}");
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dndm.toml");
    std::fs::write(&path, "[mesh]\nmax_peers = 8\nbogus = 1\n").unwrap();
    let error = Config::from_file(&path).unwrap_err();
    assert!(matches!(&error, ConfigError::Parse { path: Some(p), .. } if *p == path));
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("line 3"), "{text}");

    let missing = dir.path().join("missing.toml");
    let error = Config::from_file(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Io { .. }));
    assert!(error.to_string().contains("missing.toml"), "{error}");

    std::fs::write(&path, "[mesh]\nmax_peers = 20\n").unwrap();
    assert_eq!(Config::from_file(&path).unwrap().mesh.max_peers, 20);
    std::fs::write(&path, "[mesh]\nmax_peers = 0\n").unwrap();
    assert!(fields(&Config::from_file(&path).unwrap_err()).contains(&"mesh.max_peers"));
}

#[test]
fn env_overrides_set_each_kind_of_value() {
    let c = Config::default()
        .with_env_overrides(env(&[
            ("DNDM_MESH__MAX_PEERS", "8"),
            ("DNDM_MESH__FULL_MESH_THRESHOLD", "4"),
            ("DNDM_MESH__ENABLED", "true"),
            (
                "DNDM_REMOTE__LISTEN",
                "[\"127.0.0.1:7000\", \"unix:/tmp/d.sock\"]",
            ),
            ("DNDM_REMOTE__CONNECT", "10.0.0.1:7000, 10.0.0.2:7000"),
            ("DNDM_NODE__NAME", "robot1"),
            ("DNDM_node__identity_file", "/tmp/id"),
            ("DNDM_ROUTER__OVERFLOW", "block"),
            ("DNDM_METRICS__LISTEN", "0.0.0.0:9000"),
            ("PATH", "/usr/bin"),
            ("DNDM_LOG", "debug"),
        ]))
        .unwrap();
    assert_eq!((c.mesh.max_peers, c.mesh.full_mesh_threshold), (8, 4));
    assert!(c.mesh.enabled);
    assert_eq!(c.remote.listen, ["127.0.0.1:7000", "unix:/tmp/d.sock"]);
    assert_eq!(c.remote.connect, ["10.0.0.1:7000", "10.0.0.2:7000"]);
    assert_eq!(c.node.name, "robot1");
    assert_eq!(c.node.identity_file, Some(PathBuf::from("/tmp/id")));
    assert_eq!(c.router.overflow, Overflow::Block);
    assert_eq!(c.metrics.listen, "0.0.0.0:9000");
    // Untouched keys keep their values.
    assert_eq!(c.router.queue_capacity, 1024);

    // A string key takes the text as is, even when it looks like another TOML type.
    let c = Config::default()
        .with_env_overrides([("DNDM_NODE__NAME", "42"), ("DNDM_REMOTE__LISTEN", "")])
        .unwrap();
    assert_eq!(c.node.name, "42");
    assert!(c.remote.listen.is_empty());

    // A list of tables, as docs/operations.md shows for `remote.acl`.
    let c = Config::default()
        .with_env_overrides([(
            "DNDM_REMOTE__ACL",
            r#"[{publish=["dndm.Text@robot.**"]}, {subscribe=["dndm.Text@a.*"]}]"#,
        )])
        .unwrap();
    assert_eq!(c.remote.acl.len(), 2);
    assert_eq!(c.remote.acl[0].publish, ["dndm.Text@robot.**"]);
    assert_eq!(c.remote.acl[1].subscribe, ["dndm.Text@a.*"]);
}

#[test]
fn env_overrides_apply_over_the_base_config() {
    let base = Config::from_toml_str("[mesh]\nmax_peers = 30\nmdns = false\n").unwrap();
    let c = base
        .with_env_overrides([("DNDM_MESH__MDNS", "true")])
        .unwrap();
    assert_eq!((c.mesh.max_peers, c.mesh.mdns), (30, true));
}

#[test]
fn env_unknown_key_names_the_variable() {
    for var in ["DNDM_MESH__MAX_PEER", "DNDM_NOPE__X", "DNDM_MESH_MAX_PEERS"] {
        let error = Config::default()
            .with_env_overrides([(var, "8")])
            .unwrap_err();
        assert!(
            matches!(&error, ConfigError::Env { var: v, .. } if v == var),
            "{var}: {error}"
        );
        assert!(error.to_string().contains(var), "{error}");
    }
}

#[test]
fn env_bad_value_names_variable_and_field() {
    let error = Config::default()
        .with_env_overrides([("DNDM_MESH__MAX_PEERS", "many")])
        .unwrap_err();
    assert!(matches!(&error, ConfigError::Env { .. }), "{error}");
    let text = error.to_string();
    assert!(text.contains("DNDM_MESH__MAX_PEERS"), "{text}");
    assert!(text.contains("mesh.max_peers"), "{text}");

    let error = Config::default()
        .with_env_overrides([("DNDM_ROUTER__OVERFLOW", "sometimes")])
        .unwrap_err();
    assert!(error.to_string().contains("router.overflow"), "{error}");

    // A well-typed value that breaks a rule is a validation error naming the field.
    let error = Config::default()
        .with_env_overrides([("DNDM_MESH__MAX_PEERS", "0")])
        .unwrap_err();
    assert_eq!(fields(&error), ["mesh.max_peers"]);
    // Lowering max_peers below the default full_mesh_threshold (16) needs both keys.
    let error = Config::default()
        .with_env_overrides([("DNDM_MESH__MAX_PEERS", "8")])
        .unwrap_err();
    assert_eq!(fields(&error), ["mesh.full_mesh_threshold"]);
}

#[test]
fn env_can_fix_an_invalid_base() {
    let mut base = Config::default();
    base.mesh.max_peers = 0;
    let c = base
        .with_env_overrides([("DNDM_MESH__MAX_PEERS", "20")])
        .unwrap();
    assert_eq!(c.mesh.max_peers, 20);
}

#[test]
fn load_reads_file_or_defaults() {
    // The test process has no DNDM_<SECTION>__<KEY> variables.
    assert_eq!(Config::load(None).unwrap(), Config::default());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dndm.toml");
    std::fs::write(&path, "[node]\nname = \"from-file\"\n").unwrap();
    assert_eq!(Config::load(Some(&path)).unwrap().node.name, "from-file");
    let error = Config::load(Some(&dir.path().join("absent.toml"))).unwrap_err();
    assert!(matches!(error, ConfigError::Io { .. }));
}

/// Records the field names a type's `Deserialize` impl asks for.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend(fields);
        Err(serde::de::Error::custom("recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

fn field_names<'de, T: Deserialize<'de>>(section: &str) -> Vec<String> {
    let mut names = Vec::new();
    let _ = T::deserialize(FieldNames(&mut names));
    names
        .iter()
        .map(|name| format!("{section}.{name}"))
        .collect()
}

#[test]
fn keys_list_every_field() {
    let keys = Config::keys();
    let mut expected = Vec::new();
    expected.extend(field_names::<NodeSection>("node"));
    expected.extend(field_names::<RouterSection>("router"));
    expected.extend(field_names::<RemoteSection>("remote"));
    // A nested table: its keys, not its own name.
    expected.retain(|key| key != "remote.budget");
    expected.extend(field_names::<BudgetConfig>("remote.budget"));
    expected.extend(field_names::<MeshSection>("mesh"));
    expected.extend(field_names::<MetricsSection>("metrics"));
    expected.sort();
    assert_eq!(keys, expected);
    let mut sections = Vec::new();
    let _ = Config::deserialize(FieldNames(&mut sections));
    assert_eq!(sections, ["node", "router", "remote", "mesh", "metrics"]);
    assert_eq!(keys.len(), 3 + 5 + 16 + 8 + 18 + 2);
    assert!(keys.contains(&"node.identity_file".to_owned()));
    // Every key can be overridden from the environment.
    for key in &keys {
        let var = format!("DNDM_{}", key.to_ascii_uppercase().replace('.', "__"));
        let error = Config::default().with_env_overrides([(var.as_str(), "@")]);
        if let Err(ConfigError::Env { reason, .. }) = &error {
            assert!(!reason.contains("unknown config key"), "{var}: {reason}");
        }
    }
}

#[test]
fn nat_keys_are_checked_and_name_the_bad_value() {
    let config = Config::from_toml_str(
        "[mesh]\nrelays = [\"/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]\nrelay_server = true\n",
    )
    .unwrap();
    assert!(config.mesh.relay_server && config.mesh.hole_punching);
    let error = Config::from_toml_str("[mesh]\nrelays = [\"/ip4/203.0.113.1/tcp/4001\"]\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("mesh.relays[0] = \"/ip4/203.0.113.1/tcp/4001\" is invalid"),
        "{error}"
    );
    let error = Config::from_toml_str("[mesh]\nrelay_circuit_bytes = 10\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("mesh.relay_circuit_bytes = 10 is invalid"),
        "{error}"
    );
}

#[test]
fn dht_keys_default_to_a_dndm_protocol_and_the_public_route_key() {
    let c = Config::default();
    assert_eq!(c.mesh.kad_protocol, "/dndm/kad/1.0.0");
    assert_eq!(c.mesh.route_key, "");
    let c = Config::from_toml_str(
        "[mesh]\nkad_protocol = \"/ipfs/kad/1.0.0\"\nroute_key = \"0123456789abcdef\"\n",
    )
    .unwrap();
    assert_eq!(c.mesh.kad_protocol, "/ipfs/kad/1.0.0");
    assert_eq!(c.mesh.route_key, "0123456789abcdef");
}

#[test]
fn dht_keys_are_checked_and_name_the_key() {
    for bad in ["ipfs/kad/1.0.0", "/dndm/kad 1.0.0", "", "/é"] {
        let error = Config::from_toml_str(&format!("[mesh]\nkad_protocol = {bad:?}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!(
                "mesh.kad_protocol = {bad:?} is invalid: must start with /"
            )),
            "{error}"
        );
    }
    let long = format!("/{}", "k".repeat(140));
    let error = Config::from_toml_str(&format!("[mesh]\nkad_protocol = {long:?}\n")).unwrap_err();
    assert_eq!(fields(&error), ["mesh.kad_protocol"]);

    let error = Config::from_toml_str("[mesh]\nroute_key = \"hunter2\"\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "mesh.route_key = <secret of 7 bytes> is invalid: must be empty (the public default key) \
         or a secret of at least 16 bytes"
    );
    assert!(
        !error.contains("hunter2"),
        "the secret stays out of the error"
    );
    let error = Config::default()
        .with_env_overrides([("DNDM_MESH__ROUTE_KEY", "short")])
        .unwrap_err();
    assert_eq!(fields(&error), ["mesh.route_key"]);
}
