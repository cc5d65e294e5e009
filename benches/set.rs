//! Suppression set benchmarks: lookups against baselines on the same keys, memory, and build.
//!
//! ```text
//! cargo bench --bench set                     # lookups, 50 M keys (pl, us and keyed sets)
//! cargo bench --bench set -- pl/              # only the Polish-range groups
//! SUPPRESSD_BENCH_KEYS=1000000 cargo bench --bench set      # quick run on 1 M keys
//! cargo bench --bench set -- memory           # bytes per key of every structure, no timing
//! cargo bench --bench set -- build100m        # build 100 M numbers: wall time and peak RSS
//! ```
//!
//! Every key set, probe pool and baseline is built once per process (outside any timed loop)
//! from a fixed seed and shared by all groups that need it. Each timed iteration answers one
//! batch of `SUPPRESSD_BENCH_BATCH` (default 4096) numbers, taken in turn from a pool of 2^20
//! probes, so throughput is reported in numbers per second for every contender alike.
//!
//! Traffic kinds: `absent99` is 99 % numbers of the same range that are not in the set and 1 %
//! members (a dialer's usual traffic); `present` is members only, so every lookup pays the
//! exact confirmation.
//!
//! Contenders per group: `suppressd_*` is the set in the default layout (a slot table, as
//! `suppressd build` makes it), `classic_*` the same numbers in the filter + Elias-Fano layout
//! (the default before format 5), `lines_*` as a line table (`LayoutChoice::Auto`),
//! `suppressd_filter` the engine's binary fuse filter alone, `raw_xorf_*` one
//! `xorf::BinaryFuse8` over the same keys (the ceiling the absent path is held to; `batch` = groups of 32 keys whose slots are all
//! prefetched before any is read, `rolling` = slots prefetched continuously as many keys ahead
//! as the engine's filter does (`fuse::AHEAD`), `rolling32` = 32 keys ahead),
//! then the hash set and sorted-array baselines. A regular expression
//! selects contenders and builds only theirs: `cargo bench --bench set -- 'us/.*/(suppressd|raw)'`.

use criterion::{BenchmarkGroup, Criterion, Throughput, measurement::WallTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use suppressd::engine::date::Day;
use suppressd::engine::exact::{ExactTable, ExactView, Probe};
use suppressd::engine::fuse::{self, FilterWidth, mix64};
use suppressd::engine::keys::SecretKey;
use suppressd::engine::number::Number;
use suppressd::engine::prefetch::prefetch_read;
use suppressd::engine::set::{LayoutChoice, SetBuilder, SetSpec, SuppressionSet};
use suppressd::engine::snapshot::SetKind;
use xorf::Filter;

/// Large heap allocations of this bench (baseline hash sets, sorted arrays, key lists) are put
/// on transparent huge pages, as the suppressd sets are (see `HugeAlloc`): every contender gets
/// the same page size. `SUPPRESSD_BENCH_HEAP_THP=0` turns this off.
#[global_allocator]
static ALLOC: HugeAlloc = HugeAlloc;

/// Allocations of at least this many bytes get their own huge-page-advised anonymous mapping.
const HUGE_ALLOC_MIN: usize = 2 << 20;

/// A global allocator that serves large allocations from anonymous memory advised with
/// `MADV_HUGEPAGE` (the kernel's THP mode here is `madvise`, so plain heap memory would use
/// 4 KiB pages) and everything else from the system allocator.
struct HugeAlloc;

static HUGE_MAPS: std::sync::Mutex<Vec<memmap2::MmapMut>> = std::sync::Mutex::new(Vec::new());
static HUGE_OFF: OnceLock<bool> = OnceLock::new();

fn huge_heap() -> bool {
    // `std::env::var` allocates a small String: fine inside the allocator (small sizes go to
    // the system allocator and never reach this function).
    !*HUGE_OFF.get_or_init(|| std::env::var("SUPPRESSD_BENCH_HEAP_THP").is_ok_and(|v| v == "0"))
}

// SAFETY: small allocations are the system allocator's; large ones are fresh anonymous
// mappings (page aligned, so any layout alignment up to 4096 holds), kept in `HUGE_MAPS` until
// their `dealloc` removes and unmaps them. The registry Vec only ever allocates small blocks.
unsafe impl std::alloc::GlobalAlloc for HugeAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.size() < HUGE_ALLOC_MIN || layout.align() > 4096 || !huge_heap() {
            // SAFETY: forwarded unchanged.
            return unsafe { std::alloc::System.alloc(layout) };
        }
        let Ok(mut map) = memmap2::MmapOptions::new().len(layout.size()).map_anon() else {
            return std::ptr::null_mut();
        };
        let _ = map.advise(memmap2::Advice::HugePage);
        let ptr = map.as_mut_ptr();
        HUGE_MAPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(map);
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        if layout.size() >= HUGE_ALLOC_MIN {
            let mut maps = HUGE_MAPS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = maps.iter().position(|m| m.as_ptr() == ptr.cast_const()) {
                let map = maps.swap_remove(at);
                drop(maps);
                drop(map);
                return;
            }
        }
        // SAFETY: not one of ours, so the system allocator's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

const SEED: u64 = 0x5eed_2026;
const POOL: usize = 1 << 20;
const TODAY: Day = Day(20_600);
const GROUP: usize = 32;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn key_count() -> usize {
    env_usize("SUPPRESSD_BENCH_KEYS", 50_000_000)
}

fn batch_len() -> usize {
    env_usize("SUPPRESSD_BENCH_BATCH", 4096)
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

fn log(message: impl AsRef<str>) {
    eprintln!("[bench] {}", message.as_ref());
}

/// Peak resident set size of this process so far, in bytes (Linux; 0 elsewhere).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds (user + system) used by this process so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(rest) = stat.rfind(')').map(|at| &stat[at + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of /proc/self/stat (utime, stime), in clock ticks of 1/100 s.
    (ticks(11) + ticks(12)) / 100.0
}

// ---------------------------------------------------------------------------------------------
// Key spaces

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Space {
    /// Poland: +48 and nine digits, 48_100_000_000..48_999_999_999 (span 9e8).
    Pl,
    /// North America: +1 NPA NXX XXXX with NPA and NXX in 200..999 (6.4e9 numbers, span 8e9).
    Us,
}

impl Space {
    fn name(self) -> &'static str {
        match self {
            Space::Pl => "pl",
            Space::Us => "us",
        }
    }

    #[inline]
    fn draw(self, rng: &mut ChaCha8Rng) -> u64 {
        match self {
            Space::Pl => 48_100_000_000 + rng.random_range(0..900_000_000u64),
            Space::Us => {
                let npa = rng.random_range(200..1000u64);
                let nxx = rng.random_range(200..1000u64);
                let line = rng.random_range(0..10_000u64);
                10_000_000_000 + npa * 10_000_000 + nxx * 10_000 + line
            }
        }
    }
}

/// `count` distinct random numbers of `space`, sorted.
fn distinct_numbers(space: Space, count: usize, seed: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keys: Vec<u64> = Vec::with_capacity(count);
    while keys.len() < count {
        let missing = count - keys.len();
        let sorted_len = keys.len();
        keys.extend((0..missing).map(|_| space.draw(&mut rng)));
        keys[sorted_len..].sort_unstable();
        merge_sorted_tail(&mut keys, sorted_len);
        keys.dedup();
    }
    keys
}

/// Merges the sorted tail `keys[mid..]` into the sorted head `keys[..mid]`.
fn merge_sorted_tail(keys: &mut Vec<u64>, mid: usize) {
    if mid == 0 || mid == keys.len() {
        return;
    }
    let tail = keys.split_off(mid);
    let head = std::mem::take(keys);
    let mut out = Vec::with_capacity(head.len() + tail.len());
    let (mut i, mut j) = (0, 0);
    while i < head.len() && j < tail.len() {
        if head[i] <= tail[j] {
            out.push(head[i]);
            i += 1;
        } else {
            out.push(tail[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&head[i..]);
    out.extend_from_slice(&tail[j..]);
    *keys = out;
}

/// Probe pools over `space`: 99 % absent numbers of the space plus 1 % members, and members only.
fn probe_pools(space: Space, sorted: &[u64], seed: u64) -> (Vec<u64>, Vec<u64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xabcd);
    let mut absent = Vec::with_capacity(POOL);
    for _ in 0..POOL {
        if rng.random_range(0..100u32) == 0 {
            absent.push(sorted[rng.random_range(0..sorted.len())]);
        } else {
            loop {
                let candidate = space.draw(&mut rng);
                if sorted.binary_search(&candidate).is_err() {
                    absent.push(candidate);
                    break;
                }
            }
        }
    }
    let present = (0..POOL)
        .map(|_| sorted[rng.random_range(0..sorted.len())])
        .collect();
    (absent, present)
}

fn spec(name: &str) -> SetSpec {
    SetSpec {
        name: name.into(),
        kind: SetKind::Block,
        filter: FilterWidth::Fuse8,
        source: "benchmark".into(),
        source_date: None,
        version: 1,
        build_time: 0,
    }
}

fn bench_key() -> SecretKey {
    SecretKey::new("bench", *b"suppressd-bench!").expect("valid key")
}

/// A set in the default layout (binary fuse filter + Elias-Fano), as `suppressd build` makes it.
fn build_set(numbers: &[u64], key: Option<SecretKey>) -> SuppressionSet {
    build_set_as(numbers, key, LayoutChoice::default())
}

fn build_set_as(numbers: &[u64], key: Option<SecretKey>, layout: LayoutChoice) -> SuppressionSet {
    let mut builder = SetBuilder::new(spec("bench"), key.clone()).expect("valid spec");
    builder.layout(layout);
    builder.reserve(numbers.len());
    for &n in numbers {
        builder
            .push(Number::from_u64_unchecked(n), None)
            .expect("plain entry");
    }
    let built = builder.build(threads()).expect("set builds");
    if std::env::var("SUPPRESSD_BENCH_FROM_IMAGE").is_ok_and(|v| v == "1") {
        return SuppressionSet::from_image(built.image, key.as_ref()).expect("set loads");
    }
    // Served like the daemon serves it: written to a snapshot file and memory-mapped. The file
    // is unlinked at once; the mapping keeps it alive for the life of the process.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("bench.snap");
    built.image.write_atomic(&path).expect("snapshot written");
    drop(built);
    let started = Instant::now();
    let set = SuppressionSet::open(&path, key.as_ref()).expect("set loads");
    log(format!(
        "{:?}: mapped and validated in {:.1?}",
        set.set_layout(),
        started.elapsed()
    ));
    set
}

fn describe_set(label: &str, set: &SuppressionSet) {
    let (filter, exact, expiry) = set.bytes_by_part();
    let n = set.len().max(1) as f64;
    log(format!(
        "{label} ({:?}): {} keys, {:.3} B/key in memory (filter {:.3} B/key = {filter} B, exact {:.3} B/key = {exact} B, expiry {expiry} B)",
        set.set_layout(),
        set.len(),
        set.bytes_in_memory() as f64 / n,
        filter as f64 / n,
        exact as f64 / n,
    ));
}

// ---------------------------------------------------------------------------------------------
// Shared fixtures

struct Fixture {
    /// Sorted distinct numbers in the set.
    sorted: Vec<u64>,
    absent: Vec<u64>,
    present: Vec<u64>,
    set: SuppressionSet,
}

impl Fixture {
    fn new(space: Space) -> Fixture {
        let count = key_count();
        let started = Instant::now();
        let sorted = distinct_numbers(space, count, SEED ^ space as u64);
        let (absent, present) = probe_pools(space, &sorted, SEED ^ space as u64);
        log(format!(
            "{}: {count} keys and probe pools generated in {:.1?}",
            space.name(),
            started.elapsed()
        ));
        let started = Instant::now();
        let set = build_set(&sorted, None);
        log(format!(
            "{}: set built in {:.1?}",
            space.name(),
            started.elapsed()
        ));
        describe_set(space.name(), &set);
        let mut out = vec![false; POOL];
        let numbers = as_numbers(&absent);
        set.contains_batch(&numbers, TODAY, &mut out);
        log(format!(
            "{}: absent99 pool holds {:.2} % members",
            space.name(),
            out.iter().filter(|&&b| b).count() as f64 * 100.0 / POOL as f64
        ));
        Fixture {
            sorted,
            absent,
            present,
            set,
        }
    }
}

fn as_numbers(keys: &[u64]) -> Vec<Number> {
    keys.iter()
        .map(|&k| Number::from_u64_unchecked(k))
        .collect()
}

fn fixture(space: Space) -> &'static Fixture {
    static PL: OnceLock<Fixture> = OnceLock::new();
    static US: OnceLock<Fixture> = OnceLock::new();
    match space {
        Space::Pl => PL.get_or_init(|| Fixture::new(Space::Pl)),
        Space::Us => US.get_or_init(|| Fixture::new(Space::Us)),
    }
}

/// A keyed (SipHash fingerprint) set over the Polish numbers.
fn keyed_set() -> &'static SuppressionSet {
    static KEYED: OnceLock<SuppressionSet> = OnceLock::new();
    KEYED.get_or_init(|| {
        let fixture = fixture(Space::Pl);
        let started = Instant::now();
        let set = build_set(&fixture.sorted, Some(bench_key()));
        log(format!("keyed: set built in {:.1?}", started.elapsed()));
        describe_set("keyed", &set);
        set
    })
}

/// The same numbers in another layout, for comparison in the same run: a line table
/// (`LayoutChoice::Auto`, `suppressd build --layout lines`) or filter + Elias-Fano
/// (`--layout filter`, the default before snapshot format 5).
fn set_in_layout(space: Space, layout: LayoutChoice) -> &'static SuppressionSet {
    static CELLS: [[OnceLock<SuppressionSet>; 2]; 2] = [
        [OnceLock::new(), OnceLock::new()],
        [OnceLock::new(), OnceLock::new()],
    ];
    let row = usize::from(layout == LayoutChoice::FilterEliasFano);
    let column = usize::from(space == Space::Us);
    CELLS[row][column].get_or_init(|| {
        let set = build_set_as(&fixture(space).sorted, None, layout);
        describe_set(&format!("{} {layout:?}", space.name()), &set);
        set
    })
}

fn lines_set(space: Space) -> &'static SuppressionSet {
    set_in_layout(space, LayoutChoice::Auto)
}

fn classic_set(space: Space) -> &'static SuppressionSet {
    set_in_layout(space, LayoutChoice::FilterEliasFano)
}

/// The engine's own filter alone (sharded, as a set holds it) over the same keys, on the same
/// huge-page heap as the raw filter: `suppressd_batch` minus this is what confirming the
/// filter's hits costs.
fn engine_filter(space: Space) -> &'static fuse::FuseFilter<u8> {
    static PL: OnceLock<fuse::FuseFilter<u8>> = OnceLock::new();
    static US: OnceLock<fuse::FuseFilter<u8>> = OnceLock::new();
    let cell = match space {
        Space::Pl => &PL,
        Space::Us => &US,
    };
    cell.get_or_init(|| fuse::FuseFilter::build(&fixture(space).sorted, 2).expect("filter builds"))
}

/// The raw filter the default layout is built on: one `xorf::BinaryFuse8` over the same keys
/// (its fingerprints are a large heap allocation, so they get huge pages like the mapped sets).
fn raw_xorf(space: Space) -> &'static xorf::BinaryFuse8 {
    static PL: OnceLock<xorf::BinaryFuse8> = OnceLock::new();
    static US: OnceLock<xorf::BinaryFuse8> = OnceLock::new();
    let cell = match space {
        Space::Pl => &PL,
        Space::Us => &US,
    };
    cell.get_or_init(|| {
        let fixture = fixture(space);
        let started = Instant::now();
        let filter = xorf::BinaryFuse8::try_from(&fixture.sorted).expect("xorf builds");
        log(format!(
            "{}: raw xorf BinaryFuse8 built in {:.1?}: {:.3} B/key",
            space.name(),
            started.elapsed(),
            filter.fingerprints.len() as f64 / fixture.sorted.len().max(1) as f64
        ));
        // The batched form below must answer exactly as xorf's own `contains`.
        let mut out = vec![false; 4096];
        let mut rolling = vec![false; 4096];
        xorf_batch(&filter, &fixture.absent[..4096], &mut out);
        xorf_rolling::<{ fuse::AHEAD }>(&filter, &fixture.absent[..4096], &mut rolling);
        for ((key, answer), rolled) in fixture.absent[..4096].iter().zip(&out).zip(&rolling) {
            assert_eq!(*answer, filter.contains(key), "batched xorf diverges");
            assert_eq!(*rolled, *answer, "rolling xorf diverges");
        }
        filter
    })
}

/// xorf's BinaryFuse8 lookup, batched: the three slots of `GROUP` keys are computed and
/// prefetched before any is read (xorf's formula over its public descriptor and fingerprints).
fn xorf_batch(filter: &xorf::BinaryFuse8, keys: &[u64], out: &mut [bool]) {
    let d = &filter.descriptor;
    let fingerprints = &filter.fingerprints[..];
    let mut slots = [(0u64, [0usize; 3]); GROUP];
    for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
        for (slot, &key) in slots.iter_mut().zip(keys) {
            let hash = mix64(key.wrapping_add(d.seed));
            let h0 = ((u128::from(hash) * u128::from(d.segment_count_length)) >> 64) as u32;
            let h1 = (h0 + d.segment_length) ^ (((hash >> 18) as u32) & d.segment_length_mask);
            let h2 = (h0 + 2 * d.segment_length) ^ ((hash as u32) & d.segment_length_mask);
            *slot = (hash, [h0 as usize, h1 as usize, h2 as usize]);
            for &index in &slot.1 {
                prefetch_read(fingerprints.as_ptr().wrapping_add(index));
            }
        }
        for (answer, &(hash, [a, b, c])) in out.iter_mut().zip(&slots) {
            *answer =
                (hash ^ (hash >> 32)) as u8 == fingerprints[a] ^ fingerprints[b] ^ fingerprints[c];
        }
    }
}

/// xorf's BinaryFuse8 lookup in a rolling pipeline: key `i + DEPTH`'s slots are computed and
/// prefetched just before key `i`'s are read (the shape of the engine's filter batches), so
/// fetches stay in flight across group boundaries. Measured at the engine's depth
/// (`fuse::AHEAD`) and at 32, so the ceiling is the raw filter at its better depth.
fn xorf_rolling<const DEPTH: usize>(filter: &xorf::BinaryFuse8, keys: &[u64], out: &mut [bool]) {
    let d = &filter.descriptor;
    let fingerprints = &filter.fingerprints[..];
    let slots_of = |key: u64| {
        let hash = mix64(key.wrapping_add(d.seed));
        let h0 = ((u128::from(hash) * u128::from(d.segment_count_length)) >> 64) as u32;
        let h1 = (h0 + d.segment_length) ^ (((hash >> 18) as u32) & d.segment_length_mask);
        let h2 = (h0 + 2 * d.segment_length) ^ ((hash as u32) & d.segment_length_mask);
        let slots = [h0 as usize, h1 as usize, h2 as usize];
        for &index in &slots {
            prefetch_read(fingerprints.as_ptr().wrapping_add(index));
        }
        (hash, slots)
    };
    let mut ring = [(0u64, [0usize; 3]); DEPTH];
    for (slot, &key) in ring.iter_mut().zip(keys) {
        *slot = slots_of(key);
    }
    for (i, answer) in out.iter_mut().enumerate() {
        let entry = &mut ring[i % DEPTH];
        let (hash, [a, b, c]) = *entry;
        if let Some(&next) = keys.get(i + DEPTH) {
            *entry = slots_of(next);
        }
        *answer =
            (hash ^ (hash >> 32)) as u8 == fingerprints[a] ^ fingerprints[b] ^ fingerprints[c];
    }
}

/// A fast multiply-fold hasher, so the hash set baseline is not slowed by SipHash.
#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, value: u64) {
        let product = u128::from(value ^ self.0) * 0x9e37_79b9_7f4a_7c15u128;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

type FastHashSet = HashSet<u64, BuildHasherDefault<FoldHasher>>;

/// A sorted array with a radix index over the top bits of `key - min`: a bucket's keys are
/// `keys[index[b]..index[b + 1]]`.
struct RadixSorted<'a> {
    keys: &'a [u64],
    index: Vec<u32>,
    min: u64,
    shift: u32,
    buckets: u64,
}

/// Index bits giving about one bucket per three keys (2^24 buckets at 50 M keys, +1.34 B/key).
fn radix_bits(keys: usize) -> u32 {
    (keys / 3)
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .max(1)
}

impl<'a> RadixSorted<'a> {
    fn new(keys: &'a [u64], bits: u32) -> RadixSorted<'a> {
        let min = keys.first().copied().unwrap_or(0);
        let span = keys.last().copied().unwrap_or(0) - min;
        let mut shift = 0;
        while (span >> shift) >= (1u64 << bits) {
            shift += 1;
        }
        let buckets = (span >> shift) + 1;
        let mut index = vec![0u32; buckets as usize + 1];
        for &key in keys {
            index[((key - min) >> shift) as usize + 1] += 1;
        }
        for i in 1..index.len() {
            index[i] += index[i - 1];
        }
        RadixSorted {
            keys,
            index,
            min,
            shift,
            buckets,
        }
    }

    fn index_bytes(&self) -> usize {
        self.index.len() * 4
    }

    #[inline]
    fn bucket(&self, key: u64) -> Option<usize> {
        let offset = key.checked_sub(self.min)? >> self.shift;
        (offset < self.buckets).then_some(offset as usize)
    }

    #[inline]
    fn contains(&self, key: u64) -> bool {
        let Some(b) = self.bucket(key) else {
            return false;
        };
        let (lo, hi) = (self.index[b] as usize, self.index[b + 1] as usize);
        self.keys[lo..hi].contains(&key)
    }

    /// Batched form: prefetch index entries, then key ranges, then compare.
    fn contains_batch(&self, keys: &[u64], out: &mut [bool]) {
        let mut buckets = [usize::MAX; GROUP];
        for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
            for (slot, &key) in buckets.iter_mut().zip(keys) {
                *slot = self.bucket(key).unwrap_or(usize::MAX);
                if *slot != usize::MAX {
                    prefetch_read(&self.index[*slot]);
                }
            }
            let mut ranges = [(0usize, 0usize); GROUP];
            for (range, &b) in ranges.iter_mut().zip(&buckets[..keys.len()]) {
                if b != usize::MAX {
                    *range = (self.index[b] as usize, self.index[b + 1] as usize);
                    prefetch_read(self.keys.as_ptr().wrapping_add(range.0));
                }
            }
            for ((answer, &(lo, hi)), &key) in out.iter_mut().zip(&ranges).zip(keys) {
                *answer = self.keys[lo..hi].contains(&key);
            }
        }
    }
}

struct Baselines {
    std: HashSet<u64>,
    fast: FastHashSet,
}

fn hash_set_bytes(capacity: usize) -> usize {
    // hashbrown: buckets = next power of two of capacity * 8 / 7; 8 bytes + 1 control byte each.
    let buckets = (capacity * 8 / 7).next_power_of_two();
    buckets * 9 + 16
}

fn baselines(space: Space) -> &'static Baselines {
    static PL: OnceLock<Baselines> = OnceLock::new();
    static US: OnceLock<Baselines> = OnceLock::new();
    let cell = match space {
        Space::Pl => &PL,
        Space::Us => &US,
    };
    cell.get_or_init(|| {
        let fixture = fixture(space);
        let started = Instant::now();
        let std: HashSet<u64> = fixture.sorted.iter().copied().collect();
        let fast: FastHashSet = fixture.sorted.iter().copied().collect();
        let n = fixture.sorted.len().max(1) as f64;
        log(format!(
            "{}: hash set baselines built in {:.1?}; std HashSet ~{:.2} B/key, sorted Vec 8.00 B/key",
            space.name(),
            started.elapsed(),
            hash_set_bytes(std.capacity()) as f64 / n,
        ));
        Baselines { std, fast }
    })
}

fn radix(space: Space) -> &'static RadixSorted<'static> {
    static PL: OnceLock<RadixSorted<'static>> = OnceLock::new();
    static US: OnceLock<RadixSorted<'static>> = OnceLock::new();
    let cell = match space {
        Space::Pl => &PL,
        Space::Us => &US,
    };
    cell.get_or_init(|| {
        let fixture = fixture(space);
        let radix = RadixSorted::new(&fixture.sorted, radix_bits(fixture.sorted.len()));
        log(format!(
            "{}: sorted + 2^{} radix index: {:.2} B/key",
            space.name(),
            radix_bits(fixture.sorted.len()),
            8.0 + radix.index_bytes() as f64 / fixture.sorted.len().max(1) as f64
        ));
        radix
    })
}

/// The exact table alone (no filter), for the design comparison.
fn exact_table(space: Space) -> &'static ExactTable {
    static PL: OnceLock<ExactTable> = OnceLock::new();
    static US: OnceLock<ExactTable> = OnceLock::new();
    let cell = match space {
        Space::Pl => &PL,
        Space::Us => &US,
    };
    cell.get_or_init(|| {
        let fixture = fixture(space);
        let table = ExactTable::build(&fixture.sorted);
        log(format!(
            "{}: Elias-Fano exact table alone: {:.3} B/key",
            space.name(),
            table.view().bytes() as f64 / fixture.sorted.len().max(1) as f64
        ));
        table
    })
}

/// Rank lookups for a batch through the staged exact-table API, `GROUP` keys at a time.
fn exact_batch(view: &ExactView<'_>, keys: &[u64], out: &mut [bool]) {
    let mut probes = [Probe::default(); GROUP];
    for (keys, out) in keys.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
        // One pass per stage, as `SuppressionSet::contains_batch` does: each stage's cache line
        // was prefetched for the whole group by the stage before.
        for (probe, &key) in probes.iter_mut().zip(keys) {
            *probe = view.locate(key);
        }
        for probe in &mut probes[..keys.len()] {
            view.prefetch_directory(probe);
        }
        for probe in &mut probes[..keys.len()] {
            let _ = view.find_bucket(probe);
        }
        for ((answer, probe), &key) in out.iter_mut().zip(&probes).zip(keys) {
            *answer = view.finish(probe, key).is_some();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Timed loops

/// Runs `f` on consecutive batches of `pool`, one batch per timed iteration.
fn bench_batches<T: Sync>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    pool: &[T],
    mut f: impl FnMut(&[T]) -> usize,
) {
    let batch = batch_len().min(pool.len());
    let mut cursor = 0;
    group.bench_function(id, |b| {
        b.iter(|| {
            if cursor + batch > pool.len() {
                cursor = 0;
            }
            let hits = f(&pool[cursor..cursor + batch]);
            cursor += batch;
            black_box(hits)
        })
    });
}

fn lookup_group(c: &mut Criterion, space: Space, traffic: &str) {
    let fixture = fixture(space);
    let pool = match traffic {
        "absent99" => &fixture.absent,
        _ => &fixture.present,
    };
    let numbers = as_numbers(pool);
    let set = &fixture.set;
    let mut group = c.benchmark_group(format!("{}/{traffic}", space.name()));
    group.throughput(Throughput::Elements(batch_len() as u64));
    let mut out = vec![false; batch_len()];
    bench_batches(&mut group, "suppressd_batch", &numbers, |batch| {
        let out = &mut out[..batch.len()];
        set.contains_batch(batch, TODAY, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "suppressd_single", &numbers, |batch| {
        batch.iter().filter(|&&n| set.contains(n, TODAY)).count()
    });
    // Contenders' structures are built on first use, so a command-line filter that skips a
    // contender also skips building it (the closures run only for selected benchmarks).
    bench_batches(&mut group, "lines_batch", &numbers, |batch| {
        let out = &mut out[..batch.len()];
        lines_set(space).contains_batch(batch, TODAY, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "lines_single", &numbers, |batch| {
        let lines = lines_set(space);
        batch.iter().filter(|&&n| lines.contains(n, TODAY)).count()
    });
    bench_batches(&mut group, "classic_batch", &numbers, |batch| {
        let out = &mut out[..batch.len()];
        classic_set(space).contains_batch(batch, TODAY, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "classic_single", &numbers, |batch| {
        let classic = classic_set(space);
        batch
            .iter()
            .filter(|&&n| classic.contains(n, TODAY))
            .count()
    });
    let mut filter_out = vec![false; batch_len()];
    bench_batches(&mut group, "raw_xorf_batch", pool, |batch| {
        let out = &mut filter_out[..batch.len()];
        xorf_batch(raw_xorf(space), batch, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "suppressd_filter", pool, |batch| {
        let out = &mut filter_out[..batch.len()];
        engine_filter(space).view().contains_batch(batch, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "raw_xorf_rolling", pool, |batch| {
        let out = &mut filter_out[..batch.len()];
        xorf_rolling::<{ fuse::AHEAD }>(raw_xorf(space), batch, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "raw_xorf_rolling32", pool, |batch| {
        let out = &mut filter_out[..batch.len()];
        xorf_rolling::<32>(raw_xorf(space), batch, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "raw_xorf_single", pool, |batch| {
        let xorf = raw_xorf(space);
        batch.iter().filter(|k| xorf.contains(k)).count()
    });
    bench_batches(&mut group, "std_hashset", pool, |batch| {
        let base = baselines(space);
        batch.iter().filter(|k| base.std.contains(k)).count()
    });
    bench_batches(&mut group, "fast_hashset", pool, |batch| {
        let base = baselines(space);
        batch.iter().filter(|k| base.fast.contains(k)).count()
    });
    let sorted = &fixture.sorted;
    bench_batches(&mut group, "sorted_vec", pool, |batch| {
        batch
            .iter()
            .filter(|k| sorted.binary_search(k).is_ok())
            .count()
    });
    bench_batches(&mut group, "sorted_radix", pool, |batch| {
        let radix = radix(space);
        batch.iter().filter(|&&k| radix.contains(k)).count()
    });
    group.finish();
}

/// Exact structures alone on member traffic: which exact table to put behind the filter.
fn exact_group(c: &mut Criterion, space: Space) {
    let fixture = fixture(space);
    let pool = &fixture.present;
    let table = exact_table(space);
    let view = table.view();
    let radix = radix(space);
    let mut group = c.benchmark_group(format!("exact_only/{}/present", space.name()));
    group.throughput(Throughput::Elements(batch_len() as u64));
    let mut out = vec![false; batch_len()];
    bench_batches(&mut group, "elias_fano_batch", pool, |batch| {
        let out = &mut out[..batch.len()];
        exact_batch(&view, batch, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "elias_fano_single", pool, |batch| {
        batch.iter().filter(|&&k| view.rank(k).is_some()).count()
    });
    let mut out = vec![false; batch_len()];
    bench_batches(&mut group, "sorted_radix_batch", pool, |batch| {
        let out = &mut out[..batch.len()];
        radix.contains_batch(batch, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "sorted_radix_single", pool, |batch| {
        batch.iter().filter(|&&k| radix.contains(k)).count()
    });
    group.finish();
}

fn keyed_group(c: &mut Criterion, traffic: &str) {
    let fixture = fixture(Space::Pl);
    let set = keyed_set();
    let pool = match traffic {
        "absent99" => &fixture.absent,
        _ => &fixture.present,
    };
    let numbers = as_numbers(pool);
    let mut group = c.benchmark_group(format!("keyed/{traffic}"));
    group.throughput(Throughput::Elements(batch_len() as u64));
    let mut out = vec![false; batch_len()];
    bench_batches(&mut group, "suppressd_batch", &numbers, |batch| {
        let out = &mut out[..batch.len()];
        set.contains_batch(batch, TODAY, out);
        out.iter().filter(|&&b| b).count()
    });
    bench_batches(&mut group, "suppressd_single", &numbers, |batch| {
        batch.iter().filter(|&&n| set.contains(n, TODAY)).count()
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Untimed modes

/// Bytes per key of every structure, at the configured size and at 1 M keys.
fn memory_report() {
    let count = key_count();
    let mut sizes = vec![count];
    if count != 1_000_000 {
        sizes.push(1_000_000);
    }
    for &n in &sizes {
        for space in [Space::Pl, Space::Us] {
            let sorted = distinct_numbers(space, n, SEED ^ space as u64);
            let set = build_set(&sorted, None);
            describe_set(&format!("{} {n}", space.name()), &set);
            if space == Space::Pl {
                let keyed = build_set(&sorted, Some(bench_key()));
                describe_set(&format!("keyed {n}"), &keyed);
            }
            let radix = RadixSorted::new(&sorted, radix_bits(n));
            let std: HashSet<u64> = sorted.iter().copied().collect();
            log(format!(
                "{} {n}: sorted Vec 8.00 B/key, sorted + 2^{} radix {:.2} B/key, std HashSet ~{:.2} B/key",
                space.name(),
                radix_bits(n),
                8.0 + radix.index_bytes() as f64 / n as f64,
                hash_set_bytes(std.capacity()) as f64 / n as f64
            ));
        }
    }
}

/// Builds a set of `SUPPRESSD_BENCH_BUILD_KEYS` (default 100 M) numbers the way `suppressd
/// build` does: push every number into a builder (duplicates included), then build.
fn build_report() {
    let count = env_usize("SUPPRESSD_BENCH_BUILD_KEYS", 100_000_000);
    let space = match std::env::var("SUPPRESSD_BENCH_BUILD_SPACE").as_deref() {
        Ok("pl") => Space::Pl,
        _ => Space::Us,
    };
    let keyed = std::env::var("SUPPRESSD_BENCH_BUILD_KEYED").is_ok_and(|v| v == "1");
    let key = keyed.then(bench_key);
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut builder = SetBuilder::new(spec("build"), key.clone()).expect("valid spec");
    builder.reserve(count);
    for _ in 0..count {
        let number = Number::from_u64_unchecked(space.draw(&mut rng));
        builder.push(number, None).expect("plain entry");
    }
    log(format!(
        "build: {count} {} numbers{} pushed; peak RSS so far {:.2} GB",
        space.name(),
        if keyed { " (keyed)" } else { "" },
        peak_rss() as f64 / 1e9
    ));
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let built = builder.build(threads()).expect("set builds");
    let elapsed = started.elapsed();
    log(format!(
        "build: {} distinct keys ({} duplicates) in {:.2} s wall, {:.1} CPU-s, on {} threads ({:.0} ns/key); snapshot {:.1} MB; peak RSS {:.2} GB",
        built.stats.keys,
        built.stats.duplicates,
        elapsed.as_secs_f64(),
        cpu_seconds() - cpu_before,
        threads(),
        elapsed.as_nanos() as f64 / count as f64,
        built.image.len() as f64 / 1e6,
        peak_rss() as f64 / 1e9
    ));
    let set = SuppressionSet::from_image(built.image, key.as_ref()).expect("set loads");
    describe_set("build", &set);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "build100m") {
        build_report();
        return;
    }
    if args.iter().any(|a| a == "memory") {
        memory_report();
        return;
    }
    log(format!(
        "start: load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    ));
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args();
    for space in [Space::Pl, Space::Us] {
        for traffic in ["absent99", "present"] {
            let name = format!("{}/{traffic}", space.name());
            if selected(&args, &name) {
                lookup_group(&mut c, space, traffic);
            }
        }
        if selected(&args, &format!("exact_only/{}/present", space.name())) {
            exact_group(&mut c, space);
        }
    }
    for traffic in ["absent99", "present"] {
        if selected(&args, &format!("keyed/{traffic}")) {
            keyed_group(&mut c, traffic);
        }
    }
    c.final_summary();
    log(format!(
        "end: load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    ));
}

/// Whether a group could match the command line filter (so its fixtures are worth building).
/// Criterion filters by substring (regular expression) of `group/function`.
fn selected(args: &[String], group: &str) -> bool {
    const FUNCTIONS: [&str; 19] = [
        "suppressd_batch",
        "suppressd_single",
        "classic_batch",
        "classic_single",
        "lines_batch",
        "lines_single",
        "raw_xorf_batch",
        "suppressd_filter",
        "raw_xorf_rolling",
        "raw_xorf_rolling32",
        "raw_xorf_single",
        "std_hashset",
        "fast_hashset",
        "sorted_vec",
        "sorted_radix",
        "elias_fano_batch",
        "elias_fano_single",
        "sorted_radix_batch",
        "sorted_radix_single",
    ];
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let space = group.split('/').next().unwrap_or(group);
    filters.is_empty()
        || filters.iter().any(|f| {
            // A regular expression over the space's groups, e.g. `us/.*/(suppressd|raw)`.
            (f.starts_with(&format!("{space}/")) && f.contains(".*"))
                || f.contains(group)
                || FUNCTIONS
                    .iter()
                    .any(|function| format!("{group}/{function}").contains(f.as_str()))
        })
}
