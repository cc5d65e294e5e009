//! The recorder: a background thread that copies every durable mutation into the audit log
//! and the ledger, in batches, off the acknowledgement path. Compaction waits until both cover
//! the journal segments it is about to delete. A failed append to either (a full disk) is
//! retried every period, each log resuming after what it holds, so the recorder catches up
//! once space is back. Never decides anything about a mutation: it only copies.

use super::audit::Audit;
use super::ledger::{Item, Ledger};
use super::{Durable, RequestRecord, Shared, lock, record_of};
use crate::store::MutationKind;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the recorder moves durable mutations into the audit log and ledger: a batch per
/// period means one fsync per log per period instead of one per group commit.
const RECORD_PERIOD: Duration = Duration::from_millis(50);
/// How long compaction waits for the recorder before giving up (segments are then kept).
pub(super) const RECORD_WAIT: Duration = Duration::from_secs(60);

/// Writes durable mutations into the audit log and the ledger.
pub(super) struct Recorder {
    pub(super) audit: Audit,
    pub(super) ledger: Ledger,
    /// Ids of sets that store keyed fingerprints (their keys go into audit entries as they are).
    pub(super) keyed: HashSet<String>,
    /// Journal sequence numbers through which the audit log and the ledger hold every
    /// mutation: from open, then after each append, so a retry after a failure of one log does
    /// not write the other's entries twice.
    pub(super) audit_through: AtomicU64,
    pub(super) ledger_through: AtomicU64,
}

impl Recorder {
    /// The recorder thread: every period, or when compaction asks, moves the backlog into the
    /// audit log and the ledger; drains it once more on shutdown.
    pub(super) fn run(&self, shared: &Shared) {
        // Swapped with the backlog, so neither grows from empty (and moves its items) each time.
        let mut batch = Vec::new();
        loop {
            let stopping = shared.stop.load(Ordering::Acquire);
            std::mem::swap(&mut *lock(&shared.backlog), &mut batch);
            if let Some(last) = batch.last().map(|d| d.seq) {
                match self.record(&batch) {
                    Ok(()) => {
                        shared.recorded_through.store(last, Ordering::Release);
                        if lock(&shared.record_failure).take().is_some() {
                            tracing::info!("audit log and ledger caught up with the journal");
                        }
                    }
                    Err(error) => {
                        // The journal keeps these records (compaction deletes no segment the
                        // logs lack) and the next start would queue them again; until then,
                        // put them back in front and retry next period.
                        let mut failure = lock(&shared.record_failure);
                        if failure.is_none() {
                            tracing::error!(%error, "audit log or ledger append failed; retrying every period, journal segments are kept");
                        }
                        *failure = Some(error);
                        drop(failure);
                        let mut backlog = lock(&shared.backlog);
                        batch.append(&mut backlog);
                        std::mem::swap(&mut *backlog, &mut batch);
                    }
                }
                shared.record_attempts.fetch_add(1, Ordering::AcqRel);
            }
            batch.clear();
            if stopping {
                return;
            }
            std::thread::park_timeout(RECORD_PERIOD);
        }
    }

    fn record(&self, batch: &[Durable]) -> Result<(), String> {
        let last = batch.last().map_or(0, |d| d.seq);
        let audit_through = self.audit_through.load(Ordering::Acquire);
        let ledger_through = self.ledger_through.load(Ordering::Acquire);
        // Attempt records are neither audited nor in the ledger (`attempts`): they only move
        // the marks, so compaction knows the journal is covered.
        let copied = |d: &&Durable| !d.mutation.kind.is_some_and(MutationKind::is_attempt);
        let entries: Vec<Vec<u8>> = batch
            .iter()
            .filter(copied)
            .filter(|d| d.seq > audit_through)
            .map(|d| {
                self.audit
                    .entry(&d.mutation, d.seq, |set| self.keyed.contains(set))
            })
            .collect();
        // All or none (one group), so the log holds everything through the batch's last.
        self.audit.append_blocking(entries)?;
        self.audit_through.fetch_max(last, Ordering::AcqRel);
        let requests: Vec<RequestRecord> = batch
            .iter()
            .filter(copied)
            .filter(|d| d.seq > ledger_through)
            .map(|d| record_of(&d.mutation, d.seq, d.digest))
            .collect();
        let items: Vec<Item> = requests
            .iter()
            .map(Item::Request)
            .chain(
                batch
                    .iter()
                    .filter(|d| d.seq > ledger_through)
                    .filter_map(|d| d.receipt.as_ref().map(Item::Receipt)),
            )
            .collect();
        self.ledger.append_blocking(&items)?;
        self.ledger_through.fetch_max(last, Ordering::AcqRel);
        Ok(())
    }
}
