//! The router's modules import one another one way only: no module reaches, directly or
//! through others, back to itself. Reads the sources (code outside `#[cfg(test)]` modules and
//! comments) and fails naming a cycle. `docs/architecture.md` ("The router's modules") draws
//! the same graph.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module name → modules of this crate it uses.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // A module's own file, and the files of its submodules (`linker/entries.rs` is `linker`).
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let module = path.file_name().unwrap().to_string_lossy().into_owned();
            // Only submodules the parent declares before its tests: unit tests (`mod tests;`,
            // `mod model;` under `#[cfg(test)]`) may use anything.
            let parent = std::fs::read_to_string(src.join(format!("{module}.rs"))).unwrap();
            let declared: Vec<String> = parent
                .lines()
                .map(str::trim)
                .take_while(|line| *line != "#[cfg(test)]")
                .filter_map(|line| line.strip_prefix("mod ")?.strip_suffix(';'))
                .map(str::to_owned)
                .collect();
            for inner in std::fs::read_dir(&path).unwrap() {
                let inner = inner.unwrap().path();
                let stem = inner.file_stem().unwrap().to_string_lossy().into_owned();
                if declared.contains(&stem) {
                    files.push((module.clone(), inner));
                }
            }
        } else {
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            files.push((module, path));
        }
    }
    for (name, path) in files {
        if path.extension().is_none_or(|e| e != "rs") || name == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut used = BTreeSet::new();
        for line in text.lines() {
            let line = line.trim();
            // Unit tests may use anything; they come last in every file.
            if line == "#[cfg(test)]" {
                break;
            }
            if line.starts_with("//") {
                continue;
            }
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                // `crate::{a, b}` groups and re-exports at the crate root (`crate::Router`).
                if !module.is_empty() && module != name {
                    used.insert(module);
                }
            }
            if line.starts_with("use crate::{") {
                panic!("{name}: name modules one `use` at a time, so this test can read them");
            }
        }
        graph.entry(name).or_default().extend(used);
    }
    graph
}

#[test]
fn router_modules_form_no_cycle() {
    let graph = imports();
    assert!(graph.len() >= 10, "read the router's modules: {graph:?}");
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            panic!(
                "import cycle among the router's modules: {}",
                cycle.join(" -> ")
            );
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            // A name used as `crate::X` that is no module (a re-export at the root) has no edges.
            if graph.contains_key(next) {
                visit(next, graph, path, done);
            }
        }
        path.pop();
        done.insert(node.to_owned());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_table_calls_no_handle_and_the_handles_sit_above_it() {
    let graph = imports();
    let linker = &graph["linker"];
    for above in ["intent", "interest", "router", "service", "shared"] {
        assert!(
            !linker.contains(above),
            "the linker (the table) must not use `{above}`: {linker:?}"
        );
    }
    for bottom in ["ring", "queue", "signal"] {
        assert!(
            !graph[bottom].contains("linker") && !graph[bottom].contains("shared"),
            "`{bottom}` must not know the table: {:?}",
            graph[bottom]
        );
    }
}
