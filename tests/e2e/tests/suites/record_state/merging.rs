//! Partial updates judged on the whole record: HubSpot property changes, Outbound Messages'
//! previous values, CDC and Dataverse deltas, and records that never matched.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_property_changes_add_up_to_a_won_deal_with_its_amount() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Mary Major", "mary.major@example.com");
    let secrets = IntegrationSecrets {
        webhook_secret: Some(SECRET.into()),
        api: Some(ApiCredentials {
            base_url: Some(crm.base_url.clone()),
            access_token: Some("pat-na1-e2e".into()),
            oauth: None,
        }),
        ..IntegrationSecrets::default()
    };
    let workflow = json!({
        "name": "Won deals", "object_type": "deal", "triggers": ["updated"],
        "conditions": {"all": [{"field": "dealstage", "op": "eq", "value": "closedwon"}]},
        "user_field": "hubspot_owner_id", "value_field": "amount", "activity_type": "deal_won"
    });
    let s = setup("state-hubspot", "hubspot", PORTAL, secrets, None, workflow).await;
    let p = connectors::start_pipeline(&s.env, &[]).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/hubspot/webhooks",
        s.integration_id
    ));

    // Three separate requests, each with one property: the owner, the amount, the stage.
    hubspot(&url, property_change(1, 901, "hubspot_owner_id", OWNER)).await;
    hubspot(&url, property_change(2, 901, "amount", "1500")).await;
    hubspot(&url, property_change(3, 901, "dealstage", "closedwon")).await;
    let won = wait_for_activity(&s.env, s.integration_id, "901", "recorded").await;
    assert_eq!(won.value, "1500");
    assert_eq!(won.crm_user_id, OWNER);
    // Named through the owners API (inline, or by the background completion when slow).
    eventually("the owner is named from the directory", WAIT, || async {
        connectors::activity(&s.env, s.integration_id, "901")
            .await
            .filter(|a| a.display_name.as_deref() == Some("Mary Major"))
    })
    .await;

    // The amount changes: the activity follows.
    hubspot(&url, property_change(4, 901, "amount", "2500")).await;
    eventually("the activity's value follows the amount", WAIT, || async {
        connectors::activity(&s.env, s.integration_id, "901")
            .await
            .filter(|a| a.value == "2500" && a.state == "recorded")
    })
    .await;

    // Lost: retracted.
    hubspot(&url, property_change(5, 901, "dealstage", "closedlost")).await;
    let lost = wait_for_activity(&s.env, s.integration_id, "901", "retracted").await;
    assert_eq!(lost.crm_user_id, OWNER);
    assert_eq!(
        connectors::count(&s.env, "SELECT count(*) FROM users").await,
        1
    );
    assert_eq!(
        connectors::count(&s.env, "SELECT count(*) FROM activities").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_messages_get_changed_to_from_the_records_state() {
    let env = TestEnv::new("state-outbound").await;
    // The tenant's own "Closed Won" workflow stays inactive; this one looks at the change.
    let tenant = Tenant::create(&env.pool, "outbound", true, false).await;
    crm_sync_e2e::upsert_workflow(
        &env.pool,
        tenant.company_id,
        tenant.integration_id,
        None,
        json!({
            "name": "Just won", "object_type": "Opportunity", "triggers": ["created", "updated"],
            "conditions": {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
            "user_field": "OwnerId", "value_field": "Amount", "activity_type": "deal_just_won"
        }),
        true,
    )
    .await;
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;

    // First message: the record is new to the pipeline; Outbound Messages say nothing of
    // previous values, so "changed to" cannot be known and nothing matches.
    outbound(
        &ingest,
        &tenant,
        opportunity(
            "04lSTATE000000001A",
            "Negotiation",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    evaluated(&evaluator, 1.0).await;
    assert!(outcomes(&env).await.is_empty());
    // Second: the stage changed to Closed Won, as the record's state tells.
    outbound(
        &ingest,
        &tenant,
        opportunity(
            "04lSTATE000000002A",
            "Closed Won",
            "2026-11-21T10:00:00.000Z",
        ),
    )
    .await;
    evaluated(&evaluator, 2.0).await;
    let after_second = outcomes(&env).await;
    assert_eq!(after_second.len(), 1, "{after_second:?}");
    assert_eq!(after_second[0].value, "700");
    // Third, identical but newer: not a change, no outcome.
    outbound(
        &ingest,
        &tenant,
        opportunity(
            "04lSTATE000000003A",
            "Closed Won",
            "2026-11-22T10:00:00.000Z",
        ),
    )
    .await;
    evaluated(&evaluator, 3.0).await;
    assert_eq!(outcomes(&env).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_and_dataverse_partial_updates_merge_and_old_events_do_not_move_records_back() {
    let env = TestEnv::new("state-partial").await;
    let tenant = Tenant::create(&env.pool, "partial", true, true).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let feed = Feed::new(&env, &tenant);
    let owner = ("OwnerId", "005OWNER0000009AAA");
    for (crm, record) in [
        (CrmKind::Salesforce, "006CDC0000000001AA"),
        (CrmKind::Dynamics, "5f0c0f8e-0000-0000-0000-00000000d365"),
    ] {
        // Each change carries only what changed, as CDC and Dataverse without images send it.
        feed.delta(crm, record, &[owner], 100).await;
        feed.delta(crm, record, &[("Amount", "4200")], 110).await;
        feed.delta(crm, record, &[("StageName", "Closed Won")], 120)
            .await;
        eventually("the merged record counts the amount", WAIT, || async {
            recorded_value(&env, &tenant, record)
                .await
                .filter(|v| v == "4200")
        })
        .await;
    }
    // An older amount arrives late (a retried webhook): the record keeps the newer one.
    let record = "006CDC0000000001AA";
    feed.delta(CrmKind::Salesforce, record, &[("Amount", "10")], 105)
        .await;
    // A newer one moves it; the older amount never shows.
    feed.delta(CrmKind::Salesforce, record, &[("Amount", "5000")], 130)
        .await;
    eventually("the newer amount wins", WAIT, || async {
        recorded_value(&env, &tenant, record)
            .await
            .filter(|v| v == "5000")
    })
    .await;
    let values: Vec<String> = outcomes(&env).await.into_iter().map(|o| o.value).collect();
    assert!(!values.contains(&"10".to_owned()), "{values:?}");
    evaluated(&evaluator, 8.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_records_that_never_matched_write_no_outcome() {
    let env = TestEnv::new("state-quiet").await;
    let tenant = Tenant::create(&env.pool, "quiet", true, true).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let feed = Feed::new(&env, &tenant);
    let events: Vec<CrmEvent> = (0..10_000)
        .map(|i| {
            delta(
                &tenant,
                CrmKind::Salesforce,
                &format!("006QUIET{:010}", i % 2_000),
                &[
                    ("StageName", "Prospecting"),
                    ("Amount", &(i % 97).to_string()),
                ],
                1_000 + i64::from(i),
            )
        })
        .collect();
    feed.all(&events).await;
    evaluated(&evaluator, 10_000.0).await;
    assert_eq!(topic_message_count(&env.topics.matches), 0);
    // Every record's state is in the changelog.
    let records = read_topic(&env.topics.records).await;
    let keys: std::collections::BTreeSet<_> = records.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), 2_000);
}
