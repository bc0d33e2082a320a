//! The people lifecycle (a module of the admin_api suite): renaming a user, deactivating and
//! reactivating (off and back on the leaderboard), merging the duplicate auto-sync created into
//! the account an admin made, unmapping a CRM identity (its later activities wait unmapped, also
//! with auto-sync on), and deleting an integration only with its name as confirmation. Every
//! change is read back from Kafka as its users of the platform would see it.

use std::time::Duration;

use crm_sync_e2e::{Tenant, TestEnv, eventually, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::{
    ActivityChanged, ActivityState, CrmUser, OutcomeKind, UserProvisioned, UserStatus,
    WorkflowOutcome,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use uuid::Uuid;

use crm_sync_e2e::app::AdminClient;

use crate::admin_support::{
    company_path, seed_activities, seed_pending_user, start_admin_api, token,
};

const WAIT: Duration = Duration::from_secs(30);

/// The `UserProvisioned` messages published for `user_id` so far.
async fn user_changes(env: &TestEnv, user_id: &str) -> Vec<UserProvisioned> {
    read_topic(&env.topics.users)
        .await
        .iter()
        .map(|r| UserProvisioned::decode(r.payload.as_slice()).unwrap())
        .filter(|u| u.user_id == user_id)
        .collect()
}

/// The `ActivityChanged` messages published for `user_id` so far.
async fn activity_changes(env: &TestEnv, user_id: &str) -> Vec<ActivityChanged> {
    read_topic(&env.topics.activities)
        .await
        .iter()
        .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
        .filter(|a| a.user_id == user_id)
        .collect()
}

fn names(leaderboard: &Value) -> Vec<String> {
    leaderboard["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["display_name"].as_str().unwrap().to_owned())
        .collect()
}

async fn audit_actions(c: &AdminClient, company: Uuid) -> Vec<Value> {
    c.get(&company_path(company, "/audit-log?limit=200"))
        .await
        .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn renaming_and_deactivating_a_user_is_announced_audited_and_drops_them_from_the_leaderboard()
{
    let env = TestEnv::new("people-lifecycle").await;
    let tenant = Tenant::create(&env.pool, "people", false, true).await;
    let other = Tenant::create(&env.pool, "people-other", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let v = AdminClient::new(&api, Some(&viewer));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let alice = seed_pending_user(&env, &tenant, "Alice Able", "005ALICE", &["500"]).await;
    let bob = seed_pending_user(&env, &tenant, "Bob Baker", "005BOB", &["300"]).await;
    let stranger = seed_pending_user(&env, &other, "Stranger", "005STRANGER", &["1"]).await;
    let team = c
        .post(&p("/teams"), json!({"name": "Closers"}))
        .await
        .expect(201);
    let team_id = team["id"].as_str().unwrap();
    for user in [alice, bob] {
        c.put(&p(&format!("/teams/{team_id}/members/{user}")))
            .await
            .expect(200);
    }
    let board = p("/leaderboard?activity_type=deal_won");
    assert_eq!(
        names(&c.get(&board).await.expect(200)),
        ["Alice Able", "Bob Baker"]
    );

    // Rename: validated, viewers and other companies refused, a taken email is a conflict.
    let rename = p(&format!("/users/{alice}"));
    v.patch(&rename, json!({"display_name": "X"}))
        .await
        .expect(403);
    c.patch(
        &p(&format!("/users/{stranger}")),
        json!({"display_name": "X"}),
    )
    .await
    .expect(404);
    c.patch(&rename, json!({"display_name": "  "}))
        .await
        .invalid("display_name");
    c.patch(&rename, json!({"email": "not-an-email"}))
        .await
        .invalid("email");
    c.patch(&rename, json!({})).await.invalid("display_name");
    let taken = c
        .patch(&rename, json!({"email": "BOB.BAKER@example.com"}))
        .await
        .expect(409);
    assert_eq!(taken["field"], "email");
    let renamed = c
        .patch(
            &rename,
            json!({"display_name": "Alice Adams", "email": "alice.adams@example.com"}),
        )
        .await
        .expect(200);
    assert_eq!(renamed["display_name"], "Alice Adams");
    assert_eq!(renamed["email"], "alice.adams@example.com");
    assert_eq!(renamed["status"], "active");

    // Deactivate: off the leaderboard, activities hidden, announced inactive.
    let deactivate = p(&format!("/users/{alice}/deactivate"));
    v.post(&deactivate, json!({})).await.expect(403);
    c.post(&p(&format!("/users/{stranger}/deactivate")), json!({}))
        .await
        .expect(404);
    let off = c.post(&deactivate, json!({})).await.expect(200);
    assert_eq!(off["status"], "inactive");
    assert_eq!(off["deactivated_by"], "admin");
    assert_eq!(names(&c.get(&board).await.expect(200)), ["Bob Baker"]);
    assert_eq!(
        names(&v.get(&board).await.expect(200)),
        ["Bob Baker"],
        "viewers read the same"
    );
    let inactive = c.get(&p("/users?status=inactive")).await.expect(200);
    assert_eq!(inactive["items"].as_array().unwrap().len(), 1);
    assert_eq!(inactive["items"][0]["id"], alice.to_string());
    let hers = c
        .get(&p(&format!("/activities?user_id={alice}")))
        .await
        .expect(200);
    assert!(
        hers["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["visible"] == false),
        "{hers}"
    );
    let alice_s = alice.to_string();
    let announced = eventually("Alice announced inactive", WAIT, || async {
        let changes = user_changes(&env, &alice_s).await;
        changes
            .iter()
            .any(|u| u.status == UserStatus::Inactive as i32)
            .then_some(changes)
    })
    .await;
    let last = announced.last().unwrap();
    assert_eq!(last.display_name, "Alice Adams");
    assert_eq!(last.email, "alice.adams@example.com");
    assert_eq!(last.company_id, tenant.company_id.to_string());
    eventually("Alice's activity announced hidden", WAIT, || async {
        let changes = activity_changes(&env, &alice_s).await;
        changes.last().filter(|a| !a.visible).map(|_| ())
    })
    .await;

    // Placing a deactivated user on another team does not show them again.
    let other_team = c
        .post(&p("/teams"), json!({"name": "Hunters"}))
        .await
        .expect(201);
    c.put(&p(&format!(
        "/teams/{}/members/{alice}",
        other_team["id"].as_str().unwrap()
    )))
    .await
    .expect(200);
    assert_eq!(names(&c.get(&board).await.expect(200)), ["Bob Baker"]);
    // Nor is she announced visible (the placement publishes before it answers).
    assert!(
        !activity_changes(&env, &alice_s)
            .await
            .last()
            .unwrap()
            .visible,
        "a deactivated user's activities were announced visible"
    );

    // Reactivate: back on the leaderboard, announced active.
    let on = c
        .post(&p(&format!("/users/{alice}/reactivate")), json!({}))
        .await
        .expect(200);
    assert_eq!(on["status"], "active");
    assert!(on["deactivated_at"].is_null());
    assert_eq!(
        names(&c.get(&board).await.expect(200)),
        ["Alice Adams", "Bob Baker"]
    );
    eventually("Alice announced active again", WAIT, || async {
        let changes = user_changes(&env, &alice_s).await;
        (changes.last()?.status == UserStatus::Active as i32).then_some(())
    })
    .await;
    eventually("Alice's activity announced visible again", WAIT, || async {
        activity_changes(&env, &alice_s)
            .await
            .last()
            .filter(|a| a.visible)
            .map(|_| ())
    })
    .await;

    let audit = audit_actions(&c, tenant.company_id).await;
    let renamed = audit
        .iter()
        .find(|e| e["action"] == "user.renamed")
        .expect("rename audited");
    assert_eq!(
        renamed["details"]["display_name"],
        json!({"from": "Alice Able", "to": "Alice Adams"}),
        "{renamed}"
    );
    assert_eq!(
        renamed["details"]["email"],
        json!({"from": "alice.able@example.com", "to": "alice.adams@example.com"})
    );
    for action in ["user.deactivated", "user.reactivated"] {
        assert!(
            audit
                .iter()
                .any(|e| e["action"] == action && e["target_id"] == alice_s),
            "{action} not audited: {audit:?}"
        );
    }
}

#[tokio::test]
async fn merging_the_auto_synced_duplicate_moves_identities_and_activities_into_one_line() {
    let env = TestEnv::new("people-merge").await;
    let tenant = Tenant::create(&env.pool, "merge", false, true).await;
    let other = Tenant::create(&env.pool, "merge-other", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    // The account an admin made by hand, with a deal of its own, and the duplicate auto-sync
    // created for the same person's CRM user.
    let kept = c
        .post(
            &p("/users"),
            json!({"display_name": "Carol Danvers", "email": "carol@example.com"}),
        )
        .await
        .expect(201);
    let kept_id: Uuid = kept["id"].as_str().unwrap().parse().unwrap();
    seed_activities(
        &env,
        &tenant,
        "005HAND",
        Some(kept_id),
        &["100"],
        "2026-11-20",
    )
    .await;
    let dup = seed_pending_user(&env, &tenant, "Carol D", "005CAROL", &["700", "300"]).await;
    let stranger = seed_pending_user(&env, &other, "Stranger", "005STRANGER", &["1"]).await;
    let team = c
        .post(&p("/teams"), json!({"name": "Heroes"}))
        .await
        .expect(201);
    let team_id = team["id"].as_str().unwrap();
    for user in [kept_id, dup] {
        c.put(&p(&format!("/teams/{team_id}/members/{user}")))
            .await
            .expect(200);
    }
    let board = p("/leaderboard?activity_type=deal_won");
    assert_eq!(
        names(&c.get(&board).await.expect(200)),
        ["Carol D", "Carol Danvers"]
    );

    let merge = p(&format!("/users/{kept_id}/merge"));
    AdminClient::new(&api, Some(&viewer))
        .post(&merge, json!({"duplicate_user_id": dup}))
        .await
        .expect(403);
    c.post(&merge, json!({"duplicate_user_id": kept_id}))
        .await
        .invalid("duplicate_user_id");
    c.post(&merge, json!({"duplicate_user_id": stranger}))
        .await
        .invalid("duplicate_user_id");
    let missing = c.post(&merge, json!({})).await;
    assert!(
        (400..500).contains(&missing.status) && missing.json()["error"].is_string(),
        "{missing:?}"
    );
    c.post(
        &p(&format!("/users/{stranger}/merge")),
        json!({"duplicate_user_id": dup}),
    )
    .await
    .expect(404);

    let merged = c
        .post(&merge, json!({"duplicate_user_id": dup}))
        .await
        .expect(200);
    assert_eq!(merged["moved_identities"], 1);
    assert_eq!(merged["moved_activities"], 2);
    assert_eq!(merged["user"]["display_name"], "Carol Danvers");
    assert_eq!(merged["user"]["email"], "carol@example.com");
    assert_eq!(
        merged["user"]["crm_identities"],
        json!([{"integration_id": tenant.integration_id, "crm_user_id": "005CAROL"}])
    );
    c.get(&p(&format!("/users/{dup}"))).await.expect(404);
    let board_after = c.get(&board).await.expect(200);
    assert_eq!(names(&board_after), ["Carol Danvers"]);
    assert_eq!(board_after["items"][0]["total"], "1100", "{board_after}");
    // Merging again: the duplicate is gone.
    c.post(&merge, json!({"duplicate_user_id": dup}))
        .await
        .invalid("duplicate_user_id");

    let kept_s = kept_id.to_string();
    let announced = eventually("one UserProvisioned for the merge", WAIT, || async {
        let changes = user_changes(&env, &kept_s).await;
        (!changes.is_empty()).then_some(changes)
    })
    .await;
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0].merged_user_ids, [dup.to_string()]);
    assert!(announced[0].linked_existing_user);
    assert_eq!(announced[0].crm_user_id, "005CAROL");
    let moved = eventually("the moved activities announced", WAIT, || async {
        let changes = activity_changes(&env, &kept_s).await;
        (changes.len() >= 2).then_some(changes)
    })
    .await;
    assert!(
        moved
            .iter()
            .all(|a| a.visible && a.state == ActivityState::Recorded as i32)
    );

    let audit = audit_actions(&c, tenant.company_id).await;
    let entry = audit
        .iter()
        .find(|e| e["action"] == "user.merged")
        .expect("merge audited");
    assert_eq!(entry["target_id"], kept_s);
    assert_eq!(entry["details"]["duplicate"], "Carol D");
}

fn outcome(tenant: &Tenant, record_id: &str, crm_user_id: &str) -> WorkflowOutcome {
    WorkflowOutcome {
        outcome_id: format!("outcome-{record_id}"),
        event_id: format!("event-{record_id}"),
        company_id: tenant.company_id.to_string(),
        integration_id: tenant.integration_id.to_string(),
        workflow_id: tenant.workflow_id.to_string(),
        kind: OutcomeKind::Matched as i32,
        object_type: "Opportunity".into(),
        record_id: record_id.into(),
        owner: Some(CrmUser {
            crm_user_id: crm_user_id.into(),
            ..CrmUser::default()
        }),
        activity_type: "deal_won".into(),
        value: "250".into(),
        activity_date: Some(crm_sync_proto::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        occurred_at: Some(crm_sync_proto::Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        crm: 0,
    }
}

async fn send_outcome(env: &TestEnv, o: &WorkflowOutcome) {
    let producer: FutureProducer = crm_sync_e2e::producer(env);
    producer
        .send(
            FutureRecord::to(&env.topics.matches)
                .key(&format!("{}/Opportunity/{}", o.integration_id, o.record_id))
                .payload(&o.encode_to_vec()),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test]
async fn an_unmapped_identity_waits_unmapped_even_with_auto_sync_on() {
    let env = TestEnv::new("people-unmap").await;
    // Auto-sync on: without the unmapping, the next event would re-create an account.
    let tenant = Tenant::create(&env.pool, "unmap", true, true).await;
    let other = Tenant::create(&env.pool, "unmap-other", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let api = start_admin_api(&env).await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    // The provisioner creates Dan's account from his first deal.
    send_outcome(&env, &outcome(&tenant, "006FIRST", "005DAN")).await;
    let dan = eventually("Dan's account", WAIT, || async {
        let users = c.get(&p("/users")).await.expect(200);
        users["items"].as_array().unwrap().first().cloned()
    })
    .await;
    let dan_id = dan["id"].as_str().unwrap().to_owned();
    let stranger = seed_pending_user(&env, &other, "Stranger", "005STRANGER", &["1"]).await;

    let unmap = p(&format!(
        "/users/{dan_id}/crm-identities/{}/005DAN",
        tenant.integration_id
    ));
    AdminClient::new(&api, Some(&viewer))
        .delete(&unmap)
        .await
        .expect(403);
    c.delete(&p(&format!(
        "/users/{stranger}/crm-identities/{}/005STRANGER",
        other.integration_id
    )))
    .await
    .expect(404);
    c.delete(&p(&format!(
        "/users/{dan_id}/crm-identities/{}/005NOBODY",
        tenant.integration_id
    )))
    .await
    .expect(404);
    let unmapped = c.delete(&unmap).await.expect(200);
    assert_eq!(unmapped["detached_activities"], 1);
    assert_eq!(unmapped["user"]["crm_identities"], json!([]));
    assert_eq!(
        c.get(&p("/activities?unmapped=true")).await.expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A later deal of the same CRM user waits unmapped: no second account.
    send_outcome(&env, &outcome(&tenant, "006LATER", "005DAN")).await;
    eventually("the later deal recorded unmapped", WAIT, || async {
        let waiting = c.get(&p("/activities?unmapped=true")).await.expect(200);
        (waiting["items"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let users = c.get(&p("/users")).await.expect(200);
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "{users}");
    let waiting = c.get(&p("/crm-identities?mapped=false")).await.expect(200);
    assert_eq!(waiting["items"][0]["crm_user_id"], "005DAN");
    assert_eq!(waiting["items"][0]["unmapped_activities"], 2);

    // Mapping it again by hand attaches both.
    let mapped = c
        .post(
            &p(&format!("/users/{dan_id}/crm-identities")),
            json!({"integration_id": tenant.integration_id, "crm_user_id": "005DAN"}),
        )
        .await
        .expect(200);
    assert_eq!(mapped["attached_activities"], 2);
    let audit = audit_actions(&c, tenant.company_id).await;
    assert!(
        audit
            .iter()
            .any(|e| e["action"] == "user.crm_identity_unmapped"
                && e["target_id"] == dan_id.as_str()),
        "{audit:?}"
    );
    eventually("Dan announced without the identity", WAIT, || async {
        let changes = user_changes(&env, &dan_id).await;
        changes
            .iter()
            .any(|u| u.crm_user_id.is_empty())
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_an_integration_needs_its_name_and_retracts_its_activities() {
    let env = TestEnv::new("integration-delete").await;
    let tenant = Tenant::create(&env.pool, "delete", false, true).await;
    let other = Tenant::create(&env.pool, "delete-other", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let v = AdminClient::new(&api, Some(&viewer));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let erin = seed_pending_user(&env, &tenant, "Erin", "005ERIN", &["400", "600"]).await;
    seed_activities(&env, &tenant, "005WAITING", None, &["50"], "2026-11-20").await;
    let integration = p(&format!("/integrations/{}", tenant.integration_id));

    let preview = v.get(&format!("{integration}/deletion")).await.expect(200);
    assert_eq!(preview["name"], "salesforce");
    assert_eq!(preview["workflows"], 1);
    assert_eq!(preview["active_workflows"], 1);
    assert_eq!(preview["crm_identities"], 1);
    assert_eq!(preview["recorded_activities"], 2);
    assert_eq!(preview["unmapped_activities"], 1);
    c.get(&company_path(
        tenant.company_id,
        &format!("/integrations/{}/deletion", other.integration_id),
    ))
    .await
    .expect(404);

    v.delete(&format!("{integration}?confirm=salesforce"))
        .await
        .expect(403);
    let unconfirmed = c.delete(&integration).await.expect(409);
    assert_eq!(unconfirmed["field"], "confirm");
    assert!(
        unconfirmed["message"]
            .as_str()
            .unwrap()
            .contains("1 workflows"),
        "{unconfirmed}"
    );
    c.delete(&format!("{integration}?confirm=hubspot"))
        .await
        .invalid("confirm");
    c.delete(&company_path(
        tenant.company_id,
        &format!("/integrations/{}?confirm=salesforce", other.integration_id),
    ))
    .await
    .expect(404);
    c.get(&integration).await.expect(200);

    let gone = c
        .delete(&format!("{integration}?confirm=salesforce"))
        .await
        .expect(200);
    assert_eq!(gone["recorded_activities"], 2);
    c.get(&integration).await.expect(404);
    assert_eq!(
        c.get(&p("/workflows")).await.expect(200)["items"],
        json!([])
    );
    assert_eq!(
        c.get(&p("/activities")).await.expect(200)["items"],
        json!([])
    );
    // The people stay.
    let user = c.get(&p(&format!("/users/{erin}"))).await.expect(200);
    assert_eq!(user["crm_identities"], json!([]));
    // The other company's integration is untouched.
    let theirs: (i64,) = sqlx::query_as("SELECT count(*) FROM workflows WHERE integration_id = $1")
        .bind(other.integration_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(theirs.0, 1);

    let erin_s = erin.to_string();
    let retracted = eventually("Erin's activities retracted downstream", WAIT, || async {
        let changes = activity_changes(&env, &erin_s).await;
        (changes.len() >= 2).then_some(changes)
    })
    .await;
    assert!(
        retracted
            .iter()
            .all(|a| a.state == ActivityState::Retracted as i32 && !a.visible)
    );
    let audit = audit_actions(&c, tenant.company_id).await;
    let entry = audit
        .iter()
        .find(|e| e["action"] == "integration.deleted")
        .expect("delete audited");
    assert_eq!(entry["details"]["name"], "salesforce");
}
