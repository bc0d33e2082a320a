//! The people lifecycle (a module of the admin_api suite): renaming a user, deactivating and
//! reactivating (off and back on the leaderboard), merging the duplicate auto-sync created into
//! the account an admin made, unmapping a CRM identity (its later activities wait unmapped, also
//! with auto-sync on), and deleting an integration only with its name as confirmation. Every
//! change is read back from Kafka as its users of the platform would see it.

mod identities;
mod lifecycle;

use std::time::Duration;

use crm_sync_e2e::{Tenant, TestEnv, eventually, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::{
    ActivityChanged, ActivityState, CrmUser, UserProvisioned, UserStatus, WorkflowOutcome,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crm_sync_e2e::app::AdminClient;

use super::assert_activities_visible;
use crate::admin_support::{
    admin_world, company_path, seed_activities, seed_pending_user, start_admin_api, token,
};

const WAIT: Duration = Duration::from_secs(30);

/// The `UserProvisioned` messages published for `user_id` so far.
async fn user_changes(env: &TestEnv, user_id: &str) -> Vec<UserProvisioned> {
    read_topic(&env.topics.users)
        .await
        .iter()
        .map(|r| UserProvisioned::decode(r.payload.as_slice()).unwrap())
        .filter(|u| u.user_id == user_id)
        .collect()
}

/// The `ActivityChanged` messages published for `user_id` so far.
async fn activity_changes(env: &TestEnv, user_id: &str) -> Vec<ActivityChanged> {
    read_topic(&env.topics.activities)
        .await
        .iter()
        .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
        .filter(|a| a.user_id == user_id)
        .collect()
}

fn names(leaderboard: &Value) -> Vec<String> {
    leaderboard["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["display_name"].as_str().unwrap().to_owned())
        .collect()
}

async fn audit_actions(c: &AdminClient, company: Uuid) -> Vec<Value> {
    c.get(&company_path(company, "/audit-log?limit=200"))
        .await
        .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// Creates a team named `name` with `members` on it; its id.
async fn team_of(c: &AdminClient, company: Uuid, name: &str, members: &[Uuid]) -> String {
    let team = c
        .post(&company_path(company, "/teams"), json!({"name": name}))
        .await
        .expect(201);
    let team_id = team["id"].as_str().unwrap().to_owned();
    for user in members {
        let member = format!("/teams/{team_id}/members/{user}");
        c.put(&company_path(company, &member)).await.expect(200);
    }
    team_id
}
