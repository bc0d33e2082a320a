//! Backfills and sync status through the admin API (a module of the admin_api suite): what an
//! admin may start, the refusals (bad input 422 naming the field, a second backfill or missing
//! credentials 409, another company's ids 404, viewers 403), and progress as a running job
//! writes it (through the kit's stand-in for ingest's runner).

use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_sync_e2e::pull_jobs::FakeRunner;
use crm_sync_e2e::{Tenant, TestEnv};
use crm_sync_store::sync_jobs::{self, JobKind, Outcome};
use crm_sync_store::sync_status::{self, ReconciliationRun};
use serde_json::{Value, json};
use uuid::Uuid;

use crm_sync_e2e::app::AdminClient;

use crate::admin_support::{company_path, start_admin_api, token};

const WAIT: Duration = Duration::from_secs(30);

/// CRM API credentials for the integration, as an admin sets them.
async fn set_api_credentials(client: &AdminClient, company: Uuid, integration: Uuid) {
    client
        .patch(
            &company_path(company, &format!("/integrations/{integration}/credentials")),
            json!({"api": {"base_url": "https://example.my.salesforce.com", "access_token": "backfill-token-0001"}}),
        )
        .await
        .expect(200);
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// One company's integration with an active workflow, another company's, admin-api, and
/// clients of both roles.
struct World {
    env: TestEnv,
    other: Tenant,
    _api: crm_sync_e2e::Service,
    admin: AdminClient,
    viewer: AdminClient,
    /// `…/integrations/{id}` of the first company's integration.
    base: String,
    backfills: String,
    company: Uuid,
    integration: Uuid,
}

async fn world() -> World {
    let env = TestEnv::new("admin-backfills").await;
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let other = Tenant::create(&env.pool, "globex", false, true).await;
    let admin_token = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    let admin = AdminClient::new(&api, Some(&admin_token));
    let viewer = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "viewer").await));
    let base = company_path(
        tenant.company_id,
        &format!("/integrations/{}", tenant.integration_id),
    );
    let backfills = format!("{base}/backfills");
    World {
        company: tenant.company_id,
        integration: tenant.integration_id,
        env,
        other,
        _api: api,
        admin,
        viewer,
        base,
        backfills,
    }
}

/// Refusals before anything starts: no credentials (409), bad input (422), a viewer (403),
/// another company's integration (404).
async fn refusals_before_any_start(w: &World) {
    let World {
        admin,
        viewer,
        backfills,
        ..
    } = w;
    // No API credentials yet: nothing to pull with, and the answer says what is missing.
    let refused = admin
        .post(backfills, json!({"since": "2026-11-01"}))
        .await
        .expect(409);
    assert_eq!(refused["error"], "not_pullable");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("no CRM API credentials"), "{message}");
    assert!(message.contains("base_url"), "{message}");
    set_api_credentials(admin, w.company, w.integration).await;

    // Bad input names the field.
    let tomorrow = (Utc::now() + chrono::Duration::days(1))
        .date_naive()
        .to_string();
    for since in [
        "yesterday",
        "2026-13-01",
        "2026-11-01T08:00:00",
        "1999-12-31",
        &tomorrow,
    ] {
        admin
            .post(backfills, json!({"since": since}))
            .await
            .invalid("since");
    }
    admin
        .post(
            backfills,
            json!({"since": "2026-11-01", "objects": ["Opportunity", "Lead"]}),
        )
        .await
        .invalid("objects/1");
    admin
        .post(backfills, json!({"since": "2026-11-01", "objects": []}))
        .await
        .invalid("objects");
    admin
        .post(backfills, json!({"since": "2026-11-01", "days": 30}))
        .await
        .invalid("days");
    admin.post(backfills, json!({})).await.invalid("since");
    // Viewers read, never start; another company's integration does not exist for this one.
    viewer
        .post(backfills, json!({"since": "2026-11-01"}))
        .await
        .expect(403);
    let foreign = company_path(
        w.company,
        &format!("/integrations/{}/backfills", w.other.integration_id),
    );
    admin
        .post(&foreign, json!({"since": "2026-11-01"}))
        .await
        .expect(404);
    admin.get(&foreign).await.expect(404);
}

/// A running job's progress as the runner writes it, and cancelling it.
async fn progress_and_cancel(w: &World, id: &str) {
    let World {
        env,
        admin,
        viewer,
        backfills,
        ..
    } = w;
    let one = format!("{backfills}/{id}");
    // Ingest's runner picks it up: the CRM says 1000 records, a quarter are scanned.
    let runner = FakeRunner::claim(&env.pool, WAIT).await;
    assert_eq!(runner.job.id.to_string(), id);
    runner.expect(1000).await;
    runner.page(250, 240, 3).await;
    let running = viewer.get(&one).await.expect(200);
    assert_eq!(running["state"], "running");
    assert_eq!(running["percent"], 25.0);
    assert_eq!(
        (&running["records_scanned"], &running["records_published"]),
        (&json!(250), &json!(240))
    );
    assert_eq!(running["records_expected"], 1000);
    assert_eq!(running["api_calls"], 3);
    assert!(running["rate_per_sec"].as_f64().unwrap() > 0.0, "{running}");
    assert!(running["eta_secs"].as_i64().unwrap() > 0, "{running}");
    assert!(at(&running["eta_at"]) > Utc::now(), "{running}");
    assert!(!running["started_at"].is_null(), "{running}");

    // Cancelling a running job asks its runner to stop after the page in hand.
    viewer
        .post(&format!("{one}/cancel"), json!({}))
        .await
        .expect(403);
    let asked = admin
        .post(&format!("{one}/cancel"), json!({}))
        .await
        .expect(200);
    assert_eq!(
        (&asked["state"], &asked["cancel_requested"]),
        (&json!("running"), &json!(true))
    );
    assert!(runner.cancel_requested().await);
    runner.finish(Outcome::Cancelled).await;
    let cancelled = admin.get(&one).await.expect(200);
    assert_eq!(cancelled["state"], "cancelled");
    assert!(!cancelled["finished_at"].is_null());
    assert!(cancelled["eta_secs"].is_null(), "{cancelled}");
    let ended = admin
        .post(&format!("{one}/cancel"), json!({}))
        .await
        .expect(409);
    assert_eq!(ended["error"], "backfill_ended");
}

/// Another company's job is not found through this company's integration, and bad ids and
/// cursors are refused as JSON.
async fn foreign_and_bad_ids(w: &World) {
    let World {
        env,
        admin,
        backfills,
        other,
        ..
    } = w;
    let theirs = sync_jobs::create(
        &env.pool,
        other.integration_id,
        JobKind::Backfill,
        Utc::now(),
        &["Opportunity".to_owned()],
    )
    .await
    .unwrap()
    .unwrap();
    admin
        .get(&format!("{backfills}/{}", theirs.id))
        .await
        .expect(404);
    admin
        .post(&format!("{backfills}/{}/cancel", theirs.id), json!({}))
        .await
        .expect(404);
    let bad = admin
        .get(&format!("{backfills}/not-a-uuid"))
        .await
        .expect(404);
    assert_eq!(bad["error"], "not_found");
    admin
        .get(&format!("{backfills}?cursor=zz"))
        .await
        .invalid("cursor");
    admin
        .get(&format!("{backfills}?limit=0"))
        .await
        .invalid("limit");
}

#[tokio::test]
async fn backfills_are_validated_started_once_watched_and_cancelled() {
    let w = world().await;
    let World {
        admin,
        viewer,
        base,
        backfills,
        ..
    } = &w;
    refusals_before_any_start(&w).await;

    // Started: pending, the active workflow's object, asked for by this token.
    let job = admin
        .post(backfills, json!({"since": "2026-11-01"}))
        .await
        .expect(201);
    assert_eq!(job["state"], "pending");
    assert_eq!(job["objects"], json!(["Opportunity"]));
    assert_eq!(at(&job["since"]), at(&json!("2026-11-01T00:00:00Z")));
    assert!(
        job["percent"].is_null() && job["eta_secs"].is_null(),
        "{job}"
    );
    let requested_by = job["requested_by"].as_str().unwrap();
    assert!(requested_by.starts_with("token "), "{requested_by}");
    let id = job["id"].as_str().unwrap().to_owned();

    // One at a time per integration.
    let second = admin
        .post(backfills, json!({"since": "2026-10-01"}))
        .await
        .expect(409);
    assert_eq!(second["error"], "backfill_active");
    assert!(
        second["message"].as_str().unwrap().contains(&id),
        "{second}"
    );
    let status = viewer.get(&format!("{base}/sync-status")).await.expect(200);
    assert_eq!(status["active_backfill"]["id"], id.as_str());
    // Viewers, who may not list the tokens, read who asked as an admin token, not its label.
    assert_eq!(status["active_backfill"]["requested_by"], "admin token");
    let seen = viewer.get(&format!("{backfills}/{id}")).await.expect(200);
    assert_eq!(seen["requested_by"], "admin token");
    let listed = viewer.get(backfills).await.expect(200);
    assert_eq!(listed["items"][0]["requested_by"], "admin token");

    progress_and_cancel(&w, &id).await;

    // Once it has ended another may start; a pending one is cancelled at once. A date-time's
    // offset is honoured.
    let next = admin
        .post(
            backfills,
            json!({"since": "2026-11-01T08:00:00+01:00", "objects": ["Opportunity"]}),
        )
        .await
        .expect(201);
    assert_eq!(at(&next["since"]), at(&json!("2026-11-01T07:00:00Z")));
    let next_id = next["id"].as_str().unwrap();
    let gone = admin
        .post(&format!("{backfills}/{next_id}/cancel"), json!({}))
        .await
        .expect(200);
    assert_eq!(gone["state"], "cancelled");

    // Racing starts: the integration's row lock lets exactly one through.
    let racing = futures::future::join_all(
        (0..5).map(|_| admin.post(backfills, json!({"since": "2026-11-01"}))),
    )
    .await;
    let mut statuses: Vec<u16> = racing.iter().map(|a| a.status).collect();
    statuses.sort();
    assert_eq!(statuses, [201, 409, 409, 409, 409], "{racing:?}");

    foreign_and_bad_ids(&w).await;

    // Both changes are in the audit log, by the token that made them.
    let audit = admin
        .get(&company_path(w.company, "/audit-log"))
        .await
        .expect(200);
    let actions: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    for action in ["backfill.started", "backfill.cancel_requested"] {
        assert!(
            actions.contains(&(action, requested_by)),
            "{action} by {requested_by} missing from {actions:?}"
        );
    }
}

#[tokio::test]
async fn backfills_list_newest_first_and_sync_status_says_what_pulls_found() {
    let env = TestEnv::new("admin-sync-status").await;
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let api = start_admin_api(&env).await;
    let viewer = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "viewer").await));
    let admin = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "admin").await));
    let base = company_path(
        tenant.company_id,
        &format!("/integrations/{}", tenant.integration_id),
    );

    // Nothing recorded yet.
    let empty = viewer.get(&format!("{base}/sync-status")).await.expect(200);
    assert_eq!(
        empty,
        json!({"integration_id": tenant.integration_id, "last_webhook_at": null,
               "last_refused_webhook_at": null, "last_webhook_refusal": null,
               "last_reconciliation": null, "missed_webhooks_fixed": 0, "last_fixed_at": null,
               "active_backfill": null})
    );

    // Five backfills over time (the system's, on connect, among them), each ended before the next.
    let mut ids = Vec::new();
    for _ in 0..5 {
        let job = sync_jobs::create(
            &env.pool,
            tenant.integration_id,
            JobKind::Backfill,
            Utc::now() - chrono::Duration::days(30),
            &["Opportunity".to_owned()],
        )
        .await
        .unwrap()
        .unwrap();
        FakeRunner::claim(&env.pool, WAIT)
            .await
            .finish(Outcome::Succeeded)
            .await;
        ids.push(job.id.to_string());
    }
    // A reconciliation is not a backfill and is not listed.
    sync_jobs::create(
        &env.pool,
        tenant.integration_id,
        JobKind::Reconciliation,
        Utc::now(),
        &["Opportunity".to_owned()],
    )
    .await
    .unwrap()
    .unwrap();
    let listed = viewer.all(&format!("{base}/backfills"), 2).await;
    let listed_ids: Vec<&str> = listed.iter().map(|j| j["id"].as_str().unwrap()).collect();
    ids.reverse();
    assert_eq!(listed_ids, ids);
    assert!(listed.iter().all(|j| j["state"] == "succeeded"
        && j["percent"] == 100.0
        && j["requested_by"] == "system"));

    // What ingest and the evaluator record shows up as it was written.
    let now = Utc::now();
    sync_status::record_webhook(&env.pool, tenant.integration_id, now, 5.0)
        .await
        .unwrap();
    let run = ReconciliationRun {
        job_id: Uuid::new_v4(),
        scanned: 120,
        published: 3,
        api_calls: 4,
        error: Some("HubSpot answered 502".into()),
        objects_not_read: Vec::new(),
    };
    sync_status::record_reconciliation(&env.pool, tenant.integration_id, now, &run)
        .await
        .unwrap();
    sync_status::add_missed_webhooks_fixed(&env.pool, &[(tenant.integration_id, 3)], now)
        .await
        .unwrap();
    let status = viewer.get(&format!("{base}/sync-status")).await.expect(200);
    assert!(!status["last_webhook_at"].is_null(), "{status}");
    let r = &status["last_reconciliation"];
    assert_eq!(
        (
            &r["records_scanned"],
            &r["records_published"],
            &r["api_calls"]
        ),
        (&json!(120), &json!(3), &json!(4))
    );
    assert_eq!(r["error"], "HubSpot answered 502");
    assert_eq!(r["outcome"], "failed");
    assert_eq!(r["objects_not_read"], json!([]));
    assert_eq!(r["job_id"], run.job_id.to_string());
    assert_eq!(status["missed_webhooks_fixed"], 3);
    assert!(status["active_backfill"].is_null());

    // A generic integration has no API to pull from.
    let generic = admin
        .post(
            &company_path(tenant.company_id, "/integrations"),
            json!({"name": "events", "crm": "generic", "crm_account_id": "acct-1"}),
        )
        .await
        .expect(201);
    let refused = admin
        .post(
            &company_path(
                tenant.company_id,
                &format!(
                    "/integrations/{}/backfills",
                    generic["id"].as_str().unwrap()
                ),
            ),
            json!({"since": "2026-11-01"}),
        )
        .await
        .expect(409);
    assert!(
        refused["message"].as_str().unwrap().contains("generic"),
        "{refused}"
    );
    // Another company's integration has no status here.
    let other = Tenant::create(&env.pool, "globex", false, true).await;
    admin
        .get(&company_path(
            tenant.company_id,
            &format!("/integrations/{}/sync-status", other.integration_id),
        ))
        .await
        .expect(404);
}
