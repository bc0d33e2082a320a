//! `X-HubSpot-Signature-v3`: base64 of HMAC-SHA256, keyed with the app's client secret, over
//! `method + uri + body + timestamp`, where `timestamp` is the `X-HubSpot-Request-Timestamp`
//! header (Unix milliseconds) and `uri` the full URL HubSpot called with a few URL-encoded
//! characters decoded. Requests older than five minutes must be refused.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "x-hubspot-signature-v3";
pub const TIMESTAMP_HEADER: &str = "x-hubspot-request-timestamp";

/// HubSpot signs the URI with these escapes decoded (its documented list).
const DECODED: [(&str, char); 12] = [
    ("%3A", ':'),
    ("%2F", '/'),
    ("%3F", '?'),
    ("%40", '@'),
    ("%21", '!'),
    ("%24", '$'),
    ("%27", '\''),
    ("%28", '('),
    ("%29", ')'),
    ("%2A", '*'),
    ("%2C", ','),
    ("%3B", ';'),
];

/// The URI as HubSpot signs it.
pub fn normalize_uri(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let candidate = rest.get(at..at + 3).unwrap_or("");
        match DECODED
            .iter()
            .find(|(escape, _)| escape.eq_ignore_ascii_case(candidate))
        {
            Some((_, c)) => {
                out.push(*c);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn mac(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: &str,
) -> Option<Hmac<Sha256>> {
    // HMAC accepts keys of any length; the error case exists only in the generic API.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(method.as_bytes());
    mac.update(normalize_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    Some(mac)
}

/// The signature HubSpot would send (for tests and load tools).
pub fn sign(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    mac(secret, method, uri, body, timestamp)
        .map(|m| base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// Whether `signature` is valid for any of the candidate URIs (the URL HubSpot called may be
/// `https` in front of a proxy that talks `http` to ingest). Comparison is constant-time.
pub fn verify(
    secret: &[u8],
    method: &str,
    candidate_uris: &[String],
    body: &[u8],
    timestamp: &str,
    signature: &str,
) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    candidate_uris.iter().fold(false, |ok, uri| {
        // Every candidate is checked, so timing does not reveal which one matched.
        let this = mac(secret, method, uri, body, timestamp)
            .is_some_and(|m| m.verify_slice(&expected).is_ok());
        ok | this
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_escapes_are_decoded_and_others_kept() {
        assert_eq!(
            normalize_uri("https://example.com/hooks%3Fa%3Db%2Fc?x=%2a%20y&z=100%"),
            "https://example.com/hooks?a%3Db/c?x=*%20y&z=100%"
        );
    }

    #[test]
    fn a_signature_verifies_only_for_the_same_request() {
        let secret = b"yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
        let uri = "https://ingest.example.com/v1/integrations/x/hubspot/webhooks".to_owned();
        let body = br#"[{"eventId":1}]"#;
        let sig = sign(secret, "POST", &uri, body, "1700000000000");
        let candidates = [
            "http://ingest.example.com/v1/integrations/x/hubspot/webhooks".to_owned(),
            uri,
        ];
        assert!(verify(
            secret,
            "POST",
            &candidates,
            body,
            "1700000000000",
            &sig
        ));
        assert!(!verify(
            secret,
            "POST",
            &candidates,
            body,
            "1700000000001",
            &sig
        ));
        assert!(!verify(
            secret,
            "POST",
            &candidates,
            br#"[{"eventId":2}]"#,
            "1700000000000",
            &sig
        ));
        assert!(!verify(
            b"other",
            "POST",
            &candidates,
            body,
            "1700000000000",
            &sig
        ));
        assert!(!verify(
            secret,
            "POST",
            &candidates[..1],
            body,
            "1700000000000",
            &sig
        ));
        assert!(!verify(
            secret,
            "POST",
            &candidates,
            body,
            "1700000000000",
            "not base64!"
        ));
    }
}
