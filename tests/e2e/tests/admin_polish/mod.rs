//! Answers every client can rely on (a module of the admin_api suite): each one carries an
//! `x-request-id`, every error body the same id, and requests no route serves (a method the
//! path does not take, an unknown path) get the JSON error body every other refusal has.

use crm_sync_e2e::{Tenant, TestEnv};
use serde_json::Value;

use crate::admin_support::{company_path, start_admin_api, token};

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
