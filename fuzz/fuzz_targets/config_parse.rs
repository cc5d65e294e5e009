//! Arbitrary text as a config file: a validated config or an error naming file, key and
//! reason; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A base without files: key, token and certificate paths fail cleanly.
    let _ =
        suppressd::config::Config::parse(text, "fuzz.toml", std::path::Path::new("/nonexistent"));
});
