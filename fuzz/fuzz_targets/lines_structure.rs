//! The line table's loader straight from arbitrary words: a valid table built from fuzzed keys
//! is damaged at a fuzzed word, and whatever `LineView::new` accepts must answer every lookup
//! without a panic or an out-of-bounds read (the snapshot targets reach it behind checksums too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::lines::{KEY_LIMIT, LineTable, LineView};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap());
    let words = data.len() / 8;
    // Keys from the words after the first two, kept below the table's key limit.
    let mut keys: Vec<u64> = (2..words).map(|i| word(i) % KEY_LIMIT >> (word(0) % 40)).collect();
    keys.sort_unstable();
    keys.dedup();
    let Ok(mut table) = LineTable::build(&keys, word(0) & 1 == 1) else {
        return;
    };
    // Damage one word of one part with the second word's bits.
    let (part, at, xor) = (word(1) % 4, (word(1) >> 8) as usize, word(1).rotate_left(17) | 1);
    let target = match part {
        0 => &mut table.info,
        1 => &mut table.index,
        2 => &mut table.lines,
        _ => &mut table.ranks,
    };
    if !target.is_empty() {
        let len = target.len();
        target[at % len] ^= xor;
    }
    let ranks = (!table.ranks.is_empty()).then_some(&table.ranks[..]);
    let Ok(view) = LineView::new(&table.info, &table.index, &table.lines, ranks) else {
        return;
    };
    let mut probes: Vec<u64> = view.iter().take(256).collect();
    probes.extend([0, 1, KEY_LIMIT - 1, KEY_LIMIT, u64::MAX]);
    probes.extend(keys.iter().take(64).flat_map(|&k| [k.wrapping_sub(1), k + 1]));
    for &key in &probes {
        if let Some((line, at)) = view.find(key) {
            let _ = view.rank_of(line, at);
        }
    }
    view.find_batch(probes.len(), |i| probes[i], |_, line, at| {
        let _ = view.rank_of(line, at);
    });
});
