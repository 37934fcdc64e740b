//! A `RemoteConfig` built in code is checked when an endpoint is made from it, as one from a node
//! file is: each setting that cannot work is refused with an error naming the field and value.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dndm_core::{EndpointError, Keypair};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint};

/// The error an endpoint made from `config` fails with.
fn refusal(config: RemoteConfig) -> String {
    match RemoteEndpoint::new(Keypair::from_seed([7; 32]), config) {
        Err(EndpointError::Config { reason, .. }) => reason,
        Err(other) => panic!("expected a config error, got {other}"),
        Ok(_) => panic!("an invalid config was accepted"),
    }
}

#[test]
fn the_defaults_pass() {
    RemoteConfig::default().validate().unwrap();
    RemoteEndpoint::new(Keypair::from_seed([7; 32]), RemoteConfig::default()).unwrap();
}

#[test]
fn every_setting_that_cannot_work_is_refused_by_name() {
    type Breaks = fn(&mut RemoteConfig);
    let cases: [(&str, Breaks); 10] = [
        ("session.send_queue = 0", |c| c.session.send_queue = 0),
        ("session.keepalive = 0ns", |c| {
            c.session.keepalive = Duration::ZERO
        }),
        ("session.idle_timeout = 1s", |c| {
            c.session.idle_timeout = Duration::from_secs(1);
            c.session.keepalive = Duration::from_secs(2);
        }),
        ("session.retransmit_timeout = Some(0ns)", |c| {
            c.session.retransmit_timeout = Some(Duration::ZERO)
        }),
        ("session.node_name = \"\"", |c| c.session.node_name.clear()),
        ("handshake_timeout = 0ns", |c| {
            c.handshake_timeout = Duration::ZERO
        }),
        ("backoff_max = 1ms", |c| {
            c.backoff_initial = Duration::from_millis(5);
            c.backoff_max = Duration::from_millis(1);
        }),
        ("breaker_threshold = 0", |c| c.breaker_threshold = 0),
        ("peer_grace = 0ns", |c| c.peer_grace = Duration::ZERO),
        ("route_window = 0", |c| c.route_window = 0),
    ];
    for (named, breaks) in cases {
        let mut config = RemoteConfig::default();
        breaks(&mut config);
        let reason = refusal(config);
        assert!(
            reason.starts_with(named) && reason.contains("is invalid: "),
            "expected `{named} is invalid: …`, got `{reason}`"
        );
    }
}
