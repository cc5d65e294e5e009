//! `suppressd admin …`: drives a running daemon's admin plane (opt-outs, consent, erasure,
//! change lists, reload, compaction) for operators and scripts.
//!
//! Numbers come from arguments or, better for real data, `--input FILE` (arguments show up in
//! the process list). The bearer token comes from `--token-file`, never from a flag value.
//! Output is one JSON object per call on stdout; numbers are never printed.

use super::input::{self, Action, LineReader};
use super::{CliError, CliResult};
use crate::engine::number::NumberParser;
use crate::proto::admin::admin_client::AdminClient;
use crate::proto::admin::{
    AdminStatusRequest, ApplyChangesRequest, Channel, CompactRequest, ConsentRequest, EraseRequest,
    GetErasureRequest, ReloadRequest, SuppressRequest,
};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Admin plane address
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50152")]
    pub server: String,
    /// File holding the admin bearer token (when the daemon requires credentials)
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SourceArg {
    Phone,
    Sms,
    Chat,
    WebForm,
    SocialMessage,
    Email,
    Import,
}

#[derive(Debug, Args)]
pub struct Mutation {
    /// Tenant whose set changes (the token's tenant when it has one)
    #[arg(long)]
    pub tenant: Option<String>,
    /// The tenant's set; default: its internal do-not-call list (or its consent set)
    #[arg(long)]
    pub set: Option<String>,
    /// Idempotency key: repeating it returns the first result and changes nothing
    #[arg(long)]
    pub request_id: String,
    #[arg(long, default_value = "")]
    pub reason: String,
    #[arg(long, value_enum)]
    pub source: Option<SourceArg>,
    /// Numbers, one per line ('-' for stdin)
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    pub numbers: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ChangeFormat {
    /// `NUMBER,A|D`
    Lines,
    /// `AREA,NUMBER,A|D`
    UsRegistry,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Put numbers on a tenant's do-not-call list
    Suppress(Mutation),
    /// Take numbers off a tenant's do-not-call list
    Unsuppress(Mutation),
    /// Record consent (optionally until --expires)
    GrantConsent {
        #[command(flatten)]
        mutation: Mutation,
        /// First day the consent no longer counts (YYYY-MM-DD)
        #[arg(long)]
        expires: Option<String>,
    },
    /// Withdraw consent
    RevokeConsent(Mutation),
    /// Erase a person (GDPR art. 17): prints the receipt
    Erase {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        request_id: String,
        #[arg(long, value_enum)]
        source: Option<SourceArg>,
        /// The number (prefer --input to keep it out of the process list)
        number: Option<String>,
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Show an erasure receipt (PENDING or COMPLETE)
    GetErasure {
        receipt_id: String,
        /// Tenant whose receipt it is (the token's tenant when it has one)
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Apply a registry change list to a running daemon
    ApplyChanges {
        /// Global set, e.g. us-dnc
        #[arg(long)]
        set: String,
        #[arg(long, value_name = "FILE")]
        changes: PathBuf,
        #[arg(long, value_enum, default_value = "us-registry")]
        format: ChangeFormat,
        #[arg(long)]
        request_id: String,
        /// Issue date of the change list (YYYY-MM-DD)
        #[arg(long)]
        source_date: Option<String>,
    },
    /// Rescan the data directory for new snapshots
    Reload,
    /// Fold mutations into new snapshot versions now
    Compact,
    /// Overlay sizes, journal size, pending erasures
    Status,
}

fn source(value: Option<SourceArg>) -> i32 {
    (match value {
        None => Channel::Unspecified,
        Some(SourceArg::Phone) => Channel::Phone,
        Some(SourceArg::Sms) => Channel::Sms,
        Some(SourceArg::Chat) => Channel::Chat,
        Some(SourceArg::WebForm) => Channel::WebForm,
        Some(SourceArg::SocialMessage) => Channel::SocialMessage,
        Some(SourceArg::Email) => Channel::Email,
        Some(SourceArg::Import) => Channel::Import,
    }) as i32
}

/// Numbers from arguments and an input file; at least one.
fn numbers(arguments: &[String], input: Option<&PathBuf>) -> CliResult<Vec<String>> {
    let numbers =
        input::read_numbers(arguments, input.map(PathBuf::as_path)).map_err(CliError::runtime)?;
    if numbers.is_empty() {
        return Err(CliError::usage(
            "give numbers, or --input FILE ('-' for stdin)",
        ));
    }
    Ok(numbers)
}

fn request<T>(message: T, token: Option<&str>) -> CliResult<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::usage("token file holds characters a header cannot carry"))?;
        request.metadata_mut().insert("authorization", value);
    }
    Ok(request)
}

fn status_error(server: &str, status: tonic::Status) -> CliError {
    let message = format!("{server}: {}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated => CliError::usage(message),
        _ => CliError::runtime(message),
    }
}

fn print(value: serde_json::Value) {
    outln!("{value}");
}

pub fn run(args: AdminArgs) -> CliResult<()> {
    let token = match &args.token_file {
        None => None,
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("token file {}: {e}", path.display())))?
                .trim()
                .to_owned(),
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(e.to_string()))?;
    runtime.block_on(async move {
        let mut client = AdminClient::connect(args.server.clone())
            .await
            .map_err(|e| CliError::runtime(format!("cannot connect to {}: {e}", args.server)))?;
        let token = token.as_deref();
        let server = args.server.as_str();
        let mutation_json = |r: crate::proto::admin::MutationResponse| {
            serde_json::json!({
                "request_id": r.request_id,
                "sequence": r.sequence,
                "duplicate": r.duplicate,
                "applied": r.applied,
                "invalid": r.invalid.iter().map(|i| serde_json::json!({"index": i.index, "error": i.error})).collect::<Vec<_>>(),
                "acknowledged_at_unix_ms": r.acknowledged_at_unix_ms,
            })
        };
        let receipt_json = |r: crate::proto::admin::ErasureReceipt| {
            let state = if r.state == crate::proto::admin::ErasureState::Complete as i32 { "COMPLETE" } else { "PENDING" };
            serde_json::json!({
                "receipt_id": r.receipt_id, "request_id": r.request_id, "tenant": r.tenant, "state": state,
                "requested_at_unix_ms": r.requested_at_unix_ms, "in_force_at_unix_ms": r.in_force_at_unix_ms,
                "completed_at_unix_ms": r.completed_at_unix_ms, "removed_from": r.removed_from, "added_to": r.added_to,
                "retained_in": r.retained_in, "stream_sequence": r.stream_sequence,
                "fleet": r.fleet.map(|f| serde_json::json!({
                    "stream_first_sequence": f.stream_first_sequence, "pending": f.pending,
                    "hosts": f.hosts.iter().map(|h| serde_json::json!({"host_id": h.host_id, "applied": h.applied_sequence, "clean_through": h.clean_through, "versions": h.versions})).collect::<Vec<_>>(),
                    "heads": f.heads.iter().map(|h| serde_json::json!({"set": h.set, "version": h.version, "through_seq": h.through_seq})).collect::<Vec<_>>(),
                })),
            })
        };
        match args.command {
            AdminCommand::Suppress(m) => {
                let message = SuppressRequest {
                    tenant: m.tenant.unwrap_or_default(),
                    set: m.set.unwrap_or_default(),
                    numbers: numbers(&m.numbers, m.input.as_ref())?,
                    reason: m.reason,
                    source: source(m.source),
                    request_id: m.request_id,
                };
                let response = client.suppress(request(message, token)?).await.map_err(|s| status_error(server, s))?;
                print(mutation_json(response.into_inner()));
            }
            AdminCommand::Unsuppress(m) => {
                let message = SuppressRequest {
                    tenant: m.tenant.unwrap_or_default(),
                    set: m.set.unwrap_or_default(),
                    numbers: numbers(&m.numbers, m.input.as_ref())?,
                    reason: m.reason,
                    source: source(m.source),
                    request_id: m.request_id,
                };
                let response = client.unsuppress(request(message, token)?).await.map_err(|s| status_error(server, s))?;
                print(mutation_json(response.into_inner()));
            }
            AdminCommand::GrantConsent { mutation: m, expires } => {
                let message = ConsentRequest {
                    tenant: m.tenant.unwrap_or_default(),
                    set: m.set.unwrap_or_default(),
                    numbers: numbers(&m.numbers, m.input.as_ref())?,
                    expires: expires.unwrap_or_default(),
                    source: source(m.source),
                    request_id: m.request_id,
                    reason: m.reason,
                };
                let response = client.grant_consent(request(message, token)?).await.map_err(|s| status_error(server, s))?;
                print(mutation_json(response.into_inner()));
            }
            AdminCommand::RevokeConsent(m) => {
                let message = ConsentRequest {
                    tenant: m.tenant.unwrap_or_default(),
                    set: m.set.unwrap_or_default(),
                    numbers: numbers(&m.numbers, m.input.as_ref())?,
                    expires: String::new(),
                    source: source(m.source),
                    request_id: m.request_id,
                    reason: m.reason,
                };
                let response = client.revoke_consent(request(message, token)?).await.map_err(|s| status_error(server, s))?;
                print(mutation_json(response.into_inner()));
            }
            AdminCommand::Erase { tenant, request_id, source: channel, number, input } => {
                let given: Vec<String> = number.into_iter().collect();
                let mut all = numbers(&given, input.as_ref())?;
                if all.len() != 1 {
                    return Err(CliError::usage("erase takes exactly one number"));
                }
                let message = EraseRequest { tenant: tenant.unwrap_or_default(), number: all.remove(0), request_id, source: source(channel) };
                let response = client.erase(request(message, token)?).await.map_err(|s| status_error(server, s))?.into_inner();
                let mut value = response.receipt.map(receipt_json).unwrap_or_default();
                value["duplicate"] = serde_json::Value::from(response.duplicate);
                print(value);
            }
            AdminCommand::GetErasure { receipt_id, tenant } => {
                let message = GetErasureRequest { receipt_id, tenant: tenant.unwrap_or_default() };
                let response = client
                    .get_erasure(request(message, token)?)
                    .await
                    .map_err(|s| status_error(server, s))?;
                print(receipt_json(response.into_inner()));
            }
            AdminCommand::ApplyChanges { set, changes, format, request_id, source_date } => {
                let (additions, deletions) = read_changes(&changes, format)?;
                let message = ApplyChangesRequest { set, additions, deletions, request_id, source_date: source_date.unwrap_or_default() };
                let response = client.apply_changes(request(message, token)?).await.map_err(|s| status_error(server, s))?;
                print(mutation_json(response.into_inner()));
            }
            AdminCommand::Reload => {
                let r = client.reload(request(ReloadRequest {}, token)?).await.map_err(|s| status_error(server, s))?.into_inner();
                print(serde_json::json!({ "loaded": r.loaded, "refused": r.refused }));
            }
            AdminCommand::Compact => {
                let r = client.compact(request(CompactRequest {}, token)?).await.map_err(|s| status_error(server, s))?.into_inner();
                print(serde_json::json!({
                    "written": r.written, "journal_through": r.journal_through,
                    "erasures_completed": r.erasures_completed, "files_deleted": r.files_deleted,
                }));
            }
            AdminCommand::Status => {
                let r = client.status(request(AdminStatusRequest {}, token)?).await.map_err(|s| status_error(server, s))?.into_inner();
                print(serde_json::json!({
                    "overlays": r.overlays.iter().map(|o| serde_json::json!({"set": o.set, "entries": o.entries})).collect::<Vec<_>>(),
                    "journal_bytes": r.journal_bytes, "journal_segments": r.journal_segments,
                    "journal_last_sequence": r.journal_last_sequence, "erasures_pending": r.erasures_pending,
                    "last_compaction_unix_ms": r.last_compaction_unix_ms, "last_compaction_error": r.last_compaction_error,
                    "journal_error": r.journal_error,
                    "fleet": r.fleet.map(|f| serde_json::json!({
                        "name": f.name, "host_id": f.host_id, "instance": f.instance,
                        "connected": f.connected, "following": f.following, "refusing": f.refusing,
                        "lagging": f.lagging, "applied_sequence": f.applied_sequence,
                        "stream_last_sequence": f.stream_last_sequence, "lag_messages": f.lag_messages,
                        "lag_seconds": f.lag_seconds, "hosts_error": f.hosts_error,
                        "hosts": f.hosts.iter().map(|h| serde_json::json!({
                            "host_id": h.host_id, "instance": h.instance,
                            "applied_sequence": h.applied_sequence,
                            "stream_last_sequence": h.stream_last_sequence,
                            "lag_messages": h.lag_messages, "lag_seconds": h.lag_seconds,
                            "heartbeat_unix_ms": h.heartbeat_unix_ms, "build": h.build,
                            "versions": h.versions,
                        })).collect::<Vec<_>>(),
                    })),
                }));
            }
        }
        Ok(())
    })
}

/// Reads a change list into packed E.164 additions and deletions; a bad line is fatal (a
/// partial change list applied to a registry would be worse than none).
fn read_changes(path: &PathBuf, format: ChangeFormat) -> CliResult<(Vec<u64>, Vec<u64>)> {
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::runtime(format!("{}: {e}", path.display())))?;
    let mut reader = LineReader::new(file);
    let parser = NumberParser::new(None);
    let (mut additions, mut deletions) = (Vec::new(), Vec::new());
    while let Some(line) = reader
        .next_line()
        .map_err(|e| CliError::runtime(format!("{}: {e}", path.display())))?
    {
        if input::is_skipped(line.bytes) {
            continue;
        }
        let parsed = match format {
            ChangeFormat::Lines => input::parse_lines_change(&parser, line.bytes, false),
            ChangeFormat::UsRegistry => input::parse_us_change(line.bytes),
        };
        match parsed {
            Ok((number, Action::Add)) => additions.push(number.get()),
            Ok((number, Action::Delete)) => deletions.push(number.get()),
            Err(error) => {
                return Err(CliError::runtime(format!(
                    "{}:{}: {}",
                    path.display(),
                    line.number,
                    error.reason
                )));
            }
        }
    }
    Ok((additions, deletions))
}
