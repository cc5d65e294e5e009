//! Bit-level primitives of the exact table: reading packed fields, counting and selecting set
//! bits in word arrays, and counting 16-bit lanes below a bound. Pure functions over slices;
//! callers guarantee (by validation) that every position they pass lies inside the slice.

/// The low `bits` bits set (all 64 for `bits >= 64`).
#[inline(always)]
pub(crate) fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// How many of the sixteen 16-bit lanes of `words` (four words) are below `high`
/// (1..=65535), branch-free: for two lanes at a time, each in a 32-bit slot, `0xffff + high -
/// lane` has bit 16 set exactly when `lane < high`, and no slot borrows from its neighbour. A
/// lane-by-lane loop cost ~130 instructions per lookup (callgrind, BENCHMARKS.md issue 18).
#[inline(always)]
pub(crate) fn lanes_below(words: &[u64], high: u64) -> u64 {
    const EVEN: u64 = 0x0000_ffff_0000_ffff;
    const BIT16: u64 = 0x0001_0000_0001_0000;
    debug_assert!((1..=0xffff).contains(&high));
    let bound = (0xffff + high) * 0x0000_0001_0000_0001;
    let mut sum = 0u64;
    for &word in words {
        sum += (bound - (word & EVEN)) & BIT16;
        sum += (bound - ((word >> 16) & EVEN)) & BIT16;
    }
    ((sum >> 16) & 0xffff) + (sum >> 48)
}

/// Position of the last one in bit range `[start, end)`, which holds at least one.
pub(crate) fn last_one_before(words: &[u64], start: u64, end: u64) -> u64 {
    let mut position = end;
    while position > start {
        position -= 1;
        if bit(words, position) {
            return position;
        }
    }
    start
}

#[inline(always)]
pub(crate) fn bit(words: &[u64], position: u64) -> bool {
    words[(position / 64) as usize] >> (position % 64) & 1 == 1
}

#[inline(always)]
pub(crate) fn read_bits(words: &[u64], position: u64, width: u32) -> u64 {
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

pub(crate) fn count_ones(words: &[u64], start: u64, end: u64) -> u64 {
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
pub(crate) fn select_zero(words: &[u64], start: u64, count: u64) -> u64 {
    select_in(words, start, count - 1, |w| !w)
}

/// Position of the one of rank `rank` (0-based) at or after `start`; the caller knows it exists.
pub(crate) fn select_one(words: &[u64], start: u64, rank: u64) -> u64 {
    select_in(words, start, rank, |w| w)
}

/// Position of the set bit of rank `rank` (0-based) at or after `start` in `flip(word)`.
#[inline(always)]
pub(crate) fn select_in(words: &[u64], start: u64, rank: u64, flip: impl Fn(u64) -> u64) -> u64 {
    let mut remaining = rank;
    let mut index = (start / 64) as usize;
    let mut bits = flip(words[index]) & (u64::MAX << (start % 64));
    loop {
        let here = u64::from(bits.count_ones());
        if here > remaining {
            return index as u64 * 64 + u64::from(select_in_word(bits, remaining as u32));
        }
        remaining -= here;
        index += 1;
        bits = flip(words[index]);
    }
}

/// Index of the `rank`-th (0-based) set bit of `word`, which has more than `rank` set bits.
///
/// Broadword and branch-free (Vigna, "Broadword implementation of rank/select queries"): byte
/// popcounts summed by one multiplication locate the byte, a 2 KiB table the bit within it. No
/// POPCNT or PDEP needed (PDEP is microcoded and slow on AMD before Zen 3).
#[inline(always)]
pub(crate) fn select_in_word(word: u64, rank: u32) -> u32 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    debug_assert!(word.count_ones() > rank, "word holds the bit");
    let mut bytes = word - ((word >> 1) & 0x5555_5555_5555_5555);
    bytes = (bytes & 0x3333_3333_3333_3333) + ((bytes >> 2) & 0x3333_3333_3333_3333);
    bytes = (bytes + (bytes >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // Byte i holds the number of set bits in bytes 0..=i.
    let cumulative = bytes.wrapping_mul(ONES);
    // High bit of byte i set when all of bytes 0..=i come before the wanted bit.
    let before = ((u64::from(rank) * ONES) | HIGHS).wrapping_sub(cumulative) & HIGHS;
    let place = (((before >> 7).wrapping_mul(ONES) >> 56) * 8) as u32;
    let rank_in_byte = rank - (((cumulative << 8) >> place) & 0xff) as u32;
    let byte = ((word >> place) & 0xff) as usize;
    place + u32::from(SELECT_IN_BYTE[byte * 8 + rank_in_byte as usize])
}

/// `SELECT_IN_BYTE[b * 8 + r]`: index of the `r`-th set bit of byte `b` (8 when absent).
static SELECT_IN_BYTE: [u8; 256 * 8] = {
    let mut table = [8u8; 256 * 8];
    let mut byte = 0;
    while byte < 256 {
        let mut rank = 0;
        let mut bit = 0;
        while bit < 8 {
            if byte >> bit & 1 == 1 {
                table[byte * 8 + rank] = bit as u8;
                rank += 1;
            }
            bit += 1;
        }
        byte += 1;
    }
    table
};

/// Length of the run of ones starting at `start`; chunks end with a zero, so it stays inside.
#[inline]
pub(crate) fn ones_run(words: &[u64], start: u64) -> u64 {
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

    #[test]
    fn lanes_below_matches_a_lane_by_lane_count() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            state
        };
        for round in 0..20_000 {
            let words: Vec<u64> = (0..4)
                .map(|_| match round % 3 {
                    0 => next(),
                    // Lanes at the edges: 0, 1, 0xfffe, 0xffff.
                    1 => next() & 0x0001_fffe_ffff_0000,
                    _ => u64::MAX,
                })
                .collect();
            let high = match round % 4 {
                0 => 1,
                1 => 0xffff,
                _ => next() % 0xffff + 1,
            };
            let naive: u64 = words
                .iter()
                .flat_map(|w| (0..4).map(move |lane| (w >> (16 * lane)) & 0xffff))
                .map(|lane| u64::from(lane < high))
                .sum();
            assert_eq!(lanes_below(&words, high), naive, "{words:x?} below {high}");
        }
    }

    #[test]
    fn select_in_word_matches_naive() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for word in [x, x & (x >> 3), !x, u64::MAX, 1, 1 << 63, x | 1 << 63] {
                let positions: Vec<u32> = (0..64).filter(|&b| word >> b & 1 == 1).collect();
                for (rank, &position) in positions.iter().enumerate() {
                    assert_eq!(
                        select_in_word(word, rank as u32),
                        position,
                        "{word:#x} {rank}"
                    );
                }
            }
        }
    }
}
