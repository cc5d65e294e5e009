//! The slot table: exact membership of plain numbers in two 64-byte lines per lookup, read in
//! parallel and compared in a few vector instructions, with no filter in front.
//!
//! A key's offset from the set's smallest key (`K` bits) is mixed by a bijection of the `K`-bit
//! space: a multiply by an odd constant modulo 2^K (Fibonacci hashing, which spreads runs and
//! strides of numbers evenly; a second multiply and a xor-shift cost single lookups 18 % and
//! bought nothing the spill and the builder's other seeds do not cover). The mixed value, read
//! as a fraction of 2^K, is multiplied by the line count: the integer part is the key's first line
//! and the top `R` bits of the fraction left over are its remainder `q`, where 2^R is the
//! smallest power of two at least 2^K / lines. Line and remainder together name exactly one
//! key. The key's second line is the first plus a hash of `q` (modulo the line count), as in
//! partial-key cuckoo hashing, so either line and `q` name the key's first line again.
//!
//! A line is 32 slots of 16 bits. A key is stored in one of its two lines as `q` (first line)
//! or `q | 1 << R` (second line); `R <= 14`, so `0xffff` never names a key and marks an empty
//! slot. A line's slots are sorted, empties last. A lookup compares both lines' 32 slots with
//! the two values at once (AVX2: four compares, one test). Keys placed by cuckoo insertion fill
//! about 94 % of the slots; a key no insertion could place goes to the spill, a sorted list
//! searched only when it is not empty (normally it is empty).
//!
//! Why this layout: a binary fuse filter reads three lines per key and the Elias-Fano table
//! behind it four more, dependent, with hundreds of instructions between them; a hash set
//! reads one or two lines but stores 8-12 bytes per key. This table reads two independent
//! lines and runs about 55 instructions per single lookup (fewer per key in a batch), at
//! about 2.1 bytes per number. It needs keys
//! below 2^51 in a span where remainders fit 14 bits at that fill (national lists); keyed
//! fingerprints, scattered sets and sets with per-entry expiry (the expiry column is in key
//! order; this table is not) keep the filter + Elias-Fano layout.
//!
//! Validation is total: every info field is checked, every slot decoded (sorted, in range,
//! each value one that a key can produce on that line, no key in both its lines), and the
//! spill checked against the lines, so no lookup reads outside its arrays and iteration and
//! lookup agree, whatever the bytes. This module never does I/O.

use crate::engine::prefetch::prefetch_read;

/// Words per line: one 64-byte cache line of 32 slots.
pub const LINE_WORDS: usize = 8;
pub const SLOTS: usize = 32;
/// Words of the info section: min, key bits, line count, remainder bits, seed, key count,
/// spill count, zero.
pub const INFO_WORDS: usize = 8;
/// Keys must be below this (every E.164 number is).
pub const KEY_LIMIT: u64 = 1 << 51;
/// Widest remainder: with the choice bit above it, a slot value stays below `EMPTY`.
pub const MAX_REMAINDER_BITS: u32 = 14;
const EMPTY: u16 = u16::MAX;
/// Most lines (line numbers are computed in 64 bits and kept in 32).
const MAX_LINES: u64 = 1 << 32;
/// Share of slots filled, in 1/1000 (cuckoo insertion with 32-slot lines stays fast well above).
const FILL_PER_MILLE: u64 = 940;
/// A build whose spill holds more than `keys / SPILL_SHARE` keys tries other multipliers, up
/// to `SEED_TRIES` in all.
const SPILL_SHARE: usize = 4096;
const SEED_TRIES: u64 = 4;
/// Evictions one insertion may make before its key goes to the spill.
const MAX_KICKS: usize = 2000;
/// Keys between computing a key's places (prefetching its lines) and comparing them, in a
/// batch: 24 ran at 0.6x this depth's speed, 48-96 alike (BENCHMARKS.md).
pub const AHEAD: usize = 64;
const RING: usize = 128;
/// Second-line keys whose first lines a load prefetches and checks together.
const CHECK_GROUP: usize = 32;
/// A slot value no line holds (values are below 2^15 or `EMPTY`).
const NO_SLOT: u16 = EMPTY - 1;

/// A slot table held in memory, ready to be written or viewed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotTable {
    pub info: Vec<u64>,
    pub lines: Vec<u64>,
    pub spill: Vec<u64>,
}

/// Why a key set is not served by a slot table (it keeps the filter + Elias-Fano layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unsuitable {
    Empty,
    KeyTooLarge,
    /// Remainders would not fit 14 bits at the table's fill: the keys are too scattered.
    TooSparse,
}

/// The shape of a table: everything a lookup computes from besides the lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    min: u64,
    key_bits: u32,
    line_count: u64,
    remainder_bits: u32,
    seed: u64,
}

/// The remainder width for `line_count` lines over a `key_bits` space: the smallest `R` with
/// `2^R * lines >= 2^K` (then two keys of one line never share a remainder).
fn remainder_width(key_bits: u32, line_count: u64) -> u32 {
    key_bits.saturating_sub(line_count.ilog2())
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The inverse of an odd number modulo 2^64 (Newton's iteration doubles the correct bits).
fn inverse(odd: u64) -> u64 {
    let mut inv = odd;
    for _ in 0..6 {
        inv = inv.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inv)));
    }
    inv
}

/// Everything a lookup needs, derived once from the info section.
#[derive(Clone, Copy, Debug)]
struct Mixer {
    min: u64,
    mask: u64,
    first: u64,
    first_inverse: u64,
    fraction_shift: u32,
    line_count: u64,
    remainder_bits: u32,
    remainder_shift: u32,
    /// 2^K modulo the line count (for [`Mixer::reachable`]).
    key_space_mod_lines: u64,
}

/// Where a key may be: its two lines and the slot value it has in each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Places {
    first: usize,
    second: usize,
    q: u16,
    q_second: u16,
}

impl Mixer {
    fn new(shape: Shape) -> Mixer {
        let first = splitmix(shape.seed) | 1;
        Mixer {
            min: shape.min,
            mask: (1u64 << shape.key_bits) - 1,
            first,
            first_inverse: inverse(first),
            fraction_shift: 64 - shape.key_bits,
            line_count: shape.line_count,
            remainder_bits: shape.remainder_bits,
            remainder_shift: 64 - shape.remainder_bits,
            key_space_mod_lines: ((1u128 << shape.key_bits) % u128::from(shape.line_count)) as u64,
        }
    }

    /// A key's places, or `None` for keys outside the set's span.
    #[inline(always)]
    fn places(&self, key: u64) -> Option<Places> {
        let offset = key.wrapping_sub(self.min);
        if offset > self.mask {
            return None;
        }
        let (first, q) = self.place_offset(offset);
        Some(Places {
            first,
            second: self.alternate(first, q),
            q: q as u16,
            q_second: (q | 1 << self.remainder_bits) as u16,
        })
    }

    #[inline(always)]
    fn place_offset(&self, offset: u64) -> (usize, u64) {
        // Multiplying the offset shifted to the top of the word by an odd number is the
        // product modulo 2^K, shifted: no mask needed.
        let fraction = (offset << self.fraction_shift).wrapping_mul(self.first);
        let product = u128::from(fraction) * u128::from(self.line_count);
        (
            (product >> 64) as usize,
            (product as u64) >> self.remainder_shift,
        )
    }

    /// How far a remainder's second line lies after its first (modulo the line count).
    #[inline(always)]
    fn step(&self, q: u64) -> u64 {
        let spread = (q + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((u128::from(spread) * u128::from(self.line_count)) >> 64) as u64
    }

    #[inline(always)]
    fn alternate(&self, first: usize, q: u64) -> usize {
        let second = first as u64 + self.step(q);
        (if second >= self.line_count {
            second - self.line_count
        } else {
            second
        }) as usize
    }

    fn original(&self, second: usize, q: u64) -> usize {
        let step = self.step(q);
        let second = second as u64;
        (if second >= step {
            second - step
        } else {
            second + self.line_count - step
        }) as usize
    }

    /// The key whose first line is `line` with remainder `q`, if some key has that place.
    fn key_at(&self, line: usize, q: u64) -> Option<u64> {
        let key_bits = 64 - self.fraction_shift;
        // The mixed value x satisfies x * lines in [line * 2^K + q * 2^(K-R), + 2^(K-R)); that
        // interval is at most `lines` long, so the smallest such x is the only candidate.
        let low = (u128::from(line as u64) << key_bits)
            + (u128::from(q) << (key_bits - self.remainder_bits));
        let x = low.div_ceil(u128::from(self.line_count));
        if x > u128::from(self.mask) {
            return None;
        }
        let offset = (x as u64).wrapping_mul(self.first_inverse) & self.mask;
        (self.place_offset(offset) == (line, q)).then(|| self.min + offset)
    }

    /// The first line and remainder of the key a slot value names on `line`, if any key has
    /// them. Division-free but one `%` per value, so a load validates 50 M slots in well under
    /// a second; [`Mixer::key_at`] agrees (unit test).
    fn first_place(&self, line: usize, value: u16) -> Option<(usize, u64)> {
        let value = u64::from(value);
        if value >> (self.remainder_bits + 1) != 0 {
            return None;
        }
        let q = value & ((1 << self.remainder_bits) - 1);
        let first = if value >> self.remainder_bits == 0 {
            line
        } else {
            // A second-line value: its first line must differ (else it is stored as first).
            let first = self.original(line, q);
            if first == line {
                return None;
            }
            first
        };
        self.reachable(first, q).then_some((first, q))
    }

    /// Whether some mixed value x < 2^K has x * lines in [first * 2^K + q * U, + U), U =
    /// 2^(K-R): the next multiple of the line count after the interval's start lies inside.
    fn reachable(&self, first: usize, q: u64) -> bool {
        let key_bits = 64 - self.fraction_shift;
        let unit_shift = key_bits - self.remainder_bits;
        let lines = self.line_count;
        let start = (u128::from(first as u64) << key_bits) + u128::from(q << unit_shift);
        // start mod lines, from first * (2^K mod lines) (< 2^64: lines <= 2^32).
        let first_part = (first as u64 * self.key_space_mod_lines) % lines;
        let start_mod = (first_part + (q << unit_shift) % lines) % lines;
        let gap = (lines - start_mod) % lines;
        gap < 1 << unit_shift && start + u128::from(gap) < u128::from(lines) << key_bits
    }

    /// The key a slot value names on `line`, if any.
    fn key_of_slot(&self, line: usize, value: u16) -> Option<u64> {
        let (first, q) = self.first_place(line, value)?;
        self.key_at(first, q)
    }
}

/// The 32 slots of a line.
#[inline(always)]
fn slots(line: &[u64; LINE_WORDS]) -> [u16; SLOTS] {
    bytemuck::cast(*line)
}

/// Whether `first` holds `q` or `second` holds `q_second` (each line's 32 slots at once).
#[inline(always)]
fn either_holds(first: &[u64; LINE_WORDS], second: &[u64; LINE_WORDS], places: Places) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        use core::arch::x86_64::*;
        // SAFETY: AVX2 is enabled for this build (the crate's x86-64-v3 target); each load reads
        // 32 bytes inside a 64-byte line array (unaligned loads allowed).
        unsafe {
            let a0 = _mm256_loadu_si256(first.as_ptr().cast());
            let a1 = _mm256_loadu_si256(first.as_ptr().add(4).cast());
            let b0 = _mm256_loadu_si256(second.as_ptr().cast());
            let b1 = _mm256_loadu_si256(second.as_ptr().add(4).cast());
            let want_a = _mm256_set1_epi16(places.q as i16);
            let want_b = _mm256_set1_epi16(places.q_second as i16);
            let hits_a = _mm256_or_si256(
                _mm256_cmpeq_epi16(a0, want_a),
                _mm256_cmpeq_epi16(a1, want_a),
            );
            let hits_b = _mm256_or_si256(
                _mm256_cmpeq_epi16(b0, want_b),
                _mm256_cmpeq_epi16(b1, want_b),
            );
            let hits = _mm256_or_si256(hits_a, hits_b);
            _mm256_testz_si256(hits, hits) == 0
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    {
        line_holds(first, places.q) || line_holds(second, places.q_second)
    }
}

/// Whether a line holds `value` (four 16-bit lanes a word, a zero lane after the xor).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "avx2"), allow(dead_code))]
#[inline(always)]
fn line_holds(line: &[u64; LINE_WORDS], value: u16) -> bool {
    const ONES: u64 = 0x0001_0001_0001_0001;
    const HIGHS: u64 = 0x8000_8000_8000_8000;
    let pattern = u64::from(value) * ONES;
    line.iter().any(|&word| {
        let x = word ^ pattern;
        x.wrapping_sub(ONES) & !x & HIGHS != 0
    })
}

fn line_at(lines: &[u64], line: usize) -> &[u64; LINE_WORDS] {
    (&lines[line * LINE_WORDS..][..LINE_WORDS])
        .try_into()
        .expect("a line is LINE_WORDS words")
}

/// A small deterministic generator for eviction choices (builds must be reproducible).
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

impl SlotTable {
    /// Builds the table for sorted, distinct keys below [`KEY_LIMIT`].
    pub fn build(sorted_keys: &[u64]) -> Result<SlotTable, Unsuitable> {
        let (Some(&min), Some(&max)) = (sorted_keys.first(), sorted_keys.last()) else {
            return Err(Unsuitable::Empty);
        };
        if max >= KEY_LIMIT {
            return Err(Unsuitable::KeyTooLarge);
        }
        let key_bits = (64 - (max - min).leading_zeros()).max(1);
        let slots_needed = (sorted_keys.len() as u64 * 1000).div_ceil(FILL_PER_MILLE);
        let line_count = slots_needed.div_ceil(SLOTS as u64).clamp(1, MAX_LINES);
        let remainder_bits = remainder_width(key_bits, line_count);
        if remainder_bits > MAX_REMAINDER_BITS {
            return Err(Unsuitable::TooSparse);
        }
        // A set whose keys the first multiplier happens to crowd onto some lines (a spill of
        // more than a few keys) is built again with other multipliers; the smallest spill wins.
        let mut best: Option<SlotTable> = None;
        for seed in 0..SEED_TRIES {
            let shape = Shape {
                min,
                key_bits,
                line_count,
                remainder_bits,
                seed,
            };
            let table = SlotTable::build_shaped(sorted_keys, shape);
            let spilled = table.spill.len();
            if best.as_ref().is_none_or(|b| spilled < b.spill.len()) {
                best = Some(table);
            }
            if spilled <= sorted_keys.len() / SPILL_SHARE {
                break;
            }
        }
        Ok(best.expect("at least one seed tried"))
    }

    fn build_shaped(keys: &[u64], shape: Shape) -> SlotTable {
        let mixer = Mixer::new(shape);
        let line_count = shape.line_count as usize;
        // Slot contents during the build: the key itself (its places are recomputed on
        // eviction), `u64::MAX` when empty.
        let mut held = vec![u64::MAX; line_count * SLOTS];
        let mut counts = vec![0u8; line_count];
        let mut spill = Vec::new();
        let mut random = Xorshift(0x2545_f491_4f6c_dd1d ^ shape.seed);
        let full = SLOTS as u8;
        for &key in keys {
            let places = mixer.places(key).expect("keys lie in their own span");
            let (a, b) = (places.first, places.second);
            // The less loaded line: lines fill evenly, so evictions stay rare.
            let target = if counts[a] < full && counts[a] <= counts[b] {
                Some(a)
            } else if counts[b] < full {
                Some(b)
            } else {
                None
            };
            if let Some(line) = target {
                held[line * SLOTS + usize::from(counts[line])] = key;
                counts[line] += 1;
                continue;
            }
            // Both lines full: evict a random key of one and move it to its other line, and
            // so on, until a line has room.
            let mut moving = key;
            let mut line = if random.next() & 1 == 0 { a } else { b };
            let mut placed = false;
            for _ in 0..MAX_KICKS {
                let victim = line * SLOTS + (random.next() % SLOTS as u64) as usize;
                std::mem::swap(&mut held[victim], &mut moving);
                let places = mixer.places(moving).expect("held keys lie in the span");
                line = if places.first == line {
                    places.second
                } else {
                    places.first
                };
                if counts[line] < full {
                    held[line * SLOTS + usize::from(counts[line])] = moving;
                    counts[line] += 1;
                    placed = true;
                    break;
                }
            }
            if !placed {
                spill.push(moving);
            }
        }
        spill.sort_unstable();
        let mut lines = vec![0u64; line_count * LINE_WORDS];
        for line in 0..line_count {
            let mut values = [EMPTY; SLOTS];
            for (value, &key) in values.iter_mut().zip(&held[line * SLOTS..][..SLOTS]) {
                if key != u64::MAX {
                    let places = mixer.places(key).expect("held keys lie in the span");
                    *value = if places.first == line {
                        places.q
                    } else {
                        places.q_second
                    };
                }
            }
            values.sort_unstable();
            let words: [u64; LINE_WORDS] = bytemuck::cast(values);
            lines[line * LINE_WORDS..][..LINE_WORDS].copy_from_slice(&words);
        }
        let info = vec![
            shape.min,
            u64::from(shape.key_bits),
            shape.line_count,
            u64::from(shape.remainder_bits),
            shape.seed,
            keys.len() as u64,
            spill.len() as u64,
            0,
        ];
        SlotTable { info, lines, spill }
    }

    pub fn view(&self) -> SlotView<'_> {
        SlotView::new(&self.info, &self.lines, &self.spill).expect("a built slot table is valid")
    }

    /// Bytes of the table's three parts.
    pub fn bytes(&self) -> usize {
        8 * (self.info.len() + self.lines.len() + self.spill.len())
    }
}

/// A validated slot table over borrowed words (a snapshot's sections or a built table).
#[derive(Clone, Debug)]
pub struct SlotView<'a> {
    lines: &'a [u64],
    spill: &'a [u64],
    mixer: Mixer,
    key_count: u64,
}

impl<'a> SlotView<'a> {
    /// Validates every field and slot (see the module docs); the error names what is wrong.
    pub fn new(info: &'a [u64], lines: &'a [u64], spill: &'a [u64]) -> Result<Self, String> {
        let shape = Self::shape(info)?;
        let line_count = shape.line_count as usize;
        if lines.len() != line_count * LINE_WORDS {
            return Err(format!(
                "{} line words where {line_count} lines need {}",
                lines.len(),
                line_count * LINE_WORDS
            ));
        }
        let mixer = Mixer::new(shape);
        let view = SlotView {
            lines,
            spill: &[],
            mixer,
            key_count: info[5],
        };
        let mut stored = 0u64;
        // A key stored in both its lines would be counted and listed twice. Checked from the
        // second-line side, in groups whose first lines are prefetched together.
        let mut pending: Vec<(usize, u16, usize)> = Vec::with_capacity(CHECK_GROUP);
        let check_group = |pending: &mut Vec<(usize, u16, usize)>| {
            let found = pending
                .iter()
                .find(|&&(first, q, _)| slots(line_at(lines, first)).contains(&q));
            let result = match found {
                Some(&(_, _, line_no)) => Err(format!("line {line_no}: a key in both its lines")),
                None => Ok(()),
            };
            pending.clear();
            result
        };
        for line_no in 0..line_count {
            let values = slots(line_at(lines, line_no));
            let filled = values.iter().take_while(|&&v| v != EMPTY).count();
            if values[..filled].windows(2).any(|pair| pair[0] >= pair[1])
                || values[filled..].iter().any(|&v| v != EMPTY)
            {
                return Err(format!(
                    "line {line_no}: slots not sorted with empties last"
                ));
            }
            for &value in &values[..filled] {
                let Some((first, q)) = mixer.first_place(line_no, value) else {
                    return Err(format!("line {line_no}: slot value {value} names no key"));
                };
                if first != line_no {
                    prefetch_read(lines.as_ptr().wrapping_add(first * LINE_WORDS));
                    pending.push((first, q as u16, line_no));
                    if pending.len() == CHECK_GROUP {
                        check_group(&mut pending)?;
                    }
                }
            }
            stored += filled as u64;
        }
        check_group(&mut pending)?;
        for (i, &key) in spill.iter().enumerate() {
            if i > 0 && spill[i - 1] >= key {
                return Err(format!("spill key {i} not increasing"));
            }
            if key.wrapping_sub(shape.min) > mixer.mask || view.lines_hold(key) {
                return Err(format!(
                    "spill key {i} is outside the span or also in a line"
                ));
            }
        }
        if stored + spill.len() as u64 != info[5] || info[6] != spill.len() as u64 {
            return Err("key or spill count differs from the lines".into());
        }
        Ok(SlotView { spill, ..view })
    }

    fn shape(info: &[u64]) -> Result<Shape, String> {
        if info.len() != INFO_WORDS {
            return Err(format!("info holds {} words, not {INFO_WORDS}", info.len()));
        }
        let [
            min,
            key_bits,
            line_count,
            remainder_bits,
            seed,
            _,
            _,
            reserved,
        ] = info.try_into().expect("length checked");
        if !(1..=51).contains(&key_bits) || min >= KEY_LIMIT || reserved != 0 {
            return Err(format!("key span of {key_bits} bits from {min}"));
        }
        if !(1..=MAX_LINES).contains(&line_count) {
            return Err(format!("{line_count} lines"));
        }
        let key_bits = key_bits as u32;
        let expected = remainder_width(key_bits, line_count);
        if u64::from(expected) != remainder_bits || expected > MAX_REMAINDER_BITS {
            return Err(format!(
                "remainder width {remainder_bits} does not fit the lines"
            ));
        }
        Ok(Shape {
            min,
            key_bits,
            line_count,
            remainder_bits: expected,
            seed,
        })
    }

    pub fn key_count(&self) -> u64 {
        self.key_count
    }

    pub fn line_count(&self) -> usize {
        self.mixer.line_count as usize
    }

    /// Bytes of the info, lines and spill.
    pub fn bytes(&self) -> usize {
        8 * (INFO_WORDS + self.lines.len() + self.spill.len())
    }

    fn lines_hold(&self, key: u64) -> bool {
        self.mixer
            .places(key)
            .is_some_and(|places| self.probe(places))
    }

    /// Whether `key` is in the table.
    #[inline]
    pub fn contains(&self, key: u64) -> bool {
        match self.mixer.places(key) {
            None => false,
            Some(places) => self.probe(places) || self.in_spill(key),
        }
    }

    #[inline(always)]
    fn probe(&self, places: Places) -> bool {
        either_holds(self.line(places.first), self.line(places.second), places)
    }

    /// Line `line`, which [`Mixer::places`] computed: always below the line count (a fraction
    /// below one times the count, then a sum reduced modulo the count), so the bounds checks of
    /// plain indexing, a tenth of a lookup's instructions, are left out.
    #[inline(always)]
    fn line(&self, line: usize) -> &[u64; LINE_WORDS] {
        debug_assert!(line < self.line_count());
        // SAFETY: `line < line_count` as above, and `lines` holds `line_count * LINE_WORDS`
        // words (checked in `new`), so the eight words read lie inside the slice.
        unsafe {
            &*self
                .lines
                .as_ptr()
                .add(line * LINE_WORDS)
                .cast::<[u64; LINE_WORDS]>()
        }
    }

    #[inline(always)]
    fn in_spill(&self, key: u64) -> bool {
        !self.spill.is_empty() && self.spill.binary_search(&key).is_ok()
    }

    /// Answers for a batch: a rolling pipeline computes key `i + AHEAD`'s places and prefetches
    /// both its lines just before comparing key `i`'s. Calls `found(i)` for every key present.
    ///
    /// Reading the first line before fetching the second (a key needs its second line only
    /// when its first is full) saved no time: the extra stage cost more than the lines it
    /// spared (BENCHMARKS.md, issue 18).
    #[inline]
    pub fn find_batch(&self, keys: &[u64], mut found: impl FnMut(usize)) {
        let mut ring = [Places::default(); RING];
        let count = keys.len();
        for t in 0..count + AHEAD {
            if t < count {
                ring[t % RING] = self.start(keys[t]);
            }
            if let Some(i) = t.checked_sub(AHEAD).filter(|&i| i < count)
                && (self.probe(ring[i % RING]) || self.in_spill(keys[i]))
            {
                found(i);
            }
        }
    }

    /// A key's places with both lines prefetched; a key outside the span gets values no slot
    /// holds (so the compare needs no branch).
    #[inline(always)]
    fn start(&self, key: u64) -> Places {
        match self.mixer.places(key) {
            None => Places {
                first: 0,
                second: 0,
                q: NO_SLOT,
                q_second: NO_SLOT,
            },
            Some(places) => {
                prefetch_read(self.lines.as_ptr().wrapping_add(places.first * LINE_WORDS));
                prefetch_read(self.lines.as_ptr().wrapping_add(places.second * LINE_WORDS));
                places
            }
        }
    }

    /// Every key, in increasing order (for rebuilds; holds them all in memory while sorting).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let mut keys = Vec::with_capacity(self.key_count as usize);
        for line_no in 0..self.line_count() {
            let values = slots(line_at(self.lines, line_no));
            keys.extend(values.iter().take_while(|&&v| v != EMPTY).map(|&v| {
                self.mixer
                    .key_of_slot(line_no, v)
                    .expect("validated at load")
            }));
        }
        keys.extend_from_slice(self.spill);
        keys.sort_unstable();
        keys.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn check(keys: &BTreeSet<u64>, probes: &[u64]) {
        let sorted: Vec<u64> = keys.iter().copied().collect();
        let table = match SlotTable::build(&sorted) {
            Err(Unsuitable::Empty) => return assert!(sorted.is_empty()),
            Err(Unsuitable::TooSparse) => return,
            Err(other) => panic!("{other:?} for {} keys", sorted.len()),
            Ok(table) => table,
        };
        let view = table.view();
        assert_eq!(view.key_count(), sorted.len() as u64);
        assert_eq!(view.iter().collect::<Vec<_>>(), sorted);
        let mut all: Vec<u64> = probes.to_vec();
        all.extend(&sorted);
        all.extend(sorted.iter().map(|k| k + 1));
        all.extend(sorted.iter().map(|k| k.wrapping_sub(1)));
        all.extend([0, u64::MAX, KEY_LIMIT, KEY_LIMIT - 1]);
        let mut batch = vec![false; all.len()];
        view.find_batch(&all, |i| batch[i] = true);
        for (i, &key) in all.iter().enumerate() {
            assert_eq!(view.contains(key), keys.contains(&key), "key {key}");
            assert_eq!(batch[i], keys.contains(&key), "batch key {key}");
        }
    }

    #[test]
    fn single_small_and_national() {
        check(&BTreeSet::from([5]), &[4, 6]);
        check(
            &BTreeSet::from([48_500_000_000, 48_500_000_001]),
            &[48_499_999_999],
        );
        let dense: BTreeSet<u64> = (0..200_000u64).map(|i| 48_100_000_000 + i * 7).collect();
        check(&dense, &[48_100_000_003]);
        let us: BTreeSet<u64> = (0..100_000u64)
            .map(|i| 12_000_000_000 + (i * 2_654_435_761) % 8_000_000_000)
            .collect();
        check(&us, &[12_000_000_001]);
    }

    #[test]
    fn the_vector_compare_answers_like_the_word_compare() {
        let table = SlotTable::build(&(0..5000u64).map(|i| i * 13).collect::<Vec<_>>()).unwrap();
        let view = table.view();
        for key in 0..70_000u64 {
            let places = view.mixer.places(key).unwrap_or_default();
            let (a, b) = (
                line_at(view.lines, places.first),
                line_at(view.lines, places.second),
            );
            assert_eq!(
                either_holds(a, b, places),
                line_holds(a, places.q) || line_holds(b, places.q_second)
            );
        }
    }

    /// Runs, strides and clusters of numbers (an exchange's whole block, every tenth number,
    /// power-of-two steps, a few exchanges of one area code) spread over the lines like random keys: the
    /// spill stays within the builder's bound and every key answers.
    #[test]
    fn structured_number_sets_spread_evenly() {
        let run: Vec<u64> = (0..300_000u64).map(|i| 48_600_000_000 + i).collect();
        let tenth: Vec<u64> = (0..200_000u64).map(|i| 12_125_550_000 + i * 10).collect();
        let powers: Vec<u64> = (0..200_000u64).map(|i| 12_000_000_000 + (i << 3)).collect();
        // Seven exchanges of one area code, each a run of numbers.
        let clusters: Vec<u64> = (0..70_000u64)
            .map(|i| 12_010_000_000 + (200 + i % 7 * 97) * 10_000 + i / 7)
            .collect();
        for mut keys in [run, tenth, powers, clusters] {
            keys.sort_unstable();
            keys.dedup();
            let table = SlotTable::build(&keys).unwrap();
            assert!(
                table.spill.len() <= keys.len() / SPILL_SHARE,
                "{}",
                table.spill.len()
            );
            let view = table.view();
            let mut found = 0;
            view.find_batch(&keys, |_| found += 1);
            assert_eq!(found, keys.len());
            for &key in keys.iter().step_by(101) {
                assert!(view.contains(key));
                let next_is_member = keys.binary_search(&(key + 1)).is_ok();
                assert_eq!(view.contains(key + 1), next_is_member);
            }
        }
    }

    /// A table too small for its keys spills the rest; they still answer, single and batched,
    /// and a damaged spill is refused.
    #[test]
    fn keys_with_no_room_spill_and_still_answer() {
        let keys: Vec<u64> = (0..80u64).map(|i| 5_000 + i * 97).collect();
        let key_bits = 64 - (keys[79] - keys[0]).leading_zeros();
        let shape = Shape {
            min: keys[0],
            key_bits,
            line_count: 2,
            remainder_bits: remainder_width(key_bits, 2),
            seed: 1,
        };
        let table = SlotTable::build_shaped(&keys, shape);
        assert_eq!(table.spill.len(), 80 - 2 * SLOTS);
        let view = SlotView::new(&table.info, &table.lines, &table.spill).unwrap();
        assert_eq!(view.iter().collect::<Vec<_>>(), keys);
        let probes: Vec<u64> = (4_990..13_000).collect();
        let mut batch = vec![false; probes.len()];
        view.find_batch(&probes, |i| batch[i] = true);
        for (i, key) in probes.iter().enumerate() {
            let member = keys.binary_search(key).is_ok();
            assert_eq!(view.contains(*key), member, "key {key}");
            assert_eq!(batch[i], member, "batch key {key}");
        }
        let refused = |spill: &[u64], count: u64| {
            let mut info = table.info.clone();
            info[6] = count;
            SlotView::new(&info, &table.lines, spill).expect_err("damaged spill accepted")
        };
        let spill = &table.spill;
        let mut swapped = spill.clone();
        swapped.swap(0, 1);
        assert!(refused(&swapped, 16).contains("not increasing"));
        let stored = view.iter().find(|k| !spill.contains(k)).unwrap();
        let mut doubled = spill.clone();
        doubled[0] = stored;
        doubled.sort_unstable();
        assert!(refused(&doubled, 16).contains("also in a line"));
        assert!(refused(&spill[1..], 15).contains("count"));
        let mut outside = spill.clone();
        outside.push(u64::MAX - 1);
        assert!(refused(&outside, 17).contains("outside the span"));
    }

    fn refused(info: &[u64], lines: &[u64], spill: &[u64]) -> String {
        SlotView::new(info, lines, spill).expect_err("damaged table accepted")
    }

    #[test]
    fn damaged_tables_are_refused() {
        let keys: Vec<u64> = (0..20_000u64).map(|i| 1_000_000 + i * 31).collect();
        let table = SlotTable::build(&keys).unwrap();
        let SlotTable { info, lines, spill } = &table;
        let with = |words: &[u64], at: usize, value: u64| {
            let mut words = words.to_vec();
            words[at] = value;
            words
        };
        assert!(refused(&info[..7], lines, spill).contains("info"));
        assert!(refused(&with(info, 1, 52), lines, spill).contains("span"));
        assert!(refused(&with(info, 7, 1), lines, spill).contains("span"));
        assert!(refused(&with(info, 2, info[2] + 1), lines, spill).contains("line words"));
        assert!(refused(&with(info, 3, info[3] + 1), lines, spill).contains("remainder width"));
        assert!(refused(&with(info, 5, info[5] + 1), lines, spill).contains("count"));
        assert!(refused(info, &lines[8..], spill).contains("line words"));
        // Slots out of order; a value above every remainder; a key in both its lines.
        let slots_of = |line: usize| slots(line_at(lines, line));
        let full = (0..table.view().line_count())
            .find(|&l| slots_of(l)[1] != EMPTY)
            .unwrap();
        let mut values = slots_of(full);
        values.swap(0, 1);
        let swapped = with(
            lines,
            full * LINE_WORDS,
            bytemuck::cast::<_, [u64; 8]>(values)[0],
        );
        assert!(refused(info, &swapped, spill).contains("sorted"));
        let mut values = slots_of(full);
        let last = values.iter().rposition(|&v| v != EMPTY).unwrap();
        values[last] = 0x7ffe;
        let words: [u64; 8] = bytemuck::cast(values);
        let mut high = lines.clone();
        high[full * LINE_WORDS..][..LINE_WORDS].copy_from_slice(&words);
        assert!(refused(info, &high, spill).contains("names no key"));
        // Copy a first-line key into a free slot of its second line, keeping the order.
        let view = table.view();
        let mixer = view.mixer;
        let twice = (0..view.line_count()).find_map(|line| {
            slots_of(line)
                .iter()
                .take_while(|&&v| v != EMPTY)
                .find_map(|&v| {
                    let (first, q) = mixer.first_place(line, v)?;
                    let second = mixer.alternate(first, q);
                    (first == line && second != line && slots_of(second)[SLOTS - 1] == EMPTY)
                        .then_some((second, (q | 1 << mixer.remainder_bits) as u16))
                })
        });
        let (second, value) = twice.expect("some key has room in its second line");
        let mut values = slots_of(second);
        values[SLOTS - 1] = value;
        values.sort_unstable();
        let words: [u64; 8] = bytemuck::cast(values);
        let mut doubled = lines.clone();
        doubled[second * LINE_WORDS..][..LINE_WORDS].copy_from_slice(&words);
        let mut counted = info.clone();
        counted[5] += 1;
        assert!(refused(&counted, &doubled, spill).contains("both its lines"));
    }

    /// The load's division-free test agrees with decoding the key, on shapes whose line count
    /// divides the key space and on shapes where it does not.
    #[test]
    fn reachable_places_are_exactly_the_decodable_ones() {
        for (key_bits, line_count) in [(12, 3), (12, 64), (16, 1000), (20, 4097), (9, 1)] {
            let shape = Shape {
                min: 100,
                key_bits,
                line_count,
                remainder_bits: remainder_width(key_bits, line_count),
                seed: 3,
            };
            let mixer = Mixer::new(shape);
            for line in (0..line_count as usize).step_by(1 + line_count as usize / 200) {
                for q in 0..1u64 << shape.remainder_bits {
                    assert_eq!(
                        mixer.reachable(line, q),
                        mixer.key_at(line, q).is_some(),
                        "{shape:?} line {line} q {q}"
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn answers_like_a_set_model(
            keys in proptest::collection::btree_set(0u64..1 << 24, 0..3000),
            probes in proptest::collection::vec(0u64..1 << 24, 0..200),
        ) {
            check(&keys, &probes);
        }

        #[test]
        fn answers_like_a_set_model_dense(
            base in 0u64..KEY_LIMIT / 2,
            offsets in proptest::collection::btree_set(0u64..200_000, 1..5000),
            probes in proptest::collection::vec(0u64..200_000, 0..200),
        ) {
            let keys: BTreeSet<u64> = offsets.iter().map(|o| base + o).collect();
            let probes: Vec<u64> = probes.iter().map(|o| base + o).collect();
            check(&keys, &probes);
        }
    }
}
