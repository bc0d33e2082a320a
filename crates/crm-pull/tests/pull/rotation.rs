//! A refresh token the CRM rotates is stored as soon as it is issued: the old one is revoked,
//! and the next client built from the stored credentials (the hydrator's, rebuilt every minute;
//! another replica's; any after a restart) must present the new one.

use crm_sync_crm_pull::credentials::client_for;
use crm_sync_e2e::TestEnv;
use crm_sync_e2e::fake_crm::Kind;
use crm_sync_store::credentials::{
    self, ApiCredentials, IntegrationSecrets, OAuthCredentials, SecretKey,
};
use serde_json::json;

use super::*;

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_before_the_next_client_needs_it() {
    let env = TestEnv::new("pull_token_rotation").await;
    let (company, integration) = super::leases::integration(&env).await;
    let key = SecretKey::parse(&"5a".repeat(32)).unwrap();
    let fake = start(Kind::Salesforce).await;
    fake.rotate_refresh_tokens("rt-0");
    fake.put(
        "Opportunity",
        "006000000000000001",
        json!({"StageName": "Closed Won"}),
    );
    let oauth = OAuthCredentials {
        client_id: "connected-app".into(),
        client_secret: "connected-app-secret".into(),
        refresh_token: Some("rt-0".into()),
        token_url: None,
        scope: None,
        tenant_id: None,
    };
    let secrets = IntegrationSecrets {
        api: Some(ApiCredentials {
            base_url: Some(fake.url.clone()),
            access_token: None,
            oauth: Some(oauth),
        }),
        ..IntegrationSecrets::default()
    };
    credentials::update(&env.pool, &key, company, integration, secrets)
        .await
        .unwrap();
    let scope = scope("Opportunity", &["StageName"]);

    // A client refreshes (rt-0 → rt-1; rt-0 is revoked) and is dropped, as the hydrator drops
    // its clients after a minute, or a replica stops.
    let first = client_for(&env.pool, &key, &config(50), integration)
        .await
        .unwrap()
        .unwrap();
    let record = first.record(&scope, "006000000000000001").await.unwrap();
    assert!(record.is_some());
    drop(first);
    assert_eq!(fake.current_refresh_token().as_deref(), Some("rt-1"));
    let stored = credentials::load(&env.pool, integration, Some(&key))
        .await
        .unwrap()
        .and_then(|s| s.api)
        .and_then(|a| a.oauth)
        .and_then(|o| o.refresh_token);
    assert_eq!(stored.as_deref(), Some("rt-1"), "stored when issued");

    // The next client, on the stored credentials, still gets through.
    let next = client_for(&env.pool, &key, &config(50), integration)
        .await
        .unwrap()
        .unwrap();
    let record = next.record(&scope, "006000000000000001").await;
    assert!(
        matches!(record, Ok(Some(_))),
        "the next client refreshes with the rotated token: {record:?}"
    );
}
