//! A stable-toolchain fuzz driver for the codec's decoders: seeded random mutations of the
//! committed corpus, fed to every fuzz target (`decode_frame`, `split_stream`, `verify_batch`).
//! Use it where nightly (and so `cargo fuzz`) is not available; with nightly, prefer the
//! coverage-guided targets in `codec/fuzz/`.
//!
//! ```text
//! cargo run --release -p dndm-codec --example fuzz_decode -- [ITERATIONS_PER_TARGET] [SEED]
//! cargo run --release -p dndm-codec --example fuzz_decode -- --write-seeds
//! ```
//!
//! `--write-seeds` (re)writes the seed inputs into `codec/fuzz/corpus/<target>/seed-*`.
//! A panicking input is saved as `crash-<target>-<iteration>.bin` in the current directory.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

#[path = "../tests/support/fuzz.rs"]
mod fuzz;
#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Instant;

use dndm_codec::{BatchOptions, Compression, Encoder, Frame, Limits};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus")
}

/// Valid encodings of every frame kind, plain, compressed, with a dictionary and signed.
fn seeds() -> Vec<Vec<u8>> {
    let limits = Limits::default();
    let (key, session) = fuzz::signer();
    let mut out = Vec::new();
    let mut frames = support::samples();
    frames.push(Frame::Batch(support::telemetry_batch(1000, 40)));
    for frame in &frames {
        let mut plain = Encoder::new(limits);
        let mut packed = Encoder::new(limits)
            .with_compression(Compression::new(1, 0))
            .with_dictionary(fuzz::dictionary());
        out.push(plain.encode(frame).expect("sample encodes").to_vec());
        if let Frame::Batch(b) = frame {
            for options in [
                BatchOptions::new(),
                BatchOptions::new().dictionary(1),
                BatchOptions::new().sign(&key, &session),
                BatchOptions::new().dictionary(1).sign(&key, &session),
                BatchOptions::new().uncompressed().sign(&key, &session),
            ] {
                out.push(
                    packed
                        .encode_batch(b, &options)
                        .expect("sample encodes")
                        .to_vec(),
                );
            }
        }
    }
    out
}

fn write_seeds() -> std::io::Result<()> {
    let seeds = seeds();
    for target in fuzz::TARGETS {
        let dir = corpus_dir().join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s)?;
        }
    }
    // A stream of several frames for the splitter.
    let stream: Vec<u8> = seeds.iter().take(6).flatten().copied().collect();
    std::fs::write(corpus_dir().join("split_stream/seed-stream"), stream)?;
    println!(
        "wrote {} seeds per target to {}",
        seeds.len(),
        corpus_dir().display()
    );
    Ok(())
}

/// A fuzz target: its name and harness function.
type Target = (&'static str, fn(&[u8]));

/// xorshift64*: deterministic for a given seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    const INTERESTING: [u8; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x0a, 0x12, 0x08];
    let mut d = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = d.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                d[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                d[i] = rng.next() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                d[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                d.insert(i, rng.next() as u8);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                d.drain(i..i + n);
            }
            5 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(32));
                let copy = d[i..i + n].to_vec();
                let at = rng.below(d.len() + 1);
                d.splice(at..at, copy);
            }
            6 if !other.is_empty() => {
                let i = rng.below(other.len());
                let n = 1 + rng.below((other.len() - i).min(64));
                let at = rng.below(len + 1);
                d.splice(at..at, other[i..i + n].iter().copied());
            }
            _ if len > 0 => d.truncate(rng.below(len)),
            _ => {}
        }
    }
    // Half the time, make the header's length field agree so mutations reach the body.
    if d.len() >= 12 && rng.below(2) == 0 {
        let body = (d.len() - 12) as u32;
        d[8..12].copy_from_slice(&body.to_be_bytes());
    }
    d
}

fn load(target: &str) -> Vec<Vec<u8>> {
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(corpus_dir().join(target))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    // Fresh seeds too: signed inputs in the corpus verify only under the signature scheme
    // they were written with, and mutations of a valid signed batch are what reach the
    // decoder behind `verify_batch`.
    inputs.extend(seeds());
    inputs
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--write-seeds") {
        return Ok(write_seeds()?);
    }
    let iterations: u64 = args.first().map_or(Ok(100_000), |a| a.parse())?;
    let seed: u64 = args.get(1).map_or(Ok(0x5EED), |a| a.parse())?;
    let targets: [Target; 3] = [
        ("decode_frame", fuzz::decode_frame),
        ("split_stream", fuzz::split_stream),
        ("verify_batch", fuzz::verify_batch_target),
    ];
    for (name, run) in targets {
        let corpus = load(name);
        let mut rng = Rng(seed | 1);
        let start = Instant::now();
        for i in 0..iterations {
            let a = &corpus[rng.below(corpus.len())];
            let b = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, a, b);
            let result = std::panic::catch_unwind(|| run(&input));
            if result.is_err() {
                let path = format!("crash-{name}-{i}.bin");
                std::fs::write(&path, &input)?;
                return Err(format!("{name} panicked on input saved to {path}").into());
            }
        }
        println!(
            "{name}: {iterations} executions, 0 crashes, {:.1} s, corpus {} inputs, seed {seed}",
            start.elapsed().as_secs_f64(),
            corpus.len()
        );
    }
    Ok(())
}
