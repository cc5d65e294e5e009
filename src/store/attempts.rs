//! The attempt book: per (tenant, scope, keyed fingerprint of a number) the real instants of
//! its recent attempts, and per (tenant, call id) what was decided for that call.
//!
//! Attempt records are decided when they are applied, never when they are asked: the
//! journal's writer thread applies each record in journal order (in fleet mode, stream order
//! on every host), so concurrent reservations for one number are serialised there and every
//! replay and every host reaches the same decision from the same records. Each record is
//! idempotent by call id (a repeat returns the first decision; another counter under the same
//! call id is a conflict), so replaying a record the state file already holds changes nothing.
//!
//! Holds no number: counters are keyed by fingerprint. Nothing older than the longest window
//! or cooldown of the rules it was decided with is kept (swept every few thousand records and
//! before the state is written). Compaction writes the book to `attempts.state` (checksummed;
//! refused with file, offset and reason if damaged) before it drops journal segments, so a
//! restart is that file plus the journal's replay.
//!
//! Checks read a counter through one `DashMap` shard read lock (copying it out); only the
//! writer thread mutates. No tokio, no proto, no metrics.

use crate::rules::attempts::{Attempt, Decision, Outcome, Rule, decide};
use crate::store::payload::{AttemptRecord, MutationKind};
use dashmap::DashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What attempts are counted per: the tenant, the scope and the number's fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub tenant: String,
    pub scope: String,
    pub fingerprint: u64,
}

/// Where a call stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Granted and not yet confirmed: holds its slot until `expires_ms`.
    Reserved { expires_ms: i64 },
    /// Granted and confirmed (committed, or an outcome recorded): counts for its window.
    Committed,
    /// Granted, then given back before the call: counts for nothing.
    Released,
    /// Not granted.
    Refused,
}

/// What the book knows of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub counter: CounterKey,
    /// When it was reserved: the instant its attempt counts from.
    pub at_ms: i64,
    pub decision: Decision,
    pub stage: Stage,
    pub outcome: Option<(Outcome, i64)>,
    /// How long it can matter: the longest window or cooldown of the rules it was decided by.
    pub horizon_ms: i64,
}

impl Call {
    /// The attempt it counts as at `now_ms`, if it counts.
    fn attempt(&self, now_ms: i64) -> Option<Attempt> {
        let counts = match self.stage {
            Stage::Reserved { expires_ms } => now_ms < expires_ms,
            Stage::Committed => true,
            Stage::Released | Stage::Refused => false,
        };
        counts.then_some(Attempt {
            at_ms: self.at_ms,
            outcome: self.outcome,
        })
    }
}

/// What applying an attempt record answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub call: Call,
    /// The record repeated one already applied (a retry): nothing changed.
    pub repeat: bool,
}

/// Why an attempt record changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    /// The call id is another call's (another number, scope or outcome).
    #[error("{0}")]
    Conflict(String),
    /// No reservation under this call id (never made, or forgotten after its horizon).
    #[error("{0}")]
    NotFound(String),
    /// The call is not in a stage this record can move it from.
    #[error("{0}")]
    Invalid(String),
}

/// Records applied between two sweeps of expired history (at least).
const SWEEP_EVERY: u64 = 4096;
/// How long past its horizon a call is still held: far more than the time between a record's
/// instant and its application, so no record is applied after a sweep dropped a call it needed.
pub const SWEEP_MARGIN_MS: i64 = 3_600_000;

/// Whether a call counts, or may count again after a commit: reserved or committed.
fn may_count(call: &Call) -> bool {
    matches!(call.stage, Stage::Reserved { .. } | Stage::Committed)
}

/// The attempt state of every tenant.
#[derive(Debug, Default)]
pub struct Book {
    /// Call ids of the calls that count (or may count) per counter.
    counters: DashMap<CounterKey, Vec<String>>,
    calls: DashMap<(String, String), Call>,
    len: AtomicUsize,
    /// Records applied since the last sweep.
    applied: AtomicU64,
}

fn call_key(tenant: &str, call_id: &str) -> (String, String) {
    (tenant.to_owned(), call_id.to_owned())
}

impl Book {
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
    }

    /// Calls held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// What is known of a call at `at_ms` (a copy). A call past its horizon is unknown whether
    /// or not a sweep has removed it yet, so when sweeps run (which differs between hosts and
    /// replays) never changes a decision.
    pub fn call(&self, tenant: &str, call_id: &str, at_ms: i64) -> Option<Call> {
        if self.is_empty() {
            return None;
        }
        self.calls
            .get(&call_key(tenant, call_id))
            .map(|c| c.value().clone())
            .filter(|c| at_ms < c.at_ms.saturating_add(c.horizon_ms))
    }

    /// What a reservation at `now_ms` would be answered, without making one.
    pub fn peek(&self, counter: &CounterKey, rules: &[Rule], now_ms: i64) -> Decision {
        let attempts = self.attempts(counter, now_ms);
        let mut decision = decide(rules, &attempts, now_ms);
        if decision.granted {
            // The budget before this attempt, not after it.
            decision.remaining = decision.remaining.saturating_add(1);
        }
        decision
    }

    fn attempts(&self, counter: &CounterKey, now_ms: i64) -> Vec<Attempt> {
        if self.is_empty() {
            return Vec::new();
        }
        // Copy the ids out before reading calls: never hold one map's guard into another.
        let Some(ids) = self.counters.get(counter).map(|ids| ids.value().clone()) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| {
                let call = self.calls.get(&call_key(&counter.tenant, id))?;
                call.attempt(now_ms)
            })
            .collect()
    }

    /// Applies one attempt record of `tenant` made at `at_ms`. Writer thread only, in log
    /// order: the decision depends on every record applied before it.
    pub fn apply(
        &self,
        tenant: &str,
        kind: MutationKind,
        record: &AttemptRecord,
        at_ms: i64,
    ) -> Result<Applied, AttemptError> {
        // A sweep walks every call: run one after as many records as there are calls (and at
        // least SWEEP_EVERY), so its cost per record stays constant as the book grows.
        let since = self.applied.fetch_add(1, Ordering::Relaxed) + 1;
        if since >= SWEEP_EVERY.max(self.len() as u64) {
            self.applied.store(0, Ordering::Relaxed);
            self.sweep(at_ms);
        }
        let key = call_key(tenant, &record.call_id);
        let counter = CounterKey {
            tenant: tenant.to_owned(),
            scope: record.scope.clone(),
            fingerprint: record.fingerprint,
        };
        let known = self.call(tenant, &record.call_id, at_ms);
        // Records after the reservation name the number only when the caller gave it.
        let names_counter = kind == MutationKind::ReserveAttempt || !record.scope.is_empty();
        if let Some(call) = &known
            && names_counter
            && call.counter != counter
        {
            return Err(AttemptError::Conflict(format!(
                "call id '{}' was already used for another number or scope; nothing was changed",
                clip(&record.call_id)
            )));
        }
        if kind == MutationKind::ReserveAttempt {
            if let Some(call) = known {
                return Ok(Applied { call, repeat: true });
            }
            return Ok(self.reserve(key, counter, record, at_ms));
        }
        let Some(mut call) = known else {
            return Err(AttemptError::NotFound(format!(
                "no reservation under call id '{}'",
                clip(&record.call_id)
            )));
        };
        let invalid = |what: &str| {
            Err(AttemptError::Invalid(format!(
                "call id '{}': {what}",
                clip(&record.call_id)
            )))
        };
        let before = call.clone();
        match (kind, call.stage) {
            (_, Stage::Refused) => return invalid("the reservation was refused"),
            (MutationKind::CommitAttempt, Stage::Released) => {
                return invalid("the reservation was released");
            }
            (MutationKind::CommitAttempt, _) => call.stage = Stage::Committed,
            (MutationKind::ReleaseAttempt, Stage::Committed) => {
                return invalid("the attempt was committed; it counts");
            }
            (MutationKind::ReleaseAttempt, _) => call.stage = Stage::Released,
            (MutationKind::RecordOutcome, Stage::Released) => {
                return invalid("the reservation was released");
            }
            (MutationKind::RecordOutcome, _) => {
                let Some(outcome) = record.outcome else {
                    return invalid("an outcome record without an outcome");
                };
                match call.outcome {
                    Some((first, _)) if first != outcome => {
                        return Err(AttemptError::Conflict(format!(
                            "call id '{}' already has outcome {}",
                            clip(&record.call_id),
                            first.name()
                        )));
                    }
                    Some(_) => {}
                    None => call.outcome = Some((outcome, at_ms)),
                }
                // An outcome means the call was made, even past the reservation's expiry.
                call.stage = Stage::Committed;
            }
            (_, _) => return invalid("not an attempt record"),
        }
        let repeat = call == before;
        if call.stage == Stage::Committed && before.stage != Stage::Committed {
            // An expired reservation may have been dropped from its counter: count it again.
            let mut ids = self.counters.entry(call.counter.clone()).or_default();
            if !ids.contains(&record.call_id) {
                ids.push(record.call_id.clone());
            }
        }
        if call.stage == Stage::Released
            && before.stage != Stage::Released
            && let Some(mut ids) = self.counters.get_mut(&call.counter)
        {
            ids.retain(|id| id != &record.call_id);
        }
        self.calls.insert(key, call.clone());
        Ok(Applied { call, repeat })
    }

    fn reserve(
        &self,
        key: (String, String),
        counter: CounterKey,
        record: &AttemptRecord,
        at_ms: i64,
    ) -> Applied {
        let attempts = self.attempts(&counter, at_ms);
        let decision = decide(&record.rules, &attempts, at_ms);
        let horizon_ms = record
            .rules
            .iter()
            .map(Rule::horizon_ms)
            .fold(record.ttl_ms, i64::max);
        let call = Call {
            counter: counter.clone(),
            at_ms,
            decision,
            stage: if decision.granted {
                Stage::Reserved {
                    expires_ms: at_ms.saturating_add(record.ttl_ms),
                }
            } else {
                Stage::Refused
            },
            outcome: None,
            horizon_ms,
        };
        if decision.granted {
            let mut ids = self.counters.entry(counter).or_default();
            // Drop ids that can never count again (released) as we pass; an expired
            // reservation stays, since a later commit counts it.
            ids.retain(|id| {
                self.calls
                    .get(&call_key(&key.0, id))
                    .is_some_and(|c| may_count(&c))
            });
            ids.push(record.call_id.clone());
        }
        // A call id past its horizon may still be held (not swept yet): replaced.
        if self.calls.insert(key, call.clone()).is_none() {
            self.len.fetch_add(1, Ordering::AcqRel);
        }
        Applied {
            call,
            repeat: false,
        }
    }

    /// Forgets calls past their horizon (attempt history is personal data: kept no longer
    /// than a rule can use it, plus [`SWEEP_MARGIN_MS`]) and counters left empty. Invisible to
    /// decisions: a call past its horizon is unknown and counts for nothing, held or not, and
    /// the margin covers records applied after a sweep with a slightly earlier instant.
    pub fn sweep(&self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(SWEEP_MARGIN_MS);
        let before = self.calls.len();
        self.calls
            .retain(|_, call| call.at_ms.saturating_add(call.horizon_ms) > cutoff);
        let removed = before.saturating_sub(self.calls.len());
        self.len.fetch_sub(removed, Ordering::AcqRel);
        self.counters.retain(|counter, ids| {
            ids.retain(|id| {
                self.calls
                    .get(&call_key(&counter.tenant, id))
                    .is_some_and(|c| may_count(&c))
            });
            !ids.is_empty()
        });
    }

    /// Every call, for the state file.
    fn snapshot(&self) -> Vec<((String, String), Call)> {
        let mut calls: Vec<_> = self
            .calls
            .iter()
            .map(|c| (c.key().clone(), c.value().clone()))
            .collect();
        calls.sort_by(|a, b| a.1.at_ms.cmp(&b.1.at_ms).then_with(|| a.0.cmp(&b.0)));
        calls
    }

    /// Writes the book (after a sweep at `now_ms`) to `path` atomically. Replaying journal
    /// records it already holds changes nothing (idempotent by call id), so it may hold
    /// records later than the journal segment it replaces.
    pub fn write_state(&self, path: &Path, now_ms: i64) -> std::io::Result<()> {
        self.sweep(now_ms);
        crate::engine::snapshot::write_atomic(path, &encode_state(&self.snapshot()))
    }

    /// Loads `path` (written by [`write_state`](Self::write_state)) into an empty book; a
    /// missing file is an empty book. A damaged file is an error naming file, offset and reason.
    pub fn read_state(&self, path: &Path) -> Result<(), String> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("attempt state {}: {e}", path.display())),
        };
        self.load_state(&bytes).map_err(|(offset, reason)| {
            format!(
                "attempt state {}: corrupt at offset {offset}: {reason}",
                path.display()
            )
        })
    }

    /// Loads the bytes of a state file into an empty book, all or nothing: a damaged file is
    /// its offset and reason and leaves the book as it was (fuzzed: `fuzz/attempt_state`).
    pub fn load_state(&self, bytes: &[u8]) -> Result<(), (usize, String)> {
        let calls = decode_state(bytes)?;
        for (key, call) in calls {
            if matches!(call.stage, Stage::Reserved { .. } | Stage::Committed) {
                let mut ids = self.counters.entry(call.counter.clone()).or_default();
                if !ids.contains(&key.1) {
                    ids.push(key.1.clone());
                }
            }
            if self.calls.insert(key, call).is_none() {
                self.len.fetch_add(1, Ordering::AcqRel);
            }
        }
        Ok(())
    }
}

fn clip(text: &str) -> String {
    text.chars().take(128).collect()
}

const MAGIC: &[u8; 8] = b"SPDATTS1";

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// `[magic][count u64]` then per call its fields, then the CRC32C of everything before it.
fn encode_state(calls: &[((String, String), Call)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + calls.len() * 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(calls.len() as u64).to_le_bytes());
    for ((_, call_id), call) in calls {
        put_text(&mut out, &call.counter.tenant);
        put_text(&mut out, call_id);
        put_text(&mut out, &call.counter.scope);
        out.extend_from_slice(&call.counter.fingerprint.to_le_bytes());
        out.extend_from_slice(&call.at_ms.to_le_bytes());
        out.push(u8::from(call.decision.granted));
        out.extend_from_slice(&call.decision.remaining.to_le_bytes());
        out.extend_from_slice(&call.decision.next_allowed_at_ms.to_le_bytes());
        let (stage, expires) = match call.stage {
            Stage::Reserved { expires_ms } => (1u8, expires_ms),
            Stage::Committed => (2, 0),
            Stage::Released => (3, 0),
            Stage::Refused => (4, 0),
        };
        out.push(stage);
        out.extend_from_slice(&expires.to_le_bytes());
        let (outcome, outcome_at) = call.outcome.map_or((0, 0), |(o, at)| (o as u8, at));
        out.push(outcome);
        out.extend_from_slice(&outcome_at.to_le_bytes());
        out.extend_from_slice(&call.horizon_ms.to_le_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], (usize, String)> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or((self.at, "ends early".to_string()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, (usize, String)> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, (usize, String)> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, (usize, String)> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn text(&mut self) -> Result<String, (usize, String)> {
        let at = self.at;
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        String::from_utf8(self.take(usize::from(len))?.to_vec())
            .map_err(|_| (at, "text is not UTF-8".to_string()))
    }
}

type StateCalls = Vec<((String, String), Call)>;

fn decode_state(bytes: &[u8]) -> Result<StateCalls, (usize, String)> {
    if bytes.len() < MAGIC.len() + 12 || &bytes[..MAGIC.len()] != MAGIC {
        return Err((
            0,
            "not an attempt state file (bad magic or too short)".into(),
        ));
    }
    let body = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body..].try_into().expect("4 bytes"));
    if crc32c::crc32c(&bytes[..body]) != stored {
        return Err((body, "checksum mismatch".into()));
    }
    let mut cursor = Cursor {
        bytes: &bytes[..body],
        at: MAGIC.len(),
    };
    let count = cursor.i64()? as u64;
    // Each call takes at least 60 bytes: refuse counts the file cannot hold.
    if count > (body as u64) / 60 {
        return Err((MAGIC.len(), "call count exceeds the file".into()));
    }
    let mut calls = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let start = cursor.at;
        let tenant = cursor.text()?;
        let call_id = cursor.text()?;
        let scope = cursor.text()?;
        let fingerprint = cursor.i64()? as u64;
        let at_ms = cursor.i64()?;
        let granted = match cursor.u8()? {
            0 => false,
            1 => true,
            _ => return Err((cursor.at - 1, "bad decision flag".into())),
        };
        let remaining = cursor.u32()?;
        let next_allowed_at_ms = cursor.i64()?;
        let stage_code = cursor.u8()?;
        let expires_ms = cursor.i64()?;
        let stage = match stage_code {
            1 => Stage::Reserved { expires_ms },
            2 => Stage::Committed,
            3 => Stage::Released,
            4 => Stage::Refused,
            _ => return Err((cursor.at - 9, "unknown call stage".into())),
        };
        let outcome_code = cursor.u8()?;
        let outcome_at = cursor.i64()?;
        let outcome = match outcome_code {
            0 => None,
            code => Some((
                Outcome::from_code(code).ok_or((cursor.at - 9, "unknown outcome".to_string()))?,
                outcome_at,
            )),
        };
        let horizon_ms = cursor.i64()?;
        if call_id.is_empty() || horizon_ms < 0 || granted == (stage == Stage::Refused) {
            return Err((start, "inconsistent call".into()));
        }
        calls.push((
            (tenant.clone(), call_id),
            Call {
                counter: CounterKey {
                    tenant,
                    scope,
                    fingerprint,
                },
                at_ms,
                decision: Decision {
                    granted,
                    remaining,
                    next_allowed_at_ms,
                },
                stage,
                outcome,
                horizon_ms,
            },
        ));
    }
    if cursor.at != body {
        return Err((cursor.at, "trailing bytes".into()));
    }
    Ok(calls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::attempts::builtin_rule_sets;

    const T0: i64 = 1_800_000_000_000;
    const HOUR: i64 = 3_600_000;

    fn record(call: &str, fingerprint: u64) -> AttemptRecord {
        AttemptRecord {
            call_id: call.into(),
            scope: "campaign:outbound".into(),
            fingerprint,
            rules: builtin_rule_sets().remove(0).rules,
            ttl_ms: 60_000,
            outcome: None,
        }
    }

    fn reserve(book: &Book, call: &str, at: i64) -> Call {
        book.apply("acme", MutationKind::ReserveAttempt, &record(call, 7), at)
            .unwrap()
            .call
    }

    #[test]
    fn a_cap_of_three_grants_three_and_retries_get_the_first_answer() {
        let book = Book::default();
        let granted: Vec<bool> = (0..10)
            .map(|i| reserve(&book, &format!("c{i}"), T0 + i).decision.granted)
            .collect();
        assert_eq!(granted.iter().filter(|g| **g).count(), 3);
        assert!(granted[..3].iter().all(|g| *g));
        let retry = book
            .apply(
                "acme",
                MutationKind::ReserveAttempt,
                &record("c1", 7),
                T0 + 99,
            )
            .unwrap();
        assert!(retry.repeat && retry.call.decision.granted && retry.call.at_ms == T0 + 1);
        // The same call id for another number: a conflict, nothing changes.
        assert!(matches!(
            book.apply("acme", MutationKind::ReserveAttempt, &record("c1", 8), T0),
            Err(AttemptError::Conflict(_))
        ));
        // Another tenant's call ids and counters are its own.
        assert!(
            book.apply("other", MutationKind::ReserveAttempt, &record("c1", 7), T0)
                .unwrap()
                .call
                .decision
                .granted
        );
    }

    #[test]
    fn an_unconfirmed_reservation_expires_and_frees_its_slot_and_release_frees_it_at_once() {
        let book = Book::default();
        for i in 0..3 {
            assert!(reserve(&book, &format!("c{i}"), T0).decision.granted);
        }
        book.apply(
            "acme",
            MutationKind::CommitAttempt,
            &record("c0", 7),
            T0 + 1,
        )
        .unwrap();
        assert!(!reserve(&book, "d0", T0 + 1000).decision.granted);
        book.apply(
            "acme",
            MutationKind::ReleaseAttempt,
            &record("c1", 7),
            T0 + 1001,
        )
        .unwrap();
        assert!(reserve(&book, "d1", T0 + 1002).decision.granted);
        // c2 expires after the TTL (60 s): its slot is free, c0 (committed) still counts.
        assert!(!reserve(&book, "d2", T0 + 59_999).decision.granted);
        assert!(reserve(&book, "d3", T0 + 60_000).decision.granted);
        // Committing an expired reservation counts it again (the call was made).
        book.apply(
            "acme",
            MutationKind::CommitAttempt,
            &record("c2", 7),
            T0 + 60_001,
        )
        .unwrap();
        let peek = book.peek(
            &CounterKey {
                tenant: "acme".into(),
                scope: "campaign:outbound".into(),
                fingerprint: 7,
            },
            &record("x", 7).rules,
            T0 + 60_002,
        );
        assert!(!peek.granted);
        assert_eq!(peek.next_allowed_at_ms, T0 + 24 * HOUR);
        // Released after commit: refused; unknown call ids: not found.
        assert!(matches!(
            book.apply("acme", MutationKind::ReleaseAttempt, &record("c0", 7), T0),
            Err(AttemptError::Invalid(_))
        ));
        assert!(matches!(
            book.apply("acme", MutationKind::CommitAttempt, &record("zz", 7), T0),
            Err(AttemptError::NotFound(_))
        ));
    }

    #[test]
    fn outcomes_start_cooldowns_and_history_is_forgotten_after_its_horizon() {
        let book = Book::default();
        let mut fr = record("c0", 9);
        fr.rules = builtin_rule_sets().remove(1).rules;
        book.apply("acme", MutationKind::ReserveAttempt, &fr, T0)
            .unwrap();
        let mut outcome = fr.clone();
        outcome.outcome = Some(Outcome::Refusal);
        book.apply("acme", MutationKind::RecordOutcome, &outcome, T0 + 5)
            .unwrap();
        let mut again = fr.clone();
        again.call_id = "c1".into();
        let refused = book
            .apply("acme", MutationKind::ReserveAttempt, &again, T0 + HOUR)
            .unwrap();
        assert!(!refused.call.decision.granted);
        assert_eq!(
            refused.call.decision.next_allowed_at_ms,
            T0 + 5 + 60 * 24 * HOUR
        );
        outcome.outcome = Some(Outcome::Contact);
        assert!(matches!(
            book.apply("acme", MutationKind::RecordOutcome, &outcome, T0 + 6),
            Err(AttemptError::Conflict(_))
        ));
        assert_eq!(book.len(), 2);
        // Past its horizon a call id is unknown, swept or not: the same answer either way.
        let late = T0 + 60 * 24 * HOUR + HOUR;
        assert!(book.call("acme", "c0", late).is_none());
        assert!(book.call("acme", "c0", T0 + 7).is_some());
        assert!(matches!(
            book.apply("acme", MutationKind::CommitAttempt, &fr, late),
            Err(AttemptError::NotFound(_))
        ));
        book.sweep(late);
        assert_eq!(
            book.len(),
            1,
            "c1 (horizon ended an hour ago) is kept for the margin"
        );
        book.sweep(late + SWEEP_MARGIN_MS);
        assert_eq!(book.len(), 0);
    }

    #[test]
    fn the_state_file_round_trips_and_damage_is_refused_with_its_offset() {
        let book = Book::default();
        for i in 0..4 {
            reserve(&book, &format!("c{i}"), T0 + i);
        }
        book.apply(
            "acme",
            MutationKind::CommitAttempt,
            &record("c0", 7),
            T0 + 9,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attempts.state");
        book.write_state(&path, T0 + 10).unwrap();
        let loaded = Book::default();
        loaded.read_state(&path).unwrap();
        assert_eq!(loaded.snapshot(), book.snapshot());
        assert!(!reserve(&loaded, "c9", T0 + 20).decision.granted);
        let bytes = std::fs::read(&path).unwrap();
        for at in [0, 9, 20, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let error = Book::default().read_state(&path).unwrap_err();
            assert!(
                error.contains("attempts.state") && error.contains("offset"),
                "{error}"
            );
        }
        for cut in 0..bytes.len() {
            assert!(decode_state(&bytes[..cut]).is_err());
        }
        assert!(Book::default().read_state(&dir.path().join("none")).is_ok());
    }
}
