//! The reconciliation of a Dataverse integration through the whole pipeline: a won opportunity
//! whose webhook never came is pulled from the Web API (`$filter=modifiedon ge …`, `$select`,
//! `@odata.nextLink`) and counted, the owner read from `_ownerid_value`; deleted in Dataverse, it
//! is retracted by a later run, from change tracking's delta link that the schedule keeps.

use crm_sync_e2e::fake_crm::{FakeCrm, Kind};
use crm_sync_store::sync_jobs::JobKind;
use serde_json::json;

use super::connectors::{setup, wait_for_activity};
use super::reconcile::reconciling_pipeline;
use super::*;

const ORGANIZATION: &str = "5a1e6b0e-0000-4000-8000-00000000d1a7";
const DATAVERSE_TOKEN: &str = "dataverse-access-token-pull";
const OWNER_ID: &str = "7c0e9f2a-1111-4222-8333-444455556666";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataverse_opportunity_whose_webhook_never_came_is_counted_and_its_delete_retracted() {
    let fake = FakeCrm::start(Kind::Dynamics, DATAVERSE_TOKEN).await;
    let s = setup(
        "pull-reconcile-dataverse",
        "dynamics",
        ORGANIZATION,
        api_secrets(&fake, DATAVERSE_TOKEN),
        None,
        json!({
            "name": "Won opportunities", "object_type": "opportunity", "triggers": ["created", "updated"],
            "conditions": {"all": [{"field": "statecode", "op": "eq", "value": 1}]},
            "user_field": "ownerid", "value_field": "estimatedvalue", "date_field": "actualclosedate",
            "activity_type": "deal_won"
        }),
    )
    .await;
    let _p = reconciling_pipeline(&s).await;

    let record = "9d5b1c3e-aaaa-4bbb-8ccc-0000000000aa";
    fake.put(
        "opportunity",
        record,
        json!({"statecode": 1, "estimatedvalue": 500, "_ownerid_value": OWNER_ID,
               "actualclosedate": "2026-11-20", "name": "Contoso renewal"}),
    );
    let recorded = wait_for_activity(&s.env, s.integration_id, record, "recorded").await;
    assert_eq!(recorded.value, "500");
    assert_eq!(recorded.crm_user_id, OWNER_ID);
    let requests = fake.requests_to("/api/data/v9.2/opportunities");
    assert!(
        requests.iter().any(|r| r
            .query
            .get("$filter")
            .is_some_and(|f| f.starts_with("modifiedon ge "))),
        "pulled incrementally: {requests:?}"
    );

    // Once the schedule keeps a delta link, a delete in Dataverse reaches the leaderboard.
    wait_for_job(&s.env, s.integration_id, "a kept delta link", |j| {
        j.kind == JobKind::Reconciliation && j.checkpoint.pointer("/opportunity/delta").is_some()
    })
    .await;
    fake.delete("opportunity", record);
    wait_for_activity(&s.env, s.integration_id, record, "retracted").await;
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.query.contains_key("$deltatoken")),
        "the delete came from the delta link"
    );
}
