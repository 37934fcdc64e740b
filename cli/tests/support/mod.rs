//! Helpers for tests that run the `dndm` binary: child processes whose output lines are read
//! with timeouts (never sleeps), killed when dropped; `dndm node` processes from TOML; scratch
//! directories removed when dropped.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Marks the end of a child's stderr in its collected lines (never printed by `dndm`).
const STDERR_END: &str = "\u{0}end of stderr";

/// Output lines buffered per child before its reader thread waits.
const LINES: usize = 4096;

/// A `dndm` child process. Dropping it kills the process.
pub(crate) struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Stderr lines so far; the condvar is notified on each new line.
    stderr: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Proc {
    /// Starts `dndm args...` with piped stdin, stdout and stderr.
    pub(crate) fn spawn(name: &str, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dndm"));
        command.args(args).env("DNDM_LOG", "warn");
        Self::spawn_command(name, command)
    }

    /// Starts `command` (which runs `dndm`, possibly through a shell) with piped stdin, stdout
    /// and stderr.
    pub(crate) fn spawn_command(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start dndm: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = sync_channel(LINES);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = text.find('\n') {
                    sink.0.lock().unwrap().push(text[..end].to_owned());
                    sink.1.notify_all();
                    text.drain(..=end);
                }
            }
            let mut lines = sink.0.lock().unwrap();
            if !text.is_empty() {
                lines.push(text);
            }
            // The end of stderr: `wait` returns only after it, so no last line is missed.
            lines.push(STDERR_END.to_owned());
            sink.1.notify_all();
        });
        Self {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    /// The next stdout line, waiting up to `timeout`; panics (showing stderr) otherwise.
    pub(crate) fn line(&self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no output line within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{}: stdout closed; stderr:\n{}", self.name, self.stderr())
            }
        }
    }

    /// Stdout lines up to and including the first equal to `last`, within `timeout`.
    pub(crate) fn lines_until(&self, last: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.line(left);
            let done = line == last;
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Writes `text` to the child's stdin.
    pub(crate) fn write(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the child's stdin (end of input).
    pub(crate) fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `timeout` for the child to exit: its stdout closes first.
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: still running after {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                ),
            }
        }
        let status = self.child.wait().unwrap();
        let (lines, written) = &*self.stderr;
        let guard = lines.lock().unwrap();
        let _ = written
            .wait_timeout_while(guard, timeout, |lines| {
                lines.last().is_none_or(|l| l != STDERR_END)
            })
            .unwrap();
        status
    }

    /// Kills the child at once (SIGKILL on Unix: it cannot say goodbye) and waits for it.
    pub(crate) fn kill(&mut self) -> ExitStatus {
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }

    /// Everything the child wrote to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        let lines = self.stderr.0.lock().unwrap();
        let lines: Vec<&str> = lines
            .iter()
            .map(String::as_str)
            .filter(|l| *l != STDERR_END)
            .collect();
        lines.join("\n")
    }

    /// Waits up to `timeout` for a stderr line containing `text`; returns it.
    pub(crate) fn stderr_line(&self, text: &str, timeout: Duration) -> String {
        let (lines, written) = &*self.stderr;
        let found = |lines: &Vec<String>| lines.iter().find(|l| l.contains(text)).cloned();
        let guard = lines.lock().unwrap();
        let (guard, _) = written
            .wait_timeout_while(guard, timeout, |lines| found(lines).is_none())
            .unwrap();
        found(&guard).unwrap_or_else(|| {
            panic!(
                "{}: no stderr line with {text:?} within {timeout:?}; stderr:\n{}",
                self.name,
                guard.join("\n")
            )
        })
    }

    /// The child's process id.
    pub(crate) fn id(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Failure guard for every wait (the machine may be busy building).
pub(crate) const GUARD: Duration = Duration::from_secs(90);

/// A node's TOML: a loopback mesh without mDNS, metrics on an ephemeral port.
pub(crate) fn node_toml(name: &str, bootstrap: Option<&str>) -> String {
    let bootstrap = bootstrap.map_or_else(String::new, |a| format!("bootstrap = [\"{a}\"]\n"));
    format!(
        "[node]\nname = \"{name}\"\n\n[mesh]\nenabled = true\nlisten = [\"/ip4/127.0.0.1/tcp/0\"]\nmdns = false\n{bootstrap}\n[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// A started node: its PeerId, first mesh address and metrics URL.
pub(crate) struct Node {
    pub(crate) proc: Proc,
    pub(crate) peer_id: String,
    pub(crate) mesh: String,
    pub(crate) metrics: String,
}

/// Starts `dndm node --config CONFIG --stop-on-eof EXTRA...` and reads its lines up to `ready`.
pub(crate) fn start_node(name: &str, config: &std::path::Path, extra: &[&str]) -> Node {
    let mut args = vec![
        "node",
        "--config",
        config.to_str().unwrap(),
        "--stop-on-eof",
    ];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(name, &args);
    let lines = proc.lines_until("ready", GUARD);
    let field = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{name}: no {prefix:?} line in {lines:?}"))
            .to_owned()
    };
    let node_line = field("node ");
    let (node_name, peer_id) = node_line.split_once(' ').unwrap();
    assert_eq!(node_name, name);
    let mesh = field("mesh ");
    assert!(mesh.ends_with(&format!("/p2p/{peer_id}")), "{mesh}");
    Node {
        peer_id: peer_id.to_owned(),
        mesh,
        metrics: field("metrics "),
        proc,
    }
}

/// A scratch directory, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "dndm-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `name` in the directory and returns its path.
    pub(crate) fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET path` on `base` (`http://host:port`): the status line, headers and body as text.
pub(crate) fn http_get(base: &str, path: &str) -> (String, String) {
    let authority = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}
