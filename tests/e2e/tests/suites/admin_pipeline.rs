//! The control plane driving the pipeline, everything as real processes on real Kafka and
//! PostgreSQL: an admin turns auto-sync on through the API, CRM events create a pending user,
//! the admin places the user on a team through the API, and the leaderboard shows the user's
//! activities, including those recorded before the placement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::admin_support;
use crate::connectors;

use std::time::Duration;

use crm_sync_e2e::app::AdminClient;

use admin_support::{company_path, start_admin_api, token};
use crm_sync_e2e::salesforce::{outbound_message, won_opportunity};
use crm_sync_e2e::{Tenant, TestEnv, eventually, metric, post_outbound_message, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::{ActivityChanged, UserProvisioned, UserStatus};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn admin_turns_auto_sync_on_places_the_new_user_and_the_leaderboard_shows_all_its_activities()
{
    let env = TestEnv::new("admin-pipeline").await;
    // auto_sync_users off, as every integration starts; the workflow counts won opportunities.
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let api = start_admin_api(&env).await;
    for consumer in [&evaluator, &provisioner] {
        eventually("consumer owns partitions", WAIT, || async {
            (metric(consumer, "crm_sync_consumer_assigned_partitions", &[]).await > 0.0)
                .then_some(())
        })
        .await;
    }
    let admin = token(&env, tenant.company_id, "admin").await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);
    let send = |notification: &'static str, record: &'static str, amount: &'static str| {
        let xml = outbound_message(
            &tenant.organization_id,
            &[won_opportunity(
                notification,
                record,
                "005NEWREP000001",
                amount,
            )],
        );
        let ingest = &ingest;
        let tenant = &tenant;
        async move {
            let (status, body) = post_outbound_message(ingest, tenant, xml).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    let activities = |query: String, n: usize| {
        let c = &c;
        let path = p(&format!("/activities{query}"));
        async move {
            eventually(&format!("{n} activities at {query}"), WAIT, || async {
                let items = c.get(&path).await.expect(200)["items"]
                    .as_array()
                    .unwrap()
                    .clone();
                (items.len() >= n).then_some(items)
            })
            .await
        }
    };

    // Auto-sync off: the won deal is kept as unmapped, nobody is created.
    send("04l0000000000A1AAA", "006000000000A01AAA", "1000").await;
    let unmapped = activities("?unmapped=true".into(), 1).await;
    assert_eq!(unmapped[0]["crm_user_id"], "005NEWREP000001");
    assert_eq!(c.get(&p("/users")).await.expect(200)["items"], json!([]));

    // The admin turns auto-sync on through the API.
    let on = c
        .patch(
            &p(&format!("/integrations/{}", tenant.integration_id)),
            json!({"auto_sync_users": true}),
        )
        .await
        .expect(200);
    assert_eq!(on["auto_sync_users"], true);

    // Without any new event, the waiting CRM user gets one pending account and the waiting
    // activity is attached to it: turning the setting on attaches what waits, automatically.
    let pending = eventually(
        "a pending auto-synced user without a new event",
        WAIT,
        || async {
            let items = c
                .get(&p("/users?status=pending&source=auto_sync"))
                .await
                .expect(200)["items"]
                .as_array()
                .unwrap()
                .clone();
            (items.len() == 1).then(|| items[0].clone())
        },
    )
    .await;
    let attached = activities(format!("?user_id={}", pending["id"].as_str().unwrap()), 1).await;
    assert_eq!(attached[0]["value"], "1000");
    assert_eq!(
        c.get(&p("/activities?unmapped=true")).await.expect(200)["items"],
        json!([])
    );
    let provisioned = eventually("one UserProvisioned", WAIT, || async {
        let users: Vec<UserProvisioned> = read_topic(&env.topics.users)
            .await
            .iter()
            .map(|r| UserProvisioned::decode(r.payload.as_slice()).unwrap())
            .collect();
        (!users.is_empty()).then_some(users)
    })
    .await;
    assert_eq!(provisioned.len(), 1, "{provisioned:?}");
    assert_eq!(provisioned[0].user_id, pending["id"].as_str().unwrap());
    assert_eq!(provisioned[0].crm_user_id, "005NEWREP000001");
    assert_eq!(provisioned[0].status, UserStatus::Pending as i32);
    let attached_change = eventually("the attached activity announced", WAIT, || async {
        read_topic(&env.topics.activities)
            .await
            .iter()
            .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
            .find(|c| c.user_id == provisioned[0].user_id)
    })
    .await;
    assert_eq!(attached_change.value, "1000");
    assert!(!attached_change.visible, "on no team yet");

    // The user's next event goes to the same account.
    send("04l0000000000A2AAA", "006000000000A02AAA", "250.50").await;
    let user_id = pending["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pending["crm_identities"][0]["crm_user_id"],
        "005NEWREP000001"
    );
    let before = activities(format!("?user_id={user_id}"), 2).await;
    assert_eq!(
        c.get(&p("/users")).await.expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the next event reuses the account auto-sync created"
    );
    assert!(
        before.iter().all(|a| a["visible"] == false),
        "not visible while on no team: {before:?}"
    );
    assert_eq!(
        c.get(&p("/activities?unmapped=true")).await.expect(200)["items"],
        json!([])
    );
    let board = c
        .get(&p("/leaderboard?activity_type=deal_won"))
        .await
        .expect(200);
    assert_eq!(
        board["items"],
        json!([]),
        "a user on no team is not on the leaderboard"
    );

    // The admin places the user on a team through the API.
    let team = c
        .post(&p("/teams"), json!({"name": "New sellers"}))
        .await
        .expect(201);
    let placed = c
        .put(&p(&format!(
            "/teams/{}/members/{user_id}",
            team["id"].as_str().unwrap()
        )))
        .await
        .expect(200);
    assert_eq!(placed["status"], "active");

    // The leaderboard shows both activities, recorded before the placement.
    let board = c
        .get(&p(
            "/leaderboard?activity_type=deal_won&from=2026-11-01&to=2026-11-30",
        ))
        .await
        .expect(200);
    let entry: &Value = &board["items"][0];
    assert_eq!(entry["user_id"], user_id.as_str());
    assert_eq!(entry["total"], "1250.50");
    assert_eq!(entry["count"], 2);
    assert_eq!(entry["teams"], json!(["New sellers"]));

    // An activity recorded after the placement counts at once.
    send("04l0000000000A3AAA", "006000000000A03AAA", "99").await;
    eventually("the leaderboard to include the new deal", WAIT, || async {
        let board = c
            .get(&p("/leaderboard?activity_type=deal_won"))
            .await
            .expect(200);
        (board["items"][0]["count"] == 3).then_some(())
    })
    .await;
    let board = c
        .get(&p("/leaderboard?activity_type=deal_won"))
        .await
        .expect(200);
    assert_eq!(board["items"][0]["total"], "1349.50");

    // Downstream saw each activity become visible: the two earlier ones from admin-api at the
    // placement, the new one from the provisioner.
    let visible = eventually("three visible ActivityChanged", WAIT, || async {
        let changes: Vec<ActivityChanged> = read_topic(&env.topics.activities)
            .await
            .iter()
            .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
            .filter(|c| c.visible)
            .collect();
        (changes.len() >= 3).then_some(changes)
    })
    .await;
    let mut values: Vec<String> = visible.iter().map(|c| c.value.clone()).collect();
    values.sort();
    assert_eq!(values, ["1000", "250.50", "99"]);
    assert!(visible.iter().all(|c| c.user_id == user_id));
    let audit = c.all(&p("/audit-log"), 50).await;
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "team.member_placed",
            "team.created",
            "integration.updated",
            "admin_token.created"
        ]
    );
}

/// Turning auto-sync on with two provisioner replicas listening: each waiting CRM identity gets
/// exactly one account (both replicas sweep and are notified at once), named from the CRM's
/// user directory, linked by email to an existing user where there is one, and all waiting
/// activities are attached and announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_auto_sync_on_provisions_each_waiting_identity_once_across_replicas() {
    use connectors::{FakeCrm, SERVICE_ENV, count, post, setup, start_pipeline, users_announced};
    use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets, OAuthCredentials};

    const ORG: &str = "00D5g000004ABCDEAA";
    const WEBHOOK_TOKEN: &str = "sf-webhook-token-e2e";
    let crm = FakeCrm::start().await;
    crm.add_user("0055g00000JaNeAAAA", "Jane Doe", "jane.doe@example.com");
    crm.add_user("0055g00000BoBsAAAA", "Bob Stone", "Bob.Stone@example.com");
    // The third rep is unknown to the CRM's directory: the account keeps the CRM user id as its name.
    let s = setup(
        "admin-auto-sync-replicas",
        "salesforce",
        ORG,
        IntegrationSecrets {
            api: Some(ApiCredentials {
                base_url: Some(crm.base_url.clone()),
                access_token: None,
                oauth: Some(OAuthCredentials {
                    client_id: "3MVG9-e2e".into(),
                    client_secret: "sf-consumer-secret-e2e".into(),
                    refresh_token: None,
                    token_url: None,
                    scope: None,
                    tenant_id: None,
                }),
            }),
            ..IntegrationSecrets::default()
        },
        Some(WEBHOOK_TOKEN),
        json!({
            "name": "Won opportunities", "object_type": "Opportunity", "triggers": ["created", "updated"],
            "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
            "user_field": "OwnerId", "value_field": "Amount", "activity_type": "deal_won"
        }),
    )
    .await;
    let env = &s.env;
    // Auto-sync off while the events arrive, as every integration starts.
    sqlx::query("UPDATE integrations SET auto_sync_users = false WHERE id = $1")
        .bind(s.integration_id)
        .execute(&env.pool)
        .await
        .unwrap();
    // Bob already has an account (created by an admin, with his email in another case).
    let api = start_admin_api(env).await;
    let c = AdminClient::new(&api, Some(&token(env, s.company_id, "admin").await));
    let p = |rest: &str| company_path(s.company_id, rest);
    let bob = c
        .post(
            &p("/users"),
            json!({"display_name": "Bob S.", "email": "bob.stone@example.com"}),
        )
        .await
        .expect(201);

    let pipeline = start_pipeline(env, &[]).await;
    let second = env
        .start_service("provisioner", "provisioner-2", &SERVICE_ENV)
        .await;
    eventually("the consumers own the partitions", WAIT, || async {
        let assigned = |s| metric(s, "crm_sync_consumer_assigned_partitions", &[]);
        let evaluator = assigned(&pipeline.evaluator).await;
        let provisioners = assigned(&pipeline.provisioner).await + assigned(&second).await;
        (evaluator > 0.0 && provisioners > 0.0).then_some(())
    })
    .await;
    let url = pipeline.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={WEBHOOK_TOKEN}",
        s.integration_id
    ));
    let deals = [
        (
            "04l0000000000B1AAA",
            "006000000000B01AAA",
            "0055g00000JaNeAAAA",
            "100",
        ),
        (
            "04l0000000000B2AAA",
            "006000000000B02AAA",
            "0055g00000JaNeAAAA",
            "200",
        ),
        (
            "04l0000000000B3AAA",
            "006000000000B03AAA",
            "0055g00000BoBsAAAA",
            "300",
        ),
        (
            "04l0000000000B4AAA",
            "006000000000B04AAA",
            "0055g00000GhOsAAAA",
            "400",
        ),
    ];
    for (notification, record, owner, amount) in deals {
        let xml = crm_sync_e2e::salesforce::outbound_message(
            ORG,
            &[won_opportunity(notification, record, owner, amount)],
        );
        let answer = post(
            &url,
            &[
                ("content-type", "text/xml; charset=utf-8"),
                ("soapaction", "\"\""),
            ],
            xml,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let unmapped = format!(
        "SELECT count(*) FROM activities WHERE integration_id = '{}' AND user_id IS NULL",
        s.integration_id
    );
    eventually("four unmapped activities", WAIT, || async {
        (count(env, &unmapped).await == 4).then_some(())
    })
    .await;
    assert_eq!(
        count(
            env,
            &format!(
                "SELECT count(*) FROM users WHERE company_id = '{}'",
                s.company_id
            )
        )
        .await,
        1,
        "auto-sync off creates nobody"
    );

    c.patch(
        &p(&format!("/integrations/{}", s.integration_id)),
        json!({"auto_sync_users": true}),
    )
    .await
    .expect(200);

    // No further event: everything waiting is attached.
    eventually("every waiting activity attached", WAIT, || async {
        (count(env, &unmapped).await == 0).then_some(())
    })
    .await;
    let users = c.all(&p("/users"), 50).await;
    assert_eq!(
        users.len(),
        3,
        "Jane and the ghost created, Bob linked: {users:?}"
    );
    let by_name = |name: &str| {
        users
            .iter()
            .find(|u| u["display_name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {users:?}"))
    };
    let jane = by_name("Jane Doe");
    assert_eq!(jane["email"], "jane.doe@example.com");
    assert_eq!(jane["status"], "pending");
    assert_eq!(jane["source"], "auto_sync");
    assert_eq!(by_name("0055g00000GhOsAAAA")["status"], "pending");
    assert_eq!(
        by_name("Bob S.")["id"],
        bob["id"],
        "linked by email, not duplicated"
    );
    for (user, n) in [
        (jane, 2),
        (by_name("Bob S."), 1),
        (by_name("0055g00000GhOsAAAA"), 1),
    ] {
        let activities = c
            .get(&p(&format!(
                "/activities?user_id={}",
                user["id"].as_str().unwrap()
            )))
            .await
            .expect(200);
        assert_eq!(activities["items"].as_array().unwrap().len(), n, "{user}");
    }

    // Announced once per identity, although both replicas were told.
    let announced = eventually("three UserProvisioned", WAIT, || async {
        let users = users_announced(env).await;
        (users.len() >= 3).then_some(users)
    })
    .await;
    let mut identities: Vec<&str> = announced.iter().map(|u| u.crm_user_id.as_str()).collect();
    identities.sort();
    assert_eq!(
        identities,
        [
            "0055g00000BoBsAAAA",
            "0055g00000GhOsAAAA",
            "0055g00000JaNeAAAA"
        ],
        "{announced:?}"
    );
    let bob_announced = announced
        .iter()
        .find(|u| u.crm_user_id == "0055g00000BoBsAAAA")
        .unwrap();
    assert!(bob_announced.linked_existing_user);
    let attached = eventually("four attached activities announced", WAIT, || async {
        let changes: Vec<ActivityChanged> = read_topic(&env.topics.activities)
            .await
            .iter()
            .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
            .collect();
        (changes.len() >= 4).then_some(changes)
    })
    .await;
    let mut ids: Vec<&str> = attached.iter().map(|a| a.activity_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((attached.len(), ids.len()), (4, 4), "{attached:?}");
    drop(second);
}
