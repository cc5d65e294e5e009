//! Turns `loadgen` arguments into a [`Plan`]: every flag checked against the others, every
//! default resolved, the senders and in-flight budget worked out.
//!
//! Owns the rules that bound a run (at most 600 s, at most 50 M pre-generated numbers, and so
//! on) and the messages that name the offending flag. Pure: never reads a file, never
//! connects, never draws a number.

use super::args::{LoadgenArgs, MAX_DURATION, Mode};
use crate::engine::number::Number;
use std::time::Duration;

/// Measured phase when neither `--duration` nor `--requests` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Numbers per request in batch and stream modes unless `--batch-size` says otherwise.
const DEFAULT_BATCH: usize = 1000;
/// Numbers pre-generated in total (the payload pool) unless `--payloads` says otherwise.
const POOL_NUMBERS: usize = 1_000_000;
/// Most distinct payloads pre-generated.
const MAX_PAYLOADS: usize = 100_000;

/// Validated arguments: everything the run needs, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    /// Numbers per request.
    pub batch_size: usize,
    pub hit_ratio: f64,
    /// Independent senders: closed loop, one per request in flight (unary, batch, empty) or
    /// per stream (stream); open loop with one request per call, one pacer per connection.
    pub workers: usize,
    /// Requests (stream messages) in flight at most, in total.
    pub concurrency: usize,
    /// Open loop with one request per call: pacers send, each request its own task.
    pub paced: bool,
    pub pipeline: usize,
    pub payloads: usize,
}

/// Checks the arguments and resolves defaults; the message names the offending flag.
pub fn plan(args: &LoadgenArgs) -> Result<Plan, String> {
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(DEFAULT_DURATION),
        (duration, _) => duration,
    };
    if let Some(duration) = duration {
        if duration.is_zero() {
            return Err("--duration must be positive".into());
        }
        if duration > MAX_DURATION {
            return Err(format!(
                "--duration {duration:?} is over the limit of 600 s"
            ));
        }
    }
    if args.requests == Some(0) {
        return Err("--requests must be positive".into());
    }
    if args.warmup > MAX_DURATION {
        return Err(format!(
            "--warmup {:?} is over the limit of 600 s",
            args.warmup
        ));
    }
    if args.timeout.is_zero() {
        return Err("--timeout must be positive".into());
    }
    if !(1..=1024).contains(&args.connections) {
        return Err("--connections must be 1..=1024".into());
    }
    if !(1..=100_000).contains(&args.concurrency) {
        return Err("--concurrency must be 1..=100000".into());
    }
    if !(1..=64).contains(&args.threads) {
        return Err("--threads must be 1..=64".into());
    }
    if args.mode.mutates() {
        if args.mode == Mode::Reserve && args.rate.is_some() {
            return Err("--rate is not supported in reserve mode (closed loop only)".into());
        }
        if args.present.is_some() || args.present_list.is_some() || args.hit_ratio.is_some() {
            return Err(
                "--present, --present-list and --hit-ratio apply to check modes, not suppress"
                    .into(),
            );
        }
        let first = Number::parse_e164(&args.first_number)
            .map_err(|e| format!("--first-number '{}': {e}", args.first_number))?;
        if args.number_count == 0 {
            return Err("--number-count must be positive".into());
        }
        if first
            .get()
            .checked_add(args.number_count - 1)
            .is_none_or(|last| Number::from_u64(last).is_err())
        {
            return Err("--first-number + --number-count leaves the E.164 range".into());
        }
    }
    let batch_size = match (args.mode.batched(), args.batch_size) {
        (true, size) => size.unwrap_or(DEFAULT_BATCH),
        (false, None) => 1,
        (false, Some(_)) => {
            return Err(format!(
                "--batch-size applies to batch and stream modes, not {}",
                args.mode.name()
            ));
        }
    };
    if !(1..=1_000_000).contains(&batch_size) {
        return Err("--batch-size must be 1..=1000000".into());
    }
    if args.pipeline == 0 {
        return Err("--pipeline must be positive".into());
    }
    if args.pipeline > 1 && args.mode != Mode::Stream {
        return Err("--pipeline applies to stream mode only".into());
    }
    if !args.concurrency.is_multiple_of(args.pipeline) {
        return Err(format!(
            "--concurrency {} is not a multiple of --pipeline {}",
            args.concurrency, args.pipeline
        ));
    }
    let workers = args.concurrency / args.pipeline;
    if workers < args.connections {
        let what = if args.mode == Mode::Stream {
            "streams (concurrency / pipeline)"
        } else {
            "--concurrency"
        };
        return Err(format!(
            "{workers} {what} cannot spread over {} connections",
            args.connections
        ));
    }
    let paced = args.rate.is_some() && args.mode != Mode::Stream;
    let workers = if paced { args.connections } else { workers };
    let has_source = args.present.is_some() || args.present_list.is_some();
    let hit_ratio = args
        .hit_ratio
        .unwrap_or(if has_source { 0.01 } else { 0.0 });
    if !(0.0..=1.0).contains(&hit_ratio) {
        return Err("--hit-ratio must be within 0..=1".into());
    }
    if hit_ratio > 0.0 && !has_source {
        return Err("--hit-ratio above 0 needs --present or --present-list".into());
    }
    if has_source && args.present_sample == 0 {
        return Err("--present-sample must be positive".into());
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0 && rate <= 1e8)
    {
        return Err("--rate must be a positive number of requests per second (at most 1e8)".into());
    }
    let payloads = match args.payloads {
        Some(0) => return Err("--payloads must be positive".into()),
        Some(count) if count.saturating_mul(batch_size) > 50_000_000 => {
            return Err("--payloads x --batch-size must stay within 50 M numbers".into());
        }
        Some(count) => count,
        None => (POOL_NUMBERS / batch_size).clamp(1, MAX_PAYLOADS),
    };
    Ok(Plan {
        duration,
        requests: args.requests,
        batch_size,
        hit_ratio,
        workers,
        concurrency: args.concurrency,
        paced,
        pipeline: args.pipeline,
        payloads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::args::tests::args;

    fn plan_error(extra: &[&str]) -> String {
        plan(&args(extra)).expect_err("plan must refuse")
    }

    fn plan_for(extra: &[&str]) -> Plan {
        plan(&args(extra)).unwrap()
    }

    #[test]
    fn defaults_are_a_ten_second_unary_run() {
        let plan = plan(&args(&[])).unwrap();
        assert_eq!(plan.duration, Some(Duration::from_secs(10)));
        assert_eq!(plan.batch_size, 1);
        assert_eq!(plan.hit_ratio, 0.0);
        assert_eq!(plan.workers, 32);
        assert_eq!(plan.payloads, MAX_PAYLOADS);
    }

    #[test]
    fn requests_alone_bound_the_run_without_a_duration() {
        let plan = plan(&args(&["--requests", "100"])).unwrap();
        assert_eq!(plan.duration, None);
        assert_eq!(plan.requests, Some(100));
    }

    #[test]
    fn batch_modes_default_to_a_thousand_numbers() {
        let plan = plan(&args(&["--mode", "batch"])).unwrap();
        assert_eq!(plan.batch_size, 1000);
        assert_eq!(plan.payloads, 1000);
        let plan = plan_for(&["--mode", "stream", "--concurrency", "8", "--pipeline", "4"]);
        assert_eq!(plan.workers, 2);
        assert_eq!(plan.pipeline, 4);
    }

    #[test]
    fn open_loop_paces_per_connection_except_streams() {
        let plan = plan_for(&[
            "--rate",
            "1000",
            "--concurrency",
            "32",
            "--connections",
            "2",
        ]);
        assert!(plan.paced);
        assert_eq!((plan.workers, plan.concurrency), (2, 32));
        let plan = plan_for(&[
            "--mode",
            "stream",
            "--rate",
            "100",
            "--concurrency",
            "8",
            "--pipeline",
            "2",
        ]);
        assert!(!plan.paced);
        assert_eq!(plan.workers, 4);
        assert!(!plan_for(&["--concurrency", "8"]).paced);
    }

    #[test]
    fn bounded_durations_only() {
        assert!(plan_error(&["--duration", "601s"]).contains("600 s"));
        assert!(plan_error(&["--duration", "0s"]).contains("positive"));
        assert!(plan_error(&["--warmup", "11m"]).contains("600 s"));
        assert!(plan(&args(&["--duration", "600s"])).is_ok());
    }

    #[test]
    fn refuses_inconsistent_arguments() {
        assert!(plan_error(&["--requests", "0"]).contains("--requests"));
        assert!(plan_error(&["--connections", "0"]).contains("--connections"));
        assert!(
            plan_error(&["--concurrency", "1", "--connections", "2"]).contains("cannot spread")
        );
        assert!(plan_error(&["--batch-size", "10"]).contains("batch and stream"));
        assert!(plan_error(&["--mode", "batch", "--batch-size", "0"]).contains("--batch-size"));
        assert!(plan_error(&["--pipeline", "2"]).contains("stream mode only"));
        assert!(
            plan_error(&["--mode", "stream", "--concurrency", "6", "--pipeline", "4"])
                .contains("multiple")
        );
        assert!(
            plan_error(&[
                "--mode",
                "stream",
                "--concurrency",
                "4",
                "--pipeline",
                "4",
                "--connections",
                "2"
            ])
            .contains("streams")
        );
        assert!(plan_error(&["--hit-ratio", "0.5"]).contains("--present"));
        assert!(plan_error(&["--hit-ratio", "1.5", "--present-list", "x"]).contains("0..=1"));
        assert!(plan_error(&["--rate", "0"]).contains("--rate"));
        assert!(plan_error(&["--rate", "NaN"]).contains("--rate"));
        assert!(plan_error(&["--threads", "0"]).contains("--threads"));
        assert!(plan_error(&["--payloads", "0"]).contains("--payloads"));
        assert!(plan_error(&["--timeout", "0s"]).contains("--timeout"));
    }

    #[test]
    fn suppress_mode_over_a_valid_range_closed_or_open_loop() {
        let plan = plan_for(&["--mode", "suppress", "--concurrency", "64"]);
        assert_eq!((plan.workers, plan.batch_size), (64, 1));
        let paced = plan_for(&[
            "--mode",
            "suppress",
            "--rate",
            "1000",
            "--concurrency",
            "64",
        ]);
        assert!(paced.paced);
        assert_eq!(paced.workers, 2, "one pacer per connection");
        assert!(plan_error(&["--mode", "suppress", "--present", "a.snap"]).contains("--present"));
        assert!(plan_error(&["--mode", "suppress", "--batch-size", "2"]).contains("batch"));
        assert!(
            plan_error(&["--mode", "suppress", "--first-number", "12345"])
                .contains("--first-number")
        );
        assert!(plan_error(&["--mode", "suppress", "--number-count", "0"]).contains("positive"));
        assert!(
            plan_error(&[
                "--mode",
                "suppress",
                "--first-number",
                "+199999999999999",
                "--number-count",
                "900000000000000"
            ])
            .contains("E.164")
        );
    }

    #[test]
    fn a_present_source_turns_on_one_percent_hits() {
        assert_eq!(plan_for(&["--present", "a.snap"]).hit_ratio, 0.01);
        assert_eq!(
            plan_for(&["--present-list", "a.txt", "--hit-ratio", "0"]).hit_ratio,
            0.0
        );
    }
}
