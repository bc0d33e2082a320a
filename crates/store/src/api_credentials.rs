//! Stored API credentials as the CRM API clients (user directory, pulls) take them.

use crate::credentials::ApiCredentials;

impl From<ApiCredentials> for crm_sync_crm_directory::Credentials {
    /// The stored API credentials in the form the CRM API clients take.
    fn from(api: ApiCredentials) -> Self {
        crm_sync_crm_directory::Credentials {
            base_url: api.base_url,
            access_token: api.access_token,
            oauth: api.oauth.map(|o| crm_sync_crm_directory::OAuth {
                client_id: o.client_id,
                client_secret: o.client_secret,
                refresh_token: o.refresh_token,
                token_url: o.token_url,
                scope: o.scope,
                tenant_id: o.tenant_id,
            }),
        }
    }
}
