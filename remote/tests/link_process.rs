//! Two OS processes: this test binary spawns itself as a child node and talks to it over TCP and
//! over a Unix socket. Typed pub/sub both ways, request/response, a subscriber joining and
//! leaving while the publisher streams (the publisher sees its subscriber count rise and fall;
//! the late subscriber gets what was sent after it linked), a fingerprint mismatch refused on
//! both sides with the typed error, an orderly close.
//!
//! The child is the `#[ignore]`d test `child_node`, run by the parent with `--ignored --exact`
//! and `DNDM_CHILD_LISTEN` set; it takes commands line by line on stdin, speaks line by line on
//! stdout, and stops when stdin closes.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use dndm_core::{Keypair, LinkError, Qos};
use dndm_remote::endpoint::{RemoteConfig, RemoteEndpoint, Target};
use dndm_router::{Intent, Interest, LinkEvent, Origin, PublishOptions, Router};

use support::{Reading, ReadingV2};

const GUARD: Duration = Duration::from_secs(30);
/// Commands from the parent waiting for the child's loop.
const COMMAND_QUEUE: usize = 16;
/// How often the parent publishes on the stream the child joins and leaves.
const STREAM_PERIOD: Duration = Duration::from_millis(1);

fn parse_target(text: &str) -> Target {
    match text.strip_prefix("unix:") {
        #[cfg(unix)]
        Some(path) => Target::Unix(path.into()),
        _ => Target::Tcp(text.strip_prefix("tcp:").unwrap_or(text).parse().unwrap()),
    }
}

/// The child node: echoes `to_child` readings back on `from_child` (+1000) and reports its
/// publisher's subscriber count and refusals on stdout. Commands on stdin: `JOIN` subscribes
/// to `stream` (first reading reported as `FIRST n`, every 50th as `GOT n`), `LEAVE` drops that subscriber (reported
/// as `LEFT first last count in_order`), `PUBLISH late` declares a publisher on `late`.
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
        // Stdin lines are commands; stdin closing is the parent's "stop".
        let (command_tx, mut commands) = tokio::sync::mpsc::channel::<String>(COMMAND_QUEUE);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if command_tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        let mut joined: Option<(Interest<Reading>, Joined)> = None;
        // Publishers declared on command, alive until the child stops.
        let mut declared: Vec<Intent<Reading>> = Vec::new();
        loop {
            tokio::select! {
                command = commands.recv() => match command.as_deref() {
                    None => break,
                    Some("JOIN") => {
                        joined = Some((router.subscribe::<Reading>("stream").unwrap(), Joined::default()));
                    }
                    Some("LEAVE") => {
                        let (interest, got) = joined.take().unwrap();
                        drop(interest);
                        println!("LEFT {} {} {} {}", got.first.unwrap(), got.last, got.count, got.in_order);
                    }
                    Some("PUBLISH late") => {
                        declared.push(router.publish::<Reading>("late").unwrap());
                    }
                    Some(other) => panic!("unknown command {other}"),
                },
                Ok(reading) = inbox.recv() => {
                    outbox.send(Reading { seq: reading.seq + 1000 }).await.unwrap();
                }
                Ok(reading) = async { joined.as_mut().unwrap().0.recv().await }, if joined.is_some() => {
                    let got = &mut joined.as_mut().unwrap().1;
                    if got.first.is_none() {
                        got.first = Some(reading.seq);
                        println!("FIRST {}", reading.seq);
                    } else {
                        got.in_order &= reading.seq == got.last + 1;
                    }
                    got.last = reading.seq;
                    got.count += 1;
                    if reading.seq % 50 == 0 {
                        println!("GOT {}", reading.seq);
                    }
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

/// What the child's joined subscriber received.
#[derive(Debug)]
struct Joined {
    first: Option<u64>,
    last: u64,
    count: u64,
    in_order: bool,
}

impl Default for Joined {
    fn default() -> Self {
        Self {
            first: None,
            last: 0,
            count: 0,
            in_order: true,
        }
    }
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

    /// Sends a command line to the child.
    fn command(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next stdout line if one is waiting.
    fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
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

    joins_and_leaves_mid_stream(&router, &mut child).await;

    // Same type name, another schema: both sides refuse. The side that declares second
    // refuses inside its own call (a counter); the side that declared first hears of it as a
    // link event with the typed error. Once each way:
    // the parent subscribes first, the child's publisher on `late` comes second;
    let v2 = router.subscribe::<ReadingV2>("late").unwrap();
    let mut v2_events = v2.events();
    child.command("PUBLISH late");
    let event = tokio::time::timeout(GUARD, async {
        loop {
            if let Ok(event @ LinkEvent::Refused { .. }) = v2_events.recv().await {
                return event;
            }
        }
    })
    .await
    .expect("the parent reports the mismatch");
    assert!(
        matches!(
            &event,
            LinkEvent::Refused {
                error: LinkError::FingerprintMismatch { type_name, .. },
                origin: Origin::Peer(_),
                ..
            } if type_name == "test.Reading"
        ),
        "{event:?}"
    );
    assert_eq!(router.snapshot().counters.fingerprint_mismatches, 1);
    assert_eq!(v2.stats().accepted, 0);
    // the child published `from_child` first, the parent's subscriber comes second.
    let v2_late = router.subscribe::<ReadingV2>("from_child").unwrap();
    assert_eq!(router.snapshot().counters.fingerprint_mismatches, 2);
    assert_eq!(v2_late.stats().accepted, 0);
    let line = child.expect_line(|l| l.starts_with("REFUSED "));
    assert!(
        line.contains("fingerprint mismatch on test.Reading"),
        "{line}"
    );

    router.close().await;
    child.stop();
}

/// Publishes `stream` readings `next, next + 1, …` once per [`STREAM_PERIOD`] until `until`
/// holds (checked before each send), guarded; returns the next number.
async fn stream_until(
    publisher: &Intent<Reading>,
    mut next: u64,
    mut until: impl FnMut(&Intent<Reading>, u64) -> bool,
) -> u64 {
    let mut tick = tokio::time::interval(STREAM_PERIOD);
    tokio::time::timeout(GUARD, async {
        loop {
            if until(publisher, next) {
                return next;
            }
            tick.tick().await;
            publisher.send(Reading { seq: next }).await.unwrap();
            next += 1;
        }
    })
    .await
    .expect("the stream reached its condition in time")
}

/// The parent streams without pause while the child subscribes and unsubscribes.
async fn joins_and_leaves_mid_stream(router: &Router, child: &mut ChildNode) {
    let options = PublishOptions::default().qos(Qos::reliable());
    let publisher = router.publish_with::<Reading>("stream", options).unwrap();
    let before = 50;
    let next = stream_until(&publisher, 0, |p, next| {
        assert_eq!(p.subscriber_count(), 0, "nobody subscribed yet");
        next == before
    })
    .await;
    child.command("JOIN");
    let linked_at = stream_until(&publisher, next, |p, _| p.subscriber_count() == 1).await;
    // Streaming goes on until the child confirms it got a reading sent well after the link.
    let mut first = None;
    let mut got = 0;
    let next = stream_until(&publisher, linked_at, |_, _| {
        while let Some(line) = child.try_line() {
            let number = |prefix: &str| line.strip_prefix(prefix)?.parse::<u64>().ok();
            first = first.or(number("FIRST "));
            got = got.max(number("GOT ").unwrap_or(0));
        }
        got >= linked_at + 100
    })
    .await;
    let first = first.expect("FIRST comes before GOT");
    child.command("LEAVE");
    let left_at = stream_until(&publisher, next, |p, _| p.subscriber_count() == 0).await;
    // Publishing goes on after the subscriber left.
    stream_until(&publisher, left_at, |_, next| next == left_at + 50).await;
    let line = child.expect_line(|l| l.starts_with("LEFT "));
    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    let [left_first, last, count, in_order] = fields[..] else {
        panic!("{line}");
    };
    let (left_first, last, count): (u64, u64, u64) = (
        left_first.parse().unwrap(),
        last.parse().unwrap(),
        count.parse().unwrap(),
    );
    assert_eq!(left_first, first);
    assert!(
        first >= before && first <= linked_at,
        "the late subscriber got what was sent after it linked, nothing before it joined: \
         first {first}, joined after {before}, linked by {linked_at}"
    );
    assert!(
        last >= got && last < left_at,
        "it received until it left: last {last}, confirmed {got}, left {left_at}"
    );
    assert_eq!((in_order, count), ("true", last - first + 1), "{line}");
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
