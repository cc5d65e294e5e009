//! Engine properties through the real file path: build → write → map → validate → look up,
//! compared with a `HashSet` model; and corruption of every byte of a snapshot file.

use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use suppressd::engine::date::Day;
use suppressd::engine::fuse::{FilterWidth, SHARD_TARGET_KEYS, ShardPick};
use suppressd::engine::keys::SecretKey;
use suppressd::engine::number::Number;
use suppressd::engine::set::{Layout, LayoutChoice, SetBuilder, SetSpec, SuppressionSet};
use suppressd::engine::snapshot::{
    MULTIPLICATIVE_PICK_VERSION, SetKind, SnapshotError, reseal_for_fuzzing,
};

fn spec(kind: SetKind, filter: FilterWidth) -> SetSpec {
    SetSpec {
        name: "model-test".into(),
        kind,
        filter,
        source: "proptest".into(),
        source_date: Some(Day(20_000)),
        version: 3,
        build_time: 1_790_000_000,
    }
}

fn key() -> SecretKey {
    SecretKey::new("test-key", *b"0123456789abcdef").unwrap()
}

/// Builds a set from `entries`, writes it, maps it back and returns it.
fn round_trip(
    dir: &std::path::Path,
    kind: SetKind,
    filter: FilterWidth,
    keyed: bool,
    entries: &[(u64, Option<Day>)],
) -> SuppressionSet {
    build_and_open(dir, kind, filter, keyed.then(key), None, entries)
}

/// [`round_trip`] with the key given and, when `layout` is set, that layout asked for.
fn build_and_open(
    dir: &std::path::Path,
    kind: SetKind,
    filter: FilterWidth,
    key: Option<SecretKey>,
    layout: Option<LayoutChoice>,
    entries: &[(u64, Option<Day>)],
) -> SuppressionSet {
    let mut builder = SetBuilder::new(spec(kind, filter), key.clone()).unwrap();
    if let Some(layout) = layout {
        builder.layout(layout);
    }
    for &(value, expires) in entries {
        builder
            .push(Number::from_u64_unchecked(value), expires)
            .unwrap();
    }
    let built = builder.build(2).unwrap();
    let path = dir.join("set.snap");
    built.image.write_atomic(&path).unwrap();
    SuppressionSet::open(&path, key.as_ref()).unwrap()
}

/// Entries with their expiry for a consent set, without for a block set; and the set's kind.
fn entries_of(values: &[(u64, Option<i32>)], consent: bool) -> (Vec<(u64, Option<Day>)>, SetKind) {
    let entries = values
        .iter()
        .map(|&(v, e)| (v, if consent { e.map(Day) } else { None }))
        .collect();
    let kind = if consent {
        SetKind::Consent
    } else {
        SetKind::Block
    };
    (entries, kind)
}

/// The model: latest expiry per number wins, like the builder's deduplication.
fn model(entries: &[(u64, Option<Day>)]) -> HashMap<u64, Option<Day>> {
    let mut model: HashMap<u64, Option<Day>> = HashMap::new();
    for &(value, expires) in entries {
        let slot = model.entry(value).or_insert(expires);
        *slot = match (*slot, expires) {
            (None, _) | (_, None) => None,
            (Some(a), Some(b)) => Some(a.max(b)),
        };
    }
    model
}

fn numbers() -> impl Strategy<Value = u64> {
    // Dense Polish-like numbers plus a sprinkling from other countries, so chunks straddle.
    prop_oneof![
        8 => 48_600_000_000u64..48_600_050_000,
        1 => 12_010_000_000_u64..19_999_999_999,
        1 => 447_000_000_000_u64..447_999_999_999,
    ]
}

fn check_against_model(
    set: &SuppressionSet,
    model: &HashMap<u64, Option<Day>>,
    probes: &[u64],
    today: Day,
) {
    let all: Vec<u64> = probes.iter().chain(model.keys()).copied().collect();
    let numbers: Vec<Number> = all.iter().map(|&v| Number::from_u64_unchecked(v)).collect();
    let mut batch = vec![false; numbers.len()];
    set.contains_batch(&numbers, today, &mut batch);
    for (index, &value) in all.iter().enumerate() {
        let expected = match model.get(&value) {
            None => false,
            Some(None) => true,
            Some(Some(expires)) => today < *expires,
        };
        let number = Number::from_u64_unchecked(value);
        assert_eq!(
            set.contains(number, today),
            expected,
            "single lookup of {value}"
        );
        assert_eq!(batch[index], expected, "batched lookup of {value}");
    }
    assert_eq!(set.len(), model.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Dense national numbers get the line table; it must answer like the model, single and
    /// batched, with and without expiry.
    #[test]
    fn line_table_sets_answer_like_a_hash_set(
        values in proptest::collection::vec(
            (48_600_000_000u64..48_600_200_000, proptest::option::of(19_990i32..20_010)),
            1100..4000,
        ),
        probes in proptest::collection::vec(48_599_990_000u64..48_600_210_000, 0..500),
        consent in any::<bool>(),
        today in 19_985i32..20_015,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (entries, kind) = entries_of(&values, consent);
        // Small consent sets may cost less as filter + Elias-Fano; this test pins the layout.
        let layout = Some(LayoutChoice::LinesWhenSuitable);
        let set = build_and_open(dir.path(), kind, FilterWidth::Fuse8, None, layout, &entries);
        prop_assert_eq!(set.set_layout(), Layout::Lines);
        check_against_model(&set, &model(&entries), &probes, Day(today));
        let read_back: Vec<(u64, Option<Day>)> = set.entries().collect();
        let mut expected: Vec<(u64, Option<Day>)> = model(&entries).into_iter().collect();
        expected.sort_unstable();
        prop_assert_eq!(read_back, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Plain sets of 1024+ dense numbers without expiry get the slot table by default (a list
    /// this small spread over a whole country needs remainders over 14 bits and keeps the
    /// filter layout; `block_sets_answer_like_a_hash_set` covers those); it must answer like
    /// the model, single and batched (batches that are all members, none, or mixed),
    /// and list back exactly what was built. Sets with expiry dates must not get it.
    #[test]
    fn slot_table_sets_answer_like_a_hash_set(
        values in proptest::collection::vec(48_600_000_000u64..48_600_300_000, 1024..4000),
        probes in proptest::collection::vec(48_599_990_000u64..48_600_310_000, 0..500),
        with_expiry in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut entries: Vec<(u64, Option<Day>)> = values.iter().map(|&v| (v, None)).collect();
        let kind = if with_expiry {
            entries[0].1 = Some(Day(20_050));
            SetKind::Consent
        } else {
            SetKind::Block
        };
        let set = build_and_open(dir.path(), kind, FilterWidth::Fuse8, None, None, &entries);
        let model = model(&entries);
        if with_expiry || model.len() < 1024 {
            prop_assert_eq!(set.set_layout(), Layout::FilterEliasFano);
        } else {
            prop_assert_eq!(set.set_layout(), Layout::Slots);
        }
        check_against_model(&set, &model, &probes, Day(20_000));
        let members: Vec<Number> =
            model.keys().map(|&v| Number::from_u64_unchecked(v)).collect();
        let mut out = vec![false; members.len()];
        set.contains_batch(&members, Day(20_000), &mut out);
        prop_assert!(out.iter().all(|&b| b));
        let read_back: Vec<(u64, Option<Day>)> = set.entries().collect();
        let mut expected: Vec<(u64, Option<Day>)> = model.into_iter().collect();
        expected.sort_unstable();
        prop_assert_eq!(read_back, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn block_sets_answer_like_a_hash_set(
        values in proptest::collection::vec(numbers(), 0..3000),
        probes in proptest::collection::vec(numbers(), 0..500),
        keyed in any::<bool>(),
        wide in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let filter = if wide { FilterWidth::Fuse16 } else { FilterWidth::Fuse8 };
        let entries: Vec<(u64, Option<Day>)> = values.iter().map(|&v| (v, None)).collect();
        let set = round_trip(dir.path(), SetKind::Block, filter, keyed, &entries);
        let model = model(&entries);
        check_against_model(&set, &model, &probes, Day(20_100));
        let unique: HashSet<u64> = values.iter().copied().collect();
        prop_assert_eq!(set.len(), unique.len() as u64);
    }

    #[test]
    fn consent_sets_honour_expiry(
        values in proptest::collection::vec((numbers(), proptest::option::of(19_990i32..20_010)), 0..2000),
        probes in proptest::collection::vec(numbers(), 0..300),
        today in 19_985i32..20_015,
        keyed in any::<bool>(),
        wide in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let filter = if wide { FilterWidth::Fuse16 } else { FilterWidth::Fuse8 };
        let entries: Vec<(u64, Option<Day>)> =
            values.iter().map(|&(v, e)| (v, e.map(Day))).collect();
        let set = round_trip(dir.path(), SetKind::Consent, filter, keyed, &entries);
        check_against_model(&set, &model(&entries), &probes, Day(today));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Long batches that are mostly members skip the filter (they go straight to the exact
    /// table) and come back to it when the members stop: batches made of runs of members and
    /// non-members, in any order and length, must answer like the model, with expiry, keyed or
    /// not, and count no more confirmations than filter hits.
    #[test]
    fn member_heavy_batches_answer_like_a_hash_set(
        values in proptest::collection::vec((numbers(), proptest::option::of(19_990i32..20_010)), 1..3000),
        runs in proptest::collection::vec((any::<bool>(), 1usize..700), 1..12),
        today in 19_985i32..20_015,
        keyed in any::<bool>(),
        consent in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (entries, kind) = entries_of(&values, consent);
        let layout = Some(LayoutChoice::FilterEliasFano);
        let set =
            build_and_open(dir.path(), kind, FilterWidth::Fuse8, keyed.then(key), layout, &entries);
        prop_assert_eq!(set.set_layout(), Layout::FilterEliasFano);
        let model = model(&entries);
        let members: Vec<u64> = model.keys().copied().collect();
        // A run of members cycles through them; a run of non-members steps past the range.
        let mut batch = Vec::new();
        for (index, &(of_members, length)) in runs.iter().enumerate() {
            for i in 0..length {
                batch.push(if of_members {
                    members[(index * 31 + i) % members.len()]
                } else {
                    48_700_000_000 + (index * 1000 + i) as u64
                });
            }
        }
        let numbers: Vec<Number> = batch.iter().map(|&v| Number::from_u64_unchecked(v)).collect();
        let mut out = vec![false; numbers.len()];
        let stats = set.contains_batch(&numbers, Day(today), &mut out);
        for (index, &value) in batch.iter().enumerate() {
            let expected = match model.get(&value) {
                None => false,
                Some(None) => true,
                Some(Some(expires)) => Day(today) < *expires,
            };
            prop_assert_eq!(out[index], expected, "number {} at {}", value, index);
        }
        let in_batch = batch.iter().filter(|v| model.contains_key(v)).count() as u64;
        prop_assert_eq!(stats.confirmed, in_batch);
        prop_assert!(stats.filter_hits >= stats.confirmed);
    }
}

/// Snapshots of format version 2 (filter + Elias-Fano only) still load and answer.
#[test]
fn version_2_snapshots_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u64> = (0..20_000u64).map(|i| 48_600_000_000 + i * 7).collect();
    let (mut bytes, _) = filter_layout_file(ShardPick::Multiplicative, &values);
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    reseal_for_fuzzing(&mut bytes);
    let path = dir.path().join("v2.snap");
    std::fs::write(&path, &bytes).unwrap();
    let set = SuppressionSet::open(&path, None).unwrap();
    assert_eq!(set.set_layout(), Layout::FilterEliasFano);
    for (i, &value) in values.iter().enumerate().step_by(97) {
        let number = Number::from_u64_unchecked(value);
        assert!(set.contains(number, Day(20_000)), "member {i}");
        let absent = Number::from_u64_unchecked(value + 1);
        assert!(!set.contains(absent, Day(20_000)), "non-member {i}");
    }
    // A version this build does not read is refused with a message saying so.
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    reseal_for_fuzzing(&mut bytes);
    std::fs::write(&path, &bytes).unwrap();
    let refused = SuppressionSet::open(&path, None).unwrap_err().to_string();
    assert!(
        refused.contains("format version 1 is not supported"),
        "{refused}"
    );
}

/// A slot-table file says format 5. Rewritten to an older version (and resealed, so every
/// checksum passes) it is refused, naming the section an older format does not have, never
/// read as another layout; without its spill section it is refused naming the section.
#[test]
fn slot_table_files_are_format_5_and_a_rewritten_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u64> = (0..50_000u64).map(|i| 12_015_550_000 + i * 13).collect();
    let entries: Vec<(u64, Option<Day>)> = values.iter().map(|&v| (v, None)).collect();
    let set = build_and_open(
        dir.path(),
        SetKind::Block,
        FilterWidth::Fuse8,
        None,
        None,
        &entries,
    );
    assert_eq!(set.set_layout(), Layout::Slots);
    let path = dir.path().join("set.snap");
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 5);
    for older in [4u32, 3, 2] {
        let mut rewritten = bytes.clone();
        rewritten[8..12].copy_from_slice(&older.to_le_bytes());
        reseal_for_fuzzing(&mut rewritten);
        std::fs::write(&path, &rewritten).unwrap();
        let refused = SuppressionSet::open(&path, None).unwrap_err().to_string();
        assert!(
            refused.contains("unknown section id 12"),
            "{older}: {refused}"
        );
    }
    // The layout's sections must all be there: a slot set whose spill section was renamed to
    // another layout's is refused for that section.
    let layout = suppressd::engine::snapshot::decode(&bytes).unwrap();
    let spill = layout
        .sections
        .iter()
        .position(|s| s.id == suppressd::engine::snapshot::SectionId::SlotSpill)
        .unwrap();
    let mut renamed = bytes.clone();
    let entry = 80 + spill * 32; // after the fixed header, 32 bytes an entry
    renamed[entry..entry + 4].copy_from_slice(&15u32.to_le_bytes());
    reseal_for_fuzzing(&mut renamed);
    std::fs::write(&path, &renamed).unwrap();
    let refused = SuppressionSet::open(&path, None).unwrap_err().to_string();
    assert!(refused.contains("section id 15"), "{refused}");
}

/// A file holds one layout's sections, never a mix: a slot-table file with a line-table
/// section added, and a filter + Elias-Fano file with a slot-table section added (resealed, so
/// every checksum passes), are refused naming the stray section, never served half one layout.
#[test]
fn a_section_of_another_layout_is_refused() {
    use suppressd::engine::snapshot::{FORMAT_VERSION, SectionId, decode, encode};
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u64> = (0..20_000u64).map(|i| 48_600_000_000 + i * 7).collect();
    let entries: Vec<(u64, Option<Day>)> = values.iter().map(|&v| (v, None)).collect();
    build_and_open(
        dir.path(),
        SetKind::Block,
        FilterWidth::Fuse8,
        None,
        None,
        &entries,
    );
    let slot_file = std::fs::read(dir.path().join("set.snap")).unwrap();
    let (classic_file, _) = filter_layout_file(ShardPick::Multiplicative, &values);
    let path = dir.path().join("mixed.snap");
    for (file, stray) in [
        (&slot_file, SectionId::LineIndex),
        (&slot_file, SectionId::FilterShards),
        (&classic_file, SectionId::SlotInfo),
        (&classic_file, SectionId::SlotLines),
    ] {
        let layout = decode(file).unwrap();
        let extra = [0u8; 64];
        let mut sections: Vec<(SectionId, &[u8])> = layout
            .sections
            .iter()
            .map(|s| (s.id, &file[s.offset as usize..(s.offset + s.len) as usize]))
            .collect();
        sections.push((stray, &extra));
        sections.sort_by_key(|(id, _)| *id);
        let mixed = encode(&layout.header, &sections, FORMAT_VERSION);
        std::fs::write(&path, mixed.as_bytes()).unwrap();
        let refused = SuppressionSet::open(&path, None).unwrap_err().to_string();
        assert!(
            refused.contains("section of another layout"),
            "{stray:?}: {refused}"
        );
    }
}

/// A filter + Elias-Fano set of `values` built with the given shard function: its file bytes
/// and the format version its header says.
fn filter_layout_file(pick: ShardPick, values: &[u64]) -> (Vec<u8>, u32) {
    let mut builder = SetBuilder::new(spec(SetKind::Block, FilterWidth::Fuse8), None).unwrap();
    builder.layout(LayoutChoice::FilterEliasFano);
    builder.shard_pick(pick);
    for &value in values {
        builder
            .push(Number::from_u64_unchecked(value), None)
            .unwrap();
    }
    let bytes = builder.build(2).unwrap().image.as_bytes().to_vec();
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    (bytes, version)
}

/// Format 4 changed how a multi-shard filter picks a key's shard. Files of both functions load
/// and answer; each is written with the oldest version that reads it right; and a file whose
/// version field is rewritten (and resealed, so checksums pass) is refused instead of being
/// read with the wrong shard function, which would answer "absent" for most members.
#[test]
fn both_shard_functions_load_and_a_rewritten_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<u64> = (0..(SHARD_TARGET_KEYS as u64 + 50_000))
        .map(|i| 12_015_550_000 + i * 3)
        .collect();
    for (pick, written, wrong) in [
        (ShardPick::Multiplicative, MULTIPLICATIVE_PICK_VERSION, 3),
        (ShardPick::Mixed, 2, MULTIPLICATIVE_PICK_VERSION),
    ] {
        let (mut bytes, version) = filter_layout_file(pick, &values);
        assert_eq!(version, written, "{pick:?}");
        let path = dir.path().join("us-dnc.1.snap");
        std::fs::write(&path, &bytes).unwrap();
        let set = SuppressionSet::open(&path, None).unwrap();
        let members: Vec<Number> = values
            .iter()
            .step_by(7)
            .map(|&v| Number::from_u64_unchecked(v))
            .collect();
        let mut answers = vec![false; members.len()];
        set.contains_batch(&members, Day(20_000), &mut answers);
        assert!(
            answers.iter().all(|&a| a),
            "{pick:?}: a member answered absent"
        );
        for &value in values.iter().step_by(1009) {
            assert!(set.contains(Number::from_u64_unchecked(value), Day(20_000)));
            assert!(!set.contains(Number::from_u64_unchecked(value + 1), Day(20_000)));
        }
        drop(set);
        bytes[8..12].copy_from_slice(&wrong.to_le_bytes());
        reseal_for_fuzzing(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let refused = SuppressionSet::open(&path, None).unwrap_err().to_string();
        assert!(
            refused.contains("the filter does not hold the first key of chunk"),
            "{pick:?} read as version {wrong}: {refused}"
        );
    }
    // One shard never picks: such a file is the same under both functions and stays version 2.
    let (_, version) = filter_layout_file(ShardPick::Multiplicative, &values[..1000]);
    assert_eq!(version, 2);
}

#[test]
fn entries_read_back_what_was_built() {
    let dir = tempfile::tempdir().unwrap();
    let entries: Vec<(u64, Option<Day>)> = (0..5000u64)
        .map(|i| {
            (
                48_601_000_000 + i * 37,
                (i % 3 == 0).then_some(Day(20_000 + i as i32 % 50)),
            )
        })
        .collect();
    let set = round_trip(
        dir.path(),
        SetKind::Consent,
        FilterWidth::Fuse8,
        false,
        &entries,
    );
    let mut expected = entries.clone();
    expected.sort();
    assert_eq!(set.entries().collect::<Vec<_>>(), expected);
}

#[test]
fn sizes_that_trouble_fuse_construction_build() {
    let dir = tempfile::tempdir().unwrap();
    for count in [0u64, 1, 2, 11_499, 11_500, 11_501] {
        let entries: Vec<(u64, Option<Day>)> = (0..count)
            .map(|i| (48_500_000_000 + i * 11, None))
            .collect();
        let set = round_trip(
            dir.path(),
            SetKind::Block,
            FilterWidth::Fuse8,
            false,
            &entries,
        );
        assert_eq!(set.len(), count);
        let all_found = entries
            .iter()
            .all(|&(v, _)| set.contains(Number::from_u64_unchecked(v), Day(0)));
        assert!(all_found, "size {count}");
        assert!(!set.contains(Number::from_u64_unchecked(48_499_999_999), Day(0)));
    }
}

fn small_snapshot(dir: &std::path::Path, keyed: bool) -> Vec<u8> {
    let entries: Vec<(u64, Option<Day>)> = (0..40u64)
        .map(|i| (48_601_234_000 + i * 7, (i % 4 == 0).then_some(Day(20_010))))
        .collect();
    let set = round_trip(dir, SetKind::Consent, FilterWidth::Fuse8, keyed, &entries);
    std::fs::read(set.path().unwrap()).unwrap()
}

#[test]
fn every_byte_flip_and_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for keyed in [false, true] {
        let bytes = small_snapshot(dir.path(), keyed);
        let key = keyed.then(key);
        let path = dir.path().join("corrupt.snap");
        for at in 0..bytes.len() {
            for mask in [0x01u8, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= mask;
                std::fs::write(&path, &bad).unwrap();
                let err = SuppressionSet::open(&path, key.as_ref())
                    .expect_err(&format!("flip {mask:#x} at {at} accepted"));
                assert!(err.to_string().contains("corrupt.snap"), "{err}");
            }
        }
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).unwrap();
            let err = SuppressionSet::open(&path, key.as_ref())
                .expect_err(&format!("truncation to {len} accepted"));
            assert!(matches!(err, SnapshotError::Corrupt { .. }), "{err}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert!(SuppressionSet::open(&path, key.as_ref()).is_err());
    }
}

#[test]
fn keyed_snapshot_needs_its_key() {
    let dir = tempfile::tempdir().unwrap();
    small_snapshot(dir.path(), true);
    let path = dir.path().join("set.snap");
    let missing = SuppressionSet::open(&path, None).unwrap_err();
    assert!(matches!(missing, SnapshotError::Key { .. }));
    assert!(missing.to_string().contains("test-key"), "{missing}");
    let other_id = SecretKey::new("other", *b"0123456789abcdef").unwrap();
    assert!(SuppressionSet::open(&path, Some(&other_id)).is_err());
    let wrong_secret = SecretKey::new("test-key", *b"fedcba9876543210").unwrap();
    let wrong = SuppressionSet::open(&path, Some(&wrong_secret)).unwrap_err();
    assert!(wrong.to_string().contains("not the key"), "{wrong}");
    assert!(SuppressionSet::open(&path, Some(&key())).is_ok());
}

#[test]
fn keyed_snapshot_holds_no_number_in_the_clear() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = small_snapshot(dir.path(), true);
    for i in 0..40u64 {
        let value = 48_601_234_000 + i * 7;
        for needle in [value.to_le_bytes().to_vec(), value.to_string().into_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "number {i} found in clear"
            );
        }
    }
}

#[test]
fn missing_file_names_the_path() {
    let err = SuppressionSet::open(std::path::Path::new("/nonexistent/x.snap"), None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/x.snap"));
}
