//! Compaction: folds the overlays into new snapshot versions, publishes them, forgets the
//! overlay entries they carry, deletes every older version an erasure touched (and proves no
//! remaining file holds what it removed), and only then drops journal segments and marks
//! receipts COMPLETE. Blocking: runs off the async workers, one at a time.

use super::fleet_snapshots::{FleetCompaction, HeldLease, take_lease};
use super::ledger::Item;
use super::{Mutator, Receipt, lock, request_cutoff_ms};
use crate::config::SetDefinition;
use crate::engine::date::Day;
use crate::engine::set::{SetBuilder, SetSpec};
use crate::engine::snapshot;
use crate::policy::{LoadedSet, SetId};
use crate::server::state::{State, now_ms};
use crate::store::{Entry, LogError};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Figures of the last compaction.
#[derive(Clone, Debug, Default)]
pub struct CompactionReport {
    pub written: Vec<String>,
    pub journal_through: u64,
    pub erasures_completed: u32,
    pub files_deleted: u32,
}

impl Mutator {
    /// Whether the overlays are big or old enough to compact.
    pub fn should_compact(&self, state: &State) -> bool {
        let entries: usize = state.overlays.iter().map(|o| o.len()).sum();
        let server = state.config.server();
        let old = self
            .oldest_pending_ms()
            .is_some_and(|at| now_ms() - at >= (server.compact_max_age_seconds * 1000) as i64);
        entries > 0 && (entries >= server.compact_max_overlay_entries || old)
    }

    /// Folds the overlays into new snapshot versions. Blocking: run off the async workers.
    pub fn compact(&self, state: &State) -> Result<CompactionReport, String> {
        let _one = lock(&self.compacting);
        // Fleet mode: only the lease holder compacts (not holding it is no failure).
        let lease = match self.fleet.get() {
            Some(fleet) => Some(take_lease(fleet)?),
            None => None,
        };
        let started = Instant::now();
        let result = self.compact_inner(state, lease.as_ref(), None);
        let metrics = crate::metrics::metrics();
        metrics
            .compaction_duration
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                metrics.compactions_ok.increment(1);
                metrics::gauge!("suppressd_compaction_last_success_timestamp_seconds")
                    .set(now_ms() as f64 / 1000.0);
            }
            Err(error) if super::fleet_snapshots::quiet(error) => {}
            Err(_) => metrics.compactions_failed.increment(1),
        }
        *lock(&self.last_compaction) = (now_ms(), result.as_ref().err().cloned());
        result
    }

    /// `fold_through` (fleet mode, any host): no version is built; the journal is dropped
    /// through that journal sequence, whose records the fleet's versions in force here
    /// already carry (`fleet_erasure`), and erasures through it complete here.
    pub(super) fn compact_inner(
        &self,
        state: &State,
        lease: Option<&(HeldLease, FleetCompaction)>,
        fold_through: Option<u64>,
    ) -> Result<CompactionReport, String> {
        if let Some((_, fleet)) = lease {
            fleet.wait_for_heads(state)?;
        }
        // Completions (overlay updates) run on the writer thread before it rotates, so every
        // record through `through` is in the overlays once this returns.
        let rotated = self.journal.rotate_blocking().map_err(|e| e.to_string())?;
        let through = fold_through.map_or(rotated, |t| t.min(rotated));
        // Fleet mode: the last stream sequence the new versions carry.
        let through_seq = self.stream_through_journal(through);
        let mut report = CompactionReport {
            journal_through: through,
            ..CompactionReport::default()
        };
        let current = state.sets.load_full();
        let mut rebuilt: Vec<(SetId, Arc<LoadedSet>)> = Vec::new();
        for (id, overlay) in state.overlays.iter().enumerate() {
            let entries = overlay.entries_through(through);
            if entries.is_empty() {
                continue;
            }
            if fold_through.is_some() {
                // The heads follower has not forgotten them yet: next time.
                return Err(format!(
                    "{}: set {} still holds overlay entries the fleet's version carries",
                    super::fleet_snapshots::WAITING_FOR_HEAD,
                    state.policy.sets[id].id
                ));
            }
            let definition = &state.policy.sets[id];
            let base = current.slots[id].clone();
            let loaded = match lease {
                None => rebuild(state, definition, base.as_deref(), &entries, None)?,
                Some((held, fleet)) => {
                    let staging = crate::fleet::snapshots::staging_dir(&state.config.data_dir);
                    let staged =
                        rebuild(state, definition, base.as_deref(), &entries, Some(&staging))?;
                    fleet.publish(
                        state,
                        held,
                        definition,
                        base.as_deref(),
                        staged,
                        through_seq,
                    )?
                }
            };
            report
                .written
                .push(format!("{}@{}", definition.id, loaded.set.version()));
            rebuilt.push((id, Arc::new(loaded)));
        }
        // Receipts of erasures this compaction covers become complete once files are gone.
        let completing: Vec<Receipt> = lock(&self.shared.receipts)
            .values()
            .filter(|r| r.completed_at_ms == 0 && r.seq <= through)
            .cloned()
            .collect();
        // The audit log and ledger must hold these records before the journal segments go.
        self.wait_recorded(through)?;
        state.publish(|slots: &mut Vec<Option<Arc<LoadedSet>>>| {
            for (id, loaded) in &rebuilt {
                slots[*id] = Some(loaded.clone());
            }
        });
        for (id, _) in &rebuilt {
            state.overlays[*id].forget_through(through);
        }
        // Erasures, before any journal segment goes (so a crash in between replays them and
        // this is done again): every older version of every set an erasure removed a number
        // from is deleted, with leftover temporary files; then each remaining file of those
        // sets is opened and looked up, and a receipt completes only if none holds its keys.
        let erased_from: HashSet<&str> = completing
            .iter()
            .flat_map(|r| r.removed_from.iter().map(String::as_str))
            .collect();
        let in_force = state.sets.load_full();
        for (id, definition) in state.policy.sets.iter().enumerate() {
            if erased_from.contains(definition.id.as_str()) {
                let keep = in_force.slots[id].as_ref().map_or(0, |l| l.set.version());
                report.files_deleted +=
                    delete_older_versions(&state.config.data_dir, definition, keep)?;
            }
        }
        let verified: Vec<&Receipt> = {
            let keys = lock(&self.shared.erased_keys);
            completing
                .iter()
                .filter(|receipt| match keys.get(&receipt.receipt_id) {
                    // Its journal record is gone: the compaction that deleted it had verified
                    // the files first (this order), and only then crashed before the ledger.
                    None => true,
                    Some(removed) => match still_held(state, removed) {
                        None => true,
                        Some(file) => {
                            tracing::warn!(receipt = %receipt.receipt_id, file = %file.display(), "erasure stays pending: a file still holds a key it removed (was the number put back by a later mutation?)");
                            false
                        }
                    },
                })
                .collect()
        };
        // The attempt records about to go live on in the attempt state file (it may also hold
        // later records: replaying those changes nothing, they are idempotent by call id).
        let attempt_state = state.config.data_dir.join(super::ATTEMPT_STATE_FILE);
        if !state.attempts.is_empty() || attempt_state.exists() {
            state
                .attempts
                .write_state(&attempt_state, now_ms())
                .map_err(|e| format!("attempt state {}: {e}", attempt_state.display()))?;
        }
        // Fleet mode: the records about to go carry the applied stream sequence; keep it.
        if self.fleet.get().is_some() {
            let applied = self.shared.durable_stream_seq.load(Ordering::Acquire);
            crate::fleet::applied::write(&state.config.data_dir, applied)?;
        }
        self.journal
            .drop_through(through)
            .map_err(|e: LogError| e.to_string())?;
        // Records below the first segment left are gone from this host's disk.
        let gone_through = self
            .journal
            .first_seq()
            .map_err(|e: LogError| e.to_string())?
            .map_or(rotated, |first| first.saturating_sub(1));
        self.prune_marks(gone_through);
        let completed_at = now_ms();
        let mut completed = Vec::new();
        {
            let mut receipts = lock(&self.shared.receipts);
            let mut keys = lock(&self.shared.erased_keys);
            for receipt in verified {
                keys.remove(&receipt.receipt_id);
                if let Some(stored) = receipts.get_mut(&receipt.receipt_id) {
                    stored.completed_at_ms = completed_at;
                    report.erasures_completed += 1;
                    crate::metrics::metrics()
                        .erasure_complete
                        .record((completed_at - stored.requested_at_ms).max(0) as f64 / 1000.0);
                    completed.push(stored.clone());
                }
            }
        }
        if self.fleet.get().is_some() {
            // Fleet mode: what this host reports as free of erased numbers (`fleet::hosts`).
            self.refresh_clean_through()?;
        }
        let items: Vec<Item> = completed.iter().map(Item::Receipt).collect();
        self.recorder.ledger.append_blocking(&items)?;
        let receipts = lock(&self.shared.receipts).clone();
        if let Err(error) = self
            .recorder
            .ledger
            .enforce_retention(request_cutoff_ms(state), &receipts)
        {
            tracing::warn!(%error, "ledger retention pass failed");
        }
        if let Err(error) = self.recorder.audit.enforce_retention() {
            tracing::warn!(%error, "audit retention pass failed");
        }
        let remaining = state.overlays.iter().any(|o| !o.is_empty());
        self.shared
            .oldest_pending_ms
            .store(if remaining { now_ms() } else { 0 }, Ordering::Release);
        tracing::info!(written = ?report.written, through, erasures_completed = report.erasures_completed, files_deleted = report.files_deleted, "compaction done");
        Ok(report)
    }
}

/// A new version of `definition`'s set: `base` with `entries` applied.
fn rebuild(
    state: &State,
    definition: &SetDefinition,
    base: Option<&LoadedSet>,
    entries: &[(u64, Entry)],
    staging: Option<&Path>,
) -> Result<LoadedSet, String> {
    let changes: HashMap<u64, Entry> = entries.iter().copied().collect();
    let (name, filter, source, source_date, version) = match base {
        Some(loaded) => {
            let header = loaded.set.header();
            (
                header.name.clone(),
                header.filter,
                header.source.clone(),
                header.source_date,
                header.version + 1,
            )
        }
        None => (
            definition.id.replace('/', "-"),
            crate::engine::fuse::FilterWidth::Fuse8,
            "suppressd mutations".to_string(),
            None,
            1,
        ),
    };
    let spec = SetSpec {
        name,
        kind: definition.kind,
        filter,
        source,
        source_date,
        version,
        build_time: now_ms() / 1000,
    };
    let mut builder = SetBuilder::new(spec, definition.key.clone()).map_err(|e| e.to_string())?;
    if let Some(loaded) = base {
        builder.layout(loaded.set.set_layout().choice());
        for (key, expires) in loaded.set.entries() {
            if !changes.contains_key(&key) {
                builder.push_key(key, expires).map_err(|e| e.to_string())?;
            }
        }
    }
    for (&key, entry) in &changes {
        if let Entry::Present { expires, .. } = *entry {
            builder.push_key(key, expires).map_err(|e| e.to_string())?;
        }
    }
    let built = builder.build(1).map_err(|e| e.to_string())?;
    // Fleet mode writes outside the set's pattern until the head has moved.
    let dir = staging.unwrap_or(&state.config.data_dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(definition.file_name(version));
    built.image.write_atomic(&path).map_err(|e| e.to_string())?;
    let set = crate::engine::set::SuppressionSet::open(&path, definition.key.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(LoadedSet {
        set,
        file: path,
        loaded_at_ms: now_ms(),
    })
}

/// The first file of a set in `removed` (set id, key) that still holds its key, or cannot be
/// opened to show it does not.
fn still_held(state: &State, removed: &[(String, u64)]) -> Option<PathBuf> {
    for definition in &state.policy.sets {
        let keys: Vec<u64> = removed
            .iter()
            .filter(|(set, _)| *set == definition.id)
            .map(|&(_, key)| key)
            .collect();
        if keys.is_empty() {
            continue;
        }
        for path in set_files(&state.config.data_dir, definition) {
            let held =
                match crate::engine::set::SuppressionSet::open(&path, definition.key.as_ref()) {
                    Ok(set) => keys.iter().any(|&key| {
                        matches!(
                            set.get_key(key),
                            crate::engine::set::Membership::Present { .. }
                        )
                    }),
                    Err(_) => true,
                };
            if held {
                return Some(path);
            }
        }
    }
    None
}

/// Files in `dir` whose names match `definition`'s pattern.
fn set_files(dir: &Path, definition: &SetDefinition) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| definition.pattern.matches(n))
        })
        .collect()
}

/// Whether `name` is a temporary file [`snapshot::SnapshotImage::write_atomic`] leaves behind
/// (`.<file>.tmp-<pid>`) for a file of `definition`, written by a process no longer running
/// (or by this one, which writes none while compacting), or a fleet download
/// (`.<file>.fetch-<pid>`, `fleet::snapshots`) of a process no longer running (never this
/// one's: the heads follower may be writing it right now).
fn stale_temp_file(name: &str, definition: &SetDefinition) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let (file, pid, ours_too) = match (rest.rsplit_once(".tmp-"), rest.rsplit_once(".fetch-")) {
        (Some((file, pid)), _) => (file, pid, true),
        (None, Some((file, pid))) => (file, pid, false),
        (None, None) => return false,
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let ours = pid == std::process::id();
    definition.pattern.matches(file)
        && ((ours && ours_too) || (!ours && !Path::new(&format!("/proc/{pid}")).exists()))
}

/// Deletes every file of `definition` whose header version is below `keep`, its stale
/// temporary files and files the loader moved aside; fsyncs the directory. Returns how many were deleted.
pub(super) fn delete_older_versions(
    dir: &Path,
    definition: &SetDefinition,
    keep: u64,
) -> Result<u32, String> {
    let mut deleted = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Files the loader moved aside (`NAME.refused`, too few keys) are this set's data too.
        let moved_aside = name
            .strip_suffix(".refused")
            .is_some_and(|file| definition.pattern.matches(file));
        if moved_aside || stale_temp_file(name, definition) {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            deleted += 1;
            continue;
        }
        if !definition.pattern.matches(name) {
            continue;
        }
        let version = snapshot::read_layout(&path).ok().map(|l| l.header.version);
        // Unreadable files of this set cannot be shown not to hold the number: delete them too.
        if version.is_none_or(|v| v < keep) {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            deleted += 1;
        }
    }
    if deleted > 0 {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(deleted)
}

/// Builds an empty version 0 for sets marked `initial_empty` that have no file yet.
pub fn create_initial_empty(state: &State) -> Result<(), String> {
    let dir = &state.config.data_dir;
    for definition in state.policy.sets.iter().filter(|d| d.initial_empty) {
        let exists = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| definition.pattern.matches(n))
            });
        if exists {
            continue;
        }
        let spec = SetSpec {
            name: definition.id.replace('/', "-"),
            kind: definition.kind,
            filter: crate::engine::fuse::FilterWidth::Fuse8,
            source: "empty initial version".into(),
            source_date: Some(Day::today()),
            version: 1,
            build_time: now_ms() / 1000,
        };
        let built = SetBuilder::new(spec, definition.key.clone())
            .and_then(|b| b.build(1))
            .map_err(|e| e.to_string())?;
        built
            .image
            .write_atomic(&dir.join(definition.file_name(1)))
            .map_err(|e| e.to_string())?;
        tracing::info!(set = %definition.id, "created an empty initial version");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_stale_but_a_download_in_progress_is_not() {
        let config = crate::config::Config::parse(
            "[server]\ngrpc_listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[sets.us-dnc]\nkind = \"block\"\nreason = \"national_registry\"\nfiles = \"us-dnc.*.snap\"\n",
            "t.toml",
            Path::new("/tmp"),
        )
        .unwrap();
        let policy = crate::policy::Policy::compile(&config);
        let definition = &policy.sets[0];
        let ours = std::process::id();
        let gone = 4_194_300; // above any pid_max this runs with
        assert!(stale_temp_file(
            &format!(".us-dnc.3.snap.tmp-{ours}"),
            definition
        ));
        assert!(stale_temp_file(
            &format!(".us-dnc.3.snap.tmp-{gone}"),
            definition
        ));
        assert!(stale_temp_file(
            &format!(".us-dnc.3.snap.fetch-{gone}"),
            definition
        ));
        // The heads follower of this process may be writing it now.
        assert!(!stale_temp_file(
            &format!(".us-dnc.3.snap.fetch-{ours}"),
            definition
        ));
        assert!(!stale_temp_file(
            &format!(".pl-dnc.3.snap.tmp-{gone}"),
            definition
        ));
        assert!(!stale_temp_file("us-dnc.3.snap", definition));
    }
}
