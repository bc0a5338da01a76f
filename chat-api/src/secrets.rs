//! Secrets: generated site admin secrets (32 random bytes, base64url) kept
//! only as SHA-256 hashes, the operator token, generated ids, and the
//! constant-time comparisons of all of them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A new random secret (32 bytes, base64url) and its SHA-256 hash.
pub fn new_secret() -> (String, [u8; 32]) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret = B64.encode(bytes);
    let hash = hash(&secret);
    (secret, hash)
}

/// SHA-256 of a presented secret or token.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// True when `presented` hashes to `stored`, compared in constant time.
pub fn matches(presented: &str, stored: &[u8; 32]) -> bool {
    bool::from(hash(presented).ct_eq(stored))
}

/// A random id of `len` characters from `a-z0-9` (site ids, member ids).
pub fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| {
            let i = (rng.next_u32() as usize) % ALPHABET.len();
            ALPHABET[i] as char
        })
        .collect()
}

/// A token key for embedded mode: 32 random bytes as base64url (43 bytes).
pub fn new_token_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_hash_and_match() {
        let (secret, h) = new_secret();
        assert_eq!(secret.len(), 43);
        assert!(matches(&secret, &h));
        assert!(!matches("nope", &h));
        assert!(!matches(&secret[1..], &h));
        let (other, _) = new_secret();
        assert_ne!(secret, other);
    }

    #[test]
    fn ids() {
        let id = random_id(12);
        assert_eq!(id.len(), 12);
        assert!(chatty_shared::is_valid_site(id.as_bytes()));
        assert!(new_token_key().len() >= crate::token::MIN_KEY_BYTES);
    }
}
