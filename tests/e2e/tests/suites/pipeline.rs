//! The headline scenario end to end: Salesforce Outbound Messages into ingest, through the
//! evaluator and provisioner as real processes, on real Kafka and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::app::{App, AppOptions, spawn_app};
use crm_sync_e2e::salesforce::{opportunity, outbound_message, won_opportunity};
use crm_sync_e2e::{
    Tenant, TestEnv, eventually, metric, post_outbound_message, read_topic, topic_message_count,
};
use crm_sync_proto::Message;
use crm_sync_proto::v1::{ActivityChanged, UserProvisioned, UserStatus};
use crm_sync_store::views;

const WAIT: Duration = Duration::from_secs(60);

/// The pipeline with `provisioners` provisioner replicas, every consumer owning partitions before
/// traffic starts, or the test would not exercise what it claims (e.g. two provisioners racing).
async fn start_pipeline(env: &TestEnv, provisioners: usize) -> App<'_> {
    let options = AppOptions {
        provisioners,
        wait_for_partitions: true,
        ..AppOptions::default()
    };
    spawn_app(env, options).await
}

async fn wait_for_activities(env: &TestEnv, tenant: &Tenant, n: usize) -> Vec<views::ActivityView> {
    eventually(&format!("{n} activities"), WAIT, || async {
        let a = views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap();
        (a.len() >= n).then_some(a)
    })
    .await
}

fn ack(status: u16, body: &str) {
    assert_eq!(status, 200, "ingest refused the message: {body}");
    assert!(body.contains("<Ack>true</Ack>"), "{body}");
}

#[tokio::test]
async fn auto_sync_creates_one_pending_user_per_owner_and_redelivery_changes_nothing() {
    let env = TestEnv::new("auto-sync").await;
    let tenant = Tenant::create(&env.pool, "acme", true, true).await;
    let p = start_pipeline(&env, 1).await;

    let first = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04l000000000001AAA",
            "006000000000001AAA",
            "005OWNER0000001",
            "1250.50",
        )],
    );
    let (status, body) = post_outbound_message(&p.ingest, &tenant, first.clone()).await;
    ack(status, &body);
    let activities = wait_for_activities(&env, &tenant, 1).await;
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(users.len(), 1, "{users:?}");
    assert_eq!(users[0].status, "pending");
    assert_eq!(users[0].source, "auto_sync");
    assert_eq!(
        users[0].crm_identities,
        vec![format!("{}:005OWNER0000001", tenant.integration_id)]
    );
    assert_eq!(activities[0].user_id, Some(users[0].id));
    assert_eq!(activities[0].value.to_string(), "1250.50");
    assert_eq!(activities[0].activity_type, "deal_won");
    assert_eq!(
        activities[0].activity_date.to_rfc3339(),
        "2026-11-20T00:00:00+00:00"
    );

    // A second won opportunity of the same owner: a second activity, no second user.
    let second = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04l000000000002AAA",
            "006000000000002AAA",
            "005OWNER0000001",
            "99",
        )],
    );
    let (status, body) = post_outbound_message(&p.ingest, &tenant, second).await;
    ack(status, &body);
    let activities = wait_for_activities(&env, &tenant, 2).await;
    assert!(activities.iter().all(|a| a.user_id == Some(users[0].id)));
    assert_eq!(
        views::users(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .len(),
        1
    );

    // Salesforce redelivers the first message (it does until it sees an Ack): nothing changes,
    // and the evaluator, whose record state already has it, writes no outcome for it.
    let outcomes_before = topic_message_count(&env.topics.matches);
    let (status, body) = post_outbound_message(&p.ingest, &tenant, first).await;
    ack(status, &body);
    eventually(
        "the evaluator to see the redelivered event",
        WAIT,
        || async {
            (metric(
                &p.evaluator,
                "crm_sync_evaluator_events_total",
                &["outcome=\"unchanged\""],
            )
            .await
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(topic_message_count(&env.topics.matches), outcomes_before);
    assert_eq!(
        views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        views::users(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .len(),
        1
    );

    // Downstream: one UserProvisioned, and one ActivityChanged per recorded activity.
    let provisioned = read_topic(&env.topics.users).await;
    assert_eq!(provisioned.len(), 1);
    let user = UserProvisioned::decode(provisioned[0].payload.as_slice()).unwrap();
    assert_eq!(user.crm_user_id, "005OWNER0000001");
    assert_eq!(user.status(), UserStatus::Pending);
    assert_eq!(
        provisioned[0].key.as_deref(),
        Some(format!("{}/{}", tenant.company_id, users[0].id).as_str())
    );
    let changes = read_topic(&env.topics.activities).await;
    assert_eq!(
        changes.len(),
        2,
        "one ActivityChanged per activity, none for the redelivery"
    );
    for change in &changes {
        let c = ActivityChanged::decode(change.payload.as_slice()).unwrap();
        assert_eq!(c.user_id, users[0].id.to_string());
        assert!(!c.visible, "a pending user on no team is not visualized");
        assert!(
            change.header("traceparent").is_some(),
            "every message carries trace context"
        );
        assert_eq!(
            change.header("crm-sync-event-id"),
            Some(c.change_id.as_str())
        );
    }
    drop(p);
}

#[tokio::test]
async fn two_owners_in_one_batch_become_two_users() {
    let env = TestEnv::new("two-owners").await;
    let tenant = Tenant::create(&env.pool, "globex", true, true).await;
    let p = start_pipeline(&env, 1).await;
    let xml = outbound_message(
        &tenant.organization_id,
        &[
            won_opportunity(
                "04l00000000000AAAA",
                "006000000000A01AAA",
                "005ALICE",
                "100",
            ),
            won_opportunity("04l00000000000BAAA", "006000000000B01AAA", "005BOB", "200"),
            won_opportunity(
                "04l00000000000CAAA",
                "006000000000A02AAA",
                "005ALICE",
                "300",
            ),
            won_opportunity("04l00000000000DAAA", "006000000000B02AAA", "005BOB", "400"),
        ],
    );
    let (status, body) = post_outbound_message(&p.ingest, &tenant, xml).await;
    ack(status, &body);
    let activities = wait_for_activities(&env, &tenant, 4).await;
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(users.len(), 2, "{users:?}");
    let mut owners: Vec<String> = users.iter().map(|u| u.display_name.clone()).collect();
    owners.sort();
    assert_eq!(owners, ["005ALICE", "005BOB"]);
    for a in &activities {
        let user = users
            .iter()
            .find(|u| Some(u.id) == a.user_id)
            .expect("every activity has a user");
        assert_eq!(user.display_name, a.crm_user_id);
    }
    drop(p);
}

#[tokio::test]
async fn inactive_workflows_and_unmet_conditions_create_nothing() {
    let env = TestEnv::new("no-match").await;
    let active = Tenant::create(&env.pool, "initech", true, true).await;
    let inactive = Tenant::create(&env.pool, "umbrella", true, false).await;
    let p = start_pipeline(&env, 1).await;

    let open_deal = outbound_message(
        &active.organization_id,
        &[opportunity(
            "04l0000000000O1AAA",
            "006000000000O01AAA",
            "005CAROL",
            "500",
            "Prospecting",
        )],
    );
    let (status, body) = post_outbound_message(&p.ingest, &active, open_deal).await;
    ack(status, &body);
    let won_but_inactive = outbound_message(
        &inactive.organization_id,
        &[won_opportunity(
            "04l0000000000I1AAA",
            "006000000000I01AAA",
            "005DAVE",
            "500",
        )],
    );
    let (status, body) = post_outbound_message(&p.ingest, &inactive, won_but_inactive).await;
    ack(status, &body);

    eventually(
        "the evaluator to count both events as unmatched",
        WAIT,
        || async {
            (metric(
                &p.evaluator,
                "crm_sync_evaluator_events_total",
                &["outcome=\"no_match\""],
            )
            .await
                >= 2.0)
                .then_some(())
        },
    )
    .await;
    // The open deal is an update of a record that never matched: with the record's state known,
    // there is nothing to retract, so no outcome at all is written.
    assert_eq!(topic_message_count(&env.topics.matches), 0, "no outcome");
    assert_eq!(topic_message_count(&env.topics.activities), 0);
    for tenant in [&active, &inactive] {
        assert!(
            views::users(&env.pool, tenant.company_id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            views::activities(&env.pool, tenant.company_id)
                .await
                .unwrap()
                .is_empty()
        );
    }
    drop(p);
}

#[tokio::test]
async fn auto_sync_off_keeps_the_activity_unmapped_until_it_is_turned_on() {
    let env = TestEnv::new("auto-sync-off").await;
    let tenant = Tenant::create(&env.pool, "hooli", false, true).await;
    let p = start_pipeline(&env, 1).await;

    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04l0000000000U1AAA",
            "006000000000U01AAA",
            "005ERIN",
            "750",
        )],
    );
    let (status, body) = post_outbound_message(&p.ingest, &tenant, xml).await;
    ack(status, &body);
    let activities = wait_for_activities(&env, &tenant, 1).await;
    assert_eq!(activities[0].user_id, None, "kept as unmapped");
    assert_eq!(activities[0].crm_user_id, "005ERIN");
    assert!(
        views::users(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .is_empty(),
        "no user created"
    );
    assert_eq!(topic_message_count(&env.topics.users), 0);

    // Turning the setting on: the next event creates the user, and the earlier activity attaches.
    crm_sync_store::tenants::set_auto_sync_users(
        &env.pool,
        tenant.company_id,
        tenant.integration_id,
        true,
    )
    .await
    .unwrap();
    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04l0000000000U2AAA",
            "006000000000U02AAA",
            "005ERIN",
            "250",
        )],
    );
    let (status, body) = post_outbound_message(&p.ingest, &tenant, xml).await;
    ack(status, &body);
    let activities = eventually("both activities attached to the new user", WAIT, || async {
        let a = views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap();
        (a.len() == 2 && a.iter().all(|a| a.user_id.is_some())).then_some(a)
    })
    .await;
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(users.len(), 1);
    assert!(activities.iter().all(|a| a.user_id == Some(users[0].id)));
    drop(p);
}

#[tokio::test]
async fn twenty_events_for_one_new_owner_on_two_provisioners_make_exactly_one_user() {
    let env = TestEnv::new("race").await;
    let tenant = Tenant::create(&env.pool, "stark", true, true).await;
    let p = start_pipeline(&env, 2).await;

    let ids: Vec<(String, String)> = (0..20)
        .map(|i| (format!("04l00000000R{i:03}AAA"), format!("006RACE{i:011}")))
        .collect();
    let notifications: Vec<_> = ids
        .iter()
        .map(|(n, r)| won_opportunity(n, r, "005FRANK", "10"))
        .collect();
    // Four batches posted at once, so events land on every partition at about the same time.
    let posts = notifications.chunks(5).map(|chunk| {
        let xml = outbound_message(&tenant.organization_id, chunk);
        post_outbound_message(&p.ingest, &tenant, xml)
    });
    for (status, body) in futures::future::join_all(posts).await {
        ack(status, &body);
    }
    let activities = wait_for_activities(&env, &tenant, 20).await;
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(
        users.len(),
        1,
        "exactly one user under concurrency: {users:?}"
    );
    assert!(activities.iter().all(|a| a.user_id == Some(users[0].id)));
    let partitions: std::collections::HashSet<i32> = read_topic(&env.topics.matches)
        .await
        .iter()
        .map(|r| r.partition)
        .collect();
    assert!(
        partitions.len() >= 2,
        "events spread over several partitions: {partitions:?}"
    );
    for provisioner in p.provisioners() {
        assert!(
            metric(
                provisioner,
                "crm_sync_provisioner_outcomes_total",
                &["result=\"applied\""]
            )
            .await
                > 0.0,
            "both provisioners took part ({})",
            provisioner.name
        );
    }
    assert_eq!(
        topic_message_count(&env.topics.users),
        1,
        "one UserProvisioned"
    );
    drop(p);
}
