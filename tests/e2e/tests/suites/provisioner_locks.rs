//! What the provisioner tells downstream about an activity's visibility is read after an admin's
//! change of the user's standing in flight has committed: otherwise the two transactions could
//! each announce the other's old state, and whichever reached downstream last would win.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::{Tenant, TestEnv};
use crm_sync_store::admin::{teams, users as admin_users};
use crm_sync_store::provisioning::users;

#[tokio::test(flavor = "multi_thread")]
async fn visibility_is_read_once_a_placement_in_flight_commits() {
    let env = TestEnv::new("provisioner-locks").await;
    let tenant = Tenant::create(&env.pool, "provisioner-locks", true, true).await;
    let mut setup = env.pool.begin().await.unwrap();
    let user = admin_users::create_manual(&mut setup, tenant.company_id, "Ada", None)
        .await
        .unwrap();
    let team = teams::create(&mut setup, tenant.company_id, "Sales")
        .await
        .unwrap();
    setup.commit().await.unwrap();

    // An admin places the user on a team, as admin-api does: the user's row locked first.
    let mut admin = env.pool.begin().await.unwrap();
    admin_users::lock(&mut admin, tenant.company_id, user.id)
        .await
        .unwrap()
        .expect("the user exists");
    teams::add_member(&mut admin, tenant.company_id, team.id, user.id)
        .await
        .unwrap();

    let pool = env.pool.clone();
    let mut read = tokio::spawn(async move {
        let mut conn = pool.acquire().await.unwrap();
        users::on_leaderboards(&mut conn, &[user.id]).await.unwrap()
    });
    // The read waits for the placement rather than answering from before it.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut read)
            .await
            .is_err(),
        "visibility was read while a placement of the user was in flight"
    );
    admin.commit().await.unwrap();
    let visible = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the read ends once the placement commits")
        .unwrap();
    assert_eq!(visible.get(&user.id), Some(&true));
}
