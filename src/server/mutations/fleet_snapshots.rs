//! Fleet mode's side of snapshot versions: the host the heads follower works on
//! ([`FleetSnapshots`]), the map from stream sequences to journal sequences, and the
//! compaction lease held while this host compacts.
//!
//! A snapshot's `through_seq` is a stream sequence; overlays and the journal count in this
//! host's journal sequences. Journal order is stream order (the follower is the one path in),
//! so the map is a list of pairs increasing in both; forgetting "through stream sequence S"
//! forgets through the last journal record at or below S, and never more.

use super::{Mutator, lock};
use crate::config::SetDefinition;
use crate::fleet::lease::Lease;
use crate::server::state::State;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What a compaction answers when another host holds the lease (not a failure).
pub const NOT_HOLDER: &str = "another host holds the fleet's compaction lease";

impl Mutator {
    /// The last journal sequence whose record came from a stream sequence ≤ `stream_seq`.
    pub(super) fn journal_through_stream(&self, stream_seq: u64) -> Option<u64> {
        let marks = lock(&self.shared.stream_marks);
        let end = marks.partition_point(|&(_, s)| s <= stream_seq);
        end.checked_sub(1).map(|i| marks[i].0)
    }

    /// The last stream sequence among journal records ≤ `journal_seq` (0: none).
    pub(super) fn stream_through_journal(&self, journal_seq: u64) -> u64 {
        let marks = lock(&self.shared.stream_marks);
        let end = marks.partition_point(|&(j, _)| j <= journal_seq);
        end.checked_sub(1).map_or(0, |i| marks[i].1)
    }

    /// Marks of journal records at or below `journal_seq` are no longer needed (their
    /// segments are gone), but the last of them is kept for [`Self::stream_through_journal`].
    pub(super) fn prune_marks(&self, journal_seq: u64) {
        let mut marks = lock(&self.shared.stream_marks);
        let end = marks.partition_point(|&(j, _)| j <= journal_seq);
        marks.drain(..end.saturating_sub(1));
    }
}

/// The host a heads follower fetches for: the reload path and the overlays.
pub struct FleetSnapshots {
    pub mutator: Arc<Mutator>,
    pub state: Arc<State>,
}

impl crate::fleet::snapshots::Target for FleetSnapshots {
    fn definitions(&self) -> &[SetDefinition] {
        &self.state.policy.sets
    }

    fn data_dir(&self) -> &Path {
        &self.state.config.data_dir
    }

    fn in_force(&self, id: usize) -> Option<u64> {
        self.state.sets.load().slots[id]
            .as_ref()
            .map(|l| l.set.version())
    }

    fn reload_blocking(&self) {
        self.state.reload();
    }

    fn loaded(&self, id: usize, through_seq: u64) {
        if through_seq == 0 {
            return;
        }
        if let Some(journal_seq) = self.mutator.journal_through_stream(through_seq) {
            let overlay = &self.state.overlays[id];
            let before = overlay.len();
            overlay.forget_through(journal_seq);
            if overlay.len() != before {
                tracing::info!(
                    set = %self.state.policy.sets[id].id,
                    through_seq,
                    forgotten = before - overlay.len(),
                    "fleet: overlay entries the fleet's version carries forgotten"
                );
            }
        }
    }
}

/// The compaction lease while this host compacts: renewed in the background every third of
/// its TTL, released when dropped. `lost` is set if a renewal failed.
pub(super) struct HeldLease {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub lost: Arc<AtomicBool>,
}

impl HeldLease {
    pub fn hold(
        runtime: &tokio::runtime::Handle,
        mut lease: Lease,
        ttl: std::time::Duration,
    ) -> HeldLease {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(Lease::renew_every(ttl)) => {
                        if let Err(error) = lease.renew().await {
                            tracing::warn!(%error, "fleet: compaction lease lost while compacting");
                            flag.store(true, Ordering::Release);
                            return;
                        }
                    }
                    _ = &mut stopped => break,
                }
            }
            lease.release().await;
        });
        HeldLease {
            stop: Some(stop),
            lost,
        }
    }

    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Errors of a fleet compaction that only mean "not now" (logged quietly by the compactor).
pub const WAITING_FOR_HEAD: &str = "this host does not serve the fleet's head yet";

/// Whether a compaction error means "not this host, or not now" rather than a failure.
pub fn quiet(error: &str) -> bool {
    error.starts_with(NOT_HOLDER) || error.starts_with(WAITING_FOR_HEAD)
}

/// What a fleet compaction publishes through.
pub(super) struct FleetCompaction {
    fleet: Arc<crate::fleet::Fleet>,
    runtime: tokio::runtime::Handle,
    buckets: crate::fleet::heads::Buckets,
}

/// Takes the compaction lease (blocking: called off the async workers). `Err(NOT_HOLDER)`
/// when another host holds it.
pub(super) fn take_lease(
    fleet: &Arc<crate::fleet::Fleet>,
) -> Result<(HeldLease, FleetCompaction), String> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "fleet compaction needs the daemon's runtime".to_owned())?;
    let lease = runtime
        .block_on(fleet.try_lease())?
        .ok_or_else(|| NOT_HOLDER.to_owned())?;
    let held = HeldLease::hold(&runtime, lease, fleet.settings.lease_ttl);
    let buckets = runtime.block_on(fleet.snapshot_buckets())?;
    Ok((
        held,
        FleetCompaction {
            fleet: fleet.clone(),
            runtime,
            buckets,
        },
    ))
}

impl FleetCompaction {
    /// A holder compacts only sets whose version in force is the fleet's head (or that
    /// have none): what it builds must be the head plus the stream, never a fork of it.
    pub fn wait_for_heads(&self, state: &State) -> Result<(), String> {
        // What a holder that died left in staging was never published: gone.
        let staging = crate::fleet::snapshots::staging_dir(&state.config.data_dir);
        if let Err(error) = std::fs::remove_dir_all(&staging)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            return Err(format!("cannot clear {}: {error}", staging.display()));
        }
        // A version in force whose bytes are not its head's would be published as the
        // fleet's next version: never compacted from.
        if state.fleet.get().is_some_and(|status| status.diverged()) {
            return Err(
                "a set's version in force here has other bytes than the fleet's head of that version (suppressd_fleet_set_diverged); not compacting until this host is re-seeded"
                    .into(),
            );
        }
        let in_force = state.sets.load_full();
        for (id, definition) in state.policy.sets.iter().enumerate() {
            if state.overlays[id].is_empty() {
                continue;
            }
            let head = self.runtime.block_on(crate::fleet::heads::read_head(
                &self.buckets.heads,
                &definition.id,
            ))?;
            let serving = in_force.slots[id].as_ref().map(|l| l.set.version());
            if let Some((head, _)) = head
                && serving != Some(head.version)
            {
                return Err(format!(
                    "{WAITING_FOR_HEAD}: set {} is at version {serving:?} here, the head at {}",
                    definition.id, head.version
                ));
            }
        }
        Ok(())
    }

    /// Publishes a version compaction wrote to the staging directory, then moves it into the
    /// data directory (the head moved first: a crash in between is repaired by fetching).
    pub fn publish(
        &self,
        state: &State,
        held: &HeldLease,
        definition: &SetDefinition,
        base: Option<&crate::policy::LoadedSet>,
        staged: crate::policy::LoadedSet,
        through_seq: u64,
    ) -> Result<crate::policy::LoadedSet, String> {
        let discard = |error: String| {
            let _ = std::fs::remove_file(&staged.file);
            error
        };
        if held.lost() {
            return Err(discard(
                "fleet: the compaction lease was lost; nothing more is published".into(),
            ));
        }
        let publication = crate::fleet::snapshots::Publication {
            definition,
            file: &staged.file,
            through_seq: Some(through_seq),
            base_version: base.map(|b| b.set.version()),
            publisher: &self.fleet.settings.host_id,
            part_bytes: crate::fleet::objects::PART_BYTES,
        };
        self.runtime
            .block_on(crate::fleet::snapshots::publish(&self.buckets, publication))
            .map_err(|e| discard(format!("fleet: publishing {}: {e}", definition.id)))?;
        let dir = &state.config.data_dir;
        let path = dir.join(definition.file_name(staged.set.version()));
        std::fs::rename(&staged.file, &path)
            .and_then(|()| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| format!("cannot move {} into place: {e}", path.display()))?;
        Ok(crate::policy::LoadedSet {
            set: staged.set,
            file: path,
            loaded_at_ms: staged.loaded_at_ms,
        })
    }
}
