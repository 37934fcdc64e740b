//! Reading a recording offline: every batch's signature checked against its signer's key
//! ([`audit`]), and the recorded messages in order with their routes ([`messages`]).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use bytes::Bytes;
use dndm_core::{Fingerprint, PeerId, Route};

use super::{Item, NotARecording, Reader, Record, RecordedBatch};
use crate::codec::Decoder;
use crate::frame::{Correlation, Frame};
use crate::limits::Limits;
use crate::sign::{SessionId, verify_batch};

/// What [`audit`] found for one signer (publisher node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignerReport {
    /// Batches whose signature verified.
    pub verified: u64,
    /// Batches whose signature did not verify (a changed byte, another key or session).
    pub failed: u64,
    /// Messages in the verified batches.
    pub messages: u64,
}

/// What [`audit`] found in a recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Per signer.
    pub signers: BTreeMap<PeerId, SignerReport>,
    /// Records whose check passed.
    pub intact: u64,
    /// Stretches of bytes that made no record, with where they start and why.
    pub damaged: Vec<(usize, String)>,
    /// A record cut short at the end (a writer that crashed mid-record): where it starts and
    /// its length. Skipped.
    pub torn_tail: Option<(usize, usize)>,
    /// Failed signatures: where the record starts, and whose it claims to be.
    pub failures: Vec<(usize, PeerId)>,
}

impl Report {
    /// Whether every batch verified and nothing but a torn tail was skipped.
    pub fn all_verified(&self) -> bool {
        self.failures.is_empty() && self.damaged.is_empty()
    }
}

/// Checks every batch of a recording against its signer's key and session.
///
/// # Errors
/// [`NotARecording`] when `data` does not start with the file magic.
pub fn audit(data: &[u8]) -> Result<Report, NotARecording> {
    let mut report = Report::default();
    let mut decoder = Decoder::new(Limits::permissive());
    for item in Reader::new(data)? {
        match item {
            Item::Record {
                record,
                intact,
                offset,
            } => {
                report.intact += u64::from(intact);
                let Record::Batch(batch) = record else {
                    continue;
                };
                let signer = batch.signer.peer_id();
                let entry = report.signers.entry(signer).or_default();
                match verify_batch(&batch.frame, &batch.session, &batch.signer) {
                    Ok(()) => {
                        entry.verified += 1;
                        if let Ok(Frame::Batch(b)) = decoder.decode(&batch.frame) {
                            entry.messages += b.messages.len() as u64;
                        }
                    }
                    Err(_) => {
                        entry.failed += 1;
                        report.failures.push((offset, signer));
                    }
                }
            }
            Item::Damaged { offset, reason, .. } => report.damaged.push((offset, reason)),
            Item::TornTail { offset, bytes } => report.torn_tail = Some((offset, bytes)),
        }
    }
    Ok(report)
}

/// One recorded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedMessage {
    /// When its batch arrived.
    pub arrived: SystemTime,
    /// Its publisher's node (the batch's signer).
    pub signer: PeerId,
    /// The route it was published on.
    pub route: Route,
    /// The route's schema fingerprint, as its publisher declared it.
    pub fingerprint: Fingerprint,
    /// The encoded message.
    pub payload: Bytes,
}

/// The published messages of a recording, in recorded order, from batches whose signature
/// verified (requests and responses are left out; so are messages on a route id the recording
/// does not explain).
///
/// # Errors
/// [`NotARecording`] when `data` does not start with the file magic.
pub fn messages(data: &[u8]) -> Result<Vec<RecordedMessage>, NotARecording> {
    let mut routes: HashMap<([u8; 32], SessionId, u32), (Route, Fingerprint)> = HashMap::new();
    let mut decoder = Decoder::new(Limits::permissive());
    let mut out = Vec::new();
    for item in Reader::new(data)? {
        let Item::Record { record, .. } = item else {
            continue;
        };
        match record {
            Record::Route(r) => {
                routes.insert(
                    (r.signer.to_bytes(), r.session, r.route_id),
                    (r.route, r.fingerprint),
                );
            }
            Record::Batch(batch) => {
                let RecordedBatch {
                    arrived,
                    signer,
                    session,
                    frame,
                } = batch;
                if verify_batch(&frame, &session, &signer).is_err() {
                    continue;
                }
                let Ok(Frame::Batch(b)) = decoder.decode(&frame) else {
                    continue;
                };
                for m in b.messages {
                    if m.correlation != Correlation::None {
                        continue;
                    }
                    let key = (signer.to_bytes(), session, m.route_id);
                    if let Some((route, fingerprint)) = routes.get(&key) {
                        out.push(RecordedMessage {
                            arrived,
                            signer: signer.peer_id(),
                            route: route.clone(),
                            fingerprint: *fingerprint,
                            payload: m.payload,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}
