//! The pull clients go through the directory's outbound policy: the same checks on the API root,
//! the addresses names resolve to, redirects and answer sizes.

use chrono::Utc;
use crm_sync_crm_directory::{Credentials, Crm, Egress, LookupError};
use crm_sync_crm_pull::{PullClient, PullConfig, PullError};
use crm_sync_e2e::fake_crm::Kind;
use serde_json::json;
use uuid::Uuid;

use super::*;

fn with_egress(egress: Egress) -> PullConfig {
    let mut config = config(200);
    config.api.egress = egress;
    config
}

fn pipedrive_at(base_url: String, config: PullConfig) -> Result<PullClient, PullError> {
    PullClient::new(
        Uuid::new_v4(),
        Crm::Pipedrive,
        Credentials {
            base_url: Some(base_url),
            access_token: Some(TOKEN.into()),
            oauth: None,
        },
        config,
    )
}

fn since() -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::hours(1)
}

#[tokio::test]
async fn a_pull_client_refuses_an_api_root_the_policy_forbids() {
    let fake = start(Kind::Pipedrive).await;
    // The default policy: https to the CRM's own hosts only.
    let error = pipedrive_at(fake.url.clone(), PullConfig::default()).unwrap_err();
    assert!(
        matches!(&error, PullError::Api(LookupError::Misconfigured(m)) if m.contains("https")),
        "{error}"
    );
    // Allowed by name, still refused by range.
    let port = fake.url.rsplit(':').next().unwrap();
    let error = pipedrive_at(
        format!("https://127.0.0.1:{port}"),
        with_egress(Egress {
            allow_insecure: false,
            extra_hosts: vec!["127.0.0.1".into()],
        }),
    )
    .unwrap_err();
    assert!(
        matches!(&error, PullError::Api(LookupError::Misconfigured(m)) if m.contains("loopback")),
        "{error}"
    );
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_not_pulled_from() {
    let fake = start(Kind::Pipedrive).await;
    fake.put("deal", "1", json!({"title": "Deal 1", "owner_id": 17}));
    let port = fake.url.rsplit(':').next().unwrap();
    let client = pipedrive_at(
        format!("https://localhost:{port}"),
        with_egress(Egress {
            allow_insecure: false,
            extra_hosts: vec!["localhost".into()],
        }),
    )
    .unwrap();
    let error = pull_all(&client, &scope("deal", &["title"]), since())
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("localhost is refused: address") && message.contains("loopback"),
        "{message}"
    );
    assert!(fake.requests().is_empty(), "nothing reached the CRM");
}

#[tokio::test]
async fn a_redirect_from_the_crm_is_not_followed() {
    let fake = start(Kind::Pipedrive).await;
    fake.put("deal", "1", json!({"title": "Deal 1", "owner_id": 17}));
    // The fake's redirect leads back to the same URL, where the real page is served.
    fake.fail_next(302, None, "");
    let client = client(&fake, Crm::Pipedrive, TOKEN, config(200));
    let error = pull_all(&client, &scope("deal", &["title"]), since())
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("redirect (302 Found), which is not followed"),
        "{error}"
    );
    assert_eq!(fake.requests().len(), 1, "one request, not followed");
}

#[tokio::test]
async fn a_page_larger_than_the_cap_fails_the_pull_saying_so() {
    let fake = start(Kind::Pipedrive).await;
    for n in 1..=50u32 {
        fake.put(
            "deal",
            &n.to_string(),
            json!({"title": "x".repeat(200), "owner_id": 17}),
        );
    }
    let mut config = config(50);
    config.api.max_answer_bytes = 4096;
    let client = client(&fake, Crm::Pipedrive, TOKEN, config);
    let error = pull_all(&client, &scope("deal", &["title"]), since())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PullError::Api(LookupError::Unexpected(m)) if m.contains("larger than 4096 bytes")),
        "{error}"
    );
}
