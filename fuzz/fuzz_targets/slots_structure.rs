//! The slot table's loader straight from arbitrary words: a valid table built from fuzzed keys
//! is damaged at a fuzzed word, and whatever `SlotView::new` accepts must answer every lookup,
//! single and batched, alike and without a panic or an out-of-bounds read, and list keys that
//! it then finds (the snapshot targets reach it behind checksums too).
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::slots::{KEY_LIMIT, SlotTable, SlotView};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap());
    let words = data.len() / 8;
    // Keys from the words after the first two, in a span the first word narrows.
    let base = word(0) % (KEY_LIMIT / 2);
    let span = 1 + (word(0) >> 48);
    let mut keys: Vec<u64> = (2..words).map(|i| base + word(i) % span).collect();
    keys.sort_unstable();
    keys.dedup();
    let Ok(mut table) = SlotTable::build(&keys) else {
        return;
    };
    // Damage one word of one part with the second word's bits (or none).
    let (part, at, xor) = (word(1) % 4, (word(1) >> 8) as usize, word(1).rotate_left(17));
    let target = match part {
        0 => &mut table.info,
        1 => &mut table.lines,
        2 => &mut table.spill,
        _ => return check(&table, &keys, true),
    };
    if !target.is_empty() {
        let len = target.len();
        target[at % len] ^= xor;
    }
    check(&table, &keys, false);
});

fn check(table: &SlotTable, keys: &[u64], intact: bool) {
    let view = match SlotView::new(&table.info, &table.lines, &table.spill) {
        Ok(view) => view,
        Err(reason) => return assert!(!intact, "a built table was refused: {reason}"),
    };
    let listed: Vec<u64> = view.iter().collect();
    if intact {
        assert_eq!(listed, keys);
    }
    let mut probes: Vec<u64> = listed.iter().take(256).copied().collect();
    probes.extend([0, 1, KEY_LIMIT - 1, KEY_LIMIT, u64::MAX]);
    probes.extend(keys.iter().take(64).flat_map(|&k| [k.wrapping_sub(1), k, k + 1]));
    let mut batch = vec![false; probes.len()];
    view.find_batch(&probes, |i| batch[i] = true);
    for (i, &key) in probes.iter().enumerate() {
        assert_eq!(view.contains(key), batch[i], "single and batch differ on {key}");
    }
    // Every key the table lists, it finds.
    for &key in listed.iter().take(256) {
        assert!(view.contains(key), "listed key {key} not found");
    }
}
