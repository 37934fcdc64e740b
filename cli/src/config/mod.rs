//! Configuration: one [`Config`] for a dndm node, read from TOML and `DNDM_*` environment
//! variables, with documented defaults and a [`Config::validate`] that checks every field.
//!
//! # Sources, in order
//!
//! 1. Defaults ([`Config::default`], or a preset: [`Config::in_process`], [`Config::lan_mesh`]).
//! 2. A TOML file ([`Config::from_file`], [`Config::from_toml_str`]); every section and key is
//!    optional and unknown keys are rejected.
//! 3. Environment overrides ([`Config::with_env_overrides`]): `DNDM_<SECTION>__<KEY>=<value>`,
//!    a double underscore between section and key, e.g. `DNDM_MESH__MAX_PEERS=32`,
//!    `DNDM_NODE__NAME=robot1`, `DNDM_REMOTE__LISTEN=["127.0.0.1:7000"]`.
//!
//! [`Config::load`] does all three. Validation always checks every field, including fields of
//! disabled sections (`mesh.enabled = false` with `mesh.max_peers = 0` is rejected), and reports
//! every problem with its dotted field name and value.
//!
//! ```
//! use dndm_cli::Config;
//!
//! let config = Config::from_toml_str("[mesh]\nenabled = true\nmax_peers = 20\n")?
//!     .with_env_overrides([("DNDM_NODE__NAME", "robot1")])?;
//! assert_eq!(config.node.name, "robot1");
//! assert_eq!(config.mesh.max_peers, 20);
//!
//! let error = Config::from_toml_str("[mesh]\nmax_peers = 0\n").unwrap_err();
//! assert!(error.to_string().starts_with("mesh.max_peers = 0 is invalid"));
//! assert!(Config::keys().contains(&"remote.keepalive_ms".to_owned()));
//! # Ok::<(), dndm_cli::ConfigError>(())
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use dndm::core::{BudgetConfig, InvalidSetting, Overflow, Signing};
use dndm::{PeerId, RoutePattern};

mod build;
mod mesh;
mod remote;
mod source;

pub use build::{mesh_config, mesh_endpoint, mesh_endpoint_with, remote_config, router_builder};
pub use mesh::MeshSection;
pub use remote::{AclRuleSection, RemoteSection};
#[cfg(test)]
use source::exemplar;
use source::{apply_env, collect_keys, deserialize, env_vars, exemplar_table, parse, read_file};

/// Prefix of environment variables that override configuration keys.
const ENV_PREFIX: &str = "DNDM_";

/// Separator between section and key in an environment variable name.
const ENV_SEPARATOR: &str = "__";

/// Upper bound of most millisecond settings: one hour.
const MAX_MS: u64 = 3_600_000;

/// Upper bound of the remote link's handshake and keepalive intervals: ten minutes.
const MAX_LINK_MS: u64 = 600_000;

/// Longest accepted `node.name`, in bytes.
const MAX_NAME_LEN: usize = 64;

/// Largest accepted `mesh.max_peers`.
const MAX_PEERS: usize = 10_000;

/// Shortest accepted non-empty `mesh.route_key`, in bytes: shorter secrets are guessable.
const MIN_ROUTE_KEY_LEN: usize = 16;

/// Longest accepted `mesh.kad_protocol`, in bytes (multistream-select's limit on names).
const MAX_PROTOCOL_LEN: usize = 140;

/// Smallest accepted `remote.max_frame_len`, in bytes.
const MIN_FRAME_LEN: usize = 1024;

/// Largest accepted `remote.max_frame_len`, in bytes (64 MiB).
const MAX_FRAME_LEN: usize = 64 * 1024 * 1024;

/// A node's configuration: one section per component.
///
/// Every field has a documented default, so an empty TOML file (or [`Config::default`]) is a
/// valid in-process configuration. Fields are public; call [`Config::validate`] after changing
/// them in code (the constructors that read TOML or the environment validate for you).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// This node: its name and identity.
    pub node: NodeSection,
    /// The in-process router: queues, overflow policy, timeouts.
    pub router: RouterSection,
    /// Point-to-point remote links (TCP or Unix sockets).
    pub remote: RemoteSection,
    /// The libp2p mesh.
    pub mesh: MeshSection,
    /// The Prometheus metrics endpoint.
    pub metrics: MetricsSection,
}

/// The `[node]` section: who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NodeSection {
    /// Human-readable node name, shown in logs, snapshots and metrics labels. Default `"dndm"`.
    /// Non-empty, at most 64 bytes, no whitespace or control characters.
    pub name: String,
    /// File holding the node's ed25519 identity, created on first start if missing. Default
    /// none: a fresh identity (and so a new PeerId) on every start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// PeerIds this node must have a session with to report ready (`GET /readyz`): e.g. the
    /// gateway a robot reports to. Default none. Each must be a valid PeerId (`12D3KooW...`).
    pub required_peers: Vec<String>,
}

/// The `[router]` section: in-process delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RouterSection {
    /// Messages buffered per subscriber before [`RouterSection::overflow`] applies. Default
    /// 1024; 1 to 1 048 576.
    pub queue_capacity: usize,
    /// What a full subscriber queue does with the next message. Default
    /// [`Overflow::DropOldest`].
    pub overflow: Overflow,
    /// How long a send waits for queue space under [`Overflow::Block`] before failing, in
    /// milliseconds. Default 1000; 1 to 3 600 000.
    pub send_timeout_ms: u64,
    /// How long a request waits for its reply before failing, in milliseconds. Default 5000; 1 to
    /// 3 600 000.
    pub request_timeout_ms: u64,
    /// Requests in flight at once per service; further requests wait. Default 256; 1 to 65 536.
    pub max_concurrent_requests: usize,
}

/// The `[metrics]` section: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsSection {
    /// Whether metrics are served over HTTP. Default false.
    pub enabled: bool,
    /// Socket address the metrics endpoint listens on. Default `127.0.0.1:9464`.
    pub listen: String,
}

/// Why a configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field's value breaks a rule.
    #[error("{field} = {value} is invalid: {reason}")]
    Invalid {
        /// The dotted key, e.g. `mesh.max_peers`.
        field: String,
        /// The offending value as written in TOML (strings quoted).
        value: String,
        /// The rule it breaks, e.g. `must be between 1 and 10000`.
        reason: String,
    },
    /// More than one problem; the first is shown, [`ConfigError::problems`] lists all.
    #[error("{} (and {} more)", .0.first().map(ToString::to_string).unwrap_or_default(), .0.len().saturating_sub(1))]
    Multiple(Vec<ConfigError>),
    /// The TOML text is malformed or does not fit the schema (unknown key, wrong type).
    #[error("cannot parse config{}{}: {}{}", origin(.path.as_deref()), at_line(.line), key_prefix(.key.as_deref()), .source.message())]
    Parse {
        /// The file the text came from, if any.
        path: Option<PathBuf>,
        /// The 1-based line of the problem, when known.
        line: Option<usize>,
        /// The dotted key the problem is at (`mesh.max_peers`, `remote.acl[0].publish`), when
        /// known: always for a wrong type, an unknown key or an unknown variant.
        key: Option<String>,
        /// The cause (boxed: it is large).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// An environment override names an unknown key or has a value of the wrong type.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        /// The variable, e.g. `DNDM_MESH__MAX_PEERS`.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong, naming the config key when known.
        reason: String,
    },
    /// Reading the config file failed.
    #[error("cannot read config file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot be written as TOML (e.g. an integer beyond TOML's range).
    #[error("cannot write config as toml: {0}")]
    Serialize(#[source] Box<toml::ser::Error>),
}

impl Config {
    /// Everything in one process: no remote links, no mesh, no metrics endpoint. The same as
    /// [`Config::default`], named for readability.
    pub fn in_process() -> Self {
        Self::default()
    }

    /// A node on a LAN mesh: mesh enabled, listening on every interface on an ephemeral TCP
    /// port (`/ip4/0.0.0.0/tcp/0`), discovering peers with mDNS.
    pub fn lan_mesh() -> Self {
        let mut config = Self::default();
        config.mesh.enabled = true;
        config.mesh.listen = vec!["/ip4/0.0.0.0/tcp/0".to_owned()];
        config.mesh.mdns = true;
        config
    }

    /// Parses TOML text and validates the result. Missing sections and keys take their defaults.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for malformed TOML, unknown keys or wrong types;
    /// [`ConfigError::Invalid`] or [`ConfigError::Multiple`] when a value breaks a rule.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config = parse(text, None)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    ///
    /// # Errors
    /// [`ConfigError::Io`] when the file cannot be read, otherwise as
    /// [`Config::from_toml_str`], with the file named in parse errors.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let config = read_file(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the file at `path` (or starts from the defaults when `None`), applies the process's
    /// `DNDM_<SECTION>__<KEY>` environment variables (see [`Config::with_env_overrides`]) and
    /// validates the result. The file alone need not be valid: the environment may fix it.
    ///
    /// # Errors
    /// As [`Config::from_file`] and [`Config::with_env_overrides`]; [`ConfigError::Env`] for a
    /// `DNDM_` variable whose value is not Unicode.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let base = match path {
            Some(path) => read_file(path)?,
            None => Self::default(),
        };
        base.with_env_overrides(env_vars()?)
    }

    /// Applies environment overrides and validates the result.
    ///
    /// A variable `DNDM_<SECTION>__<KEY>` (case-insensitive after the prefix) sets
    /// `<section>.<key>`. Its value is read as a TOML value when it parses as one (`8`, `true`,
    /// `["127.0.0.1:7000"]`, `"quoted"`), otherwise as a plain string. For a string key the
    /// value is always the text itself (so `DNDM_NODE__NAME=42` names the node `"42"`); for a
    /// list key, text that is not a TOML array is split at commas (`DNDM_REMOTE__CONNECT=a:1,b:2`;
    /// empty text is an empty list).
    ///
    /// Other variables are ignored, including `DNDM_*` variables without a double underscore,
    /// except that `DNDM_<SECTION>_<...>` for a known section (a single underscore) is rejected
    /// as a likely typo.
    ///
    /// # Errors
    /// [`ConfigError::Env`] naming the variable when it names an unknown section or key or its
    /// value has the wrong type or shape; [`ConfigError::Invalid`] or [`ConfigError::Multiple`]
    /// when the resulting configuration breaks a rule; [`ConfigError::Serialize`] when `self`
    /// holds a value TOML cannot represent.
    pub fn with_env_overrides<I, K, V>(self, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let template = exemplar_table();
        let mut table = self.to_table()?;
        for (var, value) in vars {
            apply_env(&template, &mut table, var.as_ref(), value.as_ref())?;
        }
        let config =
            deserialize(toml::Value::Table(table)).map_err(|(key, source)| ConfigError::Parse {
                path: None,
                line: None,
                key,
                source: Box::new(source),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every field, including those of disabled sections, and cross-field rules.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field and value when one rule is broken,
    /// [`ConfigError::Multiple`] listing all of them when more are.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Problems::default();
        self.node.check(&mut problems);
        self.router.check(&mut problems);
        self.remote.check(&mut problems);
        self.mesh.check(&mut problems);
        self.metrics.check(&mut problems);
        problems.into_result()
    }

    /// Every configuration key, dotted (`node.name`, `mesh.max_peers`, ...), sorted. Derived
    /// from the serialized configuration, so it always matches what the parser accepts.
    pub fn keys() -> Vec<String> {
        let mut keys = Vec::new();
        collect_keys(&exemplar_table(), "", &mut keys);
        keys.sort();
        keys
    }

    /// The configuration as TOML text, which [`Config::from_toml_str`] reads back unchanged.
    ///
    /// # Errors
    /// [`ConfigError::Serialize`] when a value cannot be represented in TOML (an integer above
    /// `i64::MAX`, a path that is not Unicode); never for a valid configuration.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|error| ConfigError::Serialize(Box::new(error)))
    }

    fn to_table(&self) -> Result<toml::Table, ConfigError> {
        toml::Table::try_from(self).map_err(|error| ConfigError::Serialize(Box::new(error)))
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: "dndm".to_owned(),
            identity_file: None,
            required_peers: Vec::new(),
        }
    }
}

impl NodeSection {
    fn check(&self, problems: &mut Problems) {
        let name = &self.name;
        if name.is_empty() {
            problems.invalid("node.name", quoted(name), "must not be empty");
        } else if name.len() > MAX_NAME_LEN {
            problems.invalid(
                "node.name",
                quoted(name),
                format!(
                    "must be at most {MAX_NAME_LEN} bytes long, is {}",
                    name.len()
                ),
            );
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.invalid(
                "node.name",
                quoted(name),
                "must not contain whitespace or control characters",
            );
        }
        if let Some(path) = &self.identity_file
            && path.as_os_str().is_empty()
        {
            problems.invalid("node.identity_file", "\"\"", "must not be empty when set");
        }
        check_each::<PeerId>(
            problems,
            "node.required_peers",
            &self.required_peers,
            "a PeerId",
        );
    }
}

impl Default for RouterSection {
    fn default() -> Self {
        Self {
            queue_capacity: 1024,
            overflow: Overflow::DropOldest,
            send_timeout_ms: 1000,
            request_timeout_ms: 5000,
            max_concurrent_requests: 256,
        }
    }
}

impl RouterSection {
    /// [`RouterSection::send_timeout_ms`] as a duration.
    pub fn send_timeout(&self) -> Duration {
        Duration::from_millis(self.send_timeout_ms)
    }

    /// [`RouterSection::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    fn check(&self, problems: &mut Problems) {
        problems.range("router.queue_capacity", self.queue_capacity, 1, 1_048_576);
        problems.range("router.send_timeout_ms", self.send_timeout_ms, 1, MAX_MS);
        problems.range(
            "router.request_timeout_ms",
            self.request_timeout_ms,
            1,
            MAX_MS,
        );
        problems.range(
            "router.max_concurrent_requests",
            self.max_concurrent_requests,
            1,
            65_536,
        );
    }
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:9464".to_owned(),
        }
    }
}

impl MetricsSection {
    fn check(&self, problems: &mut Problems) {
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.invalid(
                "metrics.listen",
                quoted(&self.listen),
                "must be a socket address such as 127.0.0.1:9464",
            );
        }
    }
}

impl ConfigError {
    /// Every problem this error stands for: the list of a [`ConfigError::Multiple`], otherwise
    /// the error itself.
    pub fn problems(&self) -> &[ConfigError] {
        match self {
            Self::Multiple(problems) => problems,
            other => std::slice::from_ref(other),
        }
    }
}

/// Validation problems collected while checking every field.
#[derive(Debug, Default)]
struct Problems(Vec<ConfigError>);

impl Problems {
    fn invalid(
        &mut self,
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) {
        self.0.push(ConfigError::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    fn range<T: PartialOrd + fmt::Display>(&mut self, field: &str, value: T, min: T, max: T) {
        if value < min || value > max {
            self.invalid(field, &value, format!("must be between {min} and {max}"));
        }
    }

    /// Adds problems a component's own check found (e.g. the budgets').
    fn extend(&mut self, found: Vec<InvalidSetting>) {
        for problem in found {
            self.invalid(problem.field, problem.value, problem.reason);
        }
    }

    fn into_result(mut self) -> Result<(), ConfigError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(ConfigError::Multiple(self.0)),
        }
    }
}

/// Checks that every entry of the list `field` parses as `P` (described as `expected`).
fn check_each<P>(problems: &mut Problems, field: &str, entries: &[String], expected: &str)
where
    P: std::str::FromStr,
    P::Err: std::fmt::Display,
{
    for (index, entry) in entries.iter().enumerate() {
        if let Err(error) = entry.parse::<P>() {
            problems.invalid(
                format!("{field}[{index}]"),
                quoted(entry),
                format!("must be {expected}: {error}"),
            );
        }
    }
}

/// Checks one `remote.listen` or `remote.connect` entry: a socket address or `unix:<path>`,
/// with `pinned`, optionally after `<peer id>@`.
fn check_link_address(
    problems: &mut Problems,
    field: &str,
    index: usize,
    address: &str,
    pinned: bool,
) {
    let name = format!("{field}[{index}]");
    let mut rest = address;
    // A unix path may itself contain '@'; a peer id never starts with "unix:".
    if pinned
        && !address.starts_with("unix:")
        && let Some((peer, after)) = address.split_once('@')
    {
        if let Err(e) = peer.parse::<PeerId>() {
            problems.invalid(
                name,
                quoted(address),
                format!("the part before '@' must be a peer id: {e}"),
            );
            return;
        }
        rest = after;
    }
    let valid = match rest.strip_prefix("unix:") {
        Some(path) => !path.is_empty(),
        None => rest.parse::<SocketAddr>().is_ok(),
    };
    if !valid {
        let expected = if pinned {
            "must be a socket address (127.0.0.1:7000, [::1]:7000) or unix:<path>, \
             optionally after <peer id>@"
        } else {
            "must be a socket address (127.0.0.1:7000, [::1]:7000) or unix:<path>"
        };
        problems.invalid(name, quoted(address), expected);
    }
}

/// A string as TOML would show it, for error messages.
fn quoted(value: &str) -> String {
    format!("{value:?}")
}

/// `" file <path>"` or nothing, for [`ConfigError::Parse`].
fn origin(path: Option<&Path>) -> String {
    path.map(|path| format!(" file {}", path.display()))
        .unwrap_or_default()
}

/// `"<key>: "` or nothing, for [`ConfigError::Parse`].
fn key_prefix(key: Option<&str>) -> String {
    key.map(|key| format!("{key}: ")).unwrap_or_default()
}

/// `" at line <n>"` or nothing, for [`ConfigError::Parse`].
fn at_line(line: &Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
