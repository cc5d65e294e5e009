//! Prometheus metrics: every handle is built once, so the hot path only bumps atomics.
//!
//! Labels are bounded: API (grpc, http, sip), verdict, reason, and configured set names —
//! never a number, never a free-form tenant string. Latencies are histograms with explicit
//! buckets (25 µs to 10 ms), so they aggregate across daemons. The exporter is rendered on the
//! HTTP plane's `/metrics`.

use crate::policy::Reason;
use crate::store::FailureKind;
use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Which edge answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Grpc = 0,
    Http = 1,
    Sip = 2,
}

impl Api {
    const ALL: [Api; 3] = [Api::Grpc, Api::Http, Api::Sip];
    fn name(self) -> &'static str {
        match self {
            Api::Grpc => "grpc",
            Api::Http => "http",
            Api::Sip => "sip",
        }
    }
}

/// Why a request was refused before it was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shed {
    /// `server.max_in_flight` requests were already in flight.
    Overload = 0,
    /// The tenant is over its `max_checks_per_second`.
    RateLimit = 1,
}

const SHED_REASONS: [&str; 2] = ["overload", "rate_limit"];

/// Why a snapshot file was refused (the `reason` label of refused reloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Unreadable, bad checksum, truncated, a structure that does not validate, wrong key.
    Corrupt = 0,
    /// Its header names another set, or another kind or key scheme than the config says.
    WrongSet = 1,
    /// The version in its file name is not the version in its header.
    NameMismatch = 2,
    /// Far fewer keys than the version in force (`min_keys_ratio`).
    TooFewKeys = 3,
}

impl Refused {
    pub const ALL: [Refused; 4] = [
        Refused::Corrupt,
        Refused::WrongSet,
        Refused::NameMismatch,
        Refused::TooFewKeys,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refused::Corrupt => "corrupt",
            Refused::WrongSet => "wrong_set",
            Refused::NameMismatch => "name_mismatch",
            Refused::TooFewKeys => "too_few_keys",
        }
    }
}

/// Per-number verdict as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    Allow = 0,
    Block = 1,
    Invalid = 2,
}

const VERDICTS: [&str; 3] = ["allow", "block", "invalid"];
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_2, 0.000_3, 0.000_5, 0.000_75, 0.001, 0.002, 0.003, 0.005,
    0.007_5, 0.01, 0.025,
];
const BATCH_BUCKETS: [f64; 10] = [
    1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
];
const SLOW_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0,
];
const ERASURE_BUCKETS: [f64; 10] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0,
];

pub struct Metrics {
    handle: PrometheusHandle,
    checks: [[Counter; 3]; 3],
    reasons: [[Counter; Reason::ALL.len()]; 3],
    latency: [Histogram; 3],
    pub batch_size: Histogram,
    pub filter_hits: Counter,
    pub filter_false_positives: Counter,
    pub reloads_ok: Counter,
    /// Refused snapshot files, by [`Refused`] reason.
    pub reloads_refused: [Counter; 4],
    pub journal_appends: Counter,
    pub journal_bytes_written: Counter,
    pub journal_fsync: Histogram,
    /// Failed journal writes, by [`FailureKind`] (index = discriminant).
    pub journal_errors: [Counter; 3],
    pub mutations: Counter,
    pub compactions_ok: Counter,
    pub compactions_failed: Counter,
    pub compaction_duration: Histogram,
    pub erasure_in_force: Histogram,
    pub erasure_complete: Histogram,
    pub sip_malformed: Counter,
    shed: [[Counter; 2]; 3],
    /// SIP datagrams dropped (0) and connections closed (1) from sources not in
    /// `sip.allowed_sources`.
    pub sip_source_refused: [Counter; 2],
    /// Failed accepts on any listener (each followed by a back-off pause).
    pub accept_errors: Counter,
    /// Connections closed at accept over a connection cap, by plane ([`PLANES`] order).
    pub connections_refused: [Counter; 4],
}

/// Listener planes with connection caps, in the order of `connections_refused`.
/// Fleet mode's handles (`crate::fleet`), built when a fleet daemon starts: a single host
/// exports none of these series, so fleet alerts never fire on it.
pub struct FleetMetrics {
    /// The stream sequence this host has applied.
    pub fleet_applied_seq: Gauge,
    /// Messages of the stream this host has not applied yet (as last seen).
    pub fleet_lag_messages: Gauge,
    /// Seconds since this host last confirmed it was caught up with the stream.
    pub fleet_lag_seconds: Gauge,
    /// Publish to JetStream until its ack (an admin call's share of waiting on the quorum).
    pub fleet_publish: Histogram,
    /// Messages JetStream delivered again (not acked in time, or a restart).
    pub fleet_redeliveries: Counter,
    /// 1 while connected to a NATS server, else 0.
    pub fleet_connected: Gauge,
    /// 1 while checks answer FLEET_LAG (lagging past `fleet.max_lag_seconds`), else 0.
    pub fleet_lagging: Gauge,
    /// 1 while the follower refuses a stream that is not the one this host applied.
    pub fleet_stream_replaced: Gauge,
    /// 1 while a set's version in force here has other bytes than the fleet's head of that
    /// version.
    pub fleet_set_diverged: Gauge,
}

static FLEET: OnceLock<FleetMetrics> = OnceLock::new();

/// The fleet's metrics, built (and described) on first use.
pub fn fleet_metrics() -> &'static FleetMetrics {
    FLEET.get_or_init(|| {
        metrics();
        describe_fleet();
        FleetMetrics {
            fleet_applied_seq: gauge!("suppressd_fleet_applied_sequence"),
            fleet_lag_messages: gauge!("suppressd_fleet_lag_messages"),
            fleet_lag_seconds: gauge!("suppressd_fleet_lag_seconds"),
            fleet_publish: histogram!("suppressd_fleet_publish_seconds"),
            fleet_redeliveries: counter!("suppressd_fleet_redeliveries_total"),
            fleet_connected: gauge!("suppressd_fleet_connected"),
            fleet_lagging: gauge!("suppressd_fleet_lagging"),
            fleet_stream_replaced: gauge!("suppressd_fleet_stream_replaced"),
            fleet_set_diverged: gauge!("suppressd_fleet_set_diverged"),
        }
    })
}

/// What an attempt request asked, the `request` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptRequest {
    Reserve = 0,
    Commit = 1,
    Release = 2,
    Outcome = 3,
}

const ATTEMPT_REQUESTS: [&str; 4] = ["reserve", "commit", "release", "outcome"];

/// How an attempt request was answered, the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// A reservation granted.
    Granted = 0,
    /// A reservation refused with ATTEMPT_LIMIT.
    Refused = 1,
    /// A commit, release or outcome applied.
    Done = 2,
    /// A retry of a request already applied: answered from the book, nothing changed.
    Duplicate = 3,
    /// Refused before it was applied (invalid, unknown call, conflict, journal or fleet).
    Error = 4,
}

/// The `outcome` label of recorded outcomes, in the order of `rules::attempts::Outcome::ALL`
/// (a test beside the caller holds the two lists equal; metrics may not import rules).
pub const ATTEMPT_OUTCOMES: [&str; 4] = ["no_contact", "contact", "refusal", "opt_out"];

const ATTEMPT_RESULTS: [&str; 5] = ["granted", "refused", "done", "duplicate", "error"];

/// Attempt caps' handles, built on first use: a daemon whose campaigns count no attempts
/// exports none of these series.
pub struct AttemptMetrics {
    requests: [[Counter; 5]; 4],
    outcomes: [Counter; 4],
}

static ATTEMPTS: OnceLock<AttemptMetrics> = OnceLock::new();

pub fn attempt_metrics() -> &'static AttemptMetrics {
    ATTEMPTS.get_or_init(|| {
        metrics();
        describe_counter!(
            "suppressd_attempt_requests_total",
            "Attempt requests, by request (reserve, commit, release, outcome) and result (granted, refused, done, duplicate, error)."
        );
        describe_counter!(
            "suppressd_attempt_outcomes_total",
            "Call outcomes recorded, by outcome (no_contact, contact, refusal, opt_out); retries not counted."
        );
        describe_gauge!(
            "suppressd_attempt_calls",
            "Calls the attempt book holds (reserved, committed or with an outcome, until no rule can count them)."
        );
        AttemptMetrics {
            requests: ATTEMPT_REQUESTS.map(|request| {
                ATTEMPT_RESULTS.map(|result| {
                    counter!("suppressd_attempt_requests_total", "request" => request, "result" => result)
                })
            }),
            outcomes: ATTEMPT_OUTCOMES
                .map(|outcome| counter!("suppressd_attempt_outcomes_total", "outcome" => outcome)),
        }
    })
}

impl AttemptMetrics {
    pub fn request(&self, request: AttemptRequest, result: AttemptResult) {
        self.requests[request as usize][result as usize].increment(1);
    }

    /// An outcome recorded, by its index in [`ATTEMPT_OUTCOMES`].
    pub fn outcome(&self, index: usize) {
        if let Some(counter) = self.outcomes.get(index) {
            counter.increment(1);
        }
    }
}

pub const PLANES: [&str; 4] = ["grpc", "http", "admin", "sip"];

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics, installing the Prometheus recorder on first use.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(install)
}

fn install() -> Metrics {
    let builder = PrometheusBuilder::new();
    let builder = builder
        .set_buckets_for_metric(
            Matcher::Full("suppressd_check_duration_seconds".into()),
            &LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("suppressd_batch_size".into()), &BATCH_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("suppressd_journal_fsync_seconds".into()),
                &SLOW_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("suppressd_compaction_duration_seconds".into()),
                &SLOW_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("suppressd_fleet_publish_seconds".into()),
                &SLOW_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Prefix("suppressd_erasure_".into()),
                &ERASURE_BUCKETS,
            )
        })
        .expect("bucket lists are non-empty constants");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    // Another recorder may exist (a test harness); ours still renders what it records when
    // it is the global one, and the handles below are harmless otherwise.
    let _ = metrics::set_global_recorder(recorder);
    describe();
    let checks = Api::ALL.map(|api| {
        VERDICTS.map(
            |verdict| counter!("suppressd_checks_total", "api" => api.name(), "verdict" => verdict),
        )
    });
    // Label form of the one list of reason names (`Reason::label`), in lower case.
    let reasons = Api::ALL.map(|api| {
        Reason::ALL.map(|reason| counter!("suppressd_check_reasons_total", "api" => api.name(), "reason" => reason.label().to_ascii_lowercase()))
    });
    let latency =
        Api::ALL.map(|api| histogram!("suppressd_check_duration_seconds", "api" => api.name()));
    let build = gauge!("suppressd_build_info", "version" => env!("CARGO_PKG_VERSION"), "git_sha" => env!("SUPPRESSD_GIT_SHA"));
    build.set(1.0);
    Metrics {
        handle,
        checks,
        reasons,
        latency,
        batch_size: histogram!("suppressd_batch_size"),
        filter_hits: counter!("suppressd_filter_hits_total"),
        filter_false_positives: counter!("suppressd_filter_false_positives_total"),
        reloads_ok: counter!("suppressd_reloads_total", "result" => "loaded"),
        reloads_refused: Refused::ALL.map(|reason| {
            counter!("suppressd_reloads_total", "result" => "refused", "reason" => reason.name())
        }),
        journal_appends: counter!("suppressd_journal_appends_total"),
        journal_bytes_written: counter!("suppressd_journal_written_bytes_total"),
        journal_fsync: histogram!("suppressd_journal_fsync_seconds"),
        journal_errors: FailureKind::ALL
            .map(|kind| counter!("suppressd_journal_errors_total", "kind" => kind.name())),
        mutations: counter!("suppressd_mutations_total"),
        compactions_ok: counter!("suppressd_compactions_total", "result" => "ok"),
        compactions_failed: counter!("suppressd_compactions_total", "result" => "failed"),
        compaction_duration: histogram!("suppressd_compaction_duration_seconds"),
        erasure_in_force: histogram!("suppressd_erasure_in_force_seconds"),
        erasure_complete: histogram!("suppressd_erasure_complete_seconds"),
        sip_malformed: counter!("suppressd_sip_malformed_total"),
        shed: Api::ALL.map(|api| {
            SHED_REASONS.map(|reason| {
                counter!("suppressd_requests_shed_total", "api" => api.name(), "reason" => reason)
            })
        }),
        sip_source_refused: ["udp", "tcp"].map(
            |transport| counter!("suppressd_sip_source_refused_total", "transport" => transport),
        ),
        accept_errors: counter!("suppressd_accept_errors_total"),
        connections_refused: PLANES
            .map(|plane| counter!("suppressd_connections_refused_total", "plane" => plane)),
    }
}

fn describe() {
    describe_counter!(
        "suppressd_checks_total",
        "Numbers checked, by API and verdict."
    );
    describe_counter!(
        "suppressd_check_reasons_total",
        "Reasons given for BLOCK verdicts, by API and reason."
    );
    describe_histogram!(
        "suppressd_check_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer one request (a whole batch for batch requests), by API."
    );
    describe_histogram!("suppressd_batch_size", "Numbers per batch request.");
    describe_counter!(
        "suppressd_filter_hits_total",
        "Keys the binary fuse filters let through to the exact tables."
    );
    describe_counter!(
        "suppressd_filter_false_positives_total",
        "Filter hits the exact tables turned down (the observed false-positive count)."
    );
    describe_counter!(
        "suppressd_reloads_total",
        "Snapshot files loaded or refused by reloads; refused ones by reason (corrupt, wrong_set, name_mismatch, too_few_keys)."
    );
    describe_gauge!(
        "suppressd_set_keys",
        "Keys in the snapshot in force, by set."
    );
    describe_gauge!(
        "suppressd_set_bytes",
        metrics::Unit::Bytes,
        "Memory of the lookup structures of the snapshot in force, by set."
    );
    describe_gauge!(
        "suppressd_set_version",
        "Version of the snapshot in force, by set (0: none loaded)."
    );
    describe_gauge!(
        "suppressd_set_loaded",
        "1 when a snapshot of the set is loaded, else 0."
    );
    describe_gauge!(
        "suppressd_set_source_date_seconds",
        metrics::Unit::Seconds,
        "Issue date of the source (registry copy) of the snapshot in force, unix seconds."
    );
    describe_gauge!(
        "suppressd_set_age_seconds",
        metrics::Unit::Seconds,
        "Age of the source of the snapshot in force (now minus source date)."
    );
    describe_gauge!(
        "suppressd_set_loaded_timestamp_seconds",
        metrics::Unit::Seconds,
        "When the snapshot in force was loaded, unix seconds."
    );
    describe_gauge!(
        "suppressd_overlay_entries",
        "Mutations in force through the overlay and not yet compacted, by set."
    );
    describe_counter!(
        "suppressd_journal_appends_total",
        "Mutations appended to the mutation journal and fsynced (the audit log's and ledger's writes are not counted here)."
    );
    describe_counter!(
        "suppressd_journal_written_bytes_total",
        metrics::Unit::Bytes,
        "Bytes appended to the journal."
    );
    describe_gauge!(
        "suppressd_journal_bytes",
        metrics::Unit::Bytes,
        "Size of the journal segments on disk."
    );
    describe_histogram!(
        "suppressd_journal_fsync_seconds",
        metrics::Unit::Seconds,
        "Time of one group-commit write and fsync of the mutation journal."
    );
    describe_counter!(
        "suppressd_journal_errors_total",
        "Failed group commits of the journal, audit log or ledger (one append file format), by \
         kind: no_space (ENOSPC, EDQUOT), fsync (the fsync failed), io (any other write error). \
         A failed journal group fails its mutations (UNAVAILABLE); a failed audit or ledger \
         append is retried by the recorder; the next append retries."
    );
    describe_counter!(
        "suppressd_mutations_total",
        "Mutations acknowledged (duplicates excluded)."
    );
    describe_counter!("suppressd_compactions_total", "Compactions, by result.");
    describe_histogram!(
        "suppressd_compaction_duration_seconds",
        metrics::Unit::Seconds,
        "Duration of a compaction."
    );
    describe_gauge!(
        "suppressd_compaction_last_success_timestamp_seconds",
        metrics::Unit::Seconds,
        "When a compaction last succeeded, unix seconds."
    );
    describe_gauge!(
        "suppressd_erasures_pending",
        "Erasures in force but not yet compacted (files may still hold the number)."
    );
    describe_histogram!(
        "suppressd_erasure_in_force_seconds",
        metrics::Unit::Seconds,
        "Erasure request to in force (journalled, fsynced, in the overlay)."
    );
    describe_histogram!(
        "suppressd_erasure_complete_seconds",
        metrics::Unit::Seconds,
        "Erasure request to complete (no file holds the number)."
    );
    describe_gauge!(
        "suppressd_ready",
        "1 once every set the policy needs is loaded."
    );
    describe_gauge!(
        "suppressd_set_info",
        "1 per configured set, labelled with its kind and block reason (national_registry sets are the registries the freshness rule applies to)."
    );
    describe_gauge!(
        "suppressd_overlay_oldest_mutation_timestamp_seconds",
        metrics::Unit::Seconds,
        "When the oldest uncompacted mutation was made, unix seconds (0 when the overlays are empty)."
    );
    describe_gauge!(
        "suppressd_start_time_seconds",
        metrics::Unit::Seconds,
        "When the daemon started, unix seconds."
    );
    describe_gauge!(
        "suppressd_build_info",
        "Build information: version and git commit."
    );
    describe_counter!(
        "suppressd_sip_malformed_total",
        "SIP messages that could not be parsed (answered 400 or dropped)."
    );
    describe_counter!(
        "suppressd_requests_shed_total",
        "Check requests refused before any lookup, by API and reason: overload (server.max_in_flight requests already in flight) or rate_limit (the tenant's max_checks_per_second). Answered RESOURCE_EXHAUSTED, HTTP 429 or SIP 503; never queued."
    );
    describe_counter!(
        "suppressd_sip_source_refused_total",
        "SIP datagrams dropped and TCP connections closed because their source is not in sip.allowed_sources, by transport."
    );
    describe_counter!(
        "suppressd_accept_errors_total",
        "Failed accepts on any listener (out of file descriptors, mostly); each is followed by a back-off pause."
    );
    describe_counter!(
        "suppressd_connections_refused_total",
        "Connections closed at accept because the plane's connection cap (in all, or per source address) was reached, by plane."
    );
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Periodic housekeeping of the exporter (histogram buckets, idle entries).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    #[inline]
    pub fn count(&self, api: Api, verdict: Counted, numbers: u64) {
        self.checks[api as usize][verdict as usize].increment(numbers);
    }

    #[inline]
    pub fn reasons(&self, api: Api, reasons: crate::policy::Reasons, numbers: u64) {
        for reason in reasons.iter() {
            self.reasons[api as usize][reason as usize].increment(numbers);
        }
    }

    #[inline]
    pub fn shed(&self, api: Api, reason: Shed) {
        self.shed[api as usize][reason as usize].increment(1);
    }

    #[inline]
    pub fn latency(&self, api: Api, started: std::time::Instant) {
        self.latency[api as usize].record(started.elapsed().as_secs_f64());
    }
}

/// The SIP dip's transports (label `transport` of the SIP metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipTransport {
    Udp = 0,
    Tcp = 1,
}

const SIP_TRANSPORTS: [&str; 2] = ["udp", "tcp"];

/// What the dip did with one message it read (label `outcome` of
/// `suppressd_sip_messages_total`): every message read counts exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SipOutcome {
    /// 302: the number may be called.
    Redirected = 0,
    /// 603 or 608: the number must not be called.
    Blocked = 1,
    /// 503 without Retry-After: a set the campaign needs is not loaded.
    Unavailable = 2,
    /// 503 with Retry-After: refused by the in-flight limit or the tenant's rate.
    Busy = 3,
    /// 403, or 500: refused (unknown or unbound tenant or campaign).
    Refused = 4,
    /// 200 to OPTIONS.
    Options = 5,
    /// 405.
    NotAllowed = 6,
    /// An ACK, absorbed without an answer.
    AckAbsorbed = 7,
    /// Malformed, answered 400.
    MalformedAnswered = 8,
    /// Malformed, dropped (too little to answer, or too large).
    MalformedDropped = 9,
    /// A SIP response (the dip sends no requests): ignored.
    ResponseIgnored = 10,
}

const SIP_OUTCOMES: [&str; 11] = [
    "redirected",
    "blocked",
    "unavailable",
    "busy",
    "refused",
    "options",
    "not_allowed",
    "ack_absorbed",
    "malformed_answered",
    "malformed_dropped",
    "response_ignored",
];

/// The SIP dip's handles, built once (after the recorder, so they record into it).
pub struct SipMetrics {
    messages: [[Counter; 11]; 2],
    send_errors: [Counter; 2],
}

static SIP_METRICS: OnceLock<SipMetrics> = OnceLock::new();

/// The SIP dip's metrics (`suppressd_sip_*`); malformed messages and refused sources also
/// count in [`Metrics::sip_malformed`] and [`Metrics::sip_source_refused`].
pub fn sip_metrics() -> &'static SipMetrics {
    SIP_METRICS.get_or_init(|| {
        metrics();
        describe_counter!(
            "suppressd_sip_messages_total",
            "SIP messages (datagrams or TCP frames) read from allowed sources, by transport and \
             outcome: redirected (302), blocked (603/608), unavailable (503, a set not loaded), \
             busy (503 with Retry-After, a limit), refused (403), options, not_allowed (405), \
             ack_absorbed, malformed_answered (400), malformed_dropped, response_ignored."
        );
        describe_counter!(
            "suppressd_sip_send_errors_total",
            "SIP answers that could not be sent (UDP send or TCP write failed), by transport."
        );
        SipMetrics {
            messages: SIP_TRANSPORTS.map(|transport| {
                SIP_OUTCOMES.map(|outcome| {
                    counter!("suppressd_sip_messages_total", "transport" => transport, "outcome" => outcome)
                })
            }),
            send_errors: SIP_TRANSPORTS
                .map(|transport| counter!("suppressd_sip_send_errors_total", "transport" => transport)),
        }
    })
}

impl SipMetrics {
    #[inline]
    pub fn message(&self, transport: SipTransport, outcome: SipOutcome) {
        self.messages[transport as usize][outcome as usize].increment(1);
        if matches!(
            outcome,
            SipOutcome::MalformedAnswered | SipOutcome::MalformedDropped
        ) {
            metrics().sip_malformed.increment(1);
        }
    }

    #[inline]
    pub fn send_error(&self, transport: SipTransport) {
        self.send_errors[transport as usize].increment(1);
    }

    /// Messages from a source not in the source list: dropped (UDP) or closed at accept (TCP).
    #[inline]
    pub fn source_refused(&self, transport: SipTransport) {
        metrics().sip_source_refused[transport as usize].increment(1);
    }
}

/// Counts of one request's numbers, flushed to the counters once (not once per number).
#[derive(Default)]
pub struct Tally {
    verdicts: [u64; 3],
    reasons: [u64; Reason::ALL.len()],
}

impl Tally {
    #[inline]
    pub fn add(&mut self, verdict: Counted, reasons: crate::policy::Reasons) {
        self.verdicts[verdict as usize] += 1;
        if !reasons.is_empty() {
            for reason in reasons.iter() {
                self.reasons[reason as usize] += 1;
            }
        }
    }

    pub fn flush(&self, api: Api) {
        let metrics = metrics();
        for (index, &count) in self.verdicts.iter().enumerate() {
            if count > 0 {
                metrics.checks[api as usize][index].increment(count);
            }
        }
        for (index, &count) in self.reasons.iter().enumerate() {
            if count > 0 {
                metrics.reasons[api as usize][index].increment(count);
            }
        }
    }
}

/// Fleet mode's series (exported only by daemons with `[fleet]`, where they are set).
fn describe_fleet() {
    describe_gauge!(
        "suppressd_fleet_applied_sequence",
        "Fleet stream sequence this host has journalled and applied."
    );
    describe_gauge!(
        "suppressd_fleet_lag_messages",
        "Fleet stream messages not yet applied by this host, as last seen."
    );
    describe_gauge!(
        "suppressd_fleet_lag_seconds",
        metrics::Unit::Seconds,
        "Seconds since this host last confirmed it had applied the whole fleet stream."
    );
    describe_histogram!(
        "suppressd_fleet_publish_seconds",
        metrics::Unit::Seconds,
        "Publish of one mutation to the fleet stream until JetStream acknowledged it."
    );
    describe_counter!(
        "suppressd_fleet_redeliveries_total",
        "Fleet stream messages delivered to this host more than once."
    );
    describe_gauge!(
        "suppressd_fleet_connected",
        "1 while this host is connected to a NATS server of the fleet, else 0."
    );
    describe_gauge!(
        "suppressd_fleet_lagging",
        "1 while this host lags past fleet.max_lag_seconds (checks answer FLEET_LAG, health NOT_SERVING)."
    );
    describe_gauge!(
        "suppressd_fleet_stream_replaced",
        "1 while this host refuses the fleet stream because it is not the one it applied (deleted and made again)."
    );
    describe_gauge!(
        "suppressd_fleet_set_diverged",
        "1 while a set's version in force on this host has other bytes than the fleet's head of the same version (checks answer FLEET_LAG until the host is re-seeded)."
    );
}
