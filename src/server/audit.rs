//! The audit log: who changed what, when, under which request id — kept apart from the
//! journal, across compactions, for its own retention period.
//!
//! Entries are JSON records in checksummed journal segments (the journal's file format and
//! group commit) under `<data dir>/audit/`. Numbers appear only as keyed fingerprints under the
//! audit key (or not at all, as counts, without one); keys of keyed sets are already
//! fingerprints and are recorded as they are. Segments older than the retention are deleted.

use crate::engine::keys::SecretKey;
use crate::engine::number::Number;
use crate::journal::Journal;
use crate::mutation::{Mutation, Op};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub struct Audit {
    journal: Journal,
    key: Option<SecretKey>,
    retention: Duration,
    dir: std::path::PathBuf,
}

impl Audit {
    pub fn open(
        data_dir: &Path,
        key: Option<SecretKey>,
        retention_days: u32,
    ) -> Result<Audit, String> {
        let dir = data_dir.join("audit");
        let (journal, _) = Journal::open(&dir, false).map_err(|e| format!("audit log: {e}"))?;
        Ok(Audit {
            journal,
            key,
            retention: Duration::from_secs(u64::from(retention_days) * 86_400),
            dir,
        })
    }

    /// The audit entry of an acknowledged mutation. `keyed[i]` tells whether `mutation.sets[i]`
    /// stores keyed fingerprints already.
    pub fn entry(&self, mutation: &Mutation, seq: u64, keyed: &[bool]) -> serde_json::Value {
        let changes: Vec<serde_json::Value> = mutation
            .ops
            .iter()
            .map(|op| {
                let (set, key, action) = match *op {
                    Op::Add { set, key, .. } => (set, key, "add"),
                    Op::Remove { set, key } => (set, key, "remove"),
                };
                let set_index = usize::from(set);
                let fingerprint = if keyed.get(set_index).copied().unwrap_or(false) {
                    Some(format!("{key:015x}"))
                } else {
                    self.key
                        .as_ref()
                        .map(|k| format!("{:015x}", k.fingerprint(Number::from_u64_unchecked(key))))
                };
                json!({ "set": mutation.sets.get(set_index), "op": action, "fingerprint": fingerprint })
            })
            .collect();
        json!({
            "at_ms": mutation.at_ms,
            "actor": mutation.actor,
            "tenant": mutation.tenant,
            "action": mutation.kind.map(|k| k.name()),
            "request_id": mutation.request_id,
            "receipt_id": mutation.receipt_id,
            "source": mutation.source,
            "journal_seq": seq,
            "changes": changes,
        })
    }

    /// Queues an entry at once; the returned future completes when it is durable. Queuing
    /// before awaiting lets the caller overlap this fsync with the journal's.
    pub fn record(
        &self,
        entry: serde_json::Value,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        let (done, durable) = tokio::sync::oneshot::channel();
        let _ = self.journal.append(
            entry.to_string().into_bytes(),
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        );
        async move {
            durable
                .await
                .map_err(|_| "audit writer stopped".to_string())?
                .map(|_| ())
        }
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
