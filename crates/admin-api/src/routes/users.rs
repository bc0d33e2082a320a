use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::admin::activities;
use crm_sync_store::admin::users::{
    self as store, IdentityAfter, IdentityFilter, IdentityRow, MapOutcome, UserRow,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{CompanyPath, ReadErrors, WriteErrors, commit_audited, conflict_on, text};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, JsonBody, QueryParams};
use crate::paging::{self, Page, TimeKey};
use crate::publish::Batch;

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityRef {
    pub integration_id: Uuid,
    pub crm_user_id: String,
}

/// A platform user.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    /// `pending` (not placed on a team yet), `active`, or `inactive` (deactivated: off
    /// leaderboards until reactivated).
    pub status: String,
    /// When the user was deactivated, while inactive.
    pub deactivated_at: Option<DateTime<Utc>>,
    /// Who deactivated the user, while inactive: `admin` or `crm` (the CRM said its user is
    /// inactive).
    pub deactivated_by: Option<String>,
    /// `auto_sync` (created by automatic user sync) or `manual`.
    pub source: String,
    pub teams: Vec<TeamRef>,
    /// The CRM users mapped to this user.
    pub crm_identities: Vec<IdentityRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserRow> for UserView {
    fn from(r: UserRow) -> Self {
        UserView {
            id: r.id,
            display_name: r.display_name,
            email: r.email,
            status: if r.deactivated_at.is_some() {
                "inactive".to_owned()
            } else {
                r.status
            },
            deactivated_at: r.deactivated_at,
            deactivated_by: r.deactivated_by,
            source: r.source,
            teams: r
                .team_ids
                .into_iter()
                .zip(r.team_names)
                .map(|(id, name)| TeamRef { id, name })
                .collect(),
            crm_identities: r
                .identity_integration_ids
                .into_iter()
                .zip(r.identity_crm_user_ids)
                .map(|(integration_id, crm_user_id)| IdentityRef {
                    integration_id,
                    crm_user_id,
                })
                .collect(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Pending,
    Active,
    Inactive,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserSource {
    AutoSync,
    Manual,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// `pending`, `active` or `inactive` (deactivated).
    #[param(inline)]
    pub status: Option<UserStatus>,
    /// `auto_sync` or `manual`.
    #[param(inline)]
    pub source: Option<UserSource>,
    /// `false`: only users on no team; `true`: only users on a team.
    pub on_team: Option<bool>,
    /// Only members of this team.
    pub team_id: Option<Uuid>,
    /// Part of the name or email.
    pub q: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct UserPath {
    pub company_id: Uuid,
    pub user_id: Uuid,
}

/// The company's users, e.g. `?status=pending` for the ones waiting to be placed on a team.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/users",
    tag = "users",
    params(CompanyPath, UserListQuery),
    responses((status = 200, body = Page<UserView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<UserListQuery>,
) -> ApiResult<Json<Page<UserView>>> {
    let (limit, after) = paging::keyset_args(q.limit, q.cursor.as_deref())?;
    let filter = store::Filter {
        status: q.status.map(|s| match s {
            UserStatus::Pending => "pending".into(),
            UserStatus::Active => "active".into(),
            UserStatus::Inactive => "inactive".into(),
        }),
        source: q.source.map(|s| match s {
            UserSource::AutoSync => "auto_sync".into(),
            UserSource::Manual => "manual".into(),
        }),
        on_team: q.on_team,
        team_id: q.team_id,
        search: q.q.filter(|s| !s.trim().is_empty()),
    };
    let rows = store::list(&state.pool, caller.company(), &filter, after, limit + 1).await?;
    Ok(Json(paging::keyset(rows, limit, UserView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub display_name: String,
    /// Unique within the company; auto-sync links a CRM user with the same email to this user.
    pub email: Option<String>,
}

/// Creates a user by hand (pending until placed on a team).
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/users",
    tag = "users",
    params(CompanyPath),
    request_body = NewUserBody,
    responses((status = 201, body = UserView), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<NewUserBody>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let name = text("display_name", &b.display_name, 200)?;
    let email = email(b.email.as_deref())?;
    let mut tx = state.pool.begin().await?;
    let row = store::create_manual(&mut tx, caller.company(), &name, email.as_deref())
        .await
        .map_err(conflict_on("email", "a user with this email"))?;
    commit_audited(
        tx,
        &caller,
        "user.created",
        "user",
        row.id,
        json!({"display_name": name, "email": email}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// An optional email as typed: blank is none, anything else must look like an address.
pub fn email(value: Option<&str>) -> ApiResult<Option<String>> {
    let Some(e) = value.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let looks_like_an_address = e.len() <= 320
        && !e.chars().any(char::is_control)
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
    if !looks_like_an_address {
        return Err(ApiError::invalid("email", "not an email address"));
    }
    Ok(Some(e.to_owned()))
}

/// One user.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/users/{user_id}",
    tag = "users",
    params(UserPath),
    responses((status = 200, body = UserView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<UserPath>,
) -> ApiResult<Json<UserView>> {
    store::get(&state.pool, caller.company(), p.user_id)
        .await?
        .map(|r| Json(r.into()))
        .or_not_found("user")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MapIdentityBody {
    pub integration_id: Uuid,
    /// The CRM's id of the user, e.g. a Salesforce `005…` id.
    pub crm_user_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MapIdentityResult {
    pub user: UserView,
    /// How many unmapped activities of that CRM user now belong to the user.
    pub attached_activities: usize,
}

/// Maps a CRM user to this user by hand. Its unmapped activities are attached to the user (and
/// forwarded, visible if the user is on a team).
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/users/{user_id}/crm-identities",
    tag = "users",
    params(UserPath),
    request_body = MapIdentityBody,
    responses((status = 200, body = MapIdentityResult), WriteErrors)
)]
pub async fn map_identity(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<UserPath>,
    JsonBody(b): JsonBody<MapIdentityBody>,
) -> ApiResult<Json<MapIdentityResult>> {
    let company = caller.company();
    let crm_user_id = text("crm_user_id", &b.crm_user_id, 200)?;
    let mut tx = state.pool.begin().await?;
    // Salesforce ids arrive in webhooks in their 18-character form: a typed 15-character one is
    // stored so, or it would become a second identity of the same CRM user.
    let integration = crm_sync_store::admin::integrations::get(&mut *tx, company, b.integration_id)
        .await?
        .ok_or_else(|| {
            ApiError::invalid("integration_id", "no such integration in this company")
        })?;
    let crm_user_id = if integration.crm == "salesforce" {
        crm_sync_store::salesforce_ids::to_18(&crm_user_id)
    } else {
        crm_user_id
    };
    users_lock(&mut tx, company, p.user_id).await?;
    match store::map_identity(&mut tx, company, b.integration_id, &crm_user_id, p.user_id).await? {
        MapOutcome::Mapped => {}
        MapOutcome::MappedToOther(_) => {
            return Err(ApiError::conflict(
                "crm_user_id",
                "this CRM user is already mapped to another user",
            ));
        }
        MapOutcome::UnknownIntegration => {
            return Err(ApiError::invalid(
                "integration_id",
                "no such integration in this company",
            ));
        }
    }
    let attached =
        activities::attach_unmapped(&mut tx, company, b.integration_id, &crm_user_id, p.user_id)
            .await?;
    let visible = store::counts_on_leaderboards(&mut tx, p.user_id).await?;
    let mut batch = Batch::new();
    batch
        .stage_activities(
            &mut tx,
            &state.activities_topic,
            company,
            &attached,
            visible,
            ActivityState::Recorded,
        )
        .await?;
    commit_audited(
        tx,
        &caller,
        "user.crm_identity_mapped",
        "user",
        p.user_id,
        json!({"integration_id": b.integration_id, "crm_user_id": crm_user_id,
               "attached_activities": attached.len()}),
    )
    .await?;
    batch.publish(&state).await;
    let user = store::get(&state.pool, company, p.user_id)
        .await?
        .or_not_found("user")?;
    Ok(Json(MapIdentityResult {
        user: user.into(),
        attached_activities: attached.len(),
    }))
}

pub(crate) async fn users_lock(
    tx: &mut sqlx::PgConnection,
    company: Uuid,
    user_id: Uuid,
) -> ApiResult<()> {
    store::lock(tx, company, user_id)
        .await?
        .map(|_| ())
        .or_not_found("user")
}

/// A CRM user seen by an integration.
#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityView {
    pub integration_id: Uuid,
    pub crm_user_id: String,
    /// As the CRM named the user, when known.
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// The platform user it is mapped to; none: unmapped.
    pub user_id: Option<Uuid>,
    /// Recorded activities waiting for this identity to be mapped.
    pub unmapped_activities: i64,
    pub created_at: DateTime<Utc>,
}

impl From<IdentityRow> for IdentityView {
    fn from(r: IdentityRow) -> Self {
        IdentityView {
            integration_id: r.integration_id,
            crm_user_id: r.crm_user_id,
            display_name: r.display_name,
            email: r.email,
            user_id: r.user_id,
            unmapped_activities: r.unmapped_activities,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IdentityListQuery {
    /// `false`: only identities no user is mapped to yet.
    pub mapped: Option<bool>,
    pub integration_id: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The CRM users the company's integrations have seen, e.g. `?mapped=false` for the unmapped
/// ones whose activities wait for an admin.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/crm-identities",
    tag = "users",
    params(CompanyPath, IdentityListQuery),
    responses((status = 200, body = Page<IdentityView>), ReadErrors)
)]
pub async fn list_identities(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<IdentityListQuery>,
) -> ApiResult<Json<Page<IdentityView>>> {
    let limit = paging::limit(q.limit)?;
    let after = match paging::time_key(q.cursor.as_deref())? {
        None => None,
        Some(position) => Some(identity_after(position).ok_or_else(paging::bad_cursor)?),
    };
    let filter = IdentityFilter {
        mapped: q.mapped,
        integration_id: q.integration_id,
    };
    let mut rows = store::list_identities(
        &state.pool,
        caller.company(),
        &filter,
        after.as_ref(),
        limit + 1,
    )
    .await?;
    let next_cursor = paging::time_key_page(&mut rows, limit, |r| TimeKey {
        at: r.created_at,
        key: format!("{}/{}", r.integration_id, r.crm_user_id),
    });
    Ok(Json(Page {
        items: rows.into_iter().map(IdentityView::from).collect(),
        next_cursor,
    }))
}

/// The identity a cursor names: its time, and `{integration_id}/{crm_user_id}` as its key.
fn identity_after(position: TimeKey) -> Option<IdentityAfter> {
    let (integration, crm_user_id) = position.key.split_once('/')?;
    Some(IdentityAfter {
        created_at: position.at,
        integration_id: Uuid::try_parse(integration).ok()?,
        crm_user_id: crm_user_id.to_owned(),
    })
}
