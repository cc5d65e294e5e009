//! Arbitrary bytes as a key file (`SecretKey::parse`) and as a tokens file
//! (`Authenticator::parse`): outside files an operator writes by hand. A value or an error,
//! never a panic; a key that parses writes itself back to text that parses to the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use suppressd::engine::keys::SecretKey;
use suppressd::server::auth::Authenticator;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(key) = SecretKey::parse(&text) {
        let again = SecretKey::parse(&key.to_file_text()).expect("written key text parses");
        assert_eq!(again, key);
    }
    if let Ok(tokens) = Authenticator::parse(&text, "fuzz.toml", true, &["acme", "other"]) {
        assert!(tokens.is_enabled());
        let _ = tokens.authenticate(Some("Bearer fuzz"));
    }
});
