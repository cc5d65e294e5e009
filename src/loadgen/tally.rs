//! What the workers count while a run goes: verdicts, latency and send-lag histograms, errors
//! by code with a first example, and suppress mode's verified mutations and violations.
//!
//! Honest figures: a non-OK gRPC status, a timeout or a malformed answer is an error, counted
//! by code and never hidden; verdicts are counted, so a run proves the daemon answered.
//! One tally per connection, merged at the end. Never prints: [`super::report`] does.

use super::payloads::Payload;
use crate::proto;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tonic::{Code, Status};

/// Error key for answers that arrived but are wrong (missing verdicts, wrong batch id).
pub(super) const BAD_RESPONSE: &str = "BAD_RESPONSE";

/// Verdict counts over every number answered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdicts {
    pub allow: u64,
    pub block: u64,
    pub invalid: u64,
    /// VERDICT_UNSPECIFIED: what Ping answers (no lookup).
    pub unspecified: u64,
    /// Values outside the enum.
    pub other: u64,
}

impl Verdicts {
    pub(super) fn count(&mut self, verdict: i32) {
        self.add(verdict, 1);
    }

    pub(super) fn add(&mut self, verdict: i32, count: u64) {
        let slot = match proto::Verdict::try_from(verdict) {
            Ok(proto::Verdict::Allow) => &mut self.allow,
            Ok(proto::Verdict::Block) => &mut self.block,
            Ok(proto::Verdict::Invalid) => &mut self.invalid,
            Ok(proto::Verdict::Unspecified) => &mut self.unspecified,
            Err(_) => &mut self.other,
        };
        *slot += count;
    }

    pub(super) fn merge(&mut self, other: &Verdicts) {
        self.allow += other.allow;
        self.block += other.block;
        self.invalid += other.invalid;
        self.unspecified += other.unspecified;
        self.other += other.other;
    }
}

/// Measured counts of one connection's workers (one lock per answer: cheap and uncontended with
/// the default single thread; one histogram per connection rather than per worker keeps memory
/// flat at high concurrency).
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    pub(super) lag: Histogram<u64>,
    pub(super) ok: u64,
    pub(super) checks: u64,
    pub(super) present: u64,
    pub(super) verdicts: Verdicts,
    pub(super) errors: BTreeMap<&'static str, u64>,
    pub(super) error_examples: BTreeMap<&'static str, String>,
    pub(super) last_done: Option<Instant>,
    /// Suppress mode: acknowledged mutations whose number a Check then answered BLOCK
    /// INTERNAL_DNC, and the time from the ack to that answer.
    pub(super) verified: u64,
    pub(super) ack_to_enforced: Histogram<u64>,
    /// Suppress mode: acknowledged mutations a Check then answered ALLOW (warm-up included).
    pub(super) violations: u64,
    pub(super) violation_example: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns .. 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `time` in nanoseconds into one of the tally's histograms (at least 1 ns, their
/// lowest value; over 100 s saturates).
pub(super) fn record_time(histogram: &mut Histogram<u64>, time: Duration) {
    histogram.saturating_record(time.as_nanos().max(1) as u64);
}

/// The example message of a request that got no answer within `--timeout`.
pub(super) fn no_answer(timeout: Duration) -> String {
    format!("no answer within {timeout:?} (loadgen --timeout)")
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            latency: histogram(),
            lag: histogram(),
            ok: 0,
            checks: 0,
            present: 0,
            verdicts: Verdicts::default(),
            errors: BTreeMap::new(),
            error_examples: BTreeMap::new(),
            last_done: None,
            verified: 0,
            ack_to_enforced: histogram(),
            violations: 0,
            violation_example: None,
        }
    }

    pub(super) fn done(&mut self, at: Instant) {
        self.last_done = Some(self.last_done.map_or(at, |last| last.max(at)));
    }

    /// A check request answered OK and as expected.
    pub(super) fn success(
        &mut self,
        payload: &Payload,
        latency: Duration,
        verdicts: &Verdicts,
        at: Instant,
    ) {
        let (numbers, present) = (payload.numbers.into(), payload.present.into());
        self.answered(numbers, present, latency, verdicts, at);
    }

    /// A Suppress acknowledged as expected (one number); `verdicts` of the Check that verified
    /// it, if any.
    pub(super) fn acknowledged(&mut self, latency: Duration, verdicts: &Verdicts, at: Instant) {
        self.answered(1, 0, latency, verdicts, at);
    }

    fn answered(
        &mut self,
        numbers: u64,
        present: u64,
        latency: Duration,
        verdicts: &Verdicts,
        at: Instant,
    ) {
        self.ok += 1;
        self.checks += numbers;
        self.present += present;
        self.verdicts.merge(verdicts);
        record_time(&mut self.latency, latency);
        self.done(at);
    }

    pub(super) fn error(
        &mut self,
        code: &'static str,
        message: impl FnOnce() -> String,
        count: u64,
        at: Instant,
    ) {
        *self.errors.entry(code).or_default() += count;
        self.error_examples.entry(code).or_insert_with(message);
        self.done(at);
    }

    /// `count` requests without an answer within `timeout`.
    pub(super) fn timed_out(&mut self, timeout: Duration, count: u64, at: Instant) {
        self.error("DEADLINE_EXCEEDED", || no_answer(timeout), count, at);
    }

    pub(super) fn status(&mut self, status: &Status, count: u64, at: Instant) {
        self.error(
            code_name(status.code()),
            || status.message().to_owned(),
            count,
            at,
        );
    }

    pub(super) fn merge(&mut self, other: &Tally) {
        self.latency
            .add(&other.latency)
            .expect("same histogram bounds");
        self.lag.add(&other.lag).expect("same histogram bounds");
        self.ok += other.ok;
        self.checks += other.checks;
        self.present += other.present;
        self.verdicts.merge(&other.verdicts);
        for (code, count) in &other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        for (code, example) in &other.error_examples {
            self.error_examples
                .entry(code)
                .or_insert_with(|| example.clone());
        }
        if let Some(at) = other.last_done {
            self.done(at);
        }
        self.verified += other.verified;
        self.ack_to_enforced
            .add(&other.ack_to_enforced)
            .expect("same histogram bounds");
        self.violations += other.violations;
        if self.violation_example.is_none() {
            self.violation_example = other.violation_example.clone();
        }
    }
}

/// The canonical gRPC name of a status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn histograms_merge_across_connections() {
        let mut a = Tally::new();
        let mut b = Tally::new();
        let payload = Payload {
            bytes: Arc::from(Vec::new()),
            numbers: 10,
            present: 1,
        };
        let now = Instant::now();
        a.success(
            &payload,
            Duration::from_micros(10),
            &Verdicts {
                allow: 10,
                ..Verdicts::default()
            },
            now,
        );
        b.success(
            &payload,
            Duration::from_micros(1000),
            &Verdicts {
                block: 10,
                ..Verdicts::default()
            },
            now + Duration::from_secs(1),
        );
        b.error("UNAVAILABLE", || "gone".into(), 2, now);
        a.merge(&b);
        assert_eq!((a.ok, a.checks, a.present), (2, 20, 2));
        assert_eq!(a.errors["UNAVAILABLE"], 2);
        assert_eq!(a.last_done, Some(now + Duration::from_secs(1)));
        // Nanoseconds, to 3 significant digits.
        let p50 = a.latency.value_at_quantile(0.5);
        assert!(a.latency.equivalent(p50, 10_000), "{p50}");
        let max = a.latency.max();
        assert!(a.latency.equivalent(max, 1_000_000), "{max}");
    }
}
