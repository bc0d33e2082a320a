//! The admin API against real PostgreSQL (and Kafka for visibility changes), with admin-api as a
//! real process: every route's authentication, authorization and tenant isolation (driven by
//! the OpenAPI document, so a new route cannot slip through), and each resource's behaviour
//! (backfills and sync status in `admin_backfills/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_backfills;
mod admin_people;
mod admin_polish;
use crate::admin_support;
mod admin_trail;

use std::collections::HashSet;
use std::time::Duration;

use crm_sync_e2e::app::AdminClient;

use admin_support::{
    company, company_path, seed_activities, seed_pending_user, start_admin_api, token,
};
use crm_sync_e2e::{Tenant, TestEnv, eventually, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::ActivityChanged;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Every `$ref` in the document resolves, and every operation documents its answers.
fn assert_document_is_complete(doc: &Value) {
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} documents no success"
            );
            assert!(
                responses.contains_key("401"),
                "{method} {path} does not document 401"
            );
            let declared: HashSet<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap())
                        .collect()
                })
                .unwrap_or_default();
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    declared.contains(name),
                    "{method} {path} does not declare path parameter {name}"
                );
            }
            if path.starts_with("/admin/v1/companies/") {
                assert!(
                    responses.contains_key("404"),
                    "{method} {path} does not document 404"
                );
                if method != "get" {
                    assert!(
                        responses.contains_key("403"),
                        "{method} {path} does not document 403"
                    );
                    assert!(
                        responses.contains_key("422"),
                        "{method} {path} does not document 422"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn every_route_refuses_missing_tokens_viewer_writes_and_foreign_companies() {
    let env = TestEnv::new("admin-routes").await;
    let ours = company(&env, "ours").await;
    let theirs = company(&env, "theirs").await;
    let admin = token(&env, ours, "admin").await;
    let viewer = token(&env, ours, "viewer").await;
    let api = start_admin_api(&env).await;

    let doc = AdminClient::new(&api, None)
        .get("/openapi.json")
        .await
        .expect(200);
    assert_document_is_complete(&doc);

    let anonymous = AdminClient::new(&api, None);
    let forged = AdminClient::new(
        &api,
        Some(&format!(
            "csa_{}_{}",
            Uuid::new_v4().simple(),
            "0".repeat(64)
        )),
    );
    let tampered = AdminClient::new(&api, Some(&format!("{}x", &admin[..admin.len() - 1])));
    let as_admin = AdminClient::new(&api, Some(&admin));
    let as_viewer = AdminClient::new(&api, Some(&viewer));
    let mut checked = 0;
    for (template, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let fill = |company_id: Uuid| {
                template
                    .split('/')
                    .map(|s| match s {
                        "{company_id}" => company_id.to_string(),
                        s if s.starts_with('{') => Uuid::new_v4().to_string(),
                        s => s.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            let body = (method != "GET").then(|| json!({}));
            let own = fill(ours);
            for (who, client) in [
                ("no token", &anonymous),
                ("a forged token", &forged),
                ("a tampered token", &tampered),
            ] {
                let a = client.call(&method, &own, body.clone()).await;
                assert_eq!(a.status, 401, "{method} {own} with {who}: {}", a.body);
                assert_eq!(a.json()["error"], "unauthorized");
            }
            if !template.starts_with("/admin/v1/companies/{company_id}") {
                assert_eq!(
                    template, "/admin/v1/session",
                    "a route outside the company scope"
                );
                continue;
            }
            let foreign = fill(theirs);
            for client in [&as_admin, &as_viewer] {
                let a = client.call(&method, &foreign, body.clone()).await;
                assert_eq!(
                    a.status, 404,
                    "{method} {foreign} on another company: {}",
                    a.body
                );
                assert_eq!(a.json()["error"], "not_found");
            }
            if method != "GET" {
                let a = as_viewer.call(&method, &own, body.clone()).await;
                assert_eq!(a.status, 403, "{method} {own} as a viewer: {}", a.body);
                assert_eq!(a.json()["error"], "forbidden");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 30,
        "only {checked} company routes in the document"
    );

    // A company that does not exist at all looks like another company's.
    as_admin
        .get(&company_path(Uuid::new_v4(), "/teams"))
        .await
        .expect(404);
    as_admin
        .get("/admin/v1/companies/not-a-uuid/teams")
        .await
        .expect(404);
    let session = as_viewer.get("/admin/v1/session").await.expect(200);
    assert_eq!(session["company_id"], ours.to_string());
    assert_eq!(session["role"], "viewer");
}

#[tokio::test]
async fn integrations_turn_auto_sync_on_and_never_show_their_secrets() {
    let env = TestEnv::new("admin-integrations").await;
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let other = Tenant::create(&env.pool, "globex", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let v = AdminClient::new(&api, Some(&viewer));
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
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let other = Tenant::create(&env.pool, "globex", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
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

#[tokio::test]
async fn placing_a_pending_user_on_a_team_activates_it_and_shows_its_activities() {
    let env = TestEnv::new("admin-teams").await;
    let tenant = Tenant::create(&env.pool, "acme", true, true).await;
    let other = Tenant::create(&env.pool, "globex", true, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let alice = seed_pending_user(&env, &tenant, "Alice", "005ALICE", &["1000", "250.50"]).await;
    let bob = seed_pending_user(&env, &tenant, "Bob", "005BOB", &["99"]).await;
    let stranger = seed_pending_user(&env, &other, "Mallory", "005MAL", &["5"]).await;

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

    // A second team changes no visibility; placing again is idempotent.
    c.put(&p(&format!("/teams/{second_id}/members/{alice}")))
        .await
        .expect(200);
    c.put(&p(&format!("/teams/{team_id}/members/{alice}")))
        .await
        .expect(200);
    assert_eq!(read_topic(&env.topics.activities).await.len(), 2);

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
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let other = Tenant::create(&env.pool, "globex", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
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
        &tenant,
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
    let hers = c
        .get(&p(&format!("/activities?user_id={carol_id}")))
        .await
        .expect(200);
    assert!(
        hers["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["visible"] == true),
        "{hers}"
    );
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
async fn leaderboards_and_lists_filter_by_period_and_team_and_paginate() {
    let env = TestEnv::new("admin-leaderboard").await;
    let tenant = Tenant::create(&env.pool, "acme", true, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    let c = AdminClient::new(&api, Some(&admin));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let east = c
        .post(&p("/teams"), json!({"name": "East"}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let west = c
        .post(&p("/teams"), json!({"name": "West"}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut users = Vec::new();
    for i in 0..7 {
        let user = seed_pending_user(
            &env,
            &tenant,
            &format!("Rep {i}"),
            &format!("005REP{i}"),
            &[&format!("{}", 100 * (i + 1))],
        )
        .await;
        // One November activity each above, plus an October one worth a lot.
        seed_activities(
            &env,
            &tenant,
            &format!("005REP{i}"),
            Some(user),
            &["10000"],
            "2026-10-15",
        )
        .await;
        let team = if i % 2 == 0 { &east } else { &west };
        if i < 6 {
            c.put(&p(&format!("/teams/{team}/members/{user}")))
                .await
                .expect(200);
        }
        users.push(user);
    }

    let november = c
        .all(
            &p("/leaderboard?activity_type=deal_won&from=2026-11-01&to=2026-11-30"),
            2,
        )
        .await;
    let totals: Vec<(&str, &str, i64)> = november
        .iter()
        .map(|e| {
            (
                e["display_name"].as_str().unwrap(),
                e["total"].as_str().unwrap(),
                e["rank"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("Rep 5", "600", 1),
            ("Rep 4", "500", 2),
            ("Rep 3", "400", 3),
            ("Rep 2", "300", 4),
            ("Rep 1", "200", 5),
            ("Rep 0", "100", 6)
        ],
        "Rep 6 is on no team and does not count"
    );
    // `to` as a date includes that day; as a date-time it is exclusive.
    let on_day = c
        .get(&p(
            "/leaderboard?activity_type=deal_won&from=2026-11-20&to=2026-11-20",
        ))
        .await
        .expect(200);
    assert_eq!(on_day["items"].as_array().unwrap().len(), 6);
    let before = c
        .get(&p(
            "/leaderboard?activity_type=deal_won&from=2026-11-01&to=2026-11-20T00:00:00Z",
        ))
        .await
        .expect(200);
    assert_eq!(before["items"], json!([]));
    let all_time = c
        .get(&p(&format!(
            "/leaderboard?activity_type=deal_won&team_id={west}"
        )))
        .await
        .expect(200);
    let west_names: Vec<&str> = all_time["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(west_names, ["Rep 5", "Rep 3", "Rep 1"]);
    assert_eq!(all_time["items"][0]["total"], "10600");
    assert_eq!(all_time["items"][0]["count"], 2);
    assert_eq!(all_time["items"][0]["teams"], json!(["West"]));

    c.get(&p("/leaderboard")).await.invalid("activity_type");
    c.get(&p("/leaderboard?activity_type=deal_won&from=yesterday"))
        .await
        .invalid("from");
    c.get(&p(
        "/leaderboard?activity_type=deal_won&from=2026-11-02&to=2026-11-01",
    ))
    .await
    .invalid("to");
    c.get(&p(&format!(
        "/leaderboard?activity_type=deal_won&team_id={}",
        Uuid::new_v4()
    )))
    .await
    .invalid("team_id");

    // Every list pages with limit/cursor, sanely bounded.
    let activities = c.all(&p("/activities"), 3).await;
    assert_eq!(activities.len(), 14);
    let ids: HashSet<&str> = activities
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 14, "pages neither overlap nor skip");
    assert_eq!(c.all(&p("/users"), 2).await.len(), 7);
    assert_eq!(c.all(&p("/teams"), 1).await.len(), 2);
    assert_eq!(c.all(&p("/crm-identities"), 4).await.len(), 7);
    assert_eq!(c.all(&p("/integrations"), 1).await.len(), 1);
    assert_eq!(c.all(&p("/workflows"), 1).await.len(), 1);
    assert!(c.all(&p("/audit-log"), 4).await.len() >= 8);
    let october = c
        .get(&p(
            "/activities?from=2026-10-01&to=2026-10-31&state=recorded",
        ))
        .await
        .expect(200);
    assert_eq!(october["items"].as_array().unwrap().len(), 7);
    for list in [
        "/activities",
        "/users",
        "/teams",
        "/integrations",
        "/workflows",
        "/audit-log",
        "/crm-identities",
        "/leaderboard?activity_type=x",
    ] {
        let sep = if list.contains('?') { '&' } else { '?' };
        c.get(&p(&format!("{list}{sep}limit=201")))
            .await
            .invalid("limit");
        c.get(&p(&format!("{list}{sep}limit=0")))
            .await
            .invalid("limit");
        c.get(&p(&format!("{list}{sep}cursor=nonsense")))
            .await
            .invalid("cursor");
    }
    let max = c.get(&p("/activities?limit=200")).await.expect(200);
    assert_eq!(max["items"].as_array().unwrap().len(), 14);
    assert!(max["next_cursor"].is_null());
    let _ = users;
}

#[tokio::test]
async fn crm_sync_admin_create_token_prints_a_working_token_once() {
    let env = TestEnv::new("admin-cli").await;
    let acme = company(&env, "acme").await;
    let api = start_admin_api(&env).await;
    let run = |args: &[&str]| {
        std::process::Command::new(crm_sync_e2e::binary_path("crm-sync"))
            .args(args)
            .env("CRM_SYNC__DATABASE__URL", &env.database_url)
            .env_remove("CRM_SYNC_CONFIG")
            .output()
            .unwrap()
    };
    let out = run(&[
        "admin",
        "create-token",
        "--company",
        "acme",
        "--role",
        "viewer",
        "--label",
        "wallboard",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bearer = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(bearer.starts_with("csa_"), "{bearer}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("only this once"));
    let session = AdminClient::new(&api, Some(&bearer))
        .get("/admin/v1/session")
        .await
        .expect(200);
    assert_eq!(session["company_id"], acme.to_string());
    assert_eq!(session["role"], "viewer");
    // Only the hash is stored.
    let (stored,): (Vec<u8>,) = sqlx::query_as("SELECT token_sha256 FROM admin_tokens")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(&bearer[40..]));

    let by_id = run(&[
        "admin",
        "create-token",
        "--company",
        &acme.to_string(),
        "--role",
        "admin",
    ]);
    assert!(by_id.status.success());
    let unknown = run(&[
        "admin",
        "create-token",
        "--company",
        "nope",
        "--role",
        "admin",
    ]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no company"));
    let bad_role = run(&[
        "admin",
        "create-token",
        "--company",
        "acme",
        "--role",
        "root",
    ]);
    assert!(!bad_role.status.success());

    // SIGTERM: admin-api drains and exits cleanly.
    let status = api.terminate().await;
    assert!(status.success(), "admin-api exited with {status}");
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
