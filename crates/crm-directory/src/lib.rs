//! CRM directory clients: a CRM user's name and email, looked up through the CRM's own API.
//!
//! | CRM | request | authentication |
//! |---|---|---|
//! | Salesforce | `GET {instance}/services/data/v62.0/sobjects/User/{id}?fields=Id,Name,Email,IsActive` | OAuth 2.0 (client credentials or refresh token) or an access token |
//! | HubSpot | `GET /crm/v3/owners/{id}?idProperty=id` (then `archived=true` for deactivated owners) | private app token, or OAuth 2.0 refresh token |
//! | Pipedrive | `GET {company domain}/api/v1/users/{id}` | API token, or OAuth 2.0 refresh token |
//! | Dataverse | `GET {environment}/api/data/v9.2/systemusers({id})?$select=fullname,internalemailaddress,isdisabled` | OAuth 2.0 client credentials (Microsoft Entra) |
//!
//! Every request is bounded by a timeout; transient failures (timeouts, connection errors, 429,
//! 5xx) are retried with capped, jittered exponential backoff that honours `Retry-After`; an
//! expired token is refreshed once. Answers are cached (users that do not exist for a shorter
//! time). Errors never carry a secret: URLs (which may hold an API token) are stripped from
//! transport errors, and credentials print as `<redacted>`.

mod auth;
mod crms;
mod egress;

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

pub use auth::OAuth;
pub use egress::Egress;
pub(crate) use egress::read_capped;

/// The CRMs with a user directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crm {
    Salesforce,
    HubSpot,
    Pipedrive,
    Dynamics,
}

impl Crm {
    /// By the name integrations use (`salesforce`, `hubspot`, `pipedrive`, `dynamics`).
    pub fn from_name(name: &str) -> Option<Crm> {
        match name {
            "salesforce" => Some(Crm::Salesforce),
            "hubspot" => Some(Crm::HubSpot),
            "pipedrive" => Some(Crm::Pipedrive),
            "dynamics" => Some(Crm::Dynamics),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Crm::Salesforce => "salesforce",
            Crm::HubSpot => "hubspot",
            Crm::Pipedrive => "pipedrive",
            Crm::Dynamics => "dynamics",
        }
    }
}

/// How to reach one CRM account's API.
#[derive(Clone, Default)]
pub struct Credentials {
    /// The org's own API root where the CRM has one (Salesforce My Domain, Dataverse
    /// environment, Pipedrive company domain); HubSpot defaults to its public API host.
    pub base_url: Option<String>,
    /// A long-lived token (HubSpot private app token, Pipedrive API token, Salesforce session).
    pub access_token: Option<String>,
    pub oauth: Option<OAuth>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("base_url", &self.base_url)
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field("oauth", &self.oauth)
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Per HTTP request (token requests included).
    pub timeout: Duration,
    /// Attempts per lookup, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    /// Also the longest `Retry-After` waited for; a longer one ends the lookup as unavailable.
    pub max_backoff: Duration,
    pub cache_ttl: Duration,
    /// How long "no such user" is remembered.
    pub not_found_ttl: Duration,
    /// Entries kept at most; expired ones are dropped first.
    pub max_cached: usize,
    /// Where requests may go.
    pub egress: Egress,
    /// The largest answer read; a larger one fails the lookup.
    pub max_answer_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_secs(5),
            attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(300),
            max_cached: 10_000,
            egress: Egress::default(),
            max_answer_bytes: 1024 * 1024,
        }
    }
}

/// A CRM user as its CRM describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub crm_user_id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// False for deactivated users, where the CRM says.
    pub active: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("the CRM has no user {0:?}")]
    NotFound(String),
    #[error("the CRM refused the integration's API credentials: {0}")]
    Unauthorized(String),
    #[error("the CRM API is unavailable: {0}")]
    Unavailable(String),
    #[error("the CRM API answered something unexpected: {0}")]
    Unexpected(String),
    #[error("the integration's API credentials are incomplete: {0}")]
    Misconfigured(String),
}

impl LookupError {
    /// Worth trying again later (the CRM or the network may recover).
    pub fn is_transient(&self) -> bool {
        matches!(self, LookupError::Unavailable(_))
    }

    fn label(&self) -> &'static str {
        match self {
            LookupError::NotFound(_) => "not_found",
            LookupError::Unauthorized(_) => "unauthorized",
            LookupError::Unavailable(_) => "unavailable",
            LookupError::Unexpected(_) => "unexpected",
            LookupError::Misconfigured(_) => "misconfigured",
        }
    }
}

/// Why one HTTP exchange failed, before deciding whether to try again.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Timeout, connection error, 429 or 5xx.
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// 401: the token may have expired.
    Unauthorized(String),
    Final(LookupError),
}

impl Failure {
    pub(crate) fn from_transport(error: reqwest::Error) -> Failure {
        // The URL can hold an API token (Pipedrive's `api_token`): never let it into a message.
        let error = error.without_url();
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else {
            "request failed"
        };
        // The causes say why (e.g. the address policy refused what a name resolved to).
        let mut message = format!("{kind}: {error}");
        let mut cause = std::error::Error::source(&error);
        while let Some(inner) = cause {
            message.push_str(&format!(": {inner}"));
            cause = std::error::Error::source(inner);
        }
        Failure::Retryable {
            message,
            retry_after: None,
        }
    }

    /// Classifies a non-success status. `what` names the request in messages.
    pub(crate) fn from_status(
        what: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> Failure {
        let detail = summary(body);
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Failure::Retryable {
                message: format!("{what} answered {status}{detail}"),
                retry_after: retry_after(headers),
            }
        } else if status.is_redirection() {
            Failure::Final(LookupError::Unexpected(format!(
                "{what} answered a redirect ({status}), which is not followed"
            )))
        } else if status == StatusCode::UNAUTHORIZED {
            Failure::Unauthorized(format!("{what} answered {status}{detail}"))
        } else if status == StatusCode::FORBIDDEN {
            Failure::Final(LookupError::Unauthorized(format!(
                "{what} answered {status}{detail}"
            )))
        } else {
            Failure::Final(LookupError::Unexpected(format!(
                "{what} answered {status}{detail}"
            )))
        }
    }

    fn into_error(self) -> LookupError {
        match self {
            Failure::Retryable { message, .. } => LookupError::Unavailable(message),
            Failure::Unauthorized(message) => LookupError::Unauthorized(message),
            Failure::Final(error) => error,
        }
    }
}

/// A short, single-line excerpt of an error body for messages.
fn summary(body: &str) -> String {
    let line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return String::new();
    }
    let cut: String = line.chars().take(200).collect();
    format!(": {cut}")
}

/// `Retry-After` in seconds (HTTP dates are rare from APIs and are treated as absent).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

struct Cached {
    at: Instant,
    user: Option<DirectoryUser>,
}

/// One CRM account's directory. Cheap to share (`Arc`); lookups may run concurrently.
pub struct DirectoryClient {
    crm: Crm,
    base_url: Option<String>,
    auth: auth::Auth,
    http: reqwest::Client,
    config: Config,
    cache: Mutex<HashMap<String, Cached>>,
}

impl fmt::Debug for DirectoryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryClient")
            .field("crm", &self.crm)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl DirectoryClient {
    /// Checks the credentials have what the CRM needs; makes no request.
    pub fn new(crm: Crm, credentials: Credentials, config: Config) -> Result<Self, LookupError> {
        let base_url = credentials
            .base_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .or_else(|| crms::default_base_url(crm).map(str::to_owned));
        if let Some(url) = &base_url {
            config
                .egress
                .check_url(crm, url)
                .map_err(|e| LookupError::Misconfigured(format!("base_url: {e}")))?;
        }
        let auth = auth::Auth::new(crm, &credentials, base_url.as_deref(), &config.egress)?;
        if base_url.is_none() && !auth.provides_base_url() {
            return Err(LookupError::Misconfigured(format!(
                "a {} integration needs base_url (its org's API address)",
                crm.as_str()
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("crm-sync-directory/", env!("CARGO_PKG_VERSION")))
            // A redirect could lead anywhere the policy forbids: it fails the request instead.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(config.egress.resolver())
            .build()
            .map_err(|e| LookupError::Misconfigured(format!("HTTP client: {e}")))?;
        Ok(DirectoryClient {
            crm,
            base_url,
            auth,
            http,
            config,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn crm(&self) -> Crm {
        self.crm
    }

    /// Looks the user up with the configured number of attempts.
    pub async fn lookup(&self, crm_user_id: &str) -> Result<DirectoryUser, LookupError> {
        self.lookup_with_attempts(crm_user_id, self.config.attempts)
            .await
    }

    /// Looks the user up, answering from the cache when it can.
    pub async fn lookup_with_attempts(
        &self,
        crm_user_id: &str,
        attempts: u32,
    ) -> Result<DirectoryUser, LookupError> {
        let id = crm_user_id.trim();
        if !crms::valid_user_id(self.crm, id) {
            // Never put an unchecked id into a URL path.
            return Err(LookupError::NotFound(id.to_owned()));
        }
        if let Some(hit) = self.cached(id) {
            metrics::counter!("crm_sync_directory_lookups_total", "crm" => self.crm.as_str(), "result" => "cached").increment(1);
            return hit.ok_or_else(|| LookupError::NotFound(id.to_owned()));
        }
        let started = Instant::now();
        let result = self.fetch_with_retries(id, attempts.max(1)).await;
        let label = match &result {
            Ok(_) => "found",
            Err(e) => e.label(),
        };
        metrics::counter!("crm_sync_directory_lookups_total", "crm" => self.crm.as_str(), "result" => label).increment(1);
        metrics::histogram!("crm_sync_directory_lookup_seconds", "crm" => self.crm.as_str())
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(user) => self.remember(id, Some(user.clone())),
            Err(LookupError::NotFound(_)) => self.remember(id, None),
            Err(_) => {}
        }
        result
    }

    fn cached(&self, id: &str) -> Option<Option<DirectoryUser>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.get(id)?;
        let ttl = if entry.user.is_some() {
            self.config.cache_ttl
        } else {
            self.config.not_found_ttl
        };
        (entry.at.elapsed() < ttl).then(|| entry.user.clone())
    }

    fn remember(&self, id: &str, user: Option<DirectoryUser>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.config.max_cached {
            let ttl = self.config.cache_ttl.max(self.config.not_found_ttl);
            cache.retain(|_, c| c.at.elapsed() < ttl);
            if cache.len() >= self.config.max_cached {
                cache.clear();
            }
        }
        cache.insert(
            id.to_owned(),
            Cached {
                at: Instant::now(),
                user,
            },
        );
    }

    /// A refresh token the CRM rotated since the last call, to be stored in place of the
    /// configured one (the old one may be invalid already). Returned once.
    pub async fn take_rotated_refresh_token(&self) -> Option<String> {
        self.auth.take_rotated_refresh_token().await
    }

    /// Forgets cached answers (e.g. after credentials changed).
    pub fn clear_cache(&self) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    async fn fetch_with_retries(
        &self,
        id: &str,
        attempts: u32,
    ) -> Result<DirectoryUser, LookupError> {
        let mut backoff = self.config.initial_backoff;
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.fetch_once(id).await {
                Ok(user) => return Ok(user),
                Err(failure) => failure,
            };
            match failure {
                // One fresh token per lookup: a second 401 means the credentials are wrong.
                Failure::Unauthorized(message) if !refreshed && self.auth.can_refresh() => {
                    tracing::debug!(crm = self.crm.as_str(), %message, "token refused; fetching a new one");
                    self.auth.invalidate().await;
                    refreshed = true;
                    attempt -= 1;
                }
                Failure::Retryable {
                    message,
                    retry_after,
                } if attempt < attempts => {
                    let wait = match retry_after {
                        Some(after) if after > self.config.max_backoff => {
                            return Err(LookupError::Unavailable(format!(
                                "{message} (asked to wait {}s)",
                                after.as_secs()
                            )));
                        }
                        Some(after) => after,
                        None => jittered(backoff),
                    };
                    tracing::debug!(crm = self.crm.as_str(), attempt, %message, wait_ms = wait.as_millis() as u64, "directory lookup failed; retrying");
                    metrics::counter!("crm_sync_directory_retries_total", "crm" => self.crm.as_str()).increment(1);
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
                other => return Err(other.into_error()),
            }
        }
    }

    async fn fetch_once(&self, id: &str) -> Result<DirectoryUser, Failure> {
        let token = self
            .auth
            .token(&self.http, self.config.max_answer_bytes)
            .await?;
        let base = token
            .as_ref()
            .and_then(|t| t.api_base.clone())
            .or_else(|| self.base_url.clone())
            .ok_or_else(|| Failure::Final(LookupError::Misconfigured("no API base URL".into())))?;
        // The token endpoint may name the API root: it is held to the same policy.
        self.config.egress.check_url(self.crm, &base).map_err(|e| {
            Failure::Final(LookupError::Misconfigured(format!("API base URL: {e}")))
        })?;
        let requests = crms::user_requests(self.crm, &base, id);
        let last = requests.len().saturating_sub(1);
        for (i, url) in requests.into_iter().enumerate() {
            let mut request = self
                .http
                .get(url)
                .header(reqwest::header::ACCEPT, "application/json");
            request = crms::decorate(self.crm, request);
            request = match &token {
                Some(t) if t.in_query => request.query(&[(crms::QUERY_TOKEN, t.value.as_str())]),
                Some(t) => request.bearer_auth(&t.value),
                None => request,
            };
            let response = request.send().await.map_err(Failure::from_transport)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = read_capped(response, self.config.max_answer_bytes).await?;
            if status.is_success() {
                return crms::parse_user(self.crm, id, &body)
                    .map_err(|e| Failure::Final(LookupError::Unexpected(e)));
            }
            if status == StatusCode::NOT_FOUND {
                if i < last {
                    continue;
                }
                return Err(Failure::Final(LookupError::NotFound(id.to_owned())));
            }
            return Err(Failure::from_status(
                &format!("the {} user API", self.crm.as_str()),
                status,
                &headers,
                &body,
            ));
        }
        Err(Failure::Final(LookupError::NotFound(id.to_owned())))
    }
}

/// Backoff with ±25 % jitter, so that many clients do not retry in lockstep.
fn jittered(base: Duration) -> Duration {
    let factor = 0.75 + rand::random::<f64>() * 0.5;
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_secrets() {
        let c = Credentials {
            base_url: Some("https://acme.my.salesforce.com".into()),
            access_token: Some("tok-123".into()),
            oauth: Some(OAuth {
                client_id: "cid".into(),
                client_secret: "csecret-9".into(),
                refresh_token: Some("rt-7".into()),
                token_url: None,
                scope: None,
                tenant_id: None,
            }),
        };
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("tok-123")
                && !printed.contains("csecret-9")
                && !printed.contains("rt-7"),
            "{printed}"
        );
    }

    #[test]
    fn missing_parts_are_named() {
        let err = DirectoryClient::new(Crm::Salesforce, Credentials::default(), Config::default())
            .unwrap_err();
        assert!(matches!(err, LookupError::Misconfigured(_)), "{err}");
        let err = DirectoryClient::new(
            Crm::Dynamics,
            Credentials {
                base_url: Some("https://org.crm.dynamics.com".into()),
                access_token: None,
                oauth: None,
            },
            Config::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("oauth") || err.to_string().contains("access_token"),
            "{err}"
        );
        assert!(
            DirectoryClient::new(
                Crm::HubSpot,
                Credentials {
                    access_token: Some("pat".into()),
                    ..Credentials::default()
                },
                Config::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..100 {
            let d = jittered(Duration::from_millis(1000));
            assert!(d >= Duration::from_millis(750) && d <= Duration::from_millis(1250));
        }
    }
}
