//! The admin API against real PostgreSQL (and Kafka for visibility changes), with admin-api as a
//! real process: every route's authentication, authorization and tenant isolation (driven by
//! the OpenAPI document, so a new route cannot slip through), and each resource's behaviour
//! (backfills and sync status in `admin_backfills/`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod configuration;
mod leaderboards;
mod visibility;

mod admin_backfills;
mod admin_people;
mod admin_polish;
use crate::admin_support;
mod admin_trail;
mod webhook_refusals;

use std::collections::HashSet;
use std::time::Duration;

use crm_sync_e2e::app::AdminClient;

use admin_support::{
    admin_world, company, company_path, seed_activities, seed_pending_user, start_admin_api, token,
};
use crm_sync_e2e::{Tenant, TestEnv, eventually, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::ActivityChanged;
use serde_json::{Value, json};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Asserts that every activity of the user is (or is not) visible on leaderboards.
async fn assert_activities_visible(
    c: &AdminClient,
    company: Uuid,
    user: impl std::fmt::Display,
    visible: bool,
) {
    let path = company_path(company, &format!("/activities?user_id={user}"));
    let theirs = c.get(&path).await.expect(200);
    assert!(
        theirs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["visible"] == visible),
        "{theirs}"
    );
}
