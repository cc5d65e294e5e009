//! `suppressd check`: looks numbers up in a snapshot file.
//!
//! Owns parsing each input like the daemon would (`+digits` on the fast path, other formats
//! through libphonenumber with the default region), looking it up at a date, and printing one
//! answer per input, in input order, as text or JSON lines. Numbers and inputs are masked
//! unless `--show-numbers`; invalid inputs are answered, not fatal. It never modifies the
//! snapshot.
//!
//! Client mode (`--server URL`, with `--tenant` and `--campaign`) asks a running daemon
//! instead: the inputs are read by `input::read_numbers` and answered by `crate::client`.

use super::input::{self, LineReader, is_skipped, trim};
use super::{CliError, CliResult, load_key, parse_region};
use crate::engine::date::Day;
use crate::engine::number::{NumberParser, Region, mask_input};
use crate::engine::set::{Membership, SuppressionSet};
use serde::Serialize;
use std::io::{BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Snapshot file to look numbers up in (offline mode)
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "server",
        conflicts_with = "server"
    )]
    pub snapshot: Option<PathBuf>,
    /// Ask a running daemon instead (client mode), e.g. http://127.0.0.1:50151
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Tenant to check for (client mode; default: the daemon's default tenant)
    #[arg(long, requires = "server")]
    pub tenant: Option<String>,
    /// Campaign to check for (client mode; default: the daemon's default campaign)
    #[arg(long, requires = "server")]
    pub campaign: Option<String>,
    /// Instant to check for (client mode; calling windows and attempt caps), RFC 3339, e.g.
    /// 2026-12-07T20:30:00-05:00 [default: now]
    #[arg(long, value_name = "RFC3339", requires = "server", value_parser = parse_instant)]
    pub at: Option<i64>,
    /// Default region for national formats, e.g. PL or US
    #[arg(long, value_name = "CC", value_parser = parse_region)]
    pub region: Option<Region>,
    /// Key file of a keyed set
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Print one JSON object per input instead of text
    #[arg(long)]
    pub json: bool,
    /// Print inputs and numbers in the clear (masked by default)
    #[arg(long)]
    pub show_numbers: bool,
    /// Day the lookup is for (consent expiry) [default: today, UTC]
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<String>,
    /// File with one number per line ('-' for stdin); blank and '#' lines are skipped
    #[arg(long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Fully validate '+digits' numbers too (by default only their shape is checked, like the
    /// daemon's hot path)
    #[arg(long)]
    pub validate: bool,
    /// Numbers to check (they show up in the process list: prefer --input for real data)
    #[arg(value_name = "NUMBER")]
    pub numbers: Vec<String>,
}

/// One answer, as printed with `--json`.
#[derive(Debug, Serialize)]
struct Answer {
    input: String,
    number: Option<String>,
    in_set: Option<bool>,
    /// Consent expiry of the entry (first day it no longer counts), when it has one.
    expires: Option<String>,
    error: Option<String>,
    error_kind: Option<&'static str>,
}

struct Checker {
    set: SuppressionSet,
    parser: NumberParser,
    validate: bool,
    date: Day,
    json: bool,
    show: bool,
}

impl Checker {
    fn answer(&self, input: &str) -> Answer {
        let shown_input = if self.show {
            input.to_owned()
        } else {
            mask_input(input)
        };
        let parsed = if self.validate {
            self.parser.parse(input)
        } else {
            self.parser.parse_fast(input)
        };
        match parsed {
            Err(error) => Answer {
                input: shown_input,
                number: None,
                in_set: None,
                expires: None,
                error: Some(error.to_string()),
                error_kind: Some(error.kind()),
            },
            Ok(number) => {
                let (in_set, expires) = match self.set.get(number) {
                    Membership::Absent => (false, None),
                    Membership::Present { expires } => {
                        (expires.is_none_or(|day| self.date < day), expires)
                    }
                };
                Answer {
                    input: shown_input,
                    number: Some(if self.show {
                        number.to_e164_string()
                    } else {
                        number.masked().to_string()
                    }),
                    in_set: Some(in_set),
                    expires: expires.map(|day| day.to_string()),
                    error: None,
                    error_kind: None,
                }
            }
        }
    }

    fn write(&self, out: &mut impl Write, input: &str) -> std::io::Result<()> {
        let answer = self.answer(input);
        if self.json {
            serde_json::to_writer(&mut *out, &answer).map_err(std::io::Error::other)?;
            return writeln!(out);
        }
        match (&answer.number, answer.in_set, &answer.expires) {
            (Some(number), Some(true), None) => writeln!(out, "{number}  in set"),
            (Some(number), Some(true), Some(day)) => {
                writeln!(out, "{number}  in set (until {day})")
            }
            (Some(number), _, Some(day)) => writeln!(out, "{number}  not in set (expired {day})"),
            (Some(number), _, None) => writeln!(out, "{number}  not in set"),
            (None, ..) => writeln!(
                out,
                "{}  invalid: {}",
                answer.input,
                answer.error.as_deref().unwrap_or("invalid")
            ),
        }
    }
}

pub fn run(args: CheckArgs) -> CliResult<()> {
    if args.numbers.is_empty() && args.input.is_none() {
        return Err(CliError::usage(
            "give numbers to check, or --input FILE ('-' for stdin)",
        ));
    }
    if let Some(server) = &args.server {
        return run_remote(&args, server);
    }
    let Some(snapshot) = &args.snapshot else {
        return Err(CliError::usage("give --snapshot FILE or --server URL"));
    };
    let date = match &args.date {
        Some(text) => super::build::parse_day_flag("--date", text)?,
        None => Day::today(),
    };
    let key = load_key(args.key_file.as_deref())?;
    let set = SuppressionSet::open(snapshot, key.as_ref())?;
    if !args.json {
        let header = set.header();
        eprintln!(
            "set '{}' version {} ({}, {} keys, source date {}), at {date}",
            header.name,
            header.version,
            header.kind.name(),
            header.key_count,
            header
                .source_date
                .map_or_else(|| "unknown".into(), |day| day.to_string()),
        );
    }
    let checker = Checker {
        set,
        parser: NumberParser::new(args.region),
        validate: args.validate,
        date,
        json: args.json,
        show: args.show_numbers,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result =
        check_all(&checker, &args, &mut out).and_then(|()| out.flush().map_err(Failure::Output));
    match result {
        Ok(()) => Ok(()),
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(Failure::Output(error)) if error.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Output(error)) => {
            Err(CliError::runtime(format!("cannot write answers: {error}")))
        }
        Err(Failure::Input(message)) => Err(CliError::runtime(message)),
    }
}

/// Why answering stopped: the input could not be read, or the output not written.
enum Failure {
    Input(String),
    Output(std::io::Error),
}

fn check_all(checker: &Checker, args: &CheckArgs, out: &mut impl Write) -> Result<(), Failure> {
    for number in &args.numbers {
        checker.write(out, number).map_err(Failure::Output)?;
    }
    let Some(path) = &args.input else {
        return Ok(());
    };
    let input_error =
        |error: std::io::Error| Failure::Input(format!("{}: {error}", path.display()));
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(path).map_err(input_error)?)
    };
    let mut lines = LineReader::new(reader);
    while let Some(line) = lines.next_line().map_err(input_error)? {
        if is_skipped(line.bytes) {
            continue;
        }
        // Every input line gets one answer, so outputs line up with inputs; bytes that are not
        // UTF-8 become replacement characters and are answered as invalid.
        let text = String::from_utf8_lossy(trim(line.bytes));
        checker.write(out, &text).map_err(Failure::Output)?;
    }
    Ok(())
}

/// `--at`: an RFC 3339 instant as unix ms (an offset or `Z` is required: never local time).
fn parse_instant(text: &str) -> Result<i64, String> {
    let at: jiff::Timestamp = text
        .parse()
        .map_err(|e| format!("'{text}' is not an RFC 3339 instant with an offset: {e}"))?;
    match at.as_millisecond() {
        ms if ms > 0 => Ok(ms),
        _ => Err(format!("'{text}' is before 1970")),
    }
}

/// Client mode: the same inputs, answered by a running daemon with verdicts and reasons.
fn run_remote(args: &CheckArgs, server: &str) -> CliResult<()> {
    let inputs =
        input::read_numbers(&args.numbers, args.input.as_deref()).map_err(CliError::runtime)?;
    let request = crate::client::RemoteCheck {
        server: server.to_owned(),
        tenant: args.tenant.clone().unwrap_or_default(),
        campaign: args.campaign.clone().unwrap_or_default(),
        at_unix_ms: args.at.unwrap_or(0),
        inputs,
        json: args.json,
        show_numbers: args.show_numbers,
    };
    crate::client::run(&request).map_err(CliError::runtime)
}
