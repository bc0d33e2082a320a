//! Webhook tokens are only ever compared, so only their SHA-256 is stored; comparison is
//! constant-time so response timing reveals nothing about the stored value.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn token_digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

pub fn token_matches(stored_digest: &[u8], presented: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    stored_digest.ct_eq(presented.as_slice()).into()
}

/// A fresh random token for a new integration (hex, 256 bits).
pub fn new_token() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    format!("{}{}", a.simple(), b.simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_token_matches() {
        let d = token_digest("s3cret");
        assert!(token_matches(&d, "s3cret"));
        assert!(!token_matches(&d, "s3cret "));
        assert!(!token_matches(&d, ""));
        assert!(!token_matches(&[], "s3cret"));
    }
}
