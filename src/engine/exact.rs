//! The exact table: a partitioned Elias-Fano encoding of the sorted keys of a set.
//!
//! Sorted keys are cut into chunks of [`CHUNK_KEYS`]. Each chunk stores its keys relative to its
//! first key: the low `L` bits of each packed in one bit array, the high bits as a unary bucket
//! directory (a one per key, a zero closing each bucket of `2^L` values). `L` is chosen per chunk,
//! so a chunk of densely packed national numbers spends ~6-9 bits per key while a chunk that
//! straddles two countries only costs itself, never the rest of the set.
//!
//! Each chunk has one 64-byte metadata line: where its directory and low bits start, its `L`, and
//! the bucket of every [`SAMPLE_KEYS`]-th key. A lookup is a binary search over the chunks' first
//! keys (small, cache resident), one read of the chunk's metadata line, a scan of the directory
//! from the nearest sample (one or two words, usually one cache line) and one read of the packed
//! low bits: three cache lines, each of which a batch prefetches for all its keys before reading
//! any. Without the samples the directory scan would start at the chunk start and walk up to five
//! cache lines one miss after another (measured: 4x slower on member traffic; BENCHMARKS.md).
//! The returned rank indexes per-key side data such as consent expiry.
//!
//! Why this and not a hash set or a plain sorted array: see BENCHMARKS.md (bytes per key and
//! lookups per second, measured side by side). This module never does I/O.

use crate::engine::bits::{
    bit, count_ones, lanes_below, last_one_before, low_mask, ones_run, read_bits, select_one,
    select_zero,
};
use crate::engine::prefetch::prefetch_read;

/// Keys per chunk. Bounds the directory scan and the cost of a skewed chunk.
pub const CHUNK_KEYS: usize = 1024;
/// Keys between directory samples within a chunk.
pub const SAMPLE_KEYS: usize = 64;
/// Samples per chunk (the first, key 0, is always bucket 0).
const SAMPLES: usize = CHUNK_KEYS / SAMPLE_KEYS;
/// Words of chunk metadata, one 64-byte line per chunk: directory bit offset; low-bits offset
/// with `L` in the top byte; sixteen `u16` samples (bucket of key `64 j`, or [`NO_SAMPLE`] past
/// the chunk's last key) in four words; the directory end bit offset (so a lookup never reads the
/// next chunk's line); a zero word. One sentinel entry follows the last chunk, holding the total
/// lengths in its first two words and zeros.
pub const META_WORDS: usize = 8;
const SAMPLE_WORD: usize = 2;
const END_WORD: usize = 6;
/// Sample value for a sample position past the chunk's last key.
const NO_SAMPLE: u16 = u16::MAX;
/// Most buckets a chunk may have, so every bucket number fits a sample and `NO_SAMPLE` is never
/// below a valid bucket.
const MAX_BUCKETS: u64 = NO_SAMPLE as u64;

/// An exact table held in memory, ready to be written or viewed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExactTable {
    pub key_count: u64,
    pub chunk_first: Vec<u64>,
    pub chunk_meta: Vec<u64>,
    pub upper: Vec<u64>,
    pub lows: Vec<u64>,
}

/// A read-only, validated view of an exact table (owned or memory-mapped words).
#[derive(Clone, Debug)]
pub struct ExactView<'a> {
    key_count: u64,
    chunk_first: &'a [u64],
    chunk_meta: &'a [u64],
    upper: &'a [u64],
    lows: &'a [u64],
    /// Where to look in `chunk_first`, built at load time (see [`ChunkIndex`]).
    index: ChunkIndex,
}

/// A radix index over `chunk_first`, built when a view is made (about 4-8 bytes per chunk of
/// 1024 keys, never stored): bucket `b` of `(key - min) >> shift` says that the chunks whose
/// first key is at most `key` are at least `starts[b]` and at most `starts[b + 1]`, so locating
/// a key's chunk reads one index entry and usually one or two chunk first keys instead of a
/// sixteen-step binary search. Skewed key sets (several countries) only make some ranges longer;
/// those are bisected.
#[derive(Clone, Debug, Default)]
struct ChunkIndex {
    min: u64,
    shift: u32,
    /// `starts[b]`: number of chunks whose first key lies in a bucket below `b`; one entry per
    /// bucket plus a final one equal to the chunk count.
    starts: Box<[u32]>,
}

impl ChunkIndex {
    fn new(chunk_first: &[u64]) -> ChunkIndex {
        let (Some(&min), Some(&max)) = (chunk_first.first(), chunk_first.last()) else {
            return ChunkIndex::default();
        };
        let buckets_wanted = chunk_first.len().next_power_of_two() as u64;
        let mut shift = 0;
        while ((max - min) >> shift) >= buckets_wanted {
            shift += 1;
        }
        let buckets = ((max - min) >> shift) as usize + 1;
        let mut starts = vec![0u32; buckets + 1];
        for &first in chunk_first {
            starts[((first - min) >> shift) as usize + 1] += 1;
        }
        for b in 1..starts.len() {
            starts[b] += starts[b - 1];
        }
        ChunkIndex {
            min,
            shift,
            starts: starts.into_boxed_slice(),
        }
    }

    /// Range of `chunk_first` to bisect for the number of chunks whose first key is <= `key`:
    /// every chunk before the range qualifies and none after it does.
    #[inline(always)]
    fn range(&self, key: u64) -> (usize, usize) {
        let Some(offset) = key.checked_sub(self.min) else {
            return (0, 0);
        };
        let Some(buckets) = self.starts.len().checked_sub(1) else {
            return (0, 0);
        };
        let bucket = offset >> self.shift;
        if bucket >= buckets as u64 {
            let all = self.starts[buckets] as usize;
            return (all, all);
        }
        let bucket = bucket as usize;
        (
            self.starts[bucket] as usize,
            self.starts[bucket + 1] as usize,
        )
    }
}

impl ExactTable {
    /// Encodes strictly increasing keys.
    pub fn build(sorted_keys: &[u64]) -> ExactTable {
        debug_assert!(
            sorted_keys.windows(2).all(|w| w[0] < w[1]),
            "keys sorted and distinct"
        );
        let chunks = sorted_keys.len().div_ceil(CHUNK_KEYS);
        let mut table = ExactTable {
            key_count: sorted_keys.len() as u64,
            chunk_first: Vec::with_capacity(chunks),
            chunk_meta: Vec::with_capacity((chunks + 1) * META_WORDS),
            ..ExactTable::default()
        };
        let mut upper = BitWriter::default();
        let mut lows = BitWriter::default();
        for chunk in sorted_keys.chunks(CHUNK_KEYS) {
            let first = chunk[0];
            let span = chunk[chunk.len() - 1] - first;
            let low_bits = choose_low_bits(span, chunk.len() as u64);
            let mut samples = [NO_SAMPLE; SAMPLES];
            let chunk_start = upper.len;
            let lows_start = lows.len;
            let mask = low_mask(low_bits);
            let mut bucket = 0u64;
            for (index, &key) in chunk.iter().enumerate() {
                let offset = key - first;
                let high = if low_bits >= 64 {
                    0
                } else {
                    offset >> low_bits
                };
                if index % SAMPLE_KEYS == 0 {
                    samples[index / SAMPLE_KEYS] = high as u16;
                }
                // Zeros close the buckets before this key's, then its one.
                upper.push_zeros(high - bucket);
                bucket = high;
                upper.push_bits(1, 1);
                lows.push_bits(offset & mask, low_bits);
            }
            // Close the last bucket: every chunk ends with a zero, so runs of ones never leave it.
            upper.push_zeros(1);
            table.chunk_first.push(first);
            table.chunk_meta.push(chunk_start);
            table
                .chunk_meta
                .push(lows_start | (u64::from(low_bits) << 56));
            table.chunk_meta.extend(pack_samples(&samples));
            table.chunk_meta.extend([upper.len, 0]);
        }
        // Sentinel entry: where a chunk after the last would start.
        table
            .chunk_meta
            .extend([upper.len, lows.len, 0, 0, 0, 0, 0, 0]);
        table.upper = upper.finish();
        table.lows = lows.finish();
        table
    }

    pub fn view(&self) -> ExactView<'_> {
        ExactView::new(
            self.key_count,
            &self.chunk_first,
            &self.chunk_meta,
            &self.upper,
            &self.lows,
        )
        .expect("a freshly built exact table is valid")
    }
}

fn pack_samples(samples: &[u16; SAMPLES]) -> [u64; SAMPLES / 4] {
    let mut words = [0u64; SAMPLES / 4];
    for (index, &sample) in samples.iter().enumerate() {
        words[index / 4] |= u64::from(sample) << (16 * (index % 4));
    }
    words
}

/// Low-bit width minimising `n*L + (span >> L)` for one chunk (Elias-Fano's choice, refined),
/// widened if needed so the chunk has at most [`MAX_BUCKETS`] buckets.
fn choose_low_bits(span: u64, keys: u64) -> u32 {
    let cost = |l: u32| -> u128 {
        let buckets = if l >= 64 { 1 } else { (span >> l) + 1 };
        u128::from(keys) * u128::from(l) + u128::from(keys) + u128::from(buckets)
    };
    let guess = if span / keys == 0 {
        0
    } else {
        63 - (span / keys).leading_zeros()
    };
    let mut best = guess;
    for l in guess.saturating_sub(1)..=(guess + 1).min(63) {
        if cost(l) < cost(best) {
            best = l;
        }
    }
    // The cost optimum keeps buckets under ~4 per key; this only guards the invariant.
    while best < 63 && (span >> best) + 1 > MAX_BUCKETS {
        best += 1;
    }
    best
}

#[derive(Default)]
struct BitWriter {
    words: Vec<u64>,
    len: u64,
}

impl BitWriter {
    fn push_zeros(&mut self, count: u64) {
        let end = self.len + count;
        let words = end.div_ceil(64) as usize;
        if words > self.words.len() {
            self.words.resize(words, 0);
        }
        self.len = end;
    }

    fn push_bits(&mut self, value: u64, bits: u32) {
        if bits == 0 {
            return;
        }
        let shift = (self.len % 64) as u32;
        if shift == 0 {
            self.words.push(0);
        }
        let last = self.words.len() - 1;
        self.words[last] |= value << shift;
        if shift + bits > 64 {
            self.words.push(value >> (64 - shift));
        }
        self.len += u64::from(bits);
    }

    /// Words plus one spare zero word, so a two-word read at the last value stays in bounds.
    fn finish(mut self) -> Vec<u64> {
        self.words.truncate(self.len.div_ceil(64) as usize);
        self.words.push(0);
        self.words
    }
}

/// Where a lookup stands between stages: the key's chunk and offset, then its bucket's ranks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    chunk: usize,
    /// Key minus the chunk's first key.
    offset: u64,
    valid: bool,
    /// After [`ExactView::prefetch_directory`]: the key's bucket, low bits and their width, and
    /// where the directory scan for the bucket starts.
    high: u64,
    low: u64,
    low_bits: u32,
    scan: ScanStart,
    /// After [`ExactView::find_bucket`]: the rank of the bucket's first key, the bucket's key
    /// count and the bit position of its first low bits.
    first_rank: u64,
    run: u64,
    bit_pos: u64,
}

/// Where a bucket's directory scan starts: a bit position and the zeros still to skip there.
#[derive(Clone, Copy, Debug, Default)]
struct ScanStart {
    position: u64,
    zeros: u64,
}

impl<'a> ExactView<'a> {
    /// Checks every structural invariant lookups rely on, so no lookup can index out of bounds
    /// or scan past its chunk, whatever the bytes were.
    pub fn new(
        key_count: u64,
        chunk_first: &'a [u64],
        chunk_meta: &'a [u64],
        upper: &'a [u64],
        lows: &'a [u64],
    ) -> Result<ExactView<'a>, String> {
        let chunks = key_count.div_ceil(CHUNK_KEYS as u64);
        if chunk_first.len() as u64 != chunks {
            return Err(format!(
                "{} chunk keys for {key_count} keys (expected {chunks})",
                chunk_first.len()
            ));
        }
        if chunk_meta.len() as u64 != (chunks + 1) * META_WORDS as u64 {
            return Err("chunk metadata has the wrong length".into());
        }
        if upper.is_empty() || lows.is_empty() {
            return Err("bit arrays lack their spare word".into());
        }
        if chunk_first.windows(2).any(|w| w[0] >= w[1]) {
            return Err("chunk first keys are not strictly increasing".into());
        }
        let upper_bits = (upper.len() as u64 - 1) * 64;
        let lows_bits = (lows.len() as u64 - 1) * 64;
        let view = ExactView {
            key_count,
            chunk_first,
            chunk_meta,
            upper,
            lows,
            index: ChunkIndex::new(chunk_first),
        };
        let mut expected_lows = 0u64;
        let mut expected_start = 0u64;
        for chunk in 0..chunks as usize {
            let keys = view.keys_in_chunk(chunk);
            let (start, end) = view.chunk_bits(chunk);
            if end != chunk_meta[(chunk + 1) * META_WORDS] {
                return Err(format!("chunk {chunk}: directory end is inconsistent"));
            }
            let low_bits = view.low_bits(chunk);
            if start != expected_start || end <= start || end > upper_bits {
                return Err(format!("chunk {chunk}: directory range is inconsistent"));
            }
            if low_bits > 63 {
                return Err(format!(
                    "chunk {chunk}: low-bit width {low_bits} is out of range"
                ));
            }
            if view.lows_offset(chunk) != expected_lows {
                return Err(format!("chunk {chunk}: low-bit offset is inconsistent"));
            }
            if count_ones(upper, start, end) != keys {
                return Err(format!(
                    "chunk {chunk}: directory does not hold {keys} keys"
                ));
            }
            let buckets = end - start - keys;
            if buckets > MAX_BUCKETS {
                return Err(format!("chunk {chunk}: too many buckets"));
            }
            if !bit(upper, start) {
                return Err(format!(
                    "chunk {chunk}: first key is not in the first bucket"
                ));
            }
            if bit(upper, end - 1) {
                return Err(format!("chunk {chunk}: directory does not end with a zero"));
            }
            view.validate_samples(chunk, start, keys)?;
            // The chunk's last (largest) key must fit a u64, so decoding never overflows.
            if expected_lows + keys * u64::from(low_bits) > lows_bits {
                return Err(format!("chunk {chunk}: low bits run past their array"));
            }
            let last_one = last_one_before(upper, start, end);
            let last_high = last_one - start - (keys - 1);
            let last_low = read_bits(
                lows,
                view.lows_offset(chunk) + (keys - 1) * u64::from(low_bits),
                low_bits,
            );
            let last_offset = (u128::from(last_high) << low_bits) | u128::from(last_low);
            if u128::from(view.chunk_first[chunk]) + last_offset > u128::from(u64::MAX) {
                return Err(format!("chunk {chunk}: keys would overflow 64 bits"));
            }
            expected_start = end;
            expected_lows += keys * u64::from(low_bits);
        }
        let sentinel = chunks as usize * META_WORDS;
        if chunk_meta[sentinel] != expected_start || chunk_meta[sentinel + 1] != expected_lows {
            return Err("chunk sentinel does not match the directory and low-bit lengths".into());
        }
        if chunk_meta[sentinel + 2..sentinel + META_WORDS]
            .iter()
            .any(|&w| w != 0)
        {
            return Err("chunk sentinel has nonzero reserved words".into());
        }
        if expected_lows > lows_bits {
            return Err("low-bit array is shorter than its keys need".into());
        }
        Ok(view)
    }

    /// Every sample must be the bucket of its key (the one at rank `64 j` of the chunk), or
    /// [`NO_SAMPLE`] past the last key; reserved words must be zero. The chunk's directory holds
    /// exactly `keys` ones (checked before), so the walk stays inside the chunk.
    fn validate_samples(&self, chunk: usize, start: u64, keys: u64) -> Result<(), String> {
        let base = chunk * META_WORDS;
        if self.chunk_meta[base + META_WORDS - 1] != 0 {
            return Err(format!("chunk {chunk}: nonzero reserved metadata"));
        }
        let mut position = start;
        for index in 0..SAMPLES {
            let rank = (index * SAMPLE_KEYS) as u64;
            let expected = if rank < keys {
                if index > 0 {
                    position = select_one(self.upper, position + 1, SAMPLE_KEYS as u64 - 1);
                }
                (position - start - rank) as u16
            } else {
                NO_SAMPLE
            };
            if self.sample(chunk, index) != expected {
                return Err(format!("chunk {chunk}: directory sample {index} is wrong"));
            }
        }
        Ok(())
    }

    /// Each chunk's first key, in order.
    pub fn chunk_first_keys(&self) -> &'a [u64] {
        self.chunk_first
    }

    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    pub fn bytes(&self) -> usize {
        8 * (self.chunk_first.len() + self.chunk_meta.len() + self.upper.len() + self.lows.len())
    }

    pub fn parts(&self) -> (&'a [u64], &'a [u64], &'a [u64], &'a [u64]) {
        (self.chunk_first, self.chunk_meta, self.upper, self.lows)
    }

    #[inline(always)]
    fn keys_in_chunk(&self, chunk: usize) -> u64 {
        let before = (chunk * CHUNK_KEYS) as u64;
        (self.key_count - before).min(CHUNK_KEYS as u64)
    }

    #[inline(always)]
    fn chunk_bits(&self, chunk: usize) -> (u64, u64) {
        let line = &self.chunk_meta[chunk * META_WORDS..][..META_WORDS];
        (line[0], line[END_WORD])
    }

    #[inline(always)]
    fn low_bits(&self, chunk: usize) -> u32 {
        (self.chunk_meta[chunk * META_WORDS + 1] >> 56) as u32
    }

    #[inline(always)]
    fn lows_offset(&self, chunk: usize) -> u64 {
        self.chunk_meta[chunk * META_WORDS + 1] & ((1 << 56) - 1)
    }

    #[inline(always)]
    fn sample(&self, chunk: usize, index: usize) -> u16 {
        (self.chunk_meta[chunk * META_WORDS + SAMPLE_WORD + index / 4] >> (16 * (index % 4))) as u16
    }

    /// The nearest sampled key before bucket `high` (which is > 0): scanning from its one,
    /// `high - sample` zeros remain to skip. Samples are nondecreasing and sample 0 is bucket 0.
    #[inline(always)]
    fn scan_start(&self, chunk: usize, start: u64, high: u64) -> ScanStart {
        let words = &self.chunk_meta[chunk * META_WORDS + SAMPLE_WORD..][..SAMPLES / 4];
        let below = lanes_below(words, high);
        let index = below.max(1) as usize - 1;
        let sample = u64::from(self.sample(chunk, index));
        ScanStart {
            position: start + (index * SAMPLE_KEYS) as u64 + sample,
            zeros: high - sample,
        }
    }

    /// Rank of `key` among the table's keys, or `None` when absent.
    #[inline]
    pub fn rank(&self, key: u64) -> Option<u64> {
        let mut probe = self.locate(key);
        self.prefetch_directory(&mut probe);
        self.find_bucket(&mut probe)?;
        self.finish(&probe, key)
    }

    /// Step 1: which chunk `key` would be in; prefetches the chunk's metadata line.
    #[inline]
    pub fn locate(&self, key: u64) -> Probe {
        self.locate_in(key, self.index.range(key))
    }

    /// Step 0 of a batch: the range of chunk first keys step 1 bisects for `key`, with the
    /// first of them prefetched (the first keys and their index, ~0.6 MB for 50 M keys, miss
    /// the caches that the batch's other lines keep busy).
    #[inline]
    pub fn chunk_range(&self, key: u64) -> (usize, usize) {
        let range = self.index.range(key);
        prefetch_read(self.chunk_first.as_ptr().wrapping_add(range.0));
        range
    }

    /// Step 1 with the range from [`ExactView::chunk_range`].
    #[inline]
    pub fn locate_in(&self, key: u64, (lo, hi): (usize, usize)) -> Probe {
        // The index only narrows the search; bisecting the range keeps the answer exact.
        let chunk = lo + self.chunk_first[lo..hi].partition_point(|&first| first <= key);
        if chunk == 0 {
            return Probe::default();
        }
        let chunk = chunk - 1;
        prefetch_read(self.chunk_meta.as_ptr().wrapping_add(chunk * META_WORDS));
        Probe {
            chunk,
            offset: key - self.chunk_first[chunk],
            valid: true,
            ..Probe::default()
        }
    }

    /// Step 2 (before step 3): reads the chunk's metadata, splits the key's offset into bucket
    /// and low bits, finds where the directory scan for the bucket starts, and prefetches that
    /// directory line. The probe keeps what it found, so step 3 does not read the samples again.
    #[inline]
    pub fn prefetch_directory(&self, probe: &mut Probe) {
        if !probe.valid {
            return;
        }
        let low_bits = self.low_bits(probe.chunk);
        let (high, low) = if low_bits >= 64 {
            (0, probe.offset)
        } else {
            (probe.offset >> low_bits, probe.offset & low_mask(low_bits))
        };
        let (start, _) = self.chunk_bits(probe.chunk);
        let scan = if high == 0 || high > MAX_BUCKETS {
            // Bucket 0 starts at the chunk start; a bucket past every sample is refused by step
            // 3 before any scan.
            ScanStart {
                position: start,
                zeros: 0,
            }
        } else {
            self.scan_start(probe.chunk, start, high)
        };
        // The scan from a sample crosses ~2 words (64 ones and as many zeros) and often runs
        // into the next cache line: ask for that one too, or the scan stalls on it.
        let word = (scan.position / 64) as usize;
        prefetch_read(self.upper.as_ptr().wrapping_add(word));
        prefetch_read(self.upper.as_ptr().wrapping_add(word + 2));
        probe.high = high;
        probe.low = low;
        probe.low_bits = low_bits;
        probe.scan = scan;
    }

    /// Step 3: find the key's bucket in the directory; on success the probe holds the bucket's
    /// ranks and the low bits are prefetched.
    #[inline]
    pub fn find_bucket(&self, probe: &mut Probe) -> Option<()> {
        if !probe.valid {
            return None;
        }
        let chunk = probe.chunk;
        let (high, low_bits) = (probe.high, probe.low_bits);
        let (start, end) = self.chunk_bits(chunk);
        let keys = self.keys_in_chunk(chunk);
        let buckets = end - start - keys;
        if high >= buckets {
            probe.valid = false;
            return None;
        }
        // Position just after the `high`-th zero of the chunk.
        let bucket_start = if high == 0 {
            start
        } else {
            select_zero(self.upper, probe.scan.position, probe.scan.zeros) + 1
        };
        let rank_in_chunk = bucket_start - start - high;
        let run = ones_run(self.upper, bucket_start);
        let bit_pos = self.lows_offset(chunk) + rank_in_chunk * u64::from(low_bits);
        prefetch_read(self.lows.as_ptr().wrapping_add((bit_pos / 64) as usize));
        probe.first_rank = chunk as u64 * CHUNK_KEYS as u64 + rank_in_chunk;
        probe.run = run;
        probe.bit_pos = bit_pos;
        if run == 0 {
            probe.valid = false;
            return None;
        }
        Some(())
    }

    /// Step 4: compare the bucket's low bits with the key's.
    #[inline]
    pub fn finish(&self, probe: &Probe, _key: u64) -> Option<u64> {
        if !probe.valid {
            return None;
        }
        let width = probe.low_bits;
        let (first_rank, run, base_bit) = (probe.first_rank, probe.run, probe.bit_pos);
        let low_at = |i: u64| read_bits(self.lows, base_bit + i * u64::from(width), width);
        // Lows within a bucket are sorted: scan short buckets, bisect long ones.
        if run <= 16 {
            for i in 0..run {
                let low = low_at(i);
                if low == probe.low {
                    return Some(first_rank + i);
                }
                if low > probe.low {
                    return None;
                }
            }
            return None;
        }
        let (mut lo, mut hi) = (0u64, run);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match low_at(mid).cmp(&probe.low) {
                std::cmp::Ordering::Equal => return Some(first_rank + mid),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// Every key, in order (for inspection, rebuilds and tests).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.chunk_first.len()).flat_map(move |chunk| {
            let (start, _) = self.chunk_bits(chunk);
            let keys = self.keys_in_chunk(chunk);
            let width = self.low_bits(chunk);
            let lows_offset = self.lows_offset(chunk);
            let first = self.chunk_first[chunk];
            let mut position = start;
            let mut high = 0u64;
            (0..keys).map(move |i| {
                while !bit(self.upper, position) {
                    high += 1;
                    position += 1;
                }
                position += 1;
                let low = read_bits(self.lows, lows_offset + i * u64::from(width), width);
                let offset = if width >= 64 {
                    low
                } else {
                    (high << width) | low
                };
                first + offset
            })
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
        let table = ExactTable::build(&sorted);
        let view = table.view();
        assert_eq!(view.iter().collect::<Vec<_>>(), sorted);
        for (rank, &key) in sorted.iter().enumerate() {
            assert_eq!(view.rank(key), Some(rank as u64), "key {key}");
        }
        for &probe in probes {
            let expected = sorted.binary_search(&probe).ok().map(|r| r as u64);
            assert_eq!(view.rank(probe), expected, "probe {probe}");
        }
    }

    #[test]
    fn empty_and_single() {
        check(&BTreeSet::new(), &[0, 1, u64::MAX]);
        check(&[0].into(), &[0, 1, u64::MAX]);
        check(&[u64::MAX].into(), &[0, u64::MAX - 1, u64::MAX]);
        check(&[0, u64::MAX].into(), &[1, u64::MAX - 1]);
    }

    #[test]
    fn dense_national_range() {
        let keys: BTreeSet<u64> = (0..50_000u64)
            .map(|i| 48_500_000_000 + i * 20 + i % 7)
            .collect();
        let probes: Vec<u64> = (48_499_999_000..48_501_100_000).step_by(3).collect();
        check(&keys, &probes);
    }

    #[test]
    fn skewed_chunk_with_outlier() {
        // A cluster and a far outlier in one chunk: one huge bucket, found by bisection.
        let mut keys: BTreeSet<u64> = (0..3000u64).map(|i| 12_015_550_000 + i).collect();
        keys.insert(48_601_234_567);
        keys.insert(998_901_234_567);
        let probes: Vec<u64> = (12_015_540_000..12_015_560_000).collect();
        check(&keys, &probes);
    }

    #[test]
    fn dense_low_bits_zero() {
        let keys: BTreeSet<u64> = (1000..5000u64).collect();
        check(&keys, &(900..5100).collect::<Vec<_>>());
    }

    #[test]
    fn dense_set_is_compact() {
        // 1 M numbers spread over a 20 M range: Elias-Fano needs ~2 + log2(20) bits per key.
        let keys: Vec<u64> = (0..1_000_000u64)
            .map(|i| 48_500_000_000 + i * 20 + (i * 7919) % 20)
            .collect();
        let table = ExactTable::build(&keys);
        let bits_per_key = table.view().bytes() as f64 * 8.0 / keys.len() as f64;
        assert!(bits_per_key < 7.0, "{bits_per_key} bits per key");
    }

    #[test]
    fn corrupted_structure_is_refused() {
        let keys: Vec<u64> = (0..3000u64).map(|i| i * 5).collect();
        let table = ExactTable::build(&keys);
        let mut bad = table.clone();
        bad.upper[0] ^= 0b10;
        assert!(
            ExactView::new(
                bad.key_count,
                &bad.chunk_first,
                &bad.chunk_meta,
                &bad.upper,
                &bad.lows
            )
            .is_err()
        );
        let mut bad = table.clone();
        bad.chunk_meta[1] += 1 << 56;
        assert!(
            ExactView::new(
                bad.key_count,
                &bad.chunk_first,
                &bad.chunk_meta,
                &bad.upper,
                &bad.lows
            )
            .is_err()
        );
        let mut bad = table.clone();
        bad.key_count += 1;
        assert!(
            ExactView::new(
                bad.key_count,
                &bad.chunk_first,
                &bad.chunk_meta,
                &bad.upper,
                &bad.lows
            )
            .is_err()
        );
        let mut bad = table.clone();
        bad.lows.truncate(1);
        assert!(
            ExactView::new(
                bad.key_count,
                &bad.chunk_first,
                &bad.chunk_meta,
                &bad.upper,
                &bad.lows
            )
            .is_err()
        );
    }

    #[test]
    fn keys_that_would_overflow_are_refused() {
        // Keys up to u64::MAX are fine...
        let top: BTreeSet<u64> = (0..40).map(|i| u64::MAX - i * 7).collect();
        check(&top, &[0, u64::MAX - 1, u64::MAX]);
        // ...but a first key moved up so that the chunk's keys pass u64::MAX is refused, not
        // decoded with an overflow (found by the snapshot_structure fuzz target).
        let mut bad = ExactTable::build(&[3, 9, 1000]);
        bad.chunk_first[0] = u64::MAX - 500;
        let refused = ExactView::new(
            bad.key_count,
            &bad.chunk_first,
            &bad.chunk_meta,
            &bad.upper,
            &bad.lows,
        );
        assert!(refused.unwrap_err().contains("overflow"));
    }

    proptest! {
        #[test]
        fn answers_like_a_sorted_model(
            keys in proptest::collection::btree_set(any::<u64>(), 0..3000),
            probes in proptest::collection::vec(any::<u64>(), 0..200),
        ) {
            check(&keys, &probes);
        }

        #[test]
        fn answers_like_a_sorted_model_dense(
            keys in proptest::collection::btree_set(48_000_000_000u64..48_000_100_000, 0..5000),
            probes in proptest::collection::vec(48_000_000_000u64..48_000_100_000, 0..500),
        ) {
            check(&keys, &probes);
        }
    }
}
