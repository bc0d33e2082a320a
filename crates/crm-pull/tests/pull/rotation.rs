//! A refresh token the CRM rotates is stored as soon as it is issued: the old one is revoked,
//! and the next client built from the stored credentials (the hydrator's, rebuilt every minute;
//! another replica's; any after a restart) must present the new one.

use crm_sync_crm_pull::credentials::client_for;
use crm_sync_e2e::TestEnv;
use crm_sync_e2e::fake_crm::FakeCrm;
use crm_sync_e2e::fake_crm::Kind;
use crm_sync_store::credentials::{
    self, ApiCredentials, IntegrationSecrets, OAuthCredentials, SecretKey,
};
use serde_json::json;
use uuid::Uuid;

use super::*;

fn key() -> SecretKey {
    SecretKey::parse(&"5a".repeat(32)).unwrap()
}

/// The fake Salesforce with one opportunity, rotating refresh tokens from `rt-0`, and the
/// integration's stored OAuth credentials holding `rt-0`.
async fn rotating(env: &TestEnv) -> (FakeCrm, Uuid) {
    let (company, integration) = super::leases::integration(env).await;
    let fake = start(Kind::Salesforce).await;
    fake.rotate_refresh_tokens("rt-0");
    fake.put(
        "Opportunity",
        "006000000000000001",
        json!({"StageName": "Closed Won"}),
    );
    store_refresh_token(env, company, integration, &fake, "rt-0").await;
    (fake, integration)
}

async fn store_refresh_token(
    env: &TestEnv,
    company: Uuid,
    integration: Uuid,
    fake: &FakeCrm,
    refresh_token: &str,
) {
    let oauth = OAuthCredentials {
        client_id: "connected-app".into(),
        client_secret: "connected-app-secret".into(),
        refresh_token: Some(refresh_token.into()),
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
    credentials::update(&env.pool, &key(), company, integration, secrets)
        .await
        .unwrap();
}

async fn stored_refresh_token(env: &TestEnv, integration: Uuid) -> Option<String> {
    credentials::load(&env.pool, integration, Some(&key()))
        .await
        .unwrap()
        .and_then(|s| s.api)
        .and_then(|a| a.oauth)
        .and_then(|o| o.refresh_token)
}

#[tokio::test]
async fn a_rotated_refresh_token_is_stored_before_the_next_client_needs_it() {
    let env = TestEnv::new("pull_token_rotation").await;
    let (fake, integration) = rotating(&env).await;
    let key = key();
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
    assert_eq!(
        stored_refresh_token(&env, integration).await.as_deref(),
        Some("rt-1"),
        "stored when issued"
    );

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

#[tokio::test]
async fn a_client_whose_refresh_token_another_redeemed_goes_on_with_the_stored_one() {
    let env = TestEnv::new("pull_token_redeemed_elsewhere").await;
    let (fake, integration) = rotating(&env).await;
    let scope = scope("Opportunity", &["StageName"]);
    // Two clients read the same credentials (two replicas, or the hydrator and a pull job).
    let first = client_for(&env.pool, &key(), &config(50), integration)
        .await
        .unwrap()
        .unwrap();
    let second = client_for(&env.pool, &key(), &config(50), integration)
        .await
        .unwrap()
        .unwrap();
    // The first redeems rt-0 (rt-1 stored); the second still holds rt-0, now refused.
    first.record(&scope, "006000000000000001").await.unwrap();
    let record = second.record(&scope, "006000000000000001").await;
    assert!(matches!(record, Ok(Some(_))), "{record:?}");
    assert_eq!(fake.current_refresh_token().as_deref(), Some("rt-2"));
    assert_eq!(
        stored_refresh_token(&env, integration).await.as_deref(),
        Some("rt-2"),
        "the second client's rotation stored in place of the first's"
    );
}

#[tokio::test]
async fn credentials_an_admin_entered_meanwhile_are_not_overwritten_by_a_rotation() {
    let env = TestEnv::new("pull_token_admin_wins").await;
    let (_fake, integration) = rotating(&env).await;
    let company = crm_sync_store::integrations::find(&env.pool, integration)
        .await
        .unwrap()
        .unwrap()
        .company_id;
    // A client redeemed rt-0, and before it stores rt-1 an admin enters a new installation's
    // refresh token.
    let fresh = start(Kind::Salesforce).await;
    store_refresh_token(&env, company, integration, &fresh, "admin-rt").await;
    let stored =
        credentials::store_rotated_refresh_token(&env.pool, &key(), integration, "rt-0", "rt-1")
            .await
            .unwrap();
    assert!(!stored);
    assert_eq!(
        stored_refresh_token(&env, integration).await.as_deref(),
        Some("admin-rt")
    );
    // In place of the token it redeemed, a rotation is stored.
    let stored = credentials::store_rotated_refresh_token(
        &env.pool,
        &key(),
        integration,
        "admin-rt",
        "rt-9",
    )
    .await
    .unwrap();
    assert!(stored);
    assert_eq!(
        stored_refresh_token(&env, integration).await.as_deref(),
        Some("rt-9")
    );
}
