//! An integration's credentials (issue 5): webhook signing secrets, HTTP Basic credentials,
//! webhook keys and CRM API credentials. Write-only: they are sealed with
//! `secrets.encryption_key` as they arrive, and no answer, list or audit record ever carries a
//! value — only which parts are set and when each was last rotated.
//!
//! Rotation takes effect in ingest within `ingest.integration_cache_ms` (5 s by default) and in
//! the provisioner's CRM lookups within five minutes (its client cache).

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_store::admin::integrations as store;
use crm_sync_store::credentials::{
    self, ApiCredentials, BasicAuth, IntegrationSecrets, OAuthCredentials, PARTS, SecretKey,
    SecretsError, WebhookKey,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::integrations::IntegrationPath;
use super::{ReadErrors, WriteErrors, commit_audited};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, JsonBody};

/// Longest accepted credential value; CRM secrets and tokens are far shorter.
const MAX_LEN: usize = 4096;

/// Which credentials an integration has: never their values.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialsView {
    pub integration_id: Uuid,
    /// Every part, whether this integration's CRM uses it, and whether it is set.
    pub parts: Vec<CredentialPart>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialPart {
    /// `webhook_secret`, `webhook_basic_auth`, `webhook_key` or `api`.
    pub part: String,
    /// Whether the integration's CRM uses this part (others are refused).
    pub used_by_crm: bool,
    pub set: bool,
    /// When it was last set or rotated (null when unset, or set before rotation times were kept).
    pub rotated_at: Option<DateTime<Utc>>,
}

/// Credentials to set or rotate. Each part given replaces the stored one whole; parts left out
/// are kept. Values are write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsPatch {
    /// The HMAC key of signed webhooks: the HubSpot app's client secret, or the generic
    /// endpoint's signing secret.
    pub webhook_secret: Option<String>,
    /// HTTP Basic credentials the CRM sends with its webhooks (Pipedrive).
    pub webhook_basic_auth: Option<BasicAuthInput>,
    /// The key Dataverse (Dynamics 365) sends in a header or query parameter.
    pub webhook_key: Option<WebhookKeyInput>,
    /// Access to the CRM's API for looking users up (not for `generic`).
    pub api: Option<ApiInput>,
}

/// Names the parts given, never a value: request bodies may end up in logs through `Debug`.
impl std::fmt::Debug for CredentialsPatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |set: bool| if set { "<set>" } else { "<unset>" };
        f.debug_struct("CredentialsPatch")
            .field("webhook_secret", &given(self.webhook_secret.is_some()))
            .field(
                "webhook_basic_auth",
                &given(self.webhook_basic_auth.is_some()),
            )
            .field("webhook_key", &given(self.webhook_key.is_some()))
            .field("api", &given(self.api.is_some()))
            .finish()
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthInput {
    pub username: String,
    pub password: String,
}

/// Exactly one of `header` and `query` names where the key comes.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookKeyInput {
    pub header: Option<String>,
    pub query: Option<String>,
    pub value: String,
}

/// `base_url` is the org's own URL where the CRM has one; then `access_token` (a long-lived
/// token) or `oauth` (a client).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiInput {
    pub base_url: Option<String>,
    pub access_token: Option<String>,
    pub oauth: Option<OAuthInput>,
}

/// An OAuth 2.0 client: the refresh-token grant when `refresh_token` is set, else client
/// credentials.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthInput {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: Option<String>,
    pub token_url: Option<String>,
    pub scope: Option<String>,
    /// Microsoft Entra tenant (Dataverse).
    pub tenant_id: Option<String>,
}

/// Caps every value's length, naming the field; the CRM-specific rules come after.
fn bounded(field: &str, value: String) -> ApiResult<String> {
    if value.len() > MAX_LEN {
        return Err(ApiError::invalid(
            field,
            format!("{field} is longer than {MAX_LEN} bytes"),
        ));
    }
    Ok(value)
}

fn bounded_opt(field: &str, value: Option<String>) -> ApiResult<Option<String>> {
    value.map(|v| bounded(field, v)).transpose()
}

impl CredentialsPatch {
    fn into_secrets(self) -> ApiResult<IntegrationSecrets> {
        let secrets = IntegrationSecrets {
            webhook_secret: bounded_opt("webhook_secret", self.webhook_secret)?,
            webhook_basic_auth: self
                .webhook_basic_auth
                .map(|b| {
                    Ok::<_, ApiError>(BasicAuth {
                        username: bounded("webhook_basic_auth/username", b.username)?,
                        password: bounded("webhook_basic_auth/password", b.password)?,
                    })
                })
                .transpose()?,
            webhook_key: self
                .webhook_key
                .map(|k| {
                    Ok::<_, ApiError>(WebhookKey {
                        header: bounded_opt("webhook_key/header", k.header)?,
                        query: bounded_opt("webhook_key/query", k.query)?,
                        value: bounded("webhook_key/value", k.value)?,
                    })
                })
                .transpose()?,
            api: self
                .api
                .map(|a| {
                    Ok::<_, ApiError>(ApiCredentials {
                        base_url: bounded_opt("api/base_url", a.base_url)?,
                        access_token: bounded_opt("api/access_token", a.access_token)?,
                        oauth: a
                            .oauth
                            .map(|o| {
                                Ok::<_, ApiError>(OAuthCredentials {
                                    client_id: bounded("api/oauth/client_id", o.client_id)?,
                                    client_secret: bounded(
                                        "api/oauth/client_secret",
                                        o.client_secret,
                                    )?,
                                    refresh_token: bounded_opt(
                                        "api/oauth/refresh_token",
                                        o.refresh_token,
                                    )?,
                                    token_url: bounded_opt("api/oauth/token_url", o.token_url)?,
                                    scope: bounded_opt("api/oauth/scope", o.scope)?,
                                    tenant_id: bounded_opt("api/oauth/tenant_id", o.tenant_id)?,
                                })
                            })
                            .transpose()?,
                    })
                })
                .transpose()?,
        };
        if secrets.is_empty() {
            return Err(ApiError::invalid(
                "webhook_secret",
                format!("set at least one of {}", PARTS.join(", ")),
            ));
        }
        Ok(secrets)
    }
}

/// The store's validation message (`credentials.api.base_url: …`) as a 422 naming the field
/// in this body's terms (`api/base_url`).
fn refused(message: String) -> ApiError {
    let field = message
        .split_once(": ")
        .map(|(path, _)| path)
        .unwrap_or("credentials");
    let field = field
        .strip_prefix("credentials.")
        .unwrap_or(field)
        .replace('.', "/");
    ApiError::invalid(field, message)
}

pub(crate) fn key(state: &AppState) -> ApiResult<&SecretKey> {
    state.secret_key.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "not_configured",
            "admin-api has no secrets.encryption_key configured: integration credentials cannot be read or written",
        )
    })
}

fn secrets_error(error: SecretsError) -> ApiError {
    match error {
        SecretsError::Database(e) => e.into(),
        other => ApiError::internal("opening the integration's credentials", other),
    }
}

async fn view(
    state: &AppState,
    key: &SecretKey,
    integration_id: Uuid,
    crm: &str,
) -> ApiResult<CredentialsView> {
    let status = credentials::status(&state.pool, integration_id, key)
        .await
        .map_err(secrets_error)?;
    let used = credentials::parts_used_by(crm);
    Ok(CredentialsView {
        integration_id,
        parts: PARTS
            .into_iter()
            .map(|part| {
                let set = status.set.iter().find(|(p, _)| *p == part);
                CredentialPart {
                    part: part.to_owned(),
                    used_by_crm: used.contains(&part),
                    set: set.is_some(),
                    rotated_at: set.and_then(|(_, at)| *at),
                }
            })
            .collect(),
    })
}

/// The credentials of a request, validated for `crm`, with the key to seal them.
pub(crate) fn checked<'s>(
    body: CredentialsPatch,
    crm: &str,
    state: &'s AppState,
) -> ApiResult<(IntegrationSecrets, &'s SecretKey)> {
    let secrets = body.into_secrets()?;
    secrets.validate(crm, &state.egress).map_err(refused)?;
    Ok((secrets, key(state)?))
}

/// Seals checked credentials into the caller's transaction; the names of the parts that changed.
pub(crate) async fn store(
    tx: &mut sqlx::PgConnection,
    key: &SecretKey,
    caller: &Caller,
    integration_id: Uuid,
    secrets: IntegrationSecrets,
) -> ApiResult<Vec<&'static str>> {
    credentials::update_in(tx, key, caller.company(), integration_id, secrets)
        .await
        .map_err(secrets_error)
}

/// Which credentials the integration has, and when each was last rotated (never the values).
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/credentials",
    tag = "integrations",
    params(IntegrationPath),
    responses((status = 200, body = CredentialsView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
) -> ApiResult<Json<CredentialsView>> {
    let integration = store::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let key = key(&state)?;
    Ok(Json(
        view(&state, key, integration.id, &integration.crm).await?,
    ))
}

/// Sets or rotates credentials, validated for the integration's CRM (422 names the field). The
/// old value stops working in ingest within `ingest.integration_cache_ms` (5 s by default).
#[utoipa::path(
    patch,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/credentials",
    tag = "integrations",
    params(IntegrationPath),
    request_body = CredentialsPatch,
    responses((status = 200, body = CredentialsView), WriteErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
    JsonBody(body): JsonBody<CredentialsPatch>,
) -> ApiResult<Json<CredentialsView>> {
    let integration = store::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let (secrets, key) = checked(body, &integration.crm, &state)?;
    let mut tx = state.pool.begin().await?;
    let rotated = store(&mut tx, key, &caller, integration.id, secrets).await?;
    // Names of the parts only: the audit log is readable by every token of the company.
    commit_audited(
        tx,
        &caller,
        "integration.credentials_rotated",
        "integration",
        integration.id,
        json!({"parts": rotated}),
    )
    .await?;
    Ok(Json(
        view(&state, key, integration.id, &integration.crm).await?,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn patch(json: serde_json::Value) -> CredentialsPatch {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn store_validation_messages_become_422s_naming_the_body_field() {
        let cases = [
            (
                "credentials.api.oauth.tenant_id: needed",
                "api/oauth/tenant_id",
            ),
            (
                "credentials.webhook_secret: must not be empty",
                "webhook_secret",
            ),
            ("credentials.api: set `access_token` or `oauth`", "api"),
        ];
        for (message, field) in cases {
            let e = refused(message.to_owned());
            assert_eq!(e.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(e.field.as_deref(), Some(field), "{message}");
        }
    }

    #[test]
    fn an_empty_or_oversized_patch_is_refused_and_values_pass_through_unchanged() {
        assert!(patch(serde_json::json!({})).into_secrets().is_err());
        let long = patch(serde_json::json!({"api": {"access_token": "x".repeat(MAX_LEN + 1)}}));
        let e = long.into_secrets().err().unwrap();
        assert_eq!(e.field.as_deref(), Some("api/access_token"));
        let secrets = patch(serde_json::json!({
            "webhook_basic_auth": {"username": "crm", "password": " p w "}
        }))
        .into_secrets()
        .unwrap();
        let auth = secrets.webhook_basic_auth.unwrap();
        // Secrets are stored exactly as given: trimming would silently change a password.
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("crm", " p w ")
        );
    }
}
