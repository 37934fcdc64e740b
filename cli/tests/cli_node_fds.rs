//! `dndm node` out of file descriptors: run under `ulimit -n 64`, a crowd of idle connections
//! exhausts them, and the remote listener's accept fails with EMFILE for as long as
//! connections wait in its backlog. The listener pauses instead of spinning: one warning for
//! the whole episode (not one per failed accept), and it accepts again once the crowd leaves.

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod support;

use std::net::TcpStream;
use std::process::Command;

use support::{GUARD, Proc, Scratch};

/// Connections opened to the node: more than its 64 descriptors.
const CROWD: usize = 80;

#[test]
fn an_accept_loop_out_of_descriptors_pauses_and_logs_once() {
    let dir = Scratch::new("cli-node-fds");
    // Handshakes that wait for good keep their descriptors; a handshake budget above the
    // descriptor limit lets the descriptors run out first.
    let toml = dir.file(
        "fds.toml",
        "[node]\nname = \"fds\"\n\n[remote]\nenabled = true\nlisten = [\"127.0.0.1:0\"]\n\
         handshake_timeout_ms = 600000\n\n[remote.budget]\nhandshakes = 1024\n",
    );
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" node --config \"$1\" --stop-on-eof")
        .arg(env!("CARGO_BIN_EXE_dndm"))
        .arg(&toml)
        .env("DNDM_LOG", "warn,dndm_remote=info");
    let mut node = Proc::spawn_command("fds", command);
    let lines = node.lines_until("ready", GUARD);
    let addr = lines
        .iter()
        .find_map(|l| l.strip_prefix("remote tcp:"))
        .unwrap_or_else(|| panic!("no remote line in {lines:?}"))
        .to_owned();

    let crowd: Vec<TcpStream> = (0..CROWD)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let first = node.stderr_line("accept failed", GUARD);
    assert!(first.contains("pausing"), "{first}");
    // The crowd leaves: the handshakes end, descriptors free up, the listener accepts again.
    drop(crowd);
    let recovered = node.stderr_line("accepting connections again", GUARD);
    let cpu = cpu_seconds(node.id());
    let stderr = node.stderr();
    let failures = stderr
        .lines()
        .filter(|l| l.contains("accept failed"))
        .count();
    println!("{recovered}\nnode CPU so far: {cpu:?} s");
    assert_eq!(failures, 1, "one warning per episode:\n{stderr}");
    node.close_stdin();
    assert!(node.wait(GUARD).success(), "{}", node.stderr());
}

/// User plus system CPU time of process `pid` from `/proc/<pid>/stat`, in seconds (at the
/// usual 100 ticks per second); `None` without procfs.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) closed by ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}
