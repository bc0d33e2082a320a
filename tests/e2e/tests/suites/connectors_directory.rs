//! Owner resolution and hardening across connectors: a lookup that fails never loses the
//! activity (the account is completed later), per-integration rate limits answer 429 with
//! `Retry-After`, and every answer and log line carries the request id.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::connectors;
mod directory_user_events;
mod hanging_directory;

use std::time::Duration;

use connectors::{
    FakeCrm, activity, add_integration, post, setup, start_pipeline, start_pipeline_with,
    users_announced, wait_for_activity,
};
use crm_sync_e2e::{eventually, salesforce};
use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets, OAuthCredentials};
use serde_json::json;

const ORG: &str = "00D5g000004ABCDEAA";
const TOKEN: &str = "sf-webhook-token-e2e";
const OWNER: &str = "0055g00000AbCdEAAZ";

fn salesforce_api(base: &str) -> IntegrationSecrets {
    IntegrationSecrets {
        api: Some(ApiCredentials {
            base_url: Some(base.into()),
            access_token: None,
            oauth: Some(OAuthCredentials {
                client_id: "3MVG9-e2e".into(),
                client_secret: "sf-consumer-secret-e2e".into(),
                refresh_token: None,
                token_url: None,
                scope: None,
                tenant_id: None,
            }),
        }),
        ..IntegrationSecrets::default()
    }
}

/// A Salesforce integration whose API is `crm`, with the won-opportunities workflow.
async fn salesforce_setup(name: &str, crm: &FakeCrm) -> connectors::Setup {
    setup(
        name,
        "salesforce",
        ORG,
        salesforce_api(&crm.base_url),
        Some(TOKEN),
        workflow(),
    )
    .await
}

fn workflow() -> serde_json::Value {
    json!({
        "name": "Won opportunities", "object_type": "Opportunity", "triggers": ["created", "updated"],
        "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
        "user_field": "OwnerId", "value_field": "Amount", "date_field": "CloseDate",
        "activity_type": "deal_won"
    })
}

fn outbound_message(notification: &str, record: &str) -> String {
    salesforce::outbound_message(
        ORG,
        &[salesforce::won_opportunity(
            notification,
            record,
            OWNER,
            "1250.50",
        )],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_crm_api_creates_the_account_with_what_is_known_and_completes_it_later() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Jane Doe", "jane.doe@example.com");
    // Both lookups the provisioner makes while the outcome waits fail.
    crm.unavailable(2);
    let s = salesforce_setup("connectors-directory-later", &crm).await;
    let p = start_pipeline(&s.env, &[]).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={TOKEN}",
        s.integration_id
    ));
    let answer = post(
        &url,
        &[
            ("content-type", "text/xml; charset=utf-8"),
            ("soapaction", "\"\""),
        ],
        outbound_message("04l5g00000ABCDEAA1", "0065g00000XyZ12AAB"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("<Ack>true</Ack>"));

    // The activity is not held back by the CRM being down.
    let recorded =
        wait_for_activity(&s.env, s.integration_id, "0065g00000XyZ12AAB", "recorded").await;
    assert_eq!(recorded.value, "1250.50");

    // Completed by the background lookup once the CRM answers again.
    let completed = eventually(
        "the account's name and email",
        Duration::from_secs(30),
        || async {
            activity(&s.env, s.integration_id, "0065g00000XyZ12AAB")
                .await
                .filter(|a| a.email.is_some())
        },
    )
    .await;
    assert_eq!(completed.display_name.as_deref(), Some("Jane Doe"));
    assert_eq!(completed.email.as_deref(), Some("jane.doe@example.com"));

    let announced = eventually("two announcements", Duration::from_secs(20), || async {
        let users = users_announced(&s.env).await;
        (users.len() == 2).then_some(users)
    })
    .await;
    let first = announced
        .iter()
        .find(|u| u.display_name == OWNER)
        .expect("created with the CRM id as its name");
    let second = announced
        .iter()
        .find(|u| u.display_name == "Jane Doe")
        .expect("completed");
    assert_eq!(first.user_id, second.user_id, "the same account, completed");
    assert_ne!(first.event_id, second.event_id);
    assert_eq!(first.email, "");
    assert_eq!(second.email, "jane.doe@example.com");
    let (state, attempts): (String, i32) = sqlx::query_as(
        "SELECT directory_state, directory_attempts FROM crm_identities WHERE crm_user_id = $1",
    )
    .bind(OWNER)
    .fetch_one(&s.env.pool)
    .await
    .unwrap();
    assert_eq!((state.as_str(), attempts), ("complete", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let s = setup(
        "connectors-rate-limit",
        "salesforce",
        ORG,
        IntegrationSecrets::default(),
        Some(TOKEN),
        workflow(),
    )
    .await;
    let other = add_integration(
        &s.env,
        s.company_id,
        "salesforce-eu",
        "salesforce",
        ORG,
        IntegrationSecrets::default(),
        Some(TOKEN),
    )
    .await;
    let ingest = s
        .env
        .start_service(
            "ingest",
            "ingest",
            &[
                ("CRM_SYNC__INGEST__RATE_LIMIT_PER_SECOND", "1"),
                ("CRM_SYNC__INGEST__RATE_LIMIT_BURST", "2"),
            ],
        )
        .await;
    let url = |id: uuid::Uuid| {
        ingest.url(&format!(
            "/v1/integrations/{id}/salesforce/outbound-messages?token={TOKEN}"
        ))
    };
    let headers = [("content-type", "text/xml")];
    let body = outbound_message("04l5g00000ABCDEAA1", "0065g00000XyZ12AAB");
    for _ in 0..2 {
        let answer = post(&url(s.integration_id), &headers, body.clone()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.headers["x-request-id"].len(), 32);
    }
    let limited = post(&url(s.integration_id), &headers, body.clone()).await;
    assert_eq!(
        (limited.status, limited.error().as_str()),
        (429, "rate_limited")
    );
    assert_eq!(limited.headers["retry-after"], "1");
    let answer = post(&url(other), &headers, body.clone()).await;
    assert_eq!(
        answer.status, 200,
        "another integration has its own budget: {}",
        answer.body
    );
    // A rate limit only asks the CRM to retry: the integration's health is not told of it.
    let status = crm_sync_store::sync_status::get(&s.env.pool, s.company_id, s.integration_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.last_webhook_refusal, None);

    let request_id = limited.json()["request_id"].as_str().unwrap().to_owned();
    let log_file = ingest.log_file.clone();
    ingest.kill().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("rate_limited"))
        .expect("the refusal is logged");
    assert!(line.contains(&request_id), "{line}");
    assert!(!log.contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_sync_apply_stores_credentials_encrypted_and_keeps_parts_it_does_not_mention() {
    use std::process::Stdio;

    use crm_sync_e2e::{TestEnv, binary_path};
    use crm_sync_store::credentials;

    let env = TestEnv::new("connectors-apply-credentials").await;
    let file = |credentials: &str| {
        format!(
            "companies:\n  - slug: acme\n    name: Acme\n    integrations:\n      - name: hubspot-prod\n        crm: hubspot\n        crm_account_id: \"62515\"\n        credentials:\n{credentials}"
        )
    };
    let apply = |text: String, key: Option<&'static str>| {
        let env_vars = env.service_env();
        async move {
            let mut command = tokio::process::Command::new(binary_path("crm-sync"));
            command
                .args(["apply", "-f", "-"])
                .envs(env_vars)
                .env_remove("CRM_SYNC_CONFIG")
                .env_remove("CRM_SYNC__SECRETS__ENCRYPTION_KEY")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(key) = key {
                command.env("CRM_SYNC__SECRETS__ENCRYPTION_KEY", key);
            }
            let mut child = command.spawn().unwrap();
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(text.as_bytes()).await.unwrap();
            drop(stdin);
            child.wait_with_output().await.unwrap()
        }
    };

    let first = file(
        "          webhook_secret: ${HS_SECRET_FOR_TEST:-hs-client-secret-1}\n          api: {access_token: pat-na1-1}\n",
    );
    let refused = apply(first.clone(), None).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("secrets.encryption_key"), "{stderr}");

    let wrong_part = file("          webhook_basic_auth: {username: a, password: b}\n");
    let refused = apply(wrong_part, Some(connectors::ENCRYPTION_KEY)).await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("credentials.webhook_basic_auth: a hubspot integration does not use it"),
        "{stderr}"
    );

    let done = apply(first, Some(connectors::ENCRYPTION_KEY)).await;
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let (integration_id, ciphertext): (uuid::Uuid, Vec<u8>) =
        sqlx::query_as("SELECT integration_id, ciphertext FROM integration_secrets")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert!(
        !String::from_utf8_lossy(&ciphertext).contains("hs-client-secret-1"),
        "stored encrypted"
    );

    // Rotating one part keeps the others.
    let rotate = file("          webhook_secret: hs-client-secret-2\n");
    let done = apply(rotate, Some(connectors::ENCRYPTION_KEY)).await;
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let stored = credentials::load(&env.pool, integration_id, Some(&connectors::key()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.webhook_secret.as_deref(), Some("hs-client-secret-2"));
    assert_eq!(
        stored.api.unwrap().access_token.as_deref(),
        Some("pat-na1-1")
    );
    let output = String::from_utf8_lossy(&done.stdout);
    assert!(!output.contains("hs-client-secret"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_the_crm_rotates_is_stored_and_survives_a_restart() {
    const SECOND_OWNER: &str = "0055g00000ZyXwVAAQ";
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Jane Doe", "jane.doe@example.com");
    crm.add_user(SECOND_OWNER, "John Roe", "john.roe@example.com");
    crm.rotate_refresh_tokens("rt-0");
    let mut api = salesforce_api(&crm.base_url);
    if let Some(oauth) = api.api.as_mut().and_then(|a| a.oauth.as_mut()) {
        oauth.refresh_token = Some("rt-0".into());
    }
    let s = setup(
        "connectors-directory-rotation",
        "salesforce",
        ORG,
        api,
        Some(TOKEN),
        workflow(),
    )
    .await;
    let stored_refresh_token = || async {
        crm_sync_store::credentials::load(&s.env.pool, s.integration_id, Some(&connectors::key()))
            .await
            .unwrap()
            .and_then(|c| c.api)
            .and_then(|a| a.oauth)
            .and_then(|o| o.refresh_token)
    };
    let mut p = start_pipeline(&s.env, &[]).await;
    let send = |ingest_url: String, owner: &'static str, n: u32| async move {
        let message = salesforce::outbound_message(
            ORG,
            &[salesforce::won_opportunity(
                &format!("04l5g00000ROT{n:03}A"),
                &format!("0065g00000ROT{n:03}A"),
                owner,
                "10.00",
            )],
        );
        let answer = post(
            &ingest_url,
            &[
                ("content-type", "text/xml; charset=utf-8"),
                ("soapaction", "\"\""),
            ],
            message,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    };
    let path = format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={TOKEN}",
        s.integration_id
    );
    let named = |record: &'static str| {
        let env = &s.env;
        let integration_id = s.integration_id;
        async move {
            eventually(
                "the account named from the directory",
                Duration::from_secs(30),
                || async {
                    activity(env, integration_id, record)
                        .await
                        .filter(|a| a.email.is_some())
                },
            )
            .await
        }
    };

    send(p.ingest.url(&path), OWNER, 1).await;
    let first = named("0065g00000ROT001A").await;
    assert_eq!(first.email.as_deref(), Some("jane.doe@example.com"));
    assert_eq!(crm.current_refresh_token().as_deref(), Some("rt-1"));
    assert_eq!(
        stored_refresh_token().await.as_deref(),
        Some("rt-1"),
        "the rotated refresh token replaces the revoked one in the stored credentials"
    );

    // A restarted provisioner reads the stored credentials: the revoked rt-0 would be refused.
    p.provisioner.kill().await;
    p.provisioner = s
        .env
        .start_service("provisioner", "provisioner", &connectors::SERVICE_ENV)
        .await;
    send(p.ingest.url(&path), SECOND_OWNER, 2).await;
    let second = named("0065g00000ROT002A").await;
    assert_eq!(second.email.as_deref(), Some("john.roe@example.com"));
    assert_eq!(stored_refresh_token().await.as_deref(), Some("rt-2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_the_crm_says_is_inactive_is_deactivated_where_the_integration_says_so() {
    const KEPT_ACTIVE: &str = "0055g00000AbCdFAAZ";
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Ina Active", "ina@example.com");
    crm.deactivate_user(OWNER);
    crm.add_user(KEPT_ACTIVE, "Kit Kept", "kit@example.com");
    crm.deactivate_user(KEPT_ACTIVE);
    let s = salesforce_setup("connectors-directory-inactive", &crm).await;
    let p = start_pipeline(&s.env, &[]).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={TOKEN}",
        s.integration_id
    ));
    let post_won = |notification: &'static str, record: &'static str, owner: &'static str| {
        let url = url.clone();
        async move {
            let body = salesforce::outbound_message(
                ORG,
                &[salesforce::won_opportunity(
                    notification,
                    record,
                    owner,
                    "900",
                )],
            );
            let answer = post(
                &url,
                &[
                    ("content-type", "text/xml; charset=utf-8"),
                    ("soapaction", "\"\""),
                ],
                body,
            )
            .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    };
    let status_of = |owner: &'static str| {
        let pool = s.env.pool.clone();
        async move {
            sqlx::query_as::<_, (uuid::Uuid, Option<String>, Option<bool>)>(
                "SELECT u.id, u.deactivated_by, ci.crm_active FROM crm_identities ci
                 JOIN users u ON u.id = ci.user_id WHERE ci.crm_user_id = $1",
            )
            .bind(owner)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };

    // With the integration's setting off, the account is made and stays active.
    sqlx::query("UPDATE integrations SET deactivate_with_crm = false WHERE id = $1")
        .bind(s.integration_id)
        .execute(&s.env.pool)
        .await
        .unwrap();
    post_won("04l5g00000ABCDFAA1", "0065g00000XyZ13AAB", KEPT_ACTIVE).await;
    let (kit, _, crm_active) = eventually("Kit's account", Duration::from_secs(30), || {
        status_of(KEPT_ACTIVE)
    })
    .await;
    assert_eq!(crm_active, Some(false), "what the CRM said is kept");
    // The background pass runs every second: three of them leave Kit alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_of(KEPT_ACTIVE).await.unwrap().1, None);

    // With it on (the default), the inactive CRM user's account is deactivated, audited and
    // announced.
    sqlx::query("UPDATE integrations SET deactivate_with_crm = true WHERE id = $1")
        .bind(s.integration_id)
        .execute(&s.env.pool)
        .await
        .unwrap();
    post_won("04l5g00000ABCDGAA1", "0065g00000XyZ14AAB", OWNER).await;
    let (ina, _, _) = eventually("Ina deactivated", Duration::from_secs(30), || async {
        status_of(OWNER)
            .await
            .filter(|(_, by, _)| by.as_deref() == Some("crm"))
    })
    .await;
    let kit_now = eventually("Kit deactivated too", Duration::from_secs(30), || async {
        status_of(KEPT_ACTIVE)
            .await
            .filter(|(_, by, _)| by.as_deref() == Some("crm"))
    })
    .await;
    assert_eq!(kit_now.0, kit);
    let announced = eventually(
        "Ina announced inactive",
        Duration::from_secs(30),
        || async {
            users_announced(&s.env).await.into_iter().find(|u| {
                u.user_id == ina.to_string()
                    && u.status == crm_sync_proto::v1::UserStatus::Inactive as i32
            })
        },
    )
    .await;
    assert_eq!(announced.display_name, "Ina Active");
    let (actor, details): (String, serde_json::Value) = sqlx::query_as(
        "SELECT actor, details FROM audit_log WHERE action = 'user.deactivated' AND target_id = $1",
    )
    .bind(ina.to_string())
    .fetch_one(&s.env.pool)
    .await
    .unwrap();
    assert!(actor.contains("CRM says"), "{actor}");
    assert_eq!(details["crm_user_id"], OWNER);

    // An admin reactivates Ina: the CRM's old word does not overrule them.
    sqlx::query("UPDATE users SET deactivated_at = NULL, deactivated_by = NULL WHERE id = $1")
        .bind(ina)
        .execute(&s.env.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(status_of(OWNER).await.unwrap().1, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_deactivated_in_the_crm_after_their_account_was_made_is_deactivated_by_the_recheck()
{
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Ina Active", "ina@example.com");
    let s = salesforce_setup("connectors-directory-recheck", &crm).await;
    let p = start_pipeline_with(
        &s.env,
        &[],
        &[("CRM_SYNC__DIRECTORY__RECHECK_INTERVAL_SECS", "2")],
    )
    .await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={TOKEN}",
        s.integration_id
    ));
    let headers = [
        ("content-type", "text/xml; charset=utf-8"),
        ("soapaction", "\"\""),
    ];
    let answer = post(
        &url,
        &headers,
        outbound_message("04l5g00000RCHK1AA1", "0065g00000RcHk1AAB"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    wait_for_activity(&s.env, s.integration_id, "0065g00000RcHk1AAB", "recorded").await;
    let deactivated_by = || async {
        sqlx::query_as::<_, (Option<String>,)>(
            "SELECT u.deactivated_by FROM crm_identities ci JOIN users u ON u.id = ci.user_id
             WHERE ci.crm_user_id = $1",
        )
        .bind(OWNER)
        .fetch_one(&s.env.pool)
        .await
        .unwrap()
        .0
    };
    assert_eq!(
        deactivated_by().await,
        None,
        "active in the CRM when the account was made"
    );

    // Later, the CRM deactivates Ina; no event of hers arrives, the re-check finds it out.
    let asked_before = crm.lookups();
    crm.deactivate_user(OWNER);
    eventually(
        "Ina deactivated by the re-check",
        Duration::from_secs(30),
        || async { (deactivated_by().await.as_deref() == Some("crm")).then_some(()) },
    )
    .await;
    assert!(crm.lookups() > asked_before, "the CRM was asked again");
}
