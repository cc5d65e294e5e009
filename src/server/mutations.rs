//! Mutations on a running daemon: journal first, overlay second, acknowledgement last; and
//! compaction, which folds the overlay into new snapshot versions.
//!
//! The order that makes an acknowledged mutation survive anything: the record is fsynced (group
//! commit) before the overlay changes, and the overlay changes before the caller hears back.
//! Both happen in the journal's completion, on its writer thread, before that thread takes its
//! next job; so when compaction's rotation returns, every record of the old segments is in the
//! overlay, and no gate is needed. Compaction writes new snapshots, swaps them in, forgets the
//! overlay entries they carry, and only then deletes the segments.
//!
//! The journal record is also the durable audit entry and request-id record: a background
//! recorder copies every durable mutation into the audit log and the ledger (off the
//! acknowledgement path, in batches), and compaction waits until they cover the segments it
//! is about to delete. Records neither holds yet are queued again at start. A failed append
//! to either (a full disk) is retried every period, each log resuming after what it holds, so
//! the recorder catches up once space is back; compaction fails meanwhile.

pub mod ledger;

use crate::config::{BlockReason, SetDefinition};
use crate::engine::date::Day;
use crate::engine::keys::SecretKey;
use crate::engine::set::{SetBuilder, SetSpec};
use crate::engine::snapshot;
use crate::journal::{Journal, JournalError};
use crate::mutation::{Entry, Mutation, MutationKind, Op, PayloadDigest};
use crate::policy::{LoadedSet, LoadedSets, SetId};
use crate::server::audit::Audit;
use crate::server::state::{State, now_ms};
use ledger::{Item, Ledger};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the recorder moves durable mutations into the audit log and ledger: a batch per
/// period means one fsync per log per period instead of one per group commit.
const RECORD_PERIOD: Duration = Duration::from_millis(50);
/// How long compaction waits for the recorder before giving up (segments are then kept).
const RECORD_WAIT: Duration = Duration::from_secs(60);

/// The first result of a request, returned again for a repeated request id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub request_id: String,
    /// Request ids are scoped by tenant ("" for daemon-wide mutations such as change lists).
    pub tenant: String,
    /// A [`MutationKind::name`]: static, so a record costs no allocation for it.
    pub kind: &'static str,
    pub seq: u64,
    pub applied: u32,
    pub at_ms: i64,
    pub receipt_id: String,
    /// What the request asked; `None` in records written before digests were kept (a repeat
    /// is then refused only when its kind differs).
    pub digest: Option<PayloadDigest>,
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

/// Why a mutation was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum MutationError {
    #[error("journal: {0}")]
    Journal(String),
    #[error("{0}")]
    Invalid(String),
    /// The request id was already used (by this tenant) for a different request.
    #[error("{0}")]
    Conflict(String),
}

enum Slot {
    Done(RequestRecord),
    /// In flight. A `Notify` exists only once a second request with the same id waits, so the
    /// common case allocates nothing for it.
    Pending(Option<Arc<Notify>>),
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

/// A durable mutation waiting for the recorder.
struct Durable {
    mutation: Mutation,
    seq: u64,
    receipt: Option<Receipt>,
    digest: PayloadDigest,
}

/// Request ids, scoped by tenant.
#[derive(Default)]
struct Requests {
    by_tenant: HashMap<String, HashMap<String, Slot>>,
    /// Records of ledgers written before request ids were scoped: their tenant is unknown, so
    /// they answer any tenant's repeat (as they did) unless the kind of mutation differs.
    legacy: HashMap<String, RequestRecord>,
}

impl Requests {
    fn insert_done(&mut self, record: RequestRecord) {
        self.by_tenant
            .entry(record.tenant.clone())
            .or_default()
            .insert(record.request_id.clone(), Slot::Done(record));
    }
}

/// The keys request digests are made with: a tenant's erased-set key (so a digest of an erased
/// number is as hard to reverse as the erased set's fingerprints), else the audit key.
struct DigestKeys {
    by_tenant: HashMap<String, SecretKey>,
    fallback: Option<SecretKey>,
}

impl DigestKeys {
    fn new(state: &State) -> DigestKeys {
        let mut by_tenant = HashMap::new();
        for definition in &state.policy.sets {
            if let (Some(tenant), Some(key), Some(BlockReason::Erased)) =
                (&definition.tenant, &definition.key, definition.reason)
            {
                by_tenant
                    .entry(tenant.clone())
                    .or_insert_with(|| key.clone());
            }
        }
        DigestKeys {
            by_tenant,
            fallback: state.secrets.audit_key.clone(),
        }
    }

    fn digest(&self, mutation: &Mutation) -> PayloadDigest {
        let key = self
            .by_tenant
            .get(&mutation.tenant)
            .or(self.fallback.as_ref());
        mutation.payload_digest(key)
    }
}

/// Why a repeated request id cannot be answered with its first result, if it cannot.
fn reuse_conflict(
    first: &RequestRecord,
    kind: Option<MutationKind>,
    digest: &PayloadDigest,
) -> Option<MutationError> {
    let kind = kind.map_or("unknown", MutationKind::name);
    let different = first.kind != kind || first.digest.is_some_and(|d| d.differs_from(digest));
    different.then(|| {
        MutationError::Conflict(format!(
            "request id '{}' was already used for a different request ({} at sequence {}); \
             nothing was changed: use a new request id",
            first.request_id.chars().take(128).collect::<String>(),
            first.kind,
            first.seq
        ))
    })
}

/// What the request handlers, the journal's writer thread and the recorder share.
struct Shared {
    requests: Mutex<Requests>,
    receipts: Mutex<HashMap<String, Receipt>>,
    /// For each pending erasure: the (set id, key) pairs it removed, so compaction can prove
    /// no file left holds them before the receipt says COMPLETE. Held in memory only.
    erased_keys: Mutex<HashMap<String, Vec<(String, u64)>>>,
    digest_keys: DigestKeys,
    /// Time of the oldest uncompacted mutation; 0 when none.
    oldest_pending_ms: AtomicI64,
    /// Durable mutations, in journal order, not yet in the audit log and ledger.
    backlog: Mutex<Vec<Durable>>,
    /// The audit log and ledger hold every mutation with a sequence number up to this.
    recorded_through: AtomicU64,
    /// The recorder's last attempt failed with this (it retries every period).
    record_failure: Mutex<Option<String>>,
    /// Attempts the recorder has finished, so a waiter can tell a fresh failure from an old one.
    record_attempts: AtomicU64,
    stop: AtomicBool,
}

/// Writes durable mutations into the audit log and the ledger.
struct Recorder {
    audit: Audit,
    ledger: Ledger,
    /// Ids of sets that store keyed fingerprints (their keys go into audit entries as they are).
    keyed: HashSet<String>,
    /// Journal sequence numbers through which the audit log and the ledger hold every
    /// mutation: from open, then after each append, so a retry after a failure of one log does
    /// not write the other's entries twice.
    audit_through: AtomicU64,
    ledger_through: AtomicU64,
}

pub struct Mutator {
    journal: Journal,
    shared: Arc<Shared>,
    recorder: Arc<Recorder>,
    recorder_thread: Option<std::thread::JoinHandle<()>>,
    /// One compaction at a time.
    compacting: Mutex<()>,
    pub last_compaction: Mutex<(i64, Option<String>)>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn request_cutoff_ms(state: &State) -> i64 {
    now_ms() - i64::from(state.config.raw.server.request_id_retention_days) * 86_400_000
}

impl Mutator {
    /// Opens the journal, audit log and ledger, replays the journal into `state`'s overlays
    /// and starts the recorder.
    pub fn open(state: &State, repair: bool) -> Result<Mutator, String> {
        let data_dir = &state.config.data_dir;
        std::fs::create_dir_all(data_dir)
            .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
        let (ledger, loaded) = Ledger::open(data_dir, repair, request_cutoff_ms(state))?;
        let audit = Audit::open(
            data_dir,
            state.secrets.audit_key.clone(),
            state.config.raw.audit.retention_days,
        )?;
        let (journal, replay) =
            Journal::open(&data_dir.join("journal"), repair).map_err(|e| e.to_string())?;
        let mut requests = Requests::default();
        for record in loaded.requests {
            requests.insert_done(record);
        }
        for record in loaded.legacy_requests {
            requests.legacy.insert(record.request_id.clone(), record);
        }
        let digest_keys = DigestKeys::new(state);
        let mut erased_keys = HashMap::new();
        let mut receipts = loaded.receipts;
        let (audit_through, ledger_through) = (audit.through_at_open(), loaded.through);
        let mut backlog = Vec::new();
        let mut oldest = 0;
        for record in &replay.records {
            let mutation = Mutation::decode(&record.payload).map_err(|e| {
                let (file, offset) = journal.locate(record.seq).unwrap_or_default();
                format!(
                    "journal {}: corrupt at offset {offset}: record {}: {e}",
                    file.display(),
                    record.seq
                )
            })?;
            apply_ops(state, &mutation, record.seq);
            if oldest == 0 {
                oldest = mutation.at_ms;
            }
            let digest = digest_keys.digest(&mutation);
            let result = record_of(&mutation, record.seq, digest);
            let mut receipt = None;
            if mutation.kind == Some(MutationKind::Erase) {
                let stored = receipts
                    .entry(mutation.receipt_id.clone())
                    .or_insert_with(|| receipt_of(state, &mutation, record.seq))
                    .clone();
                if stored.completed_at_ms == 0 {
                    erased_keys.insert(mutation.receipt_id.clone(), removed_keys(&mutation));
                }
                receipt = Some(stored);
            }
            requests.insert_done(result);
            if record.seq > audit_through.min(ledger_through) {
                backlog.push(Durable {
                    seq: record.seq,
                    mutation,
                    receipt,
                    digest,
                });
            }
        }
        if !replay.records.is_empty() {
            tracing::info!(
                records = replay.records.len(),
                unrecorded = backlog.len(),
                "journal replayed into the overlays"
            );
        }
        let recorded_through = backlog
            .first()
            .map_or(journal.stats().last_seq, |d| d.seq - 1);
        let shared = Arc::new(Shared {
            requests: Mutex::new(requests),
            receipts: Mutex::new(receipts),
            erased_keys: Mutex::new(erased_keys),
            digest_keys,
            oldest_pending_ms: AtomicI64::new(oldest),
            backlog: Mutex::new(backlog),
            recorded_through: AtomicU64::new(recorded_through),
            record_failure: Mutex::new(None),
            record_attempts: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let recorder = Arc::new(Recorder {
            audit,
            ledger,
            keyed: state
                .policy
                .sets
                .iter()
                .filter(|d| d.key.is_some())
                .map(|d| d.id.clone())
                .collect(),
            audit_through: AtomicU64::new(audit_through),
            ledger_through: AtomicU64::new(ledger_through),
        });
        let (thread_shared, thread_recorder) = (shared.clone(), recorder.clone());
        let recorder_thread = std::thread::Builder::new()
            .name("audit-recorder".into())
            .spawn(move || thread_recorder.run(&thread_shared))
            .map_err(|e| format!("cannot start the audit recorder: {e}"))?;
        Ok(Mutator {
            journal,
            shared,
            recorder,
            recorder_thread: Some(recorder_thread),
            compacting: Mutex::new(()),
            last_compaction: Mutex::new((0, None)),
        })
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    pub fn audit_files(&self) -> Vec<PathBuf> {
        self.recorder.audit.files()
    }

    pub fn ledger_files(&self) -> Vec<PathBuf> {
        self.recorder.ledger.files()
    }

    pub fn receipt(&self, receipt_id: &str) -> Option<Receipt> {
        lock(&self.shared.receipts).get(receipt_id).cloned()
    }

    pub fn pending_erasures(&self) -> usize {
        lock(&self.shared.receipts)
            .values()
            .filter(|r| r.completed_at_ms == 0)
            .count()
    }

    /// Why mutations cannot be made durable or recorded right now: the journal's last group
    /// commit failed, or the recorder's last append to the audit log or ledger did. `None` once
    /// a later attempt succeeded.
    pub fn write_error(&self) -> Option<String> {
        self.journal
            .error()
            .or_else(|| lock(&self.shared.record_failure).clone())
    }

    pub fn oldest_pending_ms(&self) -> Option<i64> {
        match self.shared.oldest_pending_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(at),
        }
    }

    /// Journals `mutation`, applies it to the overlays and returns its record. A request id is
    /// scoped by tenant: a repeat of the same request returns the first record and changes
    /// nothing; the same id with a different request is refused ([`MutationError::Conflict`]).
    pub async fn submit(
        &self,
        state: &Arc<State>,
        mut mutation: Mutation,
    ) -> Result<Submitted, MutationError> {
        if mutation.request_id.is_empty() || mutation.request_id.len() > 128 {
            return Err(MutationError::Invalid(
                "request_id is required (at most 128 bytes)".into(),
            ));
        }
        let digest = self.shared.digest_keys.digest(&mutation);
        let repeat_of = |first: &RequestRecord| match reuse_conflict(first, mutation.kind, &digest)
        {
            Some(conflict) => Err(conflict),
            None => Ok(Submitted {
                record: first.clone(),
                duplicate: true,
            }),
        };
        loop {
            let notify: Arc<Notify>;
            let notified;
            {
                let mut guard = lock(&self.shared.requests);
                let requests = &mut *guard;
                if !requests.by_tenant.contains_key(&mutation.tenant) {
                    requests
                        .by_tenant
                        .insert(mutation.tenant.clone(), HashMap::new());
                }
                let scoped = requests
                    .by_tenant
                    .get_mut(&mutation.tenant)
                    .expect("inserted above");
                match scoped.get_mut(&mutation.request_id) {
                    Some(Slot::Done(record)) => return repeat_of(record),
                    Some(Slot::Pending(waiters)) => {
                        notify = waiters.get_or_insert_with(Default::default).clone();
                    }
                    None => {
                        if let Some(record) = requests.legacy.get(&mutation.request_id) {
                            return repeat_of(record);
                        }
                        scoped.insert(mutation.request_id.clone(), Slot::Pending(None));
                        break;
                    }
                }
                // Created under the lock, so the owner's `notify_waiters` cannot slip past it.
                notified = notify.notified();
            }
            // The same id is in flight: wait for its outcome, then look again.
            notified.await;
        }
        mutation.at_ms = now_ms();
        let payload = mutation.encode();
        let (done, durable) = tokio::sync::oneshot::channel();
        let (shared, state) = (self.shared.clone(), state.clone());
        // Runs on the journal's writer thread: whatever happens to this task from here on
        // (even a cancelled request), a durable record is applied and its id settled.
        let _ = self.journal.append(
            payload,
            Box::new(move |result| {
                let outcome = match result {
                    Ok(seq) => Ok(shared.durable(&state, mutation, seq, digest)),
                    Err(error) => {
                        shared.settle(&mutation.tenant, &mutation.request_id, None);
                        Err(error)
                    }
                };
                let _ = done.send(outcome);
            }),
        );
        let record = durable
            .await
            .unwrap_or_else(|_| Err("journal writer stopped".into()))
            .map_err(MutationError::Journal)?;
        Ok(Submitted {
            record,
            duplicate: false,
        })
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
        let _one = lock(&self.compacting);
        let started = Instant::now();
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
        *lock(&self.last_compaction) = (now_ms(), result.as_ref().err().cloned());
        result
    }

    fn compact_inner(&self, state: &State) -> Result<CompactionReport, String> {
        // Completions (overlay updates) run on the writer thread before it rotates, so every
        // record through `through` is in the overlays once this returns.
        let through = self.journal.rotate_blocking().map_err(|e| e.to_string())?;
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
        self.journal
            .drop_through(through)
            .map_err(|e: JournalError| e.to_string())?;
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

    /// Waits until the audit log and ledger hold every durable mutation (at shutdown).
    pub fn flush(&self) {
        if let Err(error) = self.wait_recorded(self.journal.stats().last_seq) {
            tracing::error!(%error, "audit log and ledger not flushed; the next start queues the rest again");
        }
    }

    /// Waits until the audit log and ledger hold every mutation through `seq`.
    fn wait_recorded(&self, seq: u64) -> Result<(), String> {
        let deadline = Instant::now() + RECORD_WAIT;
        let attempts = self.shared.record_attempts.load(Ordering::Acquire);
        while self.shared.recorded_through.load(Ordering::Acquire) < seq {
            // Only a failure of an attempt made while waiting counts: the one before may have
            // been a full disk that has been freed since.
            if self.shared.record_attempts.load(Ordering::Acquire) > attempts + 1
                && let Some(failure) = lock(&self.shared.record_failure).clone()
            {
                return Err(failure);
            }
            if Instant::now() >= deadline {
                return Err("audit log and ledger did not catch up with the journal".into());
            }
            if let Some(thread) = &self.recorder_thread {
                thread.thread().unpark();
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }
}

impl Drop for Mutator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.recorder_thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// A journal record became durable: put it in force, settle its request id, queue it for
    /// the recorder. Runs on the journal's writer thread, in sequence order.
    fn durable(
        &self,
        state: &State,
        mutation: Mutation,
        seq: u64,
        digest: PayloadDigest,
    ) -> RequestRecord {
        apply_ops(state, &mutation, seq);
        let record = record_of(&mutation, seq, digest);
        crate::metrics::metrics().mutations.increment(1);
        let receipt = (mutation.kind == Some(MutationKind::Erase)).then(|| {
            let receipt = receipt_of(state, &mutation, seq);
            crate::metrics::metrics()
                .erasure_in_force
                .record((receipt.in_force_at_ms - receipt.requested_at_ms).max(0) as f64 / 1000.0);
            lock(&self.receipts).insert(receipt.receipt_id.clone(), receipt.clone());
            lock(&self.erased_keys).insert(receipt.receipt_id.clone(), removed_keys(&mutation));
            receipt
        });
        let _ = self.oldest_pending_ms.compare_exchange(
            0,
            mutation.at_ms,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.settle(&mutation.tenant, &mutation.request_id, Some(record.clone()));
        lock(&self.backlog).push(Durable {
            mutation,
            seq,
            receipt,
            digest,
        });
        record
    }

    /// Records the outcome of an in-flight request id (`None`: failed, the id is free again)
    /// and wakes any request waiting on the same id.
    fn settle(&self, tenant: &str, request_id: &str, record: Option<RequestRecord>) {
        let previous = {
            let mut requests = lock(&self.requests);
            let Some(scoped) = requests.by_tenant.get_mut(tenant) else {
                return;
            };
            match record {
                Some(record) => scoped.insert(request_id.to_owned(), Slot::Done(record)),
                None => scoped.remove(request_id),
            }
        };
        if let Some(Slot::Pending(Some(waiters))) = previous {
            waiters.notify_waiters();
        }
    }
}

impl Recorder {
    /// The recorder thread: every period, or when compaction asks, moves the backlog into the
    /// audit log and the ledger; drains it once more on shutdown.
    fn run(&self, shared: &Shared) {
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
        let entries: Vec<Vec<u8>> = batch
            .iter()
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

fn record_of(mutation: &Mutation, seq: u64, digest: PayloadDigest) -> RequestRecord {
    RequestRecord {
        request_id: mutation.request_id.clone(),
        tenant: mutation.tenant.clone(),
        digest: Some(digest),
        kind: mutation.kind.map_or("unknown", MutationKind::name),
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

/// The (set id, key) pairs an erasure removes: what must be gone from every file.
fn removed_keys(mutation: &Mutation) -> Vec<(String, u64)> {
    mutation
        .ops
        .iter()
        .filter_map(|op| match *op {
            Op::Remove { set, key } => Some((mutation.sets[usize::from(set)].clone(), key)),
            Op::Add { .. } => None,
        })
        .collect()
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
/// (or by this one, which writes none while compacting).
fn stale_temp_file(name: &str, definition: &SetDefinition) -> bool {
    let Some((file, pid)) = name
        .strip_prefix('.')
        .and_then(|rest| rest.rsplit_once(".tmp-"))
    else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    definition.pattern.matches(file)
        && (pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists())
}

/// Deletes every file of `definition` whose header version is below `keep`, its stale
/// temporary files and files the loader moved aside; fsyncs the directory. Returns how many were deleted.
fn delete_older_versions(dir: &Path, definition: &SetDefinition, keep: u64) -> Result<u32, String> {
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
