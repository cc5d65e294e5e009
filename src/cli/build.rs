//! `suppressd build`: turns number lists into a snapshot file, or applies a registry change
//! list to an existing snapshot and writes its next version.
//!
//! Owns reading inputs (through [`super::input`]), counting and reporting bad lines, feeding
//! [`SetBuilder`], writing the snapshot atomically and re-opening it to verify and measure it.
//! Bad lines are skipped and counted unless `--strict`; their reports carry file, line, a
//! stable kind and a masked reason, never the number. It never modifies the base snapshot: a
//! new version is always a new file written under a temporary name and renamed.

use super::input::{
    self, Action, InputFormat, LineError, LineReader, parse_lines_change, parse_number,
    parse_us_change, parse_us_record,
};
use super::{
    CliError, CliResult, FilterArg, KindArg, LayoutArg, load_key, parse_region, per_key, thousands,
    threads,
};
use crate::engine::date::Day;
use crate::engine::fuse::FilterWidth;
use crate::engine::keys::{KeyScheme, SecretKey};
use crate::engine::number::{NumberParser, Region};
use crate::engine::set::{LayoutChoice, SetBuilder, SetSpec, SuppressionSet};
use crate::engine::snapshot::SetKind;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Bad lines listed in the summary; the rest are only counted.
const FIRST_INVALID: usize = 5;
/// Lines between progress bar updates (keeps the hot loop free of terminal work).
const PROGRESS_EVERY: u64 = 1 << 16;
const MAX_SOURCE: usize = 4096;

/// Shown by `suppressd build --help`: the input formats and the change-list layout.
pub const AFTER_HELP: &str = "\
Input formats (--format):
  lines        one number per line, any format: +48600100200, +48 600-100-200, or national
               formats like 600 100 200 with --region PL; blank lines and lines starting
               with '#' are skipped. '+digits' is checked for shape only (registry data is
               trusted) unless --validate asks for full libphonenumber validation.
  csv          a header row; the number is in --column (default 'number'); consent sets may
               name an --expiry-column holding YYYY-MM-DD, the first day the consent no longer
               counts (empty: never expires).
  us-registry  the US National Do-Not-Call full list: AREA,NUMBER per line, e.g.
               201,5550123 for +1 201 555 0123 (3 and 7 digits, both starting with 2-9).

Change lists (--base FILE --changes FILE [--changes FILE...]):
  Apply additions and deletions to the set in --base and write its next version (base
  version + 1) to --out, keeping the base's name, kind, key scheme and filter unless
  overridden. One record per line, an action A (add) or D (delete) after the last comma:
    --format us-registry   AREA,NUMBER,A|D     e.g. 201,5550123,D
    --format lines         NUMBER,A|D          e.g. +48600100200,D
  When a number appears more than once, its last record wins; deleting an absent number is
  counted, not an error. Keyed bases need their --key-file. Pass the change list's date as
  --source-date (otherwise the base's source date is kept).

Bad lines are skipped and counted (the summary lists the first few with file:line and
reason); --strict makes the first one fatal (exit 1).";

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Input file (repeat for several); not with --base
    #[arg(long = "input", value_name = "FILE", conflicts_with_all = ["base", "changes"])]
    pub inputs: Vec<PathBuf>,
    /// Format of the input files or change lists
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: InputFormat,
    /// Set name: 1-64 letters, digits, '.', '_' or '-' (default with --base: the base's)
    #[arg(long)]
    pub name: Option<String>,
    /// Set kind (default with --base: the base's)
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// csv: the column holding numbers [default: number]
    #[arg(long, value_name = "NAME")]
    pub column: Option<String>,
    /// csv, consent sets: the column holding expiry days (YYYY-MM-DD, empty = never)
    #[arg(long, value_name = "NAME")]
    pub expiry_column: Option<String>,
    /// Default region for national formats, e.g. PL or US
    #[arg(long, value_name = "CC", value_parser = parse_region)]
    pub region: Option<Region>,
    /// Key file: store keyed fingerprints instead of numbers (erasure sets)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Issue date of the source (the registry copy or change list), YYYY-MM-DD
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub source_date: Option<String>,
    /// Free-text source description [default: FORMAT:FILE[,FILE...]]
    #[arg(long, value_name = "TEXT")]
    pub source: Option<String>,
    /// Filter width [default: fuse8; with --base: the base's]
    #[arg(long, value_enum)]
    pub filter: Option<FilterArg>,
    /// Set layout: `slots` (a slot table: two 64-byte lines read in parallel per lookup, no
    /// filter; plain sets of 1024+ numbers without expiry dates whose span suits it, else the
    /// filter layout), `filter` (binary fuse filter + Elias-Fano; what builds before snapshot
    /// format 5 read) or `lines` (a line table: one index entry and one line per lookup)
    /// [default: slots; with --base: the base's]
    #[arg(long, value_enum)]
    pub layout: Option<LayoutArg>,
    /// Set version [default: build time in unix milliseconds; with --base: base version + 1]
    #[arg(long, value_name = "N")]
    pub set_version: Option<u64>,
    /// Fail on the first bad line (exit 1) instead of skipping it
    #[arg(long)]
    pub strict: bool,
    /// Fully validate every number with libphonenumber, '+digits' too
    #[arg(long)]
    pub validate: bool,
    /// Existing snapshot to apply change lists to
    #[arg(long, value_name = "FILE", requires = "changes")]
    pub base: Option<PathBuf>,
    /// Change list to apply to --base (repeat for several, applied in order)
    #[arg(long = "changes", value_name = "FILE", requires = "base")]
    pub changes: Vec<PathBuf>,
    /// Also print the summary as one JSON object on stdout
    #[arg(long)]
    pub json: bool,
    /// Snapshot file to write (atomically)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// One skipped line, as listed in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct InvalidLine {
    pub file: String,
    pub line: u64,
    pub error_kind: &'static str,
    pub reason: String,
}

/// Bad-line bookkeeping shared by every input format.
#[derive(Debug, Default, Serialize)]
pub struct InvalidLines {
    pub count: u64,
    pub first: Vec<InvalidLine>,
}

/// The summary of a build: printed on stderr, and with `--json` as one object on stdout.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub out: String,
    pub name: String,
    pub kind: &'static str,
    pub key_scheme: &'static str,
    pub key_id: Option<String>,
    pub filter: &'static str,
    pub version: u64,
    pub source: String,
    pub source_date: Option<String>,
    pub lines_read: u64,
    pub records: u64,
    pub invalid: InvalidLines,
    pub duplicates: u64,
    pub keys: u64,
    pub bytes: u64,
    pub bytes_per_key: Option<f64>,
    pub bytes_in_memory: u64,
    pub memory_bytes_per_key: Option<f64>,
    pub filter_bytes: u64,
    pub exact_bytes: u64,
    pub expiry_bytes: u64,
    pub seconds: f64,
    /// Only for change lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<ChangeSummary>,
}

/// What a change list did to its base.
#[derive(Debug, Default, Serialize)]
pub struct ChangeSummary {
    pub base: String,
    pub base_version: u64,
    pub base_keys: u64,
    pub add_records: u64,
    pub delete_records: u64,
    pub added: u64,
    pub already_present: u64,
    pub deleted: u64,
    pub delete_missing: u64,
}

/// Everything the input loops need, set up once.
struct Reader {
    format: InputFormat,
    parser: NumberParser,
    validate: bool,
    strict: bool,
    progress: ProgressBar,
    /// Bytes of earlier files, so the bar spans all inputs.
    done_bytes: u64,
    lines_read: u64,
    records: u64,
    invalid: InvalidLines,
}

impl Reader {
    /// Records a bad line: fatal under `--strict`, otherwise counted (first few kept).
    fn bad(&mut self, path: &Path, line: u64, error: LineError) -> CliResult<()> {
        if self.strict {
            return Err(CliError::runtime(format!(
                "{}:{line}: {} ({})",
                path.display(),
                error.reason,
                error.kind
            )));
        }
        self.invalid.count += 1;
        if self.invalid.first.len() < FIRST_INVALID {
            self.invalid.first.push(InvalidLine {
                file: path.display().to_string(),
                line,
                error_kind: error.kind,
                reason: error.reason,
            });
        }
        Ok(())
    }

    /// Feeds every record line of a line-based file to `handle`.
    fn each_line(
        &mut self,
        path: &Path,
        mut handle: impl FnMut(&Self, &[u8]) -> Result<(), LineError>,
    ) -> CliResult<()> {
        let file = open_input(path)?;
        let mut lines = LineReader::new(file);
        loop {
            if self.lines_read.is_multiple_of(PROGRESS_EVERY) {
                self.progress
                    .set_position(self.done_bytes + lines.consumed());
            }
            let line = lines
                .next_line()
                .map_err(|error| CliError::runtime(format!("{}: {error}", path.display())))?;
            let Some(line) = line else { break };
            self.lines_read += 1;
            let (number, too_long) = (line.number, line.too_long);
            if input::is_skipped(line.bytes) {
                continue;
            }
            self.records += 1;
            let outcome = if too_long {
                Err(LineError::new("line_too_long", "line is over 64 KiB"))
            } else {
                handle(self, line.bytes)
            };
            if let Err(error) = outcome {
                self.bad(path, number, error)?;
            }
        }
        self.done_bytes += lines.consumed();
        self.progress.set_position(self.done_bytes);
        Ok(())
    }

    /// Reads a full list (not a change list) into `builder`.
    fn read_full(
        &mut self,
        path: &Path,
        builder: &mut SetBuilder,
        columns: &CsvColumns,
    ) -> CliResult<()> {
        match self.format {
            InputFormat::Lines => self.each_line(path, |reader, line| {
                let number = parse_number(&reader.parser, line, reader.validate)?;
                push(builder, number, None)
            }),
            InputFormat::UsRegistry => self.each_line(path, |_, line| {
                let number = parse_us_record(line)?;
                push(builder, number, None)
            }),
            InputFormat::Csv => self.read_csv(path, builder, columns),
        }
    }

    fn read_csv(
        &mut self,
        path: &Path,
        builder: &mut SetBuilder,
        columns: &CsvColumns,
    ) -> CliResult<()> {
        let csv_error =
            |error: csv::Error| CliError::runtime(format!("{}: {error}", path.display()));
        let file = open_input(path)?;
        let mut csv = csv::ReaderBuilder::new()
            .flexible(true)
            .comment(Some(b'#'))
            .buffer_capacity(1 << 20)
            .from_reader(file);
        let headers = csv.byte_headers().map_err(csv_error)?.clone();
        let find = |name: &str| {
            headers
                .iter()
                .position(|header| {
                    let header = header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(header);
                    input::trim(header) == name.as_bytes()
                })
                .ok_or_else(|| {
                    // The header row is not echoed: a file without one starts with a number.
                    CliError::runtime(format!(
                        "{}:1: no column '{name}' in the header row",
                        path.display()
                    ))
                })
        };
        let number_at = find(&columns.number)?;
        let expiry_at = columns.expiry.as_deref().map(find).transpose()?;
        // CSV counts rows (header included); blank and comment lines are the csv reader's.
        self.lines_read += 1;
        let mut record = csv::ByteRecord::new();
        while csv.read_byte_record(&mut record).map_err(csv_error)? {
            let (line, byte) = record
                .position()
                .map_or((0, 0), |position| (position.line(), position.byte()));
            self.lines_read += 1;
            self.records += 1;
            if self.records.is_multiple_of(PROGRESS_EVERY) {
                self.progress.set_position(self.done_bytes + byte);
            }
            let outcome = (|| {
                let field = record
                    .get(number_at)
                    .ok_or_else(|| LineError::new("missing_field", "row has no number field"))?;
                let number = parse_number(&self.parser, field, self.validate)?;
                let expires = match expiry_at.map(|at| record.get(at).map(input::trim)) {
                    None | Some(Some(b"")) => None,
                    Some(None) => {
                        return Err(LineError::new("missing_field", "row has no expiry field"));
                    }
                    Some(Some(text)) => Some(parse_expiry(text)?),
                };
                push(builder, number, expires)
            })();
            if let Err(error) = outcome {
                self.bad(path, line, error)?;
            }
        }
        self.done_bytes += csv.position().byte();
        self.progress.set_position(self.done_bytes);
        Ok(())
    }
}

/// Column names for `--format csv`.
struct CsvColumns {
    number: String,
    expiry: Option<String>,
}

fn push(
    builder: &mut SetBuilder,
    number: crate::engine::number::Number,
    expires: Option<Day>,
) -> Result<(), LineError> {
    builder
        .push(number, expires)
        .map_err(|error| LineError::new("bad_expiry", error.to_string()))
}

fn parse_expiry(text: &[u8]) -> Result<Day, LineError> {
    let bad = || LineError::new("bad_expiry", "expiry is not a YYYY-MM-DD date");
    let text = std::str::from_utf8(text).map_err(|_| bad())?;
    Day::parse(text).map_err(|_| bad())
}

fn open_input(path: &Path) -> CliResult<File> {
    File::open(path).map_err(|error| CliError::runtime(format!("{}: {error}", path.display())))
}

/// Parses a date flag without echoing it (a mistyped flag may hold a phone number).
pub fn parse_day_flag(flag: &str, text: &str) -> CliResult<Day> {
    Day::parse(text).map_err(|_| CliError::usage(format!("{flag} must be a date YYYY-MM-DD")))
}

/// A progress bar on a terminal, and a hidden one otherwise (logs stay clean).
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:8} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("reading");
    bar
}

fn input_bytes(paths: &[PathBuf]) -> u64 {
    paths
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum()
}

/// Cuts a source description to the snapshot's limit on a character boundary.
fn limit_source(mut source: String) -> String {
    if source.len() > MAX_SOURCE {
        let mut end = MAX_SOURCE;
        while !source.is_char_boundary(end) {
            end -= 1;
        }
        source.truncate(end);
    }
    source
}

fn describe_files(format: InputFormat, paths: &[PathBuf]) -> String {
    let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("{}:{}", format.name(), files.join(","))
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn run(args: BuildArgs) -> CliResult<()> {
    let started = Instant::now();
    if args.format != InputFormat::Csv && (args.column.is_some() || args.expiry_column.is_some()) {
        return Err(CliError::usage(
            "--column and --expiry-column apply to --format csv only",
        ));
    }
    let source_date = args
        .source_date
        .as_deref()
        .map(|text| parse_day_flag("--source-date", text))
        .transpose()?;
    let key = load_key(args.key_file.as_deref())?;
    let reader = Reader {
        format: args.format,
        parser: NumberParser::new(args.region),
        validate: args.validate,
        strict: args.strict,
        progress: ProgressBar::hidden(),
        done_bytes: 0,
        lines_read: 0,
        records: 0,
        invalid: InvalidLines::default(),
    };
    match &args.base {
        None => build_full(&args, key, source_date, reader, started),
        Some(base) => apply_changes(&args, base, key, source_date, reader, started),
    }
}

fn build_full(
    args: &BuildArgs,
    key: Option<SecretKey>,
    source_date: Option<Day>,
    mut reader: Reader,
    started: Instant,
) -> CliResult<()> {
    if args.inputs.is_empty() {
        return Err(CliError::usage(
            "give --input FILE (or --base FILE --changes FILE)",
        ));
    }
    let (Some(name), Some(kind)) = (&args.name, args.kind) else {
        return Err(CliError::usage("--name and --kind are required"));
    };
    let kind = SetKind::from(kind);
    if args.expiry_column.is_some() && kind != SetKind::Consent {
        return Err(CliError::usage(
            "--expiry-column needs --kind consent (only consent sets expire)",
        ));
    }
    let columns = CsvColumns {
        number: args.column.clone().unwrap_or_else(|| "number".into()),
        expiry: args.expiry_column.clone(),
    };
    let built_at = now();
    let spec = SetSpec {
        name: name.clone(),
        kind,
        filter: args.filter.map_or(FilterWidth::Fuse8, FilterWidth::from),
        source: limit_source(
            args.source
                .clone()
                .unwrap_or_else(|| describe_files(args.format, &args.inputs)),
        ),
        source_date,
        version: args
            .set_version
            .unwrap_or(built_at.as_millis().min(u128::from(u64::MAX)) as u64),
        build_time: built_at.as_secs() as i64,
    };
    let mut builder =
        SetBuilder::new(spec, key.clone()).map_err(|error| CliError::usage(error.to_string()))?;
    builder.layout(
        args.layout
            .map_or(LayoutChoice::default(), LayoutChoice::from),
    );
    let total = input_bytes(&args.inputs);
    builder.reserve((total / args.format.bytes_per_record()).min(1 << 32) as usize);
    reader.progress = progress_bar(total);
    for path in &args.inputs {
        reader.read_full(path, &mut builder, &columns)?;
    }
    finish(args, builder, key, reader, None, started)
}

/// The base set's entries plus the change lists' additions, minus their deletions.
fn apply_changes(
    args: &BuildArgs,
    base_path: &Path,
    key: Option<SecretKey>,
    source_date: Option<Day>,
    mut reader: Reader,
    started: Instant,
) -> CliResult<()> {
    if args.format == InputFormat::Csv {
        return Err(CliError::usage(
            "change lists are read with --format lines or us-registry",
        ));
    }
    let base = SuppressionSet::open(base_path, key.as_ref())?;
    let header = base.header().clone();
    if header.scheme == KeyScheme::E164 && key.is_some() {
        return Err(CliError::usage(format!(
            "base set '{}' stores plain numbers; --key-file cannot change its key scheme",
            header.name
        )));
    }
    let kind = args.kind.map_or(header.kind, SetKind::from);
    if kind == SetKind::Block && header.has_expiry {
        return Err(CliError::usage(format!(
            "base set '{}' has expiry dates; it cannot become a block set",
            header.name
        )));
    }
    let source_date = match source_date {
        Some(day) => Some(day),
        None => {
            eprintln!("warning: no --source-date; keeping the base's source date");
            header.source_date
        }
    };
    let default_source = format!(
        "{} applied to {} v{}",
        describe_files(args.format, &args.changes),
        header.name,
        header.version
    );
    let spec = SetSpec {
        name: args.name.clone().unwrap_or_else(|| header.name.clone()),
        kind,
        filter: args.filter.map_or(header.filter, FilterWidth::from),
        source: limit_source(args.source.clone().unwrap_or(default_source)),
        source_date,
        version: match args.set_version {
            Some(version) => version,
            None => header.version.checked_add(1).ok_or_else(|| {
                CliError::usage("base version is the largest possible; give --set-version")
            })?,
        },
        build_time: now().as_secs() as i64,
    };
    let mut builder =
        SetBuilder::new(spec, key.clone()).map_err(|error| CliError::usage(error.to_string()))?;
    builder.layout(
        args.layout
            .map_or(base.set_layout().choice(), LayoutChoice::from),
    );
    reader.progress = progress_bar(input_bytes(&args.changes));
    // Last record wins per key; change lists are small next to the base.
    let mut actions: HashMap<u64, Action> = HashMap::new();
    let mut summary = ChangeSummary {
        base: base_path.display().to_string(),
        base_version: header.version,
        base_keys: base.len(),
        ..ChangeSummary::default()
    };
    for path in &args.changes {
        let (add_records, delete_records) = (&mut summary.add_records, &mut summary.delete_records);
        let builder = &builder;
        let actions = &mut actions;
        reader.each_line(path, |reader, line| {
            let (number, action) = match reader.format {
                InputFormat::UsRegistry => parse_us_change(line)?,
                _ => parse_lines_change(&reader.parser, line, reader.validate)?,
            };
            match action {
                Action::Add => *add_records += 1,
                Action::Delete => *delete_records += 1,
            }
            actions.insert(builder.key_of(number), action);
            Ok(())
        })?;
    }
    let mut deletes: Vec<u64> = Vec::new();
    let mut adds: Vec<u64> = Vec::new();
    for (key, action) in actions {
        match action {
            Action::Add => adds.push(key),
            Action::Delete => deletes.push(key),
        }
    }
    deletes.sort_unstable();
    builder.reserve(base.len() as usize + adds.len());
    let bad_entry = |error: crate::engine::set::BuildError| {
        CliError::runtime(format!("{}: {error}", base_path.display()))
    };
    for (stored, expires) in base.entries() {
        if deletes.binary_search(&stored).is_ok() {
            summary.deleted += 1;
            continue;
        }
        builder.push_key(stored, expires).map_err(bad_entry)?;
    }
    summary.delete_missing = deletes.len() as u64 - summary.deleted;
    adds.sort_unstable();
    for &added in &adds {
        builder.push_key(added, None).map_err(bad_entry)?;
    }
    let kept = summary.base_keys - summary.deleted;
    drop(base);
    finish(
        args,
        builder,
        key,
        reader,
        Some((summary, kept, adds.len() as u64)),
        started,
    )
}

/// Builds, writes, re-opens (verifying the written file) and reports.
fn finish(
    args: &BuildArgs,
    builder: SetBuilder,
    key: Option<SecretKey>,
    reader: Reader,
    changes: Option<(ChangeSummary, u64, u64)>,
    started: Instant,
) -> CliResult<()> {
    reader.progress.set_message("building");
    let built = builder
        .build(threads())
        .map_err(|error| CliError::runtime(format!("cannot build the set: {error}")))?;
    reader.progress.set_message("writing");
    built.image.write_atomic(&args.out)?;
    drop(built.image);
    reader.progress.finish_and_clear();
    let set = SuppressionSet::open(&args.out, key.as_ref())?;
    let header = set.header();
    let (filter_bytes, exact_bytes, expiry_bytes) = set.bytes_by_part();
    let changes = changes.map(|(mut summary, kept, adds)| {
        summary.added = header.key_count - kept;
        summary.already_present = adds - summary.added;
        summary
    });
    let duplicates = match &changes {
        // The base's own keys are distinct: repeats are only additions already present.
        Some(summary) => summary.already_present,
        None => built.stats.duplicates,
    };
    let summary = Summary {
        out: args.out.display().to_string(),
        name: header.name.clone(),
        kind: header.kind.name(),
        key_scheme: header.scheme.name(),
        key_id: header.key_id.clone(),
        filter: header.filter.name(),
        version: header.version,
        source: header.source.clone(),
        source_date: header.source_date.map(|day| day.to_string()),
        lines_read: reader.lines_read,
        records: reader.records,
        invalid: reader.invalid,
        duplicates,
        keys: header.key_count,
        bytes: set.file_len(),
        bytes_per_key: per_key(set.file_len(), header.key_count),
        bytes_in_memory: set.bytes_in_memory(),
        memory_bytes_per_key: per_key(set.bytes_in_memory(), header.key_count),
        filter_bytes,
        exact_bytes,
        expiry_bytes,
        seconds: started.elapsed().as_secs_f64(),
        changes,
    };
    eprint!("{}", human_summary(&summary));
    if args.json {
        let text = serde_json::to_string(&summary)
            .map_err(|error| CliError::runtime(format!("cannot encode the summary: {error}")))?;
        outln!("{text}");
    }
    Ok(())
}

fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |value| format!("{value:.2}"))
}

fn human_summary(s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "built set '{}' version {} ({}, {}, {}) -> {}",
        s.name, s.version, s.kind, s.key_scheme, s.filter, s.out
    );
    if let Some(c) = &s.changes {
        let _ = writeln!(
            out,
            "  base           {} v{}: {} keys",
            c.base,
            c.base_version,
            thousands(c.base_keys)
        );
        let _ = writeln!(
            out,
            "  changes        {} add records, {} delete records",
            thousands(c.add_records),
            thousands(c.delete_records)
        );
        let _ = writeln!(
            out,
            "  applied        {} added ({} already present), {} deleted ({} not in the base)",
            thousands(c.added),
            thousands(c.already_present),
            thousands(c.deleted),
            thousands(c.delete_missing)
        );
    }
    let _ = writeln!(out, "  lines read     {}", thousands(s.lines_read));
    let _ = writeln!(out, "  records        {}", thousands(s.records));
    let _ = writeln!(out, "  invalid        {}", thousands(s.invalid.count));
    for bad in &s.invalid.first {
        let _ = writeln!(
            out,
            "    {}:{}: {} ({})",
            bad.file, bad.line, bad.reason, bad.error_kind
        );
    }
    if s.invalid.count > s.invalid.first.len() as u64 {
        let _ = writeln!(
            out,
            "    ... and {} more",
            thousands(s.invalid.count - s.invalid.first.len() as u64)
        );
    }
    let _ = writeln!(out, "  duplicates     {}", thousands(s.duplicates));
    let _ = writeln!(out, "  keys           {}", thousands(s.keys));
    let _ = writeln!(
        out,
        "  file bytes     {} ({} per key)",
        thousands(s.bytes),
        ratio(s.bytes_per_key)
    );
    let _ = writeln!(
        out,
        "  memory bytes   {} ({} per key): filter {}, exact {}, expiry {}",
        thousands(s.bytes_in_memory),
        ratio(s.memory_bytes_per_key),
        thousands(s.filter_bytes),
        thousands(s.exact_bytes),
        thousands(s.expiry_bytes)
    );
    let _ = writeln!(
        out,
        "  source         {} (issued {})",
        s.source,
        s.source_date.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(out, "  time           {:.2} s", s.seconds);
    out
}
