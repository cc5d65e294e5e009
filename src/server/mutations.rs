//! Mutations on a running daemon: journal first, overlay second, acknowledgement last; and
//! compaction, which folds the overlay into new snapshot versions.
//!
//! The order that makes an acknowledged mutation survive anything: the record is fsynced (group
//! commit) before the overlay changes, and the overlay changes before the caller hears back.
//! Compaction rotates the journal under a gate that no mutation is between "durable" and
//! "applied", so the overlay holds every record of the old segments; it writes new snapshots,
//! swaps them in, forgets the overlay entries they carry, and only then deletes the segments.
//! Request ids and erasure receipts outlive the journal in the ledger file.

use crate::config::SetDefinition;
use crate::engine::date::Day;
use crate::engine::set::{SetBuilder, SetSpec};
use crate::engine::snapshot::{self, SetKind};
use crate::journal::{Journal, JournalError};
use crate::mutation::{Entry, Mutation, MutationKind, Op};
use crate::policy::{LoadedSet, LoadedSets, SetId};
use crate::server::state::{State, now_ms};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const LEDGER_FILE: &str = "ledger.dat";
const LEDGER_MAGIC: &[u8; 8] = b"SUPLEDG1";

/// The first result of a request, returned again for a repeated request id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub request_id: String,
    pub kind: String,
    pub seq: u64,
    pub applied: u32,
    pub at_ms: i64,
    pub receipt_id: String,
}

/// An erasure receipt. Holds set names and times, never the number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub receipt_id: String,
    pub request_id: String,
    pub tenant: String,
    pub seq: u64,
    pub requested_at_ms: i64,
    pub in_force_at_ms: i64,
    /// 0 while pending.
    pub completed_at_ms: i64,
    pub removed_from: Vec<String>,
    pub added_to: Vec<String>,
}

#[derive(Default, Serialize, Deserialize)]
struct Ledger {
    requests: Vec<RequestRecord>,
    receipts: Vec<Receipt>,
}

/// Why a mutation was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    #[error("journal: {0}")]
    Journal(String),
    #[error("{0}")]
    Invalid(String),
}

enum Slot {
    Done(RequestRecord),
    Pending(tokio::sync::watch::Receiver<Option<RequestRecord>>),
}

/// Outcome of a submitted mutation.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub record: RequestRecord,
    pub duplicate: bool,
}

/// Figures of the last compaction.
#[derive(Clone, Debug, Default)]
pub struct CompactionReport {
    pub written: Vec<String>,
    pub journal_through: u64,
    pub erasures_completed: u32,
    pub files_deleted: u32,
}

pub struct Mutator {
    journal: Journal,
    requests: Mutex<HashMap<String, Slot>>,
    receipts: Mutex<HashMap<String, Receipt>>,
    /// Mutations hold it shared from before their append until their overlay is applied;
    /// compaction holds it exclusively while it rotates the journal.
    gate: tokio::sync::RwLock<()>,
    /// One compaction at a time.
    compacting: Mutex<()>,
    ledger_path: PathBuf,
    /// Set ids whose overlays got entries, with the time of the oldest uncompacted one.
    oldest_pending_ms: Mutex<Option<i64>>,
    pub last_compaction: Mutex<(i64, Option<String>)>,
    audit: crate::server::audit::Audit,
}

impl Mutator {
    /// Opens the journal and ledger and replays them into `state`'s overlays.
    pub fn open(state: &State, repair: bool) -> Result<Mutator, String> {
        let data_dir = &state.config.data_dir;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let ledger_path = data_dir.join(LEDGER_FILE);
        let ledger = read_ledger(&ledger_path)?;
        let (journal, replay) =
            Journal::open(&data_dir.join("journal"), repair).map_err(|e| e.to_string())?;
        let mut requests: HashMap<String, Slot> = ledger
            .requests
            .into_iter()
            .map(|r| (r.request_id.clone(), Slot::Done(r)))
            .collect();
        let mut receipts: HashMap<String, Receipt> = ledger
            .receipts
            .into_iter()
            .map(|r| (r.receipt_id.clone(), r))
            .collect();
        let mut oldest = None;
        for record in &replay.records {
            let mutation = Mutation::decode(&record.payload)
                .map_err(|e| format!("journal record {}: {e}", record.seq))?;
            apply_ops(state, &mutation, record.seq);
            oldest.get_or_insert(mutation.at_ms);
            let result = record_of(&mutation, record.seq);
            if mutation.kind == Some(MutationKind::Erase) {
                receipts
                    .entry(mutation.receipt_id.clone())
                    .or_insert_with(|| receipt_of(state, &mutation, record.seq));
            }
            requests.insert(mutation.request_id.clone(), Slot::Done(result));
        }
        if !replay.records.is_empty() {
            tracing::info!(
                records = replay.records.len(),
                "journal replayed into the overlays"
            );
        }
        Ok(Mutator {
            journal,
            requests: Mutex::new(requests),
            receipts: Mutex::new(receipts),
            gate: tokio::sync::RwLock::new(()),
            compacting: Mutex::new(()),
            ledger_path,
            oldest_pending_ms: Mutex::new(oldest),
            last_compaction: Mutex::new((0, None)),
            audit: crate::server::audit::Audit::open(
                data_dir,
                state.config.audit_key.clone(),
                state.config.raw.audit.retention_days,
            )?,
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn audit_files(&self) -> Vec<PathBuf> {
        self.audit.files()
    }

    pub fn receipt(&self, receipt_id: &str) -> Option<Receipt> {
        self.receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(receipt_id)
            .cloned()
    }

    pub fn pending_erasures(&self) -> usize {
        self.receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.completed_at_ms == 0)
            .count()
    }

    pub fn oldest_pending_ms(&self) -> Option<i64> {
        *self
            .oldest_pending_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Journals `mutation`, applies it to the overlays and returns its record; a repeated
    /// request id returns the first record and changes nothing.
    pub async fn submit(
        &self,
        state: &State,
        mut mutation: Mutation,
    ) -> Result<Submitted, MutationError> {
        if mutation.request_id.is_empty() || mutation.request_id.len() > 128 {
            return Err(MutationError::Invalid(
                "request_id is required (at most 128 bytes)".into(),
            ));
        }
        let sender = loop {
            let waiting = {
                let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
                match requests.get(&mutation.request_id) {
                    Some(Slot::Done(record)) => {
                        return Ok(Submitted {
                            record: record.clone(),
                            duplicate: true,
                        });
                    }
                    Some(Slot::Pending(receiver)) => receiver.clone(),
                    None => {
                        let (sender, receiver) = tokio::sync::watch::channel(None);
                        requests.insert(mutation.request_id.clone(), Slot::Pending(receiver));
                        break sender;
                    }
                }
            };
            // The same id is in flight: wait for its outcome, then look again.
            let mut waiting = waiting;
            let _ = waiting.wait_for(Option::is_some).await;
        };
        mutation.at_ms = now_ms();
        let gate = self.gate.read().await;
        let (done, durable) = tokio::sync::oneshot::channel();
        let planned_seq = self.journal.append(
            mutation.encode(),
            Box::new(move |result| {
                let _ = done.send(result);
            }),
        );
        // The audit entry goes to its own log in parallel with the journal record, so an ack
        // waits for one fsync round, not two in a row. Should the journal write fail, the
        // entry records a request that was answered with an error (and never in force).
        let audited = planned_seq.map(|seq| {
            let keyed = self.keyed_sets(state, &mutation);
            self.audit.record(self.audit.entry(&mutation, seq, &keyed))
        });
        let outcome = durable
            .await
            .unwrap_or_else(|_| Err("journal writer stopped".into()));
        let seq = match outcome {
            Ok(seq) => {
                debug_assert_eq!(Some(seq), planned_seq, "journal sequence as queued");
                seq
            }
            Err(error) => {
                drop(gate);
                self.requests
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&mutation.request_id);
                let _ = sender.send(None);
                return Err(MutationError::Journal(error));
            }
        };
        apply_ops(state, &mutation, seq);
        drop(gate);
        let record = record_of(&mutation, seq);
        crate::metrics::metrics().mutations.increment(1);
        if mutation.kind == Some(MutationKind::Erase) {
            let receipt = receipt_of(state, &mutation, seq);
            crate::metrics::metrics()
                .erasure_in_force
                .record((receipt.in_force_at_ms - receipt.requested_at_ms).max(0) as f64 / 1000.0);
            self.receipts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(receipt.receipt_id.clone(), receipt);
        }
        self.oldest_pending_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(mutation.at_ms);
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mutation.request_id.clone(), Slot::Done(record.clone()));
        let _ = sender.send(Some(record.clone()));
        if let Some(audited) = audited
            && let Err(error) = audited.await
        {
            // The mutation is durable and in force; losing its audit line is reported loudly.
            tracing::error!(%error, request_id = %mutation.request_id, "audit log append failed");
        }
        Ok(Submitted {
            record,
            duplicate: false,
        })
    }

    /// For each set `mutation` names: whether that set stores keyed fingerprints already.
    fn keyed_sets(&self, state: &State, mutation: &Mutation) -> Vec<bool> {
        mutation
            .sets
            .iter()
            .map(|name| {
                state
                    .policy
                    .sets
                    .iter()
                    .any(|d| &d.id == name && d.key.is_some())
            })
            .collect()
    }

    /// Whether the overlays are big or old enough to compact.
    pub fn should_compact(&self, state: &State) -> bool {
        let entries: usize = state.overlays.iter().map(|o| o.len()).sum();
        let server = &state.config.raw.server;
        let old = self
            .oldest_pending_ms()
            .is_some_and(|at| now_ms() - at >= (server.compact_max_age_seconds * 1000) as i64);
        entries > 0 && (entries >= server.compact_max_overlay_entries || old)
    }

    /// Folds the overlays into new snapshot versions. Blocking: run off the async workers.
    pub fn compact(&self, state: &State) -> Result<CompactionReport, String> {
        let _one = self.compacting.lock().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let result = self.compact_inner(state);
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
            Err(_) => metrics.compactions_failed.increment(1),
        }
        let mut last = self
            .last_compaction
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *last = (now_ms(), result.as_ref().err().cloned());
        result
    }

    fn compact_inner(&self, state: &State) -> Result<CompactionReport, String> {
        let through = {
            let _gate = self.gate.blocking_write();
            self.journal.rotate_blocking().map_err(|e| e.to_string())?
        };
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
            let definition = &state.policy.sets[id];
            let base = current.slots[id].clone();
            let loaded = rebuild(state, definition, base.as_deref(), &entries)?;
            report
                .written
                .push(format!("{}@{}", definition.id, loaded.set.version()));
            rebuilt.push((id, Arc::new(loaded)));
        }
        // Receipts of erasures this compaction covers become complete once files are gone.
        let completing: Vec<Receipt> = self
            .receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.completed_at_ms == 0 && r.seq <= through)
            .cloned()
            .collect();
        // The ledger must hold request ids and receipts before the journal segments go.
        self.write_ledger(state)?;
        state.publish(|slots: &mut Vec<Option<Arc<LoadedSet>>>| {
            for (id, loaded) in &rebuilt {
                slots[*id] = Some(loaded.clone());
            }
        });
        for (id, _) in &rebuilt {
            state.overlays[*id].forget_through(through);
        }
        self.journal
            .drop_through(through)
            .map_err(|e: JournalError| e.to_string())?;
        // Older versions of consent sets an erasure touched may still hold the number: delete.
        let erased_from: HashSet<&str> = completing
            .iter()
            .flat_map(|r| r.removed_from.iter().map(String::as_str))
            .collect();
        for (id, loaded) in &rebuilt {
            let definition = &state.policy.sets[*id];
            if definition.kind == SetKind::Consent && erased_from.contains(definition.id.as_str()) {
                report.files_deleted += delete_older_versions(
                    &state.config.data_dir,
                    definition,
                    loaded.set.version(),
                )?;
            }
        }
        let completed_at = now_ms();
        {
            let mut receipts = self.receipts.lock().unwrap_or_else(|e| e.into_inner());
            for receipt in &completing {
                if let Some(stored) = receipts.get_mut(&receipt.receipt_id) {
                    stored.completed_at_ms = completed_at;
                    report.erasures_completed += 1;
                    crate::metrics::metrics()
                        .erasure_complete
                        .record((completed_at - stored.requested_at_ms).max(0) as f64 / 1000.0);
                }
            }
        }
        self.write_ledger(state)?;
        if let Err(error) = self.audit.enforce_retention() {
            tracing::warn!(%error, "audit retention pass failed");
        }
        let remaining = state.overlays.iter().any(|o| !o.is_empty());
        *self
            .oldest_pending_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = remaining.then(now_ms);
        tracing::info!(written = ?report.written, through, erasures_completed = report.erasures_completed, files_deleted = report.files_deleted, "compaction done");
        Ok(report)
    }

    fn write_ledger(&self, state: &State) -> Result<(), String> {
        let retention_ms =
            i64::from(state.config.raw.server.request_id_retention_days) * 86_400_000;
        let cutoff = now_ms() - retention_ms;
        let requests: Vec<RequestRecord> = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|slot| match slot {
                Slot::Done(record) if record.at_ms >= cutoff => Some(record.clone()),
                _ => None,
            })
            .collect();
        let receipts: Vec<Receipt> = self
            .receipts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut bytes = LEDGER_MAGIC.to_vec();
        let body = serde_json::to_vec(&Ledger { requests, receipts }).map_err(|e| e.to_string())?;
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        snapshot::write_atomic(&self.ledger_path, &bytes)
            .map_err(|e| format!("ledger {}: {e}", self.ledger_path.display()))
    }
}

fn read_ledger(path: &Path) -> Result<Ledger, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ledger::default()),
        Err(e) => return Err(format!("ledger {}: {e}", path.display())),
    };
    if bytes.len() < 12 || &bytes[..8] != LEDGER_MAGIC {
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
    serde_json::from_slice(&bytes[12..])
        .map_err(|e| format!("ledger {}: corrupt at offset 12: {e}", path.display()))
}

fn record_of(mutation: &Mutation, seq: u64) -> RequestRecord {
    RequestRecord {
        request_id: mutation.request_id.clone(),
        kind: mutation.kind.map_or("unknown", MutationKind::name).into(),
        seq,
        applied: if mutation.kind == Some(MutationKind::Erase) {
            1
        } else {
            mutation.ops.len() as u32
        },
        at_ms: mutation.at_ms,
        receipt_id: mutation.receipt_id.clone(),
    }
}

fn receipt_of(_state: &State, mutation: &Mutation, seq: u64) -> Receipt {
    let mut removed_from = Vec::new();
    let mut added_to = Vec::new();
    for op in &mutation.ops {
        match op {
            Op::Remove { set, .. } => removed_from.push(mutation.sets[usize::from(*set)].clone()),
            Op::Add { set, .. } => added_to.push(mutation.sets[usize::from(*set)].clone()),
        }
    }
    removed_from.dedup();
    added_to.dedup();
    Receipt {
        receipt_id: mutation.receipt_id.clone(),
        request_id: mutation.request_id.clone(),
        tenant: mutation.tenant.clone(),
        seq,
        requested_at_ms: mutation.at_ms,
        in_force_at_ms: now_ms(),
        completed_at_ms: 0,
        removed_from,
        added_to,
    }
}

/// Puts a mutation's operations into the overlays. Unknown sets (config changed since) are
/// skipped with a warning.
fn apply_ops(state: &State, mutation: &Mutation, seq: u64) {
    let ids: Vec<Option<SetId>> = mutation
        .sets
        .iter()
        .map(|name| {
            let id = state.policy.sets.iter().position(|d| &d.id == name);
            if id.is_none() {
                tracing::warn!(set = %name, seq, "journal names a set the config no longer has; skipped");
            }
            id
        })
        .collect();
    for op in &mutation.ops {
        match *op {
            Op::Add { set, key, expires } => {
                if let Some(id) = ids[usize::from(set)] {
                    state.overlays[id].apply(key, Entry::Present { expires, seq });
                }
            }
            Op::Remove { set, key } => {
                if let Some(id) = ids[usize::from(set)] {
                    state.overlays[id].apply(key, Entry::Absent { seq });
                }
            }
        }
    }
}

/// A new version of `definition`'s set: `base` with `entries` applied.
fn rebuild(
    state: &State,
    definition: &SetDefinition,
    base: Option<&LoadedSet>,
    entries: &[(u64, Entry)],
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
    let path = state.config.data_dir.join(definition.file_name(version));
    built.image.write_atomic(&path).map_err(|e| e.to_string())?;
    let set = crate::engine::set::SuppressionSet::open(&path, definition.key.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(LoadedSet {
        set,
        file: path,
        loaded_at_ms: now_ms(),
    })
}

/// Deletes every file of `definition` whose header version is below `keep`; fsyncs the
/// directory. Returns how many were deleted.
fn delete_older_versions(dir: &Path, definition: &SetDefinition, keep: u64) -> Result<u32, String> {
    let mut deleted = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let matches = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| definition.pattern.matches(n));
        if !matches {
            continue;
        }
        let version = std::fs::read(&path).ok().and_then(|bytes| {
            snapshot::decode_header(&bytes)
                .ok()
                .map(|l| l.header.version)
        });
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

/// Used by `LoadedSets` publishers.
pub type Slots = Vec<Option<Arc<LoadedSet>>>;

impl State {
    /// Publishes a change to the sets in force, serialised with reloads (one writer).
    pub fn publish(&self, change: impl FnOnce(&mut Slots)) {
        let _writer = self.writer_lock();
        let mut slots = self.sets.load().slots.clone();
        change(&mut slots);
        self.sets.store(Arc::new(LoadedSets { slots }));
    }
}
