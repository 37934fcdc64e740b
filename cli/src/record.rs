//! `dndm record`, `dndm verify` and `dndm info`: recordings of the signed batches peers send
//! (the file format is `dndm_codec::record`, documented in docs/protocol.md).
//!
//! The recorder is a mesh node that asks its peers to sign (`remote.signing = batch`) and
//! subscribes to the patterns to record; every batch that arrives on its sessions is written as
//! it came, with its signer's key, its session and the meaning of its route ids, so that
//! `verify` can check each one offline and `info` can read the messages back.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use dndm::PeerId;
use dndm::builtin::{Bytes, Json, Text};
use dndm::core::Signing;
use dndm::mesh::MeshConfig;
use dndm::{Overflow, Router, SubscribeOptions};
use dndm_codec::record::{FILE_MAGIC, Item, Reader, Record, audit, messages};
use tokio::sync::mpsc;

use crate::pubsub::{Kind, MeshArgs, join_with};
use crate::signals;

/// Records a recorder may fall behind by before batches are dropped (counted).
const RECORDER_QUEUE: usize = 65_536;

/// `dndm demo --record` says when this many batches are written.
const FIRST_BATCHES: u64 = 100;

/// Arguments of `dndm record`.
#[derive(Debug, clap::Args)]
pub(crate) struct RecordArgs {
    /// Route patterns to record, e.g. chat.* (the type comes from --type). Repeatable.
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Message type of the patterns.
    #[arg(long = "type", value_enum, default_value_t)]
    kind: Kind,
    /// The recording to write (created or truncated). Rotated files get `.1`, `.2`, ...
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Start a new file once one reaches this many bytes.
    #[arg(long, default_value_t = 256 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    max_bytes: u64,
    /// Stop after this many seconds. Default: run until interrupted.
    #[arg(long, value_parser = crate::parse_seconds)]
    duration: Option<Duration>,
    #[command(flatten)]
    mesh: MeshArgs,
}

/// Arguments of `dndm verify` and `dndm info`.
#[derive(Debug, clap::Args)]
pub(crate) struct FilesArgs {
    /// Recordings to read.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// Exit-code help of `dndm verify`.
pub(crate) const VERIFY_EXIT_HELP: &str = "Exit status: 0 when every batch verified (a torn \
last record, left by a recorder that crashed, is skipped and reported), 1 when a batch failed \
its signature or bytes made no record.";

/// Writes records to a recording, starting a new file past `max_bytes`. Each file starts with
/// the route entries seen so far, so that it can be read alone.
pub(crate) struct RecordingWriter {
    path: PathBuf,
    max_bytes: u64,
    file: BufWriter<File>,
    written: u64,
    index: u32,
    routes: Vec<Record>,
    /// Batches written.
    pub(crate) batches: u64,
    /// Bytes written, all files.
    pub(crate) bytes: u64,
}

impl RecordingWriter {
    /// A writer of a new recording at `path` (truncated if it exists).
    pub(crate) fn create(path: &Path, max_bytes: u64) -> anyhow::Result<Self> {
        let file = new_file(path)?;
        Ok(Self {
            path: path.to_owned(),
            max_bytes,
            file,
            written: FILE_MAGIC.len() as u64,
            index: 0,
            routes: Vec::new(),
            batches: 0,
            bytes: FILE_MAGIC.len() as u64,
        })
    }

    /// Appends a record (whole; a crash can only cut the last one short).
    pub(crate) fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        let bytes = record.encode();
        if self.written + bytes.len() as u64 > self.max_bytes
            && self.written > FILE_MAGIC.len() as u64
        {
            self.rotate()?;
        }
        match record {
            Record::Route(_) => self.routes.push(record.clone()),
            Record::Batch(_) => self.batches += 1,
        }
        self.put(&bytes)
    }

    fn put(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.file
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", self.current().display()))?;
        self.written += bytes.len() as u64;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Hands what was written to the operating system (it survives the process then).
    pub(crate) fn flush(&mut self) -> anyhow::Result<()> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {}", self.current().display()))
    }

    fn current(&self) -> PathBuf {
        if self.index == 0 {
            self.path.clone()
        } else {
            PathBuf::from(format!("{}.{}", self.path.display(), self.index))
        }
    }

    fn rotate(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        self.index += 1;
        self.file = new_file(&self.current())?;
        self.written = FILE_MAGIC.len() as u64;
        self.bytes += FILE_MAGIC.len() as u64;
        let routes: Vec<Vec<u8>> = self.routes.iter().map(Record::encode).collect();
        for route in routes {
            self.put(&route)?;
        }
        Ok(())
    }
}

fn new_file(path: &Path) -> anyhow::Result<BufWriter<File>> {
    let mut file = BufWriter::new(
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    file.write_all(&FILE_MAGIC)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(file)
}

/// Writes what `records` brings until it ends (or `stop` resolves), flushing after each burst;
/// `flushed` is told the batches written so far after each flush.
pub(crate) async fn write_records(
    mut records: mpsc::Receiver<Record>,
    writer: &mut RecordingWriter,
    stop: impl std::future::Future<Output = ()>,
    mut flushed: impl FnMut(u64),
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    loop {
        let record = tokio::select! {
            record = records.recv() => record,
            () = &mut stop => break,
        };
        let Some(record) = record else { break };
        writer.write(&record)?;
        // What else is there already goes in the same flush.
        while let Ok(record) = records.try_recv() {
            writer.write(&record)?;
        }
        writer.flush()?;
        flushed(writer.batches);
    }
    while let Ok(record) = records.try_recv() {
        writer.write(&record)?;
    }
    writer.flush()
}

/// Mesh settings of a recorder: peers sign for it, and it hands their batches over.
pub(crate) fn recording(config: &mut MeshConfig) {
    config.remote.session.signing = Signing::Batch;
    config.remote.session.record = true;
}

/// Subscribes a recorder to `pattern` and drains what its subscription gets (the recording
/// comes from the links, not from the subscription; it only makes publishers send here).
fn keep_subscribed<T: dndm::Message>(
    router: &Router,
    pattern: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let options = SubscribeOptions::default().overflow(Overflow::DropOldest);
    let mut interest = router
        .subscribe_with::<T>(pattern, options)
        .with_context(|| format!("cannot subscribe to {pattern}"))?;
    Ok(tokio::spawn(async move {
        while interest.recv().await.is_ok() {}
    }))
}

/// Runs `dndm record`.
pub(crate) async fn run_record(args: RecordArgs) -> anyhow::Result<()> {
    check_out(&args.out)?;
    let node = join_with(&args.mesh, "dndm-record", recording).await?;
    let records = node.mesh.recorder(RECORDER_QUEUE)?;
    let mut drains = Vec::new();
    for pattern in &args.patterns {
        drains.push(match args.kind {
            Kind::Text => keep_subscribed::<Text>(&node.router, pattern)?,
            Kind::Json => keep_subscribed::<Json>(&node.router, pattern)?,
            Kind::Bytes => keep_subscribed::<Bytes>(&node.router, pattern)?,
        });
    }
    let mut writer = RecordingWriter::create(&args.out, args.max_bytes)?;
    eprintln!(
        "record: recording {} into {}",
        args.patterns.join(", "),
        args.out.display()
    );
    let duration = args.duration;
    let stop = async move {
        let signal = signals::shutdown();
        match duration {
            Some(d) => {
                let _ = tokio::time::timeout(d, signal).await;
            }
            None => {
                let _ = signal.await;
            }
        }
    };
    let written = write_records(records, &mut writer, stop, |_| {}).await;
    let dropped = node.mesh.stats().record_dropped;
    node.router.close().await;
    for drain in drains {
        let _ = drain.await;
    }
    written?;
    eprintln!(
        "record: {} batch(es), {} byte(s) written; {dropped} dropped (the recorder fell behind)",
        writer.batches, writer.bytes
    );
    Ok(())
}

/// Runs `dndm verify`: every batch's signature, per publisher; fails when one did not verify.
pub(crate) fn run_verify(args: &FilesArgs) -> anyhow::Result<()> {
    let mut ok = true;
    for path in &args.files {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let report = audit(&data).with_context(|| path.display().to_string())?;
        println!("{}:", path.display());
        for (signer, s) in &report.signers {
            println!(
                "  publisher {signer}: {} batch(es) verified ({} message(s)), {} failed",
                s.verified, s.messages, s.failed
            );
        }
        for (offset, signer) in &report.failures {
            println!("  record at byte {offset}: signature does not verify (publisher {signer})");
        }
        for (offset, reason) in &report.damaged {
            println!("  bytes at {offset} make no record: {reason}");
        }
        if let Some((offset, bytes)) = report.torn_tail {
            println!("  torn tail: {bytes} byte(s) at {offset} (a record cut short; skipped)");
        }
        if report.all_verified() {
            println!("  every complete record verified");
        } else {
            ok = false;
        }
    }
    if !ok {
        bail!("some records did not verify (see above)");
    }
    Ok(())
}

/// Runs `dndm info`: routes, counts, duration and rates.
pub(crate) fn run_info(args: &FilesArgs) -> anyhow::Result<()> {
    for path in &args.files {
        let data =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut records = 0u64;
        let mut torn = None;
        for item in Reader::new(&data).with_context(|| path.display().to_string())? {
            match item {
                Item::Record { .. } => records += 1,
                Item::TornTail { bytes, .. } => torn = Some(bytes),
                Item::Damaged { .. } => {}
            }
        }
        let recorded = messages(&data).with_context(|| path.display().to_string())?;
        println!(
            "{}: {} byte(s), {records} record(s), {} message(s){}",
            path.display(),
            data.len(),
            recorded.len(),
            torn.map_or(String::new(), |b| format!(", torn tail of {b} byte(s)"))
        );
        let mut routes: BTreeMap<(String, PeerId), (u64, SystemTime, SystemTime)> = BTreeMap::new();
        for m in &recorded {
            let entry = routes
                .entry((m.route.to_string(), m.signer))
                .or_insert((0, m.arrived, m.arrived));
            entry.0 += 1;
            entry.1 = entry.1.min(m.arrived);
            entry.2 = entry.2.max(m.arrived);
        }
        for ((route, signer), (count, first, last)) in routes {
            let span = last.duration_since(first).unwrap_or_default();
            let rate = if span.is_zero() {
                String::from("-")
            } else {
                format!("{:.0}/s", count as f64 / span.as_secs_f64())
            };
            println!(
                "  {route} from {signer}: {count} message(s) over {:.3} s ({rate})",
                span.as_secs_f64()
            );
        }
    }
    Ok(())
}

/// Fails unless `path`'s parent directory exists (a clear error before joining the mesh).
pub(crate) fn check_out(path: &Path) -> anyhow::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => bail!(
            "--out {}: {} is not a directory",
            path.display(),
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// A recorder node of `dndm demo --record`: it joins the demo's mesh through the hub and
/// records every sensor's batches.
pub(crate) struct DemoRecorder {
    router: Router,
    stop: tokio_util::sync::CancellationToken,
    writing: tokio::task::JoinHandle<anyhow::Result<RecordingWriter>>,
    drain: tokio::task::JoinHandle<()>,
    path: PathBuf,
}

/// Starts the demo's recorder, joined through `hub`, writing to `path`.
pub(crate) async fn demo_recorder(
    hub: &dndm::mesh::MeshEndpoint,
    path: &Path,
) -> anyhow::Result<DemoRecorder> {
    check_out(path)?;
    let address = crate::demo::first_listen_address(hub).await?;
    let mut config = MeshConfig::default();
    config.transport = dndm::mesh::Transport::Tcp;
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.mdns = false;
    config.dial = vec![format!("{address}/p2p/{}", hub.peer_id()).parse()?];
    config.remote.session.node_name = "recorder".to_owned();
    recording(&mut config);
    let router = Router::builder().name("recorder").build()?;
    let mesh = dndm::mesh::MeshEndpoint::new(dndm::Keypair::generate()?, config)?;
    let records = mesh.recorder(RECORDER_QUEUE)?;
    router
        .attach(std::sync::Arc::new(mesh))
        .await
        .context("recorder: cannot join the mesh")?;
    let drain = keep_subscribed::<crate::demo::Imu>(&router, "robot.**")?;
    let mut writer = RecordingWriter::create(path, 256 << 20)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let writing = tokio::spawn(async move {
        // One line once the recording is under way (a test waits for it).
        let mut told = false;
        let tell = |batches| {
            if !told && batches >= FIRST_BATCHES {
                told = true;
                println!("dndm demo: recorder has its first {FIRST_BATCHES} batches on disk");
            }
        };
        write_records(records, &mut writer, stopped.cancelled_owned(), tell).await?;
        Ok(writer)
    });
    println!("dndm demo: recording every sensor into {}", path.display());
    Ok(DemoRecorder {
        router,
        stop,
        writing,
        drain,
        path: path.to_owned(),
    })
}

impl DemoRecorder {
    /// Writes what is left, closes the recorder node and reports what was written.
    pub(crate) async fn finish(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let writer = self
            .writing
            .await
            .context("recorder: the writer task failed")??;
        self.router.close().await;
        let _ = self.drain.await;
        println!(
            "dndm demo: recorded {} batch(es), {} byte(s) into {} (check it: dndm verify {})",
            writer.batches,
            writer.bytes,
            self.path.display(),
            self.path.display()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dndm::Keypair;
    use dndm_codec::SessionId;
    use dndm_codec::record::{RecordedBatch, RouteEntry};

    /// Past `max_bytes` the writer starts `FILE.1`, `FILE.2`...; each starts with the route
    /// entries, so each reads alone, and together they hold every batch once.
    #[test]
    fn a_recording_rotates_and_every_file_reads_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.rec");
        let key = Keypair::from_seed([5; 32]).public();
        let session = SessionId::from_bytes([1; 32]);
        let mut writer = RecordingWriter::create(&path, 4096).unwrap();
        let route = Record::Route(RouteEntry {
            signer: key,
            session,
            route_id: 1,
            fingerprint: dndm::Fingerprint::from_bytes([2; 8]),
            route: "a.B@x".parse().unwrap(),
        });
        writer.write(&route).unwrap();
        for n in 0..40u8 {
            let batch = Record::Batch(RecordedBatch {
                arrived: SystemTime::UNIX_EPOCH,
                signer: key,
                session,
                frame: bytes::Bytes::from(vec![n; 500]),
            });
            writer.write(&batch).unwrap();
        }
        writer.flush().unwrap();
        let mut files = vec![path.clone()];
        for i in 1.. {
            let next = PathBuf::from(format!("{}.{i}", path.display()));
            if !next.exists() {
                break;
            }
            files.push(next);
        }
        assert!(files.len() >= 4, "{} files", files.len());
        let mut batches = Vec::new();
        for file in &files {
            let data = std::fs::read(file).unwrap();
            assert!(
                data.len() as u64 <= 4096,
                "{}: {} bytes",
                file.display(),
                data.len()
            );
            let items: Vec<Item> = Reader::new(&data).unwrap().collect();
            assert!(
                matches!(
                    &items[0],
                    Item::Record {
                        record: Record::Route(_),
                        intact: true,
                        ..
                    }
                ),
                "{} starts with the routes",
                file.display()
            );
            for item in items {
                match item {
                    Item::Record {
                        record: Record::Batch(b),
                        intact: true,
                        ..
                    } => batches.push(b.frame[0]),
                    Item::Record { intact: true, .. } => {}
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(batches, (0..40).collect::<Vec<u8>>());
        assert_eq!(writer.batches, 40);
    }
}
