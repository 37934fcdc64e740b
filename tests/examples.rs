//! Every example runs to completion in its non-interactive mode and reports what it promises:
//! each example is compiled in here as a module and its `run` called with parsed arguments.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser as _;

#[path = "../examples/chat.rs"]
#[allow(dead_code)]
mod chat;
#[path = "../examples/history_and_recording.rs"]
#[allow(dead_code)]
mod history_and_recording;
#[path = "../examples/pipeline.rs"]
#[allow(dead_code)]
mod pipeline;
#[path = "../examples/request_response.rs"]
#[allow(dead_code)]
mod request_response;
#[path = "../examples/telemetry.rs"]
#[allow(dead_code)]
mod telemetry;

/// Failure guard for a whole example run (each waits on events with its own guards too).
const GUARD: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_demo_delivers_every_line_and_shows_joins_and_the_leave() {
    let args = chat::Args::parse_from(["chat", "--demo", "3"]);
    let report = tokio::time::timeout(GUARD, chat::run(args))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.sent, 6, "{report:?}");
    assert_eq!(report.heard, 6, "{report:?}");
    let presence = report.presence.join("\n");
    assert!(presence.contains("[alice] * bob joined"), "{presence}");
    assert!(presence.contains("[bob] * alice joined"), "{presence}");
    assert!(presence.contains("[alice] * bob left"), "{presence}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_counts_every_sample_and_the_dashboard_drops() {
    let args = telemetry::Args::parse_from([
        "telemetry",
        "--rate",
        "1000",
        "--samples",
        "400",
        "--dashboard-hz",
        "50",
        "--dashboard-queue",
        "4",
    ]);
    let report = tokio::time::timeout(GUARD, telemetry::run(args))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.published, 400);
    let stats = &report.stats;
    assert_eq!(stats.count, 400, "{report:?}");
    assert!(
        stats.min <= stats.mean && stats.mean <= stats.max,
        "{report:?}"
    );
    assert!(
        (9.5..10.2).contains(&stats.mean),
        "|a| is about g: {report:?}"
    );
    assert!(stats.rate_hz > 0.0, "{report:?}");
    let dashboard = &report.dashboard;
    assert_eq!(
        dashboard.shown + dashboard.dropped,
        400,
        "every sample shown or counted: {report:?}"
    );
    assert!(dashboard.shown > 0 && dashboard.dropped > 0, "{report:?}");
    assert_eq!(dashboard.capacity, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_shows_answers_a_handler_error_a_timeout_and_no_listener() {
    let args = request_response::Args::parse_from(["request_response"]);
    let report = tokio::time::timeout(GUARD, request_response::run(args))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.answers.len(), 5, "{report:?}");
    assert_eq!(report.answers[0], 2.5);
    assert_eq!(report.answers[4], -4.5);
    assert_eq!(report.handler_error.as_deref(), Some("division by zero"));
    assert!(report.timed_out && report.no_listener, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_delivers_every_sample_through_every_stage_in_order() {
    let args = pipeline::Args::parse_from(["pipeline", "--samples", "300"]);
    let report = tokio::time::timeout(GUARD, pipeline::run(args))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.per_sensor, 300);
    assert_eq!(
        (report.fused, report.sink, report.monitor),
        (300, 300, 300),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_display_gets_history_and_the_recording_verifies() {
    let out = std::env::temp_dir().join(format!("example-{}.rec", std::process::id()));
    let out_arg = out.to_string_lossy().into_owned();
    let args = history_and_recording::Args::parse_from([
        "history_and_recording",
        "--readings",
        "100",
        "--out",
        &out_arg,
    ]);
    let report = tokio::time::timeout(GUARD, history_and_recording::run(args))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        report.display,
        (0..110).collect::<Vec<_>>(),
        "history, then live"
    );
    assert_eq!(report.recorded, (10..110).collect::<Vec<_>>());
    assert!(report.verified > 0 && report.failed == 0, "{report:?}");
    std::fs::remove_file(&out).unwrap();
}
