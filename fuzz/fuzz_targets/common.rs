//! Shared by the snapshot targets: load, and if accepted, exercise every lookup path.

use suppressd::engine::date::Day;
use suppressd::engine::number::Number;
use suppressd::engine::set::SuppressionSet;
use suppressd::engine::snapshot::SnapshotImage;

pub fn load_and_probe(image: SnapshotImage) {
    let Ok(set) = SuppressionSet::from_image(image, None) else {
        return;
    };
    let mut probes: Vec<Number> = set
        .entries()
        .take(64)
        .map(|(key, _)| Number::from_u64_unchecked(key))
        .collect();
    probes.extend([0u64, 1, 48_601_234_567, u64::MAX].map(Number::from_u64_unchecked));
    for &number in &probes {
        let _ = set.contains(number, Day(20_000));
        let _ = set.get(number);
    }
    let mut out = vec![false; probes.len()];
    set.contains_batch(&probes, Day(20_000), &mut out);
    let _ = set.entries().count();
}
