//! Configuring a company's sync: integrations (auto-sync, secrets never shown) and workflows
//! (validated like the evaluator validates them, dry runs).

use super::*;

#[tokio::test]
async fn integrations_turn_auto_sync_on_and_never_show_their_secrets() {
    let env = TestEnv::new("admin-integrations").await;
    let w = admin_world(&env, ("acme", "globex"), false).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let v = &w.viewer(&env).await;
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let listed = c.get(&p("/integrations")).await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let existing = &listed["items"][0];
    assert_eq!(existing["has_webhook_token"], true);
    assert_eq!(existing["auto_sync_users"], false);
    assert!(
        existing.get("webhook_token").is_none() && existing.get("webhook_token_sha256").is_none()
    );

    // Only an admin turns auto-sync on; the change is audited.
    let path = p(&format!("/integrations/{}", tenant.integration_id));
    v.patch(&path, json!({"auto_sync_users": true}))
        .await
        .expect(403);
    let on = c
        .patch(&path, json!({"auto_sync_users": true}))
        .await
        .expect(200);
    assert_eq!(on["auto_sync_users"], true);
    let stored = crm_sync_store::integrations::find(&env.pool, tenant.integration_id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.auto_sync_users);
    let audit = v.get(&p("/audit-log")).await.expect(200);
    let entry = &audit["items"][0];
    assert_eq!(entry["action"], "integration.updated");
    assert_eq!(
        entry["details"]["auto_sync_users"],
        json!({"from": false, "to": true})
    );
    assert!(
        entry["actor"].as_str().unwrap().contains("admin"),
        "{entry}"
    );

    // Create, with a write-only token; then rotate it.
    let created = c
        .post(
            &p("/integrations"),
            json!({"name": "hubspot", "crm": "hubspot", "crm_account_id": "4711", "webhook_token": "s3cret-s3cret-s3cret"}),
        )
        .await
        .expect(201);
    assert_eq!(created["has_webhook_token"], true);
    assert!(!created.to_string().contains("s3cret"), "{created}");
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    let found = crm_sync_store::integrations::find(&env.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert!(found.accepts_token("s3cret-s3cret-s3cret"));
    let rotated = c
        .post(&p(&format!("/integrations/{id}/webhook-token")), json!({}))
        .await
        .expect(200);
    let new_token = rotated["webhook_token"].as_str().unwrap();
    let found = crm_sync_store::integrations::find(&env.pool, id)
        .await
        .unwrap()
        .unwrap();
    assert!(found.accepts_token(new_token) && !found.accepts_token("s3cret-s3cret-s3cret"));
    let fetched = c.get(&p(&format!("/integrations/{id}"))).await.expect(200);
    assert!(!fetched.to_string().contains(new_token));
    assert_eq!(
        fetched["webhook_path"],
        format!("/v1/integrations/{id}/hubspot/webhooks")
    );

    // Bad input: 422 naming the field; duplicates 409; unknown JSON fields refused.
    c.post(
        &p("/integrations"),
        json!({"name": "x", "crm": "sap", "crm_account_id": "1"}),
    )
    .await
    .invalid("crm");
    c.post(
        &p("/integrations"),
        json!({"name": " ", "crm": "generic", "crm_account_id": "1"}),
    )
    .await
    .invalid("name");
    c.post(
        &p("/integrations"),
        json!({"crm": "generic", "crm_account_id": "1"}),
    )
    .await
    .invalid("name");
    c.post(
        &p("/integrations"),
        json!({"name": "y", "crm": "generic", "crm_account_id": "1", "secret": 1}),
    )
    .await
    .invalid("secret");
    c.post(
        &p("/integrations"),
        json!({"name": "y", "crm": "generic", "crm_account_id": "1", "webhook_token": "short"}),
    )
    .await
    .invalid("webhook_token");
    c.patch(&path, json!({"auto_sync_users": "yes"}))
        .await
        .invalid("auto_sync_users");
    c.patch(&path, json!({"auto_sync_user": true}))
        .await
        .invalid("auto_sync_user");
    let dup = c
        .post(
            &p("/integrations"),
            json!({"name": "hubspot", "crm": "hubspot", "crm_account_id": "1"}),
        )
        .await
        .expect(409);
    assert_eq!(dup["field"], "name");
    let malformed = c.call("PATCH", &path, None).await;
    assert_eq!(malformed.status, 415, "{}", malformed.body);

    // Another company's integration does not exist here.
    c.get(&p(&format!("/integrations/{}", other.integration_id)))
        .await
        .expect(404);
    c.patch(
        &p(&format!("/integrations/{}", other.integration_id)),
        json!({"auto_sync_users": true}),
    )
    .await
    .expect(404);
    let untouched = crm_sync_store::integrations::find(&env.pool, other.integration_id)
        .await
        .unwrap()
        .unwrap();
    assert!(!untouched.auto_sync_users);
}

#[tokio::test]
async fn workflows_are_validated_like_the_evaluator_and_dry_runs_say_what_failed() {
    let env = TestEnv::new("admin-workflows").await;
    let w = admin_world(&env, ("acme", "globex"), false).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let spec = json!({
        "integration_id": tenant.integration_id,
        "name": "Big wins",
        "object_type": "Opportunity",
        "triggers": ["created", "updated"],
        "conditions": {"all": [
            {"field": "StageName", "op": "eq", "value": "Closed Won"},
            {"field": "Amount", "op": "gte", "value": 1000}
        ]},
        "user_field": "OwnerId",
        "value_field": "Amount",
        "date_field": "CloseDate",
        "activity_type": "big_deal"
    });
    let created = c.post(&p("/workflows"), spec.clone()).await.expect(201);
    assert_eq!(created["active"], false, "new workflows start inactive");
    let id = created["id"].as_str().unwrap().to_owned();
    let w = |rest: &str| p(&format!("/workflows/{id}{rest}"));

    // The evaluator's own validation, with the offending part named.
    let mut bad = spec.clone();
    bad["name"] = json!("Bad");
    bad["conditions"] = json!({"all": [{"field": "Amount", "op": "gte", "value": 1}, {"field": "StageName", "op": "like", "value": "x"}]});
    let e = c
        .post(&p("/workflows"), bad.clone())
        .await
        .invalid("conditions/all/1/op");
    assert!(e["message"].as_str().unwrap().contains("like"), "{e}");
    bad["conditions"] = json!({"any": []});
    c.post(&p("/workflows"), bad.clone())
        .await
        .invalid("conditions/any");
    bad["conditions"] = json!({"all": []});
    bad["triggers"] = json!([]);
    c.post(&p("/workflows"), bad.clone())
        .await
        .invalid("triggers");
    bad["triggers"] = json!(["created", "sometimes"]);
    c.post(&p("/workflows"), bad.clone())
        .await
        .invalid("triggers/1");
    bad["triggers"] = json!(["created"]);
    bad["user_field"] = json!("  ");
    c.post(&p("/workflows"), bad.clone())
        .await
        .invalid("user_field");
    bad["user_field"] = json!("OwnerId");
    bad["integration_id"] = json!(other.integration_id);
    c.post(&p("/workflows"), bad.clone())
        .await
        .invalid("integration_id");
    let mut extra = spec.clone();
    extra["priority"] = json!(1);
    c.post(&p("/workflows"), extra).await.invalid("priority");
    let dup = c.post(&p("/workflows"), spec.clone()).await.expect(409);
    assert_eq!(dup["field"], "name");

    // Dry runs: a match says what it would record; a miss says which condition failed.
    let hit = c
        .post(&w("/test"), json!({"change_type": "created", "fields": {"StageName": "Closed Won", "Amount": 1250.5, "CloseDate": "2026-11-20", "OwnerId": "005A"}}))
        .await
        .expect(200);
    assert_eq!(hit["matched"], true, "{hit}");
    assert_eq!(hit["activity"]["value"], "1250.5");
    assert_eq!(hit["activity"]["crm_user_id"], "005A");
    assert_eq!(hit["activity"]["activity_type"], "big_deal");
    let miss = c
        .post(&w("/test"), json!({"change_type": "created", "fields": {"StageName": "Closed Won", "Amount": "500", "OwnerId": "005A"}}))
        .await
        .expect(200);
    assert_eq!(miss["matched"], false);
    assert_eq!(miss["reason"], "conditions");
    let failed = miss["failed_conditions"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{miss}");
    assert_eq!(failed[0]["path"], "conditions/all/1");
    assert_eq!(failed[0]["field"], "Amount");
    assert_eq!(failed[0]["actual"], "500");
    assert!(
        miss["explanation"].as_str().unwrap().contains("Amount"),
        "{miss}"
    );
    let other_object = c
        .post(&w("/test"), json!({"object_type": "Lead", "fields": {}}))
        .await
        .expect(200);
    assert_eq!(other_object["reason"], "other_object");
    c.post(&w("/test"), json!({"fields": {"Amount": {"nested": 1}}}))
        .await
        .invalid("fields/Amount");
    c.post(&w("/test"), json!({"fields": {}, "change_type": "merged"}))
        .await
        .invalid("change_type");
    // A dry run changes nothing.
    assert!(
        crm_sync_store::views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .is_empty()
    );

    // Update (validated as a whole), activate, deactivate, list with filters.
    let updated = c
        .patch(&w(""), json!({"conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]}, "date_field": null}))
        .await
        .expect(200);
    assert_eq!(updated["date_field"], Value::Null);
    assert_eq!(updated["value_field"], "Amount");
    c.patch(&w(""), json!({"activity_type": ""}))
        .await
        .invalid("activity_type");
    // An activity type no leaderboard could be asked for is refused when it is written.
    c.patch(&w(""), json!({"activity_type": "x".repeat(201)}))
        .await
        .invalid("activity_type");
    assert_eq!(
        c.post(&w("/activate"), json!({})).await.expect(200)["active"],
        true
    );
    let active = c
        .get(&p(&format!(
            "/workflows?active=true&integration_id={}",
            tenant.integration_id
        )))
        .await
        .expect(200);
    let names: Vec<&str> = active["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Won opportunities", "Big wins"]);
    let stored = crm_sync_store::workflows::load_active(&env.pool)
        .await
        .unwrap();
    assert!(
        stored.iter().any(|s| s.id.to_string() == id),
        "the evaluator sees the activated workflow"
    );
    assert_eq!(
        c.post(&w("/deactivate"), json!({})).await.expect(200)["active"],
        false
    );
    c.get(&p("/workflows?active=maybe")).await.invalid("active");

    // Another company's workflow does not exist here; deleting ours makes it gone.
    let theirs = p(&format!("/workflows/{}", other.workflow_id));
    c.get(&theirs).await.expect(404);
    c.post(&format!("{theirs}/test"), json!({"fields": {}}))
        .await
        .expect(404);
    c.delete(&theirs).await.expect(404);
    c.delete(&w("")).await.expect(204);
    c.get(&w("")).await.expect(404);
    let audit = c.all(&p("/audit-log"), 3).await;
    let actions: Vec<&str> = audit
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "workflow.deleted",
            "workflow.deactivated",
            "workflow.activated",
            "workflow.updated",
            "workflow.created",
            "admin_token.created"
        ]
    );
}
