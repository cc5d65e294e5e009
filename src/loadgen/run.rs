//! One run of `suppressd loadgen`, from arguments to report: reads the token, prepares the
//! payloads, builds the runtime, opens the connections, starts one sender per worker and folds
//! the connections' tallies into the [`Report`].
//!
//! Owns the wiring of a run, not its parts: never encodes a request, paces a send or formats
//! a figure itself.

use super::args::{LoadgenArgs, Mode};
use super::control::Control;
use super::payloads::{self, Payload};
use super::plan::{Plan, plan};
use super::report::{Latency, MutationFigures, Report};
use super::suppress::{Mutations, mutations_of, suppress_pacer, suppress_worker};
use super::tally::Tally;
use super::wire::{BatchAnswer, UnaryAnswer};
use super::workers::{Ctx, lock, pacer, stream_worker, unary_worker};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// Bad arguments (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The run could not be set up: a file, the runtime, a connection (exit status 1).
    #[error("{0}")]
    Setup(String),
}

/// Runs the load and returns what it measured. Blocking: builds its own tokio runtime.
pub fn run(args: &LoadgenArgs) -> Result<Report, LoadgenError> {
    let plan = plan(args).map_err(LoadgenError::Usage)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let token = match &args.token_file {
        None => None,
        Some(path) => Some(read_token(path)?),
    };
    let payloads = if args.mode.mutates() {
        // Every mutation carries a fresh number: nothing to pre-encode.
        Vec::new()
    } else {
        payloads::generate(args, &plan, &mut rng).map_err(LoadgenError::Setup)?
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

/// `authorization: Bearer …` from `--token-file`.
fn read_token(path: &Path) -> Result<AsciiMetadataValue, LoadgenError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadgenError::Usage(format!("--token-file {}: {e}", path.display())))?;
    AsciiMetadataValue::try_from(format!("Bearer {}", text.trim())).map_err(|_| {
        LoadgenError::Usage(format!(
            "--token-file {}: holds characters a header cannot carry",
            path.display()
        ))
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
    let (admin_channels, mutations) = if args.mode.mutates() {
        (
            // Reserve mode stays on the data plane: its "admin" channels are the target's.
            if args.mode == Mode::Reserve {
                channels.clone()
            } else {
                connect(&args.admin, "--admin", args.connections).await?
            },
            Some(Arc::new(mutations_of(args).map_err(LoadgenError::Usage)?)),
        )
    } else {
        (Vec::new(), None)
    };
    let method = match args.mode {
        Mode::Unary | Mode::Suppress | Mode::Reserve => "Check",
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
            (Mode::Suppress, true) => tasks.spawn(suppress_pacer(
                ctx,
                worker,
                slots,
                mutations.clone().expect("suppress mode has its mutations"),
                admin_channels[connection].clone(),
                channel,
                tally,
            )),
            (Mode::Suppress | Mode::Reserve, _) => tasks.spawn(suppress_worker(
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
    Ok(report_of(
        args,
        plan,
        &total,
        measure_start,
        mutations.as_deref(),
    ))
}

/// The figures of a finished run from the merged tally; rates over the time from the start
/// of the measured phase to the last answer.
fn report_of(
    args: &LoadgenArgs,
    plan: &Plan,
    total: &Tally,
    measure_start: Instant,
    mutations: Option<&Mutations>,
) -> Report {
    let end = total
        .last_done
        .unwrap_or_else(Instant::now)
        .max(measure_start);
    let elapsed = (end - measure_start).as_secs_f64().max(1e-9);
    let errors: u64 = total.errors.values().sum();
    Report {
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
    }
}
