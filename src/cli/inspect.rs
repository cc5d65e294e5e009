//! `suppressd inspect`: everything a snapshot file says about itself, verified.
//!
//! Owns presenting a snapshot's header, section table and sizes, for people or as one JSON
//! object. Every checksum is verified before anything is shown. A keyed set is inspected
//! without its key from the header and checksums alone; with the key (or for a plain set) the
//! file is also fully opened, which checks its structure the way the daemon would. It never
//! writes to the file and never shows a key or a number.

use super::{CliError, CliResult, load_key, per_key, thousands};
use crate::engine::date::Day;
use crate::engine::set::SuppressionSet;
use crate::engine::snapshot::{self, SectionId, SnapshotError, SnapshotLayout};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Snapshot file
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Key file of a keyed set: adds a full structural check (header and checksums without it)
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct SectionReport {
    name: &'static str,
    offset: u64,
    len: u64,
    checksum: String,
    verified: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    file: String,
    format_version: u32,
    name: String,
    kind: &'static str,
    key_scheme: &'static str,
    key_id: Option<String>,
    filter: &'static str,
    has_expiry: bool,
    keys: u64,
    version: u64,
    build_time: String,
    build_time_unix: i64,
    source: String,
    source_date: Option<String>,
    age_days: Option<i64>,
    header_len: u64,
    header_checksum: String,
    sections: Vec<SectionReport>,
    bytes: u64,
    bytes_per_key: Option<f64>,
    bytes_in_memory: u64,
    memory_bytes_per_key: Option<f64>,
    filter_bytes: u64,
    exact_bytes: u64,
    expiry_bytes: u64,
    /// "full" (opened like the daemon would) or "checksums" (keyed set inspected without key).
    verified: &'static str,
}

/// RFC 3339 for a unix time, or a plain count when it is out of the calendar's range.
pub fn rfc3339(seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("unix {seconds}"))
}

/// Lookup-structure bytes by part, from section lengths (what a loaded set holds in memory).
fn parts(layout: &SnapshotLayout) -> (u64, u64, u64) {
    let len = |ids: &[SectionId]| -> u64 {
        ids.iter()
            .filter_map(|&id| layout.section(id))
            .map(|s| s.len)
            .sum()
    };
    (
        len(&[SectionId::FilterShards, SectionId::FilterFingerprints]),
        len(&[
            SectionId::ChunkFirst,
            SectionId::ChunkMeta,
            SectionId::Directory,
            SectionId::Lows,
            SectionId::LineInfo,
            SectionId::LineIndex,
            SectionId::Lines,
            SectionId::LineRanks,
            SectionId::SlotInfo,
            SectionId::SlotLines,
            SectionId::SlotSpill,
        ]),
        len(&[SectionId::Expiry]),
    )
}

pub fn run(args: InspectArgs) -> CliResult<()> {
    let key = load_key(args.key_file.as_deref())?;
    let (layout, verified) = match SuppressionSet::open(&args.file, key.as_ref()) {
        Ok(set) => (set.layout().clone(), "full"),
        // Without its key a keyed set can still show its header and prove its checksums.
        Err(SnapshotError::Key { .. }) if key.is_none() => {
            let bytes = std::fs::read(&args.file).map_err(|source| SnapshotError::Io {
                path: args.file.clone(),
                source,
            })?;
            let layout = snapshot::decode(&bytes).map_err(|error| error.at(&args.file))?;
            (layout, "checksums")
        }
        Err(error) => return Err(CliError::from(error)),
    };
    let header = &layout.header;
    let (filter_bytes, exact_bytes, expiry_bytes) = parts(&layout);
    let in_memory = filter_bytes + exact_bytes + expiry_bytes;
    let report = Report {
        file: args.file.display().to_string(),
        format_version: layout.format_version,
        name: header.name.clone(),
        kind: header.kind.name(),
        key_scheme: header.scheme.name(),
        key_id: header.key_id.clone(),
        // Line and slot tables have no filter in front of them (engine::lines, engine::slots).
        filter: if layout.section(SectionId::Lines).is_some() {
            "none (line table)"
        } else if layout.section(SectionId::SlotLines).is_some() {
            "none (slot table)"
        } else {
            header.filter.name()
        },
        has_expiry: header.has_expiry,
        keys: header.key_count,
        version: header.version,
        build_time: rfc3339(header.build_time),
        build_time_unix: header.build_time,
        source: header.source.clone(),
        source_date: header.source_date.map(|day| day.to_string()),
        age_days: header.source_date.map(|day| day.days_until(Day::today())),
        header_len: layout.header_len,
        header_checksum: format!("{:016x}", layout.header_checksum),
        sections: layout
            .sections
            .iter()
            .map(|s| SectionReport {
                name: s.id.name(),
                offset: s.offset,
                len: s.len,
                checksum: format!("{:016x}", s.checksum),
                verified: true,
            })
            .collect(),
        bytes: layout.file_len,
        bytes_per_key: per_key(layout.file_len, header.key_count),
        bytes_in_memory: in_memory,
        memory_bytes_per_key: per_key(in_memory, header.key_count),
        filter_bytes,
        exact_bytes,
        expiry_bytes,
        verified,
    };
    if args.json {
        let text = serde_json::to_string(&report)
            .map_err(|error| CliError::runtime(format!("cannot encode the report: {error}")))?;
        outln!("{text}");
    } else {
        out!("{}", human(&report));
    }
    Ok(())
}

fn human(r: &Report) -> String {
    use std::fmt::Write;
    let ratio = |value: Option<f64>| value.map_or_else(|| "-".into(), |v| format!("{v:.2}"));
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{label:<13} {value}");
    };
    field("file", r.file.clone());
    field("name", r.name.clone());
    field("kind", r.kind.into());
    field("key scheme", r.key_scheme.into());
    field("key id", r.key_id.clone().unwrap_or_else(|| "-".into()));
    field("filter", r.filter.into());
    field("has expiry", if r.has_expiry { "yes" } else { "no" }.into());
    field("keys", thousands(r.keys));
    field("version", r.version.to_string());
    field("build time", r.build_time.clone());
    field("source", r.source.clone());
    field(
        "source date",
        match (&r.source_date, r.age_days) {
            (Some(date), Some(age)) => format!("{date} ({age} days old)"),
            _ => "unknown".into(),
        },
    );
    field("format", r.format_version.to_string());
    field(
        "bytes",
        format!(
            "{} ({} per key)",
            thousands(r.bytes),
            ratio(r.bytes_per_key)
        ),
    );
    field(
        "in memory",
        format!(
            "{} ({} per key): filter {}, exact {}, expiry {}",
            thousands(r.bytes_in_memory),
            ratio(r.memory_bytes_per_key),
            thousands(r.filter_bytes),
            thousands(r.exact_bytes),
            thousands(r.expiry_bytes)
        ),
    );
    field(
        "header",
        format!("{} bytes, xxh3 {} ok", r.header_len, r.header_checksum),
    );
    field("sections", r.sections.len().to_string());
    for s in &r.sections {
        let _ = writeln!(
            out,
            "  {:<20} offset {:>12}  len {:>12}  xxh3 {} ok",
            s.name, s.offset, s.len, s.checksum
        );
    }
    let _ = writeln!(
        out,
        "{:<13} {}",
        "verified",
        match r.verified {
            "full" => "checksums and structure",
            _ => "checksums only (keyed set: pass --key-file for a full check)",
        }
    );
    out
}
