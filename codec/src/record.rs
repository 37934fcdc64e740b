//! The recording file format (`dndm record`): signed batches as they arrived, with what it
//! takes to check and read them offline, in a file that stays readable after a crash.
//!
//! ```text
//! file    = FILE_MAGIC ("DNDMREC" 0x01, 8 bytes) record*
//! record  = marker (0xD5 0x7E) | length u32 LE | check (8 bytes) | body (length bytes)
//! check   = the first 8 bytes of BLAKE3(length LE || body)
//! body    = kind u8, then by kind:
//!   1 route  signer key (32) | session id (32) | route id u32 LE | fingerprint (8) | route (UTF-8)
//!   2 batch  arrival, ns since the Unix epoch u64 LE | signer key (32) | session id (32) | frame
//! ```
//!
//! A route record tells what a signer's route id means in one session (the batch's messages
//! name routes by id); it comes before the first batch that uses it. A batch record holds the
//! frame exactly as it arrived, signature included, so [`crate::verify_batch`] checks it
//! offline against the signer's key and session.
//!
//! A writer appends whole records. A crash can leave one partial record at the end: the reader
//! finds fewer bytes than the record announces and reports the torn tail, skipped. A damaged
//! record (its check fails) is still handed over when its length is plausible (the next record's
//! marker, or the end of the file, follows it), so a changed byte in a batch shows as the
//! signature failure it is, naming the signer; otherwise the reader reports it and goes on at
//! the next whole record whose check passes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dndm_core::{Fingerprint, PublicKey, Route};

use crate::sign::SessionId;

mod audit;

pub use audit::{RecordedMessage, Report, SignerReport, audit, messages};

/// The first 8 bytes of a recording.
pub const FILE_MAGIC: [u8; 8] = *b"DNDMREC\x01";
/// The first 2 bytes of every record.
pub const RECORD_MARKER: [u8; 2] = [0xD5, 0x7E];
/// Bytes before a record's body: marker, length, check.
pub const RECORD_HEADER_LEN: usize = 2 + 4 + 8;
/// The largest record body a reader accepts (a batch frame is at most 16 MiB).
pub const MAX_RECORD_LEN: usize = 32 << 20;

const ROUTE: u8 = 1;
const BATCH: u8 = 2;

/// What a signer's route id means in one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The key that signs the session's batches.
    pub signer: PublicKey,
    /// The session the id belongs to.
    pub session: SessionId,
    /// The route id the signer's batches use.
    pub route_id: u32,
    /// The route's schema fingerprint.
    pub fingerprint: Fingerprint,
    /// The route.
    pub route: Route,
}

/// A signed batch as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBatch {
    /// When it arrived.
    pub arrived: SystemTime,
    /// The key that signed it (the sending peer's identity).
    pub signer: PublicKey,
    /// The session it was signed for.
    pub session: SessionId,
    /// The frame, signature included.
    pub frame: Bytes,
}

/// One record of a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A route id's meaning.
    Route(RouteEntry),
    /// A signed batch.
    Batch(RecordedBatch),
}

impl Record {
    /// The record as it is written to a file (header and body).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        match self {
            Self::Route(r) => {
                body.push(ROUTE);
                body.extend_from_slice(&r.signer.to_bytes());
                body.extend_from_slice(&r.session.to_bytes());
                body.extend_from_slice(&r.route_id.to_le_bytes());
                body.extend_from_slice(&r.fingerprint.to_bytes());
                body.extend_from_slice(r.route.to_string().as_bytes());
            }
            Self::Batch(b) => {
                body.push(BATCH);
                let since = b.arrived.duration_since(UNIX_EPOCH).unwrap_or_default();
                let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
                body.extend_from_slice(&nanos.to_le_bytes());
                body.extend_from_slice(&b.signer.to_bytes());
                body.extend_from_slice(&b.session.to_bytes());
                body.extend_from_slice(&b.frame);
            }
        }
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(RECORD_HEADER_LEN + body.len());
        out.extend_from_slice(&RECORD_MARKER);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&check(len, &body));
        out.extend_from_slice(&body);
        out
    }
}

fn check(len: u32, body: &[u8]) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(body);
    let mut out = [0; 8];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    out
}

/// What a reader found at one place of a recording.
// Items are yielded one at a time: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A record; `intact` is false when its check failed (a changed byte: a batch's signature
    /// tells whether the frame is still the signer's).
    Record {
        /// Where the record starts in the file.
        offset: usize,
        /// The record.
        record: Record,
        /// Whether its check passed.
        intact: bool,
    },
    /// Bytes that make no record (a damaged header or body); the reader went on at the next
    /// marker.
    Damaged {
        /// Where they start.
        offset: usize,
        /// How many bytes were skipped.
        skipped: usize,
        /// What was wrong.
        reason: String,
    },
    /// A record cut short by the end of the file (a writer that crashed mid-record): skipped.
    TornTail {
        /// Where it starts.
        offset: usize,
        /// How many bytes it has.
        bytes: usize,
    },
}

/// Why a file is not a recording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a dndm recording: the file does not start with {FILE_MAGIC:?}")]
pub struct NotARecording;

/// Reads the records of a recording held in memory, in order (see the module docs).
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `data`, a whole recording file.
    ///
    /// # Errors
    /// [`NotARecording`] when `data` does not start with [`FILE_MAGIC`].
    pub fn new(data: &'a [u8]) -> Result<Self, NotARecording> {
        if !data.starts_with(&FILE_MAGIC) {
            return Err(NotARecording);
        }
        Ok(Self {
            data,
            at: FILE_MAGIC.len(),
        })
    }

    /// Whether a whole record whose check passes starts at `at` (a marker alone is not enough:
    /// the two marker bytes also occur inside frames).
    fn valid_at(&self, at: usize) -> bool {
        let Some(rest) = self.data.get(at..) else {
            return false;
        };
        if rest.len() < RECORD_HEADER_LEN || rest[..2] != RECORD_MARKER {
            return false;
        }
        let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let end = RECORD_HEADER_LEN + len as usize;
        len > 0
            && len as usize <= MAX_RECORD_LEN
            && rest.len() >= end
            && rest[6..RECORD_HEADER_LEN] == check(len, &rest[RECORD_HEADER_LEN..end])
    }

    /// Where the next whole record after `from` starts, or the end of the data.
    fn next_record(&self, from: usize) -> usize {
        let mut at = from;
        while let Some(p) = self
            .data
            .get(at..)
            .and_then(|rest| rest.windows(2).position(|w| w == RECORD_MARKER))
        {
            if self.valid_at(at + p) {
                return at + p;
            }
            at += p + 1;
        }
        self.data.len()
    }

    fn damaged(&mut self, offset: usize, reason: String) -> Item {
        let next = self.next_record(offset + 1);
        self.at = next;
        Item::Damaged {
            offset,
            skipped: next - offset,
            reason,
        }
    }
}

impl Iterator for Reader<'_> {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        let offset = self.at;
        let rest = self.data.get(offset..).filter(|r| !r.is_empty())?;
        if rest.len() < RECORD_HEADER_LEN {
            self.at = self.data.len();
            return Some(Item::TornTail {
                offset,
                bytes: rest.len(),
            });
        }
        if rest[..2] != RECORD_MARKER {
            return Some(self.damaged(offset, "no record marker".into()));
        }
        let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]);
        let body_len = len as usize;
        if body_len == 0 || body_len > MAX_RECORD_LEN {
            return Some(self.damaged(offset, format!("record length {len} out of range")));
        }
        let end = RECORD_HEADER_LEN + body_len;
        if rest.len() < end {
            // Only a last record can be cut short; one with whole records after it is damaged.
            if self.next_record(offset + 1) < self.data.len() {
                return Some(self.damaged(offset, format!("record length {len} overruns")));
            }
            self.at = self.data.len();
            return Some(Item::TornTail {
                offset,
                bytes: rest.len(),
            });
        }
        let body = &rest[RECORD_HEADER_LEN..end];
        let intact = rest[6..RECORD_HEADER_LEN] == check(len, body);
        // A failed check with a length that does not end where a record (or the file) starts
        // means the header itself is damaged.
        let followed = rest.len() == end || self.valid_at(offset + end);
        if !intact && !followed {
            return Some(self.damaged(offset, "record check failed".into()));
        }
        match parse(body) {
            Ok(record) => {
                self.at = offset + end;
                Some(Item::Record {
                    offset,
                    record,
                    intact,
                })
            }
            Err(reason) if intact => {
                self.at = offset + end;
                Some(Item::Damaged {
                    offset,
                    skipped: end,
                    reason,
                })
            }
            Err(reason) => Some(self.damaged(offset, reason)),
        }
    }
}

fn parse(body: &[u8]) -> Result<Record, String> {
    let (&kind, rest) = body.split_first().ok_or("empty record")?;
    let key = |bytes: &[u8]| -> Result<PublicKey, String> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| "short key")?;
        PublicKey::from_bytes(&bytes).map_err(|e| format!("signer key: {e}"))
    };
    let session = |bytes: &[u8]| -> Result<SessionId, String> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| "short session id")?;
        Ok(SessionId::from_bytes(bytes))
    };
    match kind {
        ROUTE if rest.len() > 76 => {
            let route_id = u32::from_le_bytes(rest[64..68].try_into().map_err(|_| "route id")?);
            let fingerprint: [u8; 8] = rest[68..76].try_into().map_err(|_| "fingerprint")?;
            let route = std::str::from_utf8(&rest[76..])
                .map_err(|_| "route is not UTF-8".to_owned())?
                .parse::<Route>()
                .map_err(|e| format!("route: {e}"))?;
            Ok(Record::Route(RouteEntry {
                signer: key(&rest[..32])?,
                session: session(&rest[32..64])?,
                route_id,
                fingerprint: Fingerprint::from_bytes(fingerprint),
                route,
            }))
        }
        BATCH if rest.len() > 72 => {
            let nanos = u64::from_le_bytes(rest[..8].try_into().map_err(|_| "arrival")?);
            Ok(Record::Batch(RecordedBatch {
                arrived: UNIX_EPOCH + Duration::from_nanos(nanos),
                signer: key(&rest[8..40])?,
                session: session(&rest[40..72])?,
                frame: Bytes::copy_from_slice(&rest[72..]),
            }))
        }
        ROUTE | BATCH => Err(format!("record of kind {kind} too short")),
        other => Err(format!("unknown record kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dndm_core::Keypair;

    fn records() -> Vec<Record> {
        let key = Keypair::from_seed([3; 32]).public();
        let session = SessionId::from_bytes([9; 32]);
        let route = Record::Route(RouteEntry {
            signer: key,
            session,
            route_id: 7,
            fingerprint: Fingerprint::from_bytes([1; 8]),
            route: "a.B@x.y".parse().unwrap(),
        });
        let batch = |n: u8| {
            Record::Batch(RecordedBatch {
                arrived: UNIX_EPOCH + Duration::from_nanos(1_000_000_007 * u64::from(n)),
                signer: key,
                session,
                frame: Bytes::from(vec![n; 100 + usize::from(n)]),
            })
        };
        vec![route, batch(1), batch(2), batch(3)]
    }

    fn file(records: &[Record]) -> Vec<u8> {
        let mut out = FILE_MAGIC.to_vec();
        for r in records {
            out.extend(r.encode());
        }
        out
    }

    fn read(data: &[u8]) -> Vec<Item> {
        Reader::new(data).unwrap().collect()
    }

    #[test]
    fn records_come_back_as_written() {
        let records = records();
        let items = read(&file(&records));
        let back: Vec<Record> = items
            .into_iter()
            .map(|i| match i {
                Item::Record {
                    record,
                    intact: true,
                    ..
                } => record,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(back, records);
    }

    #[test]
    fn a_torn_last_record_is_reported_and_the_rest_read() {
        let records = records();
        let whole = file(&records);
        let last = records[3].encode().len();
        for cut in 1..last {
            let data = &whole[..whole.len() - cut];
            let items = read(data);
            assert_eq!(items.len(), 4, "cut {cut}: {items:?}");
            assert!(matches!(items[2], Item::Record { intact: true, .. }));
            assert!(
                matches!(items[3], Item::TornTail { bytes, .. } if bytes == last - cut),
                "cut {cut}: {:?}",
                items[3]
            );
        }
    }

    #[test]
    fn a_changed_byte_in_a_body_is_handed_over_as_not_intact() {
        let records = records();
        let mut data = file(&records);
        let len = data.len();
        // A byte of the last batch's frame.
        data[len - 10] ^= 0x40;
        let items = read(&data);
        assert_eq!(items.len(), 4);
        match &items[3] {
            Item::Record {
                record: Record::Batch(b),
                intact: false,
                ..
            } => assert_ne!(
                b.frame,
                match &records[3] {
                    Record::Batch(b) => b.frame.clone(),
                    Record::Route(_) => unreachable!(),
                }
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_damaged_header_is_skipped_to_the_next_record() {
        let records = records();
        let mut data = file(&records);
        let second = FILE_MAGIC.len() + records[0].encode().len();
        // The second record's length.
        data[second + 3] ^= 0x10;
        let items = read(&data);
        assert!(
            items
                .iter()
                .any(|i| matches!(i, Item::Damaged { offset, .. } if *offset == second)),
            "{items:?}"
        );
        let intact = items
            .iter()
            .filter(|i| matches!(i, Item::Record { intact: true, .. }))
            .count();
        assert_eq!(intact, 3, "the other three records: {items:?}");
    }

    #[test]
    fn a_file_without_the_magic_is_refused() {
        assert_eq!(Reader::new(b"hello").unwrap_err(), NotARecording);
    }

    /// Marker bytes inside a torn last record's body (frames are arbitrary bytes) do not make
    /// it "damaged": only whole records after it would.
    #[test]
    fn marker_bytes_inside_a_torn_record_leave_it_a_torn_tail() {
        let key = dndm_core::Keypair::from_seed([3; 32]).public();
        let mut frame = vec![1u8; 200];
        for at in [20, 90, 150] {
            frame[at] = RECORD_MARKER[0];
            frame[at + 1] = RECORD_MARKER[1];
        }
        let batch = Record::Batch(RecordedBatch {
            arrived: UNIX_EPOCH,
            signer: key,
            session: SessionId::from_bytes([9; 32]),
            frame: Bytes::from(frame),
        });
        let mut records = records();
        records.push(batch);
        let whole = file(&records);
        let last = records[4].encode().len();
        for cut in 1..last {
            let items = read(&whole[..whole.len() - cut]);
            assert_eq!(items.len(), 5, "cut {cut}: {items:?}");
            assert!(
                matches!(items[4], Item::TornTail { .. }),
                "cut {cut}: {:?}",
                items[4]
            );
        }
    }
}
