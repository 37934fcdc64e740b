//! The node file's mesh and remote settings reach the components (DHT, allow-list, NAT,
//! identity, links, ACLs), and a bad value is reported with its key.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dndm::core::{EndpointError, Keypair, PeerId};
use dndm::mesh::{KAD_PROTOCOL, RouteKey};
use dndm::remote::endpoint::Target;
use dndm_cli::Config;
use dndm_cli::config::{mesh_config, mesh_endpoint, remote_config};

#[test]
fn dht_settings_come_from_the_config_file() {
    let mesh = mesh_config(&Config::default()).unwrap();
    assert_eq!(mesh.kad_protocol, KAD_PROTOCOL);
    assert_eq!(mesh.route_key, RouteKey::DEFAULT);
    assert_eq!(mesh.remote.session.allow_peers, None);

    let peer = Keypair::from_seed([5; 32]).peer_id();
    let config = Config::from_toml_str(&format!(
        "[mesh]\nkad_protocol = \"/ipfs/kad/1.0.0\"\nroute_key = \"0123456789abcdef0123\"\n\
         [remote]\nallow_peers = [\"{peer}\"]\n"
    ))
    .unwrap();
    let mesh = mesh_config(&config).unwrap();
    assert_eq!(mesh.kad_protocol.as_ref(), "/ipfs/kad/1.0.0");
    assert_eq!(
        mesh.route_key,
        RouteKey::from_secret("0123456789abcdef0123")
    );
    assert_ne!(mesh.route_key, RouteKey::DEFAULT);
    assert_eq!(format!("{:?}", mesh.route_key), "RouteKey(<private>)");
    assert_eq!(
        mesh.remote.session.allow_peers,
        Some(std::collections::HashSet::from([peer])),
        "the libp2p allow-list is the session's"
    );
}

#[test]
fn a_bad_dht_setting_names_its_key() {
    let error = Config::from_toml_str("[mesh]\nkad_protocol = \"ipfs/kad\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("mesh.kad_protocol = \"ipfs/kad\" is invalid"),
        "{error}"
    );
    let error = Config::from_toml_str("[mesh]\nroute_key = \"short\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("mesh.route_key = <secret of 5 bytes> is invalid"),
        "{error}"
    );
    // A configuration built in code skips the file's validation; the mesh checks again.
    let mut config = Config::default();
    config.mesh.kad_protocol = "kad".into();
    match mesh_config(&config) {
        Err(EndpointError::Config { reason, .. }) => assert!(
            reason.starts_with("mesh.kad_protocol = \"kad\" is invalid"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_identity_file_gives_the_same_peer_id_every_start() {
    let dir = std::env::temp_dir().join(format!("dndm-mesh-identity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.key");
    let mut config = Config::default();
    config.node.identity_file = Some(path.clone());
    let first = mesh_endpoint(&config).unwrap().peer_id();
    let second = mesh_endpoint(&config).unwrap().peer_id();
    assert_eq!(first, second, "loaded, not generated again");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nat_settings_come_from_the_config_file() {
    let config = Config::from_toml_str(
        "[mesh]\nrelay_server = true\nrelay_max_reservations = 3\nrelay_circuit_bytes = 1048576\nhole_punching = false\nrelays = [\"/ip4/203.0.113.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]\n",
    )
    .unwrap();
    let mesh = mesh_config(&config).unwrap();
    assert!(mesh.relay_server && !mesh.hole_punching);
    assert_eq!(mesh.relay_limits.max_reservations, 3);
    assert_eq!(mesh.relay_limits.circuit_bytes, 1 << 20);
    assert_eq!(mesh.relays.len(), 1);
}

#[test]
fn remote_settings_come_from_the_node_config() {
    let config = Config::from_toml_str(
        r#"
        [node]
        name = "gateway"
        [remote]
        listen = ["127.0.0.1:7000", "unix:/tmp/dndm.sock"]
        connect = ["10.0.0.2:7000", "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA@unix:/tmp/b@x.sock"]
        keepalive_ms = 250
        idle_timeout_ms = 2000
        retransmit_buffer = 100
        signing = "off"
        max_frame_len = 65536
        [[remote.acl]]
        publish = ["dndm.Text@robot.**"]
        [[remote.acl]]
        peers = ["12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"]
        subscribe = ["dndm.Text@robot.*.cmd"]
        "#,
    )
    .unwrap();
    let remote = remote_config(&config).unwrap();
    // Everyone may publish under robot; only that peer may subscribe, and only to commands.
    let acl = &remote.session.acl;
    let trusted: PeerId = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
        .parse()
        .unwrap();
    let other = Keypair::from_seed([9; 32]).peer_id();
    assert!(acl.may_publish(&other, &"dndm.Text@robot.arm".parse().unwrap()));
    assert!(!acl.may_publish(&other, &"dndm.Text@fleet.arm".parse().unwrap()));
    assert!(acl.may_subscribe(&trusted, &"dndm.Text@robot.arm.cmd".parse().unwrap()));
    assert!(!acl.may_subscribe(&other, &"dndm.Text@robot.arm.cmd".parse().unwrap()));
    assert!(!acl.may_subscribe(&trusted, &"dndm.Text@robot.**".parse().unwrap()));
    assert_eq!(remote.listen.len(), 2);
    assert!(matches!(remote.listen[0], Target::Tcp(addr) if addr.port() == 7000));
    assert!(matches!(&remote.dial[0], Target::Tcp(addr) if addr.to_string() == "10.0.0.2:7000"));
    // `<peer id>@<address>` pins the identity expected there (a unix path may contain '@').
    assert_eq!(
        remote.dial[1].to_string(),
        "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA@unix:/tmp/b@x.sock"
    );
    assert_eq!(remote.session.node_name, "gateway");
    assert_eq!(remote.session.keepalive, Duration::from_millis(250));
    assert_eq!(remote.session.idle_timeout, Duration::from_secs(2));
    assert_eq!(remote.session.retransmit_capacity, 100);
    assert_eq!(remote.session.signing, dndm::core::Signing::Off);
    assert_eq!(remote.session.limits.max_frame_len(), 65536);
}
