//! Teams and identities decide what counts: placing users on teams, mapping CRM identities by
//! hand, and the visibility changes announced downstream through the outbox.

use crm_sync_proto::v1::{UserProvisioned, UserStatus};

use super::*;

#[tokio::test]
async fn placing_a_pending_user_on_a_team_activates_it_and_shows_its_activities() {
    let env = TestEnv::new("admin-teams").await;
    let w = admin_world(&env, ("acme", "globex"), true).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let alice = seed_pending_user(&env, tenant, "Alice", "005ALICE", &["1000", "250.50"]).await;
    let bob = seed_pending_user(&env, tenant, "Bob", "005BOB", &["99"]).await;
    let stranger = seed_pending_user(&env, other, "Mallory", "005MAL", &["5"]).await;

    let pending = c
        .get(&p("/users?status=pending&source=auto_sync"))
        .await
        .expect(200);
    assert_eq!(pending["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        c.get(&p("/users?source=manual")).await.expect(200)["items"],
        json!([])
    );

    let team = c
        .post(&p("/teams"), json!({"name": "Nordics"}))
        .await
        .expect(201);
    let team_id = team["id"].as_str().unwrap().to_owned();
    c.post(&p("/teams"), json!({"name": "Nordics"}))
        .await
        .expect(409);
    c.post(&p("/teams"), json!({"name": ""}))
        .await
        .invalid("name");
    let second = c
        .post(&p("/teams"), json!({"name": "Enterprise"}))
        .await
        .expect(201);
    let second_id = second["id"].as_str().unwrap().to_owned();

    // Nothing is visible before placement: the leaderboard counts only users on a team.
    let board = c
        .get(&p("/leaderboard?activity_type=deal_won"))
        .await
        .expect(200);
    assert_eq!(board["items"], json!([]));

    let placed = c
        .put(&p(&format!("/teams/{team_id}/members/{alice}")))
        .await
        .expect(200);
    assert_eq!(placed["status"], "active");
    assert_eq!(placed["teams"][0]["name"], "Nordics");
    let board = c
        .get(&p("/leaderboard?activity_type=deal_won"))
        .await
        .expect(200);
    assert_eq!(board["items"].as_array().unwrap().len(), 1);
    assert_eq!(board["items"][0]["display_name"], "Alice");
    assert_eq!(board["items"][0]["total"], "1250.50");
    assert_eq!(board["items"][0]["count"], 2);

    // Downstream hears that Alice's activities recorded so far are visible now.
    let changes = eventually("visible ActivityChanged for Alice", WAIT, || async {
        let records = read_topic(&env.topics.activities).await;
        (records.len() >= 2).then_some(records)
    })
    .await;
    assert_eq!(changes.len(), 2);
    for r in &changes {
        let c = ActivityChanged::decode(r.payload.as_slice()).unwrap();
        assert!(c.visible);
        assert_eq!(c.user_id, alice.to_string());
        assert_eq!(
            r.key.as_deref(),
            Some(format!("{}/{alice}", tenant.company_id).as_str())
        );
        assert_eq!(r.header("crm-sync-event-id"), Some(c.change_id.as_str()));
    }

    // And that Alice's account is active now, once.
    let activations = || async {
        read_topic(&env.topics.users)
            .await
            .iter()
            .map(|r| UserProvisioned::decode(r.payload.as_slice()).unwrap())
            .filter(|u| u.user_id == alice.to_string() && u.status == UserStatus::Active as i32)
            .count()
    };
    eventually("Alice announced active", WAIT, || async {
        (activations().await == 1).then_some(())
    })
    .await;

    // A second team changes no visibility; placing again is idempotent.
    c.put(&p(&format!("/teams/{second_id}/members/{alice}")))
        .await
        .expect(200);
    c.put(&p(&format!("/teams/{team_id}/members/{alice}")))
        .await
        .expect(200);
    assert_eq!(read_topic(&env.topics.activities).await.len(), 2);
    assert_eq!(activations().await, 1);

    // Users on no team, team filter, and search.
    let no_team = c.get(&p("/users?on_team=false")).await.expect(200);
    let names: Vec<&str> = no_team["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Bob"]);
    let members = c
        .get(&p(&format!("/users?team_id={second_id}")))
        .await
        .expect(200);
    assert_eq!(members["items"][0]["id"], alice.to_string());
    assert_eq!(
        c.get(&p("/users?q=ALI")).await.expect(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    c.get(&p("/users?status=gone")).await.invalid("status");
    c.get(&p("/users?on_team=perhaps")).await.invalid("on_team");
    c.get(&p("/users?colour=blue")).await.invalid("colour");

    // Another company's user or team cannot be placed, nor ours on theirs.
    c.put(&p(&format!("/teams/{team_id}/members/{stranger}")))
        .await
        .expect(404);
    c.put(&p(&format!("/teams/{team_id}/members/{}", Uuid::new_v4())))
        .await
        .expect(404);
    c.get(&p(&format!("/users/{stranger}"))).await.expect(404);

    // Removing from one team keeps the activities visible; from the last one hides them.
    c.delete(&p(&format!("/teams/{second_id}/members/{alice}")))
        .await
        .expect(200);
    assert_eq!(read_topic(&env.topics.activities).await.len(), 2);
    let off = c
        .delete(&p(&format!("/teams/{team_id}/members/{alice}")))
        .await
        .expect(200);
    assert_eq!(off["teams"], json!([]));
    assert_eq!(off["status"], "active", "an activated user stays active");
    let hidden = eventually("hidden ActivityChanged for Alice", WAIT, || async {
        let records = read_topic(&env.topics.activities).await;
        (records.len() >= 4).then_some(records)
    })
    .await;
    let invisible = hidden
        .iter()
        .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
        .filter(|c| !c.visible)
        .count();
    assert_eq!(invisible, 2);
    assert_eq!(
        c.get(&p("/leaderboard?activity_type=deal_won"))
            .await
            .expect(200)["items"],
        json!([])
    );

    // Deleting a team hides its members' activities too.
    c.put(&p(&format!("/teams/{team_id}/members/{bob}")))
        .await
        .expect(200);
    assert_eq!(
        c.get(&p(&format!("/teams/{team_id}"))).await.expect(200)["member_count"],
        1
    );
    c.patch(
        &p(&format!("/teams/{team_id}")),
        json!({"name": "Nordics & Baltics"}),
    )
    .await
    .expect(200);
    c.delete(&p(&format!("/teams/{team_id}"))).await.expect(204);
    c.get(&p(&format!("/teams/{team_id}"))).await.expect(404);
    let bob_view = c.get(&p(&format!("/users/{bob}"))).await.expect(200);
    assert_eq!(bob_view["teams"], json!([]));
    eventually("hidden ActivityChanged for Bob", WAIT, || async {
        let records = read_topic(&env.topics.activities).await;
        records
            .iter()
            .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
            .any(|c| c.user_id == bob.to_string() && !c.visible)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn mapping_a_crm_identity_by_hand_attaches_its_unmapped_activities() {
    let env = TestEnv::new("admin-mapping").await;
    let w = admin_world(&env, ("acme", "globex"), false).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let p = |rest: &str| company_path(tenant.company_id, rest);

    // What the provisioner leaves with auto-sync off: an identity without a user, and activities.
    sqlx::query("INSERT INTO crm_identities (company_id, integration_id, crm_user_id, display_name) VALUES ($1, $2, '005CAROL', 'Carol')")
        .bind(tenant.company_id)
        .bind(tenant.integration_id)
        .execute(&env.pool)
        .await
        .unwrap();
    seed_activities(
        &env,
        tenant,
        "005CAROL",
        None,
        &["300", "700"],
        "2026-11-10",
    )
    .await;

    let unmapped = c.get(&p("/activities?unmapped=true")).await.expect(200);
    assert_eq!(unmapped["items"].as_array().unwrap().len(), 2);
    assert!(
        unmapped["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["user_id"].is_null() && a["visible"] == false)
    );
    let identities = c.get(&p("/crm-identities?mapped=false")).await.expect(200);
    assert_eq!(identities["items"][0]["crm_user_id"], "005CAROL");
    assert_eq!(identities["items"][0]["unmapped_activities"], 2);

    let carol = c
        .post(
            &p("/users"),
            json!({"display_name": "Carol Danvers", "email": "carol@example.com"}),
        )
        .await
        .expect(201);
    assert_eq!(carol["status"], "pending");
    assert_eq!(carol["source"], "manual");
    let carol_id = carol["id"].as_str().unwrap().to_owned();
    c.post(
        &p("/users"),
        json!({"display_name": "Carol 2", "email": "CAROL@example.com"}),
    )
    .await
    .expect(409);
    c.post(
        &p("/users"),
        json!({"display_name": "X", "email": "not-an-email"}),
    )
    .await
    .invalid("email");
    let team = c
        .post(&p("/teams"), json!({"name": "Heroes"}))
        .await
        .expect(201);
    c.put(&p(&format!(
        "/teams/{}/members/{carol_id}",
        team["id"].as_str().unwrap()
    )))
    .await
    .expect(200);

    let map = |body: Value| {
        let c = &c;
        let path = p(&format!("/users/{carol_id}/crm-identities"));
        async move { c.post(&path, body).await }
    };
    map(json!({"integration_id": other.integration_id, "crm_user_id": "005CAROL"}))
        .await
        .invalid("integration_id");
    map(json!({"integration_id": tenant.integration_id, "crm_user_id": ""}))
        .await
        .invalid("crm_user_id");
    let mapped = map(json!({"integration_id": tenant.integration_id, "crm_user_id": "005CAROL"}))
        .await
        .expect(200);
    assert_eq!(mapped["attached_activities"], 2);
    assert_eq!(
        mapped["user"]["crm_identities"][0]["crm_user_id"],
        "005CAROL"
    );
    assert_eq!(
        c.get(&p("/activities?unmapped=true")).await.expect(200)["items"],
        json!([])
    );
    assert_activities_visible(c, tenant.company_id, &carol_id, true).await;
    assert_eq!(
        c.get(&p("/crm-identities?mapped=false")).await.expect(200)["items"],
        json!([])
    );

    // Attached activities are forwarded, visible since Carol is on a team.
    let changes = eventually(
        "ActivityChanged for the attached activities",
        WAIT,
        || async {
            let records = read_topic(&env.topics.activities).await;
            (records.len() >= 2).then_some(records)
        },
    )
    .await;
    for r in &changes {
        let change = ActivityChanged::decode(r.payload.as_slice()).unwrap();
        assert_eq!(change.user_id, carol_id);
        assert!(change.visible);
    }

    // Mapping again is harmless; mapping to someone else is a conflict.
    assert_eq!(
        map(json!({"integration_id": tenant.integration_id, "crm_user_id": "005CAROL"}))
            .await
            .expect(200)["attached_activities"],
        0
    );
    let dave = c
        .post(&p("/users"), json!({"display_name": "Dave"}))
        .await
        .expect(201);
    let conflict = c
        .post(
            &p(&format!(
                "/users/{}/crm-identities",
                dave["id"].as_str().unwrap()
            )),
            json!({"integration_id": tenant.integration_id, "crm_user_id": "005CAROL"}),
        )
        .await
        .expect(409);
    assert_eq!(conflict["field"], "crm_user_id");
}

#[tokio::test]
async fn visibility_changes_left_in_the_outbox_are_relayed_after_a_crash() {
    let env = TestEnv::new("admin-relay").await;
    // What a replica that crashed between commit and publish leaves: its batch, and another
    // writer's batch that admin-api must leave to its owner.
    for (batch, id) in [
        ("admin-api/crashed", "change-1"),
        ("outcome-42", "change-2"),
    ] {
        sqlx::query(
            "INSERT INTO outbox (event_id, topic, message_key, message_id, payload, created_at)
             VALUES ($1, $2, 'company/user', $3, '\\x0a01'::bytea, now() - interval '1 minute')",
        )
        .bind(batch)
        .bind(&env.topics.activities)
        .bind(id)
        .execute(&env.pool)
        .await
        .unwrap();
    }
    let _api = start_admin_api(&env).await;
    let relayed = eventually("the relay to publish the leftover", WAIT, || async {
        let records = read_topic(&env.topics.activities).await;
        (!records.is_empty()).then_some(records)
    })
    .await;
    assert_eq!(relayed.len(), 1);
    assert_eq!(relayed[0].header("crm-sync-event-id"), Some("change-1"));
    eventually("the relayed row to be deleted", WAIT, || async {
        let (left,): (Vec<String>,) =
            sqlx::query_as("SELECT coalesce(array_agg(event_id), '{}') FROM outbox")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        (left == ["outcome-42"]).then_some(())
    })
    .await;
}
