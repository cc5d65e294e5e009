//! Shared by the snapshot targets: load, and if accepted, exercise every lookup path.
//!
//! Probes use raw stored keys (`*_key` APIs): a hostile file may hold any u64, which is not
//! always a valid `Number`.

use suppressd::engine::date::Day;
use suppressd::engine::set::SuppressionSet;
use suppressd::engine::snapshot::SnapshotImage;

pub fn load_and_probe(image: SnapshotImage) {
    let Ok(set) = SuppressionSet::from_image(image, None) else {
        return;
    };
    let mut probes: Vec<u64> = set.entries().take(64).map(|(key, _)| key).collect();
    probes.extend([0u64, 1, 48_601_234_567, u64::MAX]);
    for &key in &probes {
        let _ = set.contains_key(key, Day(20_000));
        let _ = set.get_key(key);
        let _ = set.contains_key(key.wrapping_add(1), Day(20_000));
    }
    let mut out = vec![false; probes.len()];
    set.contains_keys_batch(&probes, Day(20_000), &mut out);
    let _ = set.entries().count();
}
