//! Dynamics 365 / Dataverse webhooks end to end: the `RemoteExecutionContext` of a won
//! opportunity, authenticated by a header key or the `code` query key, the owner named through
//! `systemusers` with a Microsoft Entra client-credentials token, and disabled by the `systemuser`
//! Update that disables them in Dataverse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::connectors;

use std::time::Duration;

use connectors::user_events::{
    account_on_a_team, expect_deactivated_by_the_crm, on_leaderboard, start_pipeline_directory_idle,
};
use connectors::{FakeCrm, add_integration, post, setup, start_pipeline, wait_for_activity};
use crm_sync_e2e::{eventually, topic_message_count};
use crm_sync_store::credentials::{
    ApiCredentials, IntegrationSecrets, OAuthCredentials, WebhookKey,
};
use serde_json::{Value, json};

const ORG: &str = "b2aeba71-d5c4-e711-8111-c4346bc4c8e8";
const OWNER: &str = "7d577253-3ef0-4a0a-bb7f-8335c2596e70";
const KEY: &str = "dv-webhook-key-e2e";

fn secrets(api_base: &str, key: WebhookKey) -> IntegrationSecrets {
    IntegrationSecrets {
        webhook_key: Some(key),
        api: Some(ApiCredentials {
            base_url: Some(api_base.into()),
            access_token: None,
            oauth: Some(OAuthCredentials {
                client_id: "00000000-aaaa-bbbb-cccc-000000000001".into(),
                client_secret: "entra-secret-e2e".into(),
                refresh_token: None,
                token_url: Some(format!("{api_base}/tenant-1/oauth2/v2.0/token")),
                scope: None,
                tenant_id: Some("tenant-1".into()),
            }),
        }),
        ..IntegrationSecrets::default()
    }
}

fn header_key() -> WebhookKey {
    WebhookKey {
        header: Some("x-crm-sync-key".into()),
        query: None,
        value: KEY.into(),
    }
}

fn reference(id: &str, table: &str) -> Value {
    json!({"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": id.to_uppercase(), "KeyAttributes": [], "LogicalName": table, "Name": null, "RowVersion": null})
}

fn entity(record: &str, attributes: Value, formatted: Value) -> Value {
    json!({"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts", "Attributes": attributes, "EntityState": null,
           "FormattedValues": formatted, "Id": record, "KeyAttributes": [], "LogicalName": "opportunity", "RelatedEntities": [], "RowVersion": "1234567"})
}

/// An opportunity closed as won: the Update step's context with a post image.
fn won(record: &str, operation: &str, org: &str, message: &str) -> String {
    let option = |v: i64| json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v});
    let money = |v: f64| json!({"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": v});
    json!({
        "BusinessUnitId": "e9d62c2f-0e2e-e711-8110-c4346bc4c8e8", "CorrelationId": "5c1f5a3e-8a4d-4f6b-9e0a-1b2c3d4e5f60",
        "Depth": 1, "InitiatingUserId": OWNER, "IsExecutingOffline": false, "IsInTransaction": false,
        "IsOfflinePlayback": false, "IsolationMode": 1, "MessageName": message, "Mode": 1,
        "OperationCreatedOn": "/Date(1795187045000+0000)/", "OperationId": operation, "OrganizationId": org,
        "OrganizationName": "contoso", "OutputParameters": [], "ParentContext": null,
        "InputParameters": [{"key": "Target", "value": entity(record,
            json!([{"key": "statecode", "value": option(1)}, {"key": "statuscode", "value": option(3)}]),
            json!([{"key": "statecode", "value": "Won"}]))}],
        "PreEntityImages": [],
        "PostEntityImages": [{"key": "PostImage", "value": entity(record, json!([
            {"key": "name", "value": "Acme - 200 licenses"}, {"key": "estimatedvalue", "value": money(1250.5)},
            {"key": "ownerid", "value": reference(OWNER, "systemuser")}, {"key": "statecode", "value": option(1)},
            {"key": "actualclosedate", "value": "/Date(1795132800000)/"}
        ]), json!([{"key": "statecode", "value": "Won"}]))}],
        "PrimaryEntityId": record, "PrimaryEntityName": "opportunity", "RequestId": null,
        "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40, "UserId": OWNER
    })
    .to_string()
}

fn workflow() -> Value {
    json!({
        "name": "Won opportunities", "object_type": "opportunity", "triggers": ["updated"],
        "conditions": {"all": [{"field": "statecode", "op": "eq", "value": 1}]},
        "user_field": "ownerid", "value_field": "estimatedvalue", "date_field": "actualclosedate",
        "activity_type": "deal_won"
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_opportunity_becomes_the_owners_activity_named_through_systemusers() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Dana Dynamics", "dana@example.com");
    let s = setup(
        "connectors-dynamics",
        "dynamics",
        ORG,
        secrets(&crm.base_url, header_key()),
        None,
        workflow(),
    )
    .await;
    // A second environment's integration, registered with Dataverse's `WebhookKey` (`?code=`).
    let second_org = "c3bfcb82-e6d5-f822-9222-d5457cd5d9f9";
    let by_code = add_integration(
        &s.env,
        s.company_id,
        "dynamics-eu",
        "dynamics",
        second_org,
        secrets(
            &crm.base_url,
            WebhookKey {
                header: None,
                query: Some("code".into()),
                value: KEY.into(),
            },
        ),
        None,
    )
    .await;
    crm_sync_e2e::upsert_workflow(&s.env.pool, s.company_id, by_code, None, workflow(), true).await;
    let p = start_pipeline(&s.env, &[]).await;
    let json_type = ("content-type", "application/json");

    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/dynamics/webhooks",
        s.integration_id
    ));
    let record = "0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b";
    let body = won(
        record,
        "a1f7a9a0-73c2-4d2c-9f3d-4d5e6f708192",
        ORG,
        "Update",
    );
    let answer = post(
        &url,
        &[json_type, ("x-crm-sync-key", KEY), ("x-request-id", "dv-1")],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let activity = wait_for_activity(&s.env, s.integration_id, record, "recorded").await;
    assert_eq!(activity.value, "1250.5");
    assert_eq!(activity.crm_user_id, OWNER);
    assert_eq!(activity.display_name.as_deref(), Some("Dana Dynamics"));
    assert_eq!(activity.email.as_deref(), Some("dana@example.com"));
    assert_eq!(crm.tokens(), 1, "one Entra token");

    let code_url = p.ingest.url(&format!(
        "/v1/integrations/{by_code}/dynamics/webhooks?code={KEY}"
    ));
    let answer = post(
        &code_url,
        &[json_type],
        won(
            record,
            "b1f7a9a0-73c2-4d2c-9f3d-4d5e6f708193",
            second_org,
            "Update",
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for_activity(&s.env, by_code, record, "recorded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_other_environments_and_unsupported_messages_are_refused() {
    let s = setup(
        "connectors-dynamics-refused",
        "dynamics",
        ORG,
        secrets("http://127.0.0.1:9", header_key()),
        None,
        workflow(),
    )
    .await;
    let ingest = s
        .env
        .start_service("ingest", "ingest", &connectors::SERVICE_ENV)
        .await;
    let url = ingest.url(&format!(
        "/v1/integrations/{}/dynamics/webhooks",
        s.integration_id
    ));
    let json_type = ("content-type", "application/json");
    let record = "0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b";
    let op = "a1f7a9a0-73c2-4d2c-9f3d-4d5e6f708192";

    let answer = post(&url, &[json_type], won(record, op, ORG, "Update")).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );
    // One message for every failed authentication: nothing about how the integration is set up.
    assert!(
        !answer.message().to_lowercase().contains("x-crm-sync-key")
            && !answer.message().contains("has no"),
        "{}",
        answer.body
    );
    let answer = post(
        &url,
        &[json_type, ("x-crm-sync-key", "nope")],
        won(record, op, ORG, "Update"),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );
    let with_key = [json_type, ("x-crm-sync-key", KEY)];
    let answer = post(
        &url,
        &with_key,
        won(record, op, "c3bfcb82-e6d5-f822-9222-d5457cd5d9f9", "Update"),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (403, "foreign_account")
    );
    let answer = post(&url, &with_key, won(record, op, ORG, "RetrieveMultiple")).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );
    assert!(
        answer.message().contains("RetrieveMultiple"),
        "{}",
        answer.body
    );
    let answer = post(&url, &with_key, "{\"MessageName\": \"Update\"}").await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );
    assert_eq!(topic_message_count(&s.env.topics.events), 0);

    let log_file = ingest.log_file.clone();
    ingest.kill().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(!log.contains(KEY), "the webhook key is never logged");
}

/// The context of the Update step on `systemuser` when an administrator disables the user
/// (`isdisabled` set), made at `at_ms`.
fn systemuser_disabled(user: &str, operation: &str, disabled: Value, at_ms: i64) -> String {
    let user_entity = json!({"__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
        "Attributes": [{"key": "isdisabled", "value": disabled}, {"key": "systemuserid", "value": user}],
        "EntityState": null, "FormattedValues": [{"key": "isdisabled", "value": "Disabled"}], "Id": user,
        "KeyAttributes": [], "LogicalName": "systemuser", "RelatedEntities": [], "RowVersion": "7654321"});
    json!({
        "BusinessUnitId": "e9d62c2f-0e2e-e711-8110-c4346bc4c8e8", "CorrelationId": "6d2f5a3e-8a4d-4f6b-9e0a-1b2c3d4e5f61",
        "Depth": 1, "InitiatingUserId": "11111111-2222-3333-4444-555555555555", "IsExecutingOffline": false,
        "IsInTransaction": false, "IsOfflinePlayback": false, "IsolationMode": 1, "MessageName": "Update", "Mode": 1,
        "OperationCreatedOn": format!("/Date({at_ms}+0000)/"), "OperationId": operation, "OrganizationId": ORG,
        "OrganizationName": "contoso", "OutputParameters": [], "ParentContext": null,
        "InputParameters": [{"key": "Target", "value": user_entity}],
        "PreEntityImages": [], "PostEntityImages": [],
        "PrimaryEntityId": user, "PrimaryEntityName": "systemuser", "RequestId": null,
        "SecondaryEntityName": "none", "SharedVariables": [], "Stage": 40,
        "UserId": "11111111-2222-3333-4444-555555555555"
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_systemuser_disabled_in_dataverse_is_deactivated_at_once() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Dana Dynamics", "dana@example.com");
    let s = setup(
        "connectors-dynamics-disabled",
        "dynamics",
        ORG,
        secrets(&crm.base_url, header_key()),
        None,
        workflow(),
    )
    .await;
    let p = start_pipeline_directory_idle(&s.env).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/dynamics/webhooks",
        s.integration_id
    ));
    let headers = [
        ("content-type", "application/json"),
        ("x-crm-sync-key", KEY),
    ];
    let record = "0a3c5e7f-1b2d-4e6f-8a9b-0c1d2e3f4a5b";
    let won = won(
        record,
        "a1f7a9a0-73c2-4d2c-9f3d-4d5e6f708192",
        ORG,
        "Update",
    );
    assert_eq!(post(&url, &headers, won).await.status, 200);
    let user_id = account_on_a_team(&s.env, s.company_id, s.integration_id, OWNER).await;
    assert_eq!(on_leaderboard(&s.env, s.company_id).await, [user_id]);

    // `isdisabled` that is no boolean: refused, naming the field, nothing published.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let events = topic_message_count(&s.env.topics.events);
    let op = "c2f7a9a0-73c2-4d2c-9f3d-4d5e6f708194";
    let answer = post(
        &url,
        &headers,
        systemuser_disabled(OWNER, op, json!("sometimes"), now_ms),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "invalid_value")
    );
    assert!(answer.message().contains("isdisabled"), "{}", answer.body);
    assert_eq!(topic_message_count(&s.env.topics.events), events);

    let answer = post(
        &url,
        &headers,
        systemuser_disabled(OWNER, op, json!(true), now_ms),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    expect_deactivated_by_the_crm(&s.env, s.company_id, s.integration_id, OWNER).await;
    eventually(
        "the systemuser event published",
        Duration::from_secs(10),
        || async { (topic_message_count(&s.env.topics.events) > events).then_some(()) },
    )
    .await;
}
