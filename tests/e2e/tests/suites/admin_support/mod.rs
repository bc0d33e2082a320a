//! What the admin suites share: an admin-api process per test, tokens, and a small JSON client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crm_sync_e2e::app::AdminClient;
use crm_sync_e2e::{Service, Tenant, TestEnv};
use crm_sync_store::admin::tokens::{self, Role};
use uuid::Uuid;

/// The `secrets.encryption_key` admin-api (and ingest, where a suite needs it) seals
/// integration credentials with in these suites (32 bytes, base64).
pub const ENCRYPTION_KEY: &str = "zHb8wT3nqV0rXy5kLm2pQs7uEf9gJd4aRt6cNv1oWiY=";

/// admin-api's variables in these suites, for `AppOptions::admin_api_env`.
pub const ADMIN_API_ENV: &[(&str, &str)] = &[("CRM_SYNC__SECRETS__ENCRYPTION_KEY", ENCRYPTION_KEY)];

pub async fn start_admin_api(env: &TestEnv) -> Service {
    start_admin_api_with(env, &[]).await
}

/// admin-api with more configuration, e.g. where CRMs reach ingest (`ingest.public_url`).
pub async fn start_admin_api_with(env: &TestEnv, extra_env: &[(&str, &str)]) -> Service {
    let mut vars = ADMIN_API_ENV.to_vec();
    vars.extend_from_slice(extra_env);
    env.start_service("admin-api", "admin-api", &vars).await
}

/// An admin test's usual start: a company, another one (for isolation checks), admin-api, and a
/// client of an admin of the first company.
pub struct AdminWorld {
    pub tenant: Tenant,
    pub other: Tenant,
    /// Stopped when dropped: held so that admin-api runs for the test's length.
    pub api: Service,
    pub admin: AdminClient,
}

/// Creates the companies `slugs` names (with `auto_sync` users), an admin token of the first,
/// and starts admin-api.
pub async fn admin_world(env: &TestEnv, slugs: (&str, &str), auto_sync: bool) -> AdminWorld {
    let tenant = Tenant::create(&env.pool, slugs.0, auto_sync, true).await;
    let other = Tenant::create(&env.pool, slugs.1, auto_sync, true).await;
    let admin = token(env, tenant.company_id, "admin").await;
    let api = start_admin_api(env).await;
    AdminWorld {
        admin: AdminClient::new(&api, Some(&admin)),
        tenant,
        other,
        api,
    }
}

impl AdminWorld {
    /// A client of a viewer of the first company (a new token, audited as such).
    pub async fn viewer(&self, env: &TestEnv) -> AdminClient {
        let viewer = token(env, self.tenant.company_id, "viewer").await;
        AdminClient::new(&self.api, Some(&viewer))
    }
}

/// A bearer token of `role` for the company.
pub async fn token(env: &TestEnv, company_id: Uuid, role: &str) -> String {
    let role = Role::parse(role).unwrap();
    tokens::create(
        &env.pool,
        company_id,
        role,
        Some("e2e"),
        tokens::DEFAULT_LIFETIME_DAYS,
    )
    .await
    .unwrap()
    .bearer
}

pub async fn company(env: &TestEnv, slug: &str) -> Uuid {
    crm_sync_store::tenants::upsert_company(&env.pool, None, slug, &format!("{slug} Inc"))
        .await
        .unwrap()
}

pub fn company_path(company_id: Uuid, rest: &str) -> String {
    format!("/admin/v1/companies/{company_id}{rest}")
}

/// A pending auto-synced user mapped to `crm_user_id`, with `values` recorded as `deal_won`
/// activities of the tenant's workflow (what the provisioner leaves behind).
pub async fn seed_pending_user(
    env: &TestEnv,
    tenant: &crm_sync_e2e::Tenant,
    name: &str,
    crm_user_id: &str,
    values: &[&str],
) -> Uuid {
    let user_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO users (id, company_id, display_name, email, status, source)
         VALUES ($1, $2, $3, $4, 'pending', 'auto_sync')",
    )
    .bind(user_id)
    .bind(tenant.company_id)
    .bind(name)
    .bind(format!(
        "{}@example.com",
        name.to_lowercase().replace(' ', ".")
    ))
    .execute(&env.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO crm_identities (company_id, integration_id, crm_user_id, user_id, display_name)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant.company_id)
    .bind(tenant.integration_id)
    .bind(crm_user_id)
    .bind(user_id)
    .bind(name)
    .execute(&env.pool)
    .await
    .unwrap();
    seed_activities(
        env,
        tenant,
        crm_user_id,
        Some(user_id),
        values,
        "2026-11-20",
    )
    .await;
    user_id
}

/// `deal_won` activities of the tenant's workflow, one per value.
pub async fn seed_activities(
    env: &TestEnv,
    tenant: &crm_sync_e2e::Tenant,
    crm_user_id: &str,
    user_id: Option<Uuid>,
    values: &[&str],
    date: &str,
) {
    for value in values {
        sqlx::query(
            "INSERT INTO activities (id, company_id, integration_id, workflow_id, object_type, record_id,
                 crm_user_id, user_id, activity_type, value, activity_date, state, last_event_at, last_event_id)
             VALUES ($1, $2, $3, $4, 'Opportunity', $5, $6, $7, 'deal_won', $8::numeric, $9::date, 'recorded', now(), 'seed')",
        )
        .bind(Uuid::new_v4())
        .bind(tenant.company_id)
        .bind(tenant.integration_id)
        .bind(tenant.workflow_id)
        .bind(format!("006{}", &Uuid::new_v4().simple().to_string()[..15]))
        .bind(crm_user_id)
        .bind(user_id)
        .bind(value)
        .bind(date)
        .execute(&env.pool)
        .await
        .unwrap();
    }
}
