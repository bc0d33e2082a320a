//! Integration credentials that must be used again — webhook signing secrets, HTTP Basic
//! credentials, webhook keys, CRM API credentials — stored encrypted at rest.
//!
//! The document is JSON sealed with XChaCha20-Poly1305 under the key from configuration
//! (`secrets.encryption_key`), with the integration id as associated data so that a ciphertext
//! moved onto another integration's row does not open. Nothing here implements `Debug` in a way
//! that prints a secret: every type shows only which parts are set.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
pub use crm_sync_crm_directory::Egress;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

mod rotation;
mod validate;

pub use rotation::{StoredRefreshToken, store_rotated_refresh_token};

/// The outbound policy for CRM API URLs as the operator configured it (`directory.*`).
pub fn egress_from_settings(settings: &crm_sync_runtime::settings::DirectorySettings) -> Egress {
    Egress {
        allow_insecure: settings.allow_insecure_http,
        extra_hosts: settings.allowed_host_list(),
    }
}

/// The key sealing integration credentials.
#[derive(Clone)]
pub struct SecretKey {
    key: Key,
    id: String,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "invalid configuration: key `secrets.encryption_key`: must be 32 bytes written as base64 or as 64 hex digits (e.g. the output of `openssl rand -base64 32`)"
    )]
    Malformed,
}

impl SecretKey {
    /// Reads a key written as standard base64 or as 64 hex digits.
    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| KeyError::Malformed)?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| KeyError::Malformed)?
        };
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        let fingerprint = Sha256::new()
            .chain_update(b"crm-sync secrets key id\x00")
            .chain_update(bytes)
            .finalize();
        Ok(SecretKey {
            key: Key::from(bytes),
            id: hex::encode(&fingerprint[..8]),
        })
    }

    /// The configured key, if any.
    pub fn from_settings(
        settings: &crm_sync_runtime::settings::SecretsSettings,
    ) -> Result<Option<SecretKey>, KeyError> {
        settings
            .encryption_key
            .as_ref()
            .map(|key| SecretKey::parse(secrecy::ExposeSecret::expose_secret(key)))
            .transpose()
    }

    /// A fingerprint naming the key (safe to log and store).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Everything an integration may need to authenticate webhooks and to call its CRM's API. Each
/// connector uses the parts its CRM has; `validate` says which parts those are.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationSecrets {
    /// HMAC key of signed webhooks: the HubSpot app's client secret
    /// (`X-HubSpot-Signature-v3`) or the generic endpoint's signing secret (`X-Crm-Sync-Signature`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
    /// HTTP Basic credentials the CRM sends with each webhook (Pipedrive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_basic_auth: Option<BasicAuth>,
    /// A key the CRM sends in a header or query parameter (Dynamics 365 / Dataverse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_key: Option<WebhookKey>,
    /// Access to the CRM's API, for looking users up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiCredentials>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

/// Dataverse webhook authentication: `HttpHeader` (a header), `WebhookKey` (the query parameter
/// `code`) or `HttpQueryString` (any query parameter). Exactly one of `header` and `query`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    pub value: String,
}

/// How to call a CRM's API. `base_url` is the org's own URL where the CRM has one (Salesforce My
/// Domain, Dataverse environment, Pipedrive company domain); `access_token` a long-lived token
/// (HubSpot private app token, Pipedrive API token); `oauth` a client for OAuth 2.0.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiCredentials {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthCredentials>,
}

/// An OAuth 2.0 client: the refresh-token grant when `refresh_token` is set, else client
/// credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthCredentials {
    pub client_id: String,
    pub client_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Overrides the CRM's token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Microsoft Entra tenant (Dataverse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

fn set<T>(value: &Option<T>) -> &'static str {
    if value.is_some() { "<set>" } else { "<unset>" }
}

impl fmt::Debug for IntegrationSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IntegrationSecrets")
            .field("webhook_secret", &set(&self.webhook_secret))
            .field("webhook_basic_auth", &set(&self.webhook_basic_auth))
            .field("webhook_key", &self.webhook_key)
            .field("api", &self.api)
            .finish()
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BasicAuth(<redacted>)")
    }
}

impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookKey")
            .field("header", &self.header)
            .field("query", &self.query)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiCredentials")
            .field("base_url", &self.base_url)
            .field("access_token", &set(&self.access_token))
            .field("oauth", &self.oauth)
            .finish()
    }
}

impl fmt::Debug for OAuthCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("refresh_token", &set(&self.refresh_token))
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .field("tenant_id", &self.tenant_id)
            .finish()
    }
}

impl IntegrationSecrets {
    pub fn is_empty(&self) -> bool {
        self == &IntegrationSecrets::default()
    }

    /// Each part `update` sets replaces the stored one; parts it leaves unset are kept.
    pub fn merge(&mut self, update: IntegrationSecrets) {
        if update.webhook_secret.is_some() {
            self.webhook_secret = update.webhook_secret;
        }
        if update.webhook_basic_auth.is_some() {
            self.webhook_basic_auth = update.webhook_basic_auth;
        }
        if update.webhook_key.is_some() {
            self.webhook_key = update.webhook_key;
        }
        if update.api.is_some() {
            self.api = update.api;
        }
    }
}

/// A sealed document as stored.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "the integration's credentials were sealed with key {stored}, but the configured secrets.encryption_key is {configured}"
    )]
    WrongKey { stored: String, configured: String },
    #[error(
        "the integration's credentials do not decrypt with the configured key (altered or moved?)"
    )]
    Undecryptable,
    #[error("the integration's credentials decrypt to an unreadable document: {0}")]
    Unreadable(String),
    #[error("the integration has stored credentials but no secrets.encryption_key is configured")]
    NoKey,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

pub fn seal(
    key: &SecretKey,
    integration_id: Uuid,
    secrets: &IntegrationSecrets,
) -> Result<Sealed, SecretsError> {
    let plaintext =
        serde_json::to_vec(secrets).map_err(|e| SecretsError::Unreadable(e.to_string()))?;
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = XChaCha20Poly1305::new(&key.key)
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: integration_id.as_bytes(),
            },
        )
        .map_err(|_| SecretsError::Undecryptable)?;
    Ok(Sealed {
        key_id: key.id.clone(),
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

pub fn open(
    key: &SecretKey,
    integration_id: Uuid,
    sealed: &Sealed,
) -> Result<IntegrationSecrets, SecretsError> {
    if sealed.key_id != key.id {
        return Err(SecretsError::WrongKey {
            stored: sealed.key_id.clone(),
            configured: key.id.clone(),
        });
    }
    if sealed.nonce.len() != 24 {
        return Err(SecretsError::Undecryptable);
    }
    let plaintext = XChaCha20Poly1305::new(&key.key)
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad: integration_id.as_bytes(),
            },
        )
        .map_err(|_| SecretsError::Undecryptable)?;
    serde_json::from_slice(&plaintext).map_err(|e| SecretsError::Unreadable(e.to_string()))
}

/// The integration's credentials; None when it has none stored. A stored row without a
/// configured key is an error, never silently "no credentials".
pub async fn load<'e>(
    db: impl sqlx::PgExecutor<'e>,
    integration_id: Uuid,
    key: Option<&SecretKey>,
) -> Result<Option<IntegrationSecrets>, SecretsError> {
    let row: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, nonce, ciphertext FROM integration_secrets WHERE integration_id = $1",
    )
    .bind(integration_id)
    .fetch_optional(db)
    .await?;
    let Some((key_id, nonce, ciphertext)) = row else {
        return Ok(None);
    };
    let key = key.ok_or(SecretsError::NoKey)?;
    open(
        key,
        integration_id,
        &Sealed {
            key_id,
            nonce,
            ciphertext,
        },
    )
    .map(Some)
}

/// Merges `update` into the stored credentials (see [`IntegrationSecrets::merge`]) and seals the
/// result. Returns whether anything changed; an unchanged document is not rewritten.
pub async fn update(
    pool: &PgPool,
    key: &SecretKey,
    company_id: Uuid,
    integration_id: Uuid,
    update: IntegrationSecrets,
) -> Result<bool, SecretsError> {
    let mut tx = pool.begin().await?;
    let changed = update_in(&mut tx, key, company_id, integration_id, update).await?;
    tx.commit().await?;
    Ok(!changed.is_empty())
}

/// The parts of [`IntegrationSecrets`] by their JSON names: the unit in which credentials are
/// set, rotated and reported.
pub const PARTS: [&str; 4] = ["webhook_secret", "webhook_basic_auth", "webhook_key", "api"];

impl IntegrationSecrets {
    /// Whether the part named `part` (one of [`PARTS`]) is set.
    pub fn has(&self, part: &str) -> bool {
        match part {
            "webhook_secret" => self.webhook_secret.is_some(),
            "webhook_basic_auth" => self.webhook_basic_auth.is_some(),
            "webhook_key" => self.webhook_key.is_some(),
            "api" => self.api.is_some(),
            _ => false,
        }
    }

    /// The parts whose value differs between `self` and `other`.
    pub fn changed_parts(&self, other: &IntegrationSecrets) -> Vec<&'static str> {
        let differs = |part: &str| match part {
            "webhook_secret" => self.webhook_secret != other.webhook_secret,
            "webhook_basic_auth" => self.webhook_basic_auth != other.webhook_basic_auth,
            "webhook_key" => self.webhook_key != other.webhook_key,
            "api" => self.api != other.api,
            _ => false,
        };
        PARTS.into_iter().filter(|p| differs(p)).collect()
    }
}

/// The parts a CRM's connectors use (what [`IntegrationSecrets::validate`] accepts for it).
pub fn parts_used_by(crm: &str) -> Vec<&'static str> {
    match crm {
        "hubspot" => vec!["webhook_secret", "api"],
        "generic" => vec!["webhook_secret"],
        "pipedrive" => vec!["webhook_basic_auth", "api"],
        "dynamics" => vec!["webhook_key", "api"],
        "salesforce" => vec!["api"],
        _ => Vec::new(),
    }
}

/// Which parts are set and when each was last rotated; never the values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Per part of [`PARTS`] that is set: when it was last changed (None for parts written before
    /// rotation times were kept).
    pub set: Vec<(&'static str, Option<DateTime<Utc>>)>,
}

type RotatedAt = sqlx::types::Json<HashMap<String, DateTime<Utc>>>;

/// Which of the integration's credentials are set and when they were last rotated.
pub async fn status(
    pool: &PgPool,
    integration_id: Uuid,
    key: &SecretKey,
) -> Result<Status, SecretsError> {
    let row: Option<(String, Vec<u8>, Vec<u8>, RotatedAt)> = sqlx::query_as(
        "SELECT key_id, nonce, ciphertext, rotated_at FROM integration_secrets WHERE integration_id = $1",
    )
    .bind(integration_id)
    .fetch_optional(pool)
    .await?;
    let Some((key_id, nonce, ciphertext, rotated_at)) = row else {
        return Ok(Status::default());
    };
    let secrets = open(
        key,
        integration_id,
        &Sealed {
            key_id,
            nonce,
            ciphertext,
        },
    )?;
    Ok(Status {
        set: PARTS
            .into_iter()
            .filter(|p| secrets.has(p))
            .map(|p| (p, rotated_at.0.get(p).copied()))
            .collect(),
    })
}

/// [`update`] inside the caller's transaction (so that an audit record commits with it); returns
/// the parts that changed, whose rotation time is now. Concurrent updates of one integration
/// are serialized on its row, so none is lost.
pub async fn update_in(
    conn: &mut PgConnection,
    key: &SecretKey,
    company_id: Uuid,
    integration_id: Uuid,
    update: IntegrationSecrets,
) -> Result<Vec<&'static str>, SecretsError> {
    let found: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM integrations WHERE id = $1 AND company_id = $2 FOR UPDATE")
            .bind(integration_id)
            .bind(company_id)
            .fetch_optional(&mut *conn)
            .await?;
    if found.is_none() {
        return Ok(Vec::new());
    }
    let row: Option<(String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT key_id, nonce, ciphertext FROM integration_secrets WHERE integration_id = $1",
    )
    .bind(integration_id)
    .fetch_optional(&mut *conn)
    .await?;
    let current = row
        .map(|(key_id, nonce, ciphertext)| {
            open(
                key,
                integration_id,
                &Sealed {
                    key_id,
                    nonce,
                    ciphertext,
                },
            )
        })
        .transpose()?
        .unwrap_or_default();
    let mut merged = current.clone();
    merged.merge(update);
    let changed = current.changed_parts(&merged);
    if changed.is_empty() {
        return Ok(changed);
    }
    let sealed = seal(key, integration_id, &merged)?;
    let now = Utc::now();
    let rotated: HashMap<&str, DateTime<Utc>> = changed.iter().map(|p| (*p, now)).collect();
    sqlx::query(
        "INSERT INTO integration_secrets (integration_id, company_id, key_id, nonce, ciphertext, rotated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (integration_id) DO UPDATE SET
             key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
             rotated_at = integration_secrets.rotated_at || EXCLUDED.rotated_at,
             updated_at = now()",
    )
    .bind(integration_id)
    .bind(company_id)
    .bind(&sealed.key_id)
    .bind(&sealed.nonce)
    .bind(&sealed.ciphertext)
    .bind(sqlx::types::Json(rotated))
    .execute(&mut *conn)
    .await?;
    Ok(changed)
}

/// Whether the integration has credentials stored (without decrypting them).
pub async fn exists(pool: &PgPool, integration_id: Uuid) -> Result<bool, sqlx::Error> {
    let (found,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM integration_secrets WHERE integration_id = $1)",
    )
    .bind(integration_id)
    .fetch_one(pool)
    .await?;
    Ok(found)
}

#[cfg(test)]
mod tests;
