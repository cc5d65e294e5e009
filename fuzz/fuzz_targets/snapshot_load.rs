//! Arbitrary bytes as a snapshot file: refused with an error or loaded and safe to query.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::snapshot::SnapshotImage;

mod common;

fuzz_target!(|data: &[u8]| {
    common::load_and_probe(SnapshotImage::from_bytes(data));
});
