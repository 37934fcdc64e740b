//! What one 64 KiB message costs each side of a signed, encrypted link, stage by stage: the
//! per-byte work a remote link does besides the kernel's socket copies. Used to check the link
//! bench's numbers against what the CPU can do (docs/benchmarks.md, "Remote links").
//!
//! ```text
//! cargo bench -p dndm-remote --bench crypto
//! ```
#![allow(missing_docs, clippy::unwrap_used, unreachable_pub)]

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput};
use dndm_remote::noise::{Channel, StaticKey};

const SIZE: usize = 64 * 1024;

/// Two channels with the handshake done.
fn established() -> (Channel, Channel) {
    let mut a = Channel::initiator(&StaticKey::generate().unwrap()).unwrap();
    let mut b = Channel::responder(&StaticKey::generate().unwrap()).unwrap();
    loop {
        let mut moved = false;
        while let Some(bytes) = a.poll_transmit() {
            b.handle_input(&bytes).unwrap();
            moved = true;
        }
        while let Some(bytes) = b.poll_transmit() {
            a.handle_input(&bytes).unwrap();
            moved = true;
        }
        if !moved {
            break;
        }
    }
    assert!(a.is_established() && b.is_established());
    (a, b)
}

fn bench(c: &mut Criterion) {
    let payload = vec![0x5a_u8; SIZE];
    let mut group = c.benchmark_group("64KiB");
    group
        .throughput(Throughput::Bytes(SIZE as u64))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    group.bench_function("memcpy", |b| {
        let mut out = vec![0u8; SIZE];
        b.iter(|| out.copy_from_slice(black_box(&payload)));
    });
    group.bench_function("blake3", |b| {
        b.iter(|| blake3::hash(black_box(&payload)));
    });
    group.bench_function("noise_encrypt", |b| {
        let (mut a, _) = established();
        b.iter(|| {
            a.write(black_box(&payload)).unwrap();
            a.poll_transmit()
        });
    });
    group.bench_function("noise_decrypt", |b| {
        let (mut a, mut rx) = established();
        // Ciphertexts made ahead: each decrypts once, in order (the nonce advances).
        let mut ciphertexts = Vec::new();
        for _ in 0..20_000 {
            a.write(&payload).unwrap();
            ciphertexts.push(a.poll_transmit().unwrap());
        }
        let mut next = ciphertexts.into_iter();
        let mut out = BytesMut::with_capacity(2 * SIZE);
        b.iter(|| {
            let Some(ciphertext) = next.next() else {
                return;
            };
            rx.handle_input_into(&ciphertext, &mut out).unwrap();
            out.clear();
        });
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
