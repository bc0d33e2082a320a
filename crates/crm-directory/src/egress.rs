//! Where the directory clients may connect. A company admin chooses an integration's API
//! `base_url` and `token_url`, so without a policy they could point the service at anything it
//! can reach (cloud metadata at 169.254.169.254, an internal admin port, a database). The policy:
//! https only; only the hosts each CRM's API is served from, plus the hosts the operator adds;
//! never an address in a loopback, private, link-local or otherwise internal range, checked on
//! the addresses DNS returns at connection time (so a public name resolving to 127.0.0.1 is
//! refused too). Redirects are never followed and answers are read up to a size cap.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::{Crm, Failure, LookupError};

/// The operator's outbound policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Egress {
    /// For tests and local development only: accepts plain `http://` and loopback, private and
    /// link-local addresses (the hosts must still be allowed).
    pub allow_insecure: bool,
    /// Hosts allowed for every CRM beyond their own: an exact name (or address) or `*.domain`
    /// (any subdomain of it).
    pub extra_hosts: Vec<String>,
}

/// The hosts each CRM's APIs and token endpoints are served from.
fn known_hosts(crm: Crm) -> &'static [&'static str] {
    match crm {
        // My Domain (`acme.my.salesforce.com`, sandboxes under it), `login.` and `test.`, and
        // the instance URLs token answers name.
        Crm::Salesforce => &["*.salesforce.com"],
        Crm::HubSpot => &["api.hubapi.com", "*.hubapi.com"],
        // Company domains, `api.pipedrive.com` and `oauth.pipedrive.com`.
        Crm::Pipedrive => &["*.pipedrive.com"],
        // Environments (`org.crm4.dynamics.com`) and the Microsoft Entra token endpoint.
        Crm::Dynamics => &["*.dynamics.com", "login.microsoftonline.com"],
    }
}

fn matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern,
    }
}

impl Egress {
    /// Checks a URL the client is about to call (or an admin is about to save): scheme, host
    /// and, for an address literal, its range. The message says what is wrong.
    pub fn check_url(&self, crm: Crm, url: &str) -> Result<Url, String> {
        let parsed = Url::parse(url.trim()).map_err(|e| format!("not a URL ({e})"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if self.allow_insecure => {}
            "http" => return Err("must be an https:// URL".into()),
            other => return Err(format!("must be an https:// URL, not {other}://")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err("must not carry a user name or password".into());
        }
        let host = parsed
            .host_str()
            .ok_or("has no host")?
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.check_ip(ip)?;
        }
        let allowed = known_hosts(crm)
            .iter()
            .copied()
            .chain(self.extra_hosts.iter().map(String::as_str))
            .any(|pattern| matches(pattern, &host) || matches(pattern, literal));
        if !allowed {
            return Err(format!(
                "host {host} is not one of {}'s API hosts ({}) nor allowed by the operator",
                crm.as_str(),
                known_hosts(crm).join(", ")
            ));
        }
        Ok(parsed)
    }

    /// Refuses addresses inside the operator's network or the machine itself.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow_insecure || is_public(ip) {
            Ok(())
        } else {
            Err(format!(
                "address {ip} is loopback, private, link-local or otherwise not public"
            ))
        }
    }

    /// A DNS resolver for the HTTP client that refuses names resolving to a non-public address.
    pub(crate) fn resolver(&self) -> Arc<CheckedResolver> {
        Arc::new(CheckedResolver {
            egress: self.clone(),
        })
    }
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        // Carrier-grade NAT 100.64.0.0/10, IETF protocol assignments 192.0.0.0/24, benchmarking
        // 198.18.0.0/15, reserved 240.0.0.0/4.
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10, documentation 2001:db8::/32.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

pub(crate) struct CheckedResolver {
    egress: Egress,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.egress.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // One refused address refuses the name: trying the others would let a name that
            // mixes a public and an internal address through half the time.
            for addr in &addrs {
                egress
                    .check_ip(addr.ip())
                    .map_err(|reason| format!("{host} is refused: {reason}"))?;
            }
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addrs)
        })
    }
}

/// Reads an answer of at most `limit` bytes; a longer one fails the request rather than being
/// read whole into memory or cut silently.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<String, Failure> {
    let too_large = || {
        Failure::Final(LookupError::Unexpected(format!(
            "the answer is larger than {limit} bytes; not read further"
        )))
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Failure::from_transport)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_to_the_crms_own_hosts_by_default() {
        let strict = Egress::default();
        for (crm, url) in [
            (Crm::Salesforce, "https://acme.my.salesforce.com"),
            (
                Crm::Salesforce,
                "https://login.salesforce.com/services/oauth2/token",
            ),
            (Crm::HubSpot, "https://api.hubapi.com"),
            (Crm::Pipedrive, "https://acme.pipedrive.com"),
            (Crm::Dynamics, "https://org.crm4.dynamics.com"),
            (
                Crm::Dynamics,
                "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            ),
        ] {
            assert!(strict.check_url(crm, url).is_ok(), "{url}");
        }
        for (crm, url, why) in [
            (Crm::Salesforce, "http://acme.my.salesforce.com", "https"),
            (
                Crm::Salesforce,
                "https://salesforce.com.evil.example",
                "not one of",
            ),
            (Crm::Salesforce, "https://evilsalesforce.com", "not one of"),
            (Crm::HubSpot, "https://acme.pipedrive.com", "not one of"),
            (Crm::Dynamics, "https://127.0.0.1", "loopback"),
            (
                Crm::Dynamics,
                "https://169.254.169.254/latest",
                "link-local",
            ),
            (Crm::Dynamics, "https://10.1.2.3", "private"),
            (Crm::Dynamics, "https://[::1]", "loopback"),
            (Crm::Dynamics, "https://[::ffff:127.0.0.1]", "loopback"),
            (Crm::Dynamics, "file:///etc/passwd", "https"),
            (
                Crm::Dynamics,
                "https://user:pw@org.crm.dynamics.com",
                "user name",
            ),
        ] {
            let error = strict.check_url(crm, url).unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
        }
    }

    #[test]
    fn the_operator_adds_hosts_and_tests_allow_plain_http_to_loopback() {
        let extra = Egress {
            allow_insecure: false,
            extra_hosts: vec!["*.crm.example.net".into(), "127.0.0.1".into()],
        };
        assert!(
            extra
                .check_url(Crm::Salesforce, "https://eu.crm.example.net")
                .is_ok()
        );
        // Allowed by name, still refused by range and scheme.
        assert!(
            extra
                .check_url(Crm::Salesforce, "https://127.0.0.1:8443")
                .is_err()
        );
        let tests = Egress {
            allow_insecure: true,
            ..extra
        };
        assert!(
            tests
                .check_url(Crm::Salesforce, "http://127.0.0.1:8443")
                .is_ok()
        );
        assert!(tests.check_url(Crm::Salesforce, "http://10.0.0.1").is_err());
    }
}
