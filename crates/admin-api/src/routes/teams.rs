use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::admin::teams::{self as store, TeamRow};
use crm_sync_store::admin::{activities, users};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::integrations::ListQuery;
use super::users::UserView;
use super::{CompanyPath, ReadErrors, WriteErrors, audit, commit_audited, conflict_on, text};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, OrNotFound};
use crate::extract::{ApiPath, JsonBody, QueryParams};
use crate::paging::{self, Page};
use crate::publish::Batch;

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamView {
    pub id: Uuid,
    pub name: String,
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
}

impl From<TeamRow> for TeamView {
    fn from(r: TeamRow) -> Self {
        TeamView {
            id: r.id,
            name: r.name,
            member_count: r.member_count,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TeamPath {
    pub company_id: Uuid,
    pub team_id: Uuid,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    pub company_id: Uuid,
    pub team_id: Uuid,
    pub user_id: Uuid,
}

/// The company's teams.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/teams",
    tag = "teams",
    params(CompanyPath, ListQuery),
    responses((status = 200, body = Page<TeamView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page<TeamView>>> {
    let (limit, after) = paging::keyset_args(q.limit, q.cursor.as_deref())?;
    let rows = store::list(&state.pool, caller.company(), after, limit + 1).await?;
    Ok(Json(paging::keyset(rows, limit, TeamView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    /// Unique within the company.
    pub name: String,
}

/// Creates a team.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/teams",
    tag = "teams",
    params(CompanyPath),
    request_body = TeamBody,
    responses((status = 201, body = TeamView), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<TeamBody>,
) -> ApiResult<(StatusCode, Json<TeamView>)> {
    let name = text("name", &b.name, 200)?;
    let mut tx = state.pool.begin().await?;
    let row = store::create(&mut tx, caller.company(), &name)
        .await
        .map_err(conflict_on("name", "a team with this name"))?;
    commit_audited(
        tx,
        &caller,
        "team.created",
        "team",
        row.id,
        json!({"name": name}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// One team.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/teams/{team_id}",
    tag = "teams",
    params(TeamPath),
    responses((status = 200, body = TeamView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<TeamPath>,
) -> ApiResult<Json<TeamView>> {
    store::get(&state.pool, caller.company(), p.team_id)
        .await?
        .map(|r| Json(r.into()))
        .or_not_found("team")
}

/// Renames a team.
#[utoipa::path(
    patch,
    path = "/admin/v1/companies/{company_id}/teams/{team_id}",
    tag = "teams",
    params(TeamPath),
    request_body = TeamBody,
    responses((status = 200, body = TeamView), WriteErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<TeamPath>,
    JsonBody(b): JsonBody<TeamBody>,
) -> ApiResult<Json<TeamView>> {
    let name = text("name", &b.name, 200)?;
    let mut tx = state.pool.begin().await?;
    let row = store::rename(&mut tx, caller.company(), p.team_id, &name)
        .await
        .map_err(conflict_on("name", "a team with this name"))?
        .or_not_found("team")?;
    commit_audited(
        tx,
        &caller,
        "team.renamed",
        "team",
        row.id,
        json!({"name": name}),
    )
    .await?;
    Ok(Json(row.into()))
}

/// Hides the activities of users who are on no team any more, inside the transaction.
async fn hide_if_teamless(
    conn: &mut PgConnection,
    state: &AppState,
    company_id: Uuid,
    user_id: Uuid,
    batch: &mut Batch,
) -> Result<usize, sqlx::Error> {
    if users::counts_on_leaderboards(conn, user_id).await? {
        return Ok(0);
    }
    let recorded = activities::recorded_of_user(conn, user_id).await?;
    batch
        .stage_activities(
            conn,
            &state.activities_topic,
            company_id,
            &recorded,
            false,
            ActivityState::Recorded,
        )
        .await?;
    Ok(recorded.len())
}

/// Deletes a team. Members left on no team have their activities hidden again.
#[utoipa::path(
    delete,
    path = "/admin/v1/companies/{company_id}/teams/{team_id}",
    tag = "teams",
    params(TeamPath),
    responses((status = 204, description = "Deleted"), WriteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<TeamPath>,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let team = store::get(&mut *tx, caller.company(), p.team_id)
        .await?
        .or_not_found("team")?;
    let members = store::lock_members(&mut tx, caller.company(), p.team_id).await?;
    store::delete(&mut tx, caller.company(), p.team_id).await?;
    let mut batch = Batch::new();
    let mut hidden = 0;
    for user_id in &members {
        hidden += hide_if_teamless(&mut tx, &state, caller.company(), *user_id, &mut batch).await?;
    }
    commit_audited(
        tx,
        &caller,
        "team.deleted",
        "team",
        p.team_id,
        json!({"name": team.name, "members": members, "hidden_activities": hidden}),
    )
    .await?;
    batch.publish(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn user_view(state: &AppState, company_id: Uuid, user_id: Uuid) -> ApiResult<Json<UserView>> {
    users::get(&state.pool, company_id, user_id)
        .await?
        .map(|u| Json(u.into()))
        .or_not_found("user")
}

/// Places a user on a team. A pending user becomes active, and if the user was on no team, the
/// activities recorded so far become visible (forwarded as `ActivityChanged`, `visible: true`).
#[utoipa::path(
    put,
    path = "/admin/v1/companies/{company_id}/teams/{team_id}/members/{user_id}",
    tag = "teams",
    params(MemberPath),
    responses((status = 200, description = "The user, now on the team", body = UserView), WriteErrors)
)]
pub async fn place_member(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<MemberPath>,
) -> ApiResult<Json<UserView>> {
    let company = caller.company();
    let mut tx = state.pool.begin().await?;
    store::get(&mut *tx, company, p.team_id)
        .await?
        .or_not_found("team")?;
    let status = users::lock(&mut tx, company, p.user_id)
        .await?
        .or_not_found("user")?;
    let was_visible = users::counts_on_leaderboards(&mut tx, p.user_id).await?;
    let added = store::add_member(&mut tx, company, p.team_id, p.user_id).await?;
    let mut batch = Batch::new();
    let mut shown = 0;
    if added {
        if status == "pending" {
            users::activate(&mut tx, p.user_id).await?;
            // Downstream learns the account is active, as with every change of its status.
            let user = users::get(&mut *tx, company, p.user_id)
                .await?
                .or_not_found("user")?;
            super::people::announce(&mut tx, &state, &mut batch, &user, &[]).await?;
        }
        // A deactivated user stays hidden on a team.
        if !was_visible && users::counts_on_leaderboards(&mut tx, p.user_id).await? {
            let recorded = activities::recorded_of_user(&mut tx, p.user_id).await?;
            batch
                .stage_activities(
                    &mut tx,
                    &state.activities_topic,
                    company,
                    &recorded,
                    true,
                    ActivityState::Recorded,
                )
                .await?;
            shown = recorded.len();
        }
        audit(
            &mut tx,
            &caller,
            "team.member_placed",
            "user",
            p.user_id,
            json!({"team_id": p.team_id, "activated": status == "pending", "shown_activities": shown}),
        )
        .await?;
    }
    tx.commit().await?;
    batch.publish(&state).await;
    user_view(&state, company, p.user_id).await
}

/// Removes a user from a team. On no team any more, the user's activities are hidden again
/// (forwarded as `ActivityChanged`, `visible: false`).
#[utoipa::path(
    delete,
    path = "/admin/v1/companies/{company_id}/teams/{team_id}/members/{user_id}",
    tag = "teams",
    params(MemberPath),
    responses((status = 200, description = "The user, off the team", body = UserView), WriteErrors)
)]
pub async fn remove_member(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<MemberPath>,
) -> ApiResult<Json<UserView>> {
    let company = caller.company();
    let mut tx = state.pool.begin().await?;
    store::get(&mut *tx, company, p.team_id)
        .await?
        .or_not_found("team")?;
    users::lock(&mut tx, company, p.user_id)
        .await?
        .or_not_found("user")?;
    let removed = store::remove_member(&mut tx, company, p.team_id, p.user_id).await?;
    let mut batch = Batch::new();
    if removed {
        let hidden = hide_if_teamless(&mut tx, &state, company, p.user_id, &mut batch).await?;
        audit(
            &mut tx,
            &caller,
            "team.member_removed",
            "user",
            p.user_id,
            json!({"team_id": p.team_id, "hidden_activities": hidden}),
        )
        .await?;
    }
    tx.commit().await?;
    batch.publish(&state).await;
    user_view(&state, company, p.user_id).await
}
