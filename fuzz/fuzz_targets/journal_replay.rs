//! Arbitrary bytes as a journal segment: scanned into records (or refused with an offset), and
//! every record decoded as a mutation or refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::store::scan_segment;
use suppressd::store::Mutation;

fuzz_target!(|data: &[u8]| {
    let mut records = Vec::new();
    let _ = scan_segment(data, &mut records);
    for record in &records {
        let _ = Mutation::decode(&record.payload);
    }
    let _ = Mutation::decode(data);
});
