//! Arbitrary bytes with their checksums repaired, so the fuzzer reaches the structural checks of
//! the filter and exact table behind the checksums (what a hostile but well-formed file hits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::snapshot::{SnapshotImage, reseal_for_fuzzing};

mod common;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    reseal_for_fuzzing(&mut bytes);
    common::load_and_probe(SnapshotImage::from_bytes(&bytes));
});
