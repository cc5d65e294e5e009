//! Transport-neutral checks: what gRPC, HTTP and the SIP dip all ask, answered once.
//!
//! Resolves tenant and campaign, charges the tenant's rate limit, loads the sets in force once
//! (one `ArcSwap` load), and returns plain Rust outcomes that each edge converts to its own
//! wire format; counts verdicts for the edges ([`count_verdicts`]). Never knows a wire format.
//!
//! What a check costs (the hot path, exactly): no mutex and no `await`. Resolving is two hash
//! lookups; the rate limit, when the tenant has one, is a compare-and-swap on its bucket. The
//! engine's lookups take no lock and allocate nothing. Around them a check allocates: the
//! campaign state's list of consulted sets, a warning string per stale registry copy (allowed
//! with a warning), the proof's version list, an error's strings, and for batches the parsed
//! numbers and the decisions. A set whose overlay holds mutations since its snapshot is also
//! asked through that overlay, a `DashMap` read: a shard read lock per number and set, held
//! for one lookup and released before anything else (an empty overlay costs one atomic load).

use crate::config::SetDefinition;
use crate::engine::date::Day;
use crate::engine::number::{Number, NumberError};
use crate::metrics::{Api, Counted, Tally};
use crate::policy::{Campaign, Decision, Moment, PolicyError, Reason, Reasons, SetId};
use crate::rules::Hints;
use crate::server::limits::RateRefusal;
use crate::server::state::State;
use std::time::Duration;

/// A batch's number as parsed: the error boxed, so a slot is 16 bytes (the batch path writes
/// and reads one per number; the largest error is 56).
pub type Parsed = Result<Number, Box<NumberError>>;

/// Why a check was not answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The tenant is over its `max_checks_per_second`.
    #[error("tenant '{tenant}' is over its rate limit of {rate} checks/s (burst {burst}); retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited {
        tenant: String,
        rate: u32,
        burst: u32,
        retry_after: Duration,
    },
    /// One request of more numbers than the tenant's burst: it can never pass.
    #[error("a request of {numbers} numbers exceeds the burst of {burst} of tenant '{tenant}'")]
    OverBurst {
        tenant: String,
        numbers: usize,
        burst: u32,
    },
}

impl CheckError {
    /// When a retry may succeed (None: never for this request, or not a limit).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CheckError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// True for the rate limit's refusals (RESOURCE_EXHAUSTED, 429, SIP 503).
    pub fn is_rate_limit(&self) -> bool {
        matches!(
            self,
            CheckError::RateLimited { .. } | CheckError::OverBurst { .. }
        )
    }
}

/// The proof behind an answer: which sets were consulted, at which versions. Names are
/// borrowed from the policy, so each edge copies only what its wire format carries (the SIP dip
/// copies none of it; the versions are one small vector, since the snapshot guard they come
/// from does not outlive the check).
#[derive(Clone, Debug)]
pub struct Proof<'a> {
    definitions: &'a [SetDefinition],
    /// Consulted sets in answer order (block sets, then consent sets).
    consulted: &'a [SetId],
    /// Version of each consulted set; 0 when not loaded.
    versions: Vec<u64>,
}

impl<'a> Proof<'a> {
    /// A proof that consulted nothing (unit tests of the edges).
    #[cfg(test)]
    pub fn empty() -> Proof<'static> {
        Proof {
            definitions: &[],
            consulted: &[],
            versions: Vec::new(),
        }
    }

    /// Name of the consulted set at `position` (the bit a decision's `matched` uses).
    pub fn set_name(&self, position: usize) -> Option<&'a str> {
        let definitions = self.definitions;
        self.consulted
            .get(position)
            .map(|&id| definitions[id].id.as_str())
    }

    /// Names of the consulted sets whose bit is set in `matched`.
    pub fn matched(&self, matched: u64) -> impl Iterator<Item = &'a str> + '_ {
        (0..self.consulted.len())
            .filter(move |&position| matched & (1 << position) != 0)
            .filter_map(|position| self.set_name(position))
    }

    /// (set, version) of every consulted set.
    pub fn versions(&self) -> impl ExactSizeIterator<Item = (&'a str, u64)> + '_ {
        let definitions = self.definitions;
        self.consulted
            .iter()
            .zip(&self.versions)
            .map(move |(&id, &version)| (definitions[id].id.as_str(), version))
    }
}

/// The answer for one number, with its proof.
#[derive(Clone, Debug)]
pub struct CheckOutcome<'a> {
    pub reasons: Reasons,
    /// Bit i: the i-th consulted set holds the number.
    pub matched: u64,
    pub number: Option<Number>,
    pub proof: Proof<'a>,
    pub warnings: Vec<String>,
    pub tenant: &'a str,
    pub campaign: &'a str,
    /// With OUTSIDE_CALLING_WINDOW: the earliest instant (unix ms) the windows allow; with
    /// ATTEMPT_LIMIT, the later of that and the attempt rules' instant.
    pub next_allowed_at_ms: Option<i64>,
    /// Campaigns with attempt caps, valid numbers: what a reservation would be answered now
    /// (`remaining` is the budget before it). Nothing is reserved.
    pub attempts: Option<crate::rules::attempts::Decision>,
}

/// The moment a request checks for, from its wire fields: `at_ms` 0 is now; hints name a
/// known time zone, US state and US postal code or the request is refused (the message says
/// which).
pub fn moment(
    at_ms: i64,
    time_zone: &str,
    state: &str,
    postal_code: &str,
) -> Result<Moment, String> {
    if at_ms < 0 {
        return Err(format!("at_unix_ms {at_ms} is before 1970"));
    }
    let hints = Hints::parse(time_zone, state, postal_code).map_err(|e| e.to_string())?;
    let at_ms = if at_ms == 0 {
        crate::server::state::now_ms()
    } else {
        at_ms
    };
    Ok(Moment {
        at_ms,
        hints,
        each: None,
    })
}

/// The moment a batch of `count` numbers checks for: no hints, one set of hints for every
/// number, or one per number in batch order (`(time_zone, us_state, postal_code)` each). Any
/// other count, or a hint that names nothing known, is refused with its position.
pub fn batch_moment<'a>(
    at_ms: i64,
    locations: &[(&'a str, &'a str, &'a str)],
    count: usize,
) -> Result<Moment, String> {
    match locations {
        [] => moment(at_ms, "", "", ""),
        [(zone, state, postal)] => moment(at_ms, zone, state, postal),
        each if each.len() == count => {
            let located = crate::rules::Located::parse(each.iter().copied())
                .map_err(|(index, error)| format!("locations[{index}]: {error}"))?;
            let mut moment = moment(at_ms, "", "", "")?;
            moment.each = Some(located);
            Ok(moment)
        }
        each => Err(format!(
            "{} locations for {count} numbers: send none, one for every number, or one per number in batch order",
            each.len()
        )),
    }
}

/// Now, without hints (the SIP dip's checks).
pub fn now_moment() -> Moment {
    Moment {
        at_ms: crate::server::state::now_ms(),
        hints: Hints::default(),
        each: None,
    }
}

impl<'a> CheckOutcome<'a> {
    pub fn allowed(&self) -> bool {
        self.reasons.is_empty()
    }

    /// Names of the block sets that hold the number.
    pub fn matched_sets(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.proof.matched(self.matched)
    }
}

/// How a number's answer is counted: invalid input, else ALLOW when no reason applies.
#[inline]
pub fn counted(valid: bool, reasons: Reasons) -> Counted {
    match (valid, reasons.is_empty()) {
        (false, _) => Counted::Invalid,
        (true, true) => Counted::Allow,
        (true, false) => Counted::Block,
    }
}

/// Counts the answers of one request (whether each number was valid, and its reasons) in the
/// verdict and reason counters of `api`, flushed once per request.
pub fn count_verdicts(api: Api, answers: impl IntoIterator<Item = (bool, Reasons)>) {
    let mut tally = Tally::default();
    for (valid, reasons) in answers {
        tally.add(counted(valid, reasons), reasons);
    }
    tally.flush(api);
}

/// Answers for many numbers of one tenant and campaign.
#[derive(Clone, Debug)]
pub struct BatchOutcome<'a> {
    pub decisions: Vec<Decision>,
    pub proof: Proof<'a>,
    pub warnings: Vec<String>,
    pub tenant: &'a str,
    pub campaign: &'a str,
}

impl State {
    /// Takes `numbers` tokens from the tenant's rate limit, if it has one. Lock-free.
    fn charge(&self, tenant: &str, numbers: usize) -> Result<(), CheckError> {
        if self.rate_limits.is_empty() {
            return Ok(());
        }
        let Some(bucket) = self.rate_limits.get(tenant) else {
            return Ok(());
        };
        match bucket.try_take(numbers as u64) {
            Ok(()) => Ok(()),
            Err(RateRefusal::Later { retry_after }) => Err(CheckError::RateLimited {
                tenant: tenant.to_owned(),
                rate: bucket.rate,
                burst: bucket.burst,
                retry_after,
            }),
            Err(RateRefusal::TooLarge) => Err(CheckError::OverBurst {
                tenant: tenant.to_owned(),
                numbers,
                burst: bucket.burst,
            }),
        }
    }

    /// One number given as text: E.164 on the hot path, national formats with the tenant's
    /// region.
    pub fn check_text(
        &self,
        tenant: &str,
        campaign: &str,
        number: &str,
        moment: Moment,
    ) -> Result<CheckOutcome<'_>, CheckError> {
        let (found_tenant, found_campaign) = self.policy.resolve(tenant, campaign)?;
        self.charge(&found_tenant.name, 1)?;
        let at_ms = moment.at_ms;
        let sets = self.sets.load();
        let today = Day::today();
        let view = self
            .policy
            .campaign_state(
                found_campaign,
                &sets,
                &self.overlays,
                today,
                self.fleet_lagging(),
            )
            .at(moment);
        let mut decision = view.decide(found_tenant.parser.parse_fast(number), today);
        let attempts =
            self.attempt_budget(&found_tenant.name, found_campaign, decision.number, at_ms);
        if let Some(budget) = attempts.filter(|b| !b.granted) {
            decision.reasons.insert(Reason::AttemptLimit);
            decision.next_allowed_at_ms = Some(
                decision
                    .next_allowed_at_ms
                    .unwrap_or(0)
                    .max(budget.next_allowed_at_ms),
            );
        }
        Ok(CheckOutcome {
            attempts,
            reasons: decision.reasons,
            matched: decision.matched,
            number: decision.number,
            next_allowed_at_ms: decision.next_allowed_at_ms,
            proof: self.proof(found_campaign, &view.sets),
            warnings: view.warnings,
            tenant: &found_tenant.name,
            campaign: &found_campaign.name,
        })
    }

    /// A single check's view of the campaign's attempt caps (nothing reserved): `None` without
    /// caps, for an invalid number, or without a key to fingerprint with. One `DashMap` read
    /// per counter; an empty book answers without any.
    fn attempt_budget(
        &self,
        tenant: &str,
        campaign: &crate::policy::Campaign,
        number: Option<Number>,
        at_ms: i64,
    ) -> Option<crate::rules::attempts::Decision> {
        let (caps, number) = (campaign.attempts.as_ref()?, number?);
        let key = self.attempt_key(tenant)?;
        let counter = crate::store::attempts::CounterKey {
            tenant: tenant.to_owned(),
            scope: caps.scope.clone(),
            fingerprint: key.fingerprint(number),
        };
        Some(self.attempts.peek(&counter, &caps.rules, at_ms))
    }

    /// Many numbers: text ones parsed with the tenant's region, then packed E.164 values.
    pub fn check_many(
        &self,
        tenant: &str,
        campaign: &str,
        texts: &[String],
        e164: &[u64],
        moment: Moment,
    ) -> Result<(BatchOutcome<'_>, Vec<Parsed>), CheckError> {
        let (found_tenant, found_campaign) = self.policy.resolve(tenant, campaign)?;
        self.charge(&found_tenant.name, texts.len() + e164.len())?;
        let sets = self.sets.load();
        let today = Day::today();
        let view = self
            .policy
            .campaign_state(
                found_campaign,
                &sets,
                &self.overlays,
                today,
                self.fleet_lagging(),
            )
            .at(moment);
        // A rare invalid number pays an allocation so that every slot stays small.
        let mut numbers: Vec<Parsed> = Vec::with_capacity(texts.len() + e164.len());
        numbers.extend(
            texts
                .iter()
                .map(|text| found_tenant.parser.parse_fast(text).map_err(Box::new)),
        );
        Number::extend_from_u64(e164, &mut numbers, Box::new);
        let mut decisions = Vec::with_capacity(numbers.len());
        let stats = view.decide_batch(&numbers, today, &mut decisions);
        let metrics = crate::metrics::metrics();
        metrics.filter_hits.increment(stats.filter_hits);
        metrics
            .filter_false_positives
            .increment(stats.filter_hits - stats.confirmed);
        Ok((
            BatchOutcome {
                decisions,
                proof: self.proof(found_campaign, &view.sets),
                warnings: view.warnings,
                tenant: &found_tenant.name,
                campaign: &found_campaign.name,
            },
            numbers,
        ))
    }

    fn proof<'a>(
        &'a self,
        campaign: &'a Campaign,
        loaded: &[Option<&crate::policy::LoadedSet>],
    ) -> Proof<'a> {
        Proof {
            definitions: &self.policy.sets,
            consulted: campaign.consulted(),
            versions: loaded
                .iter()
                .map(|slot| slot.map_or(0, |s| s.set.version()))
                .collect(),
        }
    }
}
