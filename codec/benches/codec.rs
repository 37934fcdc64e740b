//! Codec throughput: encode(+compress)(+sign) and (verify+)(decompress+)decode of batches of
//! 1, 64 and 1024 messages of 8 B and 1 KiB, compression and signing on and off; and the zstd
//! ratio of a realistic telemetry message with and without a dictionary (printed first).
//!
//! ```text
//! cargo bench -p dndm-codec --bench codec
//! ```

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use dndm_codec::{
    Batch, BatchMessage, BatchOptions, Compression, Correlation, Decoder, Dictionary, Encoder,
    Frame, FrameHeader, Limits, SessionId, verify_batch,
};
use dndm_core::Keypair;

/// Payload of `size` bytes: telemetry samples back to back (compressible like real data).
fn payload(size: usize, i: u64) -> Bytes {
    let mut v = Vec::with_capacity(size + 64);
    let mut k = i;
    while v.len() < size {
        v.extend_from_slice(&support::telemetry_payload(k));
        k += 1;
    }
    v.truncate(size);
    Bytes::from(v)
}

fn batch(n: usize, size: usize) -> Batch {
    Batch {
        first_seq: 1,
        last_seq: n as u64,
        messages: (0..n)
            .map(|i| BatchMessage {
                route_id: 1 + (i % 4) as u32,
                seq: Some(1 + i as u64),
                correlation: Correlation::None,
                payload: payload(size, i as u64),
            })
            .collect(),
    }
}

fn limits() -> Limits {
    Limits::builder()
        .max_frame_len(8 << 20)
        .max_decompressed_len(8 << 20)
        .build()
        .expect("valid limits")
}

fn encoder(compress: bool) -> Encoder {
    let e = Encoder::new(limits());
    if compress {
        e.with_compression(Compression::default())
    } else {
        e
    }
}

fn bench_codec(c: &mut Criterion) {
    let key = Keypair::from_seed([1; 32]);
    let public = key.public();
    let session = SessionId::from_bytes([2; 32]);
    for (dir, is_encode) in [("encode", true), ("decode", false)] {
        let mut group = c.benchmark_group(dir);
        group
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .sample_size(20);
        for n in [1usize, 64, 1024] {
            for size in [8usize, 1024] {
                let b = batch(n, size);
                group.throughput(Throughput::Elements(n as u64));
                for compress in [false, true] {
                    for sign in [false, true] {
                        let id = BenchmarkId::from_parameter(format!(
                            "n{n}/{size}B/zstd-{}/sig-{}",
                            if compress { "on" } else { "off" },
                            if sign { "on" } else { "off" }
                        ));
                        let options = if sign {
                            BatchOptions::new().sign(&key, &session)
                        } else {
                            BatchOptions::new()
                        };
                        let mut enc = encoder(compress);
                        if is_encode {
                            // What the timed encoder produces (zstd backs off on data that
                            // does not compress; this shows it did not).
                            let frame = enc.encode_batch(&b, &options).unwrap();
                            let header = FrameHeader::parse(&frame, &limits()).unwrap();
                            println!(
                                "frame n{n}/{size}B/zstd-{}/sig-{}: {} B, compressed {}",
                                if compress { "on" } else { "off" },
                                if sign { "on" } else { "off" },
                                frame.len(),
                                header.is_compressed()
                            );
                            group.bench_function(id, |bench| {
                                bench.iter(|| enc.encode_batch(black_box(&b), &options).unwrap())
                            });
                        } else {
                            let frame = enc.encode_batch(&b, &options).unwrap();
                            let mut dec = Decoder::new(limits());
                            group.bench_function(id, |bench| {
                                bench.iter(|| {
                                    if sign {
                                        verify_batch(black_box(&frame), &session, &public).unwrap();
                                    }
                                    dec.decode(black_box(&frame)).unwrap()
                                })
                            });
                        }
                    }
                }
            }
        }
        group.finish();
    }
}

/// Prints the compressed size of telemetry batches with and without a trained dictionary, for
/// a float-heavy IMU message and a string-heavy status message.
fn report_ratios() {
    type Gen = fn(u64) -> Bytes;
    let kinds: [(&str, Gen); 2] = [
        ("imu", support::telemetry_payload),
        ("status", support::status_payload),
    ];
    for (name, generate) in kinds {
        let samples: Vec<Bytes> = (0..5000).map(generate).collect();
        let dict = Dictionary::train(1, &samples, 8192).expect("training succeeds");
        println!(
            "zstd level 3, {name} message ~{} B, dictionary {} B trained on 5000 samples:",
            generate(0).len(),
            dict.as_bytes().len()
        );
        for n in [1u64, 8, 64, 1024] {
            // Fresh encoders: one that kept a batch plain backs off from compressing the next.
            let mut raw = Encoder::new(limits());
            let mut plain = Encoder::new(limits()).with_compression(Compression::new(3, 0));
            let mut with_dict = Encoder::new(limits())
                .with_compression(Compression::new(3, 0))
                .with_dictionary(dict.clone());
            // Fresh messages, not the training samples.
            let b = Batch {
                first_seq: 1,
                last_seq: n,
                messages: (0..n)
                    .map(|i| BatchMessage {
                        route_id: 1,
                        seq: Some(1 + i),
                        correlation: Correlation::None,
                        payload: generate(1_000_000 + i),
                    })
                    .collect(),
            };
            let r = raw.encode(&Frame::Batch(b.clone())).unwrap().len();
            let p = plain.encode(&Frame::Batch(b.clone())).unwrap().len();
            let d = with_dict
                .encode_batch(&b, &BatchOptions::new().dictionary(1))
                .unwrap()
                .len();
            println!(
                "  {n:>4} msgs: frame {r:>6} B, zstd {p:>6} B ({:.2}x), zstd+dict {d:>6} B ({:.2}x)",
                r as f64 / p as f64,
                r as f64 / d as f64
            );
        }
    }
}

fn main() {
    report_ratios();
    let mut c = Criterion::default().configure_from_args();
    bench_codec(&mut c);
    c.final_summary();
}
