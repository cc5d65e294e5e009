//! Binary fuse filters: the first stage of every set, turning away most absent keys.
//!
//! Construction is `xorf`'s (BinaryFuse8 / BinaryFuse16). Lookups are done here over the raw
//! fingerprint arrays because a batch needs each key's three slot positions *before* reading
//! them, to prefetch; `xorf`'s `contains` computes and reads in one step. The position formula is
//! the binary fuse one `xorf` uses, and every build re-checks all its keys through this code, so a
//! divergence is reported as a build error, never served.
//!
//! Large sets are split into shards of at most [`SHARD_TARGET_KEYS`] keys: shards build in
//! parallel, keep construction scratch memory bounded, and retry alone on the rare construction
//! failure. This module never does I/O.

use crate::engine::prefetch::prefetch_read;
use std::ops::BitXor;

/// Keys per filter shard; bounds build scratch memory (about 21 bytes per key per thread).
///
/// 2^20: construction of a shard this size works mostly in cache, so building 100 M keys costs
/// about 9 CPU-seconds instead of 16 with 2^23-key shards, for +0.003 bytes per key (measured,
/// BENCHMARKS.md). Lookups only pay one read of the small shard table per key.
pub const SHARD_TARGET_KEYS: usize = 1 << 20;
/// Salts tried per shard before construction is reported as failed.
const MAX_ATTEMPTS: u64 = 8;
/// Seed for choosing a key's shard under [`ShardPick::Mixed`], independent of any shard's own
/// seed.
const SHARD_SELECT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Multiplier of [`ShardPick::Multiplicative`]: 2^64 divided by the golden ratio, odd, so
/// consecutive keys land on well-spread fractions (Fibonacci hashing).
const SHARD_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
/// How many keys ahead of the one being tested a batch hashes and prefetches (a power of two).
/// 64 keys = 192 lines requested ahead: 32 measured ~10 % slower and 128 no faster
/// (BENCHMARKS.md, issue 18 fourth attempt). `benches/set.rs` holds the raw `xorf` contender to
/// the same depth.
pub const AHEAD: usize = 64;

/// Fingerprint width of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FilterWidth {
    /// 8-bit fingerprints: ~1.13 bytes per key, false-positive rate ~0.39 %.
    Fuse8,
    /// 16-bit fingerprints: ~2.25 bytes per key, false-positive rate ~0.0015 %.
    Fuse16,
}

impl FilterWidth {
    pub fn code(self) -> u8 {
        match self {
            FilterWidth::Fuse8 => 8,
            FilterWidth::Fuse16 => 16,
        }
    }

    pub fn from_code(code: u8) -> Option<FilterWidth> {
        match code {
            8 => Some(FilterWidth::Fuse8),
            16 => Some(FilterWidth::Fuse16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FilterWidth::Fuse8 => "binary-fuse-8",
            FilterWidth::Fuse16 => "binary-fuse-16",
        }
    }
}

/// A freshly built shard: seed (salt included), segment length, segment mask, segment count
/// length, fingerprints.
pub type BuiltShard<F> = (u64, u32, u32, u32, Box<[F]>);

/// A filter fingerprint type (`u8` or `u16`).
pub trait Fingerprint:
    Copy + Eq + Default + Send + Sync + bytemuck::Pod + BitXor<Output = Self> + 'static
{
    const WIDTH: FilterWidth;
    fn from_hash(hash: u64) -> Self;
    fn build_shard(keys: &[u64], salt: u64) -> Option<BuiltShard<Self>>;
}

macro_rules! impl_fingerprint {
    ($ty:ty, $width:expr, $filter:ty) => {
        impl Fingerprint for $ty {
            const WIDTH: FilterWidth = $width;

            #[inline(always)]
            fn from_hash(hash: u64) -> Self {
                (hash ^ (hash >> 32)) as $ty
            }

            fn build_shard(keys: &[u64], salt: u64) -> Option<BuiltShard<Self>> {
                let salted = keys.iter().map(move |key| key.wrapping_add(salt));
                let filter = <$filter>::try_from_iterator(salted).ok()?;
                let d = filter.descriptor;
                Some((
                    d.seed.wrapping_add(salt),
                    d.segment_length,
                    d.segment_length_mask,
                    d.segment_count_length,
                    filter.fingerprints,
                ))
            }
        }
    };
}

impl_fingerprint!(u8, FilterWidth::Fuse8, xorf::BinaryFuse8);
impl_fingerprint!(u16, FilterWidth::Fuse16, xorf::BinaryFuse16);

/// The murmur3 64-bit finalizer that binary fuse filters hash keys with.
#[inline(always)]
pub fn mix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// One shard's parameters. `seed` already includes the salt added to the keys at build time,
/// so a lookup hashes `key + seed` exactly as construction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardDescriptor {
    pub seed: u64,
    pub segment_length: u32,
    pub segment_length_mask: u32,
    pub segment_count_length: u32,
    /// First fingerprint of this shard in the shared fingerprint array.
    pub fingerprint_offset: u64,
    pub fingerprint_len: u64,
}

impl ShardDescriptor {
    /// Words per shard in the snapshot's shard table.
    pub const WORDS: usize = 5;

    pub fn to_words(&self) -> [u64; Self::WORDS] {
        [
            self.seed,
            u64::from(self.segment_length) | (u64::from(self.segment_length_mask) << 32),
            u64::from(self.segment_count_length),
            self.fingerprint_offset,
            self.fingerprint_len,
        ]
    }

    pub fn from_words(words: &[u64]) -> ShardDescriptor {
        ShardDescriptor {
            seed: words[0],
            segment_length: words[1] as u32,
            segment_length_mask: (words[1] >> 32) as u32,
            segment_count_length: words[2] as u32,
            fingerprint_offset: words[3],
            fingerprint_len: words[4],
        }
    }

    /// Checks that every slot a lookup can compute lies inside this shard's fingerprints, and
    /// that the shard lies inside the array of `total` fingerprints.
    pub fn validate(&self, total: u64) -> Result<(), String> {
        let seg = self.segment_length;
        if seg == 0 || !seg.is_power_of_two() {
            return Err(format!("segment length {seg} is not a power of two"));
        }
        if self.segment_length_mask != seg - 1 {
            return Err("segment mask does not match segment length".into());
        }
        if !self.segment_count_length.is_multiple_of(seg) {
            return Err("segment count length is not a multiple of the segment length".into());
        }
        // h0 < segment_count_length and h1/h2 stay within the next two segments.
        let needed = u64::from(self.segment_count_length) + 2 * u64::from(seg);
        if self.fingerprint_len < needed {
            return Err(format!(
                "shard holds {} fingerprints but lookups reach {needed}",
                self.fingerprint_len
            ));
        }
        match self.fingerprint_offset.checked_add(self.fingerprint_len) {
            Some(end) if end <= total => Ok(()),
            _ => Err("shard extends past the fingerprint array".into()),
        }
    }

    #[inline(always)]
    fn slots(&self, key: u64) -> (u64, [usize; 3]) {
        let hash = mix64(key.wrapping_add(self.seed));
        let h0 = ((u128::from(hash) * u128::from(self.segment_count_length)) >> 64) as u32;
        let mut h1 = h0 + self.segment_length;
        let mut h2 = h1 + self.segment_length;
        h1 ^= ((hash >> 18) as u32) & self.segment_length_mask;
        h2 ^= (hash as u32) & self.segment_length_mask;
        let base = self.fingerprint_offset as usize;
        (
            hash,
            [base + h0 as usize, base + h1 as usize, base + h2 as usize],
        )
    }
}

/// How a key's shard is chosen: fixed per filter, the same function at build and at lookup.
///
/// Shard choice only balances the shards (a shard's keys are hashed again, with its own seed,
/// for its slots), so it needs spread, not independence: one multiply does for any key set a
/// dialer loads, where the murmur finalizer of format versions 2 and 3 cost ~8 instructions
/// per key, a tenth of an absent lookup (BENCHMARKS.md, issue 18). Uneven shards would only
/// cost build memory, never answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardPick {
    /// Murmur-finalized key, multiply-shifted (snapshot format versions 2 and 3).
    Mixed,
    /// Key times [`SHARD_MULTIPLIER`], multiply-shifted (format version 4 on).
    Multiplicative,
}

impl ShardPick {
    /// The shard of `key` among `count` shards.
    #[inline(always)]
    pub fn shard(self, key: u64, count: usize) -> usize {
        let spread = match self {
            ShardPick::Mixed => mix64(key ^ SHARD_SELECT_SEED),
            ShardPick::Multiplicative => key.wrapping_mul(SHARD_MULTIPLIER),
        };
        ((u128::from(spread) * count as u128) >> 64) as usize
    }
}

/// Most fingerprints a filter may hold, so a batch's pipeline keeps each slot in 32 bits
/// (about 3.8 billion keys; the largest registry is ~250 M).
pub const MAX_FINGERPRINTS: u64 = 1 << 32;

/// A key in flight in a batch's pipeline: its fingerprint bits and three slots, 16 bytes, so
/// the ring of keys in flight stays within a few L1 lines.
#[derive(Clone, Copy, Default)]
struct Pending([u32; 4]);

/// A read-only view of a filter: shard table plus fingerprints (owned or memory-mapped).
#[derive(Clone, Debug)]
pub struct FuseView<'a, F: Fingerprint> {
    shards: Box<[ShardDescriptor]>,
    fingerprints: &'a [F],
    pick: ShardPick,
}

impl<'a, F: Fingerprint> FuseView<'a, F> {
    /// Builds a view after checking that no lookup can index outside `fingerprints`.
    pub fn new(
        shards: Box<[ShardDescriptor]>,
        fingerprints: &'a [F],
        pick: ShardPick,
    ) -> Result<Self, String> {
        if fingerprints.len() as u64 > MAX_FINGERPRINTS {
            return Err(format!(
                "filter holds {} fingerprints, over the {MAX_FINGERPRINTS} a lookup addresses",
                fingerprints.len()
            ));
        }
        for (index, shard) in shards.iter().enumerate() {
            shard
                .validate(fingerprints.len() as u64)
                .map_err(|reason| format!("filter shard {index}: {reason}"))?;
        }
        Ok(FuseView {
            shards,
            fingerprints,
            pick,
        })
    }

    pub fn pick(&self) -> ShardPick {
        self.pick
    }

    pub fn shards(&self) -> &[ShardDescriptor] {
        &self.shards
    }

    pub fn fingerprints(&self) -> &'a [F] {
        self.fingerprints
    }

    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(self.fingerprints) + self.shards.len() * ShardDescriptor::WORDS * 8
    }

    #[inline(always)]
    fn shard_of(&self, key: u64) -> Option<&ShardDescriptor> {
        let count = self.shards.len();
        if count <= 1 {
            return self.shards.first();
        }
        self.shards.get(self.pick.shard(key, count))
    }

    /// `false` means certainly absent; `true` means probably present.
    #[inline]
    pub fn contains(&self, key: u64) -> bool {
        let Some(shard) = self.shard_of(key) else {
            return false;
        };
        let (hash, [a, b, c]) = shard.slots(key);
        F::from_hash(hash) == self.fingerprints[a] ^ self.fingerprints[b] ^ self.fingerprints[c]
    }

    /// Filter answers for a batch (see [`FuseView::for_each_pass`]).
    pub fn contains_batch(&self, keys: &[u64], out: &mut [bool]) {
        assert_eq!(keys.len(), out.len(), "one answer per key");
        out.fill(false);
        self.for_each_pass(keys, |index| out[index] = true);
    }

    /// Calls `on_pass` with the index of every key the filter lets through, in order: a rolling
    /// software pipeline. Key `i + AHEAD`'s three slots are hashed and prefetched just before
    /// key `i`'s are read, so about `3 * AHEAD` line fetches stay in flight throughout the batch
    /// instead of draining at every group boundary (the shape `xorf`'s own batched form is
    /// measured with; BENCHMARKS.md, issue 18). Passing indexes out directly spares a batch a
    /// second pass over its answers to find the few hits.
    #[inline]
    pub fn for_each_pass(&self, keys: &[u64], on_pass: impl FnMut(usize)) {
        // One loop per shard function, so the per-key path carries no branch on it.
        match self.pick {
            ShardPick::Multiplicative => self.pass_loop::<true>(keys, on_pass),
            ShardPick::Mixed => self.pass_loop::<false>(keys, on_pass),
        }
    }

    #[inline(always)]
    fn pass_loop<const MULTIPLICATIVE: bool>(&self, keys: &[u64], mut on_pass: impl FnMut(usize)) {
        if self.shards.is_empty() {
            return;
        }
        let mut ring = [Pending::default(); AHEAD];
        let warm = keys.len().min(AHEAD);
        for (slot, &key) in ring.iter_mut().zip(&keys[..warm]) {
            *slot = self.prefetch_slots::<MULTIPLICATIVE>(key);
        }
        // Past this point every key still has one `AHEAD` keys behind it to prefetch; the
        // split spares the steady loop a bounds check per key.
        let steady = keys.len().saturating_sub(AHEAD);
        for (i, &next) in keys[AHEAD.min(keys.len())..].iter().enumerate() {
            let entry = &mut ring[i % AHEAD];
            let pending = *entry;
            *entry = self.prefetch_slots::<MULTIPLICATIVE>(next);
            if self.passes(pending) {
                on_pass(i);
            }
        }
        for i in steady..keys.len() {
            if self.passes(ring[i % AHEAD]) {
                on_pass(i);
            }
        }
    }

    #[inline(always)]
    fn passes(&self, pending: Pending) -> bool {
        let [fingerprint, a, b, c] = pending.0;
        let fingerprints = self.fingerprints;
        F::from_hash(u64::from(fingerprint))
            == fingerprints[a as usize] ^ fingerprints[b as usize] ^ fingerprints[c as usize]
    }

    /// A key's fingerprint and slots, with the slots' lines prefetched. The shard table is not
    /// empty.
    #[inline(always)]
    fn prefetch_slots<const MULTIPLICATIVE: bool>(&self, key: u64) -> Pending {
        let pick = if MULTIPLICATIVE {
            ShardPick::Multiplicative
        } else {
            ShardPick::Mixed
        };
        let shard = match self.shards.len() {
            1 => &self.shards[0],
            count => &self.shards[pick.shard(key, count)],
        };
        let (hash, slots) = shard.slots(key);
        for &index in &slots {
            prefetch_read(self.fingerprints.as_ptr().wrapping_add(index));
        }
        // The view holds at most `MAX_FINGERPRINTS`, so every slot fits 32 bits; the 32 bits
        // of `hash ^ hash >> 32` are all a fingerprint is made of.
        Pending([
            (hash ^ (hash >> 32)) as u32,
            slots[0] as u32,
            slots[1] as u32,
            slots[2] as u32,
        ])
    }
}

/// A filter built in memory.
#[derive(Clone, Debug)]
pub struct FuseFilter<F: Fingerprint> {
    pub shards: Vec<ShardDescriptor>,
    pub fingerprints: Vec<F>,
    pub pick: ShardPick,
}

/// Why a filter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FuseBuildError {
    #[error(
        "binary fuse construction failed for shard {shard} ({keys} keys) after {attempts} salts"
    )]
    Construction {
        shard: usize,
        keys: usize,
        attempts: u64,
    },
    #[error("filter self-check failed in shard {shard}: a built key is not found (internal bug)")]
    SelfCheck { shard: usize },
    #[error("too many keys for one filter: {keys}")]
    TooLarge { keys: usize },
}

impl<F: Fingerprint> FuseFilter<F> {
    pub fn view(&self) -> FuseView<'_, F> {
        FuseView {
            shards: self.shards.clone().into_boxed_slice(),
            fingerprints: &self.fingerprints,
            pick: self.pick,
        }
    }

    /// Builds a filter over distinct keys (order irrelevant), on up to `threads` threads.
    pub fn build(keys: &[u64], threads: usize) -> Result<FuseFilter<F>, FuseBuildError> {
        Self::build_picking(keys, threads, ShardPick::Multiplicative)
    }

    /// [`FuseFilter::build`] with the given shard function (`Mixed` writes what builds of
    /// snapshot format 2 and 3 read).
    pub fn build_picking(
        keys: &[u64],
        threads: usize,
        pick: ShardPick,
    ) -> Result<FuseFilter<F>, FuseBuildError> {
        if keys.is_empty() {
            return Ok(FuseFilter {
                shards: Vec::new(),
                fingerprints: Vec::new(),
                pick,
            });
        }
        let shard_count = keys.len().div_ceil(SHARD_TARGET_KEYS);
        let partitioned = partition_by_shard(keys, shard_count, pick);
        let threads = threads.clamp(1, shard_count);
        let next = std::sync::atomic::AtomicUsize::new(0);
        type Built<F> = Result<BuiltShard<F>, FuseBuildError>;
        let mut results: Vec<Option<Built<F>>> = (0..shard_count).map(|_| None).collect();
        let results_slots: Vec<std::sync::Mutex<Option<Built<F>>>> = (0..shard_count)
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let shard = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if shard >= shard_count {
                            break;
                        }
                        let built = build_one_shard::<F>(shard, partitioned.shard(shard));
                        *results_slots[shard]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(built);
                    }
                });
            }
        });
        for (slot, result) in results_slots.into_iter().zip(results.iter_mut()) {
            *result = slot.into_inner().unwrap_or_else(|e| e.into_inner());
        }
        let mut shards = Vec::with_capacity(shard_count);
        let mut fingerprints = Vec::new();
        for (shard, result) in results.into_iter().enumerate() {
            let (seed, segment_length, segment_length_mask, segment_count_length, fps) =
                result.ok_or(FuseBuildError::SelfCheck { shard })??;
            shards.push(ShardDescriptor {
                seed,
                segment_length,
                segment_length_mask,
                segment_count_length,
                fingerprint_offset: fingerprints.len() as u64,
                fingerprint_len: fps.len() as u64,
            });
            fingerprints.extend_from_slice(&fps);
        }
        if fingerprints.len() as u64 > MAX_FINGERPRINTS {
            return Err(FuseBuildError::TooLarge { keys: keys.len() });
        }
        let filter = FuseFilter {
            shards,
            fingerprints,
            pick,
        };
        // Each worker found every key of its shard through our lookup code; shard selection is
        // the same function for partitioning and lookups. A sample through the assembled filter
        // checks the offsets of the concatenation.
        let view = filter.view();
        for shard in 0..shard_count {
            let keys = partitioned.shard(shard);
            if !keys.iter().step_by(4096).all(|&key| view.contains(key)) {
                return Err(FuseBuildError::SelfCheck { shard });
            }
        }
        Ok(filter)
    }
}

fn build_one_shard<F: Fingerprint>(
    shard: usize,
    keys: &[u64],
) -> Result<BuiltShard<F>, FuseBuildError> {
    if keys.len() > u32::MAX as usize / 2 {
        return Err(FuseBuildError::TooLarge { keys: keys.len() });
    }
    // Adding a salt to every key is the same as changing xorf's seed, which xorf does not let
    // us choose; a fresh salt gives construction a fresh hypergraph.
    for attempt in 0..MAX_ATTEMPTS {
        let salt = attempt.wrapping_mul(0xd1b5_4a32_d192_ed03);
        if let Some(built) = F::build_shard(keys, salt) {
            self_check(shard, keys, &built)?;
            return Ok(built);
        }
    }
    Err(FuseBuildError::Construction {
        shard,
        keys: keys.len(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Checks that every key of a freshly built shard is found through *our* lookup code (batched,
/// so this costs a fraction of construction), on the worker thread that built it.
fn self_check<F: Fingerprint>(
    shard: usize,
    keys: &[u64],
    built: &BuiltShard<F>,
) -> Result<(), FuseBuildError> {
    let (seed, segment_length, segment_length_mask, segment_count_length, fingerprints) = built;
    let descriptor = ShardDescriptor {
        seed: *seed,
        segment_length: *segment_length,
        segment_length_mask: *segment_length_mask,
        segment_count_length: *segment_count_length,
        fingerprint_offset: 0,
        fingerprint_len: fingerprints.len() as u64,
    };
    let view = FuseView::new(
        Box::new([descriptor]),
        fingerprints,
        ShardPick::Multiplicative,
    )
    .map_err(|_| FuseBuildError::SelfCheck { shard })?;
    let mut found = [false; 1024];
    for keys in keys.chunks(found.len()) {
        let found = &mut found[..keys.len()];
        view.contains_batch(keys, found);
        if !found.iter().all(|&hit| hit) {
            return Err(FuseBuildError::SelfCheck { shard });
        }
    }
    Ok(())
}

/// Keys grouped by shard (counting sort), so each shard's keys are one contiguous slice.
struct Partitioned {
    keys: Vec<u64>,
    starts: Vec<usize>,
}

impl Partitioned {
    fn shard(&self, shard: usize) -> &[u64] {
        &self.keys[self.starts[shard]..self.starts[shard + 1]]
    }
}

fn partition_by_shard(keys: &[u64], shard_count: usize, pick: ShardPick) -> Partitioned {
    if shard_count == 1 {
        return Partitioned {
            keys: keys.to_vec(),
            starts: vec![0, keys.len()],
        };
    }
    let pick = |key: u64| pick.shard(key, shard_count);
    let mut counts = vec![0usize; shard_count + 1];
    for &key in keys {
        counts[pick(key) + 1] += 1;
    }
    for i in 1..=shard_count {
        counts[i] += counts[i - 1];
    }
    let starts = counts.clone();
    let mut out = vec![0u64; keys.len()];
    for &key in keys {
        let shard = pick(key);
        out[counts[shard]] = key;
        counts[shard] += 1;
    }
    Partitioned { keys: out, starts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xorf::Filter;

    fn keys(count: u64, stride: u64) -> Vec<u64> {
        (0..count).map(|i| 48_500_000_000 + i * stride).collect()
    }

    #[test]
    fn agrees_with_xorf_on_members_and_non_members() {
        let keys = keys(20_000, 7);
        let ours = FuseFilter::<u8>::build(&keys, 1).unwrap();
        let theirs = xorf::BinaryFuse8::try_from(&keys).unwrap();
        let view = ours.view();
        // With salt 0 our seed equals xorf's, so answers must agree key for key.
        assert_eq!(ours.shards[0].seed, theirs.descriptor.seed);
        for probe in 48_499_000_000..48_499_000_000 + 200_000u64 {
            assert_eq!(view.contains(probe), theirs.contains(&probe));
        }
        assert!(keys.iter().all(|&k| view.contains(k)));
    }

    #[test]
    fn batch_matches_single_lookups() {
        let keys = keys(5_000, 3);
        for filter in [FuseFilter::<u8>::build(&keys, 2).unwrap()] {
            let view = filter.view();
            let probes: Vec<u64> = (0..10_000).map(|i| 48_500_000_000 + i * 2).collect();
            let mut out = vec![false; probes.len()];
            view.contains_batch(&probes, &mut out);
            for (probe, answer) in probes.iter().zip(&out) {
                assert_eq!(*answer, view.contains(*probe));
            }
        }
    }

    #[test]
    fn batches_of_every_length_around_the_pipeline_depth_match_single_lookups() {
        // Two shards, so shard selection runs inside the pipeline too.
        let keys: Vec<u64> = (0..(SHARD_TARGET_KEYS as u64 + 5000))
            .map(|i| i * 3)
            .collect();
        let filter = FuseFilter::<u8>::build(&keys, 2).unwrap();
        let view = filter.view();
        let probes: Vec<u64> = (0..3 * AHEAD as u64 + 7).map(|i| i * 5).collect();
        for len in 0..probes.len() {
            for start in [0, 1, AHEAD] {
                let Some(batch) = probes.get(start..start + len) else {
                    continue;
                };
                let mut out = vec![false; batch.len()];
                view.contains_batch(batch, &mut out);
                for (probe, answer) in batch.iter().zip(&out) {
                    assert_eq!(*answer, view.contains(*probe), "length {len} from {start}");
                }
            }
        }
    }

    #[test]
    fn builds_tiny_and_awkward_sizes() {
        for count in [0u64, 1, 2, 3, 11_500, 11_501, 11_499] {
            let keys = keys(count, 13);
            let filter = FuseFilter::<u16>::build(&keys, 2).unwrap();
            let view = filter.view();
            assert!(keys.iter().all(|&k| view.contains(k)), "size {count}");
        }
    }

    #[test]
    fn sharded_build_finds_every_key() {
        // Shrinking the shard size is not possible at run time, so build just over one shard.
        let keys: Vec<u64> = (0..(SHARD_TARGET_KEYS as u64 + 1000)).collect();
        let filter = FuseFilter::<u8>::build(&keys, 2).unwrap();
        assert_eq!(filter.shards.len(), 2);
        let view = filter.view();
        let mut out = vec![false; keys.len()];
        view.contains_batch(&keys, &mut out);
        assert!(out.iter().all(|&hit| hit));
    }

    #[test]
    fn both_shard_functions_build_filters_that_hold_their_keys_and_spread_them() {
        // Dense numbers, the shape of a national registry, over three shards.
        let keys: Vec<u64> = (0..(2 * SHARD_TARGET_KEYS as u64 + 9000))
            .map(|i| 12_015_550_000 + i * 7)
            .collect();
        for pick in [ShardPick::Mixed, ShardPick::Multiplicative] {
            let filter = FuseFilter::<u8>::build_picking(&keys, 2, pick).unwrap();
            assert_eq!(filter.shards.len(), 3);
            let view = filter.view();
            assert_eq!(view.pick(), pick);
            let mut out = vec![false; keys.len()];
            view.contains_batch(&keys, &mut out);
            assert!(out.iter().all(|&hit| hit), "{pick:?}");
            // Fuse construction sizes each shard for its own keys: each within 3 % of even.
            let even = keys.len() as f64 / 3.0;
            for shard in &filter.shards {
                let keys = shard.fingerprint_len as f64 / 1.13;
                assert!(
                    (keys - even).abs() < even * 0.03,
                    "{pick:?}: {keys} of {even}"
                );
            }
        }
    }

    #[test]
    fn corrupt_descriptors_are_refused() {
        let keys = keys(1000, 1);
        let filter = FuseFilter::<u8>::build(&keys, 1).unwrap();
        let mut shard = filter.shards[0];
        shard.segment_count_length += shard.segment_length * 4;
        assert!(FuseView::new(vec![shard].into(), &filter.fingerprints, filter.pick).is_err());
        let mut shard = filter.shards[0];
        shard.segment_length = 3;
        assert!(FuseView::new(vec![shard].into(), &filter.fingerprints, filter.pick).is_err());
        let mut shard = filter.shards[0];
        shard.fingerprint_offset = 1;
        assert!(FuseView::new(vec![shard].into(), &filter.fingerprints, filter.pick).is_err());
    }
}
