//! `X-Crm-Sync-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 of `"<t>.<body>"` keyed with
//! the integration's signing secret. Several `v1=` entries may be sent (while a secret is being
//! rotated); one valid entry suffices. Comparison is constant-time.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "x-crm-sync-signature";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub signatures: Vec<Vec<u8>>,
}

/// Reads the header; None when it is not `t=…,v1=…`.
pub fn parse_header(value: &str) -> Option<SignatureHeader> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in value.split(',') {
        let (key, val) = part.trim().split_once('=')?;
        match key.trim() {
            "t" => timestamp = Some(val.trim().parse::<i64>().ok()?),
            "v1" => signatures.push(hex::decode(val.trim()).ok()?),
            // Other schemes may be added later; they are not ours to check.
            _ => {}
        }
    }
    let timestamp = timestamp?;
    (!signatures.is_empty()).then_some(SignatureHeader {
        timestamp,
        signatures,
    })
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// The header value a sender writes (for senders, tests and load tools).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let signature = mac(secret, timestamp, body)
        .map(|m| hex::encode(m.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={signature}")
}

pub fn verify(secret: &[u8], header: &SignatureHeader, body: &[u8]) -> bool {
    header.signatures.iter().fold(false, |ok, signature| {
        let this =
            mac(secret, header.timestamp, body).is_some_and(|m| m.verify_slice(signature).is_ok());
        ok | this
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_bodies_verify_and_altered_ones_do_not() {
        let header = parse_header(&sign(b"s3cret", 1_700_000_000, b"{}")).unwrap();
        assert_eq!(header.timestamp, 1_700_000_000);
        assert!(verify(b"s3cret", &header, b"{}"));
        assert!(!verify(b"s3cret", &header, b"{ }"));
        assert!(!verify(b"other", &header, b"{}"));
        let moved = SignatureHeader {
            timestamp: 1_700_000_001,
            ..header.clone()
        };
        assert!(!verify(b"s3cret", &moved, b"{}"));
    }

    #[test]
    fn any_of_several_signatures_may_match() {
        let good = sign(b"new", 5, b"x");
        let good_hex = good.split("v1=").nth(1).unwrap();
        let header = parse_header(&format!("t=5, v1={}, v1={good_hex}", "00".repeat(32))).unwrap();
        assert!(verify(b"new", &header, b"x"));
    }

    #[test]
    fn malformed_headers_are_none() {
        for bad in ["", "t=1", "v1=00", "t=x,v1=00", "t=1,v1=zz", "garbage"] {
            assert_eq!(parse_header(bad), None, "{bad}");
        }
        assert!(parse_header("t=1,v0=ab,v1=00").is_some());
    }
}
