//! The audit log: who changed what, when, under which request id — kept apart from the
//! journal, across compactions, for its own retention period.
//!
//! An acknowledged mutation's journal record carries every field of its audit entry, so the
//! entry is durable with the record (one fsync on the acknowledgement path). The audit log is
//! filled from those records off that path: `server::mutations` hands each durable mutation to
//! a background writer, re-queues on start the journal records the log does not hold yet, and
//! waits until the log covers a journal segment before compaction deletes it. Entries carry
//! their journal sequence number, in increasing order, so the log knows how far it goes.
//!
//! Entries are JSON records in checksummed journal segments (the journal's file format and
//! group commit) under `<data dir>/audit/`. Numbers appear only as keyed fingerprints under the
//! audit key (or not at all without one); keys of keyed sets are already fingerprints and are
//! recorded as they are. Segments older than the retention are deleted.

use super::observers::FailureMetrics;
use crate::engine::keys::SecretKey;
use crate::engine::number::Number;
use crate::store::{Log, OsIo};
use crate::store::{Mutation, Op};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Audit {
    journal: Log,
    key: Option<SecretKey>,
    retention: Duration,
    dir: std::path::PathBuf,
    /// Journal sequence number of the newest entry found in the log at open (0: none).
    through_at_open: u64,
}

#[derive(Serialize)]
struct Entry<'a> {
    at_ms: i64,
    actor: &'a str,
    tenant: &'a str,
    action: Option<&'static str>,
    request_id: &'a str,
    receipt_id: &'a str,
    source: &'a str,
    journal_seq: u64,
    changes: Vec<Change<'a>>,
}

#[derive(Serialize)]
struct Change<'a> {
    set: Option<&'a str>,
    op: &'static str,
    fingerprint: Option<String>,
}

impl Audit {
    pub fn open(
        data_dir: &Path,
        key: Option<SecretKey>,
        retention_days: u32,
    ) -> Result<Audit, String> {
        let dir = data_dir.join("audit");
        let (journal, replay) =
            Log::open_with(&dir, false, Box::new(OsIo), Arc::new(FailureMetrics))
                .map_err(|e| format!("audit log: {e}"))?;
        let through_at_open = match replay.records.last() {
            None => 0,
            Some(last) => serde_json::from_slice::<serde_json::Value>(&last.payload)
                .ok()
                .and_then(|entry| entry["journal_seq"].as_u64())
                .ok_or_else(|| {
                    let (file, offset) = journal.locate(last.seq).unwrap_or_default();
                    format!(
                        "audit log {}: corrupt at offset {offset}: entry without a journal_seq",
                        file.display()
                    )
                })?,
        };
        Ok(Audit {
            journal,
            key,
            retention: Duration::from_secs(u64::from(retention_days) * 86_400),
            dir,
            through_at_open,
        })
    }

    /// Journal sequence number of the newest entry the log held when opened.
    pub fn through_at_open(&self) -> u64 {
        self.through_at_open
    }

    /// The audit entry of a journalled mutation. `keyed(name)` tells whether set `name` stores
    /// keyed fingerprints already.
    pub fn entry(&self, mutation: &Mutation, seq: u64, keyed: impl Fn(&str) -> bool) -> Vec<u8> {
        let changes = mutation
            .ops
            .iter()
            .map(|op| {
                let (set, key, op) = match *op {
                    Op::Add { set, key, .. } => (set, key, "add"),
                    Op::Remove { set, key } => (set, key, "remove"),
                };
                let set = mutation.sets.get(usize::from(set)).map(String::as_str);
                let fingerprint = if set.is_some_and(&keyed) {
                    Some(format!("{key:015x}"))
                } else {
                    self.key
                        .as_ref()
                        .map(|k| format!("{:015x}", k.fingerprint(Number::from_u64_unchecked(key))))
                };
                Change {
                    set,
                    op,
                    fingerprint,
                }
            })
            .collect();
        let entry = Entry {
            at_ms: mutation.at_ms,
            actor: &mutation.actor,
            tenant: &mutation.tenant,
            action: mutation.kind.map(|k| k.name()),
            request_id: &mutation.request_id,
            receipt_id: &mutation.receipt_id,
            source: &mutation.source,
            journal_seq: seq,
            changes,
        };
        // Serialising plain strings, integers and options cannot fail.
        serde_json::to_vec(&entry).unwrap_or_default()
    }

    /// Appends entries (one group commit) and waits until they are durable.
    pub fn append_blocking(&self, entries: Vec<Vec<u8>>) -> Result<(), String> {
        self.journal
            .append_all_blocking(entries)
            .map(|_| ())
            .map_err(|e| format!("audit log: {e}"))
    }

    /// Starts a new segment and deletes whole segments older than the retention period.
    pub fn enforce_retention(&self) -> Result<usize, String> {
        self.journal.rotate_blocking().map_err(|e| e.to_string())?;
        let cutoff = SystemTime::now() - self.retention;
        let files = self.journal.files();
        let mut deleted = 0;
        // Never the newest segment: it is the one being written.
        for path in files.iter().take(files.len().saturating_sub(1)) {
            let old = std::fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if old {
                std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
                deleted += 1;
            }
        }
        if deleted > 0 {
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| e.to_string())?;
        }
        Ok(deleted)
    }

    pub fn files(&self) -> Vec<std::path::PathBuf> {
        self.journal.files()
    }
}
