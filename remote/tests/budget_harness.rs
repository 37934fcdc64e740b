//! Resource accounting: what an admitted but hostile peer can make a link spend.
//!
//! Each case feeds a victim [`Link`] a sequence of valid but hostile frames from a peer that got
//! through its hello, in reads of 64 KiB, and drains the link as the driver does (events handed
//! on, frames written). It measures the heap's peak above what the link held before (a counting
//! global allocator) and the thread's CPU time, and asserts:
//!
//! - **memory**: peak ≤ `FIXED` + `PER_INPUT_BYTE` × input bytes, where `FIXED` is the decoded
//!   bytes budget plus one largest frame decoded (`remote.budget.decoded_bytes` +
//!   `max_decompressed_len`); measured values are in `docs/benchmarks.md`;
//! - **CPU**: the cost per input byte at 4× the input is at most [`CPU_GROWTH`]× the cost per
//!   byte at 1× (linear work keeps it near 1; quadratic work makes it 4).
//!
//! Before the budgets (6ebf216), the zstd bomb pinned ~4 MiB per 254-byte frame (one read:
//! ~1 GiB), a route flood's hello diff and the linker scans were quadratic, and re-declared ids
//! leaked routes; each case below fails against that code.

#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use cpu_time::ThreadTime;
use dndm_codec::{
    Advert, Batch, BatchMessage, BatchOptions, Capabilities, Compression, Correlation, DeclRoute,
    Encoder, Frame, Hello, IntentDecl, Limits, ResumeState,
};
use dndm_core::{BudgetConfig, Fingerprint, IntentAd, Keypair, Qos, Route, ServiceAd};
use dndm_remote::acl::{Acl, AclRule};
use dndm_remote::link::{Event, Link, LocalSet, Offer, Secure, plain_session_id, shuttle};
use dndm_remote::session::{Event as SessionEvent, LinkFailure, Session, SessionConfig};
use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// The allocator counts every thread: cases run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Heap a case may keep beyond its input: the decoded budget plus one largest frame decoded.
fn fixed() -> usize {
    BudgetConfig::default().decoded_bytes + Limits::default().max_decompressed_len() as usize
}
/// Heap a case may keep per byte of input (copies of the input: read buffer, plaintext, frames,
/// decoded declarations).
const PER_INPUT_BYTE: usize = 16;
/// Most growth of CPU time per input byte from 1× to 4× the input.
const CPU_GROWTH: f64 = 2.5;

const A: u8 = 1;
const B: u8 = 2;
/// A's first intent id (ids start at 1).
const A_INTENT: u32 = 1;
const READ: usize = 64 * 1024;

fn keypair(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

fn route(text: &str) -> Route {
    text.parse().unwrap()
}

fn link(seed: u8, peer: u8) -> Link {
    link_with(seed, peer, SessionConfig::default())
}

fn link_with(seed: u8, peer: u8, config: SessionConfig) -> Link {
    let session = Session::new(config, keypair(seed), u64::from(seed));
    Link::new(
        keypair(seed).peer_id(),
        keypair(peer).peer_id(),
        [0; 64],
        session,
        Limits::default(),
        Duration::from_secs(30),
    )
}

/// Drains `link` as the driver does: events handed on (dropped here), frames that waited for
/// the decoded budget decoded, what it writes discarded.
fn drain(link: &mut Link, now: Instant) -> Vec<Event> {
    let mut kept = Vec::new();
    loop {
        while let Some(event) = link.poll_event() {
            // Keep what tells how the connection went; payloads are handed on (dropped).
            if matches!(event, Event::ConnectionEnded { .. }) {
                kept.push(event);
            }
        }
        if !link.resume_input(now) {
            break;
        }
    }
    while link.poll_transmit(now).is_some() {}
    kept
}

/// A (attacker, publishing `test.Reading@robot.imu`) and B (victim) connected in plaintext,
/// through their hellos; B's events drained.
fn pair(now: Instant) -> (Link, Link) {
    pair_with(now, link(B, A))
}

/// As [`pair`], with victim `b`.
fn pair_with(now: Instant, mut b: Link) -> (Link, Link) {
    let mut a = link(A, B);
    let mut publishes = LocalSet::default();
    publishes.intents.insert(IntentAd {
        route: route("test.Reading@robot.imu"),
        fingerprint: Fingerprint::of_name("test.Reading"),
        schema: None,
        hashed: None,
        qos: Qos::reliable(),
    });
    a.handle_local(publishes, 0, now);
    assert_eq!(a.offer(true), Offer::Adopt);
    a.handle_connect(Secure::plain(), BytesMut::new(), true, now);
    b.handle_connect(Secure::plain(), BytesMut::new(), false, now);
    shuttle(&mut a, &mut b, now);
    assert!(a.session().is_open() && b.session().is_open());
    drain(&mut b, now);
    (a, b)
}

/// What feeding one input cost the victim.
#[derive(Debug, Clone, Copy)]
struct Cost {
    input: usize,
    /// Heap peak above the heap before the feed.
    peak: usize,
    cpu: Duration,
}

impl Cost {
    fn cpu_per_byte(&self) -> f64 {
        self.cpu.as_secs_f64() / self.input as f64
    }

    fn assert_memory(&self, case: &str) {
        let bound = fixed() + PER_INPUT_BYTE * self.input;
        assert!(
            self.peak <= bound,
            "{case}: {} bytes of heap for {} input bytes (bound {bound})",
            self.peak,
            self.input
        );
    }
}

/// Feeds `input` to `link` in reads of 64 KiB, draining after each; a link that loses its
/// connection is reconnected (a reconnect storm costs what its input costs).
fn feed(link: &mut Link, input: &[Bytes], now: Instant) -> (Cost, Vec<Event>) {
    let mut ended = Vec::new();
    HEAP.reset_peak_usage();
    let base = HEAP.current_usage();
    let cpu = ThreadTime::now();
    let mut bytes = 0;
    for piece in input {
        if !link.has_connection() {
            link.handle_connect(Secure::plain(), BytesMut::new(), false, now);
        }
        for read in piece.chunks(READ) {
            link.handle_input(read, now);
            ended.extend(drain(link, now));
        }
        bytes += piece.len();
    }
    let cost = Cost {
        input: bytes,
        peak: HEAP.peak_usage().saturating_sub(base),
        cpu: cpu.elapsed(),
    };
    (cost, ended)
}

/// Runs `case` at `n` and `4 n`, three times each (the cheapest run counts), checks memory
/// for each and the growth of CPU per byte, and returns both costs.
fn scaling(name: &str, n: usize, mut case: impl FnMut(usize) -> Cost) -> (Cost, Cost) {
    let best = |runs: Vec<Cost>| runs.into_iter().min_by_key(|c| c.cpu).unwrap();
    let small = best((0..3).map(|_| case(n)).collect());
    let large = best((0..3).map(|_| case(4 * n)).collect());
    small.assert_memory(name);
    large.assert_memory(name);
    let growth = large.cpu_per_byte() / small.cpu_per_byte();
    println!("{name}: {small:?} / {large:?}; CPU per byte grew {growth:.2}x");
    assert!(
        growth <= CPU_GROWTH,
        "{name}: CPU per input byte grew {growth:.2}x from {} to {} bytes ({:?} -> {:?})",
        small.input,
        large.input,
        small.cpu,
        large.cpu
    );
    (small, large)
}

fn encode(frame: &Frame) -> Bytes {
    Encoder::new(Limits::default()).encode(frame).unwrap()
}

/// `count` signed batches from A, from sequence 1, batch `seq` carrying `message(seq)`;
/// compressed whenever that is shorter.
fn signed_batches(count: usize, message: impl Fn(u64) -> BatchMessage) -> Vec<Bytes> {
    let key = keypair(A);
    let session = plain_session_id(&keypair(A).peer_id(), &keypair(B).peer_id());
    let mut encoder = Encoder::new(Limits::default()).with_compression(Compression::new(19, 0));
    let frames: Vec<u8> = (1..=count as u64)
        .flat_map(|seq| {
            let batch = Batch {
                first_seq: seq,
                last_seq: seq,
                messages: vec![message(seq)],
            };
            let options = BatchOptions::new().sign(&key, &session);
            encoder.encode_batch(&batch, &options).unwrap().to_vec()
        })
        .collect();
    vec![Bytes::from(frames)]
}

/// Signed batches from A, one message of `len` zero bytes each.
fn bombs(count: usize, len: usize) -> Vec<Bytes> {
    let payload = Bytes::from(vec![0u8; len]);
    signed_batches(count, |seq| BatchMessage {
        route_id: A_INTENT,
        seq: Some(seq),
        correlation: Correlation::None,
        payload: payload.clone(),
    })
}

#[test]
fn a_zstd_bomb_keeps_at_most_the_decoded_budget_alive() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let len = (4 << 20) - 64;
    let cost = |count| {
        let (_a, mut b) = pair(now);
        let input = bombs(count, len);
        let (cost, ended) = feed(&mut b, &input, now);
        assert!(ended.is_empty(), "valid frames keep the link: {ended:?}");
        assert_eq!(
            b.stats().messages_received,
            count as u64,
            "every message delivered"
        );
        cost
    };
    let (small, large) = scaling("zstd bomb", 16, cost);
    // Each ~250-byte frame declares 4 MiB: without a budget 64 frames would keep 256 MiB.
    assert!(large.input < 64 * 300, "{large:?}");
    assert!(large.peak < 64 * len / 8, "{large:?}");
    assert!(small.peak <= fixed(), "{small:?}");

    // The control: with the budget out of the way the same input keeps every frame's 4 MiB
    // alive at once, and the memory bound above would fail.
    let mut config = SessionConfig::default();
    config.budget.decoded_bytes = 16 << 30;
    let (_a, mut b) = pair_with(now, link_with(B, A, config));
    let (unbounded, _) = feed(&mut b, &bombs(64, len), now);
    println!("zstd bomb without the decoded budget: {unbounded:?}");
    assert!(
        unbounded.peak > fixed() + PER_INPUT_BYTE * unbounded.input,
        "{unbounded:?}"
    );
}

/// A hello from A declaring `count` intents `test.Reading@flood.<offset + i>`.
fn flood_hello(count: usize, offset: usize) -> Bytes {
    let intents = (0..count)
        .map(|i| IntentDecl {
            id: i as u32 + 1,
            route: DeclRoute::Plain(route(&format!("test.Reading@flood.r{}", offset + i))),
            fingerprint: Fingerprint::of_name("test.Reading"),
            schema: None,
            qos: Qos::best_effort(),
        })
        .collect();
    encode(&Frame::Hello(Hello {
        protocol_version: 1,
        public_key: keypair(A).public().to_bytes().to_vec(),
        intents,
        capabilities: Capabilities::new(&Limits::default()),
        resume: Some(ResumeState {
            session_epoch: u64::from(A),
            ..ResumeState::default()
        }),
        ..Hello::default()
    }))
}

#[test]
fn route_floods_cost_linear_time_and_stop_at_the_routes_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let budget = BudgetConfig::default().routes;

    // 16,384-route hellos, repeated over reconnects: refused at the budget every time, before
    // any route reaches the router.
    let over = flood_hello(16_384, 0);
    let refused = |repeats| {
        let (_a, mut b) = pair(now);
        b.handle_transport_failure(LinkFailure::Transport("cut".into()), now);
        drain(&mut b, now);
        let input = vec![over.clone(); repeats];
        let (cost, ended) = feed(&mut b, &input, now);
        let over_budget = ended
            .iter()
            .filter(|e| {
                matches!(e, Event::ConnectionEnded {
                failure: Some(LinkFailure::OverBudget { limit, .. }), .. } if *limit == budget)
            })
            .count();
        assert_eq!(over_budget, repeats, "{ended:?}");
        assert_eq!(b.session().peer_intents().len(), 1, "A's one real route");
        cost
    };
    scaling("16,384-route hellos", 2, refused);

    // Within the budget, each reconnect's hello replaces every route: the resync is linear.
    let resync = |routes: usize| {
        let (_a, mut b) = pair(now);
        let input: Vec<Bytes> = (0..4).map(|i| flood_hello(routes, i * routes)).collect();
        // Each hello on a fresh connection of the same peer incarnation.
        let mut cost = Cost {
            input: 0,
            peak: 0,
            cpu: Duration::ZERO,
        };
        for hello in input {
            b.handle_transport_failure(LinkFailure::Transport("cut".into()), now);
            drain(&mut b, now);
            let (one, ended) = feed(&mut b, &[hello], now);
            assert!(ended.is_empty(), "{ended:?}");
            cost.input += one.input;
            cost.peak = cost.peak.max(one.peak);
            cost.cpu += one.cpu;
        }
        assert_eq!(b.session().peer_intents().len(), routes);
        cost
    };
    scaling("route resync over reconnects", budget / 4, resync);
}

#[test]
fn re_declared_ids_replace_their_route_and_leak_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let adverts = |count: usize| -> Vec<Bytes> {
        (0..count)
            .map(|k| {
                encode(&Frame::Advert(Advert {
                    intents_added: vec![IntentDecl {
                        id: 7,
                        route: DeclRoute::Plain(route(&format!("test.Reading@loop.k{k}"))),
                        fingerprint: Fingerprint::of_name("test.Reading"),
                        schema: None,
                        qos: Qos::best_effort(),
                    }],
                    ..Advert::default()
                }))
            })
            .collect()
    };
    let case = |count| {
        let (_a, mut b) = pair(now);
        let input: Vec<Bytes> = vec![adverts(count).concat().into()];
        let (cost, ended) = feed(&mut b, &input, now);
        assert!(ended.is_empty(), "{ended:?}");
        assert_eq!(
            b.session().peer_intents().len(),
            2,
            "A's route and id 7's last"
        );
        cost
    };
    scaling("advert id re-declaration loop", 2_000, case);
}

#[test]
fn re_declared_ids_withdraw_the_route_they_named() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    let (_a, mut b) = pair(now);
    let mut net = 0i64;
    for k in 0..100 {
        let advert = Advert {
            intents_added: vec![IntentDecl {
                id: 7,
                route: DeclRoute::Plain(route(&format!("test.Reading@loop.k{k}"))),
                fingerprint: Fingerprint::of_name("test.Reading"),
                schema: None,
                qos: Qos::best_effort(),
            }],
            ..Advert::default()
        };
        b.handle_input(&encode(&Frame::Advert(advert)), now);
        while let Some(event) = b.poll_event() {
            match event {
                Event::Session(SessionEvent::PeerIntentAdded(_)) => net += 1,
                Event::Session(SessionEvent::PeerIntentRemoved(_)) => net -= 1,
                _ => {}
            }
        }
    }
    assert_eq!(net, 1, "100 declarations of id 7 leave one route");
    assert_eq!(
        b.session().peer_intents(),
        vec![
            route("test.Reading@loop.k99"),
            route("test.Reading@robot.imu")
        ]
    );
}

#[test]
fn reconnect_storms_cost_linear_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    // A reconnects over and over, each time with its hello and one batch.
    let hello = flood_hello(64, 0);
    let case = |reconnects: usize| {
        let (_a, mut b) = pair(now);
        let mut cost = Cost {
            input: 0,
            peak: 0,
            cpu: Duration::ZERO,
        };
        for _ in 0..reconnects {
            b.handle_transport_failure(LinkFailure::Transport("cut".into()), now);
            drain(&mut b, now);
            let (one, ended) = feed(&mut b, std::slice::from_ref(&hello), now);
            assert!(ended.is_empty(), "{ended:?}");
            cost.input += one.input;
            cost.peak = cost.peak.max(one.peak);
            cost.cpu += one.cpu;
        }
        cost
    };
    scaling("reconnect storm", 100, case);
}

/// B's service, which A floods with requests.
fn service() -> ServiceAd {
    ServiceAd {
        route: route("test.Req@admin.reboot"),
        request_fingerprint: Fingerprint::of_name("test.Req"),
        response_route: route("test.Resp@admin.reboot"),
        response_fingerprint: Fingerprint::of_name("test.Resp"),
    }
}

#[test]
fn request_floods_cost_linear_time_and_denied_calls_are_answered() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    // B lets A publish (its hello declares an intent) but, in the second run, call nothing.
    let no_calls =
        Acl::deny_all().with_rule(AclRule::any_peer().publish("test.Reading@**".parse().unwrap()));
    for acl in [Acl::allow_all(), no_calls] {
        let denied = !acl.is_allow_all();
        let case = |count: usize| {
            let mut config = SessionConfig::default();
            config.acl = acl.clone();
            let mut b = link_with(B, A, config);
            let mut serves = LocalSet::default();
            serves.services.insert(service());
            b.handle_local(serves, 0, now);
            let (_a, mut b) = pair_with(now, b);
            // B's first service id, which A need not have been told.
            let input = signed_batches(count, |seq| BatchMessage {
                route_id: (1 << 31) | 1,
                seq: Some(seq),
                correlation: Correlation::Request { id: seq },
                payload: Bytes::from(seq.to_be_bytes().repeat(128)),
            });
            let (cost, ended) = feed(&mut b, &input, now);
            assert!(ended.is_empty(), "{ended:?}");
            assert_eq!(b.stats().acl_denials, if denied { count as u64 } else { 0 });
            cost
        };
        let name = if denied {
            "denied request flood"
        } else {
            "request flood"
        };
        scaling(name, 500, case);
    }
}
