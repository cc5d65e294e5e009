//! `suppressd attempt reserve|commit|release|outcome …`: attempt caps against a running
//! daemon's data plane (gRPC), for scripts and demos: reserve before dialling, then commit,
//! release or record the outcome under the same call id.
//!
//! The number comes from an argument or `--input FILE` (first line; arguments show up in the
//! process list). The bearer token comes from `--token-file`. Output is one JSON object on
//! stdout, without the number; a refused reservation is an answer (exit 0), not an error.

use super::{CliError, CliResult};
use crate::proto::suppression_client::SuppressionClient;
use crate::proto::{AttemptOutcome, AttemptRequest, AttemptResponse};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AttemptArgs {
    /// Data plane (gRPC) address
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50151")]
    pub server: String,
    /// File holding a check or admin bearer token (when the daemon requires credentials)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AttemptCommand,
}

#[derive(Debug, Args)]
pub struct Call {
    /// The dialer's id of the call attempt (idempotency key)
    #[arg(long)]
    pub call_id: String,
    /// Tenant (the token's tenant when it has one)
    #[arg(long, default_value = "")]
    pub tenant: String,
    #[arg(long, default_value = "")]
    pub campaign: String,
    /// The number, from the first line of FILE ('-' for stdin)
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// The number (prefer --input to keep it out of the process list)
    pub number: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutcomeArg {
    NoContact,
    Contact,
    Refusal,
    OptOut,
}

#[derive(Debug, Subcommand)]
pub enum AttemptCommand {
    /// Reserve an attempt (granted, or refused with ATTEMPT_LIMIT and next_allowed_at)
    Reserve(Call),
    /// The call was placed: the attempt counts
    Commit(Call),
    /// The call was not placed: free the slot
    Release(Call),
    /// How the call ended (opt_out also suppresses the number: give the number)
    Outcome {
        #[command(flatten)]
        call: Call,
        #[arg(long, value_enum)]
        outcome: OutcomeArg,
    },
}

fn number(call: &Call) -> CliResult<String> {
    if let Some(path) = &call.input {
        let text = if path.as_os_str() == "-" {
            std::io::read_to_string(std::io::stdin())
        } else {
            std::fs::read_to_string(path)
        }
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        return Ok(text.lines().next().unwrap_or("").trim().to_owned());
    }
    Ok(call.number.clone().unwrap_or_default())
}

fn print(response: &AttemptResponse) {
    let outcome = AttemptOutcome::try_from(response.outcome)
        .ok()
        .filter(|o| *o != AttemptOutcome::Unspecified)
        .map(|o| {
            o.as_str_name()
                .trim_start_matches("ATTEMPT_OUTCOME_")
                .to_ascii_lowercase()
        });
    let reasons: Vec<&str> = response
        .reasons
        .iter()
        .filter_map(|r| crate::proto::Reason::try_from(*r).ok())
        .map(|r| r.as_str_name().trim_start_matches("REASON_"))
        .collect();
    let next = (response.next_allowed_at_unix_ms > 0)
        .then(|| {
            jiff::Timestamp::from_millisecond(response.next_allowed_at_unix_ms)
                .ok()
                .map(|t| t.to_string())
        })
        .flatten();
    let value = serde_json::json!({
        "call_id": response.call_id,
        "granted": response.granted,
        "remaining": response.remaining,
        "stage": response.stage,
        "reasons": reasons,
        "next_allowed_at": next,
        "next_allowed_at_unix_ms": response.next_allowed_at_unix_ms,
        "duplicate": response.duplicate,
        "outcome": outcome,
        "suppression_request_id": (!response.suppression_request_id.is_empty()).then_some(&response.suppression_request_id),
    });
    outln!("{value}");
}

pub fn run(args: AttemptArgs) -> CliResult<()> {
    let token = match &args.token_file {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("token file {}: {e}", path.display())))?
                .trim()
                .to_owned(),
        ),
    };
    let (call, outcome) = match &args.command {
        AttemptCommand::Reserve(call)
        | AttemptCommand::Commit(call)
        | AttemptCommand::Release(call) => (call, AttemptOutcome::Unspecified),
        AttemptCommand::Outcome { call, outcome } => (
            call,
            match outcome {
                OutcomeArg::NoContact => AttemptOutcome::NoContact,
                OutcomeArg::Contact => AttemptOutcome::Contact,
                OutcomeArg::Refusal => AttemptOutcome::Refusal,
                OutcomeArg::OptOut => AttemptOutcome::OptOut,
            },
        ),
    };
    let message = AttemptRequest {
        call_id: call.call_id.clone(),
        number: number(call)?,
        tenant: call.tenant.clone(),
        campaign: call.campaign.clone(),
        outcome: outcome as i32,
    };
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::usage("token file holds characters a header cannot carry"))?;
        request.metadata_mut().insert("authorization", value);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(e.to_string()))?;
    let server = args.server.clone();
    runtime.block_on(async move {
        let mut client = SuppressionClient::connect(server.clone())
            .await
            .map_err(|e| CliError::runtime(format!("cannot connect to {server}: {e}")))?;
        let answer = match &args.command {
            AttemptCommand::Reserve(_) => client.reserve_attempt(request).await,
            AttemptCommand::Commit(_) => client.commit_attempt(request).await,
            AttemptCommand::Release(_) => client.release_attempt(request).await,
            AttemptCommand::Outcome { .. } => client.record_outcome(request).await,
        };
        let response = answer.map_err(|status| {
            let message = format!("{server}: {}: {}", status.code(), status.message());
            match status.code() {
                tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::PermissionDenied
                | tonic::Code::AlreadyExists
                | tonic::Code::Unauthenticated => CliError::usage(message),
                _ => CliError::runtime(message),
            }
        })?;
        print(&response.into_inner());
        Ok(())
    })
}
