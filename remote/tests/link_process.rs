//! Two OS processes: this test binary spawns itself as a child node and talks to it over TCP and
//! over a Unix socket. Typed pub/sub both ways, request/response, a subscriber leaving
//! mid-stream (the child's publisher reports it), a fingerprint mismatch refused on both sides,
//! an orderly close.
//!
//! The child is the `#[ignore]`d test `child_node`, run by the parent with `--ignored --exact`
//! and `DNDM_CHILD_LISTEN` set; it speaks line by line on stdout and stops when stdin closes.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dndm_core::Keypair;
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{LinkEvent, Router};

use support::{Reading, ReadingV2};

const GUARD: Duration = Duration::from_secs(30);

fn parse_target(text: &str) -> Target {
    match text.strip_prefix("unix:") {
        #[cfg(unix)]
        Some(path) => Target::Unix(path.into()),
        _ => Target::Tcp(text.strip_prefix("tcp:").unwrap_or(text).parse().unwrap()),
    }
}

/// The child node: echoes `to_child` readings back on `from_child` (+1000) and reports its
/// publisher's subscriber count and refusals on stdout.
#[test]
#[ignore = "run by the parent tests as a child process"]
fn child_node() {
    let Ok(listen) = std::env::var("DNDM_CHILD_LISTEN") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let router = Router::builder().name("child").build().unwrap();
        let mut config = RemoteConfig::default();
        config.listen = vec![parse_target(&listen)];
        let endpoint = RemoteEndpoint::new(Keypair::from_seed([7; 32]), config).unwrap();
        router.attach(Arc::new(endpoint.clone())).await.unwrap();
        println!("LISTEN {}", endpoint.bound()[0]);
        let _doubler = router
            .serve::<Reading, Reading, _, _>("double", |r: Reading| async move {
                Ok(Reading { seq: r.seq * 2 })
            })
            .unwrap();
        let mut inbox = router.subscribe::<Reading>("to_child").unwrap();
        let outbox = router.publish::<Reading>("from_child").unwrap();
        let mut events = outbox.events();
        // Stdin closing is the parent's "stop".
        let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                line.clear();
            }
            let _ = stop_tx.send(());
        });
        loop {
            tokio::select! {
                _ = &mut stop => break,
                Ok(reading) = inbox.recv() => {
                    outbox.send(Reading { seq: reading.seq + 1000 }).await.unwrap();
                }
                Ok(event) = events.recv() => match event {
                    LinkEvent::Refused { error, .. } => println!("REFUSED {error}"),
                    _ => println!("SUBS {}", outbox.subscriber_count()),
                },
            }
        }
        router.close().await;
        println!("BYE");
    });
}

struct ChildNode {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    target: Target,
}

impl ChildNode {
    fn spawn(listen: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_node",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DNDM_CHILD_LISTEN", listen)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::sync_channel(1024);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = Self {
            child,
            lines,
            target: Target::Tcp("0.0.0.0:0".parse().unwrap()),
        };
        // libtest prints "test child_node ... " before the child's first line.
        let listen_line = node.expect_line(|l| l.contains("LISTEN "));
        let (_, address) = listen_line.split_once("LISTEN ").unwrap();
        node.target = parse_target(address.trim());
        node
    }

    /// Waits for a stdout line matching `want` (guarded), skipping others.
    fn expect_line(&mut self, want: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(GUARD)
                .expect("the child spoke in time");
            if want(&line) {
                return line;
            }
        }
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        self.expect_line(|l| l == "BYE");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child exited with {status}");
    }
}

async fn talk_to_child(listen: &str) {
    let mut child = ChildNode::spawn(listen);
    let router = Router::builder().name("parent").build().unwrap();
    let mut config = RemoteConfig::default();
    config.dial = vec![child.target.clone()];
    let endpoint = RemoteEndpoint::new(Keypair::from_seed([8; 32]), config).unwrap();
    router.attach(Arc::new(endpoint.clone())).await.unwrap();

    let mut replies = router.subscribe::<Reading>("from_child").unwrap();
    let requests = router.publish::<Reading>("to_child").unwrap();
    requests.wait_for_interest(GUARD).await.unwrap();
    child.expect_line(|l| l == "SUBS 1");
    for seq in 0..100 {
        requests.send(Reading { seq }).await.unwrap();
    }
    for seq in 0..100 {
        let reply = tokio::time::timeout(GUARD, replies.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(reply.seq, seq + 1000, "typed messages both ways, in order");
    }

    // Request/response across the processes (the child's service came with its hello).
    let doubled = router
        .request::<Reading, Reading>("double", Reading { seq: 21 }, GUARD)
        .await
        .unwrap();
    assert_eq!(doubled.seq, 42);

    // The subscriber leaves mid-stream: the child's publisher sees it.
    drop(replies);
    child.expect_line(|l| l == "SUBS 0");

    // Same type name, another schema: both sides refuse and say why.
    // The parent already knows the child's intent, so the refusal happens inside `subscribe`:
    // it shows in the snapshot counters at once.
    let v2 = router.subscribe::<ReadingV2>("from_child").unwrap();
    assert_eq!(router.snapshot().counters.fingerprint_mismatches, 1);
    assert_eq!(v2.stats().accepted, 0);
    let line = child.expect_line(|l| l.starts_with("REFUSED "));
    assert!(
        line.contains("fingerprint mismatch on test.Reading"),
        "{line}"
    );

    router.close().await;
    child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_over_tcp() {
    talk_to_child("tcp:127.0.0.1:0").await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("dndm-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    talk_to_child(&format!("unix:{}", dir.join("child.sock").display())).await;
    let _ = std::fs::remove_dir_all(&dir);
}
