//! Key schemes: how a set turns a phone number into the 64-bit key it stores.
//!
//! Plain sets store the E.164 number itself. Sets built from erasure requests store a keyed
//! fingerprint instead: SipHash-2-4 under a secret 128-bit key, cut to 60 bits. A plain hash of a
//! phone number can be reversed by hashing every number of a country; a keyed PRF cannot without
//! the key, which lives in a key file with an id, never on a command line. 60 bits keep a
//! 50 M-entry keyed set under 6 bytes per key while a stranger number collides with a given set
//! of a million fingerprints with probability below 1e-12 per check (and erased sets are block
//! sets: a collision can only block, never allow). This module reads key files and nothing else.

use crate::engine::number::Number;
use rand::TryRngCore;
use siphasher::sip::SipHasher24;
use std::fmt;
use std::hash::Hasher;
use std::path::{Path, PathBuf};

/// Bits kept from the PRF output.
pub const FINGERPRINT_BITS: u32 = 60;
const KEY_CHECK_INPUT: &[u8] = b"suppressd key check v1";

/// How a set's keys are derived from numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyScheme {
    /// The E.164 number as an integer.
    E164,
    /// SipHash-2-4 of the number under a secret key, truncated to [`FINGERPRINT_BITS`].
    SipHash24,
}

impl KeyScheme {
    pub fn code(self) -> u8 {
        match self {
            KeyScheme::E164 => 1,
            KeyScheme::SipHash24 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<KeyScheme> {
        match code {
            1 => Some(KeyScheme::E164),
            2 => Some(KeyScheme::SipHash24),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyScheme::E164 => "e164",
            KeyScheme::SipHash24 => "siphash24-60",
        }
    }
}

/// A secret fingerprint key and its id. Debug output never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey {
    id: String,
    secret: [u8; 16],
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: String,
    secret: String,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl SecretKey {
    /// A key from its parts; the id must be a short printable name.
    pub fn new(id: &str, secret: [u8; 16]) -> Result<SecretKey, String> {
        validate_key_id(id)?;
        if secret.iter().all(|&b| b == 0) {
            return Err("secret is all zeros".into());
        }
        Ok(SecretKey {
            id: id.to_owned(),
            secret,
        })
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate(id: &str) -> Result<SecretKey, String> {
        let mut secret = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng.unwrap_err(), &mut secret);
        SecretKey::new(id, secret)
    }

    /// Reads a key file: TOML with `id = "..."` and `secret = "<32 hex digits>"` (128 bits).
    pub fn load(path: &Path) -> Result<SecretKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        SecretKey::parse(&text).map_err(|reason| KeyError::Invalid {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses key file text (errors never echo the secret).
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let file: KeyFile = toml::from_str(text).map_err(|e| {
            // toml's messages quote the offending line, which may hold the secret.
            format!("not a key file (expected id and secret): {}", e.message())
        })?;
        let hex_text = file.secret.trim();
        if hex_text.len() != 32 {
            return Err(format!(
                "secret must be 32 hex digits (128 bits), got {} characters",
                hex_text.len()
            ));
        }
        let mut secret = [0u8; 16];
        hex::decode_to_slice(hex_text, &mut secret)
            .map_err(|_| "secret is not hexadecimal".to_string())?;
        SecretKey::new(&file.id, secret)
    }

    /// Key file text for this key.
    pub fn to_file_text(&self) -> String {
        format!(
            "# suppressd fingerprint key: keep secret, never commit, mode 0600\nid = \"{}\"\nsecret = \"{}\"\n",
            self.id,
            hex::encode(self.secret)
        )
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn prf(&self, data: &[u8]) -> u64 {
        let mut hasher = SipHasher24::new_with_key(&self.secret);
        hasher.write(data);
        hasher.finish()
    }

    /// The keyed fingerprint of a number.
    #[inline]
    pub fn fingerprint(&self, number: Number) -> u64 {
        self.prf(&number.get().to_le_bytes()) >> (64 - FINGERPRINT_BITS)
    }

    /// A 128-bit keyed digest (SipHash-2-4-128) of `data`: a MAC, so a digest of data that
    /// holds phone numbers cannot be reversed by trying every number without the key.
    pub fn digest(&self, data: &[u8]) -> [u8; 16] {
        let mut hasher = siphasher::sip128::SipHasher24::new_with_key(&self.secret);
        hasher.write(data);
        siphasher::sip128::Hasher128::finish128(&hasher).as_bytes()
    }

    /// A short public tag of the key (from its check value), so digests made under different
    /// keys are told apart without revealing either key. Never 0 (0 means "no key").
    pub fn tag(&self) -> u32 {
        ((self.check_value() >> 32) as u32).max(1)
    }

    /// A value recorded in keyed snapshots so that opening one with the wrong key is refused.
    /// It is a PRF output of a public constant: it reveals nothing about the key.
    pub fn check_value(&self) -> u64 {
        self.prf(KEY_CHECK_INPUT)
    }
}

/// Key ids: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_key_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err("key id must be 1-64 characters of letters, digits, '.', '_' or '-'".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "id = \"tenant-a-2026\"\nsecret = \"00112233445566778899aabbccddeeff\"\n";

    #[test]
    fn parses_key_file_and_round_trips() {
        let key = SecretKey::parse(TEXT).unwrap();
        assert_eq!(key.id(), "tenant-a-2026");
        assert_eq!(SecretKey::parse(&key.to_file_text()).unwrap(), key);
        assert!(!format!("{key:?}").contains("0011"));
    }

    #[test]
    fn fingerprints_are_keyed_and_60_bits() {
        let a = SecretKey::parse(TEXT).unwrap();
        let b = SecretKey::new("other", [7; 16]).unwrap();
        let number = Number::from_u64_unchecked(48_601_234_567);
        assert_ne!(a.fingerprint(number), b.fingerprint(number));
        assert_eq!(a.fingerprint(number), a.fingerprint(number));
        assert!(a.fingerprint(number) < 1 << FINGERPRINT_BITS);
        assert_ne!(a.check_value(), b.check_value());
    }

    #[test]
    fn refuses_bad_key_files_without_echoing_secrets() {
        for text in [
            "",
            "id = \"x\"",
            "id = \"x\"\nsecret = \"0011\"",
            "id = \"x\"\nsecret = \"zz112233445566778899aabbccddeeff\"",
            "id = \"bad id\"\nsecret = \"00112233445566778899aabbccddeeff\"",
            "id = \"x\"\nsecret = \"00000000000000000000000000000000\"",
            "id = \"x\"\nsecret = \"00112233445566778899aabbccddeeff\"\nextra = 1",
        ] {
            let err = SecretKey::parse(text).unwrap_err();
            assert!(!err.contains("112233"), "{err}");
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = SecretKey::generate("a").unwrap();
        let b = SecretKey::generate("a").unwrap();
        assert_ne!(a, b);
    }
}
