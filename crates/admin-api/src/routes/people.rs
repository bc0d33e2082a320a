//! The people lifecycle: rename a user, deactivate and reactivate, unmap a CRM identity, merge a
//! duplicate account into the one kept. Every change is audited and announced on the users topic
//! (the user as it now is); changes of what counts on leaderboards are announced on the
//! activities topic, both through the outbox, after commit.

use axum::extract::State;
use axum::{Extension, Json};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::admin::activities;
use crm_sync_store::admin::people::{self as store, DeactivatedBy, Rename};
use crm_sync_store::admin::users::{self, UserRow};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::users::{UserPath, UserView, email, users_lock};
use super::{WriteErrors, audit, conflict_on, double_option, text};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, JsonBody};
use crate::publish::Batch;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameBody {
    pub display_name: Option<String>,
    /// `null` clears the email. Unique within the company.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
}

/// Renames a user and/or sets their email (announced on the users topic).
#[utoipa::path(
    patch,
    path = "/admin/v1/companies/{company_id}/users/{user_id}",
    tag = "users",
    params(UserPath),
    request_body = RenameBody,
    responses((status = 200, body = UserView), WriteErrors)
)]
pub async fn rename(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<UserPath>,
    JsonBody(b): JsonBody<RenameBody>,
) -> ApiResult<Json<UserView>> {
    let change = Rename {
        display_name: match &b.display_name {
            Some(name) => Some(text("display_name", name, 200)?),
            None => None,
        },
        email: match &b.email {
            Some(value) => Some(email(value.as_deref())?),
            None => None,
        },
    };
    if change.display_name.is_none() && change.email.is_none() {
        return Err(ApiError::invalid(
            "display_name",
            "give display_name or email (or both)",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let before = locked_user(&mut tx, caller.company(), p.user_id).await?;
    store::rename(&mut tx, caller.company(), p.user_id, &change)
        .await
        .map_err(conflict_on("email", "a user with this email"))?;
    let mut batch = Batch::new();
    let after = announce(&mut tx, &state, &mut batch, &before, &[]).await?;
    // Before → after of what changed, as the audit log shows every change.
    let mut details = serde_json::Map::new();
    if before.display_name != after.display_name {
        details.insert(
            "display_name".into(),
            json!({"from": before.display_name, "to": after.display_name}),
        );
    }
    if before.email != after.email {
        details.insert(
            "email".into(),
            json!({"from": before.email, "to": after.email}),
        );
    }
    let details = details.into();
    finish(tx, &state, &caller, batch, "user.renamed", &after, details).await
}

/// Deactivates a user: off leaderboards, activities hidden (announced as `ActivityChanged`
/// with `visible: false`), the user announced as inactive. Teams and identities are kept, and
/// the user's CRM activities are still recorded.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/users/{user_id}/deactivate",
    tag = "users",
    params(UserPath),
    responses((status = 200, body = UserView), WriteErrors)
)]
pub async fn deactivate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<UserPath>,
) -> ApiResult<Json<UserView>> {
    switch_active(state, caller, p.user_id, false).await
}

/// Reactivates a deactivated user: back on leaderboards if on a team.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/users/{user_id}/reactivate",
    tag = "users",
    params(UserPath),
    responses((status = 200, body = UserView), WriteErrors)
)]
pub async fn reactivate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<UserPath>,
) -> ApiResult<Json<UserView>> {
    switch_active(state, caller, p.user_id, true).await
}

/// Deactivates or reactivates a user on an admin's word; the audit entry says how many
/// activities were hidden or shown again.
async fn switch_active(
    state: AppState,
    caller: Caller,
    user_id: Uuid,
    active: bool,
) -> ApiResult<Json<UserView>> {
    let mut tx = state.pool.begin().await?;
    let before = locked_user(&mut tx, caller.company(), user_id).await?;
    let mut batch = Batch::new();
    let changed = set_active(
        &mut tx,
        &state,
        &mut batch,
        &before,
        active,
        DeactivatedBy::Admin,
    )
    .await?;
    let after = users::get(&mut *tx, caller.company(), user_id)
        .await?
        .or_not_found("user")?;
    let (action, count_key) = if active {
        ("user.reactivated", "shown_activities")
    } else {
        ("user.deactivated", "hidden_activities")
    };
    let details = json!({count_key: changed, "was_inactive": before.deactivated_at.is_some()});
    finish(tx, &state, &caller, batch, action, &after, details).await
}

/// Deactivates (`active: false`) or reactivates the locked user and stages what changes
/// downstream: the user, and the visibility of its activities when that flips. Returns how many
/// activities changed visibility. Nothing is staged when the user already was so.
pub async fn set_active(
    conn: &mut PgConnection,
    state: &AppState,
    batch: &mut Batch,
    user: &UserRow,
    active: bool,
    by: DeactivatedBy,
) -> Result<usize, sqlx::Error> {
    let visible_before = users::counts_on_leaderboards(conn, user.id).await?;
    let changed = if active {
        store::reactivate(conn, user.id).await?
    } else {
        store::deactivate(conn, user.id, by).await?
    };
    if !changed {
        return Ok(0);
    }
    let visible_after = users::counts_on_leaderboards(conn, user.id).await?;
    let mut flipped = 0;
    if visible_before != visible_after {
        let recorded = activities::recorded_of_user(conn, user.id).await?;
        batch
            .stage_activities(
                conn,
                &state.activities_topic,
                user.company_id,
                &recorded,
                visible_after,
                ActivityState::Recorded,
            )
            .await?;
        flipped = recorded.len();
    }
    announce(conn, state, batch, user, &[]).await?;
    Ok(flipped)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdentityPath {
    pub company_id: Uuid,
    pub user_id: Uuid,
    pub integration_id: Uuid,
    /// The CRM's id of the user, as the user's `crm_identities` list shows it.
    pub crm_user_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnmapResult {
    pub user: UserView,
    /// How many of the user's activities went back to waiting unmapped.
    pub detached_activities: usize,
}

/// Unmaps a CRM identity from the user. Its activities go back to waiting unmapped (announced
/// hidden for the user), and so do its later ones, also with auto-sync on, until an admin maps
/// the identity again.
#[utoipa::path(
    delete,
    path = "/admin/v1/companies/{company_id}/users/{user_id}/crm-identities/{integration_id}/{crm_user_id}",
    tag = "users",
    params(IdentityPath),
    responses((status = 200, body = UnmapResult), WriteErrors)
)]
pub async fn unmap(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IdentityPath>,
) -> ApiResult<Json<UnmapResult>> {
    let company = caller.company();
    let mut tx = state.pool.begin().await?;
    let before = locked_user(&mut tx, company, p.user_id).await?;
    let detached = store::unmap(
        &mut tx,
        company,
        p.user_id,
        p.integration_id,
        &p.crm_user_id,
    )
    .await?
    .or_not_found("CRM identity of this user")?;
    let mut batch = Batch::new();
    batch
        .stage_activities(
            &mut tx,
            &state.activities_topic,
            company,
            &detached,
            false,
            ActivityState::Recorded,
        )
        .await?;
    let after = announce(&mut tx, &state, &mut batch, &before, &[]).await?;
    let details = json!({"integration_id": p.integration_id, "crm_user_id": p.crm_user_id,
                         "detached_activities": detached.len()});
    let n = detached.len();
    let Json(user) = finish(
        tx,
        &state,
        &caller,
        batch,
        "user.crm_identity_unmapped",
        &after,
        details,
    )
    .await?;
    Ok(Json(UnmapResult {
        user,
        detached_activities: n,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The duplicate account to merge into this user and remove (e.g. the one auto-sync
    /// created beside the account an admin made by hand).
    pub duplicate_user_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MergeResult {
    /// The kept user, with the duplicate's CRM identities.
    pub user: UserView,
    pub moved_identities: usize,
    pub moved_activities: u64,
}

/// Merges a duplicate account into this user: its CRM identities, activities and team places
/// move here (and its email when this user has none), the duplicate is removed, and one
/// `UserProvisioned` naming it in `merged_user_ids` is published.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/users/{user_id}/merge",
    tag = "users",
    params(UserPath),
    request_body = MergeBody,
    responses((status = 200, body = MergeResult), WriteErrors)
)]
pub async fn merge(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<UserPath>,
    JsonBody(b): JsonBody<MergeBody>,
) -> ApiResult<Json<MergeResult>> {
    let company = caller.company();
    let dup = b.duplicate_user_id;
    if dup == p.user_id {
        return Err(ApiError::invalid(
            "duplicate_user_id",
            "a user cannot be merged into itself",
        ));
    }
    let mut tx = state.pool.begin().await?;
    // Both rows locked in one order, so two opposite merges cannot deadlock.
    let (kept, duplicate) = lock_pair(&mut tx, company, p.user_id, dup).await?;
    let kept_was_visible = users::counts_on_leaderboards(&mut tx, p.user_id).await?;
    let mut moving = activities::recorded_of_user(&mut tx, dup).await?;
    let merged = store::merge(&mut tx, company, p.user_id, dup).await?;
    let visible = users::counts_on_leaderboards(&mut tx, p.user_id).await?;
    if visible && !kept_was_visible {
        // The kept user joined the duplicate's teams only now: its own activities come into
        // view as well as the moved ones.
        moving = activities::recorded_of_user(&mut tx, p.user_id).await?;
    } else {
        for a in &mut moving {
            a.user_id = Some(p.user_id);
        }
    }
    let mut batch = Batch::new();
    batch
        .stage_activities(
            &mut tx,
            &state.activities_topic,
            company,
            &moving,
            visible,
            ActivityState::Recorded,
        )
        .await?;
    let after = announce(&mut tx, &state, &mut batch, &kept, &[dup]).await?;
    let details = json!({
        "duplicate": duplicate.display_name,
        "duplicate_user_id": dup,
        "duplicate_email": duplicate.email,
        "moved_identities": merged.identities.iter()
            .map(|(i, c)| json!({"integration_id": i, "crm_user_id": c})).collect::<Vec<_>>(),
        "moved_activities": merged.activities,
        "teams_joined": merged.teams_joined,
    });
    let Json(user) = finish(tx, &state, &caller, batch, "user.merged", &after, details).await?;
    Ok(Json(MergeResult {
        user,
        moved_identities: merged.identities.len(),
        moved_activities: merged.activities,
    }))
}

async fn lock_pair(
    conn: &mut PgConnection,
    company: Uuid,
    kept: Uuid,
    duplicate: Uuid,
) -> ApiResult<(UserRow, UserRow)> {
    let (first, second) = if kept < duplicate {
        (kept, duplicate)
    } else {
        (duplicate, kept)
    };
    for id in [first, second] {
        let found = users::lock(conn, company, id).await?;
        if found.is_none() && id == duplicate {
            return Err(ApiError::invalid(
                "duplicate_user_id",
                "no such user in this company",
            ));
        }
        found.or_not_found("user")?;
    }
    let kept = users::get(&mut *conn, company, kept)
        .await?
        .or_not_found("user")?;
    let duplicate = users::get(&mut *conn, company, duplicate)
        .await?
        .or_not_found("user")?;
    Ok((kept, duplicate))
}

/// Locks the user for the change and reads it as it was.
async fn locked_user(conn: &mut PgConnection, company: Uuid, id: Uuid) -> ApiResult<UserRow> {
    users_lock(conn, company, id).await?;
    users::get(&mut *conn, company, id)
        .await?
        .or_not_found("user")
}

/// Stages the user as it now is on the users topic and returns it.
pub(super) async fn announce(
    conn: &mut PgConnection,
    state: &AppState,
    batch: &mut Batch,
    user: &UserRow,
    merged: &[Uuid],
) -> Result<UserRow, sqlx::Error> {
    let now = users::get(&mut *conn, user.company_id, user.id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    batch
        .stage_user(conn, &state.users_topic, &now, merged)
        .await?;
    Ok(now)
}

/// Audits and commits the change, publishes what it staged, and answers the user.
async fn finish(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    state: &AppState,
    caller: &Caller,
    batch: Batch,
    action: &str,
    user: &UserRow,
    details: serde_json::Value,
) -> ApiResult<Json<UserView>> {
    audit(&mut tx, caller, action, "user", user.id, details).await?;
    tx.commit().await?;
    batch.publish(state).await;
    Ok(Json(user.clone().into()))
}
