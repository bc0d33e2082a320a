//! The reconciliation of a Pipedrive integration through the whole pipeline: a won deal whose
//! webhook never came is pulled from API v2 (`updated_since`, cursors) and counted; a deal
//! deleted in Pipedrive (`status=deleted`) is retracted.

use crm_sync_e2e::fake_crm::{FakeCrm, Kind};
use serde_json::json;

use super::connectors::{setup, wait_for_activity};
use super::reconcile::reconciling_pipeline;
use super::*;

const COMPANY: &str = "7654321";
const PIPEDRIVE_TOKEN: &str = "pipedrive-api-token-pull";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipedrive_deal_whose_webhook_never_came_is_counted_and_a_deleted_one_retracted() {
    let fake = FakeCrm::start(Kind::Pipedrive, PIPEDRIVE_TOKEN).await;
    let s = setup(
        "pull-reconcile-pipedrive",
        "pipedrive",
        COMPANY,
        api_secrets(&fake, PIPEDRIVE_TOKEN),
        None,
        json!({
            "name": "Won deals", "object_type": "deal", "triggers": ["created", "updated"],
            "conditions": {"all": [{"field": "status", "op": "eq", "value": "won"}]},
            "user_field": "owner_id", "value_field": "value", "date_field": "won_time",
            "activity_type": "deal_won"
        }),
    )
    .await;
    let _p = reconciling_pipeline(&s).await;

    // Won in Pipedrive; the webhook never reached ingest.
    fake.put(
        "deal",
        "4242",
        json!({"status": "won", "value": 300, "currency": "EUR", "owner_id": 9001,
               "won_time": "2026-11-20T15:04:05Z", "title": "Acme renewal"}),
    );
    let recorded = wait_for_activity(&s.env, s.integration_id, "4242", "recorded").await;
    assert_eq!(recorded.value, "300");
    assert_eq!(recorded.crm_user_id, "9001");
    let requests = fake.requests_to("/api/v2/deals");
    assert!(
        requests
            .iter()
            .any(|r| r.query.contains_key("updated_since")),
        "pulled incrementally: {requests:?}"
    );

    // Deleted in Pipedrive: the next run lists it among the deleted deals and retracts it.
    fake.delete("deal", "4242");
    wait_for_activity(&s.env, s.integration_id, "4242", "retracted").await;
}
