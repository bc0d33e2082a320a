//! A CRM whose webhook requests ingest refuses (here: a wrong token, as after a token rotated
//! on one side only) turns the integration's health red saying so and why, where before it only
//! read "no webhook has arrived"; the CRM itself still gets the generic 401. A request accepted
//! later is told apart.

use std::time::Duration;

use crm_sync_e2e::app::AdminClient;
use crm_sync_e2e::salesforce::{outbound_message, won_opportunity};
use crm_sync_e2e::{Tenant, TestEnv, eventually, post_outbound_message};
use serde_json::Value;

use crate::admin_support::{company_path, start_admin_api, token};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn refused_webhook_requests_turn_the_health_red_with_the_reason() {
    let env = TestEnv::new("webhook-refusals").await;
    let tenant = Tenant::create(&env.pool, "refusals", false, true).await;
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let api = start_admin_api(&env).await;
    let viewer = AdminClient::new(&api, Some(&token(&env, tenant.company_id, "viewer").await));
    let base = company_path(
        tenant.company_id,
        &format!("/integrations/{}", tenant.integration_id),
    );
    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04lREFUSED00000001",
            "006REFUSED00000001",
            "005REFUSED00000001",
            "10",
        )],
    );

    let wrong = format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token=not-the-rotated-one",
        tenant.integration_id
    );
    let response = reqwest::Client::new()
        .post(ingest.url(&wrong))
        .header("content-type", "text/xml; charset=utf-8")
        .body(xml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["error"], "unauthorized",
        "the CRM learns nothing specific: {body}"
    );

    let h = eventually("the refusal in the health", WAIT, || async {
        let h = viewer.get(&format!("{base}/health")).await.expect(200);
        h["last_refused_webhook_at"].is_string().then_some(h)
    })
    .await;
    let refusal = h["last_webhook_refusal"].as_str().unwrap();
    assert!(refusal.starts_with("401 invalid_token: "), "{h}");
    assert!(!refusal.contains("not-the-rotated-one"), "{h}");
    assert_eq!(h["state"], "red", "{h}");
    let reasons: Vec<&str> = h["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let refused = reasons
        .iter()
        .find(|r| r.contains("webhook requests were refused"))
        .unwrap_or_else(|| panic!("{h}"));
    assert!(refused.contains("401 invalid_token"), "{refused}");
    assert!(refused.ends_with("none was accepted since"), "{refused}");
    let status = viewer.get(&format!("{base}/sync-status")).await.expect(200);
    assert_eq!(status["last_webhook_refusal"], refusal, "{status}");

    // The token fixed: accepted, and the reason says the refusal is behind it.
    let (code, answer) = post_outbound_message(&ingest, &tenant, xml).await;
    assert_eq!(code, 200, "{answer}");
    let h = eventually("the accepted webhook in the health", WAIT, || async {
        let h = viewer.get(&format!("{base}/health")).await.expect(200);
        h["last_webhook_at"].is_string().then_some(h)
    })
    .await;
    let reasons = h["reasons"].as_array().unwrap();
    let refused = reasons
        .iter()
        .filter_map(Value::as_str)
        .find(|r| r.contains("webhook requests were refused"))
        .unwrap_or_else(|| panic!("{h}"));
    assert!(!refused.contains("none was accepted since"), "{refused}");
}
