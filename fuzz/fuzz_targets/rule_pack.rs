//! Arbitrary text as a calling-window rule pack (`src/rules/data/*.pack`, custom windows):
//! parsed or refused with a line and reason; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::rules::Pack;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Pack::parse("fuzz", text);
    }
});
