//! What an integration's CRM can use of the credentials given, and whether each part is
//! complete: every refusal names the key, so that the admin API and `crm-sync apply` can say it.

use crm_sync_crm_directory::{Crm, Egress};

use super::{ApiCredentials, IntegrationSecrets};

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn unused(crm: &str, part: &str) -> Result<(), String> {
    Err(format!(
        "credentials.{part}: a {crm} integration does not use it"
    ))
}

impl IntegrationSecrets {
    /// Refuses parts the CRM has no use for, incomplete parts and API URLs the outbound policy
    /// forbids, naming the key.
    pub fn validate(&self, crm: &str, egress: &Egress) -> Result<(), String> {
        self.validate_webhook_parts(crm)?;
        if let Some(api) = &self.api {
            if crm == "generic" {
                return unused(crm, "api");
            }
            validate_api(api, crm, egress)?;
        }
        Ok(())
    }

    /// The parts that authenticate the CRM's webhooks: each CRM uses one kind.
    fn validate_webhook_parts(&self, crm: &str) -> Result<(), String> {
        if let Some(secret) = &self.webhook_secret {
            if !matches!(crm, "hubspot" | "generic") {
                return unused(crm, "webhook_secret");
            }
            if blank(secret) {
                return Err("credentials.webhook_secret: must not be empty".into());
            }
        }
        if let Some(auth) = &self.webhook_basic_auth {
            if crm != "pipedrive" {
                return unused(crm, "webhook_basic_auth");
            }
            if blank(&auth.username) || blank(&auth.password) || auth.username.contains(':') {
                return Err(
                    "credentials.webhook_basic_auth: username (without `:`) and password must not be empty"
                        .into(),
                );
            }
        }
        if let Some(key) = &self.webhook_key {
            if crm != "dynamics" {
                return unused(crm, "webhook_key");
            }
            match (&key.header, &key.query) {
                (Some(name), None) | (None, Some(name)) if !blank(name) => {}
                _ => {
                    return Err(
                        "credentials.webhook_key: name exactly one of `header` and `query`".into(),
                    );
                }
            }
            if blank(&key.value) {
                return Err("credentials.webhook_key.value: must not be empty".into());
            }
        }
        Ok(())
    }
}

/// The CRM API part: URLs the outbound policy allows, a token or OAuth, and what each CRM needs
/// besides (the org's URL, Dataverse's tenant).
fn validate_api(api: &ApiCredentials, crm: &str, egress: &Egress) -> Result<(), String> {
    if let Some(kind) = Crm::from_name(crm) {
        let token_url = api.oauth.as_ref().and_then(|o| o.token_url.as_ref());
        for (key, url) in [
            ("base_url", api.base_url.as_ref()),
            ("oauth.token_url", token_url),
        ] {
            if let Some(url) = url {
                egress
                    .check_url(kind, url)
                    .map_err(|reason| format!("credentials.api.{key}: {reason}"))?;
            }
        }
    }
    if api.access_token.is_none() && api.oauth.is_none() {
        return Err("credentials.api: set `access_token` or `oauth`".into());
    }
    if let Some(oauth) = &api.oauth
        && (blank(&oauth.client_id) || blank(&oauth.client_secret))
    {
        return Err("credentials.api.oauth: client_id and client_secret must not be empty".into());
    }
    // Pipedrive's OAuth token answer names the company domain; an API token does not.
    let needs_base_url =
        matches!(crm, "salesforce" | "dynamics") || (crm == "pipedrive" && api.oauth.is_none());
    if needs_base_url && api.base_url.is_none() {
        return Err(format!(
            "credentials.api.base_url: a {crm} integration needs its org's URL"
        ));
    }
    if crm == "dynamics"
        && api
            .oauth
            .as_ref()
            .is_some_and(|o| o.tenant_id.is_none() && o.token_url.is_none())
    {
        return Err(
            "credentials.api.oauth.tenant_id: Dataverse needs the Microsoft Entra tenant".into(),
        );
    }
    Ok(())
}
