//! Arbitrary bytes as a ledger segment (request ids and erasure receipts): scanned into records
//! (or refused with an offset), and every record decoded or refused; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::store::scan_segment;
use suppressd::server::mutations::ledger::check_record;

fuzz_target!(|data: &[u8]| {
    let mut records = Vec::new();
    let _ = scan_segment(data, &mut records);
    for record in &records {
        let _ = check_record(&record.payload);
    }
    let _ = check_record(data);
});
