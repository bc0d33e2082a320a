//! What a workflow matches: records moving in and out of a workflow's conditions, deletes, and
//! several workflows on one object.

use super::*;

#[tokio::test]
async fn closed_won_records_moving_back_retracts_and_winning_again_reactivates() {
    let env = TestEnv::new("wf-retract").await;
    let tenant = Tenant::create(&env.pool, "retract", true, true).await;
    let p = pipeline(&env).await;
    let record = "006RETRACT00001AAA";

    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lRETRACT0000001A",
            record,
            "Closed Won",
            "1250.50",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "recorded").await;

    // The stage moves back: the record no longer satisfies the workflow.
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lRETRACT0000002A",
            record,
            "Negotiation/Review",
            "1250.50",
            "2026-11-21T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "retracted").await;
    let activity = views::activities(&env.pool, tenant.company_id)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(activity.value.to_string(), "1250.50", "kept for the record");

    // Won again: the same activity is re-activated, with the new amount.
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lRETRACT0000003A",
            record,
            "Closed Won",
            "1300",
            "2026-11-22T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "recorded").await;
    let activities = views::activities(&env.pool, tenant.company_id)
        .await
        .unwrap();
    assert_eq!(activities.len(), 1, "one activity per (workflow, record)");
    assert_eq!(activities[0].value.to_string(), "1300");

    let kinds: Vec<OutcomeKind> = outcomes(&env).await.iter().map(|o| o.kind()).collect();
    assert_eq!(
        kinds,
        [
            OutcomeKind::Matched,
            OutcomeKind::Retracted,
            OutcomeKind::Matched
        ]
    );
    let states = eventually("three ActivityChanged", WAIT, || async {
        let c = changes(&env).await;
        (c.len() >= 3).then_some(c)
    })
    .await;
    let states: Vec<ActivityState> = states.iter().map(|c| c.state()).collect();
    assert_eq!(
        states,
        [
            ActivityState::Recorded,
            ActivityState::Retracted,
            ActivityState::Recorded
        ]
    );
    drop(p);
}

#[tokio::test]
async fn a_deleted_record_retracts_its_activity_and_a_delete_without_one_changes_nothing() {
    let env = TestEnv::new("wf-delete").await;
    let tenant = Tenant::create(&env.pool, "deleted", true, true).await;
    let p = pipeline(&env).await;
    let record = "006DELETE000001AAA";
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lDELETE00000001A",
            record,
            "Closed Won",
            "800",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "recorded").await;

    // Deletes carry neither the fields nor the owner (Salesforce CDC, HubSpot, Dynamics).
    let kafka = producer(&env);
    let deleted = event(
        &tenant,
        record,
        ChangeType::Deleted,
        &[],
        &[],
        // After the win (2026-11-20): an older delete would be a stale, out-of-order one.
        1_800_000_000,
    );
    let never_won = event(
        &tenant,
        "006DELETE000002AAA",
        ChangeType::Deleted,
        &[],
        &[],
        1_800_000_000,
    );
    send_events(&kafka, &env.topics.events, &[deleted, never_won]).await;
    activity_state(&env, &tenant, record, "retracted").await;
    // The record that never matched has nothing to retract: its delete writes no outcome.
    eventually("the evaluator to see both deletes", WAIT, || async {
        (metric(&p.evaluator, "crm_sync_evaluator_events_total", &[]).await >= 3.0).then_some(())
    })
    .await;
    let retracted: Vec<String> = outcomes(&env)
        .await
        .into_iter()
        .filter(|o| o.kind() == OutcomeKind::Retracted)
        .map(|o| o.record_id)
        .collect();
    assert_eq!(retracted, vec![record.to_owned()]);
    assert_eq!(
        views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .len(),
        1,
        "a delete never creates an activity"
    );
    let retraction = eventually("an ActivityChanged retraction", WAIT, || async {
        changes(&env)
            .await
            .into_iter()
            .find(|c| c.state() == ActivityState::Retracted)
    })
    .await;
    assert_eq!(retraction.record_id, record);
    assert_eq!(retraction.value, "800");
    assert!(!retraction.user_id.is_empty(), "the activity knew its user");
    drop(p);
}

#[tokio::test]
async fn two_workflows_on_one_object_make_two_activities() {
    let env = TestEnv::new("wf-two").await;
    let tenant = Tenant::create(&env.pool, "two-workflows", true, true).await;
    let big_id = add_workflow(
        &env,
        &tenant,
        serde_json::json!({
            "name": "Big deals",
            "object_type": "Opportunity",
            "triggers": ["created", "updated"],
            "conditions": {"all": [
                {"field": "StageName", "op": "in", "value": ["closed won", "Closed - Signed"]},
                {"field": "Amount", "op": "gte", "value": 1000}
            ]},
            "user_field": "OwnerId",
            "activity_type": "big_deal"
        }),
    )
    .await;
    let p = pipeline(&env).await;
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lTWO00000000001A",
            "006TWO0000001AAAA",
            "Closed Won",
            "1250.50",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lTWO00000000002A",
            "006TWO0000002AAAA",
            "Closed Won",
            "500",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    let activities = eventually("three activities", WAIT, || async {
        let a = views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap();
        (a.len() >= 3).then_some(a)
    })
    .await;
    let mut seen: Vec<(String, String, String)> = activities
        .iter()
        .map(|a| {
            (
                a.record_id.clone(),
                a.activity_type.clone(),
                a.value.to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("006TWO0000001AAAA".into(), "big_deal".into(), "1".into()),
            (
                "006TWO0000001AAAA".into(),
                "deal_won".into(),
                "1250.50".into()
            ),
            ("006TWO0000002AAAA".into(), "deal_won".into(), "500".into()),
        ]
    );
    let big = activities
        .iter()
        .find(|a| a.activity_type == "big_deal")
        .unwrap();
    assert_eq!(big.workflow_id, big_id);
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(users.len(), 1, "two activities, one user");
    drop(p);
}

#[tokio::test]
async fn stage_changed_to_closed_won_and_amount_at_least_1000() {
    let env = TestEnv::new("wf-changed").await;
    let tenant = Tenant::create(&env.pool, "changed-to", true, false).await;
    add_workflow(
        &env,
        &tenant,
        serde_json::json!({
            "name": "New big wins",
            "object_type": "Opportunity",
            "triggers": ["created", "updated"],
            "conditions": {"all": [
                {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
                {"field": "Amount", "op": "gte", "value": 1000}
            ]},
            "user_field": "OwnerId",
            "value_field": "Amount",
            "activity_type": "new_big_win"
        }),
    )
    .await;
    let p = pipeline(&env).await;
    let kafka = producer(&env);
    let (a, b) = ("006CHANGED0001AAAA", "006CHANGED0002AAAA");
    let won = [
        ("StageName", "Closed Won"),
        ("Amount", "1500"),
        ("OwnerId", "005C"),
    ];
    send_events(
        &kafka,
        &env.topics.events,
        &[
            // A won update of a deal that was already won: not a change to Closed Won.
            event(
                &tenant,
                b,
                ChangeType::Updated,
                &won,
                &[("StageName", "Closed Won"), ("Amount", "900")],
                1_795_000_000,
            ),
            // A deal that moves to Closed Won: a new big win.
            event(
                &tenant,
                a,
                ChangeType::Updated,
                &won,
                &[("StageName", "Negotiation/Review")],
                1_795_000_001,
            ),
        ],
    )
    .await;
    activity_state(&env, &tenant, a, "recorded").await;
    // Its amount edited later while still won: no new win, no retraction; the activity's value
    // follows the record.
    send_events(
        &kafka,
        &env.topics.events,
        &[event(
            &tenant,
            a,
            ChangeType::Updated,
            &[
                ("StageName", "Closed Won"),
                ("Amount", "2000"),
                ("OwnerId", "005C"),
            ],
            &[("StageName", "Closed Won"), ("Amount", "1500")],
            1_795_000_002,
        )],
    )
    .await;
    eventually("the activity to follow the amount", WAIT, || async {
        views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .iter()
            .any(|a| a.record_id == "006CHANGED0001AAAA" && a.value.to_string() == "2000")
            .then_some(())
    })
    .await;
    // Then reduced below 1000: the record no longer satisfies the workflow.
    send_events(
        &kafka,
        &env.topics.events,
        &[event(
            &tenant,
            a,
            ChangeType::Updated,
            &[
                ("StageName", "Closed Won"),
                ("Amount", "700"),
                ("OwnerId", "005C"),
            ],
            &[("Amount", "2000")],
            1_795_000_003,
        )],
    )
    .await;
    activity_state(&env, &tenant, a, "retracted").await;
    let activities = views::activities(&env.pool, tenant.company_id)
        .await
        .unwrap();
    assert_eq!(activities.len(), 1, "{activities:?}");
    assert_eq!(activities[0].value.to_string(), "2000");
    let kinds: Vec<(String, OutcomeKind)> = outcomes(&env)
        .await
        .iter()
        .map(|o| (o.record_id.clone(), o.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            (a.to_owned(), OutcomeKind::Matched),
            (a.to_owned(), OutcomeKind::Matched),
            (a.to_owned(), OutcomeKind::Retracted)
        ]
    );
    drop(p);
}
