//! The command line of `suppressd loadgen`: its flags, the modes, and duration parsing.
//!
//! Owns what a user can type and its defaults, nothing more: checking that the flags fit
//! together is [`super::plan`]'s job. Never opens a file or a connection.

use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// Longest measured phase or warm-up accepted: a load test is bounded.
pub const MAX_DURATION: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `Check`: one number per call.
    Unary,
    /// `CheckBatch`: `--batch-size` numbers per call.
    Batch,
    /// `CheckStream`: batches on long-lived bidirectional streams.
    Stream,
    /// `Ping`: the unary request, no lookup. The baseline.
    Empty,
    /// Admin `Suppress` of one fresh number per call, verified by `Check` after the ack.
    Suppress,
    /// Data-plane `ReserveAttempt` of one fresh number per call (a campaign with attempt
    /// caps: `--campaign`), each acknowledged durably and required to be granted.
    Reserve,
}

impl Mode {
    pub(super) fn name(self) -> &'static str {
        match self {
            Mode::Unary => "unary",
            Mode::Batch => "batch",
            Mode::Stream => "stream",
            Mode::Empty => "empty",
            Mode::Suppress => "suppress",
            Mode::Reserve => "reserve",
        }
    }

    /// Modes that mutate: fresh numbers, closed loop, figures per mutation.
    pub(super) fn mutates(self) -> bool {
        matches!(self, Mode::Suppress | Mode::Reserve)
    }

    pub(super) fn batched(self) -> bool {
        matches!(self, Mode::Batch | Mode::Stream)
    }
}

/// `suppressd loadgen` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Daemon to load (plain-text HTTP/2).
    #[arg(long, default_value = "http://127.0.0.1:50151")]
    pub target: String,
    /// unary = Check, batch = CheckBatch, stream = CheckStream, empty = Ping (no lookup: the
    /// baseline), suppress = admin Suppress of fresh numbers, verified by Check, reserve =
    /// ReserveAttempt of fresh numbers (needs a campaign with attempt_rules).
    #[arg(long, value_enum, default_value_t = Mode::Unary)]
    pub mode: Mode,
    /// Suppress mode: the daemon's admin plane (plain-text HTTP/2).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50152")]
    pub admin: String,
    /// File holding a bearer token sent with every call (suppress mode needs an admin-role
    /// token, which also serves checks), when the daemon requires credentials.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Suppress mode: bracket every Nth mutation with data-plane Checks (ALLOW before, BLOCK
    /// INTERNAL_DNC right after the ack); 1 = every mutation, 0 = none.
    #[arg(long, default_value_t = 10)]
    pub verify_every: u64,
    /// Suppress mode against a fleet (`--admin` on one host, `--target` on another): a Check
    /// after the ack that answers ALLOW is repeated until this much time has passed since the
    /// ack, and only an ALLOW after it is a violation; ack -> enforced is then the propagation
    /// time. 0 (default): one daemon, the first Check after the ack must BLOCK.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub propagation_bound: Duration,
    /// Suppress mode: first number of the dedicated range the fresh numbers come from.
    #[arg(long, default_value = "+15032000000")]
    pub first_number: String,
    /// Suppress mode: size of that range (numbers are consecutive from a random start in it,
    /// wrapping around).
    #[arg(long, default_value_t = 8_000_000)]
    pub number_count: u64,
    /// HTTP/2 connections, each its own channel.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Requests (stream mode: messages) in flight in total, spread over the connections.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Length of the measured phase, e.g. 10s, 500ms, 2m (at most 600 s). Default 10s, or
    /// unbounded in time when --requests is given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests (with --duration: whichever comes first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Numbers per CheckBatch call or stream message (batch and stream modes; default 1000).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Batch and stream modes: send numbers as text (field `numbers`) instead of packed
    /// `e164` integers. Unary and empty modes always send text.
    #[arg(long)]
    pub strings: bool,
    /// Fraction of numbers present in the set (default 0.01 with --present/--present-list,
    /// else 0).
    #[arg(long)]
    pub hit_ratio: Option<f64>,
    /// Tenant; empty means the daemon's default.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Campaign; empty means the daemon's default.
    #[arg(long, default_value = "")]
    pub campaign: String,
    /// Load sent before measuring, not counted.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,
    /// Print one JSON object of results instead of text.
    #[arg(long)]
    pub json: bool,
    /// Snapshot file (plain E.164 keys) whose numbers are the present ones.
    #[arg(long, conflicts_with = "present_list")]
    pub present: Option<PathBuf>,
    /// File of present numbers, one '+digits' per line ('#' comments and blank lines skipped).
    #[arg(long)]
    pub present_list: Option<PathBuf>,
    /// Present numbers sampled into memory from --present / --present-list.
    #[arg(long, default_value_t = 1_000_000)]
    pub present_sample: usize,
    /// Open loop: total requests (stream mode: messages; suppress mode: mutations) per second,
    /// sent on a fixed schedule (one pacer per connection; stream mode: per stream) with at
    /// most --concurrency in
    /// flight; latency counts from the intended send time whenever the daemon held a send up.
    /// Without it the load is closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Worker threads of the load generator's runtime (it shares the machine with the daemon).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Stream mode: messages in flight per stream; streams = concurrency / pipeline.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// Distinct pre-generated requests, sent round robin (default: about 1 M numbers in total,
    /// at most 100 000 requests).
    #[arg(long)]
    pub payloads: Option<usize>,
    /// Seed of the number generator (same seed, same requests).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A request (or a stream message) without an answer after this long is an error.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub timeout: Duration,
}

/// Parses "10s", "500ms", "250us", "2m", "1.5s" or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use us, ms, s or m)"
            ));
        }
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    /// `loadgen` parsed with `extra` flags (for the tests of this module and of the plan).
    pub(in crate::loadgen) fn args(extra: &[&str]) -> LoadgenArgs {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("arguments parse").args
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn present_sources_exclude_each_other() {
        let argv = ["loadgen", "--present", "a.snap", "--present-list", "b.txt"];
        assert!(Cli::try_parse_from(argv).is_err());
    }
}
