//! Arbitrary bytes as the HTTP plane's query string and as the `POST /v1/check` JSON body,
//! through the same parsing the handlers use (`server::http::parse_query`, `parse_batch`) and on
//! to the number parser: a value or an error text, never a panic; errors stay short.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::number::{NumberParser, Region};
use suppressd::server::http::{parse_batch, parse_query};

fuzz_target!(|data: &[u8]| {
    let parser = NumberParser::new(Region::parse("US").ok());
    // The query as a client percent-encodes it (any bytes, including invalid UTF-8 and NUL),
    // and raw when the bytes happen to form a valid URI.
    let mut encoded = String::from("/v1/check?");
    for &b in data {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'&' | b'=' | b'-' | b'.' | b'_' => {
                encoded.push(b as char)
            }
            _ => encoded.push_str(&format!("%{b:02X}")),
        }
    }
    let mut raw = b"/v1/check?".to_vec();
    raw.extend_from_slice(data);
    for uri in [
        encoded.parse::<axum::http::Uri>().ok(),
        axum::http::Uri::try_from(raw).ok(),
    ]
    .into_iter()
    .flatten()
    {
        match parse_query(&uri) {
            Ok(query) => {
                let _ = parser.parse_fast(&query.number).map_err(|e| e.to_string());
            }
            Err(error) => assert!(error.chars().count() <= 220, "error too long"),
        }
    }
    match parse_batch(data, 10_000) {
        Ok(body) => {
            assert!(body.numbers.len() <= 10_000);
            for number in &body.numbers {
                let _ = parser.parse_fast(number).map_err(|e| e.to_string());
            }
        }
        Err(error) => assert!(error.chars().count() <= 220, "error too long"),
    }
});
