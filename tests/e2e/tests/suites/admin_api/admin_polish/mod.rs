//! Answers every client can rely on (a module of the admin_api suite): each one carries an
//! `x-request-id`, every error body the same id, and requests no route serves (a method the
//! path does not take, an unknown path) get the JSON error body every other refusal has; and
//! each integration says where its CRM must send webhooks and whether it uses a token.

use std::time::Duration;

use crm_sync_e2e::{Tenant, TestEnv};
use serde_json::{Value, json};

use crm_sync_e2e::app::AdminClient;

use crate::admin_support::{company_path, start_admin_api, start_admin_api_with, token};

const WAIT: Duration = Duration::from_secs(30);

async fn send(
    method: reqwest::Method,
    url: &str,
    bearer: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: the body is not JSON: {text:?}"));
    (status, id, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_has_a_request_id_and_unrouted_requests_a_json_error() {
    let env = TestEnv::new("admin-request-ids").await;
    let tenant = Tenant::create(&env.pool, "request-ids", false, false).await;
    let other = Tenant::create(&env.pool, "request-ids-other", false, false).await;
    let api = start_admin_api(&env).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let integrations = api.url(&company_path(tenant.company_id, "/integrations"));

    // A success carries the header; two requests never share an id.
    let (status, first, _) = send(reqwest::Method::GET, &integrations, Some(&admin)).await;
    assert_eq!(status, 200);
    let (_, second, _) = send(reqwest::Method::GET, &integrations, Some(&admin)).await;
    let (first, second) = (first.expect("x-request-id"), second.expect("x-request-id"));
    assert!(first.len() >= 16 && first != second, "{first} {second}");

    // A method the path does not take: 405 with a JSON body saying so (axum's own is empty).
    let (status, id, body) = send(reqwest::Method::PUT, &integrations, Some(&admin)).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(body["message"].as_str().unwrap().contains("PUT"), "{body}");
    assert_eq!(body["request_id"].as_str(), id.as_deref(), "{body}");

    // An unknown path: 404 in the same shape.
    let (status, id, body) = send(
        reqwest::Method::GET,
        &api.url("/admin/v1/no-such-thing"),
        Some(&admin),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "not_found", "{body}");
    assert_eq!(body["request_id"].as_str(), id.as_deref(), "{body}");

    // Refusals of the routes themselves carry it too: no token, another company's integration.
    let (status, id, body) = send(reqwest::Method::GET, &integrations, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["request_id"].as_str(), id.as_deref(), "{body}");
    let foreign = api.url(&company_path(
        tenant.company_id,
        &format!("/integrations/{}", other.integration_id),
    ));
    let (status, id, body) = send(reqwest::Method::GET, &foreign, Some(&admin)).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        id.is_some() && body["request_id"].as_str() == id.as_deref(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn integrations_show_the_webhook_url_to_paste_and_whether_a_token_is_used() {
    let env = TestEnv::new("admin-webhook-url").await;
    let tenant = Tenant::create(&env.pool, "webhook-url", false, false).await;
    // A trailing slash in the configuration does not double the path's.
    let api = start_admin_api_with(
        &env,
        &[(
            "CRM_SYNC__INGEST__PUBLIC_URL",
            "https://hooks.example.test/",
        )],
    )
    .await;
    let admin = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "admin").await));
    let viewer = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "viewer").await));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    // Salesforce takes the token in the URL: its place is shown, never a stored token.
    let salesforce = viewer
        .get(&p(&format!("/integrations/{}", tenant.integration_id)))
        .await
        .expect(200);
    assert_eq!(
        salesforce["webhook_url"],
        format!(
            "https://hooks.example.test/v1/integrations/{}/salesforce/outbound-messages?token=<webhook token>",
            tenant.integration_id
        )
    );
    assert_eq!(salesforce["uses_webhook_token"], true);

    // HubSpot signs its webhooks with the app's secret: no token in its URL, none offered.
    let hubspot = admin
        .post(
            &p("/integrations"),
            json!({"name": "hubspot", "crm": "hubspot", "crm_account_id": "4711"}),
        )
        .await
        .expect(201);
    assert_eq!(hubspot["uses_webhook_token"], false);
    assert_eq!(
        hubspot["webhook_url"],
        format!(
            "https://hooks.example.test/v1/integrations/{}/hubspot/webhooks",
            hubspot["id"].as_str().unwrap()
        )
    );

    // A new Salesforce token comes with the whole URL to paste, this once.
    let rotated = admin
        .post(
            &p(&format!(
                "/integrations/{}/webhook-token",
                tenant.integration_id
            )),
            json!({}),
        )
        .await
        .expect(200);
    let new_token = rotated["webhook_token"].as_str().unwrap();
    assert!(
        rotated["webhook_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/salesforce/outbound-messages?token={new_token}")),
        "{rotated}"
    );

    // Without the setting only the path is known.
    let plain = start_admin_api(&env).await;
    let listed = AdminClient::new(
        &plain,
        Some(&token(&env, tenant.company_id, "viewer").await),
    )
    .get(&p("/integrations"))
    .await
    .expect(200);
    assert!(listed["items"][0]["webhook_url"].is_null(), "{listed}");
    assert!(listed["items"][0]["webhook_path"].is_string(), "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_url_that_is_not_http_is_a_configuration_error_naming_the_key() {
    let env = TestEnv::new("admin-public-url-bad").await;
    let mut api = env.spawn_service(
        "admin-api",
        "admin-api",
        &[("CRM_SYNC__INGEST__PUBLIC_URL", "hooks.example.test")],
    );
    let exited = crm_sync_e2e::eventually("admin-api exits", WAIT, || {
        let status = api.exited();
        async move { status }
    })
    .await;
    assert!(!exited.success());
    assert!(
        api.log_tail().contains("ingest.public_url"),
        "{}",
        api.log_tail()
    );
}

/// A recorded `deal_won` of `value` for the user at the instant `at`.
async fn deal_at(env: &TestEnv, tenant: &Tenant, user_id: uuid::Uuid, value: &str, at: &str) {
    sqlx::query(
        "INSERT INTO activities (id, company_id, integration_id, workflow_id, object_type, record_id,
             crm_user_id, user_id, activity_type, value, activity_date, state, last_event_at, last_event_id)
         VALUES ($1, $2, $3, $4, 'Opportunity', $5, '005TZ', $6, 'deal_won', $7::numeric, $8::timestamptz,
                 'recorded', now(), 'seed')",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(tenant.company_id)
    .bind(tenant.integration_id)
    .bind(tenant.workflow_id)
    .bind(format!("006{}", &uuid::Uuid::new_v4().simple().to_string()[..15]))
    .bind(user_id)
    .bind(value)
    .bind(at)
    .execute(&env.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn leaderboard_periods_follow_the_company_time_zone() {
    let env = TestEnv::new("admin-time-zone").await;
    let tenant = Tenant::create(&env.pool, "time-zone", false, false).await;
    let api = start_admin_api(&env).await;
    let admin = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "admin").await));
    let viewer = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "viewer").await));
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let user = crate::admin_support::seed_pending_user(&env, &tenant, "Tz Rep", "005TZ", &[]).await;
    let team = admin
        .post(&p("/teams"), json!({"name": "Oslo"}))
        .await
        .expect(201);
    admin
        .put(&p(&format!(
            "/teams/{}/members/{user}",
            team["id"].as_str().unwrap()
        )))
        .await
        .expect(200);
    // 00:30 on 1 November in Oslo (still October in UTC), and 00:30 on 1 December in Oslo.
    deal_at(&env, &tenant, user, "10", "2026-10-31T23:30:00Z").await;
    deal_at(&env, &tenant, user, "1000", "2026-11-30T23:30:00Z").await;
    let november = p("/leaderboard?activity_type=deal_won&from=2026-11-01&to=2026-11-30");
    let total = |board: &Value| board["items"][0]["total"].as_str().unwrap().to_owned();

    // Companies start in UTC: the 23:30 UTC deal of the 30th counts in November.
    assert_eq!(
        viewer.get(&p("/settings")).await.expect(200)["time_zone"],
        "UTC"
    );
    assert_eq!(total(&viewer.get(&november).await.expect(200)), "1000");

    // Only an admin changes it; an unknown zone is refused naming the field.
    viewer
        .patch(&p("/settings"), json!({"time_zone": "Europe/Oslo"}))
        .await
        .expect(403);
    admin
        .patch(&p("/settings"), json!({"time_zone": "Mars/Olympus_Mons"}))
        .await
        .invalid("time_zone");
    admin
        .patch(&p("/settings"), json!({"time_zone": 2}))
        .await
        .invalid("time_zone");
    let set = admin
        .patch(&p("/settings"), json!({"time_zone": "Europe/Oslo"}))
        .await
        .expect(200);
    assert_eq!(set["time_zone"], "Europe/Oslo");

    // November in Oslo: the early deal of the 1st counts, the one after Oslo's midnight does not.
    let board = viewer.get(&november).await.expect(200);
    assert_eq!(total(&board), "10", "{board}");
    // A date-time bound is an instant, whatever the zone.
    let instants = viewer
        .get(&p(
            "/leaderboard?activity_type=deal_won&from=2026-11-30T00:00:00Z&to=2026-12-01T00:00:00Z",
        ))
        .await
        .expect(200);
    assert_eq!(total(&instants), "1000", "{instants}");

    let audit = viewer.get(&p("/audit-log")).await.expect(200);
    let entry = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "company.settings_changed")
        .unwrap_or_else(|| panic!("not audited: {audit}"));
    assert_eq!(
        entry["details"]["time_zone"],
        json!({"from": "UTC", "to": "Europe/Oslo"})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn integration_health_turns_red_when_webhooks_stop_while_workflows_are_active() {
    let env = TestEnv::new("admin-health").await;
    let idle = Tenant::create(&env.pool, "health-idle", false, false).await;
    let tenant = Tenant::create(&env.pool, "health", false, true).await;
    let api = start_admin_api(&env).await;
    let viewer = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "viewer").await));
    let admin = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "admin").await));
    let p = |rest: &str| company_path(tenant.company_id, rest);
    let health_path = p(&format!("/integrations/{}/health", tenant.integration_id));

    // Without an active workflow nothing is expected.
    let idle_viewer = AdminClient::new(&api, Some(&token(&env, idle.company_id, "viewer").await));
    let h = idle_viewer
        .get(&company_path(
            idle.company_id,
            &format!("/integrations/{}/health", idle.integration_id),
        ))
        .await
        .expect(200);
    assert_eq!(h["state"], "idle", "{h}");

    // Active workflow, never a webhook: red, saying so.
    let h = viewer.get(&health_path).await.expect(200);
    assert_eq!(h["state"], "red", "{h}");
    assert!(
        h["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no webhook has arrived yet"),
        "{h}"
    );
    assert!(h["last_webhook_at"].is_null());

    // A webhook a minute ago and a match in the last hour: ok, with the figures.
    let now = chrono::Utc::now();
    crm_sync_store::sync_status::record_webhook(
        &env.pool,
        tenant.integration_id,
        now - chrono::Duration::minutes(1),
        0.0,
    )
    .await
    .unwrap();
    crate::admin_support::seed_activities(&env, &tenant, "005HEALTH", None, &["5"], "2026-11-20")
        .await;
    let h = viewer.get(&health_path).await.expect(200);
    assert_eq!(h["state"], "ok", "{h}");
    assert_eq!(h["active_workflows"], 1);
    assert_eq!(h["matched_last_hour"], 1, "{h}");
    assert_eq!(h["unmapped_last_hour"], 1, "{h}");
    assert_eq!(h["silence_alert_minutes"], 60);

    // Twenty minutes of silence is red once the company's threshold is ten (the writer only
    // moves the time forward, so the test sets it back directly).
    sqlx::query(
        "UPDATE integration_sync_status SET last_webhook_at = $2 WHERE integration_id = $1",
    )
    .bind(tenant.integration_id)
    .bind(now - chrono::Duration::minutes(20))
    .execute(&env.pool)
    .await
    .unwrap();
    assert_eq!(viewer.get(&health_path).await.expect(200)["state"], "ok");
    admin
        .patch(&p("/settings"), json!({"silence_alert_minutes": 0}))
        .await
        .invalid("silence_alert_minutes");
    admin
        .patch(&p("/settings"), json!({"silence_alert_minutes": 10}))
        .await
        .expect(200);
    let h = viewer.get(&health_path).await.expect(200);
    assert_eq!(h["state"], "red", "{h}");
    assert!(
        h["reasons"][0]
            .as_str()
            .unwrap()
            .contains("no webhook for 20 minutes"),
        "{h}"
    );

    // Another company's integration is not found.
    viewer
        .get(&p(&format!("/integrations/{}/health", idle.integration_id)))
        .await
        .expect(404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_typed_15_character_salesforce_user_id_maps_the_18_character_identity() {
    let env = TestEnv::new("admin-sf-ids").await;
    let tenant = Tenant::create(&env.pool, "sf-ids", false, false).await;
    let api = start_admin_api(&env).await;
    let admin = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "admin").await));
    let p = |rest: &str| company_path(tenant.company_id, rest);
    // Webhooks carry the 18-character id: an unmapped activity waits under it.
    crate::admin_support::seed_activities(
        &env,
        &tenant,
        "0055g00000QAOFFAA5",
        None,
        &["7"],
        "2026-11-20",
    )
    .await;
    let user = admin
        .post(&p("/users"), json!({"display_name": "Quinn"}))
        .await
        .expect(201);
    let mapped = admin
        .post(
            &p(&format!(
                "/users/{}/crm-identities",
                user["id"].as_str().unwrap()
            )),
            json!({"integration_id": tenant.integration_id, "crm_user_id": "0055g00000QAOFF"}),
        )
        .await
        .expect(200);
    assert_eq!(mapped["attached_activities"], 1, "{mapped}");
    assert_eq!(
        mapped["user"]["crm_identities"][0]["crm_user_id"], "0055g00000QAOFFAA5",
        "{mapped}"
    );
    // One identity, not a second one beside the 18-character form.
    let identities = admin.all(&p("/crm-identities"), 50).await;
    assert_eq!(identities.len(), 1, "{identities:?}");
}
