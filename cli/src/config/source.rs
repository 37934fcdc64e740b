//! Where a configuration comes from: TOML text (with the line and key of every error) and
//! `DNDM_*` environment variables merged onto it, both read by one deserializer.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, ENV_PREFIX, ENV_SEPARATOR};

/// Parses TOML text into a configuration without validating it.
pub(super) fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
    let parsed = toml::Deserializer::parse(text)
        .map_err(|source| (None, source))
        .and_then(deserialize);
    parsed.map_err(|(key, source)| {
        let at = source.span().map(|span| span.start.min(text.len()));
        ConfigError::Parse {
            path: path.map(Path::to_path_buf),
            line: at.map(|at| line_of(text, at)),
            // A syntax error is found before any key is known: name the one written there.
            key: key.or_else(|| at.and_then(|at| key_written_at(text, at))),
            source: Box::new(source),
        }
    })
}

/// Deserializes a configuration from any TOML source (a file's text, or the table that
/// environment overrides were merged into): the one path both take, so that every error names
/// the dotted key it is at.
pub(super) fn deserialize<'de, D>(source: D) -> Result<Config, (Option<String>, D::Error)>
where
    D: serde::Deserializer<'de>,
{
    serde_path_to_error::deserialize(source).map_err(|error| {
        let path = error.path().to_string();
        let error = error.into_inner();
        // An unknown key is reported at its table; name the key itself.
        let message = error.to_string();
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field.to_owned());
        let key = match (path.as_str(), unknown) {
            (".", None) => None,
            (".", Some(field)) => Some(field),
            (table, Some(field)) => Some(format!("{table}.{field}")),
            (key, None) => Some(key.to_owned()),
        };
        (key, error)
    })
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The dotted key written on the line of byte `at` (`max_peers = ...` under `[mesh]` is
/// `mesh.max_peers`), for errors found while reading the text, before keys are known.
fn key_written_at(text: &str, at: usize) -> Option<String> {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or_default().trim();
    if let Some(header) = line.strip_prefix('[') {
        // A table header: `[remote` or a `[mesh]` defined twice names the table.
        let name = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or_default();
        return Some(name.trim().to_owned()).filter(|name| !name.is_empty());
    }
    let key = line.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('#') {
        return None;
    }
    let table = text[..start].lines().rev().find_map(|line| {
        let line = line.trim();
        let header = line.strip_prefix("[[").and_then(|l| l.split_once("]]"));
        let header = header.or_else(|| line.strip_prefix('[').and_then(|l| l.split_once(']')));
        header.map(|(name, _)| name.trim().to_owned())
    });
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

/// Reads and parses a file without validating it.
pub(super) fn read_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, Some(path))
}

/// The process's `DNDM_*` variables; other variables (even non-Unicode ones) are left out.
pub(super) fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name.to_str().filter(|name| name.starts_with(ENV_PREFIX)) else {
            continue;
        };
        match value.into_string() {
            Ok(value) => vars.push((name.to_owned(), value)),
            Err(value) => {
                return Err(ConfigError::Env {
                    var: name.to_owned(),
                    value: value.to_string_lossy().into_owned(),
                    reason: "value is not valid Unicode".to_owned(),
                });
            }
        }
    }
    Ok(vars)
}

/// A configuration with every optional field set, so its serialization has every key.
pub(super) fn exemplar() -> Config {
    let mut config = Config::default();
    config.node.identity_file = Some(PathBuf::from("identity"));
    config
}

/// The serialized [`exemplar`]: the schema for key listing and environment overrides.
pub(super) fn exemplar_table() -> toml::Table {
    // Invariant: the exemplar is a valid configuration (checked by a unit test): small integers,
    // booleans, Unicode strings and string lists, all of which TOML represents.
    toml::Table::try_from(exemplar()).expect("the default configuration serializes to TOML")
}

/// Appends the dotted keys of `table` under `prefix` to `keys`.
pub(super) fn collect_keys(table: &toml::Table, prefix: &str, keys: &mut Vec<String>) {
    for (key, value) in table {
        let dotted = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => collect_keys(inner, &dotted, keys),
            _ => keys.push(dotted),
        }
    }
}

/// Applies one environment variable to `table`, if it is a `DNDM_<SECTION>__<KEY>` override.
pub(super) fn apply_env(
    template: &toml::Table,
    table: &mut toml::Table,
    var: &str,
    raw: &str,
) -> Result<(), ConfigError> {
    let env_error = |reason: String| ConfigError::Env {
        var: var.to_owned(),
        value: raw.to_owned(),
        reason,
    };
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let Some((section, key)) = rest.split_once(ENV_SEPARATOR) else {
        let rest = rest.to_ascii_lowercase();
        if let Some(section) = template
            .keys()
            .find(|section| rest.starts_with(&format!("{section}_")))
        {
            return Err(env_error(format!(
                "separate section and key with a double underscore, e.g. DNDM_{}__<KEY>",
                section.to_ascii_uppercase()
            )));
        }
        return Ok(());
    };
    // `DNDM_REMOTE__BUDGET__ROUTES`: every part but the last names a (nested) table.
    let path: Vec<String> = std::iter::once(section)
        .chain(key.split(ENV_SEPARATOR))
        .map(str::to_ascii_lowercase)
        .collect();
    let dotted = path.join(".");
    let Some((key, tables)) = path.split_last() else {
        return Ok(());
    };
    let mut expected_table = Some(template);
    for name in tables {
        expected_table = expected_table
            .and_then(|t| t.get(name))
            .and_then(toml::Value::as_table);
    }
    let Some(expected) = expected_table.and_then(|t| t.get(key)) else {
        return Err(env_error(format!("unknown config key {dotted}")));
    };
    let value = env_value(raw, expected);
    let mut target = &mut *table;
    for name in tables {
        let Some(next) = target
            .entry(name.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
        else {
            return Err(env_error(format!("config key {name} is not a table")));
        };
        target = next;
    }
    target.insert(key.clone(), value);
    // Check now, so a type error is reported against the variable that caused it.
    if let Err((key, error)) = deserialize(toml::Value::Table(table.clone())) {
        let key = key.unwrap_or(dotted);
        return Err(env_error(format!("{key}: {}", error.message())));
    }
    Ok(())
}

/// Reads an environment value as TOML when it parses, shaped by the key's `expected` value.
fn env_value(raw: &str, expected: &toml::Value) -> toml::Value {
    let parsed = raw.parse::<toml::Value>().ok();
    match (expected, parsed) {
        (toml::Value::String(_), Some(toml::Value::String(text))) => toml::Value::String(text),
        (toml::Value::String(_), _) => toml::Value::String(raw.to_owned()),
        (toml::Value::Array(_), Some(array @ toml::Value::Array(_))) => array,
        (toml::Value::Array(_), _) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| toml::Value::String(item.to_owned()))
                .collect(),
        ),
        (_, Some(value)) => value,
        (_, None) => toml::Value::String(raw.to_owned()),
    }
}
