//! `dndm completions SHELL` and `dndm man [COMMAND]` print scripts and pages generated from the
//! same clap definitions that parse the arguments.

#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

/// The subcommands every script and the main page must mention.
const COMMANDS: [&str; 14] = [
    "demo",
    "record",
    "verify",
    "info",
    "replay",
    "keygen",
    "node",
    "pub",
    "sub",
    "peers",
    "routes",
    "bench",
    "completions",
    "man",
];

fn dndm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(args)
        .output()
        .unwrap()
}

fn stdout_of(args: &[&str]) -> String {
    let out = dndm(args);
    assert!(
        out.status.success(),
        "dndm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_shell_gets_a_script_that_completes_every_subcommand_and_flag() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout_of(&["completions", shell]);
        for command in COMMANDS {
            assert!(script.contains(command), "{shell}: {command} missing");
        }
        // A subcommand's own flags are there too.
        assert!(
            script.contains("stop-on-eof"),
            "{shell}: dndm node --stop-on-eof"
        );
        assert!(
            script.contains("round-trips"),
            "{shell}: dndm bench --round-trips"
        );
    }
    let bash = stdout_of(&["completions", "bash"]);
    assert!(bash.contains("complete -F _dndm"), "{bash}");
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = dndm(&["completions", "cmd.exe"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn the_man_page_is_roff_listing_every_subcommand() {
    let page = stdout_of(&["man"]);
    assert!(
        page.starts_with(".ie \\n(.g .ds Aq"),
        "roff preamble: {page}"
    );
    assert!(page.contains(".TH dndm 1"), "{page}");
    assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
    for command in COMMANDS {
        assert!(
            page.contains(&format!("dndm\\-{command}(1)")),
            "{command}: {page}"
        );
    }
}

#[test]
fn a_subcommand_has_its_own_page_with_its_flags() {
    let page = stdout_of(&["man", "node"]);
    assert!(page.contains(".TH dndm-node 1"), "{page}");
    assert!(page.contains("\\-\\-config"), "{page}");
    assert!(page.contains("\\-\\-stop\\-on\\-eof"), "{page}");
}

#[test]
fn the_man_page_of_an_unknown_command_is_one_error_line() {
    let out = dndm(&["man", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: no command \"nope\"; the commands are demo, keygen"),
        "{stderr}"
    );
}
