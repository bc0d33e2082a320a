//! An integration's API client on its stored credentials, keeping them in step with the CRM
//! (see `crm_sync_store::credentials::StoredRefreshToken`): a refresh token the CRM rotates is
//! stored right after the token endpoint returns it, since every other client built from the
//! stored credentials (the hydrator's, rebuilt every minute; another replica's; the
//! provisioner's directory; this one after a restart) must present the new one.

use std::sync::Arc;

use crm_sync_crm_directory::{Crm, LookupError};
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
    let keeper = Arc::new(credentials::StoredRefreshToken {
        pool: pool.clone(),
        key: key.clone(),
        integration_id,
    });
    Ok(
        PullClient::new(integration_id, crm, api.into(), config.clone())
            .map(|client| client.keeping_rotated_tokens(keeper)),
    )
}
