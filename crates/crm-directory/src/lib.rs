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

mod api;
mod auth;
mod crms;
mod egress;
mod limits;
pub mod metric_definitions;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) use api::Failure;
pub use api::{ApiClient, ApiResponse};
pub use auth::{KeepRefreshToken, OAuth};
pub use crms::SALESFORCE_API_VERSION;
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
    /// Also the longest rate-limit wait (`Retry-After`, a CRM's window) slept within a request;
    /// a longer one ends it as [`LookupError::RateLimited`].
    pub max_backoff: Duration,
    pub cache_ttl: Duration,
    /// How long "no such user" is remembered.
    pub not_found_ttl: Duration,
    /// Entries kept at most; expired ones are dropped first.
    pub max_cached: usize,
    /// Where requests may go.
    pub egress: Egress,
    /// The largest answer read; a larger one fails the request.
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
    /// The CRM's rate limit, which allows requests again only after `wait` (longer than a
    /// request sleeps, or a day's allowance spent).
    #[error("the CRM API's rate limit is reached: {message}; requests are answered again in {}s", wait.as_secs())]
    RateLimited { message: String, wait: Duration },
    #[error("the CRM API answered something unexpected: {0}")]
    Unexpected(String),
    #[error("the integration's API credentials are incomplete: {0}")]
    Misconfigured(String),
}

impl LookupError {
    /// Worth trying again later (the CRM or the network may recover).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LookupError::Unavailable(_) | LookupError::RateLimited { .. }
        )
    }

    fn label(&self) -> &'static str {
        match self {
            LookupError::NotFound(_) => "not_found",
            LookupError::Unauthorized(_) => "unauthorized",
            LookupError::Unavailable(_) => "unavailable",
            LookupError::RateLimited { .. } => "rate_limited",
            LookupError::Unexpected(_) => "unexpected",
            LookupError::Misconfigured(_) => "misconfigured",
        }
    }
}

struct Cached {
    at: Instant,
    user: Option<DirectoryUser>,
}

/// One CRM account's directory. Cheap to share (`Arc`); lookups may run concurrently.
pub struct DirectoryClient {
    api: ApiClient,
    cache: Mutex<HashMap<String, Cached>>,
}

impl fmt::Debug for DirectoryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryClient")
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl DirectoryClient {
    /// Checks the credentials have what the CRM needs; makes no request.
    pub fn new(crm: Crm, credentials: Credentials, config: Config) -> Result<Self, LookupError> {
        Ok(DirectoryClient {
            api: ApiClient::new(crm, credentials, config)?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn crm(&self) -> Crm {
        self.api.crm()
    }

    fn config(&self) -> &Config {
        self.api.config()
    }

    /// Looks the user up with the configured number of attempts.
    pub async fn lookup(&self, crm_user_id: &str) -> Result<DirectoryUser, LookupError> {
        self.lookup_with_attempts(crm_user_id, self.config().attempts)
            .await
    }

    /// Looks the user up in the CRM itself, not in the cache: a re-check must see what changed.
    pub async fn lookup_fresh(&self, crm_user_id: &str) -> Result<DirectoryUser, LookupError> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(crm_user_id.trim());
        self.lookup(crm_user_id).await
    }

    /// Looks the user up, answering from the cache when it can.
    pub async fn lookup_with_attempts(
        &self,
        crm_user_id: &str,
        attempts: u32,
    ) -> Result<DirectoryUser, LookupError> {
        let id = crm_user_id.trim();
        if !crms::valid_user_id(self.crm(), id) {
            // Never put an unchecked id into a URL path.
            return Err(LookupError::NotFound(id.to_owned()));
        }
        if let Some(hit) = self.cached(id) {
            metrics::counter!(metric_definitions::LOOKUPS, "crm" => self.crm().as_str(), "result" => "cached").increment(1);
            return hit.ok_or_else(|| LookupError::NotFound(id.to_owned()));
        }
        let started = Instant::now();
        let result = self.fetch_with_retries(id, attempts.max(1)).await;
        let label = match &result {
            Ok(_) => "found",
            Err(e) => e.label(),
        };
        metrics::counter!(metric_definitions::LOOKUPS, "crm" => self.crm().as_str(), "result" => label).increment(1);
        metrics::histogram!(metric_definitions::LOOKUP_DURATION, "crm" => self.crm().as_str())
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
            self.config().cache_ttl
        } else {
            self.config().not_found_ttl
        };
        (entry.at.elapsed() < ttl).then(|| entry.user.clone())
    }

    fn remember(&self, id: &str, user: Option<DirectoryUser>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.config().max_cached {
            let ttl = self.config().cache_ttl.max(self.config().not_found_ttl);
            cache.retain(|_, c| c.at.elapsed() < ttl);
            if cache.len() >= self.config().max_cached {
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

    /// Stores each refresh token the CRM rotates with `keeper` (see
    /// [`ApiClient::keeping_rotated_tokens`]).
    pub fn keeping_rotated_tokens(mut self, keeper: Arc<dyn KeepRefreshToken>) -> Self {
        self.api = self.api.keeping_rotated_tokens(keeper);
        self
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
        let crm = self.crm();
        let what = format!("the {} user API", crm.as_str());
        let requests = crms::user_requests(crm, id);
        let last = requests.len().saturating_sub(1);
        for (i, path) in requests.into_iter().enumerate() {
            let response = self
                .api
                .send_with_attempts(&what, attempts, |http, base| {
                    http.get(format!("{base}{path}"))
                })
                .await?;
            if response.is_not_found() {
                if i < last {
                    continue;
                }
                break;
            }
            return crms::parse_user(crm, id, &response.body).map_err(LookupError::Unexpected);
        }
        Err(LookupError::NotFound(id.to_owned()))
    }
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
}
