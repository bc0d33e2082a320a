//! Refresh tokens the CRM rotates (Pipedrive always, Salesforce when the connected app says so,
//! Microsoft Entra often), kept in step across every client built from the stored credentials:
//! the ingest replicas' pulls and hydrations and the provisioner's directory. Each stores the
//! token it is issued at once (the CRM may revoke the old one at once), only in place of the
//! one it redeemed, so that neither an admin's new credentials nor another client's newer
//! rotation are overwritten.

use std::future::Future;
use std::pin::Pin;

use crm_sync_crm_directory::KeepRefreshToken;
use sqlx::PgPool;
use uuid::Uuid;

use super::{IntegrationSecrets, SecretKey, SecretsError, load, update_in};

/// Stores `rotated`, which the CRM issued in exchange for `used`, in place of the integration's
/// API OAuth refresh token, keeping the rest of its credentials. Returns whether it was stored:
/// not when the stored token is no longer `used` (an admin entered other credentials, or
/// another client stored its own rotation first) nor when the integration has no OAuth API
/// credentials any more. The integration's row is locked meanwhile, as an admin's change locks
/// it, so the two cannot interleave.
pub async fn store_rotated_refresh_token(
    pool: &PgPool,
    key: &SecretKey,
    integration_id: Uuid,
    used: &str,
    rotated: &str,
) -> Result<bool, SecretsError> {
    let mut tx = pool.begin().await?;
    let locked: Option<(Uuid,)> =
        sqlx::query_as("SELECT company_id FROM integrations WHERE id = $1 FOR UPDATE")
            .bind(integration_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((company_id,)) = locked else {
        return Ok(false);
    };
    let stored = load(&mut *tx, integration_id, Some(key)).await?;
    let Some(mut api) = stored.and_then(|s| s.api) else {
        return Ok(false);
    };
    let Some(oauth) = api.oauth.as_mut() else {
        return Ok(false);
    };
    if oauth.refresh_token.as_deref() != Some(used) {
        return Ok(false);
    }
    oauth.refresh_token = Some(rotated.to_owned());
    let secrets = IntegrationSecrets {
        api: Some(api),
        ..IntegrationSecrets::default()
    };
    update_in(&mut tx, key, company_id, integration_id, secrets).await?;
    tx.commit().await?;
    Ok(true)
}

/// An integration's stored credentials as the place its API clients keep rotated refresh
/// tokens.
pub struct StoredRefreshToken {
    pub pool: PgPool,
    pub key: SecretKey,
    pub integration_id: Uuid,
}

impl KeepRefreshToken for StoredRefreshToken {
    fn keep<'a>(
        &'a self,
        used: &'a str,
        rotated: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>> {
        Box::pin(async move {
            let integration = self.integration_id;
            let stored =
                store_rotated_refresh_token(&self.pool, &self.key, integration, used, rotated)
                    .await
                    .map_err(|e| format!("integration {}: {e}", self.integration_id))?;
            if stored {
                tracing::info!(integration_id = %self.integration_id, "stored the refresh token the CRM rotated");
            }
            Ok(stored)
        })
    }

    fn stored(&self) -> Pin<Box<dyn Future<Output = Result<Option<String>, String>> + Send + '_>> {
        Box::pin(async move {
            let secrets = load(&self.pool, self.integration_id, Some(&self.key))
                .await
                .map_err(|e| format!("integration {}: {e}", self.integration_id))?;
            Ok(secrets
                .and_then(|s| s.api)
                .and_then(|a| a.oauth)
                .and_then(|o| o.refresh_token))
        })
    }
}
