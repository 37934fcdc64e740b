//! The README's demo command runs to completion and prints its final report.

use std::process::Command;

#[test]
fn demo_runs_and_reports() {
    let output = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["demo", "--messages", "2000"])
        .output()
        .expect("the dndm binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("final report"), "{stdout}");
    assert!(
        stdout.contains("fusion  (Block)     8000 received, 0 lost, in order per sensor"),
        "{stdout}"
    );
    assert!(
        stdout.contains("status service      4 intents, 3 interests, 9 links"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}

#[test]
fn bad_arguments_give_one_clear_line_and_a_failure_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_dndm"))
        .args(["demo", "--messages", "0"])
        .output()
        .expect("the dndm binary runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--messages"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
