//! Salesforce `User` Outbound Messages (a module of the connectors_directory suite): the CRM's
//! own word that a rep is inactive deactivates their platform account at once (not at the
//! directory's next round, which these tests put an hour away), once however often Salesforce
//! delivers it, only where the integration says so; a word about a CRM user nobody's account
//! belongs to changes nothing, a `User` whose `IsActive` is not a boolean is refused, and one
//! ingest cannot keep (PostgreSQL away) is answered 503 so that Salesforce delivers it again.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_e2e::proxy::TcpProxy;
use crm_sync_e2e::{eventually, metric, salesforce};
use uuid::Uuid;

use super::{ORG, OWNER, TOKEN, salesforce_setup};
use crate::connectors::user_events::{
    account, account_on_a_team, crm_active, deactivations_audited, expect_deactivated_by_the_crm,
    on_leaderboard,
};
use crate::connectors::{FakeCrm, count, crm_events, post, start_pipeline_with};
use crm_sync_e2e::app::App;

const HEADERS: [(&str, &str); 2] = [
    ("content-type", "text/xml; charset=utf-8"),
    ("soapaction", "\"\""),
];

/// The directory's own rounds an hour away: what happens within seconds is the user event's.
const SLOW_DIRECTORY: [(&str, &str); 1] =
    [("CRM_SYNC__DIRECTORY__COMPLETION_INTERVAL_SECS", "3600")];

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An Outbound Message on `User` (a workflow rule on User sending `IsActive`), as Salesforce
/// sends it.
fn user_message(
    notification: &str,
    user: &str,
    is_active: &str,
    modified: DateTime<Utc>,
) -> String {
    let modified = iso(modified);
    salesforce::outbound_message(
        ORG,
        &[salesforce::Notification {
            id: notification,
            object: "User",
            fields: vec![
                ("Id", user),
                ("CreatedDate", "2025-03-01T09:00:00.000Z"),
                ("Email", "ina@example.com"),
                ("IsActive", is_active),
                ("LastModifiedDate", &modified),
                ("Name", "Ina Active"),
                ("Username", "ina@example.com.acme"),
            ],
        }],
    )
}

async fn post_to(p: &App<'_>, integration_id: Uuid, body: String) -> crate::connectors::Answer {
    let url = p.ingest.url(&format!(
        "/v1/integrations/{integration_id}/salesforce/outbound-messages?token={TOKEN}"
    ));
    post(&url, &HEADERS, body).await
}

/// A won opportunity of OWNER, so that auto-sync makes their account.
async fn won_deal(p: &App<'_>, integration_id: Uuid, notification: &str, record: &str) {
    let body = salesforce::outbound_message(
        ORG,
        &[salesforce::won_opportunity(
            notification,
            record,
            OWNER,
            "900",
        )],
    );
    let answer = post_to(p, integration_id, body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// Waits until ingest has recorded `n` user events in all.
async fn user_events_recorded(p: &App<'_>, n: f64) {
    eventually(
        "ingest recorded the user events",
        Duration::from_secs(10),
        || async {
            (metric(&p.ingest, "crm_sync_ingest_user_events_total", &[]).await >= n).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_user_message_deactivates_the_mapped_user_at_once_and_once() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Ina Active", "ina@example.com");
    let s = salesforce_setup("connectors-user-events-sf", &crm).await;
    let p = start_pipeline_with(&s.env, &[], &SLOW_DIRECTORY).await;
    // A second provisioner replica: both are notified, the user is still deactivated once.
    let mut replica_env = crate::connectors::SERVICE_ENV.to_vec();
    replica_env.extend_from_slice(&SLOW_DIRECTORY);
    let _replica = s
        .env
        .start_service("provisioner", "provisioner-2", &replica_env)
        .await;
    won_deal(
        &p,
        s.integration_id,
        "04l5g00000USR1AAA1",
        "0065g00000UsR1AAAB",
    )
    .await;
    let user_id = account_on_a_team(&s.env, s.company_id, s.integration_id, OWNER).await;
    assert_eq!(on_leaderboard(&s.env, s.company_id).await, [user_id]);

    // The rep leaves: Salesforce deactivates their user and the workflow rule on User sends it.
    let left_at = Utc::now();
    let message = user_message("04l5g00000USR2AAA1", OWNER, "false", left_at);
    let answer = post_to(&p, s.integration_id, message.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("<Ack>true</Ack>"), "{}", answer.body);
    expect_deactivated_by_the_crm(&s.env, s.company_id, s.integration_id, OWNER).await;
    // The event itself went on like any other, so the record trail shows it.
    assert!(
        crm_events(&s.env)
            .await
            .iter()
            .any(|e| e.object_type == "User" && e.record_id == OWNER),
        "the User event is on the events topic"
    );

    // Salesforce redelivers the same message, and a late one from before the change says the
    // user was active: neither changes anything.
    assert_eq!(post_to(&p, s.integration_id, message).await.status, 200);
    let earlier = user_message(
        "04l5g00000USR0AAA1",
        OWNER,
        "true",
        left_at - chrono::Duration::minutes(5),
    );
    assert_eq!(post_to(&p, s.integration_id, earlier).await.status, 200);
    user_events_recorded(&p, 3.0).await;
    assert_eq!(
        crm_active(&s.env, s.integration_id, OWNER).await,
        Some(false)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(deactivations_audited(&s.env, user_id).await.len(), 1);

    // An admin reactivates the rep; Salesforce later reactivates and deactivates them again:
    // the new inactive word applies anew.
    sqlx::query("UPDATE users SET deactivated_at = NULL, deactivated_by = NULL WHERE id = $1")
        .bind(user_id)
        .execute(&s.env.pool)
        .await
        .unwrap();
    let back = user_message("04l5g00000USR3AAA1", OWNER, "true", Utc::now());
    assert_eq!(post_to(&p, s.integration_id, back).await.status, 200);
    user_events_recorded(&p, 4.0).await;
    assert_eq!(
        account(&s.env, s.integration_id, OWNER).await.unwrap().1,
        None
    );
    let gone = user_message("04l5g00000USR4AAA1", OWNER, "false", Utc::now());
    assert_eq!(post_to(&p, s.integration_id, gone).await.status, 200);
    eventually("deactivated again", Duration::from_secs(15), || async {
        (deactivations_audited(&s.env, user_id).await.len() == 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_message_changes_nothing_when_the_setting_is_off_the_user_unknown_or_it_is_malformed()
 {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Ina Active", "ina@example.com");
    let s = salesforce_setup("connectors-user-events-off", &crm).await;
    sqlx::query("UPDATE integrations SET deactivate_with_crm = false WHERE id = $1")
        .bind(s.integration_id)
        .execute(&s.env.pool)
        .await
        .unwrap();
    let p = start_pipeline_with(&s.env, &[], &SLOW_DIRECTORY).await;
    won_deal(
        &p,
        s.integration_id,
        "04l5g00000OFF1AAA1",
        "0065g00000OfF1AAAB",
    )
    .await;
    let user_id = account_on_a_team(&s.env, s.company_id, s.integration_id, OWNER).await;

    // The setting off: the CRM's word is kept, the account stays active.
    let message = user_message("04l5g00000OFF2AAA1", OWNER, "false", Utc::now());
    assert_eq!(post_to(&p, s.integration_id, message).await.status, 200);
    eventually("the CRM's word kept", Duration::from_secs(10), || async {
        (crm_active(&s.env, s.integration_id, OWNER).await == Some(false)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        account(&s.env, s.integration_id, OWNER).await.unwrap().1,
        None
    );
    assert_eq!(on_leaderboard(&s.env, s.company_id).await, [user_id]);

    // A CRM user nobody's account belongs to: accepted and passed on, nothing else changes.
    const STRANGER: &str = "0055g00000ZzZzZAAZ";
    let identities = "SELECT count(*) FROM crm_identities";
    let (identities_before, users_before) = (
        count(&s.env, identities).await,
        count(&s.env, "SELECT count(*) FROM users").await,
    );
    let unknown = user_message("04l5g00000OFF3AAA1", STRANGER, "false", Utc::now());
    let answer = post_to(&p, s.integration_id, unknown).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    user_events_recorded(&p, 2.0).await;
    assert_eq!(count(&s.env, identities).await, identities_before);
    assert_eq!(
        count(&s.env, "SELECT count(*) FROM users").await,
        users_before
    );
    eventually(
        "the stranger's event passed on",
        Duration::from_secs(10),
        || async {
            crm_events(&s.env)
                .await
                .iter()
                .any(|e| e.record_id == STRANGER)
                .then_some(())
        },
    )
    .await;

    // `IsActive` that is no boolean: refused, naming the field, nothing published.
    let events_before = crm_events(&s.env).await.len();
    let malformed = user_message("04l5g00000OFF4AAA1", OWNER, "perhaps", Utc::now());
    let answer = post_to(&p, s.integration_id, malformed).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.error(), "invalid_value");
    assert!(
        answer.message().contains("IsActive"),
        "{}",
        answer.message()
    );
    assert_eq!(crm_events(&s.env).await.len(), events_before);

    // Turning the setting on applies what the CRM said, without waiting for the directory.
    sqlx::query("UPDATE integrations SET deactivate_with_crm = true WHERE id = $1")
        .bind(s.integration_id)
        .execute(&s.env.pool)
        .await
        .unwrap();
    expect_deactivated_by_the_crm(&s.env, s.company_id, s.integration_id, OWNER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_message_ingest_cannot_record_is_refused_with_503_and_its_redelivery_deactivates_once()
 {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Ina Active", "ina@example.com");
    let s = salesforce_setup("connectors-user-events-pg-away", &crm).await;
    // PostgreSQL is shared by every test: ingest reaches it through a proxy this test can cut.
    let proxy = TcpProxy::for_postgres(&s.env.database_url).await;
    let proxied = proxy.postgres_url(&s.env.database_url);
    let ingest_env = [
        ("CRM_SYNC__DATABASE__URL", proxied.as_str()),
        // The integration stays known to ingest while PostgreSQL is away.
        ("CRM_SYNC__INGEST__INTEGRATION_CACHE_MS", "600000"),
        ("CRM_SYNC__DATABASE__ACQUIRE_TIMEOUT_MS", "2000"),
    ];
    let p = start_pipeline_with(&s.env, &ingest_env, &SLOW_DIRECTORY).await;
    won_deal(
        &p,
        s.integration_id,
        "04l5g00000PGA1AAA1",
        "0065g00000PgA1AAAB",
    )
    .await;
    let user_id = account_on_a_team(&s.env, s.company_id, s.integration_id, OWNER).await;

    // PostgreSQL away for ingest: the event reaches Kafka, but its word about the user cannot
    // be kept, so Salesforce is told to deliver it again.
    let message = user_message("04l5g00000PGA2AAA1", OWNER, "false", Utc::now());
    proxy.cut();
    let answer = post_to(&p, s.integration_id, message.clone()).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.error(), "database_unavailable");
    assert_eq!(
        account(&s.env, s.integration_id, OWNER).await.unwrap().1,
        None
    );

    // Back: Salesforce's redelivery (same notification id) deactivates the user, once.
    proxy.restore();
    eventually(
        "the redelivery accepted",
        Duration::from_secs(30),
        || async {
            let answer = post_to(&p, s.integration_id, message.clone()).await;
            (answer.status == 200).then_some(())
        },
    )
    .await;
    expect_deactivated_by_the_crm(&s.env, s.company_id, s.integration_id, OWNER).await;
    assert!(
        !on_leaderboard(&s.env, s.company_id)
            .await
            .contains(&user_id)
    );
    let delivered = crm_events(&s.env)
        .await
        .into_iter()
        .filter(|e| e.object_type == "User")
        .map(|e| e.event_id)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(delivered.len(), 1, "both deliveries carry one event id");
}
