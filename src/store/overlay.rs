//! The overlay of a set: the latest operation per key since the snapshot in force, consulted
//! with the snapshot on every check, so a mutation is in force the moment it is durable.
//!
//! Written by the journal's writer thread (one mutation at a time, in sequence order) and read
//! by every check: a lookup on an empty overlay is one atomic load; otherwise it takes a
//! `DashMap` shard read lock for one copy of the entry. Compaction takes the entries a new
//! snapshot carries and forgets them once that snapshot is in force. No I/O.

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
}

impl Overlay {
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
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

    /// The overlay's say on `key`: `Some(true/false)` overrides the snapshot, `None` defers.
    #[inline]
    pub fn lookup(&self, key: u64, today: Day) -> Option<bool> {
        if self.is_empty() {
            return None;
        }
        // Copy the entry out: never hold a map guard while anything else touches the map.
        let entry = *self.entries.get(&key)?;
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
}
