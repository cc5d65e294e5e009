//! Fleet mode's erasure work, one round at a time on every host (`server::compactor`):
//!
//! 1. **Fold.** Journal records the fleet's versions in force here already carry are dropped
//!    (a host without the compaction lease never compacts, so without this its journal, and
//!    the numbers in it, would stay for good); erasures through them complete here, and
//!    older local versions of sets serving their head are deleted. What is left free of
//!    erased numbers is reported as `clean_through` in the host register.
//! 2. **Purge** (the lease holder only). Once every live host serves versions carrying an
//!    erasure and has applied past it, the stream is purged through the smallest of what
//!    the heads carry and what every live host applied, and older object versions of the
//!    erased sets are deleted (`fleet::erasure::plan`).
//!
//! Blocking (runs off the async workers, under the compaction lock). Never decides COMPLETE
//! for the fleet: that is `fleet::erasure::prove`, from NATS alone.

use super::{Mutator, lock};
use crate::fleet::erasure::{self, Erasure, View};
use crate::server::state::State;
use std::sync::atomic::Ordering;

/// What a round saw and did.
#[derive(Clone, Debug, Default)]
pub struct Round {
    /// Erasures known here that are not COMPLETE fleet-wide.
    pub pending: usize,
    pub purged_through: Option<u64>,
    pub objects_deleted: usize,
}

impl Mutator {
    /// The last stream sequence the versions in force here carry entirely, as far as this
    /// host can tell: its durable sequence, lowered to the head's `through_seq` of every set
    /// whose overlay still holds entries (0 if that set is not at its head). A set with an
    /// empty overlay had every entry forgotten by a version it serves, so it bounds nothing.
    fn covered_through(&self, state: &State, view: &View) -> u64 {
        let in_force = state.sets.load();
        let mut covered = self.shared.durable_stream_seq.load(Ordering::Acquire);
        for (id, definition) in state.policy.sets.iter().enumerate() {
            if state.overlays[id].is_empty() {
                continue;
            }
            let serving = in_force.slots[id].as_ref().map(|l| l.set.version());
            let carried = match view.heads.get(&definition.id) {
                Some(head) if serving == Some(head.version) => head.through_seq,
                _ => 0,
            };
            covered = covered.min(carried);
        }
        covered
    }

    /// Whether every set with a head is served here at its head's version.
    fn serves_heads(state: &State, view: &View) -> bool {
        let in_force = state.sets.load();
        state
            .policy
            .sets
            .iter()
            .enumerate()
            .all(|(id, definition)| match view.heads.get(&definition.id) {
                Some(head) => {
                    in_force.slots[id].as_ref().map(|l| l.set.version()) == Some(head.version)
                }
                None => true,
            })
    }

    /// Every erasure receipt with a stream sequence, as the fleet proof sees it.
    fn fleet_erasures(&self) -> Vec<Erasure> {
        lock(&self.shared.receipts)
            .values()
            .filter(|r| r.stream_seq > 0)
            .map(|r| Erasure {
                stream_seq: r.stream_seq,
                sets: r.removed_from.clone(),
            })
            .collect()
    }

    /// Recomputes `clean_through`: what the journal still holds and pending local receipts.
    pub(super) fn refresh_clean_through(&self) -> Result<(), String> {
        let durable = self.shared.durable_stream_seq.load(Ordering::Acquire);
        let last = self.journal.stats().last_seq;
        let first = self.journal.first_seq().map_err(|e| e.to_string())?;
        // Every stream message below the first record left is gone from this host's journal
        // (or was never in it: skipped after a purge).
        let journal_clean = match first {
            Some(first) if first <= last => {
                let marks = lock(&self.shared.stream_marks);
                let index = marks.partition_point(|&(journal, _)| journal < first);
                marks
                    .get(index)
                    .map_or(durable, |&(_, stream)| stream.saturating_sub(1))
            }
            _ => durable,
        };
        let pending = lock(&self.shared.receipts)
            .values()
            .filter(|r| r.completed_at_ms == 0 && r.stream_seq > 0)
            .map(|r| r.stream_seq - 1)
            .min();
        let clean = pending.map_or(journal_clean, |p| p.min(journal_clean));
        self.shared.clean_through.fetch_max(clean, Ordering::AcqRel);
        erasure::metrics()
            .clean_through
            .set(self.shared.clean_through.load(Ordering::Acquire) as f64);
        Ok(())
    }

    /// Erasures known here not COMPLETE fleet-wide, as of the last round.
    pub fn fleet_erasures_pending(&self) -> u64 {
        self.shared.fleet_pending.load(Ordering::Acquire)
    }

    /// What this host reports as free of erased numbers (`fleet::hosts::HostRecord`).
    pub fn clean_through(&self) -> u64 {
        self.shared.clean_through.load(Ordering::Acquire)
    }

    /// The stream was purged past this host, and the heads in force carry everything up to
    /// `seq`: it counts as applied (kept in `fleet.applied`, so a restart does not ask again).
    pub fn skipped_through(&self, data_dir: &std::path::Path, seq: u64) -> Result<(), String> {
        // What the journal holds from before goes in segments of its own, which the next
        // fold drops whole once the heads carry them (they may hold numbers erased since).
        self.journal.rotate_blocking().map_err(|e| e.to_string())?;
        self.shared
            .durable_stream_seq
            .fetch_max(seq, Ordering::AcqRel);
        crate::fleet::applied::write(data_dir, seq)
    }

    /// One round of the fleet's erasure work (module docs). Blocking.
    pub fn fleet_erasure_round(&self, state: &State) -> Result<Round, String> {
        let Some(fleet) = self.fleet.get() else {
            return Ok(Round::default());
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the fleet erasure round needs the daemon's runtime".to_owned())?;
        let view = runtime.block_on(fleet.view())?;
        let metrics = erasure::metrics();
        metrics.first_seq.set(view.first_seq as f64);
        let _one = lock(&self.compacting);
        let mut round = Round::default();
        // 1. Fold what the versions in force carry.
        let covered = self.covered_through(state, &view);
        if let Some(through) = self.journal_through_stream(covered)
            && through > self.shared.folded_through.load(Ordering::Acquire)
        {
            match self.compact_inner(state, None, Some(through)) {
                Ok(_) => self.shared.folded_through.store(through, Ordering::Release),
                Err(error) if super::fleet_snapshots::quiet(&error) => {
                    tracing::debug!(%error, "fleet: not folding the journal now");
                }
                Err(error) => return Err(format!("fleet: folding the journal: {error}")),
            }
        }
        // Older local versions of sets at their head: the object store keeps the fleet's
        // versions, and an older file may hold a number erased while this host was away.
        let in_force = state.sets.load_full();
        for (id, definition) in state.policy.sets.iter().enumerate() {
            let serving = in_force.slots[id].as_ref().map(|l| l.set.version());
            if let (Some(head), Some(version)) = (view.heads.get(&definition.id), serving)
                && head.version == version
            {
                super::compaction::delete_older_versions(
                    &state.config.data_dir,
                    definition,
                    version,
                )?;
            }
        }
        self.refresh_clean_through()?;
        let erasures = self.fleet_erasures();
        // 2. The lease holder purges.
        if Self::serves_heads(state, &view)
            && let Some(lease) = runtime.block_on(fleet.try_lease())?
        {
            let plan = erasure::plan(&view, covered, &erasures);
            let result = self.carry_out(fleet, &runtime, &plan, &mut round);
            runtime.block_on(lease.release());
            if let Err(error) = result {
                metrics.purge_failures.increment(1);
                return Err(error);
            }
        }
        let view = if round.purged_through.is_some() || round.objects_deleted > 0 {
            runtime.block_on(fleet.view()).unwrap_or(view)
        } else {
            view
        };
        round.pending = erasures
            .iter()
            .filter(|e| erasure::prove(&view, e).is_err())
            .count();
        metrics.pending.set(round.pending as f64);
        self.shared
            .fleet_pending
            .store(round.pending as u64, Ordering::Release);
        Ok(round)
    }

    fn carry_out(
        &self,
        fleet: &crate::fleet::Fleet,
        runtime: &tokio::runtime::Handle,
        plan: &erasure::Plan,
        round: &mut Round,
    ) -> Result<(), String> {
        let metrics = erasure::metrics();
        if let Some(through) = plan.purge_through {
            // Receipts outlive their stream messages: a host joining later answers for them.
            let kept: Vec<(String, Vec<u8>)> = lock(&self.shared.receipts)
                .values()
                .filter(|r| r.stream_seq > 0 && r.stream_seq <= through)
                .filter_map(|r| {
                    let mut fleet_copy = r.clone();
                    fleet_copy.completed_at_ms = 0;
                    serde_json::to_vec(&fleet_copy)
                        .ok()
                        .map(|json| (r.receipt_id.clone(), json))
                })
                .collect();
            runtime.block_on(fleet.keep_receipts(&kept))?;
            let purged = runtime.block_on(fleet.purge_through(through))?;
            metrics.purges.increment(1);
            metrics.purged_messages.increment(purged);
            tracing::info!(
                through,
                purged,
                "fleet: stream purged (every live host serves versions carrying its erasures)"
            );
            round.purged_through = Some(through);
        }
        if !plan.delete.is_empty() {
            runtime.block_on(fleet.delete_parts(&plan.delete))?;
            metrics.objects_deleted.increment(plan.delete.len() as u64);
            tracing::info!(
                parts = plan.delete.len(),
                "fleet: older snapshot object versions of erased sets deleted"
            );
            round.objects_deleted = plan.delete.len();
        }
        Ok(())
    }
}
