//! Arbitrary input to both number parsers: an answer or a typed error, never a panic, and an
//! error message never repeats the digits it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::number::{Number, NumberParser, Region};

fuzz_target!(|data: &[u8]| {
    let _ = Number::parse_e164_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    for parser in [
        NumberParser::new(None),
        NumberParser::new(Region::parse("PL").ok()),
        NumberParser::new(Region::parse("US").ok()),
    ] {
        for result in [
            parser.parse(text),
            parser.parse_fast(text),
            Number::parse_e164(text),
        ] {
            match result {
                Ok(number) => assert!(number.get() < 10u64.pow(15), "over 15 digits"),
                Err(error) => {
                    if digits.len() >= 7 {
                        assert!(
                            !error.to_string().contains(&digits),
                            "error leaks the number"
                        );
                    }
                }
            }
        }
    }
});
