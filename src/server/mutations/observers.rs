//! What the three logs of the mutation path report to Prometheus. The store records no
//! metrics itself; each log is opened with one of these observers, so
//! `suppressd_journal_appends_total` and the fsync histogram count the mutation journal alone,
//! while a failed write of any of the three logs is counted by kind.

use crate::metrics::metrics;
use crate::store::{CommitObserver, FailureKind};
use std::time::Duration;

/// The mutation journal: every group commit and every failure.
pub(super) struct JournalMetrics;

impl CommitObserver for JournalMetrics {
    fn committed(&self, records: usize, bytes: usize, took: Duration) {
        let metrics = metrics();
        metrics.journal_fsync.record(took.as_secs_f64());
        metrics.journal_appends.increment(records as u64);
        metrics.journal_bytes_written.increment(bytes as u64);
    }

    fn failed(&self, kind: FailureKind) {
        metrics().journal_errors[kind as usize].increment(1);
    }
}

/// The audit log and the ledger: failures only (their writes are not mutations).
pub(super) struct FailureMetrics;

impl CommitObserver for FailureMetrics {
    fn failed(&self, kind: FailureKind) {
        metrics().journal_errors[kind as usize].increment(1);
    }
}
