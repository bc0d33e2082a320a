//! Integration credentials through the admin API, against real PostgreSQL and (for rotation) a
//! real ingest process: write-only (no answer, list or audit record carries a value), validated
//! per CRM with a 422 naming the field, audited, and a rotation takes effect in ingest within
//! `ingest.integration_cache_ms`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::admin_support;
use crate::connectors;

use std::time::Duration;

use crm_sync_e2e::app::AdminClient;

use admin_support::{ENCRYPTION_KEY, admin_world, company_path, start_admin_api, token};
use connectors::{hubspot_signature, now_millis, post};
use crm_sync_e2e::{Tenant, TestEnv, eventually};
use crm_sync_store::credentials::{self, SecretKey};
use serde_json::{Value, json};
use uuid::Uuid;

/// Every value sent in these tests; none may ever come back.
const SECRETS: [&str; 6] = [
    "hs-secret-one-e2e",
    "hs-secret-two-e2e",
    "pat-na1-token-e2e",
    "pd-password-e2e",
    "dyn-key-value-e2e",
    "oauth-client-secret-e2e",
];

fn assert_no_secret(what: &str, body: &Value) {
    let text = body.to_string();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

fn part<'a>(view: &'a Value, name: &str) -> &'a Value {
    view["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["part"] == name)
        .unwrap()
}

async fn integration(
    c: &AdminClient,
    company_id: Uuid,
    name: &str,
    crm: &str,
    account: &str,
) -> Uuid {
    let created = c
        .post(
            &company_path(company_id, "/integrations"),
            json!({"name": name, "crm": crm, "crm_account_id": account}),
        )
        .await
        .expect(201);
    created["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn credentials_are_write_only_validated_per_crm_and_audited() {
    let env = TestEnv::new("admin-credentials").await;
    let w = admin_world(&env, ("acme", "globex"), false).await;
    let (tenant, other, c) = (&w.tenant, &w.other, &w.admin);
    let v = &w.viewer(&env).await;
    let p = |rest: &str| company_path(tenant.company_id, rest);

    let hubspot = integration(c, tenant.company_id, "hubspot", "hubspot", "62515").await;
    let path = p(&format!("/integrations/{hubspot}/credentials"));
    let empty = c.get(&path).await.expect(200);
    assert!(
        empty["parts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["set"] == false)
    );
    assert_eq!(part(&empty, "webhook_secret")["used_by_crm"], true);
    assert_eq!(part(&empty, "webhook_basic_auth")["used_by_crm"], false);

    // Set: the answer says what is set and since when, never the value.
    v.patch(&path, json!({"webhook_secret": SECRETS[0]}))
        .await
        .expect(403);
    let set = c
        .patch(
            &path,
            json!({"webhook_secret": SECRETS[0], "api": {"access_token": SECRETS[2]}}),
        )
        .await
        .expect(200);
    assert_no_secret("the PATCH answer", &set);
    assert_eq!(part(&set, "webhook_secret")["set"], true);
    assert_eq!(part(&set, "api")["set"], true);
    let first_rotation = part(&set, "webhook_secret")["rotated_at"].clone();
    assert!(first_rotation.is_string(), "{set}");
    let stored = credentials::load(
        &env.pool,
        hubspot,
        Some(&SecretKey::parse(ENCRYPTION_KEY).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(stored.webhook_secret.as_deref(), Some(SECRETS[0]));

    // Rotate one part: only its time moves, the other part is kept.
    let rotated = c
        .patch(&path, json!({"webhook_secret": SECRETS[1]}))
        .await
        .expect(200);
    assert_ne!(
        part(&rotated, "webhook_secret")["rotated_at"],
        first_rotation
    );
    assert_eq!(
        part(&rotated, "api")["rotated_at"],
        part(&set, "api")["rotated_at"]
    );

    // Nothing anywhere shows a value: reads, lists, the audit log (which names the parts).
    for answer in [
        v.get(&path).await.expect(200),
        v.get(&p(&format!("/integrations/{hubspot}")))
            .await
            .expect(200),
        v.get(&p("/integrations")).await.expect(200),
    ] {
        assert_no_secret("a read", &answer);
    }
    let audit = v.get(&p("/audit-log")).await.expect(200);
    assert_no_secret("the audit log", &audit);
    assert_eq!(
        audit["items"][0]["action"],
        "integration.credentials_rotated"
    );
    assert_eq!(
        audit["items"][0]["details"]["parts"],
        json!(["webhook_secret"])
    );
    assert_eq!(
        audit["items"][1]["details"]["parts"],
        json!(["webhook_secret", "api"])
    );

    // Validation per CRM: 422 naming the field.
    c.patch(
        &path,
        json!({"webhook_basic_auth": {"username": "u", "password": SECRETS[3]}}),
    )
    .await
    .invalid("webhook_basic_auth");
    c.patch(&path, json!({"webhook_secret": " "}))
        .await
        .invalid("webhook_secret");
    c.patch(&path, json!({"api": {}})).await.invalid("api");
    c.patch(
        &path,
        json!({"api": {"access_token": "t", "base_url": "ftp://x"}}),
    )
    .await
    .invalid("api/base_url");
    c.patch(&path, json!({"webhook_secret": "x".repeat(5000)}))
        .await
        .invalid("webhook_secret");
    c.patch(&path, json!({"secret": "x"}))
        .await
        .invalid("secret");
    c.patch(&path, json!({})).await.invalid("webhook_secret");
    let pipedrive = integration(c, tenant.company_id, "pipedrive", "pipedrive", "acme").await;
    let pd = p(&format!("/integrations/{pipedrive}/credentials"));
    c.patch(
        &pd,
        json!({"webhook_basic_auth": {"username": "a:b", "password": SECRETS[3]}}),
    )
    .await
    .invalid("webhook_basic_auth");
    c.patch(&pd, json!({"api": {"access_token": SECRETS[2]}}))
        .await
        .invalid("api/base_url");
    let ok = c
        .patch(
            &pd,
            json!({"webhook_basic_auth": {"username": "crm", "password": SECRETS[3]}}),
        )
        .await
        .expect(200);
    assert_no_secret("the Pipedrive answer", &ok);
    let dynamics = integration(c, tenant.company_id, "dynamics", "dynamics", "org1").await;
    let dy = p(&format!("/integrations/{dynamics}/credentials"));
    c.patch(
        &dy,
        json!({"webhook_key": {"header": "x-key", "query": "code", "value": SECRETS[4]}}),
    )
    .await
    .invalid("webhook_key");
    c.patch(
        &dy,
        json!({"api": {"base_url": "https://org1.crm.dynamics.com",
                       "oauth": {"client_id": "c", "client_secret": SECRETS[5]}}}),
    )
    .await
    .invalid("api/oauth/tenant_id");
    let ok = c
        .patch(
            &dy,
            json!({"webhook_key": {"header": "x-key", "value": SECRETS[4]},
                   "api": {"base_url": "https://org1.crm.dynamics.com",
                           "oauth": {"client_id": "c", "client_secret": SECRETS[5], "tenant_id": "t"}}}),
        )
        .await
        .expect(200);
    assert_no_secret("the Dynamics answer", &ok);
    assert_no_secret("the audit log", &v.all(&p("/audit-log"), 50).await.into());

    // Created with its credentials in one step; invalid ones refuse the whole creation.
    let generic = |name: &str, credentials: Value| json!({"name": name, "crm": "generic", "crm_account_id": name, "credentials": credentials});
    c.post(
        &p("/integrations"),
        generic("refused", json!({"api": {"access_token": SECRETS[2]}})),
    )
    .await
    .invalid("api");
    let names: Vec<Value> = v.all(&p("/integrations"), 50).await;
    assert!(
        names.iter().all(|i| i["name"] != "refused"),
        "nothing was created"
    );
    let created = c
        .post(
            &p("/integrations"),
            generic("signed", json!({"webhook_secret": SECRETS[0]})),
        )
        .await
        .expect(201);
    assert_no_secret("the creation answer", &created);
    let id = created["id"].as_str().unwrap();
    let status = v
        .get(&p(&format!("/integrations/{id}/credentials")))
        .await
        .expect(200);
    assert_eq!(part(&status, "webhook_secret")["set"], true);
    let audit = v.get(&p("/audit-log")).await.expect(200);
    assert_eq!(audit["items"][0]["action"], "integration.created");
    assert_eq!(
        audit["items"][0]["details"]["credentials_set"],
        json!(["webhook_secret"])
    );
    assert_no_secret("the audit log", &audit);

    // Another company's integration does not exist here.
    let foreign = p(&format!(
        "/integrations/{}/credentials",
        other.integration_id
    ));
    c.get(&foreign).await.expect(404);
    c.patch(&foreign, json!({"webhook_secret": SECRETS[0]}))
        .await
        .expect(404);
}

/// A HubSpot batch signed with `secret` for `url`, now.
async fn send_signed(url: &str, secret: &str) -> u16 {
    let body = json!([{
        "eventId": now_millis(), "subscriptionId": 2456, "portalId": 62515, "appId": 1160452,
        "occurredAt": now_millis(), "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
        "objectId": 7, "changeSource": "CRM_UI", "propertyName": "dealstage",
        "propertyValue": "closedwon"
    }])
    .to_string();
    let timestamp = now_millis().to_string();
    let signature = hubspot_signature(secret, url, &body, &timestamp);
    post(
        url,
        &[
            ("content-type", "application/json"),
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &signature),
            ("x-hubspot-signature-version", "v3"),
        ],
        body,
    )
    .await
    .status
}

#[tokio::test]
async fn a_rotated_hubspot_secret_takes_effect_in_ingest_within_the_cache_time() {
    let env = TestEnv::new("admin-credentials-rotation").await;
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api(&env).await;
    // ingest with its defaults, so the documented `ingest.integration_cache_ms` (5 s) is tested.
    let ingest = env
        .start_service(
            "ingest",
            "ingest",
            &[("CRM_SYNC__SECRETS__ENCRYPTION_KEY", ENCRYPTION_KEY)],
        )
        .await;
    let c = AdminClient::new(&api, Some(&admin));
    let hubspot = integration(&c, tenant.company_id, "hubspot", "hubspot", "62515").await;
    let path = company_path(
        tenant.company_id,
        &format!("/integrations/{hubspot}/credentials"),
    );
    let url = ingest.url(&format!("/v1/integrations/{hubspot}/hubspot/webhooks"));

    c.patch(&path, json!({"webhook_secret": SECRETS[0]}))
        .await
        .expect(200);
    // Accepted with the first secret (and now cached by ingest).
    eventually(
        "the first secret accepted",
        Duration::from_secs(20),
        || async {
            (200..300)
                .contains(&send_signed(&url, SECRETS[0]).await)
                .then_some(())
        },
    )
    .await;

    c.patch(&path, json!({"webhook_secret": SECRETS[1]}))
        .await
        .expect(200);
    let rotated_at = std::time::Instant::now();
    eventually(
        "the old secret refused and the new one accepted",
        Duration::from_secs(20),
        || async {
            let old = send_signed(&url, SECRETS[0]).await;
            let new = send_signed(&url, SECRETS[1]).await;
            (old == 401 && (200..300).contains(&new)).then_some(())
        },
    )
    .await;
    assert!(
        rotated_at.elapsed() < Duration::from_secs(10),
        "the rotation took {:?}, more than the documented 5 s cache plus slack",
        rotated_at.elapsed()
    );
}

#[tokio::test]
async fn api_urls_outside_the_outbound_policy_are_refused_with_422() {
    let env = TestEnv::new("admin-credentials-ssrf").await;
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    // The production default: no test setting, no extra hosts.
    let api = env
        .start_service(
            "admin-api",
            "admin-api",
            &[
                ("CRM_SYNC__SECRETS__ENCRYPTION_KEY", ENCRYPTION_KEY),
                ("CRM_SYNC__DIRECTORY__ALLOW_INSECURE_HTTP", "false"),
                ("CRM_SYNC__DIRECTORY__ALLOWED_HOSTS", ""),
            ],
        )
        .await;
    let c = AdminClient::new(&api, Some(&admin));
    let dynamics = integration(&c, tenant.company_id, "dynamics", "dynamics", "org1").await;
    let path = company_path(
        tenant.company_id,
        &format!("/integrations/{dynamics}/credentials"),
    );
    let oauth = |token_url: Option<&str>| {
        let mut oauth = json!({"client_id": "c", "client_secret": SECRETS[5], "tenant_id": "t1"});
        if let Some(url) = token_url {
            oauth["token_url"] = json!(url);
        }
        oauth
    };
    for (base_url, why) in [
        ("https://127.0.0.1", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.5", "private"),
        ("https://[::1]:8443", "loopback"),
        ("http://org1.crm.dynamics.com", "https"),
        ("https://metadata.internal.example", "not one of"),
    ] {
        let body = c
            .patch(
                &path,
                json!({"api": {"base_url": base_url, "oauth": oauth(None)}}),
            )
            .await
            .invalid("api/base_url");
        assert!(
            body["message"].as_str().unwrap().contains(why),
            "{base_url}: {body}"
        );
    }
    c.patch(
        &path,
        json!({"api": {"base_url": "https://org1.crm.dynamics.com",
                       "oauth": oauth(Some("https://169.254.169.254/token"))}}),
    )
    .await
    .invalid("api/oauth/token_url");
    c.patch(
        &path,
        json!({"api": {"base_url": "https://org1.crm4.dynamics.com", "oauth": oauth(None)}}),
    )
    .await
    .expect(200);
}
