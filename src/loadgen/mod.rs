//! `suppressd loadgen`: drives a running daemon over gRPC and reports what it measured.
//!
//! Several HTTP/2 connections (one tonic `Channel` each, TCP_NODELAY), a fixed number of
//! requests in flight spread over them, and five modes: `unary` (Check), `batch` (CheckBatch),
//! `stream` (CheckStream, `--pipeline` messages in flight per stream), `empty` (Ping: same
//! request as `unary`, no lookup on the server: the baseline that measures the RPC itself) and
//! `suppress` (admin-plane mutations verified by checks). The exit status is 1 when any request
//! failed or an acknowledged mutation was found not in force.
//!
//! One job per file, in the order of a run:
//! - `args.rs`: the flags; `plan.rs`: the flags checked together and resolved into a plan;
//! - `payloads.rs`: present and absent numbers, encoded into requests before the timed phase;
//! - `wire.rs`: the codec (pre-encoded bytes out, verdict-only answers in);
//! - `control.rs`: phases, request budget, open-loop schedule; `timer.rs`: precise sleeps;
//! - `workers.rs`: the check-mode senders; `suppress.rs`: suppress mode's sender;
//! - `tally.rs`: what the senders count; `report.rs`: the figures and their text;
//! - `run.rs`: the wiring of one run. This file holds only the command's entry point, and
//!   the files under it never import from it.
//!
//! The load generator talks to the daemon only through its wire API: it imports the engine
//! (numbers, snapshot files) and the proto types, never the server.

mod args;
mod control;
mod payloads;
mod plan;
mod report;
mod run;
mod suppress;
mod tally;
mod timer;
mod wire;
mod workers;

pub use args::{LoadgenArgs, MAX_DURATION, Mode, parse_duration};
pub use control::{latency_origin, schedule_offset};
pub use payloads::is_hit;
pub use plan::{Plan, plan};
pub use report::{Latency, MutationFigures, Report, format_report};
pub use run::{LoadgenError, run};
use std::process::ExitCode;
pub use tally::{Verdicts, code_name};

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
