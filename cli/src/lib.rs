//! The node behind the `dndm` command-line tool, as a library: the node's configuration file
//! and environment schema ([`Config`]), and its mapping onto each component's own settings
//! ([`config::router_builder`], [`config::remote_config`], [`config::mesh_config`],
//! [`config::mesh_endpoint`]).
//!
//! The components (`dndm-router`, `dndm-remote`, `dndm-mesh`) know nothing of this file: each
//! owns and checks its own settings; this crate is the one place that reads TOML and `DNDM_*`
//! variables and says which key a bad value came from.

pub mod config;

pub use config::{
    AclRuleSection, Config, ConfigError, MeshSection, MetricsSection, NodeSection, RemoteSection,
    RouterSection,
};
