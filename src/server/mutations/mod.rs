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

//!
//! One file per job: this file is the service (open, submit, the durable completion); request
//! ids in [`requests`], erasure receipts in [`receipts`], the recorder in [`recorder`] (audit
//! log in [`audit`], ledger in [`ledger`]), compaction in [`compaction`], and what the logs
//! report to Prometheus in [`observers`]. The file formats and the overlay are
//! [`crate::store`]'s; which sets an erasure touches is [`crate::policy`]'s.

pub mod attempts;
pub mod audit;
pub mod build;
pub mod compaction;
mod fleet_erasure;
mod fleet_snapshots;
pub mod ledger;
mod observers;
pub mod receipts;
mod recorder;
mod requests;
mod stream;

pub use compaction::{CompactionReport, create_initial_empty};
pub use fleet_snapshots::{FleetSnapshots, quiet as quiet_compaction_error};
pub use receipts::Receipt;
pub use stream::FleetSink;

use crate::policy::SetId;
use crate::server::state::{State, WriteHealth, now_ms};
use crate::store::{Entry, Log, Mutation, MutationKind, Op, OsIo, PayloadDigest};
use audit::Audit;
use ledger::Ledger;
use receipts::{receipt_of, removed_keys};
use recorder::{RECORD_WAIT, Recorder};
use requests::{DigestKeys, Requests};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// The request names a set this daemon does not have.
    #[error("{0}")]
    NotFound(String),
    /// The request names no usable tenant.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// Fleet mode: the stream did not take it, or this host did not apply it in time; nothing
    /// was acknowledged (retry with the same request id).
    #[error("{0}")]
    Unavailable(String),
}

/// Outcome of a submitted mutation.
#[derive(Clone, Debug)]
pub struct Submitted {
    pub record: RequestRecord,
    pub duplicate: bool,
}

/// A durable mutation waiting for the recorder.
struct Durable {
    mutation: Mutation,
    seq: u64,
    receipt: Option<Receipt>,
    digest: PayloadDigest,
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
    /// Fleet mode: every stream sequence through this is durable here (in the journal, or in
    /// snapshots and `fleet.applied` after compaction). Raised on the writer thread.
    durable_stream_seq: AtomicU64,
    /// Fleet mode: (journal sequence, stream sequence) of each record applied from the
    /// stream, in order, so a snapshot's `through_seq` maps to journal sequences (`fleet_snapshots`).
    stream_marks: Mutex<std::collections::VecDeque<(u64, u64)>>,
    /// Fleet mode: every erasure through this stream sequence has left no trace in this
    /// host's files (raised by compaction and the fleet fold; 0 until the first).
    clean_through: AtomicU64,
    /// Fleet mode: the journal sequence the last fold dropped through.
    folded_through: AtomicU64,
    /// Fleet mode: erasures known here not COMPLETE fleet-wide, as of the last round.
    fleet_pending: AtomicU64,
    stop: AtomicBool,
}

pub struct Mutator {
    journal: Log,
    shared: Arc<Shared>,
    recorder: Arc<Recorder>,
    recorder_thread: Option<std::thread::JoinHandle<()>>,
    /// One compaction at a time.
    compacting: Mutex<()>,
    pub last_compaction: Mutex<(i64, Option<String>)>,
    /// Fleet mode: the stream this host publishes to (attached at start, before serving).
    fleet: std::sync::OnceLock<Arc<crate::fleet::Fleet>>,
}

/// The journal's file operations. Debug builds only (the integration tests' binary):
/// `SUPPRESSD_TEST_JOURNAL_FSYNC_DELAY_MS` holds every journal fsync that long, so a test can
/// kill a daemon between a fleet follower's overlay apply and its fsync. Release builds
/// never read it.
fn journal_io() -> Box<dyn crate::store::SegmentIo> {
    #[cfg(debug_assertions)]
    if let Some(delay) = std::env::var("SUPPRESSD_TEST_JOURNAL_FSYNC_DELAY_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
    {
        struct SlowSync(Duration);
        impl crate::store::SegmentIo for SlowSync {
            fn sync_data(&mut self, file: &std::fs::File) -> std::io::Result<()> {
                std::thread::sleep(self.0);
                file.sync_data()
            }
        }
        tracing::warn!(
            delay_ms = delay,
            "test hook: every journal fsync is delayed (debug build)"
        );
        return Box::new(SlowSync(Duration::from_millis(delay)));
    }
    Box::new(OsIo)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The attempt book as of the last compaction (`store::attempts`), in the data directory.
pub const ATTEMPT_STATE_FILE: &str = "attempts.state";

fn request_cutoff_ms(state: &State) -> i64 {
    now_ms() - i64::from(state.config.server().request_id_retention_days) * 86_400_000
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
            state.config.audit().retention_days,
        )?;
        let (journal, replay) = Log::open_with(
            &data_dir.join("journal"),
            repair,
            journal_io(),
            Arc::new(observers::JournalMetrics),
        )
        .map_err(|e| e.to_string())?;
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
        let mut stream_marks = std::collections::VecDeque::new();
        let mut stream_seq = match state.config.fleet() {
            Some(_) => crate::fleet::applied::read(data_dir)?,
            None => 0,
        };
        // The attempt book as the last compaction wrote it; the journal replays the rest.
        state
            .attempts
            .read_state(&data_dir.join(ATTEMPT_STATE_FILE))?;
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
            stream_seq = stream_seq.max(mutation.stream_seq);
            if mutation.stream_seq != 0 {
                stream_marks.push_back((record.seq, mutation.stream_seq));
            }
            if oldest == 0 {
                oldest = mutation.at_ms;
            }
            if mutation.kind.is_some_and(MutationKind::is_attempt) {
                // Decided again exactly as first (same records, same order); a record that
                // changed nothing then changes nothing now.
                let _ = attempts::apply_attempt(state, &mutation);
                if record.seq > audit_through.min(ledger_through) {
                    backlog.push(Durable {
                        seq: record.seq,
                        mutation,
                        receipt: None,
                        digest: PayloadDigest {
                            key_tag: 0,
                            hash: [0; 16],
                        },
                    });
                }
                continue;
            }
            let digest = digest_keys.digest(&mutation);
            let result = record_of(&mutation, record.seq, digest);
            let mut receipt = None;
            if mutation.kind == Some(MutationKind::Erase) {
                let stored = receipts
                    .entry(mutation.receipt_id.clone())
                    .or_insert_with(|| receipt_of(&mutation, record.seq))
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
            durable_stream_seq: AtomicU64::new(stream_seq),
            stream_marks: Mutex::new(stream_marks),
            clean_through: AtomicU64::new(0),
            folded_through: AtomicU64::new(0),
            fleet_pending: AtomicU64::new(0),
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
            fleet: std::sync::OnceLock::new(),
        })
    }

    pub fn journal(&self) -> &Log {
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
        if let Some(fleet) = self.fleet.get() {
            return self.submit_to_fleet(fleet, mutation).await;
        }
        let digest = self.shared.digest_keys.digest(&mutation);
        if let Some(repeat) = requests::claim(&self.shared.requests, &mutation, &digest).await? {
            return Ok(repeat);
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
                        requests::settle(
                            &shared.requests,
                            &mutation.tenant,
                            &mutation.request_id,
                            None,
                        );
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
            let receipt = receipt_of(&mutation, seq);
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
        requests::settle(
            &self.requests,
            &mutation.tenant,
            &mutation.request_id,
            Some(record.clone()),
        );
        lock(&self.backlog).push(Durable {
            mutation,
            seq,
            receipt,
            digest,
        });
        record
    }
}

/// Puts a mutation's operations into the overlays. Unknown sets (config changed since) are
/// skipped with a warning. A fleet record (`stream_seq` set) also settles what the follower
/// put in force ahead of it, after the journal entry is in (a check never misses both).
fn apply_ops(state: &State, mutation: &Mutation, seq: u64) {
    for_each_op(state, mutation, seq, |overlay, key, entry| {
        overlay.apply(key, entry);
        if mutation.stream_seq > 0 {
            overlay.settle_ahead(key, mutation.stream_seq);
        }
    });
}

/// Fleet mode: puts a stream message's operations in force ahead of its journal record
/// (`store::overlay`); [`apply_ops`] settles them once the record is durable.
pub(crate) fn apply_ops_ahead(state: &State, mutation: &Mutation) {
    let stream_seq = mutation.stream_seq;
    for_each_op(state, mutation, stream_seq, |overlay, key, entry| {
        overlay.apply_ahead(key, entry);
    });
}

/// Each operation of `mutation` as an overlay entry numbered `seq`, with its set's overlay.
fn for_each_op(
    state: &State,
    mutation: &Mutation,
    seq: u64,
    mut each: impl FnMut(&crate::store::Overlay, u64, Entry),
) {
    let ids: Vec<Option<SetId>> = mutation
        .sets
        .iter()
        .map(|name| {
            let id = state.policy.set_id(name);
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
                    each(&state.overlays[id], key, Entry::Present { expires, seq });
                }
            }
            Op::Remove { set, key } => {
                if let Some(id) = ids[usize::from(set)] {
                    each(&state.overlays[id], key, Entry::Absent { seq });
                }
            }
        }
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

impl WriteHealth for Mutator {
    fn write_error(&self) -> Option<String> {
        Mutator::write_error(self)
    }
}
