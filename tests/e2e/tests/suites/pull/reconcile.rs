//! The reconciliation schedule: what webhooks missed is pulled, deletes included.

use std::time::Duration;

use crm_sync_e2e::eventually;
use crm_sync_store::credentials::IntegrationSecrets;
use crm_sync_store::sync_jobs::JobKind;

use super::connectors::{Setup, activity, start_pipeline, wait_for_activity};
use super::*;
use crm_sync_e2e::app::{AdminClient, App};

pub const FAST_RECONCILIATION: [(&str, &str); 4] = [
    ("CRM_SYNC__PULL__ENABLED", "true"),
    ("CRM_SYNC__PULL__RECONCILE_INTERVAL_SECS", "2"),
    ("CRM_SYNC__PULL__OVERLAP_SECS", "1"),
    ("CRM_SYNC__PULL__BACKFILL_ON_CONNECT_DAYS", "0"),
];

/// The pipeline with reconciliations every 2 s, and the integration's schedule once ingest made it.
pub async fn reconciling_pipeline(s: &Setup) -> (App<'_>, Job) {
    let mut vars = FAST_RECONCILIATION.to_vec();
    vars.extend_from_slice(&[
        ("CRM_SYNC__PULL__POLL_INTERVAL_MS", "200"),
        ("CRM_SYNC__PULL__LEASE_SECS", "5"),
    ]);
    let pipeline = start_pipeline(&s.env, &vars).await;
    let schedule = wait_for_job(&s.env, s.integration_id, "a reconciliation schedule", |j| {
        j.kind == JobKind::Reconciliation
    })
    .await;
    (pipeline, schedule)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_never_sent_is_made_up_by_the_reconciliation_and_a_delete_retracts() {
    let fake = fake_salesforce().await;
    let s = salesforce_setup("pull-reconcile", &fake).await;
    // The schedule exists once ingest saw the API credentials (and no backfill: 0 days).
    let (_p, schedule) = reconciling_pipeline(&s).await;
    assert_eq!(schedule.requested_by, "system");
    assert_eq!(jobs(&s.env, s.integration_id).await.len(), 1, "no backfill");

    // Won in the CRM, and its Outbound Message never sent.
    fake.put(
        "Opportunity",
        "0065g00000PuLl1AAB",
        opportunity("Closed Won", 4200),
    );
    let recorded =
        wait_for_activity(&s.env, s.integration_id, "0065g00000PuLl1AAB", "recorded").await;
    assert_eq!(recorded.value, "4200");
    assert_eq!(recorded.crm_user_id, OWNER);

    let status = eventually(
        "the reconciliation in the sync status",
        Duration::from_secs(30),
        || async {
            crm_sync_store::sync_status::get(&s.env.pool, s.company_id, s.integration_id)
                .await
                .unwrap()
                .filter(|st| {
                    st.last_reconciliation_at.is_some() && st.last_reconciliation_published > 0
                })
        },
    )
    .await;
    assert_eq!(status.last_reconciliation_job, Some(schedule.id));
    // The evaluator counts the record no webhook brought as a missed webhook fixed.
    let fixed = eventually(
        "the missed webhook counted as fixed",
        Duration::from_secs(30),
        || async {
            crm_sync_store::sync_status::get(&s.env.pool, s.company_id, s.integration_id)
                .await
                .unwrap()
                .filter(|st| st.missed_webhooks_fixed >= 1)
        },
    )
    .await;
    assert_eq!(fixed.missed_webhooks_fixed, 1, "{fixed:?}");
    assert!(status.last_reconciliation_api_calls >= 1, "{status:?}");
    assert_eq!(status.last_reconciliation_error, None);

    // Deleted in the CRM: the next run finds it (queryAll's IsDeleted rows) and retracts.
    fake.delete("Opportunity", "0065g00000PuLl1AAB");
    wait_for_activity(&s.env, s.integration_id, "0065g00000PuLl1AAB", "retracted").await;
    let row = activity(&s.env, s.integration_id, "0065g00000PuLl1AAB")
        .await
        .unwrap();
    assert_eq!(row.state, "retracted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_without_api_credentials_says_so_and_webhooks_are_timed() {
    let fake = fake_salesforce().await;
    let s = salesforce_setup("pull-no-credentials", &fake).await;
    // The credentials are taken away after the schedule was made.
    let ingest = ingest(&s.env, "ingest", &FAST_RECONCILIATION).await;
    wait_for_job(&s.env, s.integration_id, "a reconciliation schedule", |j| {
        j.kind == JobKind::Reconciliation
    })
    .await;
    let sealed = empty_secrets(s.integration_id);
    sqlx::query("UPDATE integration_secrets SET ciphertext = $2, nonce = $3, key_id = $4 WHERE integration_id = $1")
        .bind(s.integration_id)
        .bind(sealed.ciphertext)
        .bind(sealed.nonce)
        .bind(sealed.key_id)
        .execute(&s.env.pool)
        .await
        .unwrap();
    let failed = wait_for_job(&s.env, s.integration_id, "the job's error", |j| {
        j.last_error.is_some()
    })
    .await;
    let error = failed.last_error.unwrap();
    assert!(error.contains(&s.integration_id.to_string()), "{error}");
    assert!(error.contains("`api` credentials"), "{error}");
    let status = eventually(
        "the failed run in the sync status",
        Duration::from_secs(30),
        || async {
            crm_sync_store::sync_status::get(&s.env.pool, s.company_id, s.integration_id)
                .await
                .unwrap()
                .filter(|st| st.last_reconciliation_error.is_some())
        },
    )
    .await;
    assert!(
        status
            .last_reconciliation_error
            .unwrap()
            .contains("`api` credentials")
    );

    // An accepted webhook is timed in the sync status.
    let xml = crm_sync_e2e::salesforce::outbound_message(
        ORG,
        &[crm_sync_e2e::salesforce::won_opportunity(
            "04l5g00000PULLAA1",
            "0065g00000PuLl2AAB",
            OWNER,
            "10",
        )],
    );
    let url = ingest.url(&format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={WEBHOOK_TOKEN}",
        s.integration_id
    ));
    let answer = super::connectors::post(
        &url,
        &[
            ("content-type", "text/xml; charset=utf-8"),
            ("soapaction", "\"\""),
        ],
        xml,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    eventually(
        "the webhook's time in the sync status",
        Duration::from_secs(10),
        || async {
            crm_sync_store::sync_status::get(&s.env.pool, s.company_id, s.integration_id)
                .await
                .unwrap()
                .and_then(|st| st.last_webhook_at)
        },
    )
    .await;
}

/// Credentials sealed for the integration with only a webhook token (no `api` part).
fn empty_secrets(integration_id: Uuid) -> crm_sync_store::credentials::Sealed {
    crm_sync_store::credentials::seal(
        &super::connectors::key(),
        integration_id,
        &IntegrationSecrets {
            webhook_secret: Some("unused".into()),
            ..IntegrationSecrets::default()
        },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_record_ingest_would_refuse_is_dead_lettered_and_the_rest_is_counted() {
    let fake = fake_salesforce().await;
    let s = salesforce_setup("pull-refused", &fake).await;
    let (p, _schedule) = reconciling_pipeline(&s).await;

    // Won, but owned by an id no webhook could carry (ingest refuses ids over 255 bytes); and
    // a good one after it.
    let mut bad = opportunity("Closed Won", 900);
    bad["OwnerId"] = json!("005".repeat(100));
    fake.put("Opportunity", "0065g00000PuLlBADA", bad);
    fake.put(
        "Opportunity",
        "0065g00000PuLlGOOD",
        opportunity("Closed Won", 4200),
    );
    let good = wait_for_activity(&s.env, s.integration_id, "0065g00000PuLlGOOD", "recorded").await;
    assert_eq!(good.value, "4200");

    let dlq = format!("{}.dlq", s.env.topics.events);
    let dead = eventually(
        "the refused record dead-lettered",
        Duration::from_secs(30),
        || async { Some(crm_sync_e2e::read_topic(&dlq).await).filter(|d| !d.is_empty()) },
    )
    .await;
    for letter in &dead {
        assert_eq!(letter.header("crm-sync-dlq-reason"), Some("invalid_value"));
        let detail = letter.header("crm-sync-dlq-detail").unwrap_or_default();
        assert!(
            detail.contains("pulled from the CRM") && detail.contains("owner.crm_user_id"),
            "{detail}"
        );
        assert_eq!(
            letter.header("crm-sync-dlq-origin-topic"),
            Some(s.env.topics.events.as_str())
        );
        assert!(
            letter
                .key
                .as_deref()
                .unwrap()
                .ends_with("/Opportunity/0065g00000PuLlBADA")
        );
    }
    assert!(
        activity(&s.env, s.integration_id, "0065g00000PuLlBADA")
            .await
            .is_none()
    );
    assert!(
        crm_sync_e2e::metric(
            &p.ingest,
            "crm_sync_pull_records_refused_total",
            &["reason=\"invalid_value\""]
        )
        .await
            >= 1.0
    );
    assert!(
        crm_sync_e2e::metric(
            &p.ingest,
            "crm_sync_dead_letters_total",
            &["reason=\"invalid_value\""]
        )
        .await
            >= 1.0
    );
    // The admin sees why the record never counted: the refusal is in its record trail, placed
    // where its dead letter was written.
    let trail = eventually(
        "the refusal in the record trail",
        Duration::from_secs(30),
        || async {
            let rows = crm_sync_store::trail::dead_letters(
                &s.env.pool,
                s.company_id,
                s.integration_id,
                Some("0065g00000PuLlBADA"),
                None,
                10,
            )
            .await
            .unwrap();
            Some(rows).filter(|r| !r.is_empty())
        },
    )
    .await;
    let dead = crm_sync_e2e::read_topic(&dlq).await;
    for row in &trail {
        assert_eq!(row.reason, "invalid_value");
        assert_eq!(row.service, "ingest");
        assert_eq!(row.object_type, "Opportunity");
        assert!(row.detail.contains("owner.crm_user_id"), "{}", row.detail);
        assert_eq!(row.topic, dlq);
        assert!(
            dead.iter()
                .any(|d| (d.partition, d.offset) == (row.partition, row.offset)),
            "the trail names a dead letter at {}[{}]@{} that is not there",
            row.topic,
            row.partition,
            row.offset
        );
    }
    let status = crm_sync_store::sync_status::get(&s.env.pool, s.company_id, s.integration_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.last_reconciliation_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_the_api_user_cannot_read_is_named_and_the_others_are_still_reconciled() {
    let fake = fake_salesforce().await;
    let s = salesforce_setup("pull-refused-object", &fake).await;
    // A second workflow reads a Quote field the integration's API user has no access to.
    fake.hide_field("Quote", "Discount__c");
    crm_sync_e2e::upsert_workflow(
        &s.env.pool,
        s.company_id,
        s.integration_id,
        None,
        serde_json::json!({
            "name": "Discounted quotes", "object_type": "Quote", "triggers": ["created", "updated"],
            "conditions": {"all": [{"field": "Discount__c", "op": "gt", "value": 10}]},
            "user_field": "OwnerId", "value_field": "Discount__c", "date_field": "CreatedDate",
            "activity_type": "quote_discounted"
        }),
        true,
    )
    .await;
    let (_p, _schedule) = reconciling_pipeline(&s).await;

    fake.put(
        "Opportunity",
        "0065g00000PuLl7AAB",
        opportunity("Closed Won", 700),
    );
    wait_for_activity(&s.env, s.integration_id, "0065g00000PuLl7AAB", "recorded").await;
    // The sync status and health (what the admin page shows) name the object and the CRM's
    // error, and do not call the run failed: it went on with the other objects.
    let (reconciliation, health) = reconciliation_as_a_viewer_reads_it(&s).await;
    assert_eq!(reconciliation["outcome"], "partial", "{reconciliation}");
    assert!(reconciliation["error"].is_null(), "{reconciliation}");
    let not_read = reconciliation["objects_not_read"].as_array().unwrap();
    assert_eq!(not_read.len(), 1, "{reconciliation}");
    assert_eq!(not_read[0]["object"], "Quote", "{reconciliation}");
    let why = not_read[0]["error"].as_str().unwrap();
    assert!(why.contains("INVALID_FIELD"), "{why}");
    let reasons: Vec<&str> = health["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("could not read Quote") && r.contains("INVALID_FIELD")),
        "{reasons:?}"
    );
    assert!(
        !reasons.iter().any(|r| r.contains("reconciliation failed")),
        "{reasons:?}"
    );
    assert_eq!(
        health["last_reconciliation_objects_not_read"][0]["object"], "Quote",
        "{health}"
    );

    // Later runs still reconcile Opportunity: its delete is found and retracts.
    fake.delete("Opportunity", "0065g00000PuLl7AAB");
    wait_for_activity(&s.env, s.integration_id, "0065g00000PuLl7AAB", "retracted").await;
}

/// The integration's last reconciliation in its sync status once one has said something went
/// wrong, and its health, as a viewer reads them through admin-api.
async fn reconciliation_as_a_viewer_reads_it(s: &Setup) -> (Value, Value) {
    let api = crate::admin_support::start_admin_api(&s.env).await;
    let token = crate::admin_support::token(&s.env, s.company_id, "viewer").await;
    let viewer = AdminClient::new(&api, Some(&token));
    let integration = crate::admin_support::company_path(
        s.company_id,
        &format!("/integrations/{}", s.integration_id),
    );
    let reconciliation = eventually(
        "the refused object in the sync status",
        Duration::from_secs(30),
        || async {
            let status = viewer
                .get(&format!("{integration}/sync-status"))
                .await
                .expect(200);
            let r = &status["last_reconciliation"];
            let said = !r["error"].is_null()
                || r["objects_not_read"]
                    .as_array()
                    .is_some_and(|objects| !objects.is_empty());
            said.then(|| r.clone())
        },
    )
    .await;
    let health = viewer
        .get(&format!("{integration}/health"))
        .await
        .expect(200);
    (reconciliation, health)
}
