//! Linking by email is only as trustworthy as the email: one that only a webhook payload
//! claims (the generic endpoint, a CRM owner field) must not attach a CRM user's activities to
//! another person's account, nor be given to two accounts, even when both CRM users are new in
//! the same batch. (An email from the CRM's user directory links: see
//! `admin_pipeline.rs`, `turning_auto_sync_on_provisions_each_waiting_identity_once_across_replicas`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::{Tenant, TestEnv, events, eventually};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::CrmUser;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_payload_email_equal_to_an_existing_users_creates_a_separate_pending_user() {
    let env = TestEnv::new("email-linking").await;
    let tenant = Tenant::create(&env.pool, "acme", true, true).await;
    let victim = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO users (id, company_id, display_name, email, status, source)
         VALUES ($1, $2, 'Victoria Admin', 'victoria@acme.example', 'active', 'manual')",
    )
    .bind(victim)
    .bind(tenant.company_id)
    .execute(&env.pool)
    .await
    .unwrap();
    let _evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;

    // A CRM user whose webhook payload claims Victoria's address (in another case).
    let owner = CrmUser {
        crm_user_id: "005MALLORY0000001".into(),
        name: "Mallory".into(),
        email: "Victoria@Acme.example".into(),
    };
    events::send(&env, &events::won_deal(&tenant, "006EMAIL000000001", owner)).await;

    let mapped: Uuid = eventually("the CRM user gets an account", WAIT, || async {
        sqlx::query_scalar::<_, Option<Uuid>>(
            "SELECT user_id FROM crm_identities WHERE integration_id = $1 AND crm_user_id = $2",
        )
        .bind(tenant.integration_id)
        .bind("005MALLORY0000001")
        .fetch_optional(&env.pool)
        .await
        .unwrap()
        .flatten()
    })
    .await;
    assert_ne!(
        mapped, victim,
        "a payload email must not link to Victoria's account"
    );
    let (name, email, status, source): (String, Option<String>, String, String) =
        sqlx::query_as("SELECT display_name, email, status, source FROM users WHERE id = $1")
            .bind(mapped)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(
        (name.as_str(), email, status.as_str(), source.as_str()),
        ("Mallory", None, "pending", "auto_sync"),
        "a separate pending account, without the address another account has"
    );
    let activity_user: Option<Uuid> = sqlx::query_scalar(
        "SELECT user_id FROM activities WHERE integration_id = $1 AND record_id = $2",
    )
    .bind(tenant.integration_id)
    .bind("006EMAIL000000001")
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        activity_user,
        Some(mapped),
        "the activity is Mallory's, not Victoria's"
    );
}

/// Three new CRM users in one batch (one partition's backlog), two of whose payloads claim one
/// address in different case: each gets an account, the address goes to exactly one of the two,
/// and every activity is its owner's.
#[tokio::test]
async fn new_crm_users_claiming_one_payload_email_in_one_batch_get_it_once() {
    let env = TestEnv::new("email-one-batch").await;
    let tenant = Tenant::create(&env.pool, "acme", true, true).await;
    let owners = [
        ("005B", "Bea", "Shared@Acme.example"),
        ("005A", "Ann", "shared@acme.example"),
        ("005C", "Cid", "cid@acme.example"),
    ];
    let records: Vec<(Option<i32>, String, Vec<u8>)> = owners
        .iter()
        .map(|(id, name, email)| {
            let owner = CrmUser {
                crm_user_id: (*id).into(),
                name: (*name).into(),
                email: (*email).into(),
            };
            let outcome = events::matched_outcome(&tenant, &format!("006{id}"), owner);
            (Some(0), format!("006{id}"), outcome.encode_to_vec())
        })
        .collect();
    events::backlog_on_matches(&env, &records).await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;

    let accounts: Vec<(String, String, Option<String>)> =
        eventually("three CRM users with accounts", WAIT, || async {
            let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT ci.crm_user_id, u.display_name, u.email
                 FROM crm_identities ci JOIN users u ON u.id = ci.user_id
                 WHERE ci.integration_id = $1 ORDER BY ci.crm_user_id",
            )
            .bind(tenant.integration_id)
            .fetch_all(&env.pool)
            .await
            .unwrap();
            (rows.len() == 3).then_some(rows)
        })
        .await;
    // Which of Ann and Bea gets the address depends on whether the provisioner's first fetch
    // brought both: within one batch it is the first in CRM id order, across batches the first
    // to arrive. Either way exactly one of them holds it, and no account holds it twice.
    let shared: Vec<&str> = accounts
        .iter()
        .filter(|(_, _, email)| {
            email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case("shared@acme.example"))
        })
        .map(|(id, _, _)| id.as_str())
        .collect();
    assert_eq!(
        shared.len(),
        1,
        "the shared address is given once: {accounts:?}"
    );
    let names: Vec<(&str, &str)> = accounts
        .iter()
        .map(|(id, name, _)| (id.as_str(), name.as_str()))
        .collect();
    assert_eq!(
        names,
        [("005A", "Ann"), ("005B", "Bea"), ("005C", "Cid")],
        "one account per CRM user"
    );
    let cid = accounts.iter().find(|(id, _, _)| id == "005C");
    assert_eq!(
        cid.and_then(|(_, _, email)| email.as_deref()),
        Some("cid@acme.example"),
        "an unclaimed address goes to its owner"
    );
    let strays: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM activities a JOIN crm_identities ci
           ON ci.integration_id = a.integration_id AND ci.crm_user_id = a.crm_user_id
         WHERE a.integration_id = $1 AND a.user_id IS DISTINCT FROM ci.user_id",
    )
    .bind(tenant.integration_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(strays, 0, "every activity belongs to its owner's account");
}
