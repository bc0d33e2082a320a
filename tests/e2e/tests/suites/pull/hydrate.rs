//! The evaluator asks for records it knows only in part; ingest answers from the CRM's API.

use std::time::Duration;

use crm_sync_e2e::app::App;
use crm_sync_e2e::{eventually, metric};
use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets};

use super::connectors::{
    hubspot_signature, now_millis, post, setup, start_pipeline, wait_for_activity,
};
use super::*;

const PORTAL: &str = "62516";
const SECRET: &str = "hs-client-secret-pull";
const HS_OWNER: &str = "41629780";

async fn property_change(url: &str, deal: u64, property: &str, value: &str) {
    let body = json!([{
        "eventId": 77, "subscriptionId": 2456, "portalId": 62516, "appId": 1160452,
        "occurredAt": now_millis() - 60_000, "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0, "objectId": deal, "changeSource": "CRM_UI",
        "propertyName": property, "propertyValue": value
    }])
    .to_string();
    let timestamp = now_millis().to_string();
    let signature = hubspot_signature(SECRET, url, &body, &timestamp);
    let answer = post(
        url,
        &[
            ("content-type", "application/json"),
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &signature),
            ("x-hubspot-signature-version", "v3"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// The pipeline with pulls on and no backfill: records reach it only through webhooks and
/// hydrations (and reconciliations of what changed since).
pub async fn hydrating_pipeline(env: &TestEnv) -> App<'_> {
    start_pipeline(
        env,
        &[
            ("CRM_SYNC__PULL__ENABLED", "true"),
            ("CRM_SYNC__PULL__BACKFILL_ON_CONNECT_DAYS", "0"),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_change_of_a_deal_whose_amount_predates_the_integration_counts_the_amount() {
    let fake = FakeCrm::start(Kind::HubSpot, API_TOKEN).await;
    // The amount and owner were set before the integration existed; then the deal is won, and
    // only that change is ever sent.
    fake.put(
        "deal",
        "903",
        json!({"dealstage": "appointmentscheduled", "amount": "1500", "hubspot_owner_id": HS_OWNER}),
    );
    fake.put("deal", "903", json!({"dealstage": "closedwon"}));
    let secrets = IntegrationSecrets {
        webhook_secret: Some(SECRET.into()),
        api: Some(ApiCredentials {
            base_url: Some(fake.url.clone()),
            access_token: Some(API_TOKEN.into()),
            oauth: None,
        }),
        ..IntegrationSecrets::default()
    };
    let workflow = json!({
        "name": "Won deals", "object_type": "deal", "triggers": ["updated"],
        "conditions": {"all": [{"field": "dealstage", "op": "eq", "value": "closedwon"}]},
        "user_field": "hubspot_owner_id", "value_field": "amount", "activity_type": "deal_won"
    });
    let s = setup("pull-hydrate", "hubspot", PORTAL, secrets, None, workflow).await;
    let p = hydrating_pipeline(&s.env).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/hubspot/webhooks",
        s.integration_id
    ));
    property_change(&url, 903, "dealstage", "closedwon").await;

    // The evaluator knows only the stage: it asks for the record.
    eventually("a hydration request", Duration::from_secs(30), || async {
        let requests = crm_sync_e2e::read_topic(&s.env.topics.hydrations).await;
        (!requests.is_empty()).then_some(requests)
    })
    .await;

    eventually(
        "ingest reads the deal from the CRM",
        Duration::from_secs(30),
        || async {
            let reads = fake.requests_to("batch/read");
            (!reads.is_empty()).then_some(reads)
        },
    )
    .await;
    let won = wait_for_activity(&s.env, s.integration_id, "903", "recorded").await;
    assert_eq!(won.value, "1500");
    assert_eq!(won.crm_user_id, HS_OWNER);
    // Answered by ingest from the CRM's batch read.
    assert!(
        !fake.requests_to("batch/read").is_empty(),
        "{:?}",
        fake.requests()
    );
    eventually("the hydration counted", Duration::from_secs(10), || async {
        let n = metric(
            &p.ingest,
            "crm_sync_pull_hydrations_total",
            &["outcome=\"published\""],
        )
        .await;
        (n >= 1.0).then_some(n)
    })
    .await;
}
