//! What the suites check when a CRM's own user event says a CRM user is inactive: the platform
//! account is deactivated once, off the leaderboard, announced inactive on the users topic and
//! audited as done by the CRM.

use std::time::Duration;

use crm_sync_e2e::app::App;
use crm_sync_e2e::{TestEnv, eventually};
use crm_sync_proto::v1::UserStatus;
use crm_sync_store::admin::activities::{LeaderboardQuery, leaderboard};
use uuid::Uuid;

use super::{start_pipeline_with, users_announced};

/// The account mapped to the CRM user: its id and who deactivated it, if anyone.
pub async fn account(
    env: &TestEnv,
    integration_id: Uuid,
    crm_user_id: &str,
) -> Option<(Uuid, Option<String>)> {
    sqlx::query_as(
        "SELECT u.id, u.deactivated_by FROM crm_identities ci JOIN users u ON u.id = ci.user_id
         WHERE ci.integration_id = $1 AND ci.crm_user_id = $2",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .fetch_optional(&env.pool)
    .await
    .unwrap()
}

/// What the CRM last said about the CRM user being active, as the identity keeps it.
pub async fn crm_active(env: &TestEnv, integration_id: Uuid, crm_user_id: &str) -> Option<bool> {
    sqlx::query_as::<_, (Option<bool>,)>(
        "SELECT crm_active FROM crm_identities WHERE integration_id = $1 AND crm_user_id = $2",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .fetch_optional(&env.pool)
    .await
    .unwrap()
    .and_then(|(active,)| active)
}

/// Waits for the CRM user's account, and places it on a team so that it counts on leaderboards.
pub async fn account_on_a_team(
    env: &TestEnv,
    company_id: Uuid,
    integration_id: Uuid,
    crm_user_id: &str,
) -> Uuid {
    let (user_id, _) = eventually("the CRM user's account", Duration::from_secs(30), || {
        account(env, integration_id, crm_user_id)
    })
    .await;
    let mut conn = env.pool.acquire().await.unwrap();
    let team = crm_sync_store::admin::teams::create(&mut conn, company_id, "Closers")
        .await
        .unwrap();
    crm_sync_store::admin::teams::add_member(&mut conn, company_id, team.id, user_id)
        .await
        .unwrap();
    sqlx::query("UPDATE users SET status = 'active' WHERE id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await
        .unwrap();
    user_id
}

/// Who is on the company's `deal_won` leaderboard.
pub async fn on_leaderboard(env: &TestEnv, company_id: Uuid) -> Vec<Uuid> {
    let q = LeaderboardQuery {
        activity_type: "deal_won".into(),
        from: None,
        to: None,
        team_id: None,
    };
    leaderboard(&env.pool, company_id, &q, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.user_id)
        .collect()
}

/// The `user.deactivated` audit rows of the user: (actor, details).
pub async fn deactivations_audited(
    env: &TestEnv,
    user_id: Uuid,
) -> Vec<(String, serde_json::Value)> {
    sqlx::query_as(
        "SELECT actor, details FROM audit_log WHERE action = 'user.deactivated' AND target_id = $1",
    )
    .bind(user_id.to_string())
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

/// Waits until the user is deactivated by the CRM (well within the directory's intervals), then
/// checks that it left the leaderboard, was announced inactive and audited, each once.
pub async fn expect_deactivated_by_the_crm(
    env: &TestEnv,
    company_id: Uuid,
    integration_id: Uuid,
    crm_user_id: &str,
) {
    let (user_id, _) = eventually(
        "the account deactivated by the CRM's user event",
        Duration::from_secs(15),
        || async {
            account(env, integration_id, crm_user_id)
                .await
                .filter(|(_, by)| by.as_deref() == Some("crm"))
        },
    )
    .await;
    assert!(
        !on_leaderboard(env, company_id).await.contains(&user_id),
        "a deactivated user is off the leaderboard"
    );
    let inactive = eventually(
        "the user announced inactive",
        Duration::from_secs(30),
        || async {
            let inactive: Vec<_> = users_announced(env)
                .await
                .into_iter()
                .filter(|u| {
                    u.user_id == user_id.to_string() && u.status == UserStatus::Inactive as i32
                })
                .collect();
            (!inactive.is_empty()).then_some(inactive)
        },
    )
    .await;
    assert_eq!(inactive.len(), 1, "announced once: {inactive:?}");
    assert_eq!(inactive[0].crm_user_id, crm_user_id);
    let audited = deactivations_audited(env, user_id).await;
    assert_eq!(audited.len(), 1, "audited once: {audited:?}");
    assert!(audited[0].0.contains("CRM says"), "{}", audited[0].0);
    assert_eq!(audited[0].1["crm_user_id"], crm_user_id);
    assert_eq!(audited[0].1["integration_id"], integration_id.to_string());
}

/// The pipeline with the directory's rounds an hour away, so that what happens within seconds is
/// the user event's doing.
pub async fn start_pipeline_directory_idle(env: &TestEnv) -> App<'_> {
    start_pipeline_with(
        env,
        &[],
        &[("CRM_SYNC__DIRECTORY__COMPLETION_INTERVAL_SECS", "3600")],
    )
    .await
}
