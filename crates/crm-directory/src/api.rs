//! One CRM account's API: the HTTP client, the account's access token, and the one retry rule
//! every caller shares (directory lookups here, the pull clients of `crm-sync-crm-pull`).
//!
//! A request is bounded by a timeout; transient failures (timeouts, connection errors, 429, 5xx)
//! are retried with capped, jittered exponential backoff that honours `Retry-After` and the
//! waits each CRM's rate-limit answers imply (`limits`); a wait longer than `max_backoff`, or a
//! day's allowance spent, ends the request as [`LookupError::RateLimited`]. A refused token is
//! refreshed once. Every request, the token's included, goes through the outbound policy
//! (`Egress`): allowed hosts only, no internal addresses, no redirects, answers read up to a cap.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crm_sync_retry::Backoff;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::limits::retry_after;
use crate::{Config, Credentials, Crm, LookupError, auth, crms, limits, read_capped};

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

/// An answer the caller reads: a success, or a 404 (which only the caller can interpret).
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl ApiResponse {
    pub fn is_not_found(&self) -> bool {
        self.status == StatusCode::NOT_FOUND
    }
}

/// One CRM account's API. Cheap to share (`Arc`); requests may run concurrently.
pub struct ApiClient {
    crm: Crm,
    base_url: Option<String>,
    auth: auth::Auth,
    http: reqwest::Client,
    config: Config,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("crm", &self.crm)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
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
        Ok(ApiClient {
            crm,
            base_url,
            auth,
            http,
            config,
        })
    }

    pub fn crm(&self) -> Crm {
        self.crm
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stores each refresh token the CRM rotates with `keeper`, right after the token endpoint
    /// returns it, and asks it for the stored one when another client redeemed this one first.
    pub fn keeping_rotated_tokens(mut self, keeper: Arc<dyn auth::KeepRefreshToken>) -> Self {
        self.auth.keep_rotated_with(keeper);
        self
    }

    /// Sends the request `build` makes from the HTTP client and the account's API root (with
    /// authentication added here), with the configured number of attempts. `what` names the
    /// request in errors. Answers successes and 404s; anything else is an error.
    pub async fn send<F>(&self, what: &str, build: F) -> Result<ApiResponse, LookupError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        self.send_with_attempts(what, self.config.attempts, build)
            .await
    }

    /// As [`ApiClient::send`], and also answers `also` statuses (e.g. a 400 whose body names
    /// an error the caller can recover from) rather than making errors of them.
    pub async fn send_answering<F>(
        &self,
        what: &str,
        also: &[StatusCode],
        build: F,
    ) -> Result<ApiResponse, LookupError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        self.send_retried(what, self.config.attempts, also, build)
            .await
    }

    pub async fn send_with_attempts<F>(
        &self,
        what: &str,
        attempts: u32,
        build: F,
    ) -> Result<ApiResponse, LookupError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        self.send_retried(what, attempts, &[], build).await
    }

    async fn send_retried<F>(
        &self,
        what: &str,
        attempts: u32,
        also: &[StatusCode],
        build: F,
    ) -> Result<ApiResponse, LookupError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        let attempts = attempts.max(1);
        let mut backoff = Backoff::new(self.config.initial_backoff, self.config.max_backoff);
        let mut refreshed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match self.send_once(what, also, &build).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            match failure {
                // One fresh token per request: a second 401 means the credentials are wrong.
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
                    // The delay grows on every retry, including those the API paced itself.
                    let backoff_wait = backoff.next_delay();
                    let wait = match retry_after {
                        // Longer than a request may sleep: the caller comes back then (a pull
                        // job makes it its next attempt's time).
                        Some(after) if after > self.config.max_backoff => {
                            return Err(LookupError::RateLimited {
                                message,
                                wait: after,
                            });
                        }
                        Some(after) => after,
                        None => backoff_wait,
                    };
                    tracing::debug!(crm = self.crm.as_str(), attempt, %message, wait_ms = wait.as_millis() as u64, "CRM API request failed; retrying");
                    metrics::counter!(crate::metric_definitions::API_RETRIES, "crm" => self.crm.as_str())
                        .increment(1);
                    tokio::time::sleep(wait).await;
                }
                other => return Err(other.into_error()),
            }
        }
    }

    async fn send_once<F>(
        &self,
        what: &str,
        also: &[StatusCode],
        build: &F,
    ) -> Result<ApiResponse, Failure>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
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
        let mut request =
            build(&self.http, &base).header(reqwest::header::ACCEPT, "application/json");
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
        // Before `also`: a rate limit is this client's to wait out, whatever the caller reads
        // from such a status otherwise (Salesforce answers both with 403).
        if let Some(limit) = limits::reached(self.crm, status, &headers, &body) {
            // A spent daily allowance ends the request at once; a window is waited out.
            return Err(limit.failure(what));
        }
        if status.is_success() || status == StatusCode::NOT_FOUND || also.contains(&status) {
            return Ok(ApiResponse {
                status,
                headers,
                body,
            });
        }
        Err(Failure::from_status(what, status, &headers, &body))
    }
}
