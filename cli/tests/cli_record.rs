//! Recording the demo: `dndm demo --record FILE` killed with SIGKILL mid-run leaves a file
//! whose every complete record verifies, with the torn tail skipped; a changed byte fails its
//! batch's signature, naming the publisher; `dndm info` reads the routes back.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dndm_codec::record::{Item, RECORD_HEADER_LEN, Reader, Record};

const GUARD: Duration = Duration::from_secs(120);

fn dndm(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(args)
        .arg(file)
        .output()
        .expect("the dndm binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn a_recording_killed_mid_run_verifies_up_to_its_torn_tail() {
    let path = std::env::temp_dir().join(format!("dndm-record-{}.rec", std::process::id()));
    let mut demo = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["demo", "--duration", "300", "--record"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the dndm binary runs");
    let stdout = BufReader::new(demo.stdout.take().unwrap());
    // The test reads every line it is sent; a few in flight are plenty.
    let (lines, said) = std::sync::mpsc::sync_channel(64);
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = said
            .recv_timeout(GUARD)
            .expect("the demo says its recorder has batches on disk");
        if line.contains("recorder has its first") {
            break;
        }
    }
    // The reader thread ends at its next line (or at the end of the output).
    drop(said);
    // SIGKILL while the sensors publish and the recorder writes.
    demo.kill().unwrap();
    demo.wait().unwrap();

    // Cut the last record short too, so the torn-tail path runs whatever moment the kill hit.
    let mut data = std::fs::read(&path).unwrap();
    data.truncate(data.len() - 5);
    std::fs::write(&path, &data).unwrap();
    let verified = dndm(&["verify"], &path);
    let out = text(&verified);
    assert!(verified.status.success(), "{out}");
    assert!(out.contains("torn tail"), "{out}");
    assert!(out.contains("every complete record verified"), "{out}");
    assert!(
        !out.contains(", 1 failed") && out.matches(" 0 failed").count() >= 2,
        "{out}"
    );

    // A changed byte in the frame of a batch in the middle.
    let batches: Vec<(usize, Record)> = Reader::new(&data)
        .unwrap()
        .filter_map(|item| match item {
            Item::Record {
                offset,
                record: record @ Record::Batch(_),
                ..
            } => Some((offset, record)),
            _ => None,
        })
        .collect();
    assert!(batches.len() >= 50, "{} batches", batches.len());
    let (offset, Record::Batch(batch)) = &batches[batches.len() / 2] else {
        unreachable!()
    };
    // Kind, arrival, signer and session come before the frame.
    let in_frame = offset + RECORD_HEADER_LEN + 1 + 8 + 32 + 32 + 20;
    data[in_frame] ^= 0x01;
    std::fs::write(&path, &data).unwrap();
    let failed = dndm(&["verify"], &path);
    let out = text(&failed);
    assert!(!failed.status.success(), "{out}");
    let publisher = batch.signer.peer_id();
    assert!(
        out.contains(&format!(
            "record at byte {offset}: signature does not verify (publisher {publisher})"
        )),
        "{out}"
    );

    let info = dndm(&["info"], &path);
    let out = text(&info);
    assert!(info.status.success(), "{out}");
    // The sensors whose batches made it to disk before the kill (every sensor links to the
    // recorder within moments, not necessarily before its first 100 batches).
    let routes = out.matches("dndm.demo.Imu@robot.").count();
    assert!((1..=3).contains(&routes), "{out}");
    assert!(out.contains("torn tail of"), "{out}");
    std::fs::remove_file(&path).unwrap();
}
