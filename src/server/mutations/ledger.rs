//! The ledger: request ids (for idempotent repeats) and erasure receipts that must outlive the
//! journal segments compaction deletes.
//!
//! Append-only: binary records in the journal's checksummed segment format (its group-commit
//! writer too) under `<data dir>/ledger/`, so a compaction costs the entries written since the
//! last one, not the whole retention. Request records arrive in journal order from the
//! background recorder; receipts are appended when created and again when they change, and the
//! last record of a receipt id wins on replay. Retention is by whole segment: the ledger rotates
//! daily (or every [`ROTATE_RECORDS`] records) and a closed segment last written before the
//! request-id cutoff is deleted, after the receipts it holds are written again to the newest
//! segment (receipts are kept for good). A torn tail is dropped like the journal's; any other
//! damage, or a well-formed record that does not decode, refuses start-up with file and offset.
//!
//! Replaces `ledger.dat` (one JSON document rewritten whole at every compaction), which is read
//! once, appended here and deleted.

use super::observers::FailureMetrics;
use super::{Receipt, RequestRecord};
use crate::store::PayloadDigest;
use crate::store::{Log, OsIo};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

const LEGACY_FILE: &str = "ledger.dat";
const LEGACY_MAGIC: &[u8; 8] = b"SUPLEDG1";
/// A request record of a ledger written before request ids were scoped by tenant (no tenant,
/// no digest): still read, never written.
const LEGACY_REQUEST: u8 = 1;
const RECEIPT: u8 = 2;
/// A request record with its tenant and the digest of what it asked.
const REQUEST: u8 = 3;
/// A receipt of a fleet erasure: a receipt record followed by its stream sequence.
const FLEET_RECEIPT: u8 = 4;
/// A segment holds at most this many records before the next compaction rotates it.
pub const ROTATE_RECORDS: u64 = 1 << 20;
const ROTATE_MS: i64 = 86_400_000;

/// One ledger record.
pub enum Item<'a> {
    Request(&'a RequestRecord),
    /// A record migrated from the whole-file ledger, whose tenant is unknown: kept unscoped.
    LegacyRequest(&'a RequestRecord),
    Receipt(&'a Receipt),
}

/// What the ledger held at open.
#[derive(Default)]
pub struct Loaded {
    /// Request records not older than the cutoff.
    pub requests: Vec<RequestRecord>,
    /// Request records (not older than the cutoff) written before ids were scoped by tenant.
    pub legacy_requests: Vec<RequestRecord>,
    /// The latest version of every receipt.
    pub receipts: HashMap<String, Receipt>,
    /// Highest journal sequence number of any request record (0: none).
    pub through: u64,
}

pub struct Ledger {
    journal: Log,
    written_since_rotation: AtomicU64,
    rotated_at_ms: AtomicI64,
}

impl Ledger {
    /// Opens (creating or migrating) the ledger under `data_dir`; drops request records older
    /// than `cutoff_ms` from what it returns.
    pub fn open(data_dir: &Path, repair: bool, cutoff_ms: i64) -> Result<(Ledger, Loaded), String> {
        let dir = data_dir.join("ledger");
        let (journal, replay) =
            Log::open_with(&dir, repair, Box::new(OsIo), Arc::new(FailureMetrics))
                .map_err(|e| format!("ledger: {e}"))?;
        let ledger = Ledger {
            journal,
            written_since_rotation: AtomicU64::new(0),
            rotated_at_ms: AtomicI64::new(crate::server::state::now_ms()),
        };
        let mut loaded = Loaded::default();
        for record in &replay.records {
            let item = decode(&record.payload).map_err(|reason| {
                let (file, offset) = ledger.journal.locate(record.seq).unwrap_or_default();
                format!(
                    "ledger {}: corrupt at offset {offset}: {reason}",
                    file.display()
                )
            })?;
            loaded.add(item, cutoff_ms);
        }
        ledger.migrate_legacy(data_dir, &mut loaded, cutoff_ms)?;
        Ok((ledger, loaded))
    }

    /// Moves the old whole-file ledger into the segments, then deletes it.
    fn migrate_legacy(
        &self,
        data_dir: &Path,
        loaded: &mut Loaded,
        cutoff_ms: i64,
    ) -> Result<(), String> {
        let path = data_dir.join(LEGACY_FILE);
        let Some((requests, receipts)) = read_legacy(&path)? else {
            return Ok(());
        };
        let items: Vec<Item> = requests
            .iter()
            .map(Item::LegacyRequest)
            .chain(receipts.iter().map(Item::Receipt))
            .collect();
        self.append_blocking(&items)?;
        for item in requests.into_iter().map(Owned::LegacyRequest) {
            loaded.add(item, cutoff_ms);
        }
        for item in receipts.into_iter().map(Owned::Receipt) {
            loaded.add(item, cutoff_ms);
        }
        std::fs::remove_file(&path).map_err(|e| format!("ledger {}: {e}", path.display()))?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", data_dir.display()))?;
        tracing::info!(file = %path.display(), "old whole-file ledger moved into ledger segments");
        Ok(())
    }

    /// Appends records (one group commit) and waits until they are durable.
    pub fn append_blocking(&self, items: &[Item]) -> Result<(), String> {
        let payloads: Vec<Vec<u8>> = items.iter().map(encode).collect();
        self.written_since_rotation
            .fetch_add(payloads.len() as u64, Ordering::Relaxed);
        self.journal
            .append_all_blocking(payloads)
            .map(|_| ())
            .map_err(|e| format!("ledger: {e}"))
    }

    /// Rotates the segment being written when it is a day old or large, then deletes closed
    /// segments last written before `cutoff_ms`, first writing again the receipts they hold
    /// (`current` gives each receipt's latest version). Returns how many were deleted.
    pub fn enforce_retention(
        &self,
        cutoff_ms: i64,
        current: &HashMap<String, Receipt>,
    ) -> Result<usize, String> {
        let now = crate::server::state::now_ms();
        if self.written_since_rotation.load(Ordering::Relaxed) >= ROTATE_RECORDS
            || now - self.rotated_at_ms.load(Ordering::Relaxed) >= ROTATE_MS
        {
            self.journal
                .rotate_blocking()
                .map_err(|e| format!("ledger: {e}"))?;
            self.written_since_rotation.store(0, Ordering::Relaxed);
            self.rotated_at_ms.store(now, Ordering::Relaxed);
        }
        let cutoff =
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(cutoff_ms.max(0) as u64);
        let files = self.journal.files();
        // Oldest first, never the newest segment (being written); stop at the first young one,
        // so what stays is contiguous.
        let old = files[..files.len().saturating_sub(1)]
            .iter()
            .take_while(|path| {
                std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff)
            })
            .count();
        if old == 0 {
            return Ok(0);
        }
        let mut kept = Vec::new();
        for path in &files[..old] {
            let bytes =
                std::fs::read(path).map_err(|e| format!("ledger {}: {e}", path.display()))?;
            let mut records = Vec::new();
            crate::store::scan_segment(&bytes, &mut records);
            for record in records {
                if let Ok(Owned::Receipt(receipt)) = decode(&record.payload)
                    && let Some(latest) = current.get(&receipt.receipt_id)
                {
                    kept.push(latest);
                }
            }
        }
        kept.sort_by(|a, b| a.receipt_id.cmp(&b.receipt_id));
        kept.dedup_by(|a, b| a.receipt_id == b.receipt_id);
        let items: Vec<Item> = kept.into_iter().map(Item::Receipt).collect();
        self.append_blocking(&items)?;
        // The segment after the last old one starts right after the records to drop.
        let next_first = files[old]
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| format!("ledger {}: unexpected file name", files[old].display()))?;
        self.journal
            .drop_through(next_first.saturating_sub(1))
            .map_err(|e| format!("ledger: {e}"))
    }

    pub fn files(&self) -> Vec<PathBuf> {
        self.journal.files()
    }
}

enum Owned {
    Request(RequestRecord),
    LegacyRequest(RequestRecord),
    Receipt(Receipt),
}

impl Loaded {
    fn add(&mut self, item: Owned, cutoff_ms: i64) {
        match item {
            Owned::Request(record) => {
                self.through = self.through.max(record.seq);
                if record.at_ms >= cutoff_ms {
                    self.requests.push(record);
                }
            }
            Owned::LegacyRequest(record) => {
                self.through = self.through.max(record.seq);
                if record.at_ms >= cutoff_ms {
                    self.legacy_requests.push(record);
                }
            }
            Owned::Receipt(receipt) => {
                self.receipts.insert(receipt.receipt_id.clone(), receipt);
            }
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    // Texts here are request ids (≤ 128 bytes), set and tenant names: far below u16::MAX.
    let bytes = &text.as_bytes()[..text.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn put_texts(out: &mut Vec<u8>, texts: &[String]) {
    out.extend_from_slice(&(texts.len().min(u16::MAX as usize) as u16).to_le_bytes());
    for text in texts.iter().take(u16::MAX as usize) {
        put_text(out, text);
    }
}

fn encode(item: &Item) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    match item {
        Item::Request(record) => {
            out.push(REQUEST);
            put_text(&mut out, &record.request_id);
            put_text(&mut out, &record.tenant);
            put_text(&mut out, record.kind);
            out.extend_from_slice(&record.seq.to_le_bytes());
            out.extend_from_slice(&record.applied.to_le_bytes());
            out.extend_from_slice(&record.at_ms.to_le_bytes());
            put_text(&mut out, &record.receipt_id);
            match &record.digest {
                None => out.push(0),
                Some(digest) => {
                    out.push(1);
                    out.extend_from_slice(&digest.key_tag.to_le_bytes());
                    out.extend_from_slice(&digest.hash);
                }
            }
        }
        Item::LegacyRequest(record) => {
            out.push(LEGACY_REQUEST);
            put_text(&mut out, &record.request_id);
            put_text(&mut out, record.kind);
            out.extend_from_slice(&record.seq.to_le_bytes());
            out.extend_from_slice(&record.applied.to_le_bytes());
            out.extend_from_slice(&record.at_ms.to_le_bytes());
            put_text(&mut out, &record.receipt_id);
        }
        Item::Receipt(receipt) => {
            out.push(if receipt.stream_seq == 0 {
                RECEIPT
            } else {
                FLEET_RECEIPT
            });
            put_text(&mut out, &receipt.receipt_id);
            put_text(&mut out, &receipt.request_id);
            put_text(&mut out, &receipt.tenant);
            out.extend_from_slice(&receipt.seq.to_le_bytes());
            for at in [
                receipt.requested_at_ms,
                receipt.in_force_at_ms,
                receipt.completed_at_ms,
            ] {
                out.extend_from_slice(&at.to_le_bytes());
            }
            put_texts(&mut out, &receipt.removed_from);
            put_texts(&mut out, &receipt.added_to);
            if receipt.stream_seq != 0 {
                out.extend_from_slice(&receipt.stream_seq.to_le_bytes());
            }
        }
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or("record ends early")?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.array().map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_le_bytes)
    }
    fn text(&mut self) -> Result<String, String> {
        let len = u16::from_le_bytes(self.array()?) as usize;
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| "text is not UTF-8".to_string())
    }
    fn texts(&mut self) -> Result<Vec<String>, String> {
        let count = u16::from_le_bytes(self.array()?) as usize;
        // Each text takes at least its 2-byte length: refuse counts the record cannot hold.
        if count > self.bytes.len() / 2 {
            return Err("text count exceeds the record".into());
        }
        (0..count).map(|_| self.text()).collect()
    }
}

/// Decodes one record payload and drops it: whether the ledger would accept it (fuzzing).
pub fn check_record(bytes: &[u8]) -> Result<(), String> {
    decode(bytes).map(|_| ())
}

fn decode(bytes: &[u8]) -> Result<Owned, String> {
    let mut reader = Reader { bytes, at: 0 };
    let kind_of = |name: &str| {
        crate::store::MutationKind::from_name(name)
            .map_or("unknown", crate::store::MutationKind::name)
    };
    let tag = reader.array::<1>()?[0];
    let item = match tag {
        LEGACY_REQUEST => Owned::LegacyRequest(RequestRecord {
            request_id: reader.text()?,
            tenant: String::new(),
            kind: kind_of(&reader.text()?),
            seq: reader.u64()?,
            applied: u32::from_le_bytes(reader.array()?),
            at_ms: reader.i64()?,
            receipt_id: reader.text()?,
            digest: None,
        }),
        REQUEST => Owned::Request(RequestRecord {
            request_id: reader.text()?,
            tenant: reader.text()?,
            kind: kind_of(&reader.text()?),
            seq: reader.u64()?,
            applied: u32::from_le_bytes(reader.array()?),
            at_ms: reader.i64()?,
            receipt_id: reader.text()?,
            digest: match reader.array::<1>()?[0] {
                0 => None,
                1 => Some(PayloadDigest {
                    key_tag: u32::from_le_bytes(reader.array()?),
                    hash: reader.array()?,
                }),
                _ => return Err("unknown digest marker in request record".into()),
            },
        }),
        RECEIPT | FLEET_RECEIPT => Owned::Receipt(Receipt {
            receipt_id: reader.text()?,
            request_id: reader.text()?,
            tenant: reader.text()?,
            seq: reader.u64()?,
            requested_at_ms: reader.i64()?,
            in_force_at_ms: reader.i64()?,
            completed_at_ms: reader.i64()?,
            removed_from: reader.texts()?,
            added_to: reader.texts()?,
            stream_seq: if tag == FLEET_RECEIPT {
                reader.u64()?
            } else {
                0
            },
        }),
        tag => return Err(format!("unknown ledger record type {tag}")),
    };
    if reader.at != bytes.len() {
        return Err("trailing bytes in ledger record".into());
    }
    Ok(item)
}

#[derive(serde::Deserialize)]
struct Legacy {
    requests: Vec<LegacyRequest>,
    receipts: Vec<Receipt>,
}

#[derive(serde::Deserialize)]
struct LegacyRequest {
    request_id: String,
    kind: String,
    seq: u64,
    applied: u32,
    at_ms: i64,
    receipt_id: String,
}

/// Request records and receipts of the old whole-file ledger.
type LegacyContents = (Vec<RequestRecord>, Vec<Receipt>);

/// The old whole-file ledger, if there is one.
fn read_legacy(path: &Path) -> Result<Option<LegacyContents>, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("ledger {}: {e}", path.display())),
    };
    if bytes.len() < 12 || &bytes[..8] != LEGACY_MAGIC {
        return Err(format!(
            "ledger {}: corrupt at offset 0: bad magic",
            path.display()
        ));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[12..]) != crc {
        return Err(format!(
            "ledger {}: corrupt at offset 12: checksum mismatch",
            path.display()
        ));
    }
    let legacy: Legacy = serde_json::from_slice(&bytes[12..])
        .map_err(|e| format!("ledger {}: corrupt at offset 12: {e}", path.display()))?;
    let requests = legacy
        .requests
        .into_iter()
        .map(|r| RequestRecord {
            request_id: r.request_id,
            tenant: String::new(),
            digest: None,
            kind: crate::store::MutationKind::from_name(&r.kind)
                .map_or("unknown", crate::store::MutationKind::name),
            seq: r.seq,
            applied: r.applied,
            at_ms: r.at_ms,
            receipt_id: r.receipt_id,
        })
        .collect();
    Ok(Some((requests, legacy.receipts)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, seq: u64, at_ms: i64) -> RequestRecord {
        RequestRecord {
            request_id: id.into(),
            tenant: "acme".into(),
            kind: "suppress",
            seq,
            applied: 1,
            at_ms,
            receipt_id: String::new(),
            digest: Some(PayloadDigest {
                key_tag: 7,
                hash: [seq as u8; 16],
            }),
        }
    }

    /// A record as ledgers before tenant scoping held it.
    fn legacy(id: &str, seq: u64, at_ms: i64) -> RequestRecord {
        RequestRecord {
            tenant: String::new(),
            digest: None,
            ..request(id, seq, at_ms)
        }
    }

    fn receipt(id: &str, completed_at_ms: i64) -> Receipt {
        Receipt {
            receipt_id: id.into(),
            request_id: format!("req-{id}"),
            tenant: "acme".into(),
            seq: 7,
            requested_at_ms: 1,
            in_force_at_ms: 2,
            completed_at_ms,
            // Both record types: a fleet erasure's and a single host's.
            stream_seq: if completed_at_ms > 0 { 42 } else { 0 },
            removed_from: vec!["acme/consent".into()],
            added_to: vec!["acme/erased".into()],
        }
    }

    #[test]
    fn records_round_trip_and_every_truncation_is_refused() {
        let (r, e) = (request("a", 3, 99), receipt("er-1", 5));
        let single = receipt("er-2", 0);
        let (old, mut undigested) = (legacy("b", 4, 98), request("c", 5, 97));
        undigested.digest = None;
        for item in [
            Item::Request(&r),
            Item::Request(&undigested),
            Item::LegacyRequest(&old),
            Item::Receipt(&e),
            Item::Receipt(&single),
        ] {
            let bytes = encode(&item);
            match (decode(&bytes).unwrap(), &item) {
                (Owned::Request(got), Item::Request(want)) => assert_eq!(&got, *want),
                (Owned::LegacyRequest(got), Item::LegacyRequest(want)) => assert_eq!(&got, *want),
                (Owned::Receipt(got), Item::Receipt(want)) => assert_eq!(&got, *want),
                _ => panic!("record type changed"),
            }
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "cut {cut}");
            }
        }
    }

    #[test]
    fn appends_survive_reopen_and_the_latest_receipt_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, loaded) = Ledger::open(dir.path(), false, 0).unwrap();
        assert!(loaded.requests.is_empty());
        let (a, b) = (request("a", 1, 10), request("b", 2, 20));
        ledger
            .append_blocking(&[Item::Request(&a), Item::Receipt(&receipt("er-1", 0))])
            .unwrap();
        ledger
            .append_blocking(&[Item::Request(&b), Item::Receipt(&receipt("er-1", 30))])
            .unwrap();
        drop(ledger);
        let (_, loaded) = Ledger::open(dir.path(), false, 15).unwrap();
        assert_eq!(
            loaded.requests,
            [b],
            "the record older than the cutoff is dropped"
        );
        assert_eq!(loaded.through, 2);
        assert_eq!(loaded.receipts["er-1"].completed_at_ms, 30);
    }

    #[test]
    fn corrupt_records_are_refused_with_file_and_offset_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), false, 0).unwrap();
        let records: Vec<RequestRecord> =
            (1..=3).map(|i| request(&format!("r{i}"), i, 1)).collect();
        let items: Vec<Item> = records.iter().map(Item::Request).collect();
        ledger.append_blocking(&items).unwrap();
        let file = ledger.files()[0].clone();
        drop(ledger);
        let full = std::fs::read(&file).unwrap();
        // Torn tail: the last record cut short.
        std::fs::write(&file, &full[..full.len() - 3]).unwrap();
        let (ledger, loaded) = Ledger::open(dir.path(), false, 0).unwrap();
        assert_eq!(loaded.requests.len(), 2);
        drop(ledger);
        // A flipped byte in the first record, with records after it: refused, naming the place.
        std::fs::write(&file, &full).unwrap();
        let mut damaged = full.clone();
        damaged[24 + 8 + 10] ^= 0x20;
        std::fs::write(&file, &damaged).unwrap();
        let error = Ledger::open(dir.path(), false, 0)
            .err()
            .expect("damage accepted");
        assert!(
            error.contains(&file.display().to_string()) && error.contains("offset 24"),
            "{error}"
        );
        // A well-formed (checksummed) record that is not a ledger record: refused too.
        std::fs::remove_file(&file).unwrap();
        let (journal, _) = Log::open(&dir.path().join("ledger"), false).unwrap();
        journal.append_blocking(vec![REQUEST, 1]).unwrap();
        drop(journal);
        let error = Ledger::open(dir.path(), false, 0)
            .err()
            .expect("garbage accepted");
        assert!(error.contains("corrupt at offset 24"), "{error}");
    }

    #[test]
    fn old_segments_are_dropped_whole_and_keep_their_receipts() {
        let dir = tempfile::tempdir().unwrap();
        let (ledger, _) = Ledger::open(dir.path(), false, 0).unwrap();
        let old = receipt("er-old", 0);
        let (a, b) = (request("a", 1, 10), request("b", 2, 20));
        ledger
            .append_blocking(&[Item::Request(&a), Item::Receipt(&old)])
            .unwrap();
        // Force a rotation, then write one more record into the new segment.
        ledger
            .written_since_rotation
            .store(ROTATE_RECORDS, Ordering::Relaxed);
        let current: HashMap<String, Receipt> =
            [("er-old".to_string(), receipt("er-old", 77))].into();
        // A cutoff in the past deletes nothing.
        assert_eq!(ledger.enforce_retention(0, &current).unwrap(), 0);
        ledger.append_blocking(&[Item::Request(&b)]).unwrap();
        assert_eq!(ledger.files().len(), 2);
        // A cutoff in the future: the closed segment goes, its receipt is written again.
        let future = crate::server::state::now_ms() + 60_000;
        assert_eq!(ledger.enforce_retention(future, &current).unwrap(), 1);
        assert_eq!(ledger.files().len(), 1);
        drop(ledger);
        let (_, loaded) = Ledger::open(dir.path(), false, 0).unwrap();
        assert_eq!(loaded.requests, [b]);
        assert_eq!(loaded.receipts["er-old"].completed_at_ms, 77);
    }

    #[test]
    fn the_old_whole_file_ledger_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let body = serde_json::json!({
            "requests": [{"request_id": "x", "kind": "suppress", "seq": 4, "applied": 1, "at_ms": 50, "receipt_id": ""}],
            "receipts": [],
        })
        .to_string();
        let mut bytes = LEGACY_MAGIC.to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(body.as_bytes()).to_le_bytes());
        bytes.extend_from_slice(body.as_bytes());
        std::fs::write(dir.path().join(LEGACY_FILE), &bytes).unwrap();
        let (ledger, loaded) = Ledger::open(dir.path(), false, 0).unwrap();
        assert_eq!(loaded.legacy_requests, [legacy("x", 4, 50)]);
        assert!(
            loaded.requests.is_empty(),
            "a migrated record has no tenant scope"
        );
        assert!(!dir.path().join(LEGACY_FILE).exists());
        drop(ledger);
        let (_, loaded) = Ledger::open(dir.path(), false, 0).unwrap();
        assert_eq!(loaded.legacy_requests, [legacy("x", 4, 50)]);
        assert_eq!(loaded.through, 4);
    }
}
