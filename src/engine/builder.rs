//! Building suppression sets: collecting keys and encoding them into a snapshot image.
//!
//! Owns [`SetBuilder`] (keys or numbers in, deduplicated, a consent expiry per entry) and the
//! choice and encoding of a set's layout: a slot table for plain numbers where it suits them
//! (the default), a line table when asked and worth it, else a binary fuse filter in front of
//! an exact Elias-Fano table. Serving a built
//! set is `engine::set`'s job; this module never does I/O (the caller writes the image) and
//! never depends on anything outside the engine.

use crate::engine::date::Day;
use crate::engine::exact::ExactTable;
use crate::engine::fuse::{
    FilterWidth, Fingerprint, FuseBuildError, FuseFilter, ShardDescriptor, ShardPick,
};
use crate::engine::keys::{KeyScheme, SecretKey};
use crate::engine::lines::LineTable;
use crate::engine::number::Number;
use crate::engine::slots::SlotTable;
use crate::engine::snapshot::{
    self, SectionId, SetHeader, SetKind, SnapshotImage, validate_set_name,
};

/// Expiry value meaning "never expires" (the encoding of the snapshot's expiry section).
pub(crate) const NEVER: u16 = u16::MAX;
/// A plain set gets a line table when it costs at most this many bytes per key, or no more
/// than the filter + Elias-Fano layout would (the dense-list memory target, BENCHMARKS.md).
const LINE_TABLE_BYTES_PER_KEY: f64 = 2.5;
/// Smaller plain sets keep the filter + Elias-Fano layout: the whole set is a few cache lines
/// either way, so a line table wins nothing, and small lists keep the layout they always had.
const LINE_TABLE_MIN_KEYS: usize = 1024;
/// Smaller plain sets keep the filter + Elias-Fano layout for the same reasons, and so stay
/// readable by builds before format 5.
pub const SLOT_TABLE_MIN_KEYS: usize = 1024;

/// Which layout a builder may choose. The default is a slot table where it suits the keys: as
/// fast as the filter layout on mostly-absent traffic, several times faster on members, and
/// smaller (BENCHMARKS.md, "The engine at the memory limit", fifth attempt).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LayoutChoice {
    /// A slot table (`engine::slots`) for plain sets of [`SLOT_TABLE_MIN_KEYS`] or more
    /// without expiry dates, when it costs at most [`LINE_TABLE_BYTES_PER_KEY`] per key or no
    /// more than the filter + Elias-Fano layout would; else filter + Elias-Fano.
    #[default]
    Slots,
    /// A line table when it suits the keys and the memory rule, else filter + Elias-Fano
    /// (`suppressd build --layout lines`: present-heavy lists such as consent sets and scrubs).
    Auto,
    /// Always filter + Elias-Fano (the only layout builds before snapshot format 3 read).
    FilterEliasFano,
    /// A line table whenever it suits the keys, whatever it costs (tests and benches).
    LinesWhenSuitable,
}

/// What a set needs besides its keys.
#[derive(Clone, Debug)]
pub struct SetSpec {
    pub name: String,
    pub kind: SetKind,
    pub filter: FilterWidth,
    pub source: String,
    pub source_date: Option<Day>,
    pub version: u64,
    pub build_time: i64,
}

/// Why a set could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid set: {0}")]
    Invalid(String),
    #[error(transparent)]
    Filter(#[from] FuseBuildError),
}

/// Figures from a build.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub input_keys: u64,
    pub duplicates: u64,
    pub keys: u64,
}

/// Collects keys (numbers or fingerprints) and builds an immutable set.
#[derive(Debug)]
pub struct SetBuilder {
    spec: SetSpec,
    key: Option<SecretKey>,
    keys: Vec<u64>,
    /// Parallel to `keys` once any entry has an expiry.
    expiries: Option<Vec<u16>>,
    layout: LayoutChoice,
    pick: ShardPick,
}

/// A built set: its snapshot image and build figures.
#[derive(Debug)]
pub struct BuiltSet {
    pub image: SnapshotImage,
    pub stats: BuildStats,
}

impl SetBuilder {
    /// `key` makes this a keyed-fingerprint set: numbers are stored only as fingerprints.
    pub fn new(spec: SetSpec, key: Option<SecretKey>) -> Result<SetBuilder, BuildError> {
        validate_set_name(&spec.name).map_err(BuildError::Invalid)?;
        if spec.source.len() > 4096 {
            return Err(BuildError::Invalid(
                "source description over 4096 bytes".into(),
            ));
        }
        Ok(SetBuilder {
            spec,
            key,
            keys: Vec::new(),
            expiries: None,
            // A slot table where it suits the keys (see `LayoutChoice`).
            layout: LayoutChoice::default(),
            pick: ShardPick::Multiplicative,
        })
    }

    /// The filter's shard function. [`ShardPick::Mixed`] writes a file that builds older than
    /// snapshot format 4 read (a fleet mid-upgrade, compatibility tests); lookups in it cost a
    /// few more instructions per key.
    pub fn shard_pick(&mut self, pick: ShardPick) {
        self.pick = pick;
    }

    /// Restricts the layouts the build may choose.
    pub fn layout(&mut self, layout: LayoutChoice) {
        self.layout = layout;
    }

    pub fn reserve(&mut self, additional: usize) {
        self.keys.reserve(additional);
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key this set stores for `number`.
    pub fn key_of(&self, number: Number) -> u64 {
        match &self.key {
            Some(key) => key.fingerprint(number),
            None => number.get(),
        }
    }

    /// Adds a number; `expires` (consent sets only) is the first day it no longer counts.
    pub fn push(&mut self, number: Number, expires: Option<Day>) -> Result<(), BuildError> {
        let key = self.key_of(number);
        self.push_key(key, expires)
    }

    /// Adds an already-derived key (a fingerprint read back from a keyed snapshot, say).
    pub fn push_key(&mut self, key: u64, expires: Option<Day>) -> Result<(), BuildError> {
        let encoded = match expires {
            None => NEVER,
            Some(_) if self.spec.kind != SetKind::Consent => {
                return Err(BuildError::Invalid(
                    "only consent sets carry expiry dates".into(),
                ));
            }
            Some(day) if day.0 < 0 || day >= Day(i32::from(NEVER)) => {
                return Err(BuildError::Invalid(format!(
                    "expiry {day} is outside 1970-01-01..{}",
                    Day::MAX_EXPIRY
                )));
            }
            Some(day) => day.0 as u16,
        };
        if encoded != NEVER && self.expiries.is_none() {
            self.expiries = Some(vec![NEVER; self.keys.len()]);
        }
        if let Some(expiries) = &mut self.expiries {
            expiries.push(encoded);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Deduplicates (a repeated key keeps its latest expiry), encodes and verifies the set.
    pub fn build(self, threads: usize) -> Result<BuiltSet, BuildError> {
        let SetBuilder {
            spec,
            key,
            mut keys,
            expiries,
            layout,
            pick,
        } = self;
        let input_keys = keys.len() as u64;
        let expiries = match expiries {
            None => {
                keys.sort_unstable();
                keys.dedup();
                None
            }
            Some(expiries) => {
                let mut pairs: Vec<(u64, u16)> = keys.iter().copied().zip(expiries).collect();
                drop(std::mem::take(&mut keys));
                pairs.sort_unstable();
                // Sorted by (key, expiry): the last of each run holds the latest expiry.
                let mut deduped: Vec<(u64, u16)> = Vec::with_capacity(pairs.len());
                for pair in pairs {
                    match deduped.last_mut() {
                        Some(last) if last.0 == pair.0 => *last = pair,
                        _ => deduped.push(pair),
                    }
                }
                keys = deduped.iter().map(|p| p.0).collect();
                Some(deduped.into_iter().map(|p| p.1).collect::<Vec<u16>>())
            }
        };
        let slots = match (layout, &key, &expiries) {
            (LayoutChoice::Slots, None, None) => choose_slots(&keys, spec.filter),
            _ => None,
        };
        let lines = match (layout, &key) {
            (LayoutChoice::Auto, None) => choose_lines(&keys, expiries.is_some(), spec.filter),
            (LayoutChoice::LinesWhenSuitable, None) => {
                LineTable::build(&keys, expiries.is_some()).ok()
            }
            _ => None,
        };
        let header = SetHeader {
            name: spec.name,
            kind: spec.kind,
            scheme: if key.is_some() {
                KeyScheme::SipHash24
            } else {
                KeyScheme::E164
            },
            key_id: key.as_ref().map(|k| k.id().to_owned()),
            key_check: key.as_ref().map_or(0, SecretKey::check_value),
            filter: spec.filter,
            has_expiry: expiries.is_some(),
            key_count: keys.len() as u64,
            version: spec.version,
            build_time: spec.build_time,
            source: spec.source,
            source_date: spec.source_date,
        };
        let image = match (slots, lines, spec.filter) {
            (Some(slots), _, _) => encode_slots(&header, &slots),
            (None, Some(lines), _) => encode_lines(&header, &lines, expiries.as_deref()),
            (None, None, FilterWidth::Fuse8) => {
                encode_with::<u8>(&header, &keys, expiries.as_deref(), threads, pick)?
            }
            (None, None, FilterWidth::Fuse16) => {
                encode_with::<u16>(&header, &keys, expiries.as_deref(), threads, pick)?
            }
        };
        Ok(BuiltSet {
            image,
            stats: BuildStats {
                input_keys,
                duplicates: input_keys - keys.len() as u64,
                keys: keys.len() as u64,
            },
        })
    }
}

/// A line table for sorted plain keys, if it suits them and costs at most
/// [`LINE_TABLE_BYTES_PER_KEY`] or no more than the filter + Elias-Fano layout would.
fn choose_lines(keys: &[u64], with_ranks: bool, filter: FilterWidth) -> Option<LineTable> {
    if keys.len() < LINE_TABLE_MIN_KEYS {
        return None;
    }
    let lines = LineTable::build(keys, with_ranks).ok()?;
    let n = keys.len() as f64;
    if lines.bytes() as f64 <= LINE_TABLE_BYTES_PER_KEY * n {
        return Some(lines);
    }
    // Filter size from its build rule (about 1.13 fingerprints per key); Elias-Fano as built.
    let filter_bytes = 1.13 * n * f64::from(filter.code()) / 8.0;
    let classic = ExactTable::build(keys).view().bytes() as f64 + filter_bytes;
    (lines.bytes() as f64 <= classic).then_some(lines)
}

/// A slot table for sorted plain keys, if it suits them and costs at most
/// [`LINE_TABLE_BYTES_PER_KEY`] or no more than the filter + Elias-Fano layout would.
fn choose_slots(keys: &[u64], filter: FilterWidth) -> Option<SlotTable> {
    if keys.len() < SLOT_TABLE_MIN_KEYS {
        return None;
    }
    let slots = SlotTable::build(keys).ok()?;
    let n = keys.len() as f64;
    if slots.bytes() as f64 <= LINE_TABLE_BYTES_PER_KEY * n {
        return Some(slots);
    }
    let filter_bytes = 1.13 * n * f64::from(filter.code()) / 8.0;
    let classic = ExactTable::build(keys).view().bytes() as f64 + filter_bytes;
    (slots.bytes() as f64 <= classic).then_some(slots)
}

fn encode_slots(header: &SetHeader, slots: &SlotTable) -> SnapshotImage {
    let sections: [(SectionId, &[u8]); 3] = [
        (SectionId::SlotInfo, bytemuck::cast_slice(&slots.info)),
        (SectionId::SlotLines, bytemuck::cast_slice(&slots.lines)),
        (SectionId::SlotSpill, bytemuck::cast_slice(&slots.spill)),
    ];
    snapshot::encode(header, &sections, snapshot::SLOT_TABLE_VERSION)
}

fn encode_lines(header: &SetHeader, lines: &LineTable, expiries: Option<&[u16]>) -> SnapshotImage {
    let mut sections: Vec<(SectionId, &[u8])> = Vec::new();
    if let Some(expiries) = expiries {
        sections.push((SectionId::Expiry, bytemuck::cast_slice(expiries)));
    }
    sections.push((SectionId::LineInfo, bytemuck::cast_slice(&lines.info)));
    sections.push((SectionId::LineIndex, bytemuck::cast_slice(&lines.index)));
    sections.push((SectionId::Lines, bytemuck::cast_slice(&lines.lines)));
    if !lines.ranks.is_empty() {
        sections.push((SectionId::LineRanks, bytemuck::cast_slice(&lines.ranks)));
    }
    snapshot::encode(header, &sections, snapshot::LINE_TABLE_VERSION)
}

fn encode_with<F: Fingerprint>(
    header: &SetHeader,
    keys: &[u64],
    expiries: Option<&[u16]>,
    threads: usize,
    pick: ShardPick,
) -> Result<SnapshotImage, BuildError> {
    let exact = ExactTable::build(keys);
    let filter = FuseFilter::<F>::build_picking(keys, threads, pick)?;
    // A filter of one shard never picks, so its file is the same under every format version
    // and is written as the oldest (older builds keep reading small sets).
    let version = if filter.shards.len() > 1 && pick == ShardPick::Multiplicative {
        snapshot::MULTIPLICATIVE_PICK_VERSION
    } else {
        snapshot::OLDEST_READABLE_VERSION
    };
    let shard_words: Vec<u64> = filter
        .shards
        .iter()
        .flat_map(ShardDescriptor::to_words)
        .collect();
    let mut sections: Vec<(SectionId, &[u8])> = vec![
        (SectionId::FilterShards, bytemuck::cast_slice(&shard_words)),
        (
            SectionId::FilterFingerprints,
            bytemuck::cast_slice(&filter.fingerprints),
        ),
        (
            SectionId::ChunkFirst,
            bytemuck::cast_slice(&exact.chunk_first),
        ),
        (
            SectionId::ChunkMeta,
            bytemuck::cast_slice(&exact.chunk_meta),
        ),
        (SectionId::Directory, bytemuck::cast_slice(&exact.upper)),
        (SectionId::Lows, bytemuck::cast_slice(&exact.lows)),
    ];
    if let Some(expiries) = expiries {
        sections.push((SectionId::Expiry, bytemuck::cast_slice(expiries)));
    }
    Ok(snapshot::encode(header, &sections, version))
}
