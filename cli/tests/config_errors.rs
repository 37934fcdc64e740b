//! Every malformed-configuration case of the operator guide (`docs/operations.md`, "The node
//! refuses its configuration"), run against the real `dndm node`: exit status 1, one `error:`
//! line naming the key, no panic. The cases are read from the guide, so a case documented is a
//! case tested.

#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use support::Scratch;

const DOC: &str = include_str!("../../docs/operations.md");

/// One row of the guide's table.
#[derive(Debug)]
struct Case {
    name: String,
    source: String,
    input: String,
    names: String,
}

/// The rows of the table that follows the section heading.
fn cases() -> Vec<Case> {
    let section = DOC
        .split_once("### The node refuses its configuration")
        .map(|(_, rest)| rest)
        .expect("the guide has the section");
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    section
        .lines()
        .skip_while(|line| !line.starts_with("| case |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
            assert_eq!(cells.len(), 4, "{line}");
            Case {
                name: cells[0].trim().to_owned(),
                source: cells[1].trim().to_owned(),
                input: unquote(cells[2]),
                names: unquote(cells[3]),
            }
        })
        .collect()
}

#[test]
fn every_documented_bad_config_fails_with_one_line_naming_the_key() {
    let cases = cases();
    assert!(cases.len() >= 48, "the guide lists {} cases", cases.len());
    let dir = Scratch::new("config-errors");
    // Held for the whole test: the port every "taken" case asks for.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port().to_string();
    let mut failures = Vec::new();
    for (index, case) in cases.iter().enumerate() {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dndm"));
        command.arg("node").arg("--stop-on-eof");
        for (var, _) in std::env::vars().filter(|(var, _)| var.starts_with("DNDM_")) {
            command.env_remove(var);
        }
        match case.source.as_str() {
            "file" => {
                let text = case.input.replace("\\n", "\n").replace("{taken}", &taken);
                let file = dir.file(&format!("case{index}.toml"), &format!("{text}\n"));
                command.arg("--config").arg(file);
            }
            "env" => {
                let (var, value) = case.input.split_once('=').unwrap();
                command.env(var, value);
            }
            other => panic!("{}: unknown source {other}", case.name),
        }
        // A case that wrongly starts a node stops at once: its standard input is empty.
        let output = command.stdin(Stdio::null()).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        let ok = output.status.code() == Some(1)
            && lines.len() == 1
            && lines[0].starts_with("error: ")
            && lines[0].contains(&case.names)
            && !stderr.contains("panicked")
            && !stderr.contains("internal error");
        if !ok {
            failures.push(format!(
                "{} ({}): status {:?}, expected one error line naming {}:\n{stderr}",
                case.name, case.input, output.status, case.names
            ));
        }
    }
    drop(holder);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
