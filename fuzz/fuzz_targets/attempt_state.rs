//! Arbitrary bytes as an attempt state file (`attempts.state`): loaded whole or refused with an
//! offset and reason, leaving the book empty; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::store::attempts::Book;

fuzz_target!(|data: &[u8]| {
    let book = Book::default();
    if book.load_state(data).is_err() {
        assert!(book.is_empty(), "a refused file left calls behind");
    }
});
