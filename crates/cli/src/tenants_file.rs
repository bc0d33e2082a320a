//! The declarative tenants file read by `crm-sync apply` (and embedded by `crm-sync demo`).
//!
//! ```yaml
//! companies:
//!   - slug: acme                     # natural key of the company; required
//!     name: Acme Inc                 # required
//!     id: 6b0c…                      # optional; default: derived from the slug
//!     integrations:
//!       - name: salesforce-prod      # natural key within the company; required
//!         crm: salesforce            # salesforce | hubspot | pipedrive | dynamics | generic
//!         crm_account_id: 00D5g000004ABCDEAA   # e.g. the Salesforce OrganizationId
//!         auto_sync_users: true      # optional; new integrations default to false, omitted keeps the stored value
//!         webhook_token: ${ACME_SF_TOKEN}      # optional; omitted keeps the stored token
//!         credentials:               # optional; stored encrypted (needs secrets.encryption_key)
//!           webhook_secret: ${HS_CLIENT_SECRET}      # hubspot: app client secret; generic: signing secret
//!           webhook_basic_auth: {username: crm-sync, password: ${PD_HOOK_PASSWORD}}   # pipedrive
//!           webhook_key: {header: x-crm-sync-key, value: ${DV_KEY}}   # dynamics ({query: code, …} for WebhookKey)
//!           api:                     # CRM API access, for looking users' names and emails up
//!             base_url: https://acme.my.salesforce.com   # the org's API address (Salesforce, Dataverse, Pipedrive)
//!             access_token: ${TOKEN}                     # HubSpot private app token, Pipedrive API token
//!             oauth: {client_id: …, client_secret: ${…}, refresh_token: ${…}, tenant_id: …, token_url: …, scope: …}
//!         id: …                      # optional; default: derived from company and name
//!         workflows:
//!           - name: Won opportunities          # natural key within the integration
//!             active: true                     # optional; new workflows start inactive, omitted keeps the stored state
//!             object_type: Opportunity
//!             triggers: [created, updated]     # created | updated | deleted
//!             conditions: {all: [{field: StageName, op: eq, value: Closed Won}]}
//!             user_field: OwnerId
//!             value_field: Amount              # optional; none counts 1 per record
//!             date_field: CloseDate            # optional; none uses the event time
//!             activity_type: deal_won
//!             id: …                            # optional
//!     teams:
//!       - name: Sales                # natural key within the company
//!         id: …                      # optional
//! ```
//!
//! Company, integration and team values expand `${NAME}` (an error naming NAME when it is not
//! set) and `${NAME:-default}` from the environment; `$$` is a literal `$`. Workflow fields are
//! taken literally, since condition values are data. Unknown keys are errors. `apply` creates and
//! updates; it never deletes what the file does not mention, and an optional key the file omits
//! leaves the stored value as it is (`auto_sync_users`, `active`, `webhook_token`, each
//! `credentials` part), so a change an admin made in the page survives the next apply.
//!
//! Every error carries the file, line, column and the key path, including workflow validation
//! errors: those are raised inside deserialization, where the YAML position is still known.

use std::fmt;
use std::path::Path;

use crm_sync_workflow::{Condition, Trigger, WorkflowSpec};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod values;
pub use values::{NonEmpty, Secret, expand_env};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    #[serde(default)]
    pub companies: Vec<CompanyEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanyEntry {
    #[serde(default)]
    pub id: Option<Uuid>,
    pub slug: NonEmpty,
    pub name: NonEmpty,
    #[serde(default)]
    pub integrations: Vec<IntegrationEntry>,
    #[serde(default)]
    pub teams: Vec<TeamEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Crm {
    Salesforce,
    Hubspot,
    Pipedrive,
    Dynamics,
    Generic,
}

impl Crm {
    pub fn as_str(self) -> &'static str {
        match self {
            Crm::Salesforce => "salesforce",
            Crm::Hubspot => "hubspot",
            Crm::Pipedrive => "pipedrive",
            Crm::Dynamics => "dynamics",
            Crm::Generic => "generic",
        }
    }

    /// The ingest path this CRM's webhooks are posted to: `/v1/integrations/{id}/<crm route>`.
    pub fn ingest_path(self, integration_id: Uuid) -> String {
        let tail = match self {
            Crm::Salesforce => "salesforce/outbound-messages",
            Crm::Hubspot => "hubspot/webhooks",
            Crm::Pipedrive => "pipedrive/webhooks",
            Crm::Dynamics => "dynamics/webhooks",
            Crm::Generic => "events",
        };
        format!("/v1/integrations/{integration_id}/{tail}")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationEntry {
    #[serde(default)]
    pub id: Option<Uuid>,
    pub name: NonEmpty,
    pub crm: Crm,
    pub crm_account_id: NonEmpty,
    /// `None` (the key is absent): a new integration starts with auto-sync off, an existing one
    /// keeps what an admin set (e.g. in the page).
    #[serde(default)]
    pub auto_sync_users: Option<bool>,
    #[serde(default)]
    pub webhook_token: Option<Secret>,
    /// Stored encrypted; each part given replaces the stored one, parts omitted are kept.
    #[serde(default)]
    pub credentials: Option<CredentialsEntry>,
    #[serde(default)]
    pub workflows: Vec<WorkflowEntry>,
}

/// An integration's credentials as the file writes them (values expand `${ENV}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsEntry {
    #[serde(default)]
    pub webhook_secret: Option<Secret>,
    #[serde(default)]
    pub webhook_basic_auth: Option<BasicAuthEntry>,
    #[serde(default)]
    pub webhook_key: Option<WebhookKeyEntry>,
    #[serde(default)]
    pub api: Option<ApiEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthEntry {
    pub username: NonEmpty,
    pub password: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookKeyEntry {
    #[serde(default)]
    pub header: Option<NonEmpty>,
    #[serde(default)]
    pub query: Option<NonEmpty>,
    pub value: Secret,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiEntry {
    #[serde(default)]
    pub base_url: Option<NonEmpty>,
    #[serde(default)]
    pub access_token: Option<Secret>,
    #[serde(default)]
    pub oauth: Option<OAuthEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthEntry {
    pub client_id: NonEmpty,
    pub client_secret: Secret,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub token_url: Option<NonEmpty>,
    #[serde(default)]
    pub scope: Option<NonEmpty>,
    #[serde(default)]
    pub tenant_id: Option<NonEmpty>,
}

impl CredentialsEntry {
    pub fn to_secrets(&self) -> crm_sync_store::credentials::IntegrationSecrets {
        use crm_sync_store::credentials as c;
        let text = |s: &NonEmpty| s.0.clone();
        let secret = |s: &Secret| s.expose().to_owned();
        c::IntegrationSecrets {
            webhook_secret: self.webhook_secret.as_ref().map(secret),
            webhook_basic_auth: self.webhook_basic_auth.as_ref().map(|b| c::BasicAuth {
                username: text(&b.username),
                password: secret(&b.password),
            }),
            webhook_key: self.webhook_key.as_ref().map(|k| c::WebhookKey {
                header: k.header.as_ref().map(text),
                query: k.query.as_ref().map(text),
                value: secret(&k.value),
            }),
            api: self.api.as_ref().map(|a| c::ApiCredentials {
                base_url: a.base_url.as_ref().map(text),
                access_token: a.access_token.as_ref().map(secret),
                oauth: a.oauth.as_ref().map(|o| c::OAuthCredentials {
                    client_id: text(&o.client_id),
                    client_secret: secret(&o.client_secret),
                    refresh_token: o.refresh_token.as_ref().map(secret),
                    token_url: o.token_url.as_ref().map(text),
                    scope: o.scope.as_ref().map(text),
                    tenant_id: o.tenant_id.as_ref().map(text),
                }),
            }),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamEntry {
    #[serde(default)]
    pub id: Option<Uuid>,
    pub name: NonEmpty,
}

/// A workflow: the `WorkflowSpec` the evaluator runs, plus its state and optional id.
#[derive(Debug, Clone)]
pub struct WorkflowEntry {
    pub id: Option<Uuid>,
    /// `None` (the key is absent): a new workflow starts inactive, an existing one keeps its state.
    pub active: Option<bool>,
    pub spec: WorkflowSpec,
}

/// The file's form of a workflow. Building a `WorkflowSpec` from it with a struct literal makes
/// a field added to the spec a compile error here rather than a silently ignored key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(default)]
    active: Option<bool>,
    name: String,
    object_type: String,
    triggers: Vec<Trigger>,
    #[serde(default)]
    conditions: Option<LocatedCondition>,
    user_field: String,
    #[serde(default)]
    value_field: Option<String>,
    #[serde(default)]
    date_field: Option<String>,
    activity_type: String,
}

impl<'de> Deserialize<'de> for WorkflowEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = WorkflowEntry;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a workflow (a mapping with name, object_type, triggers, …)")
            }

            // Validating here, inside the deserializer's own call for this mapping, is what
            // lets the YAML deserializer attach this entry's line and path to the error.
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<WorkflowEntry, A::Error> {
                let raw = RawWorkflow::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let spec = WorkflowSpec {
                    name: raw.name,
                    object_type: raw.object_type,
                    triggers: raw.triggers,
                    conditions: raw.conditions.map_or_else(Condition::always, |c| c.0),
                    user_field: raw.user_field,
                    value_field: raw.value_field,
                    date_field: raw.date_field,
                    activity_type: raw.activity_type,
                };
                spec.validate().map_err(de::Error::custom)?;
                Ok(WorkflowEntry {
                    id: raw.id,
                    active: raw.active,
                    spec,
                })
            }
        }
        deserializer.deserialize_map(EntryVisitor)
    }
}

/// A condition tree validated by `Condition`'s own parser while the YAML position of the
/// `conditions` value is known, so an unknown operator is reported at its line.
struct LocatedCondition(Condition);

impl<'de> Deserialize<'de> for LocatedCondition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConditionVisitor;
        impl<'de> Visitor<'de> for ConditionVisitor {
            type Value = LocatedCondition;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a condition: {all: [...]}, {any: [...]}, {not: {...}} or {field, op, value}",
                )
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LocatedCondition, A::Error> {
                let value =
                    serde_json::Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Condition::from_json(&value)
                    .map(LocatedCondition)
                    .map_err(de::Error::custom)
            }
        }
        deserializer.deserialize_map(ConditionVisitor)
    }
}

/// A tenants file that could not be read or is invalid, with its location.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Located {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Unlocated { file: String, message: String },
}

impl TenantsFile {
    pub fn read(path: &Path) -> Result<TenantsFile, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            file: path.display().to_string(),
            source,
        })?;
        TenantsFile::parse(&path.display().to_string(), &text)
    }

    /// Parses and validates; `file` names the source in errors.
    pub fn parse(file: &str, text: &str) -> Result<TenantsFile, FileError> {
        let parsed: TenantsFile = serde_yaml_ng::from_str(text).map_err(|e| {
            let message = e.to_string();
            match e.location() {
                Some(loc) => {
                    // The YAML error text ends with its own position; ours leads with it.
                    let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                    FileError::Located {
                        file: file.to_owned(),
                        line: loc.line(),
                        column: loc.column(),
                        message: message.strip_suffix(&suffix).unwrap_or(&message).to_owned(),
                    }
                }
                None => FileError::Unlocated {
                    file: file.to_owned(),
                    message,
                },
            }
        })?;
        parsed
            .check_duplicates()
            .map_err(|message| FileError::Unlocated {
                file: file.to_owned(),
                message,
            })?;
        Ok(parsed)
    }

    /// Two entries with one natural key would silently overwrite each other when applied.
    fn check_duplicates(&self) -> Result<(), String> {
        fn unique<'a>(
            what: &str,
            path: &str,
            keys: impl Iterator<Item = &'a str>,
        ) -> Result<(), String> {
            let mut seen: Vec<&str> = Vec::new();
            for (i, key) in keys.enumerate() {
                if let Some(first) = seen.iter().position(|k| *k == key) {
                    return Err(format!(
                        "{path}[{i}]: duplicate {what} `{key}` (also {path}[{first}])"
                    ));
                }
                seen.push(key);
            }
            Ok(())
        }
        unique("slug", "companies", self.companies.iter().map(|c| &*c.slug))?;
        for (ci, c) in self.companies.iter().enumerate() {
            let base = format!("companies[{ci}]");
            unique(
                "name",
                &format!("{base}.integrations"),
                c.integrations.iter().map(|i| &*i.name),
            )?;
            unique(
                "name",
                &format!("{base}.teams"),
                c.teams.iter().map(|t| &*t.name),
            )?;
            for (ii, i) in c.integrations.iter().enumerate() {
                unique(
                    "name",
                    &format!("{base}.integrations[{ii}].workflows"),
                    i.workflows.iter().map(|w| w.spec.name.as_str()),
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
