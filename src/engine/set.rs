//! Suppression sets: immutable, exact membership over phone numbers.
//!
//! A set is held in one of three layouts, chosen at build time and recorded by the sections of
//! its snapshot:
//! - a slot table (`engine::slots`): two 64-byte lines read in parallel and compared in a few
//!   vector instructions, present or absent, no filter, about 2.1 bytes per number: the default
//!   for plain sets of 1024+ numbers without expiry dates whose span suits it;
//! - a binary fuse filter that turns away most absent keys after three cache lines, in front of
//!   an exact Elias-Fano table that confirms every filter hit: always for keyed fingerprints
//!   (uniform over 2^60, which neither table stores in under 6 bytes each), sets with expiry
//!   dates, small sets, and plain sets the slot table does not suit (too scattered);
//! - on request ([`LayoutChoice::Auto`]), a line table (`engine::lines`) for dense plain
//!   numbers: one index entry and one 64-byte line per lookup, present or absent, at 1.7-2.1
//!   bytes per number for national lists: faster on members, slower on absent numbers.
//!
//! Either way answers have neither false positives nor false negatives. Consent sets may carry
//! a per-entry expiry day. A set is built once by [`SetBuilder`] (`engine::builder`, re-exported
//! here) into a snapshot image, and served either from that image or from a memory-mapped
//! snapshot file: the same validated bytes either way. This module owns serving a set.
//!
//! Lookups never allocate and never lock; the batched forms prefetch each stage's cache lines
//! well before reading them (rolling pipelines for line tables and for the filter; the filter's
//! hits then walked together through directory, low bits and expiry). This module never does
//! I/O beyond mapping its own snapshot files.

use crate::engine::builder::NEVER;
pub use crate::engine::builder::{
    BuildError, BuildStats, BuiltSet, LayoutChoice, SetBuilder, SetSpec,
};
use crate::engine::date::Day;
use crate::engine::exact::{ExactView, Probe};
use crate::engine::fuse::FuseView;
use crate::engine::keys::SecretKey;
use crate::engine::lines::LineView;
use crate::engine::number::Number;
use crate::engine::prefetch::prefetch_read;
use crate::engine::slots::SlotView;
use crate::engine::snapshot::{
    self, SectionId, SetHeader, SetKind, SnapshotError, SnapshotImage, SnapshotLayout,
};
use std::path::{Path, PathBuf};

mod load;
use load::{Parts, check_key, load_classic, load_lines, load_slots};

/// Keyed numbers are fingerprinted into blocks of this many keys before the filter sees them.
const BLOCK: usize = 1024;
/// Filter hits confirmed together, stage by stage (a stack array of probes this long).
const CONFIRM: usize = 256;
/// Keys of a long batch that go through the filter first, to tell whether the batch is mostly
/// members (then the rest skips the filter: [`SuppressionSet::classic_batch`]).
const PROBE_KEYS: usize = 256;

/// Whether `members` of `keys` is at least 7 in 8: a share where the filter's three lines per
/// key cost more than the confirmations of the few non-members it would have spared.
fn mostly_members(members: usize, keys: usize) -> bool {
    8 * members >= 7 * keys
}
/// Images at least this large are copied into huge-page memory by [`SuppressionSet::from_image`].
const HUGE_COPY_MIN_BYTES: usize = 4 << 20;

/// The layout a loaded set is served from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Slots,
    Lines,
    FilterEliasFano,
}

impl Layout {
    /// The choice that rebuilds a set in this layout (a rebuild from a base keeps its layout,
    /// whether by `suppressd build --base` or by compaction).
    pub fn choice(self) -> LayoutChoice {
        match self {
            Layout::Slots => LayoutChoice::Slots,
            Layout::Lines => LayoutChoice::Auto,
            Layout::FilterEliasFano => LayoutChoice::FilterEliasFano,
        }
    }
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

impl AnyFilter {
    fn bytes(&self) -> usize {
        match self {
            AnyFilter::Fuse8(view) => view.bytes(),
            AnyFilter::Fuse16(view) => view.bytes(),
        }
    }
}

/// A loaded set's lookup structures (see the module docs).
enum Table {
    Slots(SlotView<'static>),
    Lines(LineView<'static>),
    Classic {
        filter: AnyFilter,
        exact: ExactView<'static>,
    },
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
    table: Table,
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
        let table = if layout.section(SectionId::SlotLines).is_some() {
            load_slots(&parts, &header)?
        } else if layout.section(SectionId::Lines).is_some() {
            load_lines(&parts, &header)?
        } else {
            load_classic(&parts, &header)?
        };
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
            table,
            expiry,
            backing,
        })
    }

    /// The layout this set is served from.
    pub fn set_layout(&self) -> Layout {
        match self.table {
            Table::Slots(_) => Layout::Slots,
            Table::Lines(_) => Layout::Lines,
            Table::Classic { .. } => Layout::FilterEliasFano,
        }
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
        let (filter, exact, expiry) = self.bytes_by_part();
        filter + exact + expiry
    }

    /// Filter, exact table (slot, line or Elias-Fano table) and expiry byte counts.
    pub fn bytes_by_part(&self) -> (u64, u64, u64) {
        let (filter, exact) = match &self.table {
            Table::Slots(slots) => (0, slots.bytes()),
            Table::Lines(lines) => (0, lines.bytes()),
            Table::Classic { filter, exact } => (filter.bytes(), exact.bytes()),
        };
        (
            filter as u64,
            exact as u64,
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

    /// Membership of a stored key, ignoring dates.
    #[inline]
    pub fn get_key(&self, key: u64) -> Membership {
        let rank = match &self.table {
            // Slot tables hold no expiry dates (the builder keeps such sets off them).
            Table::Slots(slots) => {
                return if slots.contains(key) {
                    Membership::Present { expires: None }
                } else {
                    Membership::Absent
                };
            }
            Table::Lines(lines) => match lines.find(key) {
                None => return Membership::Absent,
                Some(_) if self.expiry.is_none() => return Membership::Present { expires: None },
                Some((line, at)) => lines.rank_of(line, at),
            },
            Table::Classic { filter, exact } => {
                let passed = match filter {
                    AnyFilter::Fuse8(view) => view.contains(key),
                    AnyFilter::Fuse16(view) => view.contains(key),
                };
                if !passed {
                    return Membership::Absent;
                }
                match exact.rank(key) {
                    None => return Membership::Absent,
                    rank => rank,
                }
            }
        };
        Membership::Present {
            expires: rank.and_then(|rank| self.expiry_of(rank)),
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
        // Slot tables first, without the general path's key scheme, expiry and membership
        // steps (they hold plain numbers without expiry): a few branches and moves
        // fewer per lookup (BENCHMARKS.md, issue 18 fifth attempt).
        if let Table::Slots(slots) = &self.table {
            return slots.contains(number.get());
        }
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
        if let Table::Slots(slots) = &self.table {
            // Slot tables are plain: the numbers are the keys.
            return slots_batch(slots, Number::as_u64_slice(numbers), out);
        }
        if let Table::Lines(lines) = &self.table {
            return self.lines_batch(
                lines,
                numbers.len(),
                |i| self.key_of(numbers[i]),
                today,
                out,
            );
        }
        match &self.key {
            // Plain sets store the number itself: no copy into a key block.
            None => self.classic_batch(Number::as_u64_slice(numbers), today, out),
            Some(secret) => {
                let mut stats = BatchStats::default();
                let mut keys = [0u64; BLOCK];
                for (numbers, out) in numbers.chunks(BLOCK).zip(out.chunks_mut(BLOCK)) {
                    let keys = &mut keys[..numbers.len()];
                    for (key, &number) in keys.iter_mut().zip(numbers) {
                        *key = secret.fingerprint(number);
                    }
                    let block = self.classic_batch(keys, today, out);
                    stats.filter_hits += block.filter_hits;
                    stats.confirmed += block.confirmed;
                }
                stats
            }
        }
    }

    /// Answers for a batch of stored keys on `today`.
    pub fn contains_keys_batch(&self, keys: &[u64], today: Day, out: &mut [bool]) -> BatchStats {
        assert_eq!(keys.len(), out.len(), "one answer per key");
        if let Table::Slots(slots) = &self.table {
            return slots_batch(slots, keys, out);
        }
        if let Table::Lines(lines) = &self.table {
            return self.lines_batch(lines, keys.len(), |i| keys[i], today, out);
        }
        self.classic_batch(keys, today, out)
    }

    /// A batch through a line table's pipeline. There is no filter: every key the table finds
    /// counts as a filter hit and a confirmation, so the observed false-positive rate is zero.
    #[inline]
    fn lines_batch(
        &self,
        lines: &LineView<'_>,
        count: usize,
        key_at: impl Fn(usize) -> u64,
        today: Day,
        out: &mut [bool],
    ) -> BatchStats {
        out.fill(false);
        let mut found = 0u64;
        match self.expiry {
            None => lines.find_batch(count, &key_at, |i, _, _| {
                out[i] = true;
                found += 1;
            }),
            Some(_) => lines.find_batch(count, &key_at, |i, line, at| {
                found += 1;
                let rank = lines.rank_of(line, at);
                out[i] = rank
                    .and_then(|rank| self.expiry_of(rank))
                    .is_none_or(|day| today < day);
            }),
        }
        BatchStats {
            filter_hits: found,
            confirmed: found,
        }
    }

    /// A batch through the filter + Elias-Fano layout. The whole batch first runs through the
    /// filter's rolling pipeline; only then are its hits confirmed, together, stage by stage
    /// (metadata, directory, low bits, expiry), each stage prefetching for every hit before the
    /// next stage reads. Confirming per small group instead would stall the filter's stream on
    /// four dependent misses for every group holding a hit: with 1 % members and 0.4 % false
    /// positives that is a third of all groups of 32, and it halved absent-traffic throughput
    /// (BENCHMARKS.md, issue 18).
    ///
    /// A batch that is mostly members (a consent list checked for consented numbers, a calling
    /// list scrubbed against a registry that holds most of it) gains nothing from the filter:
    /// it lets nearly every key through, and its three lines per key only crowd the memory
    /// system the confirmations need. So a long batch first sends [`PROBE_KEYS`] keys through
    /// the filter; when at least 7 in 8 pass, the rest goes straight to the exact table in
    /// segments, back to the filter as soon as a segment is no longer mostly members. The
    /// answers are the same either way (the exact table alone is exact); only the cost moves.
    fn classic_batch(&self, keys: &[u64], today: Day, out: &mut [bool]) -> BatchStats {
        let Table::Classic { filter, exact } = &self.table else {
            unreachable!("line tables take the pipeline in lines_batch");
        };
        out.fill(false);
        let mut stats = BatchStats::default();
        let all = 0..keys.len();
        if keys.len() < 4 * PROBE_KEYS {
            self.filter_then_confirm(filter, exact, keys, all, today, out, &mut stats);
            return stats;
        }
        let passed =
            self.filter_then_confirm(filter, exact, keys, 0..PROBE_KEYS, today, out, &mut stats);
        let mut start = PROBE_KEYS;
        if !mostly_members(passed, PROBE_KEYS) {
            let rest = start..keys.len();
            self.filter_then_confirm(filter, exact, keys, rest, today, out, &mut stats);
            return stats;
        }
        let mut indexes = [0u32; CONFIRM];
        while start < keys.len() {
            let end = (start + CONFIRM).min(keys.len());
            for (slot, index) in indexes.iter_mut().zip(start..end) {
                *slot = index as u32;
            }
            let before = stats.confirmed;
            self.confirm(exact, keys, &indexes[..end - start], today, out, &mut stats);
            // Bypassed keys count as filter hits only when confirmed: the false-positive
            // metric (hits minus confirmed) stays the filter's own.
            let confirmed = stats.confirmed - before;
            stats.filter_hits += confirmed;
            if !mostly_members(confirmed as usize, end - start) {
                let rest = end..keys.len();
                self.filter_then_confirm(filter, exact, keys, rest, today, out, &mut stats);
                return stats;
            }
            start = end;
        }
        stats
    }

    /// Runs `keys[range]` through the filter and confirms its hits; returns how many passed.
    #[allow(clippy::too_many_arguments)]
    fn filter_then_confirm(
        &self,
        filter: &AnyFilter,
        exact: &ExactView<'_>,
        keys: &[u64],
        range: std::ops::Range<usize>,
        today: Day,
        out: &mut [bool],
        stats: &mut BatchStats,
    ) -> usize {
        let from = range.start;
        let mut hits = [0u32; CONFIRM];
        let mut hit_count = 0;
        let mut passed = 0;
        let mut on_pass = |index: usize| {
            hits[hit_count] = (from + index) as u32;
            hit_count += 1;
            passed += 1;
            if hit_count == CONFIRM {
                stats.filter_hits += CONFIRM as u64;
                self.confirm(exact, keys, &hits, today, out, stats);
                hit_count = 0;
            }
        };
        match filter {
            AnyFilter::Fuse8(view) => view.for_each_pass(&keys[range], &mut on_pass),
            AnyFilter::Fuse16(view) => view.for_each_pass(&keys[range], &mut on_pass),
        }
        stats.filter_hits += hit_count as u64;
        self.confirm(exact, keys, &hits[..hit_count], today, out, stats);
        passed
    }

    /// Confirms filter hits (indexes into `keys` and `out`, at most [`CONFIRM`]) in the exact
    /// table and the expiry column, writing the final answers.
    #[inline]
    fn confirm(
        &self,
        exact: &ExactView<'_>,
        keys: &[u64],
        hits: &[u32],
        today: Day,
        out: &mut [bool],
        stats: &mut BatchStats,
    ) {
        if hits.is_empty() {
            return;
        }
        let mut ranges = [(0, 0); CONFIRM];
        let ranges = &mut ranges[..hits.len()];
        for (range, &index) in ranges.iter_mut().zip(hits) {
            *range = exact.chunk_range(keys[index as usize]);
        }
        let mut probes = [Probe::default(); CONFIRM];
        let probes = &mut probes[..hits.len()];
        for ((probe, &range), &index) in probes.iter_mut().zip(ranges.iter()).zip(hits) {
            *probe = exact.locate_in(keys[index as usize], range);
        }
        for probe in probes.iter_mut() {
            exact.prefetch_directory(probe);
        }
        for probe in probes.iter_mut() {
            let _ = exact.find_bucket(probe);
        }
        let mut ranks = [None; CONFIRM];
        let ranks = &mut ranks[..hits.len()];
        for ((rank, probe), &index) in ranks.iter_mut().zip(probes.iter()).zip(hits) {
            *rank = exact.finish(probe, keys[index as usize]);
            if let (Some(rank), Some(expiry)) = (*rank, self.expiry) {
                prefetch_read(expiry.as_ptr().wrapping_add(rank as usize));
            }
        }
        for (rank, &index) in ranks.iter().zip(hits) {
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
        let keys: Box<dyn Iterator<Item = u64> + '_> = match &self.table {
            Table::Slots(slots) => Box::new(slots.iter()),
            Table::Lines(lines) => Box::new(lines.iter()),
            Table::Classic { exact, .. } => Box::new(exact.iter()),
        };
        keys.enumerate()
            .map(|(rank, key)| (key, self.expiry_of(rank as u64)))
    }
}

/// A batch through a slot table's pipeline. There is no filter: every key the table finds
/// counts as a filter hit and a confirmation, so the observed false-positive rate is zero.
fn slots_batch(slots: &SlotView<'_>, keys: &[u64], out: &mut [bool]) -> BatchStats {
    out.fill(false);
    let mut found = 0u64;
    slots.find_batch(keys, |i| {
        out[i] = true;
        found += 1;
    });
    BatchStats {
        filter_hits: found,
        confirmed: found,
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
