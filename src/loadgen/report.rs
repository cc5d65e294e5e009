//! What a run reports: the figures ([`Report`], also printed as one JSON object with
//! `--json`) and their human-readable text.
//!
//! Owns turning merged tallies into rates and microsecond percentiles, and the report's
//! wording (which scripts and BENCHMARKS.md quote: keep it stable). Never measures anything.

use super::args::Mode;
use super::tally::Verdicts;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub(super) fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| (ns as f64 / 1e3 * 10.0).round() / 10.0;
        Latency {
            min: us(histogram.min()),
            mean: (histogram.mean() / 1e3 * 10.0).round() / 10.0,
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
        }
    }
}

/// Everything a run measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub target: String,
    pub connections: usize,
    pub concurrency: usize,
    /// Stream mode: messages in flight per stream.
    pub pipeline: usize,
    pub threads: usize,
    /// Numbers per request.
    pub batch_size: usize,
    /// "e164" (packed integers) or "strings".
    pub encoding: &'static str,
    pub hit_ratio: f64,
    pub tenant: String,
    pub campaign: String,
    /// Open-loop rate asked for, requests per second; `None` for closed loop.
    pub rate: Option<f64>,
    pub warmup_s: f64,
    /// From the start of the measured phase to the last answer.
    pub elapsed_s: f64,
    /// Requests answered with OK.
    pub requests: u64,
    /// Requests that failed (any non-OK status, timeout or malformed answer).
    pub errors: u64,
    pub errors_by_code: BTreeMap<String, u64>,
    /// The first message seen for each code.
    pub error_examples: BTreeMap<String, String>,
    pub requests_per_s: f64,
    /// Numbers carried by OK requests (empty mode: sent to Ping, which looks nothing up).
    pub checks: u64,
    pub checks_per_s: f64,
    /// Of the checks, numbers known to be in the present set.
    pub present_sent: u64,
    pub verdicts: Verdicts,
    /// Per request, OK requests only; open loop: from the intended send time when late.
    pub latency_us: Latency,
    /// Open loop only: how late sends left against their schedule.
    pub schedule_lag_us: Option<Latency>,
    /// Suppress mode only: the mutations and their enforcement.
    pub mutations: Option<MutationFigures>,
}

/// What suppress mode measured beyond the Suppress calls themselves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MutationFigures {
    /// The admin plane the mutations went to.
    pub admin: String,
    /// Every Nth mutation was verified (0: none).
    pub verify_every: u64,
    /// Acknowledged mutations a Check right after the ack answered BLOCK INTERNAL_DNC.
    pub verified: u64,
    /// Acknowledged mutations a Check right after the ack answered ALLOW (any is a failure;
    /// counted during warm-up too).
    pub violations: u64,
    pub violation_example: Option<String>,
    /// From the acknowledgement to the BLOCK answer of the Check that followed it.
    pub ack_to_enforced_us: Latency,
    /// Request ids of this run are this prefix, '-', and a counter.
    pub request_id_prefix: String,
    /// The range fresh numbers came from.
    pub first_number: String,
    pub number_count: u64,
}

impl Report {
    /// True when every request succeeded, at least one did, and no acknowledged mutation was
    /// found not in force.
    pub fn clean(&self) -> bool {
        self.errors == 0
            && self.requests > 0
            && self.mutations.as_ref().is_none_or(|m| m.violations == 0)
    }
}

fn rate_text(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} k", value / 1e3)
    } else {
        format!("{value:.1} ")
    }
}

/// One line of percentiles, `label` first.
fn latency_line(out: &mut String, label: &str, l: &Latency) {
    let _ = writeln!(
        out,
        "{label} us p50 {} p90 {} p99 {} p99.9 {} max {} (min {}, mean {})",
        l.p50, l.p90, l.p99, l.p999, l.max, l.min, l.mean
    );
}

/// The human-readable report.
pub fn format_report(report: &Report) -> String {
    let mut out = String::new();
    let loop_kind = match report.rate {
        Some(rate) => format!("open loop at {}req/s", rate_text(rate)),
        None => "closed loop".into(),
    };
    let shape = if report.mode.batched() {
        format!(
            ", {} numbers/request ({})",
            report.batch_size, report.encoding
        )
    } else {
        String::new()
    };
    let pipeline = if report.mode == Mode::Stream {
        format!(
            " ({} streams x pipeline {})",
            report.concurrency / report.pipeline.max(1),
            report.pipeline
        )
    } else {
        String::new()
    };
    let target = match &report.mutations {
        Some(m) => format!("{} (checks: {})", m.admin, report.target),
        None => report.target.clone(),
    };
    let _ = writeln!(
        out,
        "loadgen {} -> {}: {} connections, concurrency {}{}, {} thread{}{}, hit ratio {}, {}",
        report.mode.name(),
        target,
        report.connections,
        report.concurrency,
        pipeline,
        report.threads,
        if report.threads == 1 { "" } else { "s" },
        shape,
        report.hit_ratio,
        loop_kind,
    );
    let _ = writeln!(
        out,
        "measured   {:.2} s after {:.2} s warm-up",
        report.elapsed_s, report.warmup_s
    );
    let _ = writeln!(
        out,
        "requests   {} ok, {} failed: {}req/s",
        report.requests,
        report.errors,
        rate_text(report.requests_per_s)
    );
    if let Some(m) = &report.mutations {
        let _ = writeln!(
            out,
            "mutations  {} acknowledged: {}mutations/s (one number each, request ids {}-N)",
            report.requests,
            rate_text(report.requests_per_s),
            m.request_id_prefix
        );
        let every = match m.verify_every {
            0 => "none".to_owned(),
            1 => "every mutation".to_owned(),
            n => format!("every {n}th"),
        };
        let _ = writeln!(
            out,
            "enforced   {} verified BLOCK INTERNAL_DNC right after the ack ({every}), {} VIOLATIONS (ALLOW after ack){}",
            m.verified,
            m.violations,
            m.violation_example
                .as_ref()
                .map(|x| format!(" first: {x}"))
                .unwrap_or_default()
        );
        latency_line(&mut out, "ack->block", &m.ack_to_enforced_us);
    }
    if report.mutations.is_none() {
        let _ = writeln!(
            out,
            "checks     {}: {}checks/s{}",
            report.checks,
            rate_text(report.checks_per_s),
            if report.mode == Mode::Empty {
                " (Ping: no lookup)"
            } else {
                ""
            }
        );
    }
    let v = &report.verdicts;
    let _ = write!(
        out,
        "{} ALLOW {} BLOCK {} INVALID {}",
        if report.mutations.is_some() {
            "verdicts   (checks after acks)"
        } else {
            "verdicts  "
        },
        v.allow,
        v.block,
        v.invalid
    );
    if v.unspecified > 0 {
        let _ = write!(out, " UNSPECIFIED {}", v.unspecified);
    }
    if v.other > 0 {
        let _ = write!(out, " OTHER {}", v.other);
    }
    if report.mutations.is_some() {
        let _ = writeln!(out);
    } else {
        let _ = writeln!(out, " (present numbers sent: {})", report.present_sent);
    }
    latency_line(&mut out, "latency", &report.latency_us);
    if let Some(lag) = &report.schedule_lag_us {
        let _ = writeln!(
            out,
            "send lag   us p50 {} p99 {} max {} (behind the open-loop schedule)",
            lag.p50, lag.p99, lag.max
        );
    }
    if report.errors_by_code.is_empty() {
        let _ = writeln!(out, "errors     none");
    } else {
        for (code, count) in &report.errors_by_code {
            let example = report
                .error_examples
                .get(code)
                .map(String::as_str)
                .unwrap_or("");
            let _ = writeln!(out, "errors     {code} {count} (first: {example:?})");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        Report {
            mode: Mode::Batch,
            target: "http://127.0.0.1:50151".into(),
            connections: 2,
            concurrency: 4,
            pipeline: 1,
            threads: 1,
            batch_size: 1000,
            encoding: "e164",
            hit_ratio: 0.01,
            tenant: String::new(),
            campaign: String::new(),
            rate: None,
            warmup_s: 2.0,
            elapsed_s: 10.0,
            requests: 60_000,
            errors: 3,
            errors_by_code: BTreeMap::from([("UNAVAILABLE".into(), 3)]),
            error_examples: BTreeMap::from([("UNAVAILABLE".into(), "connection reset".into())]),
            requests_per_s: 6000.0,
            checks: 60_000_000,
            checks_per_s: 6_000_000.0,
            present_sent: 600_000,
            verdicts: Verdicts {
                allow: 59_400_000,
                block: 600_000,
                ..Verdicts::default()
            },
            latency_us: Latency {
                min: 100.0,
                mean: 600.0,
                p50: 550.5,
                p90: 800.0,
                p99: 1200.0,
                p999: 2000.0,
                max: 3000.0,
            },
            schedule_lag_us: None,
            mutations: None,
        }
    }

    #[test]
    fn text_report_names_rates_verdicts_latency_and_errors() {
        let text = format_report(&sample_report());
        assert!(text.starts_with("loadgen batch -> http://127.0.0.1:50151: 2 connections, concurrency 4, 1 thread, 1000 numbers/request (e164), hit ratio 0.01, closed loop\n"), "{text}");
        assert!(
            text.contains("requests   60000 ok, 3 failed: 6.0 kreq/s\n"),
            "{text}"
        );
        assert!(
            text.contains("checks     60000000: 6.00 Mchecks/s\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "verdicts   ALLOW 59400000 BLOCK 600000 INVALID 0 (present numbers sent: 600000)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "latency us p50 550.5 p90 800 p99 1200 p99.9 2000 max 3000 (min 100, mean 600)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("errors     UNAVAILABLE 3 (first: \"connection reset\")\n"),
            "{text}"
        );
        assert!(!sample_report().clean());
    }

    #[test]
    fn open_loop_report_shows_the_schedule_lag() {
        let mut report = sample_report();
        report.mode = Mode::Unary;
        report.rate = Some(20_000.0);
        report.errors = 0;
        report.errors_by_code.clear();
        report.schedule_lag_us = Some(Latency {
            p50: 1.0,
            p99: 5.0,
            max: 40.0,
            ..Latency::default()
        });
        let text = format_report(&report);
        assert!(text.contains("open loop at 20.0 kreq/s"), "{text}");
        assert!(text.contains("send lag   us p50 1 p99 5 max 40"), "{text}");
        assert!(text.contains("errors     none\n"), "{text}");
        assert!(report.clean());
    }

    #[test]
    fn json_report_is_one_object_with_every_figure() {
        let json: serde_json::Value = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(json["mode"], "batch");
        assert_eq!(json["checks_per_s"], 6_000_000.0);
        assert_eq!(json["errors_by_code"]["UNAVAILABLE"], 3);
        assert_eq!(json["latency_us"]["p999"], 2000.0);
        assert_eq!(json["verdicts"]["block"], 600_000);
        assert!(json["schedule_lag_us"].is_null());
    }

    #[test]
    fn suppress_report_names_mutations_enforcement_and_violations() {
        let mut report = sample_report();
        report.mode = Mode::Suppress;
        report.errors = 0;
        report.errors_by_code.clear();
        report.requests = 20_000;
        report.requests_per_s = 2000.0;
        report.verdicts = Verdicts {
            block: 2000,
            ..Verdicts::default()
        };
        report.mutations = Some(MutationFigures {
            admin: "http://127.0.0.1:50152".into(),
            verify_every: 10,
            verified: 2000,
            violations: 0,
            violation_example: None,
            ack_to_enforced_us: Latency {
                p50: 80.0,
                ..Latency::default()
            },
            request_id_prefix: "loadgen-1-2".into(),
            first_number: "+15032000000".into(),
            number_count: 8_000_000,
        });
        let text = format_report(&report);
        assert!(
            text.contains(
                "loadgen suppress -> http://127.0.0.1:50152 (checks: http://127.0.0.1:50151)"
            ),
            "{text}"
        );
        assert!(
            text.contains("mutations  20000 acknowledged: 2.0 kmutations/s"),
            "{text}"
        );
        assert!(
            text.contains("enforced   2000 verified BLOCK INTERNAL_DNC right after the ack (every 10th), 0 VIOLATIONS"),
            "{text}"
        );
        assert!(text.contains("ack->block us p50 80"), "{text}");
        assert!(!text.contains("checks     "), "{text}");
        assert!(report.clean());
        report.mutations.as_mut().unwrap().violations = 1;
        assert!(!report.clean(), "a violation fails the run");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["mode"], "suppress");
        assert_eq!(json["mutations"]["violations"], 1);
    }
}
