//! The DHT settings and the allow-list come from the configuration file, and a bad value is
//! reported with its key.

#![allow(clippy::unwrap_used)]

use dndm_core::{Config, EndpointError};
use dndm_mesh::{KAD_PROTOCOL, MeshConfig, RouteKey};

#[test]
fn dht_settings_come_from_the_config_file() {
    let mesh = MeshConfig::from_config(&Config::default()).unwrap();
    assert_eq!(mesh.kad_protocol, KAD_PROTOCOL);
    assert_eq!(mesh.route_key, RouteKey::DEFAULT);
    assert_eq!(mesh.remote.session.allow_peers, None);

    let peer = dndm_core::Keypair::from_seed([5; 32]).peer_id();
    let config = Config::from_toml_str(&format!(
        "[mesh]\nkad_protocol = \"/ipfs/kad/1.0.0\"\nroute_key = \"0123456789abcdef0123\"\n\
         [remote]\nallow_peers = [\"{peer}\"]\n"
    ))
    .unwrap();
    let mesh = MeshConfig::from_config(&config).unwrap();
    assert_eq!(mesh.kad_protocol, libp2p::kad::PROTOCOL_NAME);
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
    match MeshConfig::from_config(&config) {
        Err(EndpointError::Config { reason, .. }) => assert!(
            reason.starts_with("mesh.kad_protocol = \"kad\" is invalid"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}
