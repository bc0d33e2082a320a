//! An integration's API client on its stored credentials, keeping them in step with the CRM: a
//! refresh token the CRM rotates (Pipedrive always, Salesforce when the connected app says so)
//! is stored right after the token endpoint returns it. The CRM may revoke the old one at once,
//! and every other client built from the stored credentials (the hydrator's, rebuilt every
//! minute; another replica's; the provisioner's directory; this one after a restart) must
//! present the new one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crm_sync_crm_directory::{Crm, KeepRefreshToken, LookupError};
use crm_sync_store::credentials::{self, SecretKey};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{PullClient, PullConfig, PullError};

/// The integration's API client, on its stored API credentials; Ok(Err) says why there is none.
pub async fn client_for(
    pool: &PgPool,
    key: &SecretKey,
    config: &PullConfig,
    integration_id: Uuid,
) -> Result<Result<PullClient, PullError>, sqlx::Error> {
    let Some(integration) = crm_sync_store::integrations::find(pool, integration_id).await? else {
        return Ok(Err(PullError::Invalid("a deleted integration".to_owned())));
    };
    let Some(crm) = Crm::from_name(&integration.crm) else {
        return Ok(Err(PullError::Invalid(format!(
            "from {} integrations: crm-sync has no API client for them",
            integration.crm
        ))));
    };
    let api = match credentials::load(pool, integration_id, Some(key)).await {
        Ok(secrets) => secrets.and_then(|s| s.api),
        Err(credentials::SecretsError::Database(e)) => return Err(e),
        Err(e) => {
            return Ok(Err(PullError::Api(LookupError::Misconfigured(
                e.to_string(),
            ))));
        }
    };
    let Some(api) = api else {
        return Ok(Err(PullError::Api(LookupError::Misconfigured(
            "none are stored (set the integration's `api` credentials to pull its records)"
                .to_owned(),
        ))));
    };
    let keeper = Arc::new(StoredCredentials {
        pool: pool.clone(),
        key: key.clone(),
        company_id: integration.company_id,
        integration_id,
    });
    Ok(
        PullClient::new(integration_id, crm, api.into(), config.clone())
            .map(|client| client.keeping_rotated_tokens(keeper)),
    )
}

/// Where an integration's rotated refresh tokens go: its stored credentials.
struct StoredCredentials {
    pool: PgPool,
    key: SecretKey,
    company_id: Uuid,
    integration_id: Uuid,
}

impl KeepRefreshToken for StoredCredentials {
    fn keep<'a>(
        &'a self,
        refresh_token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            credentials::store_rotated_refresh_token(
                &self.pool,
                &self.key,
                self.company_id,
                self.integration_id,
                refresh_token,
            )
            .await
            .map_err(|e| format!("integration {}: {e}", self.integration_id))?;
            tracing::info!(integration_id = %self.integration_id, "stored the refresh token the CRM rotated");
            Ok(())
        })
    }
}
