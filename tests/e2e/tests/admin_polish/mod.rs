//! Answers every client can rely on (a module of the admin_api suite): each one carries an
//! `x-request-id`, every error body the same id, and requests no route serves (a method the
//! path does not take, an unknown path) get the JSON error body every other refusal has; and
//! each integration says where its CRM must send webhooks and whether it uses a token.

use std::time::Duration;

use crm_sync_e2e::{Tenant, TestEnv};
use serde_json::{Value, json};

use crate::admin_support::{Client, company_path, start_admin_api, start_admin_api_with, token};

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
    let admin = Client::new(&api, Some(&token(&env, tenant.company_id, "admin").await));
    let viewer = Client::new(&api, Some(&token(&env, tenant.company_id, "viewer").await));
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
    let listed = Client::new(
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
