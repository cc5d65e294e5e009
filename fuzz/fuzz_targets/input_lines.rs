//! Arbitrary bytes as an input list or change list for `suppressd build` / `admin
//! apply-changes` (outside files: registry downloads, CRM exports): split into lines by the
//! streaming reader, then each line through every record parser. Values or errors, never a
//! panic; the reader hands out every byte exactly once; a US record is always +1 and 11 digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::cli::input::{
    LineReader, is_skipped, parse_lines_change, parse_number, parse_us_change, parse_us_record,
};
use suppressd::engine::number::{NumberParser, Region};

fuzz_target!(|data: &[u8]| {
    let parser = NumberParser::new(Region::parse("PL").ok());
    let mut reader = LineReader::new(data);
    let mut lines = 0u64;
    while let Some(line) = reader.next_line().expect("reading a slice cannot fail") {
        lines += 1;
        assert_eq!(line.number, lines, "line numbers count from 1 without gaps");
        if is_skipped(line.bytes) {
            continue;
        }
        if let Ok(number) = parse_us_record(line.bytes) {
            let digits = number.get();
            assert!((10_000_000_000..20_000_000_000).contains(&digits), "not +1 NANP");
        }
        let _ = parse_us_change(line.bytes);
        let _ = parse_lines_change(&parser, line.bytes, false);
        let _ = parse_number(&parser, line.bytes, false);
        // libphonenumber is slow: the full parser on the first lines only.
        if lines <= 2 {
            let _ = parse_number(&parser, line.bytes, true);
        }
    }
    assert_eq!(reader.consumed(), data.len() as u64, "bytes lost or repeated");
});
