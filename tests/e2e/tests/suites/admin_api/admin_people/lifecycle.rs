//! A user's life after sync: renamed, deactivated, and merged with an auto-synced duplicate.

use std::collections::BTreeSet;

use super::*;

#[tokio::test]
async fn renaming_and_deactivating_a_user_is_announced_audited_and_drops_them_from_the_leaderboard()
{
    let env = TestEnv::new("people-lifecycle").await;
    let w = admin_world(&env, ("people", "people-other"), false).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let v = &w.viewer(&env).await;
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let alice = seed_pending_user(&env, tenant, "Alice Able", "005ALICE", &["500"]).await;
    let bob = seed_pending_user(&env, tenant, "Bob Baker", "005BOB", &["300"]).await;
    let stranger = seed_pending_user(&env, other, "Stranger", "005STRANGER", &["1"]).await;
    team_of(c, tenant.company_id, "Closers", &[alice, bob]).await;
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
    assert_activities_visible(c, tenant.company_id, alice, false).await;
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

    let audit = audit_actions(c, tenant.company_id).await;
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
    // Each says how many of Alice's activities it hid or showed again (she has one).
    for (action, count) in [
        ("user.deactivated", "hidden_activities"),
        ("user.reactivated", "shown_activities"),
    ] {
        let entry = audit
            .iter()
            .find(|e| e["action"] == action && e["target_id"] == alice_s)
            .unwrap_or_else(|| panic!("{action} not audited: {audit:?}"));
        assert_eq!(entry["details"][count], 1, "{entry}");
        assert_eq!(
            entry["details"]["was_inactive"],
            action == "user.reactivated"
        );
    }
}

#[tokio::test]
async fn merging_the_auto_synced_duplicate_moves_identities_and_activities_into_one_line() {
    let env = TestEnv::new("people-merge").await;
    let w = admin_world(&env, ("merge", "merge-other"), false).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let v = w.viewer(&env).await;
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
        tenant,
        "005HAND",
        Some(kept_id),
        &["100"],
        "2026-11-20",
    )
    .await;
    let dup = seed_pending_user(&env, tenant, "Carol D", "005CAROL", &["700", "300"]).await;
    let stranger = seed_pending_user(&env, other, "Stranger", "005STRANGER", &["1"]).await;
    team_of(c, tenant.company_id, "Heroes", &[kept_id, dup]).await;
    let board = p("/leaderboard?activity_type=deal_won");
    assert_eq!(
        names(&c.get(&board).await.expect(200)),
        ["Carol D", "Carol Danvers"]
    );

    let merge = p(&format!("/users/{kept_id}/merge"));
    v.post(&merge, json!({"duplicate_user_id": dup}))
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
    // (The first was its activation, when it was placed on the team.)
    let announced = eventually("one UserProvisioned for the merge", WAIT, || async {
        let changes: Vec<_> = user_changes(&env, &kept_s)
            .await
            .into_iter()
            .filter(|u| !u.merged_user_ids.is_empty())
            .collect();
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

    let audit = audit_actions(c, tenant.company_id).await;
    let entry = audit
        .iter()
        .find(|e| e["action"] == "user.merged")
        .expect("merge audited");
    assert_eq!(entry["target_id"], kept_s);
    assert_eq!(entry["details"]["duplicate"], "Carol D");
}

/// The kept account on no team yet, the duplicate on one: the merge places the kept user on the
/// duplicate's team, so its own activities come into view downstream too, not only the moved.
#[tokio::test]
async fn a_merge_that_places_the_kept_user_on_a_team_announces_its_own_activities_visible() {
    let env = TestEnv::new("people-merge-shown").await;
    let w = admin_world(&env, ("merge-shown", "merge-shown-other"), false).await;
    let (tenant, c) = (&w.tenant, &w.admin);
    let p = |rest: &str| company_path(tenant.company_id, rest);
    let kept = c
        .post(&p("/users"), json!({"display_name": "Dana Scully"}))
        .await
        .expect(201);
    let kept_id: Uuid = kept["id"].as_str().unwrap().parse().unwrap();
    seed_activities(
        &env,
        tenant,
        "005DANA",
        Some(kept_id),
        &["100"],
        "2026-11-20",
    )
    .await;
    let dup = seed_pending_user(&env, tenant, "D. Scully", "005SCULLY", &["700"]).await;
    team_of(c, tenant.company_id, "Agents", &[dup]).await;

    c.post(
        &p(&format!("/users/{kept_id}/merge")),
        json!({"duplicate_user_id": dup}),
    )
    .await
    .expect(200);
    let board = c
        .get(&p("/leaderboard?activity_type=deal_won"))
        .await
        .expect(200);
    assert_eq!(names(&board), ["Dana Scully"]);
    assert_eq!(board["items"][0]["total"], "800", "{board}");
    let kept_s = kept_id.to_string();
    let shown = eventually("both activities announced visible", WAIT, || async {
        let changes = activity_changes(&env, &kept_s).await;
        let values: BTreeSet<String> = changes
            .iter()
            .filter(|a| a.visible && a.state == ActivityState::Recorded as i32)
            .map(|a| a.value.clone())
            .collect();
        (values.len() == 2).then_some(values)
    })
    .await;
    assert_eq!(shown, BTreeSet::from(["100".into(), "700".into()]));
}
