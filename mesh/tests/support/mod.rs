//! What the mesh tests share: a test message and nodes on libp2p's memory transport.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used
)]

use std::sync::Arc;

use dndm_core::Keypair;
use dndm_mesh::{MeshConfig, MeshEndpoint, Transport};
use dndm_router::Router;
pub use dndm_test_support::Reading;

pub mod plain;

/// A router named `n<seed>` with a mesh endpoint on the memory transport, listening on and
/// dialing the given memory ports.
pub async fn node(seed: u8, listen: Option<u64>, dial: Option<u64>) -> (Router, MeshEndpoint) {
    node_with(seed, listen, dial, |_| {}).await
}

/// [`node`], with `configure` applied to its settings first.
pub async fn node_with(
    seed: u8,
    listen: Option<u64>,
    dial: Option<u64>,
    configure: impl FnOnce(&mut MeshConfig),
) -> (Router, MeshEndpoint) {
    let router = Router::builder().name(format!("n{seed}")).build().unwrap();
    let mut config = MeshConfig::default();
    config.transport = Transport::Memory;
    config.listen = listen
        .into_iter()
        .map(|p| format!("/memory/{p}").parse().unwrap())
        .collect();
    config.dial = dial
        .into_iter()
        .map(|p| format!("/memory/{p}").parse().unwrap())
        .collect();
    configure(&mut config);
    let endpoint = MeshEndpoint::new(Keypair::from_seed([seed; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();
    (router, endpoint)
}

/// A memory port unique to this process and test.
pub fn port(offset: u64) -> u64 {
    u64::from(std::process::id()) * 100 + offset
}

/// The libp2p PeerId of a mesh endpoint.
pub fn libp2p_peer(endpoint: &MeshEndpoint) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(&endpoint.peer_id().to_bytes()).unwrap()
}

/// A memory address of [`port`]`(offset)`.
pub fn memory(offset: u64) -> libp2p::Multiaddr {
    format!("/memory/{}", port(offset)).parse().unwrap()
}
