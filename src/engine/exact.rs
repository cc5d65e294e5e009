//! The exact table: a partitioned Elias-Fano encoding of the sorted keys of a set.
//!
//! Sorted keys are cut into chunks of [`CHUNK_KEYS`]. Each chunk stores its keys relative to its
//! first key: the low `L` bits of each packed in one bit array, the high bits as a unary bucket
//! directory (a one per key, a zero closing each bucket of `2^L` values). `L` is chosen per chunk,
//! so a chunk of densely packed national numbers spends ~6-9 bits per key while a chunk that
//! straddles two countries only costs itself, never the rest of the set. A lookup is a binary
//! search over the chunks' first keys (small, cache resident), a short scan of one chunk's
//! directory and one read of the packed low bits; the returned rank indexes per-key side data
//! such as consent expiry.
//!
//! Why this and not a hash set or a plain sorted array: see BENCHMARKS.md (bytes per key and
//! lookups per second, measured side by side). This module never does I/O.

use crate::engine::prefetch::prefetch_read;

/// Keys per chunk. Bounds the directory scan and the cost of a skewed chunk.
pub const CHUNK_KEYS: usize = 1024;
/// Words of chunk metadata: directory bit offset, and low-bits offset with `L` in the top byte.
/// One sentinel entry follows the last chunk, holding the total lengths.
pub const META_WORDS: usize = 2;

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
#[derive(Clone, Copy, Debug)]
pub struct ExactView<'a> {
    key_count: u64,
    chunk_first: &'a [u64],
    chunk_meta: &'a [u64],
    upper: &'a [u64],
    lows: &'a [u64],
}

impl ExactTable {
    /// Encodes strictly increasing keys.
    pub fn build(sorted_keys: &[u64]) -> ExactTable {
        debug_assert!(
            sorted_keys.windows(2).all(|w| w[0] < w[1]),
            "keys sorted and distinct"
        );
        let mut table = ExactTable {
            key_count: sorted_keys.len() as u64,
            ..ExactTable::default()
        };
        let mut upper = BitWriter::default();
        let mut lows = BitWriter::default();
        for chunk in sorted_keys.chunks(CHUNK_KEYS) {
            let first = chunk[0];
            let span = chunk[chunk.len() - 1] - first;
            let low_bits = choose_low_bits(span, chunk.len() as u64);
            table.chunk_first.push(first);
            table.chunk_meta.push(upper.len);
            table
                .chunk_meta
                .push(lows.len | (u64::from(low_bits) << 56));
            let mut bucket = 0u64;
            for &key in chunk {
                let offset = key - first;
                let high = if low_bits == 64 {
                    0
                } else {
                    offset >> low_bits
                };
                while bucket < high {
                    upper.push_bit(false);
                    bucket += 1;
                }
                upper.push_bit(true);
                lows.push_bits(offset & low_mask(low_bits), low_bits);
            }
            // Close the last bucket: every chunk ends with a zero, so runs of ones never leave it.
            upper.push_bit(false);
        }
        // Sentinel entry: where a chunk after the last would start.
        table.chunk_meta.push(upper.len);
        table.chunk_meta.push(lows.len);
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

/// Low-bit width minimising `n*L + (span >> L)` for one chunk (Elias-Fano's choice, refined).
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
    best
}

#[inline(always)]
fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[derive(Default)]
struct BitWriter {
    words: Vec<u64>,
    len: u64,
}

impl BitWriter {
    fn push_bit(&mut self, bit: bool) {
        self.push_bits(u64::from(bit), 1);
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
        self.words.push(0);
        self.words
    }
}

/// Where a lookup stands after locating its bucket: the chunk rank base and the key's bucket.
#[derive(Clone, Copy, Debug, Default)]
pub struct Probe {
    chunk: usize,
    high: u64,
    low: u64,
    /// Directory bit range of the chunk.
    start: u64,
    end: u64,
    low_bits: u32,
    lows_offset: u64,
    valid: bool,
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
        };
        let mut expected_lows = 0u64;
        let mut expected_start = 0u64;
        for chunk in 0..chunks as usize {
            let keys = view.keys_in_chunk(chunk);
            let (start, end) = view.chunk_bits(chunk);
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
            if !bit(upper, start) {
                return Err(format!(
                    "chunk {chunk}: first key is not in the first bucket"
                ));
            }
            if bit(upper, end - 1) {
                return Err(format!("chunk {chunk}: directory does not end with a zero"));
            }
            expected_start = end;
            expected_lows += keys * u64::from(low_bits);
        }
        let sentinel = chunks as usize * META_WORDS;
        if chunk_meta[sentinel] != expected_start || chunk_meta[sentinel + 1] != expected_lows {
            return Err("chunk sentinel does not match the directory and low-bit lengths".into());
        }
        if expected_lows > lows_bits {
            return Err("low-bit array is shorter than its keys need".into());
        }
        Ok(view)
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
        let start = self.chunk_meta[chunk * META_WORDS];
        let end = self.chunk_meta[(chunk + 1) * META_WORDS];
        (start, end)
    }

    #[inline(always)]
    fn low_bits(&self, chunk: usize) -> u32 {
        (self.chunk_meta[chunk * META_WORDS + 1] >> 56) as u32
    }

    #[inline(always)]
    fn lows_offset(&self, chunk: usize) -> u64 {
        self.chunk_meta[chunk * META_WORDS + 1] & ((1 << 56) - 1)
    }

    /// Rank of `key` among the table's keys, or `None` when absent.
    #[inline]
    pub fn rank(&self, key: u64) -> Option<u64> {
        let mut probe = self.locate(key);
        self.prefetch_directory(&probe);
        self.find_bucket(&mut probe)?;
        self.finish(&probe, key)
    }

    /// Step 1: which chunk and bucket `key` would be in.
    #[inline]
    pub fn locate(&self, key: u64) -> Probe {
        let chunk = self.chunk_first.partition_point(|&first| first <= key);
        if chunk == 0 {
            return Probe::default();
        }
        let chunk = chunk - 1;
        let offset = key - self.chunk_first[chunk];
        let low_bits = self.low_bits(chunk);
        let (start, end) = self.chunk_bits(chunk);
        Probe {
            chunk,
            high: if low_bits >= 64 {
                0
            } else {
                offset >> low_bits
            },
            low: offset & low_mask(low_bits),
            start,
            end,
            low_bits,
            lows_offset: self.lows_offset(chunk),
            valid: true,
        }
    }

    /// Prefetch the directory line where the key's bucket most likely starts.
    #[inline]
    pub fn prefetch_directory(&self, probe: &Probe) {
        if !probe.valid {
            return;
        }
        let bits = probe.end - probe.start;
        let keys = self.keys_in_chunk(probe.chunk);
        let buckets = bits - keys;
        let estimate = probe.start + probe.high.min(buckets) * bits / buckets.max(1);
        prefetch_read(self.upper.as_ptr().wrapping_add((estimate / 64) as usize));
    }

    /// Step 2: find the key's bucket in the directory; on success `probe` holds the rank range
    /// start in `start` and the bucket's ones count in `end`, and the low bits are prefetched.
    #[inline]
    pub fn find_bucket(&self, probe: &mut Probe) -> Option<()> {
        if !probe.valid {
            return None;
        }
        let keys = self.keys_in_chunk(probe.chunk);
        let buckets = probe.end - probe.start - keys;
        if probe.high >= buckets {
            probe.valid = false;
            return None;
        }
        // Position just after the `high`-th zero of the chunk.
        let bucket_start = if probe.high == 0 {
            probe.start
        } else {
            select_zero(self.upper, probe.start, probe.high) + 1
        };
        let rank_in_chunk = bucket_start - probe.start - probe.high;
        let run = ones_run(self.upper, bucket_start);
        let first_rank = probe.chunk as u64 * CHUNK_KEYS as u64 + rank_in_chunk;
        let bit_pos = probe.lows_offset + rank_in_chunk * u64::from(probe.low_bits);
        prefetch_read(self.lows.as_ptr().wrapping_add((bit_pos / 64) as usize));
        probe.start = first_rank;
        probe.end = run;
        probe.lows_offset = bit_pos;
        if run == 0 {
            probe.valid = false;
            return None;
        }
        Some(())
    }

    /// Step 3: compare the bucket's low bits with the key's.
    #[inline]
    pub fn finish(&self, probe: &Probe, _key: u64) -> Option<u64> {
        if !probe.valid {
            return None;
        }
        let width = probe.low_bits;
        let (first_rank, run, base_bit) = (probe.start, probe.end, probe.lows_offset);
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

#[inline(always)]
fn bit(words: &[u64], position: u64) -> bool {
    words[(position / 64) as usize] >> (position % 64) & 1 == 1
}

#[inline(always)]
fn read_bits(words: &[u64], position: u64, width: u32) -> u64 {
    if width == 0 {
        return 0;
    }
    let index = (position / 64) as usize;
    let shift = (position % 64) as u32;
    let mut value = words[index] >> shift;
    if shift + width > 64 {
        value |= words[index + 1] << (64 - shift);
    }
    value & low_mask(width)
}

fn count_ones(words: &[u64], start: u64, end: u64) -> u64 {
    let mut total = 0u64;
    let mut position = start;
    while position < end {
        let index = (position / 64) as usize;
        let shift = position % 64;
        let take = (64 - shift).min(end - position);
        let word = words[index] >> shift;
        let masked = if take == 64 {
            word
        } else {
            word & ((1 << take) - 1)
        };
        total += u64::from(masked.count_ones());
        position += take;
    }
    total
}

/// Position of the `count`-th zero (1-based) at or after `start`. Validation guarantees the
/// chunk holds enough zeros, so this never runs past the chunk.
#[inline]
fn select_zero(words: &[u64], start: u64, count: u64) -> u64 {
    let mut remaining = count;
    let mut index = (start / 64) as usize;
    let mut zeros = !words[index] & (u64::MAX << (start % 64));
    loop {
        let here = u64::from(zeros.count_ones());
        if here >= remaining {
            return index as u64 * 64 + u64::from(select_in_word(zeros, (remaining - 1) as u32));
        }
        remaining -= here;
        index += 1;
        zeros = !words[index];
    }
}

/// Index of the `rank`-th (0-based) set bit of `word`, which has more than `rank` set bits.
#[inline(always)]
fn select_in_word(mut word: u64, rank: u32) -> u32 {
    let mut rank = rank;
    // Skip whole bytes by popcount, then clear bits within the byte.
    let mut base = 0u32;
    loop {
        let byte_ones = (word & 0xff).count_ones();
        if byte_ones > rank {
            break;
        }
        rank -= byte_ones;
        word >>= 8;
        base += 8;
    }
    for _ in 0..rank {
        word &= word - 1;
    }
    base + word.trailing_zeros()
}

/// Length of the run of ones starting at `start`; chunks end with a zero, so it stays inside.
#[inline]
fn ones_run(words: &[u64], start: u64) -> u64 {
    let mut index = (start / 64) as usize;
    let shift = start % 64;
    let mut run = u64::from((words[index] >> shift).trailing_ones()).min(64 - shift);
    if run < 64 - shift {
        return run;
    }
    loop {
        index += 1;
        let ones = u64::from(words[index].trailing_ones());
        run += ones;
        if ones < 64 {
            return run;
        }
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
