//! The reconciliation of a Dataverse integration through the whole pipeline: a won opportunity
//! whose webhook never came is pulled from the Web API (`$filter=modifiedon ge …`, `$select`,
//! `@odata.nextLink`) and counted, the owner read from `_ownerid_value`; deleted in Dataverse, it
//! is retracted by a later run, from change tracking's delta link that the schedule keeps. A
//! context Dataverse stripped for its size is answered from the Web API.

use std::time::Duration;

use chrono::Utc;
use crm_sync_e2e::eventually;
use crm_sync_e2e::fake_crm::{FakeCrm, Kind};
use crm_sync_store::credentials::{IntegrationSecrets, WebhookKey};
use crm_sync_store::sync_jobs::JobKind;
use serde_json::json;

use super::connectors::{post, setup, wait_for_activity};
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

/// A context over Dataverse's size limit arrives stripped (`x-ms-dynamics-msg-size-exceeded`):
/// no attributes, no images, only the record's name. For a record whose state is known, what
/// changed is then unknown: the evaluator asks for the record and ingest answers from the Web
/// API, so the opportunity won in that change counts with its value and owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_context_of_a_known_record_is_answered_from_the_web_api_and_counts() {
    const KEY: &str = "dv-webhook-key-stripped";
    let fake = FakeCrm::start(Kind::Dynamics, DATAVERSE_TOKEN).await;
    let secrets = IntegrationSecrets {
        webhook_key: Some(WebhookKey {
            header: Some("x-crm-sync-key".into()),
            query: None,
            value: KEY.into(),
        }),
        ..api_secrets(&fake, DATAVERSE_TOKEN)
    };
    let s = setup(
        "pull-dataverse-stripped",
        "dynamics",
        ORGANIZATION,
        secrets,
        None,
        json!({
            "name": "Won opportunities", "object_type": "opportunity", "triggers": ["updated"],
            "conditions": {"all": [{"field": "statecode", "op": "eq", "value": 1}]},
            "user_field": "ownerid", "value_field": "estimatedvalue", "date_field": "actualclosedate",
            "activity_type": "deal_won"
        }),
    )
    .await;
    let p = super::hydrate::hydrating_pipeline(&s.env).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/dynamics/webhooks",
        s.integration_id
    ));
    let headers = [
        ("content-type", "application/json"),
        ("x-crm-sync-key", KEY),
    ];
    // Changed before the integration was connected (no reconciliation reads it), its webhook
    // whole: the record's state knows every field the workflow reads.
    let record = "9d5b1c3e-aaaa-4bbb-8ccc-0000000000bb";
    let days_ago = |n| Utc::now() - chrono::Duration::days(n);
    fake.put_at(
        "opportunity",
        record,
        json!({"statecode": 0, "estimatedvalue": 700,
        "_ownerid_value": OWNER_ID, "actualclosedate": "2026-11-20"}),
        days_ago(3),
    );
    let option = |v: i64| json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v});
    let open = json!([
        {"key": "statecode", "value": option(0)},
        {"key": "estimatedvalue", "value": {"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 700.0}},
        {"key": "ownerid", "value": {"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
            "Id": OWNER_ID, "KeyAttributes": [], "LogicalName": "systemuser", "Name": null, "RowVersion": null}},
        {"key": "actualclosedate", "value": "/Date(1795132800000)/"}
    ]);
    let answer = post(
        &url,
        &headers,
        update(record, "c1f7a9a0-73c2-4d2c-9f3d-4d5e6f708194", open),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    eventually(
        "the open opportunity judged",
        Duration::from_secs(30),
        || async {
            let judged = crm_sync_store::trail::record_events(
                &s.env.pool,
                s.company_id,
                s.integration_id,
                record,
                10,
            )
            .await
            .unwrap();
            (!judged.is_empty()).then_some(judged)
        },
    )
    .await;

    // Won in Dataverse; its context too large to send whole.
    fake.put_at("opportunity", record, json!({"statecode": 1}), days_ago(1));
    let mut stripped = headers.to_vec();
    stripped.push(("x-ms-dynamics-msg-size-exceeded", ""));
    let answer = post(
        &url,
        &stripped,
        update(record, "d1f7a9a0-73c2-4d2c-9f3d-4d5e6f708195", json!([])),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let won = wait_for_activity(&s.env, s.integration_id, record, "recorded").await;
    assert_eq!(won.value, "700");
    assert_eq!(won.crm_user_id, OWNER_ID);
    let reads = fake.requests_to(&format!("/opportunities({record})"));
    assert_eq!(
        reads.len(),
        1,
        "the record read once: {:?}",
        fake.requests()
    );
}

/// An Update step's context with `attributes` as its target's (none: as Dataverse sends it
/// when it exceeds 256 KB, the parameters and images left out).
fn update(record: &str, operation: &str, attributes: serde_json::Value) -> String {
    let target = json!({"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts", "Attributes": attributes,
        "EntityState": null, "FormattedValues": [], "Id": record, "KeyAttributes": [], "LogicalName": "opportunity",
        "RelatedEntities": [], "RowVersion": "1234567"});
    let inputs = if target["Attributes"]
        .as_array()
        .is_some_and(|a| a.is_empty())
    {
        json!([])
    } else {
        json!([{"key": "Target", "value": target}])
    };
    json!({
        "BusinessUnitId": "e9d62c2f-0e2e-e711-8110-c4346bc4c8e8", "CorrelationId": "6d2f5a3e-8a4d-4f6b-9e0a-1b2c3d4e5f61",
        "Depth": 1, "InitiatingUserId": OWNER_ID, "IsExecutingOffline": false, "IsInTransaction": false,
        "IsOfflinePlayback": false, "IsolationMode": 1, "MessageName": "Update", "Mode": 1,
        "OperationCreatedOn": "/Date(1795187045000+0000)/", "OperationId": operation,
        "OrganizationId": ORGANIZATION, "OrganizationName": "contoso", "OutputParameters": [], "ParentContext": null,
        "InputParameters": inputs, "PreEntityImages": [], "PostEntityImages": [],
        "PrimaryEntityId": record, "PrimaryEntityName": "opportunity", "RequestId": null,
        "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40, "UserId": OWNER_ID
    })
    .to_string()
}
