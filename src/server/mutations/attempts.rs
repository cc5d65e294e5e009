//! Attempt caps on the mutation path: reservations, commits, releases and outcomes become
//! journal records (fleet mode: stream messages) that the attempt book decides when it
//! applies them (`store::attempts`), and the caller hears that decision once its record is
//! durable here.
//!
//! Why decided at apply and not at request: the writer thread applies records one at a time
//! in journal order, so 100 concurrent reservations for one number with a cap of 3 grant
//! exactly 3 without a lock on the request path; in fleet mode every host applies the same
//! stream in the same order and reaches the same decisions, so no two hosts can both grant
//! the last slot and no compare-and-set is needed. Idempotent by call id: a retry is answered
//! from the book without journalling anything when the book already knows the call.
//!
//! Attempt records are not copied into the audit log or the ledger (attempt history is
//! personal data, kept only as long as a rule can use it; the journal and the attempt state
//! file are its only homes). Proto-free: the edges convert.

use super::{MutationError, Mutator, Shared, build};
use crate::engine::number::Number;
use crate::metrics::{AttemptRequest, AttemptResult, attempt_metrics};
use crate::policy::AttemptCaps;
use crate::rules::attempts::{Decision, Outcome};
use crate::server::state::{State, now_ms};
use crate::store::attempts::{Applied, AttemptError, Call, CounterKey, Stage};
use crate::store::{AttemptRecord, Mutation, MutationKind};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What an attempt request names. `number` is required to reserve (and for an opt-out
/// outcome, which suppresses it); elsewhere optional, and checked against the call's when
/// given.
#[derive(Clone, Debug, Default)]
pub struct AttemptAsk {
    pub call_id: String,
    pub tenant: String,
    pub campaign: String,
    pub number: String,
    pub outcome: Option<Outcome>,
    pub actor: String,
}

/// What an attempt request is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptAnswer {
    pub call_id: String,
    pub granted: bool,
    /// Attempts left in the tightest window after this one (granted) or now (refused).
    pub remaining: u32,
    /// Refused: the earliest instant (unix ms) every rule allows another attempt.
    pub next_allowed_at_ms: i64,
    /// `reserved`, `committed`, `released`, `refused` or `expired`.
    pub stage: &'static str,
    pub outcome: Option<Outcome>,
    /// A retry of a request already applied: nothing changed.
    pub duplicate: bool,
    /// Opt-out outcomes: the request id of the suppression it made (`opt-out/<call id>`).
    pub suppression_request_id: Option<String>,
}

fn answer(call_id: &str, call: &Call, duplicate: bool, now_ms: i64) -> AttemptAnswer {
    let stage = match call.stage {
        Stage::Reserved { expires_ms } if now_ms >= expires_ms => "expired",
        Stage::Reserved { .. } => "reserved",
        Stage::Committed => "committed",
        Stage::Released => "released",
        Stage::Refused => "refused",
    };
    AttemptAnswer {
        call_id: call_id.to_owned(),
        granted: call.decision.granted,
        remaining: call.decision.remaining,
        next_allowed_at_ms: call.decision.next_allowed_at_ms,
        stage,
        outcome: call.outcome.map(|(o, _)| o),
        duplicate,
        suppression_request_id: None,
    }
}

impl From<AttemptError> for MutationError {
    fn from(error: AttemptError) -> MutationError {
        match error {
            AttemptError::Conflict(m) => MutationError::Conflict(m),
            AttemptError::NotFound(m) => MutationError::NotFound(m),
            AttemptError::Invalid(m) => MutationError::Invalid(m),
        }
    }
}

/// The counter a number of a campaign is counted in: the tenant, the campaign's scope and the
/// number's keyed fingerprint (the tenant's erased-set key, else the audit key; without
/// either, attempt caps are refused rather than keyed by the number in the clear).
pub fn counter(
    state: &State,
    tenant: &str,
    caps: &AttemptCaps,
    number: Number,
) -> Result<CounterKey, MutationError> {
    let key = state.attempt_key(tenant).ok_or_else(|| {
        MutationError::Invalid(format!(
            "attempt caps of tenant '{tenant}' need a key: an erased set with a key_file, or audit.key_file"
        ))
    })?;
    Ok(CounterKey {
        tenant: tenant.to_owned(),
        scope: caps.scope.clone(),
        fingerprint: key.fingerprint(number),
    })
}

/// What a reservation at `at_ms` would be answered, without reserving (a plain check's
/// remaining budget); `None` when the campaign has no caps or no key to count with.
pub fn peek(
    state: &State,
    tenant: &str,
    caps: &AttemptCaps,
    number: Number,
    at_ms: i64,
) -> Option<Decision> {
    let counter = counter(state, tenant, caps, number).ok()?;
    Some(state.attempts.peek(&counter, &caps.rules, at_ms))
}

impl Mutator {
    /// Applies one attempt request: builds its record, journals it (fleet: publishes it and
    /// waits until this host applied it) and answers with what its application decided.
    pub async fn attempt(
        &self,
        state: &Arc<State>,
        kind: MutationKind,
        ask: AttemptAsk,
    ) -> Result<AttemptAnswer, MutationError> {
        let answered = self.attempt_counted(state, kind, ask).await;
        let request = match kind {
            MutationKind::ReserveAttempt => AttemptRequest::Reserve,
            MutationKind::CommitAttempt => AttemptRequest::Commit,
            MutationKind::ReleaseAttempt => AttemptRequest::Release,
            _ => AttemptRequest::Outcome,
        };
        let result = match &answered {
            Err(_) => AttemptResult::Error,
            Ok(a) if a.duplicate => AttemptResult::Duplicate,
            Ok(a) if request != AttemptRequest::Reserve => {
                if let Some(outcome) = a.outcome.filter(|_| request == AttemptRequest::Outcome) {
                    attempt_metrics().outcome(outcome as usize - 1);
                }
                AttemptResult::Done
            }
            Ok(a) if a.granted => AttemptResult::Granted,
            Ok(_) => AttemptResult::Refused,
        };
        attempt_metrics().request(request, result);
        answered
    }

    async fn attempt_counted(
        &self,
        state: &Arc<State>,
        kind: MutationKind,
        ask: AttemptAsk,
    ) -> Result<AttemptAnswer, MutationError> {
        if ask.call_id.is_empty() || ask.call_id.len() > 128 {
            return Err(MutationError::Invalid(
                "call_id is required (at most 128 bytes)".into(),
            ));
        }
        let tenant = build::tenant(&state.policy, &ask.tenant)?;
        let needs_number = kind == MutationKind::ReserveAttempt
            || (kind == MutationKind::RecordOutcome && ask.outcome == Some(Outcome::OptOut));
        if needs_number && ask.number.is_empty() {
            return Err(MutationError::Invalid(format!(
                "{} needs the number",
                kind.name()
            )));
        }
        if kind == MutationKind::RecordOutcome && ask.outcome.is_none() {
            return Err(MutationError::Invalid("an outcome is required".into()));
        }
        let mut record = AttemptRecord {
            call_id: ask.call_id.clone(),
            outcome: if kind == MutationKind::RecordOutcome {
                ask.outcome
            } else {
                None
            },
            ..AttemptRecord::default()
        };
        let mut number = None;
        if !ask.number.is_empty() {
            let (_, campaign) = state.policy.resolve(&tenant.name, &ask.campaign)?;
            let caps = campaign.attempts.as_ref().ok_or_else(|| {
                MutationError::Invalid(format!("campaign '{}' has no attempt_rules", campaign.name))
            })?;
            let parsed = tenant
                .parser
                .parse_fast(&ask.number)
                .map_err(|e| MutationError::Invalid(e.to_string()))?;
            let counter = counter(state, &tenant.name, caps, parsed)?;
            number = Some(parsed);
            record.scope = counter.scope;
            record.fingerprint = counter.fingerprint;
            if kind == MutationKind::ReserveAttempt {
                record.rules = caps.rules.clone();
                record.ttl_ms = caps.ttl_ms;
            }
        }
        // A retry of a reservation the book knows: its first answer, nothing journalled.
        if kind == MutationKind::ReserveAttempt
            && let Some(call) = state.attempts.call(&tenant.name, &ask.call_id, now_ms())
        {
            if call.counter.scope != record.scope || call.counter.fingerprint != record.fingerprint
            {
                return Err(MutationError::Conflict(format!(
                    "call id '{}' was already used for another number or scope; nothing was changed",
                    ask.call_id
                )));
            }
            return Ok(answer(&ask.call_id, &call, true, now_ms()));
        }
        let mutation = Mutation {
            kind: Some(kind),
            request_id: format!("{}/{}", kind.name(), ask.call_id),
            tenant: tenant.name.clone(),
            actor: ask.actor.clone(),
            source: "attempt".into(),
            at_ms: now_ms(),
            attempt: Some(record),
            ..Mutation::default()
        };
        let mut answered = match self.fleet.get() {
            Some(fleet) => self.attempt_in_fleet(state, fleet, mutation).await?,
            None => self.attempt_here(state, mutation).await?,
        };
        if kind == MutationKind::RecordOutcome
            && ask.outcome == Some(Outcome::OptOut)
            && let Some(number) = number
        {
            answered.suppression_request_id =
                Some(self.opt_out(state, &tenant.name, &ask, number).await?);
        }
        Ok(answered)
    }

    /// An opt-out outcome suppresses the number through the ordinary mutation path (the
    /// tenant's internal do-not-call set), idempotent by its request id `opt-out/<call id>`.
    async fn opt_out(
        &self,
        state: &Arc<State>,
        tenant: &str,
        ask: &AttemptAsk,
        number: Number,
    ) -> Result<String, MutationError> {
        let request_id = format!("opt-out/{}", ask.call_id);
        let built = build::set_change(
            &state.policy,
            tenant,
            "",
            build::SetChange::Suppress,
            &[number.to_e164_string()],
            build::Origin {
                request_id: request_id.clone(),
                source: "phone".into(),
                reason: "opt-out outcome of an attempt".into(),
                actor: ask.actor.clone(),
            },
        )?;
        self.submit(state, built.mutation).await?;
        Ok(request_id)
    }

    async fn attempt_here(
        &self,
        state: &Arc<State>,
        mutation: Mutation,
    ) -> Result<AttemptAnswer, MutationError> {
        let (done, durable) = tokio::sync::oneshot::channel();
        let (shared, state) = (self.shared.clone(), state.clone());
        // Runs on the journal's writer thread, in journal order: the decision is made there.
        let _ = self.journal.append(
            mutation.encode(),
            Box::new(move |result| {
                let outcome = result.map(|seq| {
                    let at_ms = mutation.at_ms;
                    let call_id = mutation
                        .attempt
                        .as_ref()
                        .map(|a| a.call_id.clone())
                        .unwrap_or_default();
                    shared
                        .durable_attempt(&state, mutation, seq)
                        .map(|applied| answer(&call_id, &applied.call, applied.repeat, at_ms))
                });
                let _ = done.send(outcome);
            }),
        );
        durable
            .await
            .unwrap_or_else(|_| Err("journal writer stopped".into()))
            .map_err(MutationError::Journal)?
            .map_err(MutationError::from)
    }

    /// Fleet mode: publish, wait until this host applied the message, then read what the book
    /// holds for the call (every host holds the same).
    async fn attempt_in_fleet(
        &self,
        state: &Arc<State>,
        fleet: &crate::fleet::Fleet,
        mutation: Mutation,
    ) -> Result<AttemptAnswer, MutationError> {
        let published = fleet
            .publish(&mutation)
            .await
            .map_err(|e| MutationError::Unavailable(e.to_string()))?;
        if !fleet
            .status
            .wait_applied(published.stream_seq, fleet.settings.timeout)
            .await
        {
            return Err(MutationError::Unavailable(format!(
                "fleet: the attempt record is in the stream (sequence {}) but this host has not applied it within fleet.timeout_ms; retry with the same call id",
                published.stream_seq
            )));
        }
        let kind = mutation.kind.expect("attempt kind");
        let record = mutation.attempt.as_ref().expect("attempt record");
        let call = state
            .attempts
            .call(&mutation.tenant, &record.call_id, mutation.at_ms)
            .ok_or_else(|| {
                MutationError::NotFound(format!(
                    "no reservation under call id '{}'",
                    record.call_id
                ))
            })?;
        let names_counter = kind == MutationKind::ReserveAttempt || !record.scope.is_empty();
        if names_counter
            && (call.counter.scope != record.scope
                || call.counter.fingerprint != record.fingerprint)
        {
            return Err(MutationError::Conflict(format!(
                "call id '{}' was already used for another number or scope; nothing was changed",
                record.call_id
            )));
        }
        let reached = match kind {
            MutationKind::ReserveAttempt => true,
            MutationKind::CommitAttempt => call.stage == Stage::Committed,
            MutationKind::ReleaseAttempt => call.stage == Stage::Released,
            _ => call.outcome.map(|(o, _)| o) == record.outcome,
        };
        if !reached {
            return Err(match (kind, call.outcome) {
                (MutationKind::RecordOutcome, Some((first, _))) => {
                    MutationError::Conflict(format!(
                        "call id '{}' already has outcome {}",
                        record.call_id,
                        first.name()
                    ))
                }
                _ => MutationError::Invalid(format!(
                    "call id '{}' cannot be {}: it is {:?}",
                    record.call_id,
                    kind.name(),
                    call.stage
                )),
            });
        }
        let duplicate = published.duplicate
            || (kind == MutationKind::ReserveAttempt && call.at_ms != mutation.at_ms);
        Ok(answer(&record.call_id, &call, duplicate, now_ms()))
    }
}

impl Shared {
    /// An attempt record became durable: the book decides it (writer thread, journal order).
    /// Queued for the recorder only so it knows the journal is covered; it copies nothing.
    pub(super) fn durable_attempt(
        &self,
        state: &State,
        mutation: Mutation,
        seq: u64,
    ) -> Result<Applied, AttemptError> {
        let result = apply_attempt(state, &mutation);
        let _ = self.oldest_pending_ms.compare_exchange(
            0,
            mutation.at_ms,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        // No digest: attempt records never reach the ledger.
        let digest = crate::store::PayloadDigest {
            key_tag: 0,
            hash: [0; 16],
        };
        super::lock(&self.backlog).push(super::Durable {
            mutation,
            seq,
            receipt: None,
            digest,
        });
        result
    }
}

/// Applies an attempt record to the book (replay and the durable completion alike).
pub(super) fn apply_attempt(state: &State, mutation: &Mutation) -> Result<Applied, AttemptError> {
    let (Some(kind), Some(record)) = (mutation.kind, mutation.attempt.as_ref()) else {
        return Err(AttemptError::Invalid("not an attempt record".into()));
    };
    state
        .attempts
        .apply(&mutation.tenant, kind, record, mutation.at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_follow_the_outcomes_in_order() {
        // `attempt_metrics().outcome(outcome as usize - 1)`: codes start at 1, in ALL's order.
        for (index, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize - 1, index);
            assert_eq!(crate::metrics::ATTEMPT_OUTCOMES[index], outcome.name());
        }
        assert_eq!(crate::metrics::ATTEMPT_OUTCOMES.len(), Outcome::ALL.len());
    }
}
