//! The two processes and how they talk outside the system under test.
//!
//! The parent runs this binary again with [`CHILD_ENV`] set to a system's name. Control goes
//! over the child's stdin and stdout, one line each way, never over the link being measured:
//!
//! | direction | line | meaning |
//! |---|---|---|
//! | child → parent | `peers: listen ADDRESS` | the child is up; dial `ADDRESS` |
//! | parent → child | `expect N` | count the next `N` data messages |
//! | child → parent | `peers: ok` | counting; send them |
//! | child → parent | `peers: done` | all `N` arrived (the parent stops its clock here) |
//! | parent closes stdin | | shut down and exit |
//!
//! Data and ping messages travel over the system under test; the child echoes each ping.

use std::io::BufRead as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Environment variable naming the system a child process serves.
pub(crate) const CHILD_ENV: &str = "DNDM_PEERS_CHILD";

/// Longest wait for any one step (a connection, a run, a round trip): a failure guard only.
pub(crate) const GUARD: Duration = Duration::from_secs(120);

/// Prefix of every control line the child prints, so stray output cannot be mistaken for one.
const PREFIX: &str = "peers: ";

/// The parent's handle on a child process.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    process: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// The address the child printed in its `listen` line.
    pub(crate) address: String,
}

impl ChildProcess {
    /// Starts this binary as the child serving `system`, and waits for its listen address.
    pub(crate) async fn spawn(system: &str) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this binary")?;
        let mut process = Command::new(exe)
            .env(CHILD_ENV, system)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the child process")?;
        let stdin = process.stdin.take().context("child stdin")?;
        let stdout = process.stdout.take().context("child stdout")?;
        let mut child = Self {
            process,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout).lines(),
            address: String::new(),
        };
        let line = child.next_line().await?;
        child.address = line
            .strip_prefix("listen ")
            .with_context(|| format!("expected `listen ADDRESS` from the child, got `{line}`"))?
            .to_owned();
        Ok(child)
    }

    /// Tells the child to count the next `n` data messages and waits until it is ready.
    pub(crate) async fn expect(&mut self, n: u64) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("child stdin already closed")?;
        stdin.write_all(format!("expect {n}\n").as_bytes()).await?;
        stdin.flush().await?;
        self.wait_for("ok").await
    }

    /// Waits until the child reports that it received everything it was told to expect.
    pub(crate) async fn done(&mut self) -> anyhow::Result<()> {
        self.wait_for("done").await
    }

    /// Closes the child's stdin and waits for it to exit (killing it if it takes too long).
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(GUARD, self.process.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!("child exited with {status}");
                }
                Ok(())
            }
            Err(_) => {
                self.process.kill().await?;
                bail!("child did not exit within {GUARD:?} of its stdin closing; killed")
            }
        }
    }

    async fn wait_for(&mut self, expected: &str) -> anyhow::Result<()> {
        let line = self.next_line().await?;
        if line != expected {
            bail!("expected `{expected}` from the child, got `{line}`");
        }
        Ok(())
    }

    /// The next control line, without its prefix.
    async fn next_line(&mut self) -> anyhow::Result<String> {
        loop {
            let line = tokio::time::timeout(GUARD, self.stdout.next_line())
                .await
                .map_err(|_| anyhow!("no word from the child within {GUARD:?}"))??
                .context("the child exited (see its stderr above)")?;
            if let Some(rest) = line.strip_prefix(PREFIX) {
                return Ok(rest.to_owned());
            }
        }
    }
}

/// Prints a control line for the parent.
pub(crate) fn report(line: &str) {
    println!("{PREFIX}{line}");
}

/// The child's side of the control channel: counts data messages against what the parent said
/// to expect. Cheap to clone; every receive path calls [`Counter::hit`] once per data message.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter {
    inner: Arc<CounterInner>,
}

#[derive(Debug, Default)]
struct CounterInner {
    received: AtomicU64,
    target: AtomicU64,
}

impl Counter {
    /// Counts one data message; reports `done` when it is the last one expected.
    pub(crate) fn hit(&self) {
        let received = self.inner.received.fetch_add(1, Ordering::AcqRel) + 1;
        if received == self.inner.target.load(Ordering::Acquire) {
            report("done");
        }
    }

    /// Reads `expect N` lines from stdin on a thread of its own until stdin closes; the
    /// returned receiver then resolves. Each `expect` resets the count and answers `ok`.
    pub(crate) fn serve_stdin(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (closed, on_closed) = tokio::sync::oneshot::channel();
        let inner = Arc::clone(&self.inner);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let Some(n) = line
                    .strip_prefix("expect ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                else {
                    eprintln!("peers child: ignoring control line `{line}`");
                    continue;
                };
                // The parent sends data only after `ok`, and only once the previous run is
                // done, so no message is in flight while these change.
                inner.target.store(n, Ordering::Release);
                inner.received.store(0, Ordering::Release);
                report("ok");
            }
            let _ = closed.send(());
        });
        on_closed
    }
}

/// Median and 99th percentile of `samples` (which must not be empty).
pub(crate) fn percentiles(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort_unstable();
    let last = samples.len().saturating_sub(1);
    (samples[last / 2], samples[last * 99 / 100])
}
