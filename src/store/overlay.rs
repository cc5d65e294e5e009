//! The overlay of a set: the latest operation per key since the snapshot in force, consulted
//! with the snapshot on every check, so a mutation is in force the moment it is durable.
//!
//! Written by the journal's writer thread (one mutation at a time, in sequence order) and read
//! by every check: a lookup on an empty overlay is one atomic load; otherwise it takes a
//! `DashMap` shard read lock for one copy of the entry. Compaction takes the entries a new
//! snapshot carries and forgets them once that snapshot is in force. No I/O.
//!
//! Fleet mode adds operations *ahead* of the journal: a follower puts a stream message in
//! force before its journal record is fsynced (the stream, on a JetStream quorum, is the
//! durable copy). Those live in a second map keyed by stream sequence, consulted first, and
//! never seen by compaction (which folds and forgets journal sequences only): a failed group
//! commit that gives journal sequence numbers out again, or a compaction folding through a
//! sequence, cannot make one forgotten. An ahead entry leaves once its record is durable and
//! in the journal map (`settle_ahead`), or stays in force while its record is retried.

use crate::engine::date::Day;
use dashmap::DashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The latest operation on a key since the snapshot in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Present { expires: Option<Day>, seq: u64 },
    Absent { seq: u64 },
}

impl Entry {
    pub fn seq(self) -> u64 {
        match self {
            Entry::Present { seq, .. } | Entry::Absent { seq } => seq,
        }
    }
}

/// Additions and removals of one set, consulted with its snapshot on every check.
#[derive(Debug, Default)]
pub struct Overlay {
    entries: DashMap<u64, Entry>,
    len: AtomicUsize,
    /// Fleet mode: operations in force before their journal record is durable; `seq` is the
    /// stream sequence. Always later in stream order than any journal entry of the same key.
    ahead: DashMap<u64, Entry>,
    ahead_len: AtomicUsize,
}

impl Overlay {
    /// Neither journal entries nor entries ahead of the journal.
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0 && self.ahead_len.load(Ordering::Acquire) == 0
    }

    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Records an operation unless a later one on the same key is already there (replays and
    /// racing writers keep the latest sequence number).
    pub fn apply(&self, key: u64, entry: Entry) {
        let mut inserted = false;
        self.entries
            .entry(key)
            .and_modify(|old| {
                if old.seq() <= entry.seq() {
                    *old = entry;
                }
            })
            .or_insert_with(|| {
                inserted = true;
                entry
            });
        if inserted {
            self.len.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Fleet mode: puts `entry` (its `seq` a stream sequence) in force ahead of its journal
    /// record, unless a later stream message on the key is already there.
    pub fn apply_ahead(&self, key: u64, entry: Entry) {
        let mut inserted = false;
        self.ahead
            .entry(key)
            .and_modify(|old| {
                if old.seq() <= entry.seq() {
                    *old = entry;
                }
            })
            .or_insert_with(|| {
                inserted = true;
                entry
            });
        if inserted {
            self.ahead_len.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The record of stream sequence `stream_seq` on `key` is durable and in the journal map:
    /// its ahead entry (or an earlier one) leaves; a later stream message's stays.
    pub fn settle_ahead(&self, key: u64, stream_seq: u64) {
        if self.ahead_len.load(Ordering::Acquire) == 0 {
            return;
        }
        if self
            .ahead
            .remove_if(&key, |_, entry| entry.seq() <= stream_seq)
            .is_some()
        {
            self.ahead_len.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Entries in force ahead of the journal (fleet mode).
    pub fn ahead_len(&self) -> usize {
        self.ahead_len.load(Ordering::Acquire)
    }

    /// The overlay's say on `key`: `Some(true/false)` overrides the snapshot, `None` defers.
    #[inline]
    pub fn lookup(&self, key: u64, today: Day) -> Option<bool> {
        if self.is_empty() {
            return None;
        }
        // Copy the entry out: never hold a map guard while anything else touches the map.
        // An entry ahead of the journal is later in stream order than the journal's.
        let ahead = if self.ahead_len.load(Ordering::Acquire) == 0 {
            None
        } else {
            self.ahead.get(&key).map(|entry| *entry)
        };
        let entry = match ahead {
            Some(entry) => entry,
            None => *self.entries.get(&key)?,
        };
        Some(match entry {
            Entry::Present { expires, .. } => expires.is_none_or(|day| today < day),
            Entry::Absent { .. } => false,
        })
    }

    /// Entries with sequence numbers up to `through`, for compaction.
    pub fn entries_through(&self, through: u64) -> Vec<(u64, Entry)> {
        self.entries
            .iter()
            .filter(|e| e.value().seq() <= through)
            .map(|e| (*e.key(), *e.value()))
            .collect()
    }

    /// Drops entries a new snapshot now carries (those not overwritten since).
    pub fn forget_through(&self, through: u64) {
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.seq() > through);
        let removed = before.saturating_sub(self.entries.len());
        self.len.fetch_sub(removed, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_keeps_the_latest_operation() {
        let overlay = Overlay::default();
        assert_eq!(overlay.lookup(1, Day(0)), None);
        overlay.apply(
            1,
            Entry::Present {
                expires: None,
                seq: 5,
            },
        );
        overlay.apply(1, Entry::Absent { seq: 3 });
        assert_eq!(overlay.lookup(1, Day(0)), Some(true));
        overlay.apply(1, Entry::Absent { seq: 7 });
        assert_eq!(overlay.lookup(1, Day(0)), Some(false));
        overlay.apply(
            2,
            Entry::Present {
                expires: Some(Day(10)),
                seq: 8,
            },
        );
        assert_eq!(overlay.lookup(2, Day(9)), Some(true));
        assert_eq!(overlay.lookup(2, Day(10)), Some(false));
        assert_eq!(overlay.len(), 2);
        overlay.forget_through(7);
        assert_eq!(overlay.len(), 1);
        assert_eq!(overlay.lookup(1, Day(0)), None);
        assert_eq!(overlay.entries_through(8).len(), 1);
    }

    #[test]
    fn entries_ahead_of_the_journal_win_and_compaction_never_forgets_them() {
        let overlay = Overlay::default();
        let present = |seq| Entry::Present { expires: None, seq };
        // Journal: key 1 present at journal sequence 3. Stream: 10 removes it, 11 adds it
        // back, both ahead of their fsync.
        overlay.apply(1, present(3));
        overlay.apply_ahead(1, Entry::Absent { seq: 10 });
        assert_eq!(overlay.lookup(1, Day(0)), Some(false));
        overlay.apply_ahead(1, present(11));
        // A retried batch puts the earlier message ahead again: the later one stays.
        overlay.apply_ahead(1, Entry::Absent { seq: 10 });
        assert_eq!(overlay.lookup(1, Day(0)), Some(true));
        // A compaction through any journal sequence keeps what is ahead.
        overlay.forget_through(u64::MAX - 1);
        assert!(overlay.entries_through(u64::MAX - 1).is_empty());
        assert_eq!(overlay.lookup(1, Day(0)), Some(true));
        assert!(!overlay.is_empty());
        // Message 10 durable (journal 4): 11 stays ahead; 11 durable (journal 5): settled.
        overlay.apply(1, Entry::Absent { seq: 4 });
        overlay.settle_ahead(1, 10);
        assert_eq!(overlay.lookup(1, Day(0)), Some(true));
        overlay.apply(1, present(5));
        overlay.settle_ahead(1, 11);
        assert_eq!(overlay.ahead_len(), 0);
        assert_eq!(overlay.lookup(1, Day(0)), Some(true));
        assert_eq!(overlay.entries_through(5), [(1, present(5))]);
    }
}
