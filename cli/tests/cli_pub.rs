//! `dndm pub` confirms delivery: it exits 0 only when every peer that subscribed during the run
//! acknowledged every message, and otherwise exits 3 naming how many messages were not
//! confirmed (here: a `dndm sub` killed with SIGKILL after it linked).

#![allow(clippy::unwrap_used)]

mod support;

use support::{GUARD, Proc, Scratch, node_toml, start_node};

/// The number of messages in `pub`'s last line, `error: delivery not confirmed: N message(s)
/// not confirmed by P of L linked peer(s)`, with `P of L`.
fn unconfirmed(stderr: &str) -> (u64, String) {
    let last = stderr.lines().last().unwrap_or_default();
    let rest = last
        .strip_prefix("error: delivery not confirmed: ")
        .unwrap_or_else(|| panic!("no unconfirmed-delivery error in:\n{stderr}"));
    let (count, rest) = rest.split_once(" message(s) not confirmed by ").unwrap();
    let peers = rest.split(" linked peer(s)").next().unwrap();
    (count.parse().unwrap(), peers.to_owned())
}

#[test]
fn pub_exits_3_naming_the_messages_a_killed_subscriber_never_acknowledged() {
    let dir = Scratch::new("cli-pub-killed");
    let n1_toml = dir.file("n1.toml", &node_toml("n1", None));
    let mut n1 = start_node("n1", &n1_toml, &[]);
    let mut sub = Proc::spawn("sub", &["sub", "chat.*", "--bootstrap", &n1.mesh]);
    // A short idle timeout only shortens pub's wait for acknowledgements (idle timeout + 2 s).
    let pub_toml = dir.file(
        "pub.toml",
        &format!(
            "[node]\nname = \"pub\"\n\n[mesh]\nmdns = false\nbootstrap = [\"{}\"]\n\n[remote]\nkeepalive_ms = 1000\nidle_timeout_ms = 3000\n",
            n1.mesh
        ),
    );
    let mut publisher = Proc::spawn(
        "pub",
        &[
            "pub",
            "chat.room1",
            "--wait",
            "90",
            "--config",
            pub_toml.to_str().unwrap(),
        ],
    );
    publisher.write("first\n");
    // Linked and delivered; now the subscriber dies without a word.
    assert_eq!(sub.line(GUARD), "first");
    sub.kill();
    let after = ["second", "third", "fourth"];
    for line in after {
        publisher.write(&format!("{line}\n"));
    }
    publisher.close_stdin();

    let status = publisher.wait(GUARD);
    let stderr = publisher.stderr();
    assert_eq!(status.code(), Some(3), "pub: {stderr}");
    assert!(
        stderr
            .contains("sent 4 message(s) on dndm.Text@chat.room1; 0 of 1 linked peer(s) confirmed"),
        "{stderr}"
    );
    let (count, peers) = unconfirmed(&stderr);
    // Everything sent after the kill, and "first" too if its acknowledgement was still on its
    // way when the subscriber died.
    assert!(
        (after.len() as u64..=after.len() as u64 + 1).contains(&count),
        "{count} unconfirmed: {stderr}"
    );
    assert_eq!(peers, "1 of 1", "{stderr}");
    assert!(
        stderr.contains(&format!("{count} message(s) not confirmed (")),
        "the peer's own line: {stderr}"
    );

    n1.proc.close_stdin();
    assert!(n1.proc.wait(GUARD).success(), "n1: {}", n1.proc.stderr());
}

#[test]
fn pub_exits_0_when_its_subscriber_acknowledged_everything() {
    let dir = Scratch::new("cli-pub-confirmed");
    let n1_toml = dir.file("n1.toml", &node_toml("n1", None));
    let mut n1 = start_node("n1", &n1_toml, &[]);
    let sub = Proc::spawn("sub", &["sub", "chat.*", "--bootstrap", &n1.mesh]);
    let mut publisher = Proc::spawn(
        "pub",
        &["pub", "chat.room1", "--wait", "90", "--bootstrap", &n1.mesh],
    );
    let lines = ["one", "two", "three"];
    for line in lines {
        publisher.write(&format!("{line}\n"));
    }
    publisher.close_stdin();
    for line in lines {
        assert_eq!(sub.line(GUARD), line);
    }
    let status = publisher.wait(GUARD);
    let stderr = publisher.stderr();
    assert!(status.success(), "pub: {stderr}");
    assert!(
        stderr.contains(
            "sent 3 message(s) on dndm.Text@chat.room1; 1 of 1 linked peer(s) confirmed, 0 left"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("not confirmed"), "{stderr}");

    drop(sub);
    n1.proc.close_stdin();
    assert!(n1.proc.wait(GUARD).success(), "n1: {}", n1.proc.stderr());
}
