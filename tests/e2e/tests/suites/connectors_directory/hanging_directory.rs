//! A CRM whose user directory hangs, in a batch that also carries another tenant's new owners:
//! the batch waits for the lookups `directory.inline_deadline_ms` at most, not a lookup's
//! timeout per new owner; the healthy tenant's accounts get their directory names at once, and
//! the hanging CRM's users are created with what is known, marked `pending` and completed by
//! the background once their CRM answers, each account exactly once.

use std::time::{Duration, Instant};

use crm_sync_e2e::app::owns_partitions;
use crm_sync_e2e::events::{backlog_on_matches, matched_outcome};
use crm_sync_e2e::{Tenant, TestEnv, eventually, metric};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::CrmUser;
use uuid::Uuid;

use super::{TOKEN, salesforce_api, workflow};
use crate::connectors::{self, FakeCrm, add_integration, users_announced};

/// New owners of the hanging CRM in the batch: looked up one after another, they would hold it
/// `SLOW_OWNERS` × (2 attempts × `TIMEOUT_MS`), over half a minute.
const SLOW_OWNERS: usize = 8;
const HEALTHY_OWNERS: usize = 3;
const TIMEOUT_MS: &str = "2000";
const DEADLINE_MS: &str = "1500";
/// Well below `SLOW_OWNERS` × `TIMEOUT_MS` (16 s), with room for the batch arriving as two and
/// for a busy machine.
const BOUND: Duration = Duration::from_secs(7);

/// A company with one auto-syncing Salesforce integration whose API is `crm`.
async fn tenant(env: &TestEnv, slug: &str, org: &str, crm: &FakeCrm) -> Tenant {
    let company_id =
        crm_sync_store::tenants::upsert_company(&env.pool, None, slug, &format!("{slug} Inc"))
            .await
            .unwrap();
    let api = salesforce_api(&crm.base_url);
    let integration_id =
        add_integration(env, company_id, slug, "salesforce", org, api, Some(TOKEN)).await;
    let workflow_id = crm_sync_e2e::upsert_workflow(
        &env.pool,
        company_id,
        integration_id,
        None,
        workflow(),
        true,
    )
    .await;
    Tenant {
        company_id,
        integration_id,
        workflow_id,
        organization_id: org.to_owned(),
        token: TOKEN.to_owned(),
    }
}

/// A Salesforce user id (18 characters) and the id of a record they won.
fn owner_and_record(tag: &str, n: usize) -> (String, String) {
    (
        format!("0055g00000{tag}{n:03}AA"),
        format!("0065g00000{tag}{n:03}AA"),
    )
}

/// The account of a CRM user, with the state of their directory lookup.
async fn account(env: &TestEnv, tenant: &Tenant, crm_user_id: &str) -> Option<Account> {
    sqlx::query_as(
        "SELECT u.id, u.display_name, u.email, ci.directory_state FROM crm_identities ci
         JOIN users u ON u.id = ci.user_id
         WHERE ci.integration_id = $1 AND ci.crm_user_id = $2",
    )
    .bind(tenant.integration_id)
    .bind(crm_user_id)
    .fetch_optional(&env.pool)
    .await
    .unwrap()
}

#[derive(Debug, sqlx::FromRow)]
struct Account {
    id: Uuid,
    display_name: String,
    email: Option<String>,
    directory_state: Option<String>,
}

async fn recorded_activities(env: &TestEnv) -> i64 {
    connectors::count(
        env,
        "SELECT count(*) FROM activities WHERE state = 'recorded'",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_directory_holds_a_batch_only_until_the_deadline_and_is_completed_later() {
    let env = TestEnv::new("connectors-directory-hanging").await;
    let hanging_crm = FakeCrm::start().await;
    let healthy_crm = FakeCrm::start().await;
    let hanging = tenant(&env, "hanging-crm", "00D5g000004HNGAAAA", &hanging_crm).await;
    let healthy = tenant(&env, "healthy-crm", "00D5g000004OKYAAAA", &healthy_crm).await;
    let slow: Vec<(String, String)> = (0..SLOW_OWNERS)
        .map(|n| owner_and_record("HNG", n))
        .collect();
    let fine: Vec<(String, String)> = (0..HEALTHY_OWNERS)
        .map(|n| owner_and_record("OKY", n))
        .collect();
    for (n, (owner, _)) in slow.iter().enumerate() {
        hanging_crm.add_user(owner, &format!("Slow {n}"), &format!("slow{n}@example.com"));
    }
    for (n, (owner, _)) in fine.iter().enumerate() {
        healthy_crm.add_user(owner, &format!("Fine {n}"), &format!("fine{n}@example.com"));
    }
    hanging_crm.hang_lookups(true);

    let mut vars = connectors::SERVICE_ENV.to_vec();
    vars.extend([
        ("CRM_SYNC__DIRECTORY__TIMEOUT_MS", TIMEOUT_MS),
        ("CRM_SYNC__DIRECTORY__INLINE_DEADLINE_MS", DEADLINE_MS),
    ]);
    let provisioner = env.start_service("provisioner", "provisioner", &vars).await;
    owns_partitions(&provisioner).await;

    // One partition, the hanging CRM's owners first: one batch (or two) carries them all.
    let owner = |id: &str| CrmUser {
        crm_user_id: id.to_owned(),
        ..CrmUser::default()
    };
    let backlog: Vec<(Option<i32>, String, Vec<u8>)> = slow
        .iter()
        .map(|o| (&hanging, o))
        .chain(fine.iter().map(|o| (&healthy, o)))
        .map(|(tenant, (crm_user_id, record))| {
            let outcome = matched_outcome(tenant, record, owner(crm_user_id));
            let key = format!("{}/Opportunity/{record}", tenant.integration_id);
            (Some(0), key, outcome.encode_to_vec())
        })
        .collect();
    let began = Instant::now();
    backlog_on_matches(&env, &backlog).await;
    let total = (SLOW_OWNERS + HEALTHY_OWNERS) as i64;
    eventually("every outcome applied", Duration::from_secs(60), || async {
        (recorded_activities(&env).await == total).then_some(())
    })
    .await;
    let took = began.elapsed();
    assert!(
        took < BOUND,
        "the batch took {took:?}: the hanging CRM held it past the deadline"
    );

    // The healthy CRM answered in time: its users' accounts were created with their names.
    for (n, (crm_user_id, _)) in fine.iter().enumerate() {
        let account = account(&env, &healthy, crm_user_id).await.unwrap();
        assert_eq!(account.display_name, format!("Fine {n}"));
        assert_eq!(account.email, Some(format!("fine{n}@example.com")));
        assert_eq!(account.directory_state.as_deref(), Some("complete"));
    }
    // The hanging CRM's users were created with what is known and wait for the background.
    let mut created = Vec::new();
    for (crm_user_id, _) in &slow {
        let account = account(&env, &hanging, crm_user_id).await.unwrap();
        assert_eq!(&account.display_name, crm_user_id);
        assert_eq!(account.email, None);
        assert_eq!(account.directory_state.as_deref(), Some("pending"));
        created.push(account.id);
    }
    let log = std::fs::read_to_string(&provisioner.log_file).unwrap();
    let hanging_id = hanging.integration_id.to_string();
    assert!(
        log.lines().any(
            |line| line.contains("did not answer within directory.inline_deadline_ms")
                && line.contains(&hanging_id)
        ),
        "the cut lookups are logged with their integration: {}",
        provisioner.log_tail()
    );
    assert!(metric(&provisioner, "crm_sync_directory_deferred_total", &[]).await >= 1.0);

    // The CRM answers again: the background completes every account, the same ones.
    hanging_crm.hang_lookups(false);
    for (n, ((crm_user_id, _), id)) in slow.iter().zip(&created).enumerate() {
        let completed = eventually("the account completed", Duration::from_secs(60), || async {
            account(&env, &hanging, crm_user_id)
                .await
                .filter(|a| a.directory_state.as_deref() == Some("complete") && a.email.is_some())
        })
        .await;
        assert_eq!(completed.id, *id);
        assert_eq!(completed.display_name, format!("Slow {n}"));
        assert_eq!(completed.email, Some(format!("slow{n}@example.com")));
    }
    let users = connectors::count(&env, "SELECT count(*) FROM users").await;
    assert_eq!(users, total, "one account per CRM user");
    // Each slow user is announced when created and when completed, each healthy one once.
    let expected = 2 * SLOW_OWNERS + HEALTHY_OWNERS;
    let announced = eventually("the announcements", Duration::from_secs(30), || async {
        let users = users_announced(&env).await;
        (users.len() >= expected).then_some(users)
    })
    .await;
    assert_eq!(announced.len(), expected);
    let named = |u: &&crm_sync_proto::v1::UserProvisioned| u.display_name != u.crm_user_id;
    assert_eq!(
        announced.iter().filter(named).count(),
        SLOW_OWNERS + HEALTHY_OWNERS
    );
}
