//! Suppression sets: immutable, exact membership over phone numbers.
//!
//! A set is a binary fuse filter that turns away most absent keys after touching three cache
//! lines, and an exact Elias-Fano table that confirms every filter hit, so answers have neither
//! false positives nor false negatives. Consent sets may carry a per-entry expiry day. A set is
//! built once by [`SetBuilder`] into a snapshot image, and served either from that image or from a
//! memory-mapped snapshot file: the same validated bytes either way.
//!
//! Lookups never allocate and never lock; the batched form walks groups of keys through the
//! filter, the exact table's directory and its low bits in stages, prefetching each stage's cache
//! lines for the whole group before reading any of them. This module never does I/O beyond
//! mapping its own snapshot files.

use crate::engine::date::Day;
use crate::engine::exact::{ExactTable, ExactView, Probe};
use crate::engine::fuse::{
    FilterWidth, Fingerprint, FuseBuildError, FuseFilter, FuseView, ShardDescriptor,
};
use crate::engine::keys::{KeyScheme, SecretKey};
use crate::engine::number::Number;
use crate::engine::prefetch::prefetch_read;
use crate::engine::snapshot::{
    self, SectionId, SetHeader, SetKind, SnapshotError, SnapshotImage, SnapshotLayout,
    validate_set_name,
};
use std::path::{Path, PathBuf};

/// Expiry value meaning "never expires".
const NEVER: u16 = u16::MAX;
/// Keys walked through the lookup stages together.
const GROUP: usize = 32;
/// Images at least this large are copied into huge-page memory by [`SuppressionSet::from_image`].
const HUGE_COPY_MIN_BYTES: usize = 4 << 20;

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
        })
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
        let exact = ExactTable::build(&keys);
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
        let image = match spec.filter {
            FilterWidth::Fuse8 => {
                encode_with::<u8>(&header, &keys, &exact, expiries.as_deref(), threads)?
            }
            FilterWidth::Fuse16 => {
                encode_with::<u16>(&header, &keys, &exact, expiries.as_deref(), threads)?
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

fn encode_with<F: Fingerprint>(
    header: &SetHeader,
    keys: &[u64],
    exact: &ExactTable,
    expiries: Option<&[u16]>,
    threads: usize,
) -> Result<SnapshotImage, BuildError> {
    let filter = FuseFilter::<F>::build(keys, threads)?;
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
    Ok(snapshot::encode(header, &sections))
}

/// The bytes a loaded set is served from. Never mutated while the set lives.
#[derive(Debug)]
enum Backing {
    Mapped(memmap2::Mmap),
    Heap(Vec<u64>, usize),
    /// Anonymous memory holding a copy of an image, backed by huge pages where possible.
    Anon(memmap2::Mmap, usize),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(map) => map,
            Backing::Anon(map, len) => &map[..*len],
            Backing::Heap(words, len) => &bytemuck::cast_slice(words)[..*len],
        }
    }

    /// Copies `bytes` into anonymous memory backed by transparent huge pages where the kernel
    /// allows them (`madvise(MADV_HUGEPAGE)`; a hint, so the copy works without them too).
    ///
    /// Why: a lookup touches 3-6 random cache lines of a set far larger than the TLB reaches
    /// with 4 KiB pages; on this project's VMs random-line throughput doubles with 2 MiB pages
    /// (BENCHMARKS.md). Mapped snapshot files get large page-cache folios from the kernel
    /// (ext4/xfs on Linux 6.x map them with 2 MiB entries), but a heap `Vec` only gets huge
    /// pages when the kernel's THP mode is `always`.
    fn huge_copy(bytes: &[u8]) -> std::io::Result<Backing> {
        let mut map = memmap2::MmapOptions::new()
            .len(bytes.len().max(1))
            .map_anon()?;
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        map[..bytes.len()].copy_from_slice(bytes);
        Ok(Backing::Anon(map.make_read_only()?, bytes.len()))
    }
}

#[derive(Clone, Debug)]
enum AnyFilter {
    Fuse8(FuseView<'static, u8>),
    Fuse16(FuseView<'static, u16>),
}

/// A set's answer for one number, ignoring dates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    Absent,
    /// Present; `expires` is the first day the entry no longer counts.
    Present {
        expires: Option<Day>,
    },
}

/// Counters from a batched lookup, for the observed false-positive rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Keys the filter let through.
    pub filter_hits: u64,
    /// Of those, keys the exact table confirmed.
    pub confirmed: u64,
}

/// A loaded, validated, immutable suppression set.
pub struct SuppressionSet {
    header: SetHeader,
    layout: SnapshotLayout,
    path: Option<PathBuf>,
    key: Option<SecretKey>,
    filter: AnyFilter,
    exact: ExactView<'static>,
    expiry: Option<&'static [u16]>,
    // Declared last: the views above borrow from it and must never outlive it.
    backing: Backing,
}

impl std::fmt::Debug for SuppressionSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SuppressionSet")
            .field("name", &self.header.name)
            .field("version", &self.header.version)
            .field("keys", &self.header.key_count)
            .finish_non_exhaustive()
    }
}

impl SuppressionSet {
    /// Maps and fully validates a snapshot file. A keyed snapshot needs its key.
    pub fn open(path: &Path, key: Option<&SecretKey>) -> Result<SuppressionSet, SnapshotError> {
        let io = |source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: snapshot files are immutable: they are written under a temporary name and
        // renamed into place, never modified or truncated afterwards (see ARCHITECTURE.md).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        SuppressionSet::from_backing(Backing::Mapped(map), Some(path), key)
    }

    /// Serves a set straight from a built image (validated exactly like a file). Images of 4 MiB
    /// and more are first copied into huge-page memory (see `Backing::huge_copy`).
    pub fn from_image(
        image: SnapshotImage,
        key: Option<&SecretKey>,
    ) -> Result<SuppressionSet, SnapshotError> {
        // Large images are served from huge pages; small ones (and any failure to map) from the
        // heap buffer as it is.
        if image.len() >= HUGE_COPY_MIN_BYTES
            && let Ok(backing) = Backing::huge_copy(image.as_bytes())
        {
            drop(image);
            return SuppressionSet::from_backing(backing, None, key);
        }
        let (words, len) = image.into_words();
        SuppressionSet::from_backing(Backing::Heap(words, len), None, key)
    }

    fn from_backing(
        backing: Backing,
        path: Option<&Path>,
        key: Option<&SecretKey>,
    ) -> Result<SuppressionSet, SnapshotError> {
        let shown = path.map_or_else(|| PathBuf::from("<memory>"), Path::to_owned);
        let bytes = backing.bytes();
        let layout = snapshot::decode(bytes).map_err(|e| e.at(&shown))?;
        let header = layout.header.clone();
        let key = check_key(&header, key).map_err(|reason| SnapshotError::Key {
            path: shown.clone(),
            reason,
        })?;
        // SAFETY: the slices point into `backing`, which is stored in the same struct, never
        // mutated, and whose memory does not move when the struct moves (heap or mapping). The
        // 'static lifetime never escapes: accessors re-borrow with the lifetime of `&self`.
        let bytes: &'static [u8] =
            unsafe { std::slice::from_raw_parts(bytes.as_ptr(), bytes.len()) };
        let parts = Parts {
            layout: &layout,
            bytes,
            path: &shown,
        };
        let shards_words: &[u64] = parts.words(SectionId::FilterShards)?;
        if !shards_words.len().is_multiple_of(ShardDescriptor::WORDS) {
            return Err(parts.corrupt(SectionId::FilterShards, "shard table length"));
        }
        let shards: Box<[ShardDescriptor]> = shards_words
            .chunks(ShardDescriptor::WORDS)
            .map(ShardDescriptor::from_words)
            .collect();
        if shards.is_empty() != (header.key_count == 0) {
            return Err(parts.corrupt(SectionId::FilterShards, "shard count does not match keys"));
        }
        let filter = match header.filter {
            FilterWidth::Fuse8 => AnyFilter::Fuse8(
                FuseView::new(shards, parts.slice::<u8>(SectionId::FilterFingerprints)?)
                    .map_err(|r| parts.corrupt(SectionId::FilterFingerprints, &r))?,
            ),
            FilterWidth::Fuse16 => AnyFilter::Fuse16(
                FuseView::new(shards, parts.slice::<u16>(SectionId::FilterFingerprints)?)
                    .map_err(|r| parts.corrupt(SectionId::FilterFingerprints, &r))?,
            ),
        };
        let exact = ExactView::new(
            header.key_count,
            parts.words(SectionId::ChunkFirst)?,
            parts.words(SectionId::ChunkMeta)?,
            parts.words(SectionId::Directory)?,
            parts.words(SectionId::Lows)?,
        )
        .map_err(|r| parts.corrupt(SectionId::ChunkMeta, &r))?;
        let expiry = if header.has_expiry {
            let expiry = parts.slice::<u16>(SectionId::Expiry)?;
            if expiry.len() as u64 != header.key_count {
                return Err(parts.corrupt(SectionId::Expiry, "one expiry per key expected"));
            }
            Some(expiry)
        } else {
            if layout.section(SectionId::Expiry).is_some() {
                return Err(
                    parts.corrupt(SectionId::Expiry, "expiry section in a set without expiry")
                );
            }
            None
        };
        Ok(SuppressionSet {
            header,
            path: path.map(Path::to_owned),
            layout,
            key,
            filter,
            exact,
            expiry,
            backing,
        })
    }

    pub fn header(&self) -> &SetHeader {
        &self.header
    }

    pub fn layout(&self) -> &SnapshotLayout {
        &self.layout
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn name(&self) -> &str {
        &self.header.name
    }

    pub fn kind(&self) -> SetKind {
        self.header.kind
    }

    pub fn version(&self) -> u64 {
        self.header.version
    }

    pub fn len(&self) -> u64 {
        self.header.key_count
    }

    pub fn is_empty(&self) -> bool {
        self.header.key_count == 0
    }

    /// Bytes of lookup structures (filter, exact table, expiries): the memory a set costs.
    pub fn bytes_in_memory(&self) -> u64 {
        let filter = match &self.filter {
            AnyFilter::Fuse8(view) => view.bytes(),
            AnyFilter::Fuse16(view) => view.bytes(),
        };
        (filter + self.exact.bytes() + self.expiry.map_or(0, |e| e.len() * 2)) as u64
    }

    /// Filter-only and exact-only byte counts.
    pub fn bytes_by_part(&self) -> (u64, u64, u64) {
        let filter = match &self.filter {
            AnyFilter::Fuse8(view) => view.bytes(),
            AnyFilter::Fuse16(view) => view.bytes(),
        };
        (
            filter as u64,
            self.exact.bytes() as u64,
            self.expiry.map_or(0, |e| e.len() as u64 * 2),
        )
    }

    pub fn file_len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// The key this set stores for `number` (the number itself, or its keyed fingerprint).
    #[inline]
    pub fn key_of(&self, number: Number) -> u64 {
        match &self.key {
            Some(key) => key.fingerprint(number),
            None => number.get(),
        }
    }

    #[inline]
    fn filter_contains(&self, key: u64) -> bool {
        match &self.filter {
            AnyFilter::Fuse8(view) => view.contains(key),
            AnyFilter::Fuse16(view) => view.contains(key),
        }
    }

    /// Membership of a stored key, ignoring dates.
    #[inline]
    pub fn get_key(&self, key: u64) -> Membership {
        if !self.filter_contains(key) {
            return Membership::Absent;
        }
        match self.exact.rank(key) {
            None => Membership::Absent,
            Some(rank) => Membership::Present {
                expires: self.expiry_of(rank),
            },
        }
    }

    #[inline]
    fn expiry_of(&self, rank: u64) -> Option<Day> {
        match self.expiry?.get(rank as usize) {
            Some(&NEVER) | None => None,
            Some(&day) => Some(Day(i32::from(day))),
        }
    }

    /// Membership of a number, ignoring dates.
    #[inline]
    pub fn get(&self, number: Number) -> Membership {
        self.get_key(self.key_of(number))
    }

    /// Whether `number` is in the set on `today` (expired consent counts as absent).
    #[inline]
    pub fn contains(&self, number: Number, today: Day) -> bool {
        self.contains_key(self.key_of(number), today)
    }

    #[inline]
    pub fn contains_key(&self, key: u64, today: Day) -> bool {
        match self.get_key(key) {
            Membership::Absent => false,
            Membership::Present { expires } => expires.is_none_or(|day| today < day),
        }
    }

    /// Answers for a batch of numbers on `today`, one `bool` per number.
    pub fn contains_batch(&self, numbers: &[Number], today: Day, out: &mut [bool]) -> BatchStats {
        assert_eq!(numbers.len(), out.len(), "one answer per number");
        let mut stats = BatchStats::default();
        let mut keys = [0u64; GROUP];
        for (numbers, out) in numbers.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            for (key, &number) in keys.iter_mut().zip(numbers) {
                *key = self.key_of(number);
            }
            self.group(&keys[..numbers.len()], today, out, &mut stats);
        }
        stats
    }

    /// Answers for a batch of stored keys on `today`.
    pub fn contains_keys_batch(&self, keys: &[u64], today: Day, out: &mut [bool]) -> BatchStats {
        assert_eq!(keys.len(), out.len(), "one answer per key");
        let mut stats = BatchStats::default();
        for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            self.group(keys, today, out, &mut stats);
        }
        stats
    }

    /// One group through the stages: filter, directory, low bits, expiry.
    #[inline]
    fn group(&self, keys: &[u64], today: Day, out: &mut [bool], stats: &mut BatchStats) {
        match &self.filter {
            AnyFilter::Fuse8(view) => view.contains_batch(keys, out),
            AnyFilter::Fuse16(view) => view.contains_batch(keys, out),
        }
        let mut hits = [0u8; GROUP];
        let mut hit_count = 0;
        for (index, &hit) in out.iter().enumerate() {
            hits[hit_count] = index as u8;
            hit_count += usize::from(hit);
        }
        if hit_count == 0 {
            return;
        }
        stats.filter_hits += hit_count as u64;
        let mut probes = [Probe::default(); GROUP];
        for (probe, &index) in probes.iter_mut().zip(&hits[..hit_count]) {
            *probe = self.exact.locate(keys[index as usize]);
        }
        for probe in &probes[..hit_count] {
            self.exact.prefetch_directory(probe);
        }
        for probe in &mut probes[..hit_count] {
            let _ = self.exact.find_bucket(probe);
        }
        let mut ranks = [None; GROUP];
        for ((rank, probe), &index) in ranks
            .iter_mut()
            .zip(&probes[..hit_count])
            .zip(&hits[..hit_count])
        {
            *rank = self.exact.finish(probe, keys[index as usize]);
            if let (Some(rank), Some(expiry)) = (*rank, self.expiry) {
                prefetch_read(expiry.as_ptr().wrapping_add(rank as usize));
            }
        }
        for (rank, &index) in ranks[..hit_count].iter().zip(&hits[..hit_count]) {
            let present = match rank {
                None => false,
                Some(rank) => self.expiry_of(*rank).is_none_or(|day| today < day),
            };
            stats.confirmed += u64::from(rank.is_some());
            out[index as usize] = present;
        }
    }

    /// Every stored key with its expiry, in key order (for rebuilds and change lists).
    pub fn entries(&self) -> impl Iterator<Item = (u64, Option<Day>)> + '_ {
        self.exact
            .iter()
            .enumerate()
            .map(|(rank, key)| (key, self.expiry_of(rank as u64)))
    }
}

/// Matches a keyed snapshot with the caller's key; plain snapshots ignore any key.
fn check_key(header: &SetHeader, key: Option<&SecretKey>) -> Result<Option<SecretKey>, String> {
    match header.scheme {
        KeyScheme::E164 => Ok(None),
        KeyScheme::SipHash24 => {
            let wanted = header.key_id.as_deref().unwrap_or("");
            let Some(key) = key else {
                return Err(format!(
                    "set '{}' holds keyed fingerprints (key id '{wanted}'); pass its key file",
                    header.name
                ));
            };
            if key.id() != wanted {
                return Err(format!(
                    "set '{}' needs key id '{wanted}' but the key file has id '{}'",
                    header.name,
                    key.id()
                ));
            }
            if key.check_value() != header.key_check {
                return Err(format!(
                    "key file with id '{wanted}' is not the key set '{}' was built with",
                    header.name
                ));
            }
            Ok(Some(key.clone()))
        }
    }
}

/// Typed access to a decoded layout's sections.
struct Parts<'a> {
    layout: &'a SnapshotLayout,
    bytes: &'static [u8],
    path: &'a Path,
}

impl Parts<'_> {
    fn corrupt(&self, id: SectionId, reason: &str) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.to_owned(),
            offset: self.layout.section(id).map_or(0, |s| s.offset),
            reason: format!("section {}: {reason}", id.name()),
        }
    }

    fn slice<T: bytemuck::Pod>(&self, id: SectionId) -> Result<&'static [T], SnapshotError> {
        let section = self
            .layout
            .section(id)
            .ok_or_else(|| self.corrupt(id, "missing"))?;
        let bytes = &self.bytes[section.offset as usize..(section.offset + section.len) as usize];
        bytemuck::try_cast_slice(bytes).map_err(|_| self.corrupt(id, "length or alignment"))
    }

    fn words(&self, id: SectionId) -> Result<&'static [u64], SnapshotError> {
        self.slice::<u64>(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_copy_holds_the_same_bytes() {
        let bytes: Vec<u8> = (0..(5u32 << 20)).map(|i| (i * 31 % 251) as u8).collect();
        let backing = Backing::huge_copy(&bytes).unwrap();
        assert_eq!(backing.bytes(), &bytes[..]);
        let empty = Backing::huge_copy(&[]).unwrap();
        assert!(empty.bytes().is_empty());
    }
}
