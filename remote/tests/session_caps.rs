//! A session encodes its batches for the peer it talks to: what the peer's hello announced
//! (zstd, dictionary ids, frame and batch limits) decides how batches are compressed and how
//! large they get, so a peer never receives a frame it cannot decode.
//!
//! Two sessions are driven by hand (as in `session_acl.rs`); every frame A sends is inspected
//! on its way to B. Time is one `Instant`; no timer fires.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Instant;

use bytes::Bytes;
use dndm_codec::{Compression, Dictionary, FrameHeader, FrameKind, Limits};
use dndm_core::{Fingerprint, IntentAd, InterestAd, Qos, Route};
use dndm_remote::session::{Session, SessionConfig, SessionSendError};
use support::{conn, events, keypair, messages};

const ROUTE: &str = "test.Status@fleet.robot1";

/// What crossed from A to B: for each batch frame, (compressed, dictionary id used).
#[derive(Debug, Default)]
struct Seen {
    batches: Vec<(bool, bool)>,
}

/// Moves frames both ways until both sides are quiet, recording A's batch frames.
fn shuttle(a: &mut Session, b: &mut Session, now: Instant) -> Seen {
    let mut seen = Seen::default();
    loop {
        let mut progressed = false;
        while let Some(frame) = a.poll_transmit(now) {
            let header = FrameHeader::parse(&frame, &Limits::default()).unwrap();
            if header.kind() == FrameKind::Batch {
                seen.batches
                    .push((header.is_compressed(), header.uses_dictionary()));
            }
            b.handle_frame(now, frame);
            progressed = true;
        }
        while let Some(frame) = b.poll_transmit(now) {
            a.handle_frame(now, frame);
            progressed = true;
        }
        if !progressed {
            return seen;
        }
    }
}

/// A status line like a robot would publish: mostly the same words, a few numbers.
fn status(i: u64) -> Bytes {
    Bytes::from(format!(
        "host=robot-{:02} state=running firmware=2.4.1 battery={}% uptime={}s error=none",
        i % 7,
        50 + i % 50,
        1000 + i * 13
    ))
}

fn status_dictionary(id: u32) -> Dictionary {
    let samples: Vec<Bytes> = (10_000..12_000).map(status).collect();
    Dictionary::train(id, &samples, 2048).unwrap()
}

fn config() -> SessionConfig {
    let mut config = SessionConfig::default();
    // Compress every batch, however small, so the choice is visible.
    config.compression = Some(Compression::new(3, 0));
    config
}

/// A publishes `ROUTE`, B subscribes; they connect; A sends `n` status lines in one go.
/// Returns what crossed and what B received, after checking both links stayed up.
fn run(a_config: SessionConfig, b_config: SessionConfig, n: u64) -> (Seen, Vec<Bytes>) {
    transfer(a_config, b_config, (0..n).map(status))
}

/// As [`run`], with the given payloads.
fn transfer(
    a_config: SessionConfig,
    b_config: SessionConfig,
    payloads: impl IntoIterator<Item = Bytes>,
) -> (Seen, Vec<Bytes>) {
    let now = Instant::now();
    let (mut a, mut b, route) = sessions(a_config, b_config);
    a.handle_connect(now, conn(1));
    b.handle_connect(now, conn(1));
    shuttle(&mut a, &mut b, now);
    assert!(a.is_open() && b.is_open());
    events(&mut b);
    for payload in payloads {
        a.send(&route, payload, Default::default()).unwrap();
    }
    let seen = shuttle(&mut a, &mut b, now);
    assert!(a.is_open() && b.is_open(), "no side failed the link");
    assert_eq!(a.stats().failures + b.stats().failures, 0);
    (seen, messages(&events(&mut b)))
}

fn expected(n: u64) -> Vec<Bytes> {
    (0..n).map(status).collect()
}

#[test]
fn a_dictionary_both_sides_hold_is_used_for_batches_of_its_type() {
    let with_dictionary = || {
        let mut c = config();
        c.dictionaries
            .insert("test.Status".to_owned(), status_dictionary(7));
        c
    };
    let (seen, received) = run(with_dictionary(), with_dictionary(), 8);
    assert_eq!(received, expected(8));
    assert_eq!(
        seen.batches,
        vec![(true, true)],
        "one batch, with the dictionary"
    );
}

#[test]
fn a_dictionary_the_peer_lacks_is_not_used() {
    let mut a = config();
    a.dictionaries
        .insert("test.Status".to_owned(), status_dictionary(7));
    let mut b = config();
    // Same type, another id: B cannot decode A's dictionary 7.
    b.dictionaries
        .insert("test.Status".to_owned(), status_dictionary(8));
    let (seen, received) = run(a, b, 8);
    assert_eq!(received, expected(8));
    assert_eq!(
        seen.batches,
        vec![(true, false)],
        "plain zstd, no dictionary"
    );
}

#[test]
fn a_peer_without_zstd_gets_uncompressed_batches() {
    let mut b = config();
    b.compression = None;
    let (seen, received) = run(config(), b, 8);
    assert_eq!(received, expected(8));
    assert_eq!(seen.batches, vec![(false, false)]);
}

#[test]
fn batches_respect_the_peers_smaller_limits() {
    // B accepts at most 16 messages per batch and frames of 1 KiB: A's defaults (1024
    // messages, 256 KiB) would make frames B refuses.
    let mut b = config();
    b.limits = Limits::builder()
        .max_batch_messages(16)
        .max_frame_len(1024)
        .build()
        .unwrap();
    let mut a = config();
    a.compression = None;
    let (seen, received) = run(a, b, 100);
    assert_eq!(received, expected(100));
    // Each status line is ~80 bytes: about 10 fit in 1 KiB with their framing.
    assert!(
        seen.batches.len() > 100 / 16,
        "{} batches",
        seen.batches.len()
    );
}

/// A publisher and a subscriber session on `ROUTE`, not connected.
fn sessions(a_config: SessionConfig, b_config: SessionConfig) -> (Session, Session, Route) {
    let now = Instant::now();
    let fingerprint = Fingerprint::of_name("test.Status");
    let route: Route = ROUTE.parse().unwrap();
    let mut a = Session::new(a_config, keypair(1), 1);
    let mut b = Session::new(b_config, keypair(2), 2);
    a.add_local_intent(
        IntentAd {
            route: route.clone(),
            fingerprint,
            schema: None,
            hashed: None,
            qos: Qos::reliable(),
        },
        now,
    );
    b.add_local_interest(
        InterestAd {
            pattern: "test.Status@fleet.*".parse().unwrap(),
            fingerprint,
            schema: None,
            hashed: None,
            history: 0,
        },
        now,
    );
    (a, b, route)
}

fn small_frames(max_frame_len: u32) -> SessionConfig {
    let mut c = config();
    c.limits = Limits::builder()
        .max_frame_len(max_frame_len)
        .build()
        .unwrap();
    c
}

#[test]
fn a_message_no_frame_can_carry_is_refused_with_a_typed_error() {
    let (mut a, _, route) = sessions(small_frames(2048), config());
    let err = a
        .send(&route, Bytes::from(vec![1u8; 4096]), Default::default())
        .unwrap_err();
    assert!(
        matches!(err, SessionSendError::TooLarge { len: 4096, max } if max < 2048),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[test]
fn batches_fit_our_own_frame_limit() {
    // 4 KiB frames against the default 256 KiB of payload per batch: batches must shrink to
    // what our own encoder accepts, or the link would fail on its own batch.
    let mut a_config = small_frames(4096);
    a_config.compression = None;
    let payloads = (0..100u8).map(|i| Bytes::from(vec![i; 1000]));
    let (seen, received) = transfer(a_config, config(), payloads);
    assert_eq!(received.len(), 100);
    assert!(seen.batches.len() >= 25, "{} batches", seen.batches.len());
}

#[test]
fn a_message_queued_before_the_peers_smaller_limit_was_known_is_dropped_and_counted() {
    let now = Instant::now();
    let mut a_config = config();
    a_config.compression = None;
    let (mut a, mut b, route) = sessions(a_config, small_frames(2048));
    // Queued before any hello: only our own (large) limits are known.
    a.send(&route, Bytes::from(vec![7u8; 3000]), Default::default())
        .unwrap();
    a.send(&route, status(1), Default::default()).unwrap();
    a.handle_connect(now, conn(1));
    b.handle_connect(now, conn(1));
    shuttle(&mut a, &mut b, now);
    assert!(a.is_open() && b.is_open(), "the link survives");
    assert_eq!(a.stats().oversized, 1);
    assert_eq!(messages(&events(&mut b)), vec![status(1)]);
}
