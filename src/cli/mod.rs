//! The `suppressd` command line: argument definitions, dispatch and exit codes.
//!
//! Owns turning flags into calls on the engine and turning failures into short messages and
//! exit codes: 0 success, 1 runtime failure (unreadable or corrupt files, a bad line under
//! `--strict`), 64 usage or configuration error (bad flags, bad region, bad key file). Flag names
//! are a stable interface for scripts: add, never rename. It must never print a phone number in
//! the clear in an error, warning or summary (only `check --show-numbers` does, on stdout), and
//! never panic on bad input.
//!
//! Submodules: [`input`] (input formats and change lists), [`build`], [`inspect`], [`check`],
//! [`gen_sample`], [`keygen`], [`admin`], [`attempt`], [`fleet`] and [`serve`] (the daemon's
//! process main), one per command.

pub mod admin;
pub mod attempt;
pub mod build;
pub mod check;
pub mod fleet;
pub mod gen_sample;
pub mod input;
pub mod inspect;
pub mod keygen;
pub mod serve;

use crate::engine::fuse::FilterWidth;
use crate::engine::keys::{KeyError, SecretKey};
use crate::engine::number::Region;
use crate::engine::snapshot::{SetKind, SnapshotError};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for a runtime failure: I/O, a corrupt file, a bad line under `--strict`.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code for a usage or configuration error, `serve`'s bad config included (sysexits.h
/// `EX_USAGE`; scripts and systemd units know this one code for "fix the input").
pub const EXIT_USAGE: u8 = 64;

/// Exact, microsecond do-not-call and consent checks for predictive dialers and SIP proxies.
#[derive(Debug, Parser)]
#[command(name = "suppressd", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build a snapshot file from number lists, or apply a change list to a snapshot
    #[command(
        after_long_help = build::AFTER_HELP,
        override_usage = "suppressd build --input FILE [--input FILE...] --format FORMAT --name NAME \
                          --kind KIND [OPTIONS] --out FILE\n       \
                          suppressd build --base FILE --changes FILE [--changes FILE...] \
                          --format FORMAT [OPTIONS] --out FILE"
    )]
    Build(build::BuildArgs),
    /// Show a snapshot's header, sections and sizes, verifying every checksum
    Inspect(inspect::InspectArgs),
    /// Look numbers up in a snapshot
    Check(check::CheckArgs),
    /// Write distinct, valid random numbers of a country (demos, tests, benchmarks)
    GenSample(gen_sample::GenSampleArgs),
    /// Write a new random fingerprint key file (mode 0600) for keyed sets
    Keygen(keygen::KeygenArgs),
    /// Run the daemon (embedded example config and sample lists without --config)
    Serve(ServeArgs),
    /// Change a running daemon: opt-outs, consent, erasure, change lists, reload, compaction
    Admin(admin::AdminArgs),
    /// Attempt caps on a running daemon: reserve, commit, release, outcome
    Attempt(attempt::AttemptArgs),
    /// Load generator for a running daemon's gRPC plane
    Loadgen(crate::loadgen::LoadgenArgs),
    /// Create a bearer token: prints the token once, and the tokens-file entry with its hash
    Token(TokenArgs),
    /// Fleet snapshots: publish a version to every daemon, show the heads
    Fleet(fleet::FleetArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file; without it the embedded example runs with ./data
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Truncate a damaged journal at the damage instead of refusing to start (loses the
    /// acknowledged mutations after it: only after reading the error)
    #[arg(long)]
    pub repair_journal: bool,
}

#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// Name recorded as who asked (audit log)
    #[arg(long)]
    pub name: String,
    /// Tenant the token acts for (required for check tokens)
    #[arg(long)]
    pub tenant: Option<String>,
    /// check (data plane), admin, or metrics (reads /metrics only)
    #[arg(long, default_value = "check")]
    pub role: String,
    /// Where to write the token itself (mode 0600); the entry for the tokens file goes to stdout
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Set kinds as flag values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// Do-not-call: a number in the set must not be called
    Block,
    /// Consent: a number in the set may be called (until its expiry, if any)
    Consent,
}

impl From<KindArg> for SetKind {
    fn from(kind: KindArg) -> SetKind {
        match kind {
            KindArg::Block => SetKind::Block,
            KindArg::Consent => SetKind::Consent,
        }
    }
}

/// Filter widths as flag values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FilterArg {
    /// 8-bit fingerprints: ~1.13 bytes per key, ~0.39 % of absent keys reach the exact table
    Fuse8,
    /// 16-bit fingerprints: ~2.25 bytes per key, ~0.0015 % of absent keys reach the exact table
    Fuse16,
}

impl From<FilterArg> for FilterWidth {
    fn from(filter: FilterArg) -> FilterWidth {
        match filter {
            FilterArg::Fuse8 => FilterWidth::Fuse8,
            FilterArg::Fuse16 => FilterWidth::Fuse16,
        }
    }
}

/// Set layouts as flag values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// A slot table where it suits the numbers (plain sets without expiry), else the filter
    /// layout
    Slots,
    /// A line table where it suits the numbers (dense plain sets), else the filter layout
    Lines,
    /// Binary fuse filter + Elias-Fano exact table
    Filter,
}

impl From<LayoutArg> for crate::engine::set::LayoutChoice {
    fn from(layout: LayoutArg) -> crate::engine::set::LayoutChoice {
        match layout {
            LayoutArg::Slots => crate::engine::set::LayoutChoice::Slots,
            LayoutArg::Lines => crate::engine::set::LayoutChoice::Auto,
            LayoutArg::Filter => crate::engine::set::LayoutChoice::FilterEliasFano,
        }
    }
}

/// A failure to report: a short message and the exit code that goes with it.
#[derive(Debug)]
pub struct CliError {
    pub exit: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            exit: EXIT_USAGE,
            message: message.into(),
        }
    }

    pub fn runtime(message: impl Into<String>) -> CliError {
        CliError {
            exit: EXIT_RUNTIME,
            message: message.into(),
        }
    }
}

impl From<SnapshotError> for CliError {
    fn from(error: SnapshotError) -> CliError {
        // A missing or mismatched key is the caller's configuration, not a damaged file.
        match error {
            SnapshotError::Key { .. } => CliError::usage(error.to_string()),
            _ => CliError::runtime(error.to_string()),
        }
    }
}

impl From<KeyError> for CliError {
    fn from(error: KeyError) -> CliError {
        CliError::usage(error.to_string())
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// The first CPU feature this build was compiled for (`.cargo/config.toml` targets x86-64-v3)
/// that the running CPU lacks, or None. Checked before anything else runs: without it an older
/// CPU would die of SIGILL somewhere in a lookup instead of saying why.
pub fn cpu_features_missing() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! require {
            ($($feature:tt),*) => {
                $(
                    if cfg!(target_feature = $feature) && !std::is_x86_feature_detected!($feature) {
                        return Some($feature);
                    }
                )*
            };
        }
        require!("popcnt", "lzcnt", "bmi1", "bmi2", "avx2", "fma");
    }
    None
}

/// Parses the arguments, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // clap exits 2 on usage errors; scripts get 64 here, like every other usage error.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The daemon and the load generator own their exit codes.
    let cli = match cli.command {
        Command::Serve(args) => {
            let options = crate::server::RunOptions {
                repair_journal: args.repair_journal,
            };
            return serve::main(args.config.as_deref(), options);
        }
        Command::Loadgen(args) => return crate::loadgen::loadgen_main(args),
        command => Cli { command },
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error.message);
            ExitCode::from(error.exit)
        }
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> CliResult<()> {
    match cli.command {
        Command::Build(args) => build::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Check(args) => check::run(args),
        Command::GenSample(args) => gen_sample::run(args),
        Command::Keygen(args) => keygen::run(args),
        Command::Admin(args) => admin::run(args),
        Command::Attempt(args) => attempt::run(args),
        Command::Token(args) => token(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Serve(_) | Command::Loadgen(_) => {
            Err(CliError::usage("serve and loadgen run from main"))
        }
    }
}

/// `suppressd token`: a random token written to a 0600 file, and its tokens-file entry.
fn token(args: TokenArgs) -> CliResult<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let role = match args.role.as_str() {
        "check" => crate::server::auth::Role::Check,
        "admin" => crate::server::auth::Role::Admin,
        "metrics" => crate::server::auth::Role::Metrics,
        _ => return Err(CliError::usage("--role is check, admin or metrics")),
    };
    if role == crate::server::auth::Role::Metrics && args.tenant.is_some() {
        return Err(CliError::usage("a metrics token has no --tenant"));
    }
    if role == crate::server::auth::Role::Check && args.tenant.is_none() {
        return Err(CliError::usage("a check token needs --tenant"));
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.out.display())))?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CliError::runtime(format!("{}: {e}", args.out.display())))?;
    out!(
        "{}",
        crate::server::auth::token_entry(&args.name, &token, args.tenant.as_deref(), role)
    );
    Ok(())
}

/// Value parser for `--region`: a two-letter region code known to the phone number metadata.
pub fn parse_region(text: &str) -> Result<Region, String> {
    Region::parse(text).map_err(|error| error.to_string())
}

/// Reads a key file given on the command line; a bad one is a configuration error.
pub fn load_key(path: Option<&Path>) -> CliResult<Option<SecretKey>> {
    path.map(SecretKey::load)
        .transpose()
        .map_err(CliError::from)
}

/// Worker threads for builds and sample generation.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Groups digits by thousands for human-readable summaries.
pub fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Bytes per key, or `None` for an empty set (no meaningful ratio).
pub fn per_key(bytes: u64, keys: u64) -> Option<f64> {
    (keys > 0).then(|| bytes as f64 / keys as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
