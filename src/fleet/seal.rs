//! Sealing: what goes on the stream is an encoded [`Mutation`] under authenticated encryption,
//! so neither the NATS servers' disks nor a subscriber without the fleet key can read a number.
//!
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`): 256-bit key, 192-bit random nonce (safe
//! to draw at random for any number of messages, unlike 96-bit nonces), 128-bit tag. A sealed
//! message is `"SF" 1 | id length | key id | nonce | ciphertext+tag`; the header and the
//! subject are authenticated data, so a message cannot be replayed onto another tenant's
//! subject or have its key id swapped. Fleet keys live in files (`id`, `secret` = 64 hex
//! digits); several keys are rotation: the first seals, any opens. No I/O but reading key files.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;

const MAGIC: &[u8; 3] = b"SF\x01";
const NONCE: usize = 24;
const TAG: usize = 16;

/// A fleet key: an id carried by every message it seals, and the secret.
#[derive(Clone)]
pub struct FleetKey {
    id: String,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    id: String,
    secret: String,
}

impl FleetKey {
    pub fn new(id: &str, secret: [u8; 32]) -> Result<FleetKey, String> {
        crate::engine::keys::validate_key_id(id)?;
        Ok(FleetKey {
            id: id.to_owned(),
            cipher: XChaCha20Poly1305::new(&secret.into()),
        })
    }

    /// A new random key (`suppressd keygen --fleet`), with its file text.
    pub fn generate(id: &str) -> Result<(FleetKey, String), String> {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::rng(), &mut secret[..]);
        let text = format!(
            "# suppressd fleet key: the same file on every host of the fleet; keep secret, mode 0600\nid = \"{id}\"\nsecret = \"{}\"\n",
            hex::encode(secret)
        );
        Ok((FleetKey::new(id, secret)?, text))
    }

    /// Reads a key file: TOML with `id = "..."` and `secret = "<64 hex digits>"` (256 bits).
    pub fn load(path: &Path) -> Result<FleetKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read fleet key {}: {e}", path.display()))?;
        FleetKey::parse(&text).map_err(|e| format!("fleet key {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<FleetKey, String> {
        let file: KeyFile = toml::from_str(text).map_err(|e| {
            format!(
                "not a fleet key file (expected id and secret): {}",
                e.message()
            )
        })?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(file.secret.trim(), &mut secret)
            .map_err(|_| "secret must be 64 hex digits (256 bits)".to_owned())?;
        FleetKey::new(&file.id, secret)
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The fleet's keys: the first seals, any opens.
#[derive(Clone, Debug)]
pub struct Sealer {
    keys: Vec<FleetKey>,
}

impl Sealer {
    /// `keys` must not be empty (the config refuses a fleet without one); ids must be distinct.
    pub fn new(keys: Vec<FleetKey>) -> Result<Sealer, String> {
        if keys.is_empty() {
            return Err("no fleet key".into());
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(format!("fleet key id '{}' appears twice", key.id));
            }
        }
        Ok(Sealer { keys })
    }

    /// Seals `plain` for `subject` under the first key.
    pub fn seal(&self, subject: &str, plain: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut out =
            Vec::with_capacity(MAGIC.len() + 1 + key.id.len() + NONCE + plain.len() + TAG);
        out.extend_from_slice(MAGIC);
        out.push(key.id.len() as u8);
        out.extend_from_slice(key.id.as_bytes());
        let mut nonce = [0u8; NONCE];
        rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
        out.extend_from_slice(&nonce);
        let aad = [&out[..], subject.as_bytes()].concat();
        let sealed = key
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a message sealed for `subject` under any of the keys. The error says why (never
    /// anything of the contents).
    pub fn open(&self, subject: &str, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < MAGIC.len() + 1 || &sealed[..MAGIC.len()] != MAGIC {
            return Err("not a sealed suppressd mutation (bad magic or version)".into());
        }
        let id_len = usize::from(sealed[MAGIC.len()]);
        let header = MAGIC.len() + 1 + id_len + NONCE;
        if sealed.len() < header + TAG {
            return Err("sealed message ends early".into());
        }
        let id = std::str::from_utf8(&sealed[MAGIC.len() + 1..MAGIC.len() + 1 + id_len])
            .map_err(|_| "key id is not UTF-8".to_owned())?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| {
            format!("sealed with fleet key '{id}', which this host does not have (rotation: add it to fleet.key_files)")
        })?;
        let nonce = &sealed[header - NONCE..header];
        let aad = [&sealed[..header], subject.as_bytes()].concat();
        key.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: &sealed[header..],
                    aad: &aad,
                },
            )
            .map_err(|_| format!("sealed message fails authentication under fleet key '{id}' (tampered, or another subject)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> FleetKey {
        FleetKey::new(id, [byte; 32]).unwrap()
    }

    #[test]
    fn round_trips_and_rotation_opens_with_any_key() {
        let old = Sealer::new(vec![key("k1", 1)]).unwrap();
        let rotated = Sealer::new(vec![key("k2", 2), key("k1", 1)]).unwrap();
        let plain = b"+12015550123 as a mutation";
        let by_old = old.seal("s.acme", plain);
        assert_eq!(rotated.open("s.acme", &by_old).unwrap(), plain);
        let by_new = rotated.seal("s.acme", plain);
        assert_eq!(rotated.open("s.acme", &by_new).unwrap(), plain);
        let error = old.open("s.acme", &by_new).unwrap_err();
        assert!(error.contains("'k2'"), "{error}");
        // Random nonces: the same mutation never seals to the same bytes.
        assert_ne!(old.seal("s.acme", plain), by_old);
    }

    #[test]
    fn refuses_tampering_another_subject_and_every_truncation() {
        let sealer = Sealer::new(vec![key("k1", 1)]).unwrap();
        let sealed = sealer.seal("s.acme", b"payload");
        assert!(sealer.open("s.other", &sealed).is_err());
        for at in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[at] ^= 0x40;
            assert!(sealer.open("s.acme", &bad).is_err(), "flip at {at}");
        }
        for cut in 0..sealed.len() {
            assert!(sealer.open("s.acme", &sealed[..cut]).is_err(), "cut {cut}");
        }
        assert!(sealed.windows(b"payload".len()).all(|w| w != b"payload"));
    }

    #[test]
    fn key_files_parse_and_refuse_short_secrets() {
        let (_, text) = FleetKey::generate("fleet-2026").unwrap();
        assert_eq!(FleetKey::parse(&text).unwrap().id(), "fleet-2026");
        let short = "id = \"k\"\nsecret = \"00112233445566778899aabbccddeeff\"\n";
        assert!(FleetKey::parse(short).unwrap_err().contains("64 hex"));
        assert!(Sealer::new(vec![key("a", 1), key("a", 2)]).is_err());
    }
}
