//! `suppressd loadgen`: drives a running daemon over gRPC and reports what it measured.
//!
//! Several HTTP/2 connections (one tonic `Channel` each, TCP_NODELAY), a fixed number of
//! requests in flight spread over them, and five modes: `unary` (Check), `batch` (CheckBatch),
//! `stream` (CheckStream, `--pipeline` messages in flight per stream), `empty` (Ping: same
//! request as `unary`, no lookup on the server: the baseline that measures the RPC itself) and
//! `suppress` (admin-plane mutations, below).
//!
//! `suppress` mode: every call is an admin `Suppress` (to `--admin`) of one fresh number with a
//! fresh request id, so each acknowledgement is a journalled, fsynced mutation. Numbers are
//! consecutive from a random point of a dedicated range (`--first-number`, `--number-count`;
//! by default +1 503 200-0000 .. +1 503 999-9999, an area code no sample list uses). Every
//! `--verify-every`th mutation is bracketed by data-plane `Check`s of its number: before the
//! Suppress it must be ALLOW (else the number was not fresh: error `NOT_FRESH`, no Suppress
//! sent), and immediately after the acknowledgement it must be BLOCK with reason INTERNAL_DNC.
//! An ALLOW then is a violation (acknowledged but not enforced), counted even during warm-up;
//! the exit status is 1 on any violation. The time from the acknowledgement to that BLOCK
//! answer is reported as ack -> enforced. Latency is per Suppress, from its send to its ack.
//!
//! Keeping the generator cheap, so the figures describe the daemon:
//! - every request is encoded once before the timed phase and sent as bytes (a stream message
//!   gets its `batch_id` appended as one more protobuf field, which is valid encoding);
//! - responses are decoded into small local messages holding only the verdicts, so strings the
//!   daemon sends for proof (set names, versions) are skipped, not allocated.
//!
//! Honest figures:
//! - a non-OK gRPC status, a timeout or a malformed answer is an error, counted by code and never
//!   hidden; the exit status is 1 when any request failed;
//! - verdicts are counted (ALLOW/BLOCK/INVALID), so a run proves the daemon answered;
//! - `--rate` runs open loop: one pacer per connection (per stream in stream mode) sends on a
//!   fixed schedule, each call its own task, at most `--concurrency` in flight; latency is
//!   measured from the intended send time whenever the sender was held up by the daemon (all
//!   slots busy, or the stream window full), so a stalled daemon cannot hide its stall (no
//!   "coordinated omission"). Send times are kept by a timer thread of our own ([`timer`]),
//!   precise to the kernel's wake-up latency without spinning (tokio's timer has 1 ms
//!   granularity, and spinning would take a core from the daemon on a small machine); how late
//!   sends left against the schedule is reported as the send lag.
//!
//! Present numbers come from a snapshot file (`--present`, plain E.164 keys) or a list
//! (`--present-list`); absent numbers are drawn next to present ones (the last four digits
//! replaced: same country, same number plan, same length) and kept only when the source says
//! they are absent.

use crate::engine::number::Number;
use crate::engine::set::{Membership, SuppressionSet};
use crate::proto;
use hdrhistogram::Histogram;
use prost::bytes::BufMut;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::BufRead;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

mod timer;

/// Longest measured phase or warm-up accepted: a load test is bounded.
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Measured phase when neither `--duration` nor `--requests` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Numbers per request in batch and stream modes unless `--batch-size` says otherwise.
const DEFAULT_BATCH: usize = 1000;
/// Numbers pre-generated in total (the payload pool) unless `--payloads` says otherwise.
const POOL_NUMBERS: usize = 1_000_000;
/// Most distinct payloads pre-generated.
const MAX_PAYLOADS: usize = 100_000;
/// Error key for answers that arrived but are wrong (missing verdicts, wrong batch id).
const BAD_RESPONSE: &str = "BAD_RESPONSE";

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
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Unary => "unary",
            Mode::Batch => "batch",
            Mode::Stream => "stream",
            Mode::Empty => "empty",
            Mode::Suppress => "suppress",
        }
    }

    fn batched(self) -> bool {
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
    /// baseline), suppress = admin Suppress of fresh numbers, verified by Check.
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
    /// Open loop: total requests (stream mode: messages) per second, sent on a fixed schedule
    /// (one pacer per connection; stream mode: per stream) with at most --concurrency in
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
    if args.mode == Mode::Suppress {
        if args.rate.is_some() {
            return Err("--rate is not supported in suppress mode (closed loop only)".into());
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

// ---------------------------------------------------------------------------------------------
// Numbers and payloads

/// Where present numbers come from, and how to tell that a drawn number is absent.
enum Members {
    /// Synthetic US numbers only; nothing known to be present.
    None,
    Set(Box<SuppressionSet>),
    /// Every number of a list, sorted.
    Sorted(Vec<u64>),
}

struct Source {
    sample: Vec<u64>,
    members: Members,
}

impl Source {
    fn contains(&self, value: u64) -> bool {
        match &self.members {
            Members::None => false,
            Members::Set(set) => set.get(Number::from_u64_unchecked(value)) != Membership::Absent,
            Members::Sorted(all) => all.binary_search(&value).is_ok(),
        }
    }
}

/// Keeps a uniform sample of at most `keep` items of `items` (reservoir sampling).
fn reservoir(items: impl Iterator<Item = u64>, keep: usize, rng: &mut ChaCha8Rng) -> Vec<u64> {
    let mut sample = Vec::with_capacity(keep.min(1 << 20));
    for (seen, item) in items.enumerate() {
        if sample.len() < keep {
            sample.push(item);
        } else {
            let slot = rng.random_range(0..=seen);
            if slot < keep {
                sample[slot] = item;
            }
        }
    }
    sample
}

fn load_source(args: &LoadgenArgs, rng: &mut ChaCha8Rng) -> Result<Source, String> {
    if let Some(path) = &args.present {
        let set = SuppressionSet::open(path, None).map_err(|e| format!("--present: {e}"))?;
        if set.is_empty() {
            return Err(format!("--present {}: the set is empty", path.display()));
        }
        let sample = reservoir(set.entries().map(|(key, _)| key), args.present_sample, rng);
        return Ok(Source {
            sample,
            members: Members::Set(Box::new(set)),
        });
    }
    if let Some(path) = &args.present_list {
        let mut all = read_list(path)?;
        all.sort_unstable();
        all.dedup();
        if all.is_empty() {
            return Err(format!("--present-list {}: no numbers", path.display()));
        }
        let sample = reservoir(all.iter().copied(), args.present_sample, rng);
        return Ok(Source {
            sample,
            members: Members::Sorted(all),
        });
    }
    Ok(Source {
        sample: Vec::new(),
        members: Members::None,
    })
}

fn read_list(path: &Path) -> Result<Vec<u64>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("--present-list {}: {e}", path.display()))?;
    let mut numbers = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("--present-list {}: {e}", path.display()))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = Number::parse_e164(line).map_err(|e| {
            format!(
                "--present-list {} line {}: not a '+digits' number ({e})",
                path.display(),
                index + 1
            )
        })?;
        numbers.push(number.get());
    }
    Ok(numbers)
}

/// True when number `index` of the pool is a present one: exactly `ratio` of any run of
/// numbers, evenly spread (a batch of 1000 at 0.01 holds exactly 10).
pub fn is_hit(index: u64, ratio: f64) -> bool {
    ((index + 1) as f64 * ratio).floor() > (index as f64 * ratio).floor()
}

/// A random US number: +1, NPA and NXX in 200..=999, any line number.
fn random_us(rng: &mut ChaCha8Rng) -> u64 {
    let npa = rng.random_range(200..1000u64);
    let nxx = rng.random_range(200..1000u64);
    let line = rng.random_range(0..10_000u64);
    10_000_000_000 + npa * 10_000_000 + nxx * 10_000 + line
}

/// A number absent from the source, in the range of its present numbers.
fn draw_absent(source: &Source, rng: &mut ChaCha8Rng) -> Result<u64, String> {
    if source.sample.is_empty() {
        return Ok(random_us(rng));
    }
    for _ in 0..10_000 {
        let base = source.sample[rng.random_range(0..source.sample.len())];
        let candidate = base - base % 10_000 + rng.random_range(0..10_000u64);
        if !source.contains(candidate) {
            return Ok(candidate);
        }
    }
    Err("cannot draw absent numbers: the present set fills its number blocks".into())
}

/// One pre-encoded request.
#[derive(Clone)]
struct Payload {
    bytes: Arc<[u8]>,
    numbers: u32,
    present: u32,
}

fn build_payloads(
    args: &LoadgenArgs,
    plan: &Plan,
    source: &Source,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Payload>, String> {
    let mut payloads = Vec::with_capacity(plan.payloads);
    let mut index = 0u64;
    let mut values = Vec::with_capacity(plan.batch_size);
    for _ in 0..plan.payloads {
        values.clear();
        let mut present = 0u32;
        for _ in 0..plan.batch_size {
            let value = if is_hit(index, plan.hit_ratio) {
                present += 1;
                source.sample[rng.random_range(0..source.sample.len())]
            } else {
                draw_absent(source, rng)?
            };
            values.push(value);
            index += 1;
        }
        let bytes = if args.mode.batched() {
            let mut request = proto::CheckBatchRequest {
                tenant: args.tenant.clone(),
                campaign: args.campaign.clone(),
                ..Default::default()
            };
            if args.strings {
                request.numbers = values
                    .iter()
                    .map(|&v| Number::from_u64_unchecked(v).to_e164_string())
                    .collect();
            } else {
                request.e164 = values.clone();
            }
            prost::Message::encode_to_vec(&request)
        } else {
            let request = proto::CheckRequest {
                number: Number::from_u64_unchecked(values[0]).to_e164_string(),
                tenant: args.tenant.clone(),
                campaign: args.campaign.clone(),
            };
            prost::Message::encode_to_vec(&request)
        };
        payloads.push(Payload {
            bytes: bytes.into(),
            numbers: plan.batch_size as u32,
            present,
        });
    }
    Ok(payloads)
}

// ---------------------------------------------------------------------------------------------
// Wire: pre-encoded requests out, verdict-only messages in

/// A pre-encoded request; `batch_id` (when not 0) is appended as field 5 of CheckBatchRequest.
#[derive(Clone)]
struct Outgoing {
    bytes: Arc<[u8]>,
    batch_id: u64,
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        write_outgoing(&item, dst);
        Ok(())
    }
}

fn write_outgoing(item: &Outgoing, dst: &mut impl BufMut) {
    dst.put_slice(&item.bytes);
    if item.batch_id != 0 {
        // CheckBatchRequest.batch_id = 5. Appending a field to an encoded message is valid
        // protobuf; the payloads themselves never set it.
        prost::encoding::uint64::encode(5, &item.batch_id, dst);
    }
}

/// Sends [`Outgoing`] bytes as they are and decodes answers into `U`.
struct RawCodec<U>(PhantomData<U>);

impl<U> Default for RawCodec<U> {
    fn default() -> Self {
        RawCodec(PhantomData)
    }
}

impl<U: prost::Message + Default + Send + 'static> Codec for RawCodec<U> {
    type Encode = Outgoing;
    type Decode = U;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<U>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

/// The part of `CheckResponse` the load generator reads; other fields are skipped unallocated.
#[derive(Clone, PartialEq, prost::Message)]
struct UnaryAnswer {
    #[prost(int32, tag = "1")]
    verdict: i32,
    #[prost(int32, repeated, tag = "2")]
    reasons: Vec<i32>,
}

/// The part of `CheckBatchResponse` the load generator reads.
#[derive(Clone, PartialEq, prost::Message)]
struct BatchAnswer {
    #[prost(uint64, tag = "1")]
    batch_id: u64,
    #[prost(bytes = "vec", tag = "2")]
    verdicts: Vec<u8>,
}

/// Counts the verdicts of one answer; `Err` when the answer does not fit its request.
trait Answer: prost::Message + Default + Send + Sync + 'static {
    fn tally(&self, payload: &Payload, verdicts: &mut Verdicts) -> Result<(), String>;
}

impl Answer for UnaryAnswer {
    fn tally(&self, _payload: &Payload, verdicts: &mut Verdicts) -> Result<(), String> {
        if self
            .reasons
            .contains(&(proto::Reason::InvalidNumber as i32))
        {
            verdicts.invalid += 1;
        } else {
            verdicts.count(self.verdict);
        }
        Ok(())
    }
}

impl Answer for BatchAnswer {
    fn tally(&self, payload: &Payload, verdicts: &mut Verdicts) -> Result<(), String> {
        if self.verdicts.len() != payload.numbers as usize {
            return Err(format!(
                "{} verdicts for {} numbers",
                self.verdicts.len(),
                payload.numbers
            ));
        }
        let mut counts = [0u64; 256];
        for &verdict in &self.verdicts {
            counts[verdict as usize] += 1;
        }
        for (verdict, &count) in counts.iter().enumerate() {
            if count > 0 {
                verdicts.add(verdict as i32, count);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Pacing

/// When request `k` of worker `worker` (of `workers`) is due, after the start, at a total rate
/// of `rate` per second: the workers interleave into one evenly spaced sequence.
pub fn schedule_offset(k: u64, worker: usize, workers: usize, rate: f64) -> Duration {
    let slot = k as f64 * workers as f64 + worker as f64;
    Duration::from_nanos((slot * 1e9 / rate) as u64)
}

/// Where a paced request's latency starts. When the worker became free only after the intended
/// time (an earlier answer held it up), the wait is the daemon's doing and counts: latency runs
/// from the intended time. When the worker was idle and only woke late (timer jitter, the load
/// generator's own doing), it runs from the actual send.
pub fn latency_origin(intended: Instant, ready_at: Instant, sent_at: Instant) -> Instant {
    if ready_at > intended {
        intended
    } else {
        sent_at
    }
}

/// Phases of the run, shared by every worker.
struct Control {
    start: Instant,
    measure_start: Instant,
    measure_end: Option<Instant>,
    /// Measured requests still to send (with --requests).
    remaining: Option<AtomicU64>,
}

impl Control {
    /// May a request due at `at` go out? `Some(true)`: measured; `Some(false)`: warm-up;
    /// `None`: the run is over for this worker.
    fn admit(&self, at: Instant) -> Option<bool> {
        if at < self.measure_start {
            return Some(false);
        }
        if self.measure_end.is_some_and(|end| at >= end) {
            return None;
        }
        if let Some(remaining) = &self.remaining {
            remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .ok()?;
        }
        Some(true)
    }
}

// ---------------------------------------------------------------------------------------------
// Results

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
    fn count(&mut self, verdict: i32) {
        self.add(verdict, 1);
    }

    fn add(&mut self, verdict: i32, count: u64) {
        let slot = match proto::Verdict::try_from(verdict) {
            Ok(proto::Verdict::Allow) => &mut self.allow,
            Ok(proto::Verdict::Block) => &mut self.block,
            Ok(proto::Verdict::Invalid) => &mut self.invalid,
            Ok(proto::Verdict::Unspecified) => &mut self.unspecified,
            Err(_) => &mut self.other,
        };
        *slot += count;
    }

    fn merge(&mut self, other: &Verdicts) {
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
struct Tally {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    ok: u64,
    checks: u64,
    present: u64,
    verdicts: Verdicts,
    errors: BTreeMap<&'static str, u64>,
    error_examples: BTreeMap<&'static str, String>,
    last_done: Option<Instant>,
    /// Suppress mode: acknowledged mutations whose number a Check then answered BLOCK
    /// INTERNAL_DNC, and the time from the ack to that answer.
    verified: u64,
    ack_to_enforced: Histogram<u64>,
    /// Suppress mode: acknowledged mutations a Check then answered ALLOW (warm-up included).
    violations: u64,
    violation_example: Option<String>,
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns .. 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

impl Tally {
    fn new() -> Tally {
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

    fn done(&mut self, at: Instant) {
        self.last_done = Some(self.last_done.map_or(at, |last| last.max(at)));
    }

    fn success(&mut self, payload: &Payload, latency: Duration, verdicts: &Verdicts, at: Instant) {
        self.ok += 1;
        self.checks += u64::from(payload.numbers);
        self.present += u64::from(payload.present);
        self.verdicts.merge(verdicts);
        self.latency
            .saturating_record(latency.as_nanos().max(1) as u64);
        self.done(at);
    }

    fn error(
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

    fn status(&mut self, status: &Status, count: u64, at: Instant) {
        self.error(
            code_name(status.code()),
            || status.message().to_owned(),
            count,
            at,
        );
    }

    fn merge(&mut self, other: &Tally) {
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
    fn of(histogram: &Histogram<u64>) -> Latency {
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
        let e = &m.ack_to_enforced_us;
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
        let _ = writeln!(
            out,
            "ack->block us p50 {} p90 {} p99 {} p99.9 {} max {} (min {}, mean {})",
            e.p50, e.p90, e.p99, e.p999, e.max, e.min, e.mean
        );
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
    let l = &report.latency_us;
    let _ = writeln!(
        out,
        "latency us p50 {} p90 {} p99 {} p99.9 {} max {} (min {}, mean {})",
        l.p50, l.p90, l.p99, l.p999, l.max, l.min, l.mean
    );
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

// ---------------------------------------------------------------------------------------------
// Workers

struct Ctx {
    control: Control,
    payloads: Vec<Payload>,
    rate: Option<f64>,
    workers: usize,
    pipeline: usize,
    timeout: Duration,
    path: PathAndQuery,
    /// `authorization: Bearer …` for every call, from --token-file.
    token: Option<AsciiMetadataValue>,
}

impl Ctx {
    fn authorize<T>(&self, request: &mut tonic::Request<T>) {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
    }

    fn payload(&self, cursor: &mut usize) -> &Payload {
        let payload = &self.payloads[*cursor];
        *cursor += 1;
        if *cursor == self.payloads.len() {
            *cursor = 0;
        }
        payload
    }
}

fn lock(tally: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    tally.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends one pre-encoded request and waits for its answer (or `--timeout`).
async fn call_once<A: Answer>(
    grpc: &mut tonic::client::Grpc<Channel>,
    ctx: &Ctx,
    payload: &Payload,
) -> Result<Result<tonic::Response<A>, Status>, tokio::time::error::Elapsed> {
    let mut request = tonic::Request::new(Outgoing {
        bytes: payload.bytes.clone(),
        batch_id: 0,
    });
    ctx.authorize(&mut request);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        grpc.unary(request, ctx.path.clone(), RawCodec::<A>::default())
            .await
    };
    tokio::time::timeout(ctx.timeout, call).await
}

/// Counts one measured answer: verdicts and latency, or the error by code.
fn record<A: Answer>(
    tally: &Mutex<Tally>,
    ctx: &Ctx,
    payload: &Payload,
    result: Result<Result<tonic::Response<A>, Status>, tokio::time::error::Elapsed>,
    origin: Instant,
    done: Instant,
    lag: Option<Duration>,
) {
    let mut tally = lock(tally);
    if let Some(lag) = lag {
        tally.lag.saturating_record(lag.as_nanos().max(1) as u64);
    }
    match result {
        Ok(Ok(response)) => {
            let mut verdicts = Verdicts::default();
            match response.get_ref().tally(payload, &mut verdicts) {
                Ok(()) => tally.success(payload, done - origin, &verdicts, done),
                Err(problem) => tally.error(BAD_RESPONSE, || problem, 1, done),
            }
        }
        Ok(Err(status)) => tally.status(&status, 1, done),
        Err(_) => tally.error(
            "DEADLINE_EXCEEDED",
            || format!("no answer within {:?} (loadgen --timeout)", ctx.timeout),
            1,
            done,
        ),
    }
}

/// Closed loop: one request in flight at a time (unary, empty and batch modes).
async fn unary_worker<A: Answer>(
    ctx: Arc<Ctx>,
    worker: usize,
    channel: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut cursor = worker * ctx.payloads.len() / ctx.workers;
    loop {
        let sent = Instant::now();
        let Some(measured) = ctx.control.admit(sent) else {
            return;
        };
        let payload = ctx.payload(&mut cursor).clone();
        let result = call_once::<A>(&mut grpc, &ctx, &payload).await;
        let done = Instant::now();
        if measured {
            record(&tally, &ctx, &payload, result, sent, done, None);
        }
    }
}

/// Open loop (unary, empty and batch modes): one pacer per connection sends on its schedule,
/// each request as its own task, at most `slots` in flight. Only the pacer waits for send
/// times.
async fn pacer<A: Answer>(
    ctx: Arc<Ctx>,
    pacer: usize,
    slots: usize,
    channel: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    let rate = ctx.rate.unwrap_or(1.0);
    let grpc = tonic::client::Grpc::new(channel);
    let free = Arc::new(tokio::sync::Semaphore::new(slots));
    let mut cursor = pacer * ctx.payloads.len() / ctx.workers;
    let mut k = 0u64;
    loop {
        let intended = ctx.control.start + schedule_offset(k, pacer, ctx.workers, rate);
        k += 1;
        let Some(measured) = ctx.control.admit(intended) else {
            break;
        };
        // A slot free at once: any lateness is the pacer's own (reported as send lag) and
        // latency runs from the actual send. Waiting for a slot: the daemon held us up, and
        // latency runs from the intended time if the slot came free after it.
        let (permit, ready_at) = match free.clone().try_acquire_owned() {
            Ok(permit) => (permit, None),
            Err(_) => match free.clone().acquire_owned().await {
                Ok(permit) => (permit, Some(Instant::now())),
                Err(_) => break,
            },
        };
        timer::sleep_until(intended).await;
        let sent = Instant::now();
        let origin = match ready_at {
            Some(ready_at) => latency_origin(intended, ready_at, sent),
            None => sent,
        };
        let payload = ctx.payload(&mut cursor).clone();
        let mut grpc = grpc.clone();
        let ctx = ctx.clone();
        let tally = tally.clone();
        tokio::spawn(async move {
            let result = call_once::<A>(&mut grpc, &ctx, &payload).await;
            let done = Instant::now();
            if measured {
                record(
                    &tally,
                    &ctx,
                    &payload,
                    result,
                    origin,
                    done,
                    Some(sent - intended),
                );
            }
            drop(permit);
        });
    }
    // Every request sent has been answered (or timed out) once all slots are free again.
    let _ = free.acquire_many(slots as u32).await;
}

/// A message sent on a stream and not yet answered.
struct InFlight {
    batch_id: u64,
    origin: Instant,
    sent: Instant,
    payload: Payload,
    measured: bool,
}

/// One stream with up to `pipeline` messages in flight; reopened after a failure.
async fn stream_worker(ctx: Arc<Ctx>, worker: usize, channel: Channel, tally: Arc<Mutex<Tally>>) {
    let mut cursor = worker * ctx.payloads.len() / ctx.workers;
    let mut k = 0u64;
    let mut next_id = 1u64;
    let mut stopping = false;
    while !stopping {
        let (tx, rx) = tokio::sync::mpsc::channel::<Outgoing>(ctx.pipeline + 1);
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let open = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
            let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
            ctx.authorize(&mut request);
            grpc.streaming(
                request,
                ctx.path.clone(),
                RawCodec::<BatchAnswer>::default(),
            )
            .await
        };
        let mut inbound = match tokio::time::timeout(ctx.timeout, open).await {
            Ok(Ok(response)) => response.into_inner(),
            failed => {
                let now = Instant::now();
                if now >= ctx.control.measure_start {
                    let mut tally = lock(&tally);
                    match failed {
                        Ok(Err(status)) => tally.status(&status, 1, now),
                        _ => tally.error(
                            "DEADLINE_EXCEEDED",
                            || "stream did not open in time".into(),
                            1,
                            now,
                        ),
                    }
                }
                if ctx.control.measure_end.is_some_and(|end| now >= end) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(ctx.pipeline);
        let mut room_since = Instant::now();
        // Ok(()) ends the run; Err(status) reopens the stream.
        let outcome: Result<(), Status> = 'stream: loop {
            // Send whatever is due while the window has room.
            while !stopping && in_flight.len() < ctx.pipeline {
                let now = Instant::now();
                let (intended, origin) = match ctx.rate {
                    None => (now, now),
                    Some(rate) => {
                        let intended =
                            ctx.control.start + schedule_offset(k, worker, ctx.workers, rate);
                        if intended > now {
                            break;
                        }
                        (intended, latency_origin(intended, room_since, now))
                    }
                };
                let Some(measured) = ctx.control.admit(intended) else {
                    stopping = true;
                    break;
                };
                k += 1;
                let payload = ctx.payload(&mut cursor).clone();
                let batch_id = next_id;
                next_id += 1;
                if tx
                    .try_send(Outgoing {
                        bytes: payload.bytes.clone(),
                        batch_id,
                    })
                    .is_err()
                {
                    break 'stream Err(Status::unavailable(
                        "the stream closed under the load generator",
                    ));
                }
                if measured && ctx.rate.is_some() {
                    lock(&tally).lag.saturating_record(
                        now.saturating_duration_since(intended).as_nanos().max(1) as u64,
                    );
                }
                in_flight.push_back(InFlight {
                    batch_id,
                    origin,
                    sent: now,
                    payload,
                    measured,
                });
            }
            if in_flight.is_empty() {
                if stopping {
                    break Ok(());
                }
                // Open loop, nothing in flight, next send not due yet (closed loop never gets
                // here: it fills the window or stops).
                if let Some(rate) = ctx.rate {
                    timer::sleep_until(
                        ctx.control.start + schedule_offset(k, worker, ctx.workers, rate),
                    )
                    .await;
                }
                continue;
            }
            let oldest = in_flight.front().map_or_else(Instant::now, |f| f.sent);
            let due = match ctx.rate {
                Some(rate) if !stopping && in_flight.len() < ctx.pipeline => {
                    Some(ctx.control.start + schedule_offset(k, worker, ctx.workers, rate))
                }
                _ => None,
            };
            let answer = tokio::select! {
                biased;
                answer = inbound.message() => answer,
                () = tokio::time::sleep_until((oldest + ctx.timeout).into()) => {
                    break Err(Status::deadline_exceeded(format!("no answer within {:?} (loadgen --timeout)", ctx.timeout)));
                }
                () = async {
                    match due {
                        Some(due) => timer::sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                } => continue,
            };
            let done = Instant::now();
            let message = match answer {
                Ok(Some(message)) => message,
                Ok(None) => break Err(Status::unknown("stream ended with answers outstanding")),
                Err(status) => break Err(status),
            };
            let Some(flight) = in_flight.pop_front() else {
                break Err(Status::internal("answer with nothing in flight"));
            };
            if in_flight.len() + 1 == ctx.pipeline {
                room_since = done;
            }
            if !flight.measured {
                continue;
            }
            let mut verdicts = Verdicts::default();
            let checked = if message.batch_id != flight.batch_id {
                Err(format!(
                    "batch_id {} answered where {} was due",
                    message.batch_id, flight.batch_id
                ))
            } else {
                message.tally(&flight.payload, &mut verdicts)
            };
            let mut tally = lock(&tally);
            match checked {
                Ok(()) => tally.success(&flight.payload, done - flight.origin, &verdicts, done),
                Err(problem) => tally.error(BAD_RESPONSE, || problem, 1, done),
            }
        };
        match outcome {
            Ok(()) => {
                // Half-close and let the daemon finish the stream (not measured).
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(1), inbound.message()).await;
                return;
            }
            Err(status) => {
                let now = Instant::now();
                let lost = in_flight.iter().filter(|f| f.measured).count() as u64;
                if lost > 0 {
                    lock(&tally).status(&status, lost, now);
                }
                if ctx.control.measure_end.is_some_and(|end| now >= end) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Suppress mode: what every worker shares.
struct Mutations {
    /// Mutations started so far (warm-up included): the index of the next fresh number.
    next: AtomicU64,
    first: u64,
    count: u64,
    start: u64,
    verify_every: u64,
    prefix: String,
    tenant: String,
    campaign: String,
}

impl Mutations {
    fn number(&self, k: u64) -> u64 {
        self.first + (self.start + k) % self.count
    }
}

/// Error key of a verification Check that did not answer.
const VERIFY_FAILED: &str = "VERIFY_FAILED";
/// Error key of a number that was already blocked before its Suppress (not fresh).
const NOT_FRESH: &str = "NOT_FRESH";
/// Error key of an acknowledged mutation answered BLOCK, but not for INTERNAL_DNC.
const NOT_INTERNAL_DNC: &str = "NOT_INTERNAL_DNC";

/// A data-plane Check of `number` for the verification of a mutation.
async fn verify_check(
    grpc: &mut tonic::client::Grpc<Channel>,
    ctx: &Ctx,
    mutations: &Mutations,
    number: u64,
) -> Result<UnaryAnswer, String> {
    let request = proto::CheckRequest {
        number: Number::from_u64_unchecked(number).to_e164_string(),
        tenant: mutations.tenant.clone(),
        campaign: mutations.campaign.clone(),
    };
    let payload = Payload {
        bytes: prost::Message::encode_to_vec(&request).into(),
        numbers: 1,
        present: 0,
    };
    match call_once::<UnaryAnswer>(grpc, ctx, &payload).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(format!(
            "Check {}: {}",
            code_name(status.code()),
            status.message()
        )),
        Err(_) => Err(format!("Check: no answer within {:?}", ctx.timeout)),
    }
}

/// Closed loop, suppress mode: one Suppress of a fresh number in flight at a time; every
/// `verify_every`th is checked before (ALLOW) and right after its ack (BLOCK INTERNAL_DNC).
async fn suppress_worker(
    ctx: Arc<Ctx>,
    mutations: Arc<Mutations>,
    admin: Channel,
    data: Channel,
    tally: Arc<Mutex<Tally>>,
) {
    use proto::admin::admin_client::AdminClient;
    let mut admin = AdminClient::new(admin);
    let mut grpc = tonic::client::Grpc::new(data);
    let block = proto::Verdict::Block as i32;
    let internal_dnc = proto::Reason::InternalDnc as i32;
    loop {
        let Some(measured) = ctx.control.admit(Instant::now()) else {
            return;
        };
        let k = mutations.next.fetch_add(1, Ordering::Relaxed);
        let number = mutations.number(k);
        let verify = mutations.verify_every > 0 && k.is_multiple_of(mutations.verify_every);
        if verify {
            // The number must not be blocked yet, or the check after the ack proves nothing.
            let before = verify_check(&mut grpc, &ctx, &mutations, number).await;
            let problem = match before {
                Ok(answer) if answer.verdict == proto::Verdict::Allow as i32 => None,
                Ok(answer) => Some((
                    NOT_FRESH,
                    format!(
                        "{} answered verdict {} reasons {:?} before its Suppress (use another --first-number range)",
                        Number::from_u64_unchecked(number),
                        answer.verdict,
                        answer.reasons
                    ),
                )),
                Err(message) => Some((VERIFY_FAILED, format!("before the Suppress: {message}"))),
            };
            if let Some((code, message)) = problem {
                if measured {
                    lock(&tally).error(code, || message, 1, Instant::now());
                }
                continue;
            }
        }
        let request_id = format!("{}-{k}", mutations.prefix);
        let mut request = tonic::Request::new(proto::admin::SuppressRequest {
            tenant: mutations.tenant.clone(),
            set: String::new(),
            numbers: vec![Number::from_u64_unchecked(number).to_e164_string()],
            reason: "suppressd loadgen".into(),
            source: proto::admin::Channel::Phone as i32,
            request_id: request_id.clone(),
        });
        ctx.authorize(&mut request);
        let sent = Instant::now();
        let result = tokio::time::timeout(ctx.timeout, admin.suppress(request)).await;
        let acked = Instant::now();
        let response = match result {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                if measured {
                    lock(&tally).status(&status, 1, acked);
                }
                continue;
            }
            Err(_) => {
                if measured {
                    lock(&tally).error(
                        "DEADLINE_EXCEEDED",
                        || format!("no answer within {:?} (loadgen --timeout)", ctx.timeout),
                        1,
                        acked,
                    );
                }
                continue;
            }
        };
        if response.request_id != request_id
            || response.duplicate
            || response.applied != 1
            || !response.invalid.is_empty()
        {
            if measured {
                lock(&tally).error(
                    BAD_RESPONSE,
                    || {
                        format!(
                            "Suppress {request_id}: request_id {:?}, duplicate {}, applied {}, invalid {:?}",
                            response.request_id,
                            response.duplicate,
                            response.applied,
                            response.invalid
                        )
                    },
                    1,
                    acked,
                );
            }
            continue;
        }
        if !verify {
            if measured {
                let mut tally = lock(&tally);
                tally.ok += 1;
                tally.checks += 1;
                tally
                    .latency
                    .saturating_record((acked - sent).as_nanos().max(1) as u64);
                tally.done(acked);
            }
            continue;
        }
        // Enforcement: a Check that starts after the ack must see the mutation.
        let after = verify_check(&mut grpc, &ctx, &mutations, number).await;
        let answered = Instant::now();
        let mut tally = lock(&tally);
        match &after {
            Ok(answer) if answer.verdict == block && answer.reasons.contains(&internal_dnc) => {
                if measured {
                    tally.verified += 1;
                    tally
                        .ack_to_enforced
                        .saturating_record((answered - acked).as_nanos().max(1) as u64);
                }
            }
            Ok(answer) if answer.verdict == proto::Verdict::Allow as i32 => {
                // Counted whether measured or not: an acknowledged mutation not in force.
                tally.violations += 1;
                if tally.violation_example.is_none() {
                    tally.violation_example = Some(format!(
                        "{} ALLOW after Suppress {request_id} was acknowledged (sequence {})",
                        Number::from_u64_unchecked(number),
                        response.sequence
                    ));
                }
            }
            Ok(answer) => {
                if measured {
                    tally.error(
                        NOT_INTERNAL_DNC,
                        || {
                            format!(
                                "after Suppress {request_id}: verdict {} reasons {:?}",
                                answer.verdict, answer.reasons
                            )
                        },
                        1,
                        answered,
                    );
                }
            }
            Err(message) => {
                if measured {
                    tally.error(
                        VERIFY_FAILED,
                        || format!("after Suppress {request_id}: {message}"),
                        1,
                        answered,
                    );
                }
            }
        }
        if measured {
            let mut verdicts = Verdicts::default();
            if let Ok(answer) = &after {
                verdicts.count(answer.verdict);
            }
            // The mutation itself was acknowledged: it counts, whatever its verification found.
            tally.ok += 1;
            tally.checks += 1;
            tally.verdicts.merge(&verdicts);
            tally
                .latency
                .saturating_record((acked - sent).as_nanos().max(1) as u64);
            tally.done(answered);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Setup(String),
}

/// Runs the load and returns what it measured. Blocking: builds its own tokio runtime.
pub fn run(args: &LoadgenArgs) -> Result<Report, LoadgenError> {
    let plan = plan(args).map_err(LoadgenError::Usage)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let token = match &args.token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                LoadgenError::Usage(format!("--token-file {}: {e}", path.display()))
            })?;
            let value =
                AsciiMetadataValue::try_from(format!("Bearer {}", text.trim())).map_err(|_| {
                    LoadgenError::Usage(format!(
                        "--token-file {}: holds characters a header cannot carry",
                        path.display()
                    ))
                })?;
            Some(value)
        }
    };
    let payloads = if args.mode == Mode::Suppress {
        // Every mutation carries a fresh number: nothing to pre-encode.
        Vec::new()
    } else {
        let source = load_source(args, &mut rng).map_err(LoadgenError::Setup)?;
        build_payloads(args, &plan, &source, &mut rng).map_err(LoadgenError::Setup)?
    };
    // One thread: a current-thread runtime, so the channel's buffer task, the callers and the
    // connection never hand work to each other across threads (cheaper per call, which leaves
    // more of a shared machine to the daemon being measured).
    let mut builder = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(args.threads);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .map_err(|e| LoadgenError::Setup(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(drive(args, &plan, payloads, token))
}

/// The shared state of a suppress-mode run: a request-id prefix and a starting point in the
/// number range unique to this run (clock and process id), so reruns against the same daemon
/// send fresh request ids and, unless the range is exhausted, fresh numbers.
fn mutations_of(args: &LoadgenArgs) -> Result<Mutations, LoadgenError> {
    let first = Number::parse_e164(&args.first_number)
        .map_err(|e| LoadgenError::Usage(format!("--first-number: {e}")))?
        .get();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let run = nanos ^ (u64::from(std::process::id()) << 48);
    let mut rng = ChaCha8Rng::seed_from_u64(run);
    Ok(Mutations {
        next: AtomicU64::new(0),
        first,
        count: args.number_count,
        start: rng.random_range(0..args.number_count),
        verify_every: args.verify_every,
        prefix: format!("loadgen-{nanos:x}-{}", std::process::id()),
        tenant: args.tenant.clone(),
        campaign: args.campaign.clone(),
    })
}

async fn connect(url: &str, flag: &str, count: usize) -> Result<Vec<Channel>, LoadgenError> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| LoadgenError::Usage(format!("{flag} '{url}': {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| LoadgenError::Setup(format!("cannot connect to {url}: {e}")))?;
        channels.push(channel);
    }
    Ok(channels)
}

async fn drive(
    args: &LoadgenArgs,
    plan: &Plan,
    payloads: Vec<Payload>,
    token: Option<AsciiMetadataValue>,
) -> Result<Report, LoadgenError> {
    let channels = connect(&args.target, "--target", args.connections).await?;
    let (admin_channels, mutations) = if args.mode == Mode::Suppress {
        (
            connect(&args.admin, "--admin", args.connections).await?,
            Some(Arc::new(mutations_of(args)?)),
        )
    } else {
        (Vec::new(), None)
    };
    let method = match args.mode {
        Mode::Unary | Mode::Suppress => "Check",
        Mode::Empty => "Ping",
        Mode::Batch => "CheckBatch",
        Mode::Stream => "CheckStream",
    };
    let path = PathAndQuery::try_from(format!("/suppressd.v1.Suppression/{method}"))
        .map_err(|e| LoadgenError::Setup(e.to_string()))?;
    let start = Instant::now();
    let measure_start = start + args.warmup;
    let ctx = Arc::new(Ctx {
        control: Control {
            start,
            measure_start,
            measure_end: plan.duration.map(|d| measure_start + d),
            remaining: plan.requests.map(AtomicU64::new),
        },
        payloads,
        rate: args.rate,
        workers: plan.workers,
        pipeline: plan.pipeline,
        timeout: args.timeout,
        path,
        token,
    });
    let tallies: Vec<Arc<Mutex<Tally>>> = (0..args.connections)
        .map(|_| Arc::new(Mutex::new(Tally::new())))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..plan.workers {
        let connection = worker % args.connections;
        let channel = channels[connection].clone();
        let tally = tallies[connection].clone();
        let ctx = ctx.clone();
        // Open loop, one request per call: one pacer per connection with its share of slots.
        let slots =
            plan.concurrency / plan.workers + usize::from(worker < plan.concurrency % plan.workers);
        match (args.mode, plan.paced) {
            (Mode::Unary | Mode::Empty, false) => {
                tasks.spawn(unary_worker::<UnaryAnswer>(ctx, worker, channel, tally))
            }
            (Mode::Batch, false) => {
                tasks.spawn(unary_worker::<BatchAnswer>(ctx, worker, channel, tally))
            }
            (Mode::Unary | Mode::Empty, true) => {
                tasks.spawn(pacer::<UnaryAnswer>(ctx, worker, slots, channel, tally))
            }
            (Mode::Batch, true) => {
                tasks.spawn(pacer::<BatchAnswer>(ctx, worker, slots, channel, tally))
            }
            (Mode::Stream, _) => tasks.spawn(stream_worker(ctx, worker, channel, tally)),
            (Mode::Suppress, _) => tasks.spawn(suppress_worker(
                ctx,
                mutations.clone().expect("suppress mode has its mutations"),
                admin_channels[connection].clone(),
                channel,
                tally,
            )),
        };
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(|e| LoadgenError::Setup(format!("worker failed: {e}")))?;
    }
    let mut total = Tally::new();
    for tally in &tallies {
        total.merge(&lock(tally));
    }
    let end = total
        .last_done
        .unwrap_or_else(Instant::now)
        .max(measure_start);
    let elapsed = (end - measure_start).as_secs_f64().max(1e-9);
    let errors: u64 = total.errors.values().sum();
    Ok(Report {
        mode: args.mode,
        target: args.target.clone(),
        connections: args.connections,
        concurrency: args.concurrency,
        pipeline: plan.pipeline,
        threads: args.threads,
        batch_size: plan.batch_size,
        encoding: if args.mode.batched() && !args.strings {
            "e164"
        } else {
            "strings"
        },
        hit_ratio: plan.hit_ratio,
        tenant: args.tenant.clone(),
        campaign: args.campaign.clone(),
        rate: args.rate,
        warmup_s: args.warmup.as_secs_f64(),
        elapsed_s: elapsed,
        requests: total.ok,
        errors,
        errors_by_code: total
            .errors
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        error_examples: total
            .error_examples
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        requests_per_s: total.ok as f64 / elapsed,
        checks: total.checks,
        checks_per_s: total.checks as f64 / elapsed,
        present_sent: total.present,
        verdicts: total.verdicts,
        latency_us: Latency::of(&total.latency),
        schedule_lag_us: args.rate.map(|_| Latency::of(&total.lag)),
        mutations: mutations.map(|m| MutationFigures {
            admin: args.admin.clone(),
            verify_every: m.verify_every,
            verified: total.verified,
            violations: total.violations,
            violation_example: total.violation_example.clone(),
            ack_to_enforced_us: Latency::of(&total.ack_to_enforced),
            request_id_prefix: m.prefix.clone(),
            first_number: args.first_number.clone(),
            number_count: m.count,
        }),
    })
}

/// `suppressd loadgen`: runs, prints the report (text or `--json`) on stdout. Exit status 0 when
/// every request succeeded, 1 when any failed, none completed, an acknowledged mutation was
/// found not in force (suppress mode) or setup failed; 2 for bad arguments.
pub fn loadgen_main(args: LoadgenArgs) -> ExitCode {
    match run(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string(&report) {
                    Ok(json) => outln!("{json}"),
                    Err(error) => {
                        eprintln!("suppressd loadgen: {error}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                out!("{}", format_report(&report));
            }
            if report.clean() {
                ExitCode::SUCCESS
            } else {
                if report.requests == 0 {
                    eprintln!("suppressd loadgen: no request completed");
                }
                if let Some(m) = report.mutations.as_ref().filter(|m| m.violations > 0) {
                    eprintln!(
                        "suppressd loadgen: {} acknowledged mutations were not in force",
                        m.violations
                    );
                }
                ExitCode::from(1)
            }
        }
        Err(LoadgenError::Usage(message)) => {
            eprintln!("suppressd loadgen: {message}");
            ExitCode::from(2)
        }
        Err(LoadgenError::Setup(message)) => {
            eprintln!("suppressd loadgen: {message}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadgenArgs,
    }

    fn args(extra: &[&str]) -> LoadgenArgs {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("arguments parse").args
    }

    fn plan_error(extra: &[&str]) -> String {
        plan(&args(extra)).expect_err("plan must refuse")
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

    fn plan_for(extra: &[&str]) -> Plan {
        plan(&args(extra)).unwrap()
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
    fn suppress_mode_is_closed_loop_over_a_valid_range() {
        let plan = plan_for(&["--mode", "suppress", "--concurrency", "64"]);
        assert_eq!((plan.workers, plan.batch_size), (64, 1));
        assert!(plan_error(&["--mode", "suppress", "--rate", "100"]).contains("closed loop"));
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
    fn suppress_numbers_walk_the_range_and_wrap() {
        let mutations = Mutations {
            next: AtomicU64::new(0),
            first: 15_032_000_000,
            count: 10,
            start: 7,
            verify_every: 1,
            prefix: "p".into(),
            tenant: String::new(),
            campaign: String::new(),
        };
        let numbers: Vec<u64> = (0..10)
            .map(|k| mutations.number(k) - 15_032_000_000)
            .collect();
        assert_eq!(numbers, [7, 8, 9, 0, 1, 2, 3, 4, 5, 6]);
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

    #[test]
    fn present_sources_exclude_each_other() {
        let argv = ["loadgen", "--present", "a.snap", "--present-list", "b.txt"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn a_present_source_turns_on_one_percent_hits() {
        assert_eq!(plan_for(&["--present", "a.snap"]).hit_ratio, 0.01);
        assert_eq!(
            plan_for(&["--present-list", "a.txt", "--hit-ratio", "0"]).hit_ratio,
            0.0
        );
    }

    #[test]
    fn hits_are_exact_and_evenly_spread() {
        for (ratio, per_thousand) in [(0.0, 0), (0.01, 10), (0.25, 250), (0.5, 500), (1.0, 1000)] {
            for start in [0u64, 1000, 7000] {
                let hits = (start..start + 1000).filter(|&i| is_hit(i, ratio)).count();
                assert_eq!(hits, per_thousand, "ratio {ratio} from {start}");
            }
        }
        // 1 %: one hit in every run of 100.
        let positions: Vec<u64> = (0..300).filter(|&i| is_hit(i, 0.01)).collect();
        assert_eq!(positions, vec![99, 199, 299]);
    }

    #[test]
    fn open_loop_schedule_interleaves_workers_evenly() {
        // 4 workers at 1000 req/s in total: one send per millisecond, round robin.
        let mut sends: Vec<Duration> = Vec::new();
        for worker in 0..4 {
            for k in 0..5 {
                sends.push(schedule_offset(k, worker, 4, 1000.0));
            }
        }
        sends.sort();
        for (i, at) in sends.iter().enumerate() {
            assert_eq!(*at, Duration::from_millis(i as u64));
        }
        // Each worker alone runs at rate / workers.
        assert_eq!(
            schedule_offset(1, 0, 4, 1000.0) - schedule_offset(0, 0, 4, 1000.0),
            Duration::from_millis(4)
        );
        // Long runs stay exact: 600 s at 1 M/s.
        assert_eq!(
            schedule_offset(600_000_000, 0, 1, 1e6),
            Duration::from_secs(600)
        );
    }

    #[test]
    fn latency_counts_from_the_intended_time_only_when_the_daemon_held_us_up() {
        let base = Instant::now();
        let at = |us: u64| base + Duration::from_micros(us);
        // Idle worker woken 300 us late by the timer: the lag is ours, measure from the send.
        assert_eq!(latency_origin(at(1000), at(200), at(1300)), at(1300));
        // Busy until 1500 (previous answer late): the daemon's doing, measure from 1000.
        assert_eq!(latency_origin(at(1000), at(1500), at(1500)), at(1000));
        // Free exactly on time.
        assert_eq!(latency_origin(at(1000), at(1000), at(1000)), at(1000));
    }

    #[test]
    fn measured_phase_and_request_budget() {
        let start = Instant::now();
        let control = Control {
            start,
            measure_start: start + Duration::from_secs(1),
            measure_end: Some(start + Duration::from_secs(2)),
            remaining: Some(AtomicU64::new(2)),
        };
        assert_eq!(control.admit(start), Some(false));
        assert_eq!(
            control.admit(start + Duration::from_millis(1500)),
            Some(true)
        );
        assert_eq!(
            control.admit(start + Duration::from_millis(1600)),
            Some(true)
        );
        assert_eq!(
            control.admit(start + Duration::from_millis(1700)),
            None,
            "budget spent"
        );
        assert_eq!(control.admit(start + Duration::from_secs(2)), None);
    }

    #[test]
    fn stream_ids_are_appended_as_a_valid_field() {
        let request = proto::CheckBatchRequest {
            tenant: "acme".into(),
            e164: vec![12015550123, 48601234567],
            ..Default::default()
        };
        let bytes: Arc<[u8]> = prost::Message::encode_to_vec(&request).into();
        let mut buffer = Vec::new();
        write_outgoing(
            &Outgoing {
                bytes: bytes.clone(),
                batch_id: 77,
            },
            &mut buffer,
        );
        let decoded: proto::CheckBatchRequest = prost::Message::decode(buffer.as_slice()).unwrap();
        assert_eq!(decoded.batch_id, 77);
        assert_eq!(decoded.e164, request.e164);
        assert_eq!(decoded.tenant, "acme");
        // Unary and batch requests go out untouched.
        let mut buffer = Vec::new();
        write_outgoing(
            &Outgoing {
                bytes: bytes.clone(),
                batch_id: 0,
            },
            &mut buffer,
        );
        assert_eq!(buffer, &bytes[..]);
    }

    #[test]
    fn answers_are_tallied_and_checked() {
        let payload = Payload {
            bytes: Arc::from(Vec::new()),
            numbers: 4,
            present: 1,
        };
        let mut verdicts = Verdicts::default();
        let answer = BatchAnswer {
            batch_id: 0,
            verdicts: vec![1, 1, 2, 3],
        };
        answer.tally(&payload, &mut verdicts).unwrap();
        assert_eq!(
            (verdicts.allow, verdicts.block, verdicts.invalid),
            (2, 1, 1)
        );
        let short = BatchAnswer {
            batch_id: 0,
            verdicts: vec![1],
        };
        assert!(short.tally(&payload, &mut verdicts).is_err());
        let mut verdicts = Verdicts::default();
        UnaryAnswer {
            verdict: 2,
            reasons: vec![6],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        UnaryAnswer {
            verdict: 2,
            reasons: vec![1],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        UnaryAnswer {
            verdict: 0,
            reasons: vec![],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        UnaryAnswer {
            verdict: 42,
            reasons: vec![],
        }
        .tally(&payload, &mut verdicts)
        .unwrap();
        assert_eq!(
            verdicts,
            Verdicts {
                allow: 0,
                block: 1,
                invalid: 1,
                unspecified: 1,
                other: 1
            }
        );
    }

    #[test]
    fn unary_answers_skip_the_proof_fields() {
        let full = proto::CheckResponse {
            verdict: proto::Verdict::Block as i32,
            reasons: vec![proto::Reason::NationalRegistry as i32],
            matched_sets: vec!["us-dnc".into()],
            normalized_number: "+12015550123".into(),
            versions: vec![proto::SetVersion {
                set: "us-dnc".into(),
                version: 2,
            }],
            tenant: "acme".into(),
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&full);
        let answer: UnaryAnswer = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(answer.verdict, proto::Verdict::Block as i32);
        assert_eq!(answer.reasons, vec![proto::Reason::NationalRegistry as i32]);
    }

    #[test]
    fn reservoir_keeps_everything_when_small_and_a_sample_when_large() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            reservoir(0..10, 100, &mut rng),
            (0..10).collect::<Vec<u64>>()
        );
        let sample = reservoir(0..100_000, 1000, &mut rng);
        assert_eq!(sample.len(), 1000);
        // Spread over the whole input, not the first 1000.
        assert!(sample.iter().filter(|&&v| v >= 50_000).count() > 400);
    }

    #[test]
    fn absent_numbers_stay_in_the_present_range_and_out_of_the_set() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let all: Vec<u64> = (0..5000u64).map(|i| 48_601_000_000 + i * 2).collect();
        let source = Source {
            sample: all.clone(),
            members: Members::Sorted(all.clone()),
        };
        for _ in 0..1000 {
            let value = draw_absent(&source, &mut rng).unwrap();
            assert!(all.binary_search(&value).is_err());
            assert!((48_601_000_000..48_601_010_000).contains(&value), "{value}");
        }
        // A source that fills its blocks cannot give absent numbers.
        let full: Vec<u64> = (48_601_000_000..48_601_010_000).collect();
        let source = Source {
            sample: full.clone(),
            members: Members::Sorted(full),
        };
        assert!(draw_absent(&source, &mut rng).is_err());
        // No source: synthetic US numbers.
        let none = Source {
            sample: Vec::new(),
            members: Members::None,
        };
        let value = draw_absent(&none, &mut rng).unwrap();
        assert!((12_002_000_000..=19_999_999_999).contains(&value));
    }

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
        let latency = Latency::of(&a.latency);
        assert_eq!(latency.p50, 10.0);
        assert!((latency.max - 1000.0).abs() < 1.0, "{latency:?}");
    }
}
