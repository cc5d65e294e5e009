//! The line table: the exact table of plain-number sets, answering from one 64-byte line.
//!
//! Sorted keys are packed greedily into cache lines of [`LINE_WORDS`] words. A line holds its
//! first key in full and every further key as a fixed-width delta from it (the width is the bit
//! length of the line's largest delta, so a line of dense national numbers holds 35-45 keys).
//! A radix index over `key - min` (about one bucket per line, 8 bytes each) says which lines
//! start in each bucket and where the first of them starts, so a lookup reads one index entry
//! (often cache resident) and one line, where a binary fuse filter reads three lines and the
//! partitioned Elias-Fano table four more. Absent numbers cost the same as present ones: no
//! filter stands in front of this table.
//!
//! Index entry `b` (bucket of values `min + b << shift ..`, at most 2^16 values wide): the low
//! 32 bits count the lines whose first key lies in an earlier bucket; bits 32-47 and 48-63 hold
//! the offsets inside the bucket of its first two line starts (zero when absent). A key belongs
//! to the last line whose first key is at most the key, which the entry and the next one's
//! count give without a branch when at most two lines start in the bucket; past a third start
//! (a few percent of lookups) the following lines' headers are read.
//!
//! Validation is total: every line is decoded and checked (widths, counts, strictly increasing
//! keys across lines, canonical padding), every index entry is recomputed, and at most
//! [`MAX_STARTS`] lines may start in one bucket, so no lookup reads outside its arrays or walks
//! far, whatever the bytes. Keys must be below 2^51 (every E.164 number is); keyed fingerprints
//! use the filter and Elias-Fano table instead. This module never does I/O.

use crate::engine::prefetch::prefetch_read;

/// Words per line: one 64-byte cache line.
pub const LINE_WORDS: usize = 8;
/// Word holding the line header; the deltas fill the words before it.
const HEADER_WORD: usize = LINE_WORDS - 1;
/// Bits available for deltas.
const PAYLOAD_BITS: u64 = 64 * HEADER_WORD as u64;
/// Bits of the first key in the header; keys must be below `1 << FIRST_BITS`.
const FIRST_BITS: u32 = 51;
pub const KEY_LIMIT: u64 = 1 << FIRST_BITS;
const FIRST_MASK: u64 = KEY_LIMIT - 1;
/// Header bits 51..58: key count minus one; bits 58..64: delta width.
const COUNT_SHIFT: u32 = 51;
const WIDTH_SHIFT: u32 = 58;
/// Most keys in one line (the count field's range).
const MAX_LINE_KEYS: usize = 128;
/// Bisection steps that narrow up to `MAX_LINE_KEYS - 1` deltas to one.
const BISECTION_STEPS: u32 = 7;
/// Lines per index bucket aimed at (a power of two up to twice this).
const LINES_PER_BUCKET: u64 = 1;
/// Most lines that may start in one index bucket; bounds the header walk of a lookup.
pub const MAX_STARTS: u64 = 16;
/// Widest index bucket, 2^16 values, so the offsets of a bucket's first two line starts
/// ("fences") fit 16 bits each beside the 32-bit line count in one 8-byte entry.
const MAX_SHIFT: u32 = 16;
const FENCE1_SHIFT: u32 = 32;
const FENCE2_SHIFT: u32 = 48;
const LINES_MASK: u64 = (1 << 32) - 1;
/// Words of the info section: min, shift, bucket count, line count, key count, three zeros.
pub const INFO_WORDS: usize = 8;
/// Keys between prefetching a key's index entry and reading it, and between prefetching its
/// line and searching it, in a batch (measured, BENCHMARKS.md).
const INDEX_DISTANCE: usize = 32;
const LINE_DISTANCE: usize = 16;
/// Ring of per-key pipeline state; a power of two above both distances together.
const RING: usize = 64;
/// Marks "no bucket / no line" in the batch pipeline.
const NONE: usize = usize::MAX;

/// A line table held in memory, ready to be written or viewed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineTable {
    pub info: Vec<u64>,
    pub index: Vec<u64>,
    pub lines: Vec<u64>,
    /// Rank of each line's first key plus a final entry (only stored for sets with side data).
    pub ranks: Vec<u64>,
}

/// Why a key set is not served by a line table (the set falls back to filter + Elias-Fano).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsuitable {
    Empty,
    KeyTooLarge,
    /// The index would need buckets wider than 2^32 values (a sparse set spanning the world).
    TooSparse,
    /// Too many lines would start in one bucket (a dense cluster inside a sparse range).
    Skewed,
}

impl LineTable {
    /// Packs strictly increasing keys into lines and indexes them.
    pub fn build(sorted_keys: &[u64], with_ranks: bool) -> Result<LineTable, Unsuitable> {
        debug_assert!(sorted_keys.windows(2).all(|w| w[0] < w[1]));
        let (Some(&min), Some(&max)) = (sorted_keys.first(), sorted_keys.last()) else {
            return Err(Unsuitable::Empty);
        };
        if max >= KEY_LIMIT || sorted_keys.len() as u64 >= u64::from(u32::MAX) {
            return Err(Unsuitable::KeyTooLarge);
        }
        let mut lines: Vec<u64> = Vec::with_capacity(sorted_keys.len() / 30 * LINE_WORDS);
        let mut firsts: Vec<u64> = Vec::with_capacity(sorted_keys.len() / 30);
        let mut ranks = Vec::new();
        let mut start = 0;
        while start < sorted_keys.len() {
            let first = sorted_keys[start];
            // Largest run whose deltas all fit the payload at the width of the largest delta.
            let mut end = start + 1;
            while end < sorted_keys.len() && end - start < MAX_LINE_KEYS {
                let width = bit_len(sorted_keys[end] - first);
                if (end - start) as u64 * u64::from(width) > PAYLOAD_BITS {
                    break;
                }
                end += 1;
            }
            let keys = &sorted_keys[start..end];
            let width = bit_len(keys[keys.len() - 1] - first);
            let mut line = [0u64; LINE_WORDS];
            for (i, &key) in keys[1..].iter().enumerate() {
                put_bits(&mut line, i as u64 * u64::from(width), width, key - first);
            }
            line[HEADER_WORD] = first
                | ((keys.len() as u64 - 1) << COUNT_SHIFT)
                | (u64::from(width) << WIDTH_SHIFT);
            if with_ranks {
                ranks.push(start as u64);
            }
            lines.extend_from_slice(&line);
            firsts.push(first);
            start = end;
        }
        if with_ranks {
            ranks.push(sorted_keys.len() as u64);
        }
        let line_count = firsts.len() as u64;
        // About one bucket per line, but never wider than 2^16 values (fences are 16 bits).
        let wanted = (line_count / LINES_PER_BUCKET).max(1).next_power_of_two();
        let mut shift = 0u32;
        while ((max - min) >> shift) >= wanted {
            shift += 1;
        }
        let shift = shift.min(MAX_SHIFT);
        let buckets = ((max - min) >> shift) + 1;
        // A sparse set would need an index of several bytes per key (a small one is fine).
        if buckets > (2 * line_count).max(sorted_keys.len() as u64 / 8).max(4096) {
            return Err(Unsuitable::TooSparse);
        }
        let buckets = buckets as usize;
        let mut index = vec![0u64; buckets + 1];
        // Count line starts per bucket; fences are the offsets of its first two.
        let mut starts = vec![0u32; buckets + 1];
        for &first in &firsts {
            let offset = first - min;
            let bucket = (offset >> shift) as usize;
            let fence = offset - ((bucket as u64) << shift);
            match starts[bucket + 1] {
                0 => index[bucket] |= fence << FENCE1_SHIFT,
                1 => index[bucket] |= fence << FENCE2_SHIFT,
                _ => {}
            }
            starts[bucket + 1] += 1;
        }
        if starts.iter().any(|&s| u64::from(s) > MAX_STARTS) {
            return Err(Unsuitable::Skewed);
        }
        let mut before = 0u64;
        for bucket in 0..=buckets {
            before += u64::from(starts[bucket]);
            index[bucket] |= before;
        }
        let info = vec![
            min,
            u64::from(shift),
            buckets as u64,
            line_count,
            sorted_keys.len() as u64,
            0,
            0,
            0,
        ];
        Ok(LineTable {
            info,
            index,
            lines,
            ranks,
        })
    }

    pub fn view(&self) -> LineView<'_> {
        let ranks = (!self.ranks.is_empty()).then_some(&self.ranks[..]);
        LineView::new(&self.info, &self.index, &self.lines, ranks)
            .expect("a freshly built line table is valid")
    }

    pub fn bytes(&self) -> usize {
        8 * (self.info.len() + self.index.len() + self.lines.len() + self.ranks.len())
    }
}

/// Number of bits needed for `value` (0 for 0).
#[inline(always)]
fn bit_len(value: u64) -> u32 {
    64 - value.leading_zeros()
}

fn put_bits(line: &mut [u64; LINE_WORDS], position: u64, width: u32, value: u64) {
    let word = (position / 64) as usize;
    let shift = (position % 64) as u32;
    line[word] |= value << shift;
    if shift + width > 64 {
        line[word + 1] |= value >> (64 - shift);
    }
}

/// Delta `i` of a line (deltas occupy words before the header; a two-word read at the last
/// payload word reads the header word, which the mask discards).
#[inline(always)]
fn delta(line: &[u64; LINE_WORDS], i: usize, width: u32) -> u64 {
    let position = i * width as usize;
    let word = position / 64;
    let shift = position % 64;
    let pair = (u128::from(line[word + 1]) << 64) | u128::from(line[word]);
    ((pair >> shift) as u64) & ((1u64 << width) - 1)
}

/// The `mask`-wide field at bit `position` of a line's payload (`position` < 448, so the second
/// word read is at most the header word, whose bits the mask discards).
#[inline(always)]
fn field(line: &[u64; LINE_WORDS], position: usize, mask: u64) -> u64 {
    let word = position / 64;
    let shift = position % 64;
    // `<< 1 << (63 - shift)` is `<< (64 - shift)` without the undefined shift by 64.
    let low = line[word] >> shift;
    let high = (line[word + 1] << 1) << (63 - shift);
    (low | high) & mask
}

/// A line's decoded header: first key, key count, delta width.
#[inline(always)]
fn header(line: &[u64; LINE_WORDS]) -> (u64, usize, u32) {
    let word = line[HEADER_WORD];
    (
        word & FIRST_MASK,
        ((word >> COUNT_SHIFT) & 0x7f) as usize + 1,
        (word >> WIDTH_SHIFT) as u32,
    )
}

/// A read-only, validated view of a line table (owned or memory-mapped words).
#[derive(Clone, Debug)]
pub struct LineView<'a> {
    min: u64,
    shift: u32,
    index: &'a [u64],
    lines: &'a [[u64; LINE_WORDS]],
    ranks: Option<&'a [u64]>,
    key_count: u64,
    bytes: usize,
}

impl<'a> LineView<'a> {
    /// Checks every invariant lookups rely on (see the module docs).
    pub fn new(
        info: &'a [u64],
        index: &'a [u64],
        lines: &'a [u64],
        ranks: Option<&'a [u64]>,
    ) -> Result<LineView<'a>, String> {
        let &[min, shift, buckets, line_count, key_count, r0, r1, r2] = info else {
            return Err(format!(
                "info holds {} words, expected {INFO_WORDS}",
                info.len()
            ));
        };
        if [r0, r1, r2] != [0; 3] {
            return Err("info has nonzero reserved words".into());
        }
        if shift > u64::from(MAX_SHIFT) {
            return Err(format!("bucket shift {shift} is over {MAX_SHIFT}"));
        }
        if line_count == 0 || line_count >= u64::from(u32::MAX) {
            return Err(format!("line count {line_count} is out of range"));
        }
        if lines.len() as u64 != line_count.saturating_mul(LINE_WORDS as u64) {
            return Err(format!("{} line words for {line_count} lines", lines.len()));
        }
        if buckets == 0 || index.len() as u64 != buckets.saturating_add(1) {
            return Err(format!(
                "{} index entries for {buckets} buckets (expected one more)",
                index.len()
            ));
        }
        // Both checked above: lines holds whole lines of 8 words.
        let lines: &[[u64; LINE_WORDS]] = bytemuck::cast_slice(lines);
        if let Some(ranks) = ranks
            && ranks.len() as u64 != line_count + 1
        {
            return Err("line ranks have the wrong length".into());
        }
        // Lines: canonical encoding, keys strictly increasing within and across lines.
        let mut keys = 0u64;
        let mut previous_last: Option<u64> = None;
        for (number, line) in lines.iter().enumerate() {
            let (first, count, width) = header(line);
            let fail = |reason: &str| format!("line {number}: {reason}");
            if width > FIRST_BITS || (count == 1) != (width == 0) {
                return Err(fail("delta width is out of range"));
            }
            let used = (count as u64 - 1) * u64::from(width);
            if used > PAYLOAD_BITS {
                return Err(fail("deltas overflow the line"));
            }
            if previous_last.is_some_and(|last| first <= last) {
                return Err(fail("first key is not above the previous line's keys"));
            }
            let mut last_delta = 0u64;
            for i in 0..count - 1 {
                let d = delta(line, i, width);
                if d <= last_delta {
                    return Err(fail("deltas are not strictly increasing"));
                }
                last_delta = d;
            }
            if width > 0 && bit_len(last_delta) != width {
                return Err(fail("delta width is not the largest delta's"));
            }
            // Unused payload bits and the header's unused bits are zero.
            for (word_index, &word) in line[..HEADER_WORD].iter().enumerate() {
                let word_start = word_index as u64 * 64;
                let dirty = if used <= word_start {
                    word
                } else if used >= word_start + 64 {
                    0
                } else {
                    word >> (used - word_start)
                };
                if dirty != 0 {
                    return Err(fail("padding bits are not zero"));
                }
            }
            if let Some(ranks) = ranks
                && ranks[number] != keys
            {
                return Err(fail("rank does not match the keys before it"));
            }
            keys += count as u64;
            previous_last = Some(first + last_delta);
        }
        if keys != key_count {
            return Err(format!("lines hold {keys} keys, info says {key_count}"));
        }
        if ranks.is_some_and(|ranks| ranks[line_count as usize] != keys) {
            return Err("final rank does not match the key count".into());
        }
        let first_key = header(&lines[0]).0;
        if first_key != min {
            return Err("minimum is not the first line's first key".into());
        }
        let max = previous_last.unwrap_or(min);
        if (max - min) >> shift != buckets - 1 {
            return Err("bucket count does not match the key range".into());
        }
        // Index: recompute every entry from the lines' first keys.
        let mut line = 0usize;
        for (bucket, &entry) in index.iter().enumerate() {
            let bucket_start = (bucket as u64) << shift;
            let mut fences = 0u64;
            let before = line as u64;
            while line < lines.len() {
                let first_offset = header(&lines[line]).0 - min;
                if first_offset >> shift != bucket as u64 {
                    break;
                }
                let fence = first_offset - bucket_start;
                match line as u64 - before {
                    0 => fences |= fence << FENCE1_SHIFT,
                    1 => fences |= fence << FENCE2_SHIFT,
                    _ => {}
                }
                line += 1;
            }
            if line as u64 - before > MAX_STARTS {
                return Err(format!("index bucket {bucket}: too many lines start in it"));
            }
            // Entry b counts lines starting before bucket b, and fences the first two here.
            if entry != before | fences {
                return Err(format!("index bucket {bucket}: entry is inconsistent"));
            }
        }
        if line != lines.len() {
            return Err("lines start beyond the last bucket".into());
        }
        let bytes = 8 * (info.len() + index.len() + lines.len() * LINE_WORDS)
            + ranks.map_or(0, |r| r.len() * 8);
        Ok(LineView {
            min,
            shift: shift as u32,
            index,
            lines,
            ranks,
            key_count,
            bytes,
        })
    }

    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Stage 1: the key's index bucket, if the key lies in the table's range.
    #[inline(always)]
    fn bucket(&self, key: u64) -> usize {
        let Some(offset) = key.checked_sub(self.min) else {
            return NONE;
        };
        let bucket = offset >> self.shift;
        // The sentinel entry is not a bucket (and with a shift of 0 any u64 is an offset).
        if bucket >= (self.index.len() as u64).saturating_sub(1) {
            return NONE;
        }
        bucket as usize
    }

    /// Stage 2: the line that can hold `key` from its bucket's entry and the next one's count,
    /// without a branch; and whether more than two lines start in the bucket and the key lies
    /// past the second, so later lines' headers must be read ([`Self::walk`]).
    #[inline(always)]
    fn line_in_bucket(&self, key: u64, bucket: usize) -> (usize, bool) {
        let entry = self.index[bucket];
        let lo = entry & LINES_MASK;
        let starts = (self.index[bucket + 1] & LINES_MASK).wrapping_sub(lo);
        let in_bucket = (key - self.min) & ((1u64 << self.shift) - 1);
        let past1 = starts >= 1 && in_bucket >= (entry >> FENCE1_SHIFT) & 0xffff;
        let past2 = starts >= 2 && in_bucket >= entry >> FENCE2_SHIFT;
        // No line before the first: wraps to NONE, which the caller treats as absent.
        let line = (lo as usize)
            .wrapping_sub(1)
            .wrapping_add(usize::from(past1) + usize::from(past2));
        (line, past2 && starts > 2)
    }

    /// The last line at or after `line` whose first key is at most `key`, among the lines that
    /// start in `bucket` (at most [`MAX_STARTS`]).
    #[inline(never)]
    fn walk(&self, key: u64, bucket: usize, mut line: usize) -> usize {
        let end = (self.index[bucket + 1] & LINES_MASK) as usize;
        while line + 1 < end && header(&self.lines[line + 1]).0 <= key {
            line += 1;
        }
        line
    }

    /// Stages 1 and 2 for one key: its line, or `NONE`.
    #[inline(always)]
    fn line_of(&self, key: u64) -> usize {
        let bucket = self.bucket(key);
        if bucket == NONE {
            return NONE;
        }
        let (line, more) = self.line_in_bucket(key, bucket);
        if more {
            self.walk(key, bucket, line)
        } else {
            line
        }
    }

    /// Stage 3: the key's place in `line`, if it is there. Branch-free up to the answer: a
    /// fixed number of bisection steps (enough for [`MAX_LINE_KEYS`]), so a run of single
    /// lookups never stalls on a mispredicted branch that waits for a line from memory.
    #[inline(always)]
    fn search(&self, line: usize, key: u64) -> Option<usize> {
        let line = &self.lines[line];
        let (first, count, width) = header(line);
        // Keys below the first wrap to huge targets and match no delta.
        let target = key.wrapping_sub(first);
        let width = width as usize;
        let mask = (1u64 << width) - 1;
        // Bisection over the deltas for the last one at most `target`. The probe's bit
        // position is carried along (no multiply on the dependency chain).
        let (mut base, mut base_position) = (0usize, 0usize);
        let mut len = count - 1;
        for _ in 0..BISECTION_STEPS {
            let half = len / 2;
            let position = base_position + half * width;
            let below = field(line, position, mask) <= target;
            base = if below { base + half } else { base };
            base_position = if below { position } else { base_position };
            len -= half;
        }
        let hit_delta = count > 1 && field(line, base_position, mask) == target;
        if target == 0 {
            Some(0)
        } else if hit_delta {
            Some(base + 1)
        } else {
            None
        }
    }

    /// Where `key` is: its line and position in the line.
    #[inline]
    pub fn find(&self, key: u64) -> Option<(usize, usize)> {
        let line = self.line_of(key);
        if line == NONE {
            return None;
        }
        self.search(line, key).map(|at| (line, at))
    }

    /// Rank of a found key among all keys (needs the ranks section).
    #[inline]
    pub fn rank_of(&self, line: usize, at: usize) -> Option<u64> {
        self.ranks.map(|ranks| ranks[line] + at as u64)
    }

    /// Prefetches the rank of a line (for sets whose side data is read by rank).
    #[inline(always)]
    pub fn prefetch_rank(&self, line: usize) {
        if let Some(ranks) = self.ranks {
            prefetch_read(ranks.as_ptr().wrapping_add(line));
        }
    }

    /// Looks up `count` keys (`key_at(i)` is the i-th), calling `found(i, line, at)` for every
    /// key present.
    ///
    /// A software pipeline: key `i`'s index entry is prefetched while key `i - INDEX_DISTANCE`'s
    /// line is prefetched and key `i - INDEX_DISTANCE - LINE_DISTANCE` is searched, so dozens of
    /// cache misses stay in flight with no pause between groups.
    #[inline]
    pub fn find_batch(
        &self,
        count: usize,
        key_at: impl Fn(usize) -> u64,
        mut found: impl FnMut(usize, usize, usize),
    ) {
        let mut keys = [0u64; RING];
        let mut buckets = [NONE; RING];
        let mut lines = [NONE; RING];
        let mut walks = [false; RING];
        for i in 0..count + INDEX_DISTANCE + LINE_DISTANCE {
            if i < count {
                let key = key_at(i);
                let bucket = self.bucket(key);
                keys[i % RING] = key;
                buckets[i % RING] = bucket;
                if bucket != NONE {
                    prefetch_read(self.index.as_ptr().wrapping_add(bucket));
                }
            }
            if let Some(j) = i.checked_sub(INDEX_DISTANCE)
                && j < count
            {
                let bucket = buckets[j % RING];
                let (line, more) = if bucket == NONE {
                    (NONE, false)
                } else {
                    self.line_in_bucket(keys[j % RING], bucket)
                };
                // Rarely the key may lie in a later line of its bucket: prefetch the next
                // line as well and walk in stage 3, when both are in cache.
                walks[j % RING] = more;
                lines[j % RING] = line;
                if line != NONE {
                    prefetch_read(self.lines.as_ptr().wrapping_add(line));
                    if more {
                        prefetch_read(self.lines.as_ptr().wrapping_add(line + 1));
                    }
                }
            }
            if let Some(k) = i.checked_sub(INDEX_DISTANCE + LINE_DISTANCE)
                && k < count
            {
                let mut line = lines[k % RING];
                if walks[k % RING] {
                    line = self.walk(keys[k % RING], buckets[k % RING], line);
                }
                if line != NONE
                    && let Some(at) = self.search(line, keys[k % RING])
                {
                    found(k, line, at);
                }
            }
        }
    }

    /// Every key, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.lines.iter().flat_map(|line| {
            let (first, count, width) = header(line);
            std::iter::once(first).chain((0..count - 1).map(move |i| first + delta(line, i, width)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn check(keys: &BTreeSet<u64>, probes: &[u64]) {
        let sorted: Vec<u64> = keys.iter().copied().collect();
        let table = match LineTable::build(&sorted, true) {
            Ok(table) => table,
            Err(Unsuitable::Empty) => return assert!(sorted.is_empty()),
            Err(other) => panic!("unsuitable: {other:?}"),
        };
        let view = table.view();
        assert_eq!(view.iter().collect::<Vec<_>>(), sorted);
        let rank = |key| view.find(key).and_then(|(l, a)| view.rank_of(l, a));
        for (expected, &key) in sorted.iter().enumerate() {
            assert_eq!(rank(key), Some(expected as u64), "key {key}");
        }
        let mut all: Vec<u64> = probes.to_vec();
        all.extend(sorted.iter().flat_map(|&k| [k.saturating_sub(1), k, k + 1]));
        let mut batch = vec![None; all.len()];
        view.find_batch(
            all.len(),
            |i| all[i],
            |i, line, at| batch[i] = view.rank_of(line, at),
        );
        for (&probe, got) in all.iter().zip(&batch) {
            let expected = sorted.binary_search(&probe).ok().map(|r| r as u64);
            assert_eq!(rank(probe), expected, "probe {probe}");
            assert_eq!(*got, expected, "batched probe {probe}");
        }
    }

    #[test]
    fn single_and_small() {
        check(&[0].into(), &[0, 1, 2, KEY_LIMIT - 1]);
        check(&[KEY_LIMIT - 1].into(), &[0, KEY_LIMIT - 2, u64::MAX]);
        check(&[5, 7].into(), &[4, 5, 6, 7, 8]);
        check(&BTreeSet::new(), &[]);
    }

    #[test]
    fn dense_runs_and_national_ranges() {
        let run: BTreeSet<u64> = (1000..20_000u64).collect();
        check(&run, &(900..20_100).collect::<Vec<_>>());
        let pl: BTreeSet<u64> = (0..60_000u64)
            .map(|i| 48_500_000_000 + i * 18 + (i * 7919) % 17)
            .collect();
        check(
            &pl,
            &(48_499_999_000..48_501_200_000)
                .step_by(7)
                .collect::<Vec<_>>(),
        );
    }

    #[test]
    fn dense_numbers_cost_under_two_bytes() {
        // US-like density: one number in 160.
        let keys: Vec<u64> = (0..1_000_000u64)
            .map(|i| 12_000_000_000 + i * 160 + (i * 7919) % 150)
            .collect();
        let table = LineTable::build(&keys, false).unwrap();
        let per_key = table.bytes() as f64 / keys.len() as f64;
        assert!(per_key < 2.1, "{per_key} bytes per key");
    }

    #[test]
    fn skew_and_sparsity_are_reported() {
        assert_eq!(
            LineTable::build(&[KEY_LIMIT], false),
            Err(Unsuitable::KeyTooLarge)
        );
        assert_eq!(
            LineTable::build(&[0, 1 << 40], false),
            Err(Unsuitable::TooSparse)
        );
        // A dense block of 10 000 numbers before a sparser range: 154 lines in one bucket.
        let mut skewed: Vec<u64> = (0..10_000u64).collect();
        skewed.extend((1..20_000u64).map(|i| 10_000 + (i << 12)));
        assert_eq!(LineTable::build(&skewed, false), Err(Unsuitable::Skewed));
    }

    fn refused(table: &LineTable) -> String {
        let ranks = (!table.ranks.is_empty()).then_some(&table.ranks[..]);
        match LineView::new(&table.info, &table.index, &table.lines, ranks) {
            Ok(_) => panic!("corruption accepted"),
            Err(reason) => reason,
        }
    }

    #[test]
    fn corrupted_structure_is_refused() {
        let keys: Vec<u64> = (0..5000u64).map(|i| 10_000 + i * 37).collect();
        let table = LineTable::build(&keys, true).unwrap();
        // A zero delta (a key repeating the line's first).
        let mut bad = table.clone();
        bad.lines[0] &= !0xffff;
        refused(&bad);
        // Deltas out of order.
        let mut bad = table.clone();
        bad.lines[0] |= 0xfff;
        refused(&bad);
        let mut bad = table.clone();
        bad.lines[HEADER_WORD] += 1 << WIDTH_SHIFT;
        refused(&bad);
        let mut bad = table.clone();
        bad.lines[LINE_WORDS + HEADER_WORD] -= 1 << COUNT_SHIFT;
        refused(&bad);
        let mut bad = table.clone();
        bad.index[3] += 1;
        refused(&bad);
        let mut bad = table.clone();
        bad.index[2] += 1 << 32;
        refused(&bad);
        let mut bad = table.clone();
        bad.info[1] += 1;
        refused(&bad);
        let mut bad = table.clone();
        bad.info[4] += 1;
        refused(&bad);
        let mut bad = table.clone();
        bad.ranks[2] += 1;
        refused(&bad);
        let mut bad = table.clone();
        bad.lines.truncate(bad.lines.len() - LINE_WORDS);
        refused(&bad);
        let mut bad = table.clone();
        bad.index.pop();
        refused(&bad);
    }

    proptest! {
        #[test]
        fn answers_like_a_set_model(
            keys in proptest::collection::btree_set(0u64..KEY_LIMIT, 0..2000),
            probes in proptest::collection::vec(0u64..KEY_LIMIT, 0..200),
        ) {
            let sorted: Vec<u64> = keys.iter().copied().collect();
            // Sparse random sets may be unsuitable; suitable ones must answer exactly.
            if LineTable::build(&sorted, true).is_ok() {
                check(&keys, &probes);
            }
        }

        #[test]
        fn answers_like_a_set_model_dense(
            keys in proptest::collection::btree_set(48_000_000_000u64..48_000_200_000, 1..8000),
            probes in proptest::collection::vec(47_999_990_000u64..48_000_210_000, 0..500),
        ) {
            check(&keys, &probes);
        }

        #[test]
        fn clustered_sets_answer_exactly(
            clusters in proptest::collection::vec((0u64..1 << 36, 1usize..400, 1u64..50), 1..12),
            probes in proptest::collection::vec(0u64..1 << 36, 0..300),
        ) {
            let keys: BTreeSet<u64> = clusters
                .iter()
                .flat_map(|&(base, n, step)| (0..n as u64).map(move |i| base + i * step))
                .collect();
            let sorted: Vec<u64> = keys.iter().copied().collect();
            if LineTable::build(&sorted, true).is_ok() {
                check(&keys, &probes);
            }
        }
    }
}
