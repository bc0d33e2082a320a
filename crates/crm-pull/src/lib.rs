//! Pulls records from the CRMs' APIs, for backfills, reconciliation and hydration.
//!
//! | CRM | changes since a time | deletes | one record |
//! |---|---|---|---|
//! | Salesforce | REST `queryAll` of the SOQL `… WHERE SystemModstamp >= t ORDER BY SystemModstamp, Id`, `nextRecordsUrl` paging | `IsDeleted = true` rows of the same query | `sobjects/{object}/{id}` |
//! | HubSpot | CRM search on `hs_lastmodifieddate >= t` ascending, each page a new search from the newest time read (`after` only through records sharing one stamp) | archived objects (`archived=true`) newer than `t` | batch read |
//! | Pipedrive | v2 list with `updated_since`, `sort_by=update_time`, cursor paging | deals: `status=deleted` | v2 `/{objects}/{id}` |
//! | Dataverse | Web API `$filter=modifiedon ge t`, `$select`, `$orderby=modifiedon,{table}id`, `@odata.nextLink` paging | change tracking (`Prefer: odata.track-changes`, removed rows from the delta link) | `/{set}({id})` |
//!
//! Every record becomes a [`CrmEvent`] with `full_snapshot` set, a stable event id from (object,
//! record id, the CRM's modification stamp), `occurred_at` the CRM's modification time, and the
//! field names and value types the webhook connectors of that CRM produce, so that a workflow
//! written for webhooks reads pulled records the same way.
//!
//! Requests go through the directory's [`ApiClient`]: the same credentials, OAuth, HTTP client,
//! timeouts, the one retry rule (backoff, `Retry-After`, one token refresh) and the outbound
//! policy (allowed hosts, no internal addresses, no redirects, answers read up to a cap).

pub mod credentials;
mod dynamics;
mod hubspot;
pub mod hydrate;
pub mod jobs;
pub mod lag;
pub mod metric_definitions;
mod pace;
mod pipedrive;
mod salesforce;
pub mod sink;
pub mod worker;

use std::borrow::Cow;
use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_crm_directory::{ApiClient, ApiResponse, Config, Credentials, Crm, LookupError};
use crm_sync_ingest::event;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crm_sync_crm_directory::Config as ApiConfig;

#[derive(Debug, Clone)]
pub struct PullConfig {
    /// Timeouts, attempts and backoff of each request, the outbound policy and answer size cap.
    pub api: Config,
    /// Records asked for per page (each CRM caps it: Salesforce 2,000, HubSpot search 200,
    /// Pipedrive 500, Dataverse 5,000).
    pub page_size: u32,
    /// Salesforce: pulls stop once the org has used this share of its daily API requests
    /// (`Sforce-Limit-Info`), leaving the rest to the customer's other integrations.
    pub salesforce_max_api_share: f64,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            api: Config {
                timeout: std::time::Duration::from_secs(30),
                attempts: 5,
                initial_backoff: std::time::Duration::from_millis(500),
                max_backoff: std::time::Duration::from_secs(60),
                // A page of thousands of records is far larger than a user lookup's answer.
                max_answer_bytes: 32 * 1024 * 1024,
                ..Config::default()
            },
            page_size: 200,
            salesforce_max_api_share: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PullError {
    /// Credentials missing or refused, the CRM unavailable (after retries), an unexpected status.
    #[error(transparent)]
    Api(#[from] LookupError),
    #[error("the {crm} API answered something that is not {what}: {problem}")]
    Garbage {
        crm: &'static str,
        what: &'static str,
        problem: String,
    },
    #[error("{0}")]
    ApiLimit(String),
    #[error("cannot pull {0}")]
    Invalid(String),
}

impl PullError {
    /// Worth trying again later: the CRM or the network may recover, a daily limit resets.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Api(e) => e.is_transient(),
            PullError::ApiLimit(_) => true,
            PullError::Garbage { .. } | PullError::Invalid(_) => false,
        }
    }
}

/// What to pull: a CRM object and the fields the integration's workflows read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The object as the webhooks name it (`Opportunity`, `deal`, `opportunity`).
    pub object: String,
    /// Field names as the webhooks name them; the CRM's id, owner and modification stamp are
    /// always added.
    pub fields: Vec<String>,
    /// Whether a pass with no kept change-tracking position starts one (Dataverse reads the
    /// table's ids for it). A schedule's next run reads deletes from it; a one-off backfill
    /// would read every id of the table for nothing.
    pub establish_tracking: bool,
}

impl Scope {
    /// An object with no fields yet, whose pass establishes change tracking.
    pub fn new(object: impl Into<String>) -> Scope {
        Scope {
            object: object.into(),
            fields: Vec::new(),
            establish_tracking: true,
        }
    }
}

/// Where a pass over an object's changes stands: saved after each published page, so that a
/// restarted job goes on from there. A pass visits the CRM's change streams in order (e.g.
/// HubSpot's live records, then its archived ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub stream: u8,
    /// Records modified at or after this time are still to come in the current stream.
    pub since: DateTime<Utc>,
    /// The CRM's paging token within the current query, when one is open.
    pub token: Option<String>,
    /// A change-tracking position kept from the previous run (Dataverse's delta link): where the
    /// deletes since then are read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// Where the pass began, when the current stream's query was started again from a later
    /// time (HubSpot's search, from each page's newest time): the next stream starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<DateTime<Utc>>,
}

impl Cursor {
    pub fn start(since: DateTime<Utc>) -> Cursor {
        Cursor {
            stream: 0,
            since,
            token: None,
            delta: None,
            origin: None,
        }
    }
}

/// One page of changes.
#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<CrmEvent>,
    /// Where the next page starts; `None` once every stream of the pass is read.
    pub next: Option<Cursor>,
    /// The newest modification time seen in this page.
    pub newest: Option<DateTime<Utc>>,
    /// A new change-tracking position to keep for the next run, on a pass's last page.
    pub delta: Option<String>,
}

/// One integration's CRM API, for pulling. Cheap to share (`Arc`).
pub struct PullClient {
    integration_id: Uuid,
    api: ApiClient,
    config: PullConfig,
    /// Salesforce's last `Sforce-Limit-Info`: (used, limit).
    api_usage: Mutex<Option<(u64, u64)>>,
}

impl fmt::Debug for PullClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullClient")
            .field("integration_id", &self.integration_id)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl PullClient {
    /// Checks the credentials have what the CRM needs; makes no request.
    pub fn new(
        integration_id: Uuid,
        crm: Crm,
        credentials: Credentials,
        config: PullConfig,
    ) -> Result<PullClient, PullError> {
        let api = ApiClient::new(crm, credentials, config.api.clone())?;
        Ok(PullClient {
            integration_id,
            api,
            config,
            api_usage: Mutex::new(None),
        })
    }

    pub fn crm(&self) -> Crm {
        self.api.crm()
    }

    pub fn integration_id(&self) -> Uuid {
        self.integration_id
    }

    /// Salesforce's daily API usage as last reported: (used, limit).
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        *self.api_usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores each refresh token the CRM rotates with `keeper`, right after it is issued.
    pub fn keeping_rotated_tokens(
        mut self,
        keeper: std::sync::Arc<dyn crm_sync_crm_directory::KeepRefreshToken>,
    ) -> PullClient {
        self.api = self.api.keeping_rotated_tokens(keeper);
        self
    }

    /// The page of changes (deletes included) of `scope` at `cursor`.
    pub async fn changes(&self, scope: &Scope, cursor: &Cursor) -> Result<Page, PullError> {
        let scope = &checked_scope(self.crm(), scope)?;
        match self.crm() {
            Crm::Salesforce => salesforce::changes(self, scope, cursor).await,
            Crm::HubSpot => hubspot::changes(self, scope, cursor).await,
            Crm::Pipedrive => pipedrive::changes(self, scope, cursor).await,
            Crm::Dynamics => dynamics::changes(self, scope, cursor).await,
        }
    }

    /// One record whole (for hydration); `None` when the CRM has no such record.
    pub async fn record(&self, scope: &Scope, id: &str) -> Result<Option<CrmEvent>, PullError> {
        let scope = &checked_scope(self.crm(), scope)?;
        if !event::valid_record_id(id)
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(PullError::Invalid(format!("record id {id:?}")));
        }
        match self.crm() {
            Crm::Salesforce => salesforce::record(self, scope, id).await,
            Crm::HubSpot => hubspot::record(self, scope, id).await,
            Crm::Pipedrive => pipedrive::record(self, scope, id).await,
            Crm::Dynamics => dynamics::record(self, scope, id).await,
        }
    }

    /// Sends through the shared client; refuses when Salesforce's share of the daily limit is
    /// used up, and remembers the usage each answer reports.
    pub(crate) async fn send<F>(&self, what: &str, build: F) -> Result<ApiResponse, PullError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        self.send_answering(what, &[], build).await
    }

    /// As [`PullClient::send`], and answers `also` statuses rather than making errors of them.
    pub(crate) async fn send_answering<F>(
        &self,
        what: &str,
        also: &[reqwest::StatusCode],
        build: F,
    ) -> Result<ApiResponse, PullError>
    where
        F: Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    {
        self.check_api_share()?;
        let response = self.api.send_answering(what, also, build).await?;
        if let Some(usage) = salesforce::limit_info(&response.headers) {
            *self.api_usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
        }
        Ok(response)
    }

    fn check_api_share(&self) -> Result<(), PullError> {
        let Some((used, limit)) = self.api_usage() else {
            return Ok(());
        };
        let share = self.config.salesforce_max_api_share;
        if limit > 0 && used as f64 >= share * limit as f64 {
            return Err(PullError::ApiLimit(format!(
                "the Salesforce org has used {used} of its {limit} daily API requests; pulls stop at {:.0} % (setting pull.salesforce_max_api_share)",
                share * 100.0
            )));
        }
        Ok(())
    }

    pub(crate) fn page_size(&self, cap: u32) -> u32 {
        self.config.page_size.clamp(1, cap)
    }

    /// A pulled record as an event.
    pub(crate) fn event(&self, record: Pulled) -> CrmEvent {
        let stamp = record.modified.to_rfc3339_opts(SecondsFormat::Micros, true);
        let crm = self.crm();
        // Some CRMs stamp changes to the second (Pipedrive): a record deleted in the second it
        // was last changed has the same stamp as that version, and must not share its event id
        // (it would be taken for a redelivery of it and dropped).
        let mut identity = vec![record.object.as_str(), record.id.as_str(), stamp.as_str()];
        if record.change == ChangeType::Deleted {
            identity.push("deleted");
        }
        CrmEvent {
            event_id: event::event_id(
                &format!("{}-pull", crm.as_str()),
                self.integration_id,
                &identity,
            )
            .to_string(),
            integration_id: self.integration_id.to_string(),
            crm: kind(crm) as i32,
            object_type: record.object,
            record_id: record.id,
            change_type: record.change as i32,
            fields: record.fields.into_iter().collect(),
            previous_fields: Default::default(),
            owner: record.owner.map(|id| CrmUser {
                crm_user_id: id,
                ..CrmUser::default()
            }),
            occurred_at: Some(event::timestamp(record.modified)),
            received_at: Some(event::timestamp(Utc::now())),
            source_delivery_id: String::new(),
            crm_account_id: String::new(),
            source_change_type: String::new(),
            full_snapshot: true,
            fields_omitted: false,
        }
    }

    pub(crate) fn garbage(&self, what: &'static str, problem: impl fmt::Display) -> PullError {
        PullError::Garbage {
            crm: self.crm().as_str(),
            what,
            problem: problem.to_string(),
        }
    }
}

/// A record as read from the CRM, before it becomes an event.
pub(crate) struct Pulled {
    pub object: String,
    pub id: String,
    pub change: ChangeType,
    pub modified: DateTime<Utc>,
    pub fields: Vec<(String, FieldValue)>,
    pub owner: Option<String>,
}

fn kind(crm: Crm) -> CrmKind {
    match crm {
        Crm::Salesforce => CrmKind::Salesforce,
        Crm::HubSpot => CrmKind::Hubspot,
        Crm::Pipedrive => CrmKind::Pipedrive,
        Crm::Dynamics => CrmKind::Dynamics,
    }
}

/// The scope with its object spelled as the CRM's webhooks spell it, so that a pulled record
/// lands under the same Kafka key, and in the same record state, as its webhooks, whatever case
/// the workflow wrote the object in. HubSpot, Pipedrive and Dataverse name objects in lowercase
/// (and their APIs want them so); Salesforce's API matches names ignoring case, and each record
/// it returns names its object as Salesforce spells it (see `salesforce::to_pulled`).
///
/// Object and field names end up in queries and URLs: only what the CRMs' names are made of
/// (HubSpot's custom objects, `object_2-1234567` as its webhooks name them, also a `-`).
fn checked_scope(crm: Crm, scope: &Scope) -> Result<Cow<'_, Scope>, PullError> {
    let name = |n: &str| {
        !n.is_empty() && n.len() <= 100 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    let object_name = |n: &str| match (crm, n.strip_prefix("object_")) {
        (Crm::HubSpot, Some(type_id)) => hubspot::custom_type_id(type_id),
        _ => name(n),
    };
    if !event::valid_object_type(&scope.object) || !object_name(&scope.object) {
        return Err(PullError::Invalid(format!(
            "{} object {:?}: not an object name",
            crm.as_str(),
            scope.object
        )));
    }
    if let Some(bad) = scope.fields.iter().find(|f| !name(f)) {
        return Err(PullError::Invalid(format!(
            "{} field {bad:?} of {}: not a field name",
            crm.as_str(),
            scope.object
        )));
    }
    let lowercase = crm != Crm::Salesforce && scope.object.bytes().any(|b| b.is_ascii_uppercase());
    Ok(if lowercase {
        Cow::Owned(Scope {
            object: scope.object.to_ascii_lowercase(),
            ..scope.clone()
        })
    } else {
        Cow::Borrowed(scope)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_spelled_as_the_crms_webhooks_spell_them() {
        let object =
            |crm, name: &str| checked_scope(crm, &Scope::new(name)).map(|s| s.object.clone());
        assert_eq!(object(Crm::HubSpot, "Deal").unwrap(), "deal");
        assert_eq!(object(Crm::Pipedrive, "Deal").unwrap(), "deal");
        assert_eq!(object(Crm::Dynamics, "Opportunity").unwrap(), "opportunity");
        // Salesforce's own spelling comes with each record it returns.
        assert_eq!(
            object(Crm::Salesforce, "opportunity").unwrap(),
            "opportunity"
        );
        assert_eq!(
            object(Crm::HubSpot, "object_2-3508482").unwrap(),
            "object_2-3508482"
        );
        assert!(object(Crm::Salesforce, "object_2-3508482").is_err());
        assert!(object(Crm::HubSpot, "object_2-x").is_err());
        assert!(object(Crm::HubSpot, "deal-x").is_err());
    }
}
