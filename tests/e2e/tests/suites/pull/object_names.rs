//! A workflow may name its object in any case; pulled records still join the record state the
//! CRM's webhooks built.

use std::time::Duration;

use crm_sync_e2e::eventually;
use crm_sync_e2e::salesforce::{outbound_message, won_opportunity};
use crm_sync_store::trail::EventRow;

use super::connectors::{Setup, post, wait_for_activity};
use super::reconcile::reconciling_pipeline;
use super::*;

/// The workflow says `opportunity`; Salesforce's Outbound Messages and its API say
/// `Opportunity`. What the reconciliation reads of a record joins what its webhooks brought:
/// one record state (merged, ordered, its deletes retracting what webhooks counted) and one
/// history in the record's trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_record_joins_its_webhooks_whatever_case_the_workflow_names_its_object_in() {
    const KNOWN: &str = "0065g00000PuLlCASE";
    let fake = fake_salesforce().await;
    let mut workflow = won_workflow();
    workflow["object_type"] = json!("opportunity");
    let s = connectors::setup(
        "pull-object-case",
        "salesforce",
        ORG,
        salesforce_api(&fake),
        Some(WEBHOOK_TOKEN),
        workflow,
    )
    .await;
    let (p, _schedule) = reconciling_pipeline(&s).await;

    // Won in the CRM, and its Outbound Message delivered.
    fake.put("Opportunity", KNOWN, opportunity("Closed Won", 4200));
    let xml = outbound_message(
        ORG,
        &[won_opportunity("04l5g00000CASEAA1", KNOWN, OWNER, "4200")],
    );
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={WEBHOOK_TOKEN}",
        s.integration_id
    ));
    let headers = [
        ("content-type", "text/xml; charset=utf-8"),
        ("soapaction", "\"\""),
    ];
    let answer = post(&url, &headers, xml).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        wait_for_activity(&s.env, s.integration_id, KNOWN, "recorded")
            .await
            .value,
        "4200"
    );

    // The reconciliation reads the same version: the record's history is one object's.
    let pulled = eventually(
        "the reconciliation's read in the record's trail",
        Duration::from_secs(60),
        || async {
            trail(&s, KNOWN)
                .await
                .into_iter()
                .find(|e| e.delivery_id.starts_with("reconciliation:"))
        },
    )
    .await;
    let objects: Vec<String> = trail(&s, KNOWN)
        .await
        .into_iter()
        .map(|e| e.object_type)
        .collect();
    assert_eq!(objects, ["Opportunity", "Opportunity"], "{pulled:?}");
}

async fn trail(s: &Setup, record_id: &str) -> Vec<EventRow> {
    crm_sync_store::trail::record_events(&s.env.pool, s.company_id, s.integration_id, record_id, 10)
        .await
        .unwrap()
}
