//! Pull jobs running inside ingest, end to end: the fake CRM APIs of the kit, the real Kafka and
//! PostgreSQL, ingest, the evaluator and the provisioner as processes.
//!
//! - [`reconcile`]: a webhook that never came and a deletion are fixed by the reconciliation;
//!   missing API credentials are said in the job; an object the API user cannot read is named
//!   in the sync status while the others are still reconciled;
//! - [`hydrate`]: a HubSpot stage change of a deal whose amount predates the integration: the
//!   evaluator asks for the record, ingest answers from the CRM's API;
//! - [`limits`]: `Retry-After` honoured, the Salesforce daily share stops a backfill;
//! - [`load`] (ignored; `tests/load/backfill.sh`): figures of a 100,000-record backfill and the
//!   live path's latency meanwhile;
//! - [`backfill`]: a backfill on connect, run by one of two replicas at a time, SIGKILLed
//!   mid-way and resumed from its checkpoint: every won record exactly one activity;
//! - [`shutdown`]: SIGTERM hands a running backfill to the other replica at once; the
//!   hydration consumer is in `/readyz`;
//! - [`exclusive`]: an admin's start and the backfill on connect at the same moment make one
//!   backfill;
//! - [`pacing`]: a backfill waits while the evaluator lags;
//! - [`pipedrive`]: a Pipedrive reconciliation counts a missed won deal and retracts a deleted one;
//! - [`dataverse`]: a Dataverse reconciliation counts a missed won opportunity; a context
//!   Dataverse stripped for its size is answered from the Web API;
//! - [`object_names`]: a workflow naming its object in another case than the CRM still has a
//!   pulled delete retract what a webhook recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backfill;
use crate::connectors;
mod dataverse;
mod exclusive;
mod hydrate;
mod limits;
mod load;
mod object_names;
mod pacing;
mod pipedrive;
mod reconcile;
mod shutdown;

use std::time::Duration;

use crm_sync_e2e::fake_crm::{FakeCrm, Kind};
use crm_sync_e2e::{Service, TestEnv, eventually};
use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets};
use crm_sync_store::sync_jobs::{self, Job};
use serde_json::{Value, json};
use uuid::Uuid;

pub const ORG: &str = "00D5g000004PULLAA";
pub const WEBHOOK_TOKEN: &str = "sf-webhook-token-pull";
pub const API_TOKEN: &str = "sf-session-token-pull";
pub const OWNER: &str = "0055g00000PuLlAAAZ";

/// API credentials pointing at a fake CRM: its URL and a token.
pub fn api_secrets(fake: &FakeCrm, token: &str) -> IntegrationSecrets {
    IntegrationSecrets {
        api: Some(ApiCredentials {
            base_url: Some(fake.url.clone()),
            access_token: Some(token.into()),
            oauth: None,
        }),
        ..IntegrationSecrets::default()
    }
}

/// The integration's API credentials: the fake Salesforce's URL and a session token.
pub fn salesforce_api(fake: &FakeCrm) -> IntegrationSecrets {
    api_secrets(fake, API_TOKEN)
}

/// A Salesforce integration of the fake CRM, with the won-opportunities workflow.
pub async fn salesforce_setup(name: &str, fake: &FakeCrm) -> connectors::Setup {
    connectors::setup(
        name,
        "salesforce",
        ORG,
        salesforce_api(fake),
        Some(WEBHOOK_TOKEN),
        won_workflow(),
    )
    .await
}

pub fn won_workflow() -> Value {
    json!({
        "name": "Won opportunities", "object_type": "Opportunity", "triggers": ["created", "updated"],
        "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
        "user_field": "OwnerId", "value_field": "Amount", "date_field": "CloseDate",
        "activity_type": "deal_won"
    })
}

pub async fn fake_salesforce() -> FakeCrm {
    FakeCrm::start(Kind::Salesforce, API_TOKEN).await
}

pub fn opportunity(stage: &str, amount: u64) -> Value {
    json!({"StageName": stage, "Amount": amount, "OwnerId": OWNER, "CloseDate": "2026-11-20"})
}

/// ingest with the encryption key and pull settings fast enough for a test.
pub async fn ingest(env: &TestEnv, label: &str, extra: &[(&str, &str)]) -> Service {
    let mut vars = connectors::SERVICE_ENV.to_vec();
    vars.extend_from_slice(&[
        ("CRM_SYNC__PULL__POLL_INTERVAL_MS", "200"),
        ("CRM_SYNC__PULL__LEASE_SECS", "5"),
        ("CRM_SYNC__PULL__RETRY_BACKOFF_SECS", "1"),
        ("CRM_SYNC__PULL__REQUEST_TIMEOUT_MS", "5000"),
    ]);
    vars.extend_from_slice(extra);
    env.start_service("ingest", label, &vars).await
}

pub async fn jobs(env: &TestEnv, integration_id: Uuid) -> Vec<Job> {
    let company: (Uuid,) = sqlx::query_as("SELECT company_id FROM integrations WHERE id = $1")
        .bind(integration_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    sync_jobs::list(&env.pool, company.0, integration_id)
        .await
        .unwrap()
}

pub async fn wait_for_job<F>(env: &TestEnv, integration_id: Uuid, what: &str, f: F) -> Job
where
    F: Fn(&Job) -> bool,
{
    eventually(what, Duration::from_secs(60), || async {
        jobs(env, integration_id).await.into_iter().find(|j| f(j))
    })
    .await
}
