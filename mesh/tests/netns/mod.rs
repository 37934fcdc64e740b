//! The multi-host harness shared by the network-namespace tests: a testbed driven by one of
//! the project's scripts in `tests/netns/`, and child nodes that run this test binary inside a
//! host, take commands on stdin and report `@@ <report>` lines on stdout.

#![allow(dead_code)] // Each test binary uses its own part of the harness.

use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};

/// The environment variable naming a child's host (its role).
pub(crate) const ROLE: &str = "DNDM_NETNS_ROLE";
/// Set to 1 to skip the namespace tests (they need root).
pub(crate) const SKIP: &str = "DNDM_SKIP_NETNS";
/// Marks a child's report lines (libtest prints its own lines on the same stdout).
pub(crate) const MARK: &str = "@@ ";
/// Longest wait for any one report of a child: a failure guard, never a pace. Generous: on a
/// loaded 2-core machine (a whole test suite next to two busy loops) one mDNS discovery and
/// resume after a partition was seen to take over 30 s.
pub(crate) const GUARD: Duration = Duration::from_secs(90);

/// Prints a report line for the parent.
pub(crate) fn say(line: impl std::fmt::Display) {
    println!("{MARK}{line}");
}

/// A child subscriber's bookkeeping: checks that sequence numbers arrive in order, each once,
/// and reports `got N` every `report_every` messages, `bad …` on a gap or duplicate, and
/// `done T` once exactly the `expect`ed T arrived.
pub(crate) struct InOrder {
    /// Messages received so far (the next sequence number due).
    pub(crate) next: u64,
    target: Option<u64>,
    report_every: u64,
}

impl InOrder {
    pub(crate) fn new(report_every: u64) -> Self {
        Self {
            next: 0,
            target: None,
            report_every,
        }
    }

    /// Records one received sequence number.
    pub(crate) fn received(&mut self, seq: u64) {
        let next = self.next;
        if seq != next {
            say(format!("bad got seq {seq} where {next} was due"));
        }
        self.next = seq.max(next) + 1;
        if self.next.is_multiple_of(self.report_every) {
            say(format!("got {}", self.next));
        }
        self.check();
    }

    /// Answers `done T` once exactly `target` messages are in (now or later).
    pub(crate) fn expect(&mut self, target: u64) {
        self.target = Some(target);
        self.check();
    }

    fn check(&self) {
        match self.target {
            Some(t) if self.next == t => say(format!("done {t}")),
            Some(t) if self.next > t => {
                say(format!("bad received {} messages, expected {t}", self.next));
            }
            _ => {}
        }
    }
}

/// Whether the test should run: false (with a line) when skipped; panics without root.
pub(crate) fn should_run(test: &str) -> bool {
    if std::env::var(SKIP).is_ok_and(|v| v == "1") {
        eprintln!("{test} skipped: {SKIP}=1");
        return false;
    }
    assert!(
        is_root(),
        "{test} needs root to create network namespaces (CI runs as root): run it as root, or set {SKIP}=1 to skip it"
    );
    true
}

/// Whether this process runs with effective uid 0.
pub(crate) fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// A testbed of this test run (namespaces prefixed with a tag and this process's id), driven
/// by one of the project's scripts in `tests/netns/`; dropping it takes the testbed down, on
/// panic too.
pub(crate) struct Testbed {
    script: &'static str,
    prefix: String,
}

impl Testbed {
    fn script(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/netns/{name}"))
    }

    /// Installs what the script needs (`setup.sh <setup>...`), then runs `<script> up <up>...`.
    pub(crate) fn up(script: &'static str, setup: &[&str], tag: &str, up: &[&str]) -> Self {
        // Through bash: a checkout that lost the executable bits still runs them.
        let status = Command::new("bash")
            .arg(Self::script("setup.sh"))
            .args(setup)
            .status()
            .unwrap();
        assert!(status.success(), "tests/netns/setup.sh failed: {status}");
        let testbed = Self {
            script,
            prefix: format!("{tag}{}", std::process::id()),
        };
        testbed.run(&[&["up"], up].concat());
        testbed
    }

    pub(crate) fn command(&self) -> Command {
        let mut command = Command::new("bash");
        command.arg(Self::script(self.script));
        command.env("DNDM_NETNS_PREFIX", &self.prefix);
        command
    }

    /// Runs the script with `args`; it must succeed.
    pub(crate) fn run(&self, args: &[&str]) {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {} failed ({}): {}",
            self.script,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        match self.command().arg("down").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "{} down failed: {}",
                self.script,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("{} down did not run: {e}", self.script),
        }
    }
}

/// A child node running in one host of the testbed.
pub(crate) struct Host {
    pub(crate) name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    /// Reports, with when they arrived.
    lines: Receiver<(Instant, String)>,
    /// Every report seen, for `last_count`.
    seen: Vec<String>,
}

impl Host {
    /// Runs this test binary's ignored test `child_test` inside host `name`, with the role in
    /// the environment; its `@@ ` lines are its reports.
    pub(crate) fn spawn(testbed: &Testbed, name: &'static str, child_test: &str) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = testbed
            .command()
            .args(["exec", name])
            .arg(exe)
            .args([
                "--ignored",
                "--exact",
                child_test,
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = sync_channel(4096);
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test netns_child ... " in front of the first report.
                if let Some((_, report)) = line.split_once(MARK)
                    && tx.send((Instant::now(), report.to_owned())).is_err()
                {
                    return;
                }
            }
        });
        // The child's stderr (panics, DNDM_LOG tracing), prefixed with its host. Threads spawned
        // here inherit the test's output capture: shown when the test fails or with --nocapture.
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || forward_stderr(name, stderr));
        let stdin = child.stdin.take();
        Self {
            name,
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    pub(crate) fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the next report starting with `prefix` and returns it; a `bad …` report fails.
    pub(crate) fn expect(&mut self, prefix: &str) -> String {
        self.expect_since(None, prefix)
    }

    /// As `expect`, skipping reports that arrived before `since` (state reports from before an
    /// event must not answer for it).
    pub(crate) fn expect_since(&mut self, since: Option<Instant>, prefix: &str) -> String {
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (at, line) = match self.lines.recv_timeout(left) {
                Ok(report) => report,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no \"{prefix}…\" within {GUARD:?}; last reports: {:?}",
                    self.name,
                    self.last_reports()
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: stopped before reporting \"{prefix}…\" (exit: {:?}); last reports: {:?}",
                    self.name,
                    self.child.try_wait(),
                    self.last_reports()
                ),
            };
            assert!(!line.starts_with("bad "), "{}: {line}", self.name);
            self.seen.push(line.clone());
            if line.starts_with(prefix) && since.is_none_or(|since| at >= since) {
                return line;
            }
        }
    }

    /// As `expect`, but a matching report seen earlier (while waiting for another) counts.
    pub(crate) fn expect_or_seen(&mut self, prefix: &str) -> String {
        match self.seen.iter().find(|l| l.starts_with(prefix)) {
            Some(line) => line.clone(),
            None => self.expect(prefix),
        }
    }

    /// The first report since `since` that starts with any of `prefixes`.
    pub(crate) fn expect_any_since(&mut self, since: Instant, prefixes: &[&str]) -> String {
        let deadline = Instant::now() + GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((at, line)) = self.lines.recv_timeout(left) else {
                panic!(
                    "{}: none of {prefixes:?} within {GUARD:?}; last reports: {:?}",
                    self.name,
                    self.last_reports()
                );
            };
            assert!(!line.starts_with("bad "), "{}: {line}", self.name);
            self.seen.push(line.clone());
            if at >= since && prefixes.iter().any(|p| line.starts_with(p)) {
                return line;
            }
        }
    }

    pub(crate) fn last_reports(&self) -> &[String] {
        &self.seen[self.seen.len().saturating_sub(8)..]
    }

    /// The largest count of the reports `<prefix><count>` seen so far.
    pub(crate) fn last_count(&self, prefix: &str) -> u64 {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix(prefix)?.parse().ok())
            .max()
            .unwrap_or(0)
    }

    /// Asks the child to close its router and exit, and checks it did so cleanly.
    pub(crate) fn quit(&mut self) {
        self.send("quit");
        self.expect("bye ");
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // After a failure the child may still run: end it (the testbed's `down` would, too).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward_stderr(name: &str, stderr: impl Read) {
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        eprintln!("[{name}] {line}");
    }
}
