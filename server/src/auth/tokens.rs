//! Session bearer tokens: 32 random bytes for the client, their SHA-256 for the store.
//!
//! Only the hash is stored, so a leaked database does not hand out live sessions. Lookups go
//! by hash (an exact-match key), so no constant-time comparison is needed.

use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

/// Length of a session token in bytes.
pub const SESSION_TOKEN_LEN: usize = 32;

/// A fresh token from the OS RNG and its SHA-256: `(token for the client, hash for the store)`.
pub fn new_session_token() -> ([u8; SESSION_TOKEN_LEN], [u8; 32]) {
    let mut token = [0u8; SESSION_TOKEN_LEN];
    OsRng.fill_bytes(&mut token);
    let hash = hash_token(&token);
    (token, hash)
}

/// SHA-256 of a presented token (any length: a wrong-length token simply matches nothing).
pub fn hash_token(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_matches() {
        let (t1, h1) = new_session_token();
        let (t2, h2) = new_session_token();
        assert_ne!(t1, t2);
        assert_ne!(h1, h2);
        assert_eq!(hash_token(&t1), h1);
        assert_ne!(hash_token(&t1[..31]), h1);
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(hash_token(b"abc")[..4], [0xba, 0x78, 0x16, 0xbf],);
    }
}
