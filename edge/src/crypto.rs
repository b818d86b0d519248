//! Authenticated encryption of data at rest in memory: AES-256-GCM (ring) under a keyring.
//!
//! A sealed value is `key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`. The key id is the start of the
//! SHA-256 of the key, so a value sealed under a previous key is opened with that key for as long as the
//! keyring keeps it: rotation seals new values under the new key while old ones stay readable.
//!
//! Nonces are unique per seal within a keyring: a random 32-bit prefix drawn when the keyring is made,
//! then a 64-bit counter. Two processes sharing a key file draw different prefixes (a collision needs
//! the same prefix *and* the same counter value).
//!
//! The caller's associated data binds a sealed value to where it belongs (an entry and a position), so
//! a value moved elsewhere fails to open.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use hex::FromHex as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

/// Length of a key in bytes.
pub const KEY_LEN: usize = 32;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// Bytes a seal adds to its plaintext.
pub const SEAL_OVERHEAD: usize = KEY_ID_LEN + NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("a key must be 32 bytes written as base64 or 64 hex digits; this one is {0} bytes")]
    KeyLength(usize),
    #[error("a key must be written as base64 or 64 hex digits")]
    KeyEncoding,
    #[error("the key file holds no key")]
    NoKey,
    #[error("the system random generator failed")]
    Random,
    #[error("sealed value is too short")]
    Truncated,
    #[error("sealed under a key the keyring no longer holds")]
    UnknownKey,
    #[error("sealed value failed authentication")]
    Forged,
}

/// One AES-256-GCM key and its id.
pub struct Key {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

impl Key {
    /// A key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::KeyLength(bytes.len()));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| CryptoError::KeyLength(bytes.len()))?;
        let hash = digest::digest(&digest::SHA256, bytes);
        let mut id = [0; KEY_ID_LEN];
        id.copy_from_slice(&hash.as_ref()[..KEY_ID_LEN]);
        Ok(Self {
            id,
            aead: LessSafeKey::new(unbound),
        })
    }

    /// A key written as 64 hex digits or as base64 (standard or URL-safe, padded or not).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        if let Ok(bytes) = <[u8; KEY_LEN]>::from_hex(text) {
            return Self::from_bytes(&bytes);
        }
        let engines = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        let bytes = engines
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or(CryptoError::KeyEncoding)?;
        Self::from_bytes(&bytes)
    }

    /// A fresh random key.
    pub fn random() -> Result<Self, CryptoError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new().fill(&mut bytes).map_err(|_| CryptoError::Random)?;
        Self::from_bytes(&bytes)
    }

    /// The key's id as hex, safe to log: it identifies the key without revealing it.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id_hex())
            .finish_non_exhaustive()
    }
}

/// The current key, which seals, and previous keys, which only open.
pub struct Keyring {
    current: Key,
    previous: Vec<Key>,
    nonce_prefix: [u8; 4],
    nonce_counter: AtomicU64,
}

impl Keyring {
    pub fn new(current: Key, previous: Vec<Key>) -> Result<Self, CryptoError> {
        let mut nonce_prefix = [0u8; 4];
        SystemRandom::new()
            .fill(&mut nonce_prefix)
            .map_err(|_| CryptoError::Random)?;
        Ok(Self {
            current,
            previous,
            nonce_prefix,
            nonce_counter: AtomicU64::new(0),
        })
    }

    /// A keyring from the text of a key file: one key per line, the first is current, the others are
    /// previous keys kept readable. Blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(Key::parse);
        let current = keys.next().ok_or(CryptoError::NoKey)??;
        let previous = keys.collect::<Result<Vec<_>, _>>()?;
        Self::new(current, previous)
    }

    /// A keyring of one random key: what lives only as long as the process.
    pub fn random() -> Result<Self, CryptoError> {
        Self::new(Key::random()?, Vec::new())
    }

    pub fn current(&self) -> &Key {
        &self.current
    }

    pub fn previous(&self) -> &[Key] {
        &self.previous
    }

    /// Seals `plaintext` under the current key, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let counter = self.nonce_counter.fetch_add(1, Ordering::Relaxed);
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.nonce_prefix);
        nonce[4..].copy_from_slice(&counter.to_be_bytes());

        let mut sealed = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        sealed.extend_from_slice(&self.current.id);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext);
        let tag = self
            .current
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed[KEY_ID_LEN + NONCE_LEN..],
            )
            // ring refuses only inputs longer than GCM's limit (64 GiB), far beyond any cache entry.
            .expect("plaintext within the AES-GCM length limit");
        sealed.extend_from_slice(tag.as_ref());
        sealed
    }

    /// Opens a value sealed under any key of the ring, checking it was sealed with the same `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(CryptoError::Truncated);
        }
        let (id, rest) = sealed.split_at(KEY_ID_LEN);
        let key = self.key_by_id(id).ok_or(CryptoError::UnknownKey)?;
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Truncated)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext_len = key
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| CryptoError::Forged)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }

    /// Whether `sealed` was sealed under the current key.
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.get(..KEY_ID_LEN) == Some(&self.current.id[..])
    }

    fn key_by_id(&self, id: &[u8]) -> Option<&Key> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|key| key.id[..] == *id)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn hex_and_base64_name_the_same_key() {
        let hex = Key::parse(HEX_KEY).unwrap();
        let b64 = Key::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let b64_unpadded = Key::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").unwrap();
        assert_eq!(hex.id_hex(), b64.id_hex());
        assert_eq!(hex.id_hex(), b64_unpadded.id_hex());
    }

    #[test]
    fn bad_keys_say_what_is_wrong() {
        assert_eq!(Key::parse("AAEC").unwrap_err(), CryptoError::KeyLength(3));
        assert_eq!(Key::parse("not a key!").unwrap_err(), CryptoError::KeyEncoding);
        assert_eq!(Keyring::parse("# only a comment\n\n").unwrap_err(), CryptoError::NoKey);
        assert_eq!(
            Keyring::parse(&format!("{HEX_KEY}\nshort")).unwrap_err(),
            CryptoError::KeyEncoding
        );
    }

    #[test]
    fn sealed_values_open_only_with_their_associated_data() {
        let ring = Keyring::random().unwrap();
        let sealed = ring.seal(b"entry-1/body-0", b"forecast body");
        assert_eq!(ring.open(b"entry-1/body-0", &sealed).unwrap(), b"forecast body");
        assert_eq!(ring.open(b"entry-1/body-1", &sealed).unwrap_err(), CryptoError::Forged);
        assert!(
            !sealed.windows(8).any(|w| w == b"forecast"),
            "ciphertext holds the plaintext"
        );
    }

    #[test]
    fn tampering_and_truncation_are_detected() {
        let ring = Keyring::random().unwrap();
        let mut sealed = ring.seal(b"a", b"payload");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(ring.open(b"a", &sealed).unwrap_err(), CryptoError::Forged);
        assert_eq!(ring.open(b"a", &sealed[..10]).unwrap_err(), CryptoError::Truncated);
    }

    #[test]
    fn every_seal_uses_a_new_nonce() {
        let ring = Keyring::random().unwrap();
        let first = ring.seal(b"a", b"same");
        let second = ring.seal(b"a", b"same");
        assert_ne!(
            first[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN],
            second[KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN]
        );
        assert_ne!(first, second);
    }

    #[test]
    fn rotation_keeps_previous_keys_readable_and_seals_with_the_new_one() {
        let old = Keyring::parse(HEX_KEY).unwrap();
        let sealed_old = old.seal(b"a", b"old entry");
        let new_key = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
        let rotated = Keyring::parse(&format!("{new_key}\n# kept until old entries age out\n{HEX_KEY}\n")).unwrap();
        assert_eq!(rotated.open(b"a", &sealed_old).unwrap(), b"old entry");
        assert!(!rotated.is_current(&sealed_old));
        let sealed_new = rotated.seal(b"a", b"new entry");
        assert!(rotated.is_current(&sealed_new));
        assert_eq!(old.open(b"a", &sealed_new).unwrap_err(), CryptoError::UnknownKey);
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let ring = Keyring::parse(HEX_KEY).unwrap();
        let shown = format!("{ring:?}");
        assert!(!shown.contains("0001020304"), "{shown}");
    }
}
