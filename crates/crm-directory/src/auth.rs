//! Access tokens: a long-lived token as configured, or OAuth 2.0 (refresh-token grant when a
//! refresh token is configured, client credentials otherwise), fetched once and shared by
//! concurrent lookups until shortly before it expires or the API refuses it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{Credentials, Crm, Egress, Failure, LookupError, read_capped};

/// An OAuth 2.0 client of a CRM.
#[derive(Clone)]
pub struct OAuth {
    pub client_id: String,
    pub client_secret: String,
    /// Use the refresh-token grant with this token; without it, client credentials.
    pub refresh_token: Option<String>,
    /// Overrides the CRM's token endpoint.
    pub token_url: Option<String>,
    pub scope: Option<String>,
    /// Microsoft Entra tenant (Dataverse).
    pub tenant_id: Option<String>,
}

impl fmt::Debug for OAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

/// A token ready to put on a request.
#[derive(Clone)]
pub(crate) struct Token {
    pub value: String,
    /// Pipedrive API tokens travel as the `api_token` query parameter, everything else as a
    /// bearer token.
    pub in_query: bool,
    /// The API root the token endpoint named (Salesforce `instance_url`, Pipedrive
    /// `api_domain`), preferred over the configured one.
    pub api_base: Option<String>,
    expires_at: Option<Instant>,
}

/// Tokens are renewed this long before they expire, so none expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

pub(crate) enum Auth {
    Static(Token),
    OAuth(Box<OAuthState>),
}

/// Where an integration's refresh token is stored, shared by every client built from it (other
/// replicas, the hydrator's, the provisioner's directory, any after a restart).
pub trait KeepRefreshToken: Send + Sync {
    /// Stores `rotated`, which the CRM issued in exchange for `used`, right after the token
    /// endpoint returned it (the CRM may already have revoked `used`). Ok(false) when the
    /// stored token is no longer `used`: an admin entered other credentials meanwhile, or
    /// another client stored its own rotation; what is stored then stays.
    fn keep<'a>(
        &'a self,
        used: &'a str,
        rotated: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;

    /// The refresh token stored now, if any: what to present when the one this client holds
    /// was refused because another client redeemed it first.
    fn stored(&self) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + '_>>;
}

pub(crate) struct OAuthState {
    crm: Crm,
    keeper: Option<Arc<dyn KeepRefreshToken>>,
    client_id: String,
    client_secret: String,
    token_url: String,
    scope: Option<String>,
    state: Mutex<Current>,
}

struct Current {
    token: Option<Token>,
    /// Some CRMs rotate refresh tokens (Salesforce with rotation on, Pipedrive): the newest
    /// one is used, and stored through the keeper as soon as it comes.
    refresh_token: Option<String>,
}

impl Auth {
    pub(crate) fn new(
        crm: Crm,
        credentials: &Credentials,
        base_url: Option<&str>,
        egress: &Egress,
    ) -> Result<Auth, LookupError> {
        let configured = credentials
            .access_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|value| Token {
                value: value.to_owned(),
                in_query: crm == Crm::Pipedrive,
                api_base: None,
                expires_at: None,
            });
        let Some(oauth) = &credentials.oauth else {
            return configured
                .map(Auth::Static)
                .ok_or_else(|| LookupError::Misconfigured("set access_token or oauth".into()));
        };
        if oauth.client_id.trim().is_empty() || oauth.client_secret.trim().is_empty() {
            return Err(LookupError::Misconfigured(
                "oauth needs client_id and client_secret".into(),
            ));
        }
        let refresh_token = oauth.refresh_token.clone().filter(|t| !t.trim().is_empty());
        if matches!(crm, Crm::HubSpot | Crm::Pipedrive) && refresh_token.is_none() {
            return Err(LookupError::Misconfigured(format!(
                "{} OAuth needs the refresh_token of the app's installation",
                crm.as_str()
            )));
        }
        let token_url = match (&oauth.token_url, crm) {
            (Some(url), _) => url.trim().to_owned(),
            (None, Crm::Salesforce) => format!("{}/services/oauth2/token", need(base_url)?),
            (None, Crm::HubSpot) => format!("{}/oauth/v1/token", need(base_url)?),
            (None, Crm::Pipedrive) => "https://oauth.pipedrive.com/oauth/token".to_owned(),
            (None, Crm::Dynamics) => {
                let tenant = oauth.tenant_id.as_deref().ok_or_else(|| {
                    LookupError::Misconfigured(
                        "Dataverse OAuth needs tenant_id (the Microsoft Entra tenant)".into(),
                    )
                })?;
                format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token")
            }
        };
        egress
            .check_url(crm, &token_url)
            .map_err(|e| LookupError::Misconfigured(format!("token_url: {e}")))?;
        let scope = match (&oauth.scope, crm) {
            (Some(scope), _) => Some(scope.clone()),
            // Entra issues tokens per resource: the environment itself.
            (None, Crm::Dynamics) => Some(format!("{}/.default", need(base_url)?)),
            (None, _) => None,
        };
        Ok(Auth::OAuth(Box::new(OAuthState {
            crm,
            keeper: None,
            client_id: oauth.client_id.clone(),
            client_secret: oauth.client_secret.clone(),
            token_url,
            scope,
            state: Mutex::new(Current {
                token: configured,
                refresh_token,
            }),
        })))
    }

    /// Whether the token endpoint names the API root, so none need be configured.
    pub(crate) fn provides_base_url(&self) -> bool {
        match self {
            Auth::Static(_) => false,
            Auth::OAuth(state) => matches!(state.crm, Crm::Salesforce | Crm::Pipedrive),
        }
    }

    /// Where rotated refresh tokens are stored as soon as they come (none for static tokens).
    pub(crate) fn keep_rotated_with(&mut self, keeper: Arc<dyn KeepRefreshToken>) {
        if let Auth::OAuth(state) = self {
            state.keeper = Some(keeper);
        }
    }

    pub(crate) fn can_refresh(&self) -> bool {
        matches!(self, Auth::OAuth(_))
    }

    pub(crate) async fn invalidate(&self) {
        if let Auth::OAuth(state) = self {
            state.state.lock().await.token = None;
        }
    }

    /// The token to send; `max_answer` caps the token endpoint's answer.
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        max_answer: usize,
    ) -> Result<Option<Token>, Failure> {
        match self {
            Auth::Static(token) => Ok(Some(token.clone())),
            Auth::OAuth(state) => state.token(http, max_answer).await.map(Some),
        }
    }
}

fn need(base_url: Option<&str>) -> Result<&str, LookupError> {
    base_url.ok_or_else(|| {
        LookupError::Misconfigured("base_url is needed to find the token endpoint".into())
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    /// Salesforce.
    #[serde(default)]
    instance_url: Option<String>,
    /// Pipedrive.
    #[serde(default)]
    api_domain: Option<String>,
}

#[derive(Deserialize)]
struct TokenError {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// What a token endpoint's error answer means: a refused client is final (only the endpoint's
/// own error code and description are kept, never the request sent), a 429 or 5xx is retried.
fn refused(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> Failure {
    if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
        // Only the endpoint's error code and description: never the request we sent.
        let reason = serde_json::from_str::<TokenError>(body)
            .ok()
            .map(|e| {
                [e.error, e.error_description]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(": ")
            })
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| status.to_string());
        return Failure::Final(LookupError::Unauthorized(format!(
            "the token endpoint refused the client: {reason}"
        )));
    }
    Failure::from_status("the token endpoint", status, headers, "")
}

impl OAuthState {
    async fn token(&self, http: &reqwest::Client, max_answer: usize) -> Result<Token, Failure> {
        // Held across the request: concurrent lookups wait for one token instead of each
        // fetching their own.
        let mut current = self.state.lock().await;
        if let Some(token) = &current.token
            && token
                .expires_at
                .is_none_or(|at| at > Instant::now() + EXPIRY_MARGIN)
        {
            return Ok(token.clone());
        }
        let used = current.refresh_token.clone();
        let (parsed, used) = match self.request(http, max_answer, used.as_deref()).await {
            Err(Failure::Final(LookupError::Unauthorized(why))) => {
                // Another client of the integration (a replica, the hydrator, the provisioner)
                // may have redeemed this refresh token first and stored the one it got.
                let Some(stored) = self.stored_instead(used.as_deref()).await else {
                    return Err(Failure::Final(LookupError::Unauthorized(why)));
                };
                tracing::info!(
                    crm = self.crm.as_str(),
                    "the refresh token was redeemed elsewhere; using the one stored since"
                );
                current.refresh_token = Some(stored.clone());
                (
                    self.request(http, max_answer, Some(&stored)).await?,
                    Some(stored),
                )
            }
            answer => (answer?, used),
        };
        let expires_in = parsed.expires_in.as_ref().and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        });
        if let Some(rotated) = parsed.refresh_token.filter(|t| !t.is_empty()) {
            self.keep_rotated(&mut current, used.as_deref(), rotated)
                .await;
        }
        let api_base = parsed
            .instance_url
            .or(parsed.api_domain)
            .map(|u| u.trim_end_matches('/').to_owned())
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        let token = Token {
            value: parsed.access_token,
            in_query: false,
            api_base,
            expires_at: expires_in.map(|s| Instant::now() + Duration::from_secs(s)),
        };
        current.token = Some(token.clone());
        tracing::debug!(
            crm = self.crm.as_str(),
            expires_in,
            "fetched an OAuth access token"
        );
        Ok(token)
    }

    /// One request to the token endpoint: the refresh-token grant with `refresh`, else client
    /// credentials.
    async fn request(
        &self,
        http: &reqwest::Client,
        max_answer: usize,
        refresh: Option<&str>,
    ) -> Result<TokenResponse, Failure> {
        let mut form: Vec<(&str, &str)> = Vec::with_capacity(6);
        match refresh {
            Some(refresh) => {
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh));
            }
            None => form.push(("grant_type", "client_credentials")),
        }
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let mut request = http
            .post(&self.token_url)
            .header(reqwest::header::ACCEPT, "application/json");
        if self.crm == Crm::Pipedrive {
            // Pipedrive authenticates OAuth clients with HTTP Basic, the others in the form.
            request = request.basic_auth(&self.client_id, Some(&self.client_secret));
        } else {
            form.push(("client_id", &self.client_id));
            form.push(("client_secret", &self.client_secret));
        }
        let response = request
            .form(&form)
            .send()
            .await
            .map_err(Failure::from_transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_capped(response, max_answer).await?;
        if !status.is_success() {
            return Err(refused(status, &headers, &body));
        }
        serde_json::from_str(&body).map_err(|e| {
            Failure::Final(LookupError::Unexpected(format!(
                "the token endpoint's answer is not a token: {e}"
            )))
        })
    }

    /// The stored refresh token, when it is not the refused one `used`.
    async fn stored_instead(&self, used: Option<&str>) -> Option<String> {
        let (used, keeper) = (used?, self.keeper.as_ref()?);
        match keeper.stored().await {
            Ok(stored) => stored.filter(|stored| stored != used),
            Err(error) => {
                tracing::warn!(crm = self.crm.as_str(), %error, "reading the stored refresh token failed");
                None
            }
        }
    }

    /// Takes a refresh token the token endpoint returned in place of `used`. It is stored
    /// before the new access token is used (other requests wait on the lock meanwhile); one
    /// that could not be stored is still used by this client.
    async fn keep_rotated(&self, current: &mut Current, used: Option<&str>, rotated: String) {
        if used == Some(rotated.as_str()) {
            return;
        }
        if let (Some(keeper), Some(used)) = (&self.keeper, used) {
            match keeper.keep(used, &rotated).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(
                        crm = self.crm.as_str(),
                        "the stored credentials changed since this client read them; they are kept, and this client goes on with its own token"
                    );
                }
                Err(error) => {
                    tracing::error!(crm = self.crm.as_str(), %error, "storing the refresh token the CRM rotated failed");
                }
            }
        }
        current.refresh_token = Some(rotated);
    }
}
