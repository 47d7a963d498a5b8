//! Bearer tokens: 256 random bits with a recognisable prefix; only their
//! SHA-256 is ever stored. Here because both sides make them: the server
//! (admin, tenant and join tokens) and agents (their node credential,
//! whose hash they send when they register).

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix that makes Suanli tokens recognisable (e.g. by secret scanners).
pub const TOKEN_PREFIX: &str = "sl_";

/// A new secret and its hash.
pub fn new_token() -> (String, String) {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let secret = format!("{TOKEN_PREFIX}{}", hex(&b));
    let h = hash_token(&secret);
    (secret, h)
}

/// The stored form of a secret: SHA-256, lowercase hex.
pub fn hash_token(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether `s` is a hash as [`hash_token`] writes it.
pub fn is_token_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let (a, ha) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(ha, hash_token(&a));
        assert_ne!(ha, a);
        assert!(is_token_hash(&ha));
        assert!(!is_token_hash(&a));
        assert!(!is_token_hash(&ha.to_uppercase()));
    }
}
