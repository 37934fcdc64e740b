//! From the node's file schema ([`Config`]) to each component's own settings: the router's
//! builder, [`RemoteConfig`], [`MeshConfig`] and a ready [`MeshEndpoint`]. The components know
//! nothing of the file; this is the one place that maps it, and every value it produces is
//! checked again by the component that takes it (a config built in code is checked the same way).

use std::collections::HashSet;
use std::time::Duration;

use dndm::core::{EndpointError, Keypair, PeerId};
use dndm::mesh::{
    MeshConfig, MeshEndpoint, Multiaddr, RelayLimits, RouteKey, StreamProtocol, Transport,
};
use dndm::remote::acl::{Acl, AclRule};
use dndm::remote::endpoint::{RemoteConfig, Target};
use dndm::{Router, RouterBuilder};
use dndm_codec::{Compression, Limits};

use super::Config;

/// A router builder with the `node` and `router` sections of a validated [`Config`].
pub fn router_builder(config: &Config) -> RouterBuilder {
    Router::builder()
        .name(config.node.name.clone())
        .queue_capacity(config.router.queue_capacity)
        .overflow(config.router.overflow)
        .send_timeout(Duration::from_millis(config.router.send_timeout_ms))
        .request_timeout(Duration::from_millis(config.router.request_timeout_ms))
        .max_concurrent_requests(config.router.max_concurrent_requests)
}

/// Settings from the `[remote]` and `[node]` sections of a validated [`Config`]:
/// `listen`/`connect` (`host:port` or `unix:/path`), timeouts, `retransmit_buffer`,
/// `signing`, `compression_threshold`, `max_frame_len`, backoff, `allow_peers` and the
/// `[[remote.acl]]` rules.
///
/// # Errors
/// [`EndpointError::Config`] naming the key when a value does not fit (a config that passed
/// `validate()` always fits).
pub fn remote_config(config: &Config) -> Result<RemoteConfig, EndpointError> {
    let remote = &config.remote;
    let bad = |key: &str, value: &dyn std::fmt::Display, reason: &dyn std::fmt::Display| {
        EndpointError::Config {
            endpoint: "remote".into(),
            reason: format!("remote.{key} = {value} is invalid: {reason}"),
        }
    };
    let target = |key: &str, text: &String| -> Result<Target, EndpointError> {
        // `<peer id>@<address>` pins the identity expected at a dialed address.
        let (peer, address) = match text.split_once('@') {
            Some((peer, address)) if key == "connect" => match peer.parse::<PeerId>() {
                Ok(peer) => (Some(peer), address),
                Err(_) => (None, text.as_str()),
            },
            _ => (None, text.as_str()),
        };
        #[cfg(unix)]
        let unix = address
            .strip_prefix("unix:")
            .map(|path| Target::Unix(path.into()));
        #[cfg(not(unix))]
        let unix = None;
        let base = match unix {
            Some(target) => target,
            None => Target::Tcp(address.parse().map_err(|e| bad(key, text, &e))?),
        };
        Ok(match peer {
            Some(peer) => Target::pinned(peer, base),
            None => base,
        })
    };
    let mut out = RemoteConfig::default();
    for text in &remote.listen {
        out.listen.push(target("listen", text)?);
    }
    for text in &remote.connect {
        out.dial.push(target("connect", text)?);
    }
    out.handshake_timeout = remote.handshake_timeout();
    out.backoff_initial = remote.backoff_initial();
    out.backoff_max = remote.backoff_max();
    out.peer_grace = remote.peer_grace();
    out.route_window = remote.route_window;
    let session = &mut out.session;
    session.node_name = config.node.name.clone();
    session.budget = remote.budget.clone();
    session.keepalive = remote.keepalive();
    session.idle_timeout = remote.idle_timeout();
    session.retransmit_capacity = remote.retransmit_buffer;
    session.signing = remote.signing;
    session.compression = Some(Compression::new(
        Compression::DEFAULT_LEVEL,
        remote.compression_threshold,
    ));
    let frame_len = u32::try_from(remote.max_frame_len)
        .map_err(|e| bad("max_frame_len", &remote.max_frame_len, &e))?;
    session.limits = Limits::builder()
        .max_frame_len(frame_len)
        .build()
        .map_err(|e| bad("max_frame_len", &remote.max_frame_len, &e))?;
    if !remote.allow_peers.is_empty() {
        let mut allowed = HashSet::new();
        for text in &remote.allow_peers {
            allowed.insert(
                text.parse::<PeerId>()
                    .map_err(|e| bad("allow_peers", text, &e))?,
            );
        }
        session.allow_peers = Some(allowed);
    }
    if !remote.acl.is_empty() {
        let mut rules = Vec::new();
        for (index, rule) in remote.acl.iter().enumerate() {
            let mut peers = Vec::new();
            for text in &rule.peers {
                let key = format!("acl[{index}].peers");
                peers.push(text.parse::<PeerId>().map_err(|e| bad(&key, text, &e))?);
            }
            let mut out_rule = if peers.is_empty() {
                AclRule::any_peer()
            } else {
                AclRule::for_peers(peers)
            };
            for text in &rule.publish {
                let key = format!("acl[{index}].publish");
                out_rule = out_rule.publish(text.parse().map_err(|e| bad(&key, text, &e))?);
            }
            for text in &rule.subscribe {
                let key = format!("acl[{index}].subscribe");
                out_rule = out_rule.subscribe(text.parse().map_err(|e| bad(&key, text, &e))?);
            }
            for text in &rule.call {
                let key = format!("acl[{index}].call");
                out_rule = out_rule.call(text.parse().map_err(|e| bad(&key, text, &e))?);
            }
            rules.push(out_rule);
        }
        session.acl = Acl::from_rules(rules);
    }
    Ok(out)
}

/// The mesh settings of a validated [`Config`]: `[mesh]` for the swarm,
/// `[remote]` for the session (timeouts, signing, compression), `node.name` for mDNS.
///
/// # Errors
/// [`EndpointError::Config`] naming the key whose value does not parse.
pub fn mesh_config(config: &Config) -> Result<MeshConfig, EndpointError> {
    let mesh = &config.mesh;
    let bad = |key: String, value: &str, reason: &dyn std::fmt::Display| EndpointError::Config {
        endpoint: "mesh".into(),
        reason: format!("{key} = \"{value}\" is invalid: {reason}"),
    };
    let parse = |key: &str, values: &[String]| -> Result<Vec<Multiaddr>, EndpointError> {
        values
            .iter()
            .enumerate()
            .map(|(i, text)| {
                text.parse::<Multiaddr>()
                    .map_err(|e| bad(format!("mesh.{key}[{i}]"), text, &e))
            })
            .collect()
    };
    let mut remote = remote_config(config)?;
    remote.listen.clear();
    remote.dial.clear();
    let mut relay_limits = RelayLimits::default();
    relay_limits.max_reservations = mesh.relay_max_reservations;
    relay_limits.max_circuits = mesh.relay_max_circuits;
    relay_limits.circuit_duration = Duration::from_millis(mesh.relay_circuit_duration_ms);
    relay_limits.circuit_bytes = mesh.relay_circuit_bytes;
    let kad_protocol = StreamProtocol::try_from_owned(mesh.kad_protocol.clone())
        .map_err(|e| bad("mesh.kad_protocol".into(), &mesh.kad_protocol, &e))?;
    let route_key = if mesh.route_key.is_empty() {
        RouteKey::DEFAULT
    } else {
        RouteKey::from_secret(&mesh.route_key)
    };
    let mut out = MeshConfig::default();
    out.transport = Transport::Tcp;
    out.listen = parse("listen", &mesh.listen)?;
    out.dial = parse("bootstrap", &mesh.bootstrap)?;
    out.mdns = mesh.mdns;
    out.max_peers = mesh.max_peers;
    out.full_mesh_threshold = mesh.full_mesh_threshold;
    out.multi_hop = mesh.multi_hop;
    out.remote = remote;
    out.relay_server = mesh.relay_server;
    out.relay_limits = relay_limits;
    out.relays = parse("relays", &mesh.relays)?;
    out.hole_punching = mesh.hole_punching;
    out.autonat = mesh.autonat;
    out.external = parse("external", &mesh.external)?;
    out.kad_protocol = kad_protocol;
    out.route_key = route_key;
    out.validate()?;
    Ok(out)
}

/// A mesh endpoint from a validated [`Config`]: the identity from
/// `node.identity_file` (created with mode 0600 if missing; a fresh one if unset), the
/// settings from [`mesh_config`].
///
/// # Errors
/// [`EndpointError::Config`] naming the bad key or the identity file's problem.
pub fn mesh_endpoint(config: &Config) -> Result<MeshEndpoint, EndpointError> {
    mesh_endpoint_with(config, |_| {})
}

/// [`mesh_endpoint`], with `tweak` applied to the settings first (a recorder turns
/// `remote.session.record` on).
///
/// # Errors
/// As [`mesh_endpoint`].
pub fn mesh_endpoint_with(
    config: &Config,
    tweak: impl FnOnce(&mut MeshConfig),
) -> Result<MeshEndpoint, EndpointError> {
    let identity = |reason: String| EndpointError::Config {
        endpoint: "mesh".into(),
        reason,
    };
    let keypair = match &config.node.identity_file {
        Some(path) => Keypair::load_or_generate(path)
            .map_err(|e| identity(format!("node.identity_file: {e}")))?,
        None => Keypair::generate().map_err(|e| identity(format!("identity: {e}")))?,
    };
    let mut settings = mesh_config(config)?;
    tweak(&mut settings);
    MeshEndpoint::new(keypair, settings)
}
