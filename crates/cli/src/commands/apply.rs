//! `crm-sync apply -f tenants.yaml`: creates or updates what the file declares (schema in
//! `tenants_file`). A row that already matches the file is not written at all, so applying the
//! same file twice leaves every row (including `updated_at`) as it was and wakes no evaluator.

use std::fmt;

use anyhow::Context as _;
use crm_sync_store::admin::audit;
use crm_sync_store::credentials::{self, SecretKey, egress_from_settings};
use crm_sync_store::secrets::token_digest;
use crm_sync_store::tenants::{self, IntegrationInput};
use sqlx::PgPool;
use uuid::Uuid;

use crate::tenants_file::{
    CompanyEntry, Crm, IntegrationEntry, TeamEntry, TenantsFile, WorkflowEntry,
};

pub use super::apply_summary::print_summary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated,
    Unchanged,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Applied {
    pub companies: Vec<AppliedCompany>,
}

#[derive(Debug, Clone)]
pub struct AppliedCompany {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub change: Change,
    pub integrations: Vec<AppliedIntegration>,
    pub teams: Vec<AppliedTeam>,
}

#[derive(Debug, Clone)]
pub struct AppliedIntegration {
    pub id: Uuid,
    pub name: String,
    pub crm: Crm,
    pub change: Change,
    /// Whether a webhook token is stored after applying (never the token itself).
    pub has_token: bool,
    /// Whether encrypted credentials are stored after applying.
    pub has_credentials: bool,
    /// The stored auto-sync setting when the file omits the key (kept as it is), else `None`.
    pub kept_auto_sync: Option<bool>,
    pub workflows: Vec<AppliedWorkflow>,
}

#[derive(Debug, Clone)]
pub struct AppliedWorkflow {
    pub id: Uuid,
    pub name: String,
    pub active: bool,
    /// The file omits `active`, so the stored state was kept.
    pub active_kept: bool,
    pub change: Change,
}

#[derive(Debug, Clone)]
pub struct AppliedTeam {
    pub id: Uuid,
    pub name: String,
    pub change: Change,
}

impl Applied {
    /// (created, updated, unchanged) over every object.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut changes = Vec::new();
        for c in &self.companies {
            changes.push(c.change);
            changes.extend(c.teams.iter().map(|t| t.change));
            for i in &c.integrations {
                changes.push(i.change);
                changes.extend(i.workflows.iter().map(|w| w.change));
            }
        }
        let count = |k| changes.iter().filter(|c| **c == k).count();
        (
            count(Change::Created),
            count(Change::Updated),
            count(Change::Unchanged),
        )
    }
}

/// Applies every company in file order. Each object is upserted on its own (the shared upserts
/// take a pool), so a failure part-way leaves earlier objects applied; re-running after fixing
/// the cause is safe because everything is idempotent.
pub async fn apply(pool: &PgPool, file: &TenantsFile) -> anyhow::Result<Applied> {
    let key = credentials_key(file)?;
    let mut companies = Vec::with_capacity(file.companies.len());
    for (ci, company) in file.companies.iter().enumerate() {
        let at = format!("companies[{ci}] (slug `{}`)", &*company.slug);
        companies.push(
            apply_company(pool, company, key.as_ref())
                .await
                .with_context(|| at)?,
        );
    }
    Ok(Applied { companies })
}

/// Checks every `credentials` block before anything is written, and reads the key that seals
/// them (`secrets.encryption_key`, as the services read it) when the file has any.
fn credentials_key(file: &TenantsFile) -> anyhow::Result<Option<SecretKey>> {
    let with_credentials: Vec<_> = file
        .companies
        .iter()
        .enumerate()
        .flat_map(|(ci, company)| {
            company
                .integrations
                .iter()
                .enumerate()
                .filter_map(move |(ii, i)| Some((ci, ii, i, i.credentials.as_ref()?)))
        })
        .collect();
    if with_credentials.is_empty() {
        return Ok(None);
    }
    let settings = crm_sync_runtime::Settings::load(crate::context::DEFAULTS)?;
    // The same outbound policy as admin-api and the provisioner.
    let egress = egress_from_settings(&settings.directory);
    for (ci, ii, integration, credentials) in with_credentials {
        credentials
            .to_secrets()
            .validate(integration.crm.as_str(), &egress)
            .map_err(|e| {
                anyhow::anyhow!(
                    "companies[{ci}].integrations[{ii}] (`{}`): {e}",
                    &*integration.name
                )
            })?;
    }
    let key = SecretKey::from_settings(&settings.secrets)?.ok_or_else(|| {
        anyhow::anyhow!(
            "the file sets integration credentials, which are stored encrypted: configure secrets.encryption_key (e.g. CRM_SYNC__SECRETS__ENCRYPTION_KEY=$(openssl rand -base64 32)), the same key the services use"
        )
    })?;
    Ok(Some(key))
}

async fn apply_company(
    pool: &PgPool,
    entry: &CompanyEntry,
    key: Option<&SecretKey>,
) -> anyhow::Result<AppliedCompany> {
    let existing: Option<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM companies WHERE slug = $1")
            .bind(&*entry.slug)
            .fetch_optional(pool)
            .await
            .context("reading the company")?;
    let (id, change) = match existing {
        Some((id, name)) => {
            same_id(entry.id, id)?;
            if name == *entry.name {
                (id, Change::Unchanged)
            } else {
                let id = tenants::upsert_company(pool, Some(id), &entry.slug, &entry.name).await?;
                (id, Change::Updated)
            }
        }
        None => {
            id_is_free(pool, "companies", entry.id).await?;
            let id = tenants::upsert_company(pool, entry.id, &entry.slug, &entry.name).await?;
            (id, Change::Created)
        }
    };
    audit(
        pool,
        id,
        change,
        "company",
        id,
        serde_json::json!({ "slug": &*entry.slug, "name": &*entry.name }),
    )
    .await?;
    let mut integrations = Vec::with_capacity(entry.integrations.len());
    for (ii, integration) in entry.integrations.iter().enumerate() {
        let at = format!("integrations[{ii}] (`{}`)", &*integration.name);
        integrations.push(
            apply_integration(pool, id, integration, key)
                .await
                .with_context(|| at)?,
        );
    }
    let mut teams = Vec::with_capacity(entry.teams.len());
    for (ti, team) in entry.teams.iter().enumerate() {
        let at = format!("teams[{ti}] (`{}`)", &*team.name);
        teams.push(apply_team(pool, id, team).await.with_context(|| at)?);
    }
    Ok(AppliedCompany {
        id,
        slug: entry.slug.0.clone(),
        name: entry.name.0.clone(),
        change,
        integrations,
        teams,
    })
}

#[derive(sqlx::FromRow)]
struct IntegrationRow {
    id: Uuid,
    crm: String,
    crm_account_id: String,
    auto_sync_users: bool,
    webhook_token_sha256: Option<Vec<u8>>,
}

async fn apply_integration(
    pool: &PgPool,
    company_id: Uuid,
    entry: &IntegrationEntry,
    key: Option<&SecretKey>,
) -> anyhow::Result<AppliedIntegration> {
    let existing: Option<IntegrationRow> = sqlx::query_as(
        "SELECT id, crm, crm_account_id, auto_sync_users, webhook_token_sha256
         FROM integrations WHERE company_id = $1 AND name = $2",
    )
    .bind(company_id)
    .bind(&*entry.name)
    .fetch_optional(pool)
    .await
    .context("reading the integration")?;
    let token = entry.webhook_token.as_ref().map(|t| t.expose().to_owned());
    // A key the file omits keeps what is stored (an admin may have changed it in the page).
    let stored_auto_sync = existing.as_ref().map(|row| row.auto_sync_users);
    let auto_sync_users = entry.auto_sync_users.or(stored_auto_sync).unwrap_or(false);
    let kept_auto_sync = stored_auto_sync.filter(|_| entry.auto_sync_users.is_none());
    let (id, change, has_token) = write_integration(
        pool,
        company_id,
        entry,
        existing,
        token.as_deref(),
        auto_sync_users,
    )
    .await?;
    let mut change = change;
    let mut credentials_changed = false;
    if let (Some(credentials), Some(key)) = (&entry.credentials, key) {
        credentials_changed =
            credentials::update(pool, key, company_id, id, credentials.to_secrets())
                .await
                .context("storing the integration's credentials")?;
        if credentials_changed && change == Change::Unchanged {
            change = Change::Updated;
        }
    }
    // Never a secret: whether a token or credentials were written, not what they are.
    audit(
        pool,
        company_id,
        change,
        "integration",
        id,
        serde_json::json!({
            "name": &*entry.name,
            "crm": entry.crm.as_str(),
            "crm_account_id": &*entry.crm_account_id,
            "auto_sync_users": auto_sync_users,
            "webhook_token_set": token.is_some(),
            "credentials_changed": credentials_changed,
        }),
    )
    .await?;
    let has_credentials = credentials::exists(pool, id)
        .await
        .context("reading the integration's credentials")?;
    let workflows = apply_workflows(pool, company_id, id, entry).await?;
    Ok(AppliedIntegration {
        id,
        name: entry.name.0.clone(),
        crm: entry.crm,
        change,
        has_token,
        has_credentials,
        kept_auto_sync,
        workflows,
    })
}

/// Creates the integration or updates what the file changes; the id, the change and whether a
/// webhook token is set.
async fn write_integration(
    pool: &PgPool,
    company_id: Uuid,
    entry: &IntegrationEntry,
    existing: Option<IntegrationRow>,
    token: Option<&str>,
    auto_sync_users: bool,
) -> anyhow::Result<(Uuid, Change, bool)> {
    let input = |id| IntegrationInput {
        id,
        company_id,
        name: entry.name.0.clone(),
        crm: entry.crm.as_str().to_owned(),
        crm_account_id: entry.crm_account_id.0.clone(),
        auto_sync_users,
        webhook_token: token.map(str::to_owned),
    };
    Ok(match existing {
        Some(row) => {
            same_id(entry.id, row.id)?;
            let token_same = match (token, &row.webhook_token_sha256) {
                (None, _) => true,
                (Some(t), Some(stored)) => token_digest(t) == *stored,
                (Some(_), None) => false,
            };
            let has_token = token.is_some() || row.webhook_token_sha256.is_some();
            if row.crm == entry.crm.as_str()
                && row.crm_account_id == *entry.crm_account_id
                && row.auto_sync_users == auto_sync_users
                && token_same
            {
                (row.id, Change::Unchanged, has_token)
            } else {
                let id = tenants::upsert_integration(pool, &input(Some(row.id))).await?;
                (id, Change::Updated, has_token)
            }
        }
        None => {
            id_is_free(pool, "integrations", entry.id).await?;
            let id = tenants::upsert_integration(pool, &input(entry.id)).await?;
            (id, Change::Created, token.is_some())
        }
    })
}

async fn apply_workflows(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    entry: &IntegrationEntry,
) -> anyhow::Result<Vec<AppliedWorkflow>> {
    let mut workflows = Vec::with_capacity(entry.workflows.len());
    for (wi, workflow) in entry.workflows.iter().enumerate() {
        let at = format!("workflows[{wi}] (`{}`)", workflow.spec.name);
        workflows.push(
            apply_workflow(pool, company_id, integration_id, workflow)
                .await
                .with_context(|| at)?,
        );
    }
    Ok(workflows)
}

#[derive(sqlx::FromRow)]
struct WorkflowRow {
    id: Uuid,
    object_type: String,
    triggers: Vec<String>,
    conditions: serde_json::Value,
    user_field: String,
    value_field: Option<String>,
    date_field: Option<String>,
    activity_type: String,
    active: bool,
}

impl WorkflowRow {
    /// Whether the stored workflow is already what the file says.
    fn is(
        &self,
        spec: &crm_sync_workflow::WorkflowSpec,
        triggers: &[String],
        active: bool,
    ) -> bool {
        self.object_type == spec.object_type
            && self.triggers == triggers
            && self.conditions == spec.conditions.to_json()
            && self.user_field == spec.user_field
            && self.value_field == spec.value_field
            && self.date_field == spec.date_field
            && self.activity_type == spec.activity_type
            && self.active == active
    }
}

async fn apply_workflow(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    entry: &WorkflowEntry,
) -> anyhow::Result<AppliedWorkflow> {
    let spec = &entry.spec;
    let existing: Option<WorkflowRow> = sqlx::query_as(
        "SELECT id, object_type, triggers, conditions, user_field, value_field, date_field,
                activity_type, active
         FROM workflows WHERE integration_id = $1 AND name = $2",
    )
    .bind(integration_id)
    .bind(&spec.name)
    .fetch_optional(pool)
    .await
    .context("reading the workflow")?;
    let triggers: Vec<String> = spec
        .triggers
        .iter()
        .map(|t| t.as_str().to_owned())
        .collect();
    let active_kept = existing.is_some() && entry.active.is_none();
    let active = entry
        .active
        .or(existing.as_ref().map(|row| row.active))
        .unwrap_or(false);
    let (id, change) = match existing {
        Some(row) => {
            same_id(entry.id, row.id)?;
            if row.is(spec, &triggers, active) {
                (row.id, Change::Unchanged)
            } else {
                let id = tenants::upsert_workflow(
                    pool,
                    Some(row.id),
                    company_id,
                    integration_id,
                    spec,
                    active,
                )
                .await?;
                (id, Change::Updated)
            }
        }
        None => {
            id_is_free(pool, "workflows", entry.id).await?;
            let id =
                tenants::upsert_workflow(pool, entry.id, company_id, integration_id, spec, active)
                    .await?;
            (id, Change::Created)
        }
    };
    audit(
        pool,
        company_id,
        change,
        "workflow",
        id,
        serde_json::json!({
            "integration_id": integration_id,
            "name": &spec.name,
            "object_type": &spec.object_type,
            "active": active,
        }),
    )
    .await?;
    Ok(AppliedWorkflow {
        id,
        name: spec.name.clone(),
        active,
        active_kept,
        change,
    })
}

async fn apply_team(
    pool: &PgPool,
    company_id: Uuid,
    entry: &TeamEntry,
) -> anyhow::Result<AppliedTeam> {
    let existing: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM teams WHERE company_id = $1 AND name = $2")
            .bind(company_id)
            .bind(&*entry.name)
            .fetch_optional(pool)
            .await
            .context("reading the team")?;
    let (id, change) = match existing {
        Some((id,)) => {
            same_id(entry.id, id)?;
            (id, Change::Unchanged)
        }
        None => {
            id_is_free(pool, "teams", entry.id).await?;
            let id = tenants::upsert_team(pool, entry.id, company_id, &entry.name).await?;
            (id, Change::Created)
        }
    };
    audit(
        pool,
        company_id,
        change,
        "team",
        id,
        serde_json::json!({ "name": &*entry.name }),
    )
    .await?;
    Ok(AppliedTeam {
        id,
        name: entry.name.0.clone(),
        change,
    })
}

/// Records a change `apply` made in the company's audit log, as actor `cli` (like every change
/// through the admin API is recorded with its token). Unchanged objects are not recorded.
async fn audit(
    pool: &PgPool,
    company_id: Uuid,
    change: Change,
    target_type: &str,
    target_id: Uuid,
    details: serde_json::Value,
) -> anyhow::Result<()> {
    let action = match change {
        Change::Created => "created",
        Change::Updated => "updated",
        Change::Unchanged => return Ok(()),
    };
    let mut conn = pool.acquire().await.context("recording the audit log")?;
    audit::record(
        &mut conn,
        company_id,
        &audit::Actor {
            token_id: None,
            name: "cli".into(),
        },
        &format!("{target_type}.{action}"),
        target_type,
        &target_id.to_string(),
        details,
    )
    .await
    .context("recording the audit log")
}

/// An `id:` in the file must agree with the row its natural key already names.
fn same_id(declared: Option<Uuid>, stored: Uuid) -> anyhow::Result<()> {
    match declared {
        Some(declared) if declared != stored => anyhow::bail!(
            "the file gives id {declared}, but this object already exists with id {stored} \
             (remove `id:` or correct it; apply does not change ids)"
        ),
        _ => Ok(()),
    }
}

/// A declared id for a new object must not belong to a different one (apply does not rename).
async fn id_is_free(pool: &PgPool, table: &'static str, id: Option<Uuid>) -> anyhow::Result<()> {
    let Some(id) = id else {
        return Ok(());
    };
    // `table` is one of this module's literals, never input.
    let (taken,): (bool,) = sqlx::query_as(&format!(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1)"
    ))
    .bind(id)
    .fetch_one(pool)
    .await
    .with_context(|| format!("checking id {id} in {table}"))?;
    if taken {
        anyhow::bail!(
            "id {id} already belongs to another row of {table} with a different name \
             (apply does not rename; change the name back or remove `id:`)"
        );
    }
    Ok(())
}
