use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use crm_sync_store::admin::activities::{
    self as store, ActivityRow, Filter, LeaderboardQuery, LeaderboardRow,
};
use crm_sync_store::admin::company;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{CompanyPath, ReadErrors, text};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::QueryParams;
use crate::paging::{self, Page};

/// An activity: one CRM record that satisfied one workflow.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivityView {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub workflow_id: Uuid,
    pub object_type: String,
    pub record_id: String,
    pub crm_user_id: String,
    /// None: unmapped (the CRM user is not mapped to a platform user yet).
    pub user_id: Option<Uuid>,
    pub activity_type: String,
    /// Exact decimal, as text.
    pub value: String,
    pub activity_date: DateTime<Utc>,
    /// `recorded` or `retracted`.
    pub state: String,
    /// Counts on leaderboards: recorded, and its user is on a team.
    pub visible: bool,
    pub created_at: DateTime<Utc>,
}

impl From<ActivityRow> for ActivityView {
    fn from(r: ActivityRow) -> Self {
        ActivityView {
            id: r.id,
            integration_id: r.integration_id,
            workflow_id: r.workflow_id,
            object_type: r.object_type,
            record_id: r.record_id,
            crm_user_id: r.crm_user_id,
            user_id: r.user_id,
            activity_type: r.activity_type,
            value: r.value.to_string(),
            activity_date: r.activity_date,
            state: r.state,
            visible: r.visible,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActivityStateName {
    Recorded,
    Retracted,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ActivityListQuery {
    /// `true`: only activities waiting for their CRM user to be mapped.
    pub unmapped: Option<bool>,
    pub user_id: Option<Uuid>,
    pub workflow_id: Option<Uuid>,
    pub activity_type: Option<String>,
    #[param(inline)]
    pub state: Option<ActivityStateName>,
    /// Activity date from (inclusive): a date (`2026-11-01`) or an RFC 3339 date-time.
    pub from: Option<String>,
    /// Activity date up to: a date includes that whole day; a date-time is exclusive.
    pub to: Option<String>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// `from`/`to` bounds: dates are whole days (so `to=2026-11-30` includes the 30th), returned as
/// UTC midnights with `true` for "a date" until [`period`] moves them to the company's midnight.
fn bound(field: &str, value: Option<&str>, end: bool) -> ApiResult<Option<(DateTime<Utc>, bool)>> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let parsed = crm_sync_workflow::parse_date(v).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{field}: expected a date (2026-11-01) or an RFC 3339 date-time"),
        )
    })?;
    let date_only = !v.contains('T') && !v.contains(' ');
    let at = if end && date_only {
        parsed + Duration::days(1)
    } else {
        parsed
    };
    Ok(Some((at, date_only)))
}

/// `[from, to)` of activity dates; either end may be open.
type Period = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The period asked for; dates begin and end at midnight in the company's time zone.
async fn period(
    state: &AppState,
    caller: &Caller,
    from: Option<&str>,
    to: Option<&str>,
) -> ApiResult<Period> {
    let from = bound("from", from, false)?;
    let to = bound("to", to, true)?;
    let date =
        |b: Option<(DateTime<Utc>, bool)>| b.filter(|(_, is_date)| *is_date).map(|(at, _)| at);
    let [from_date, to_date] = if date(from).is_some() || date(to).is_some() {
        company::local_midnights(&state.pool, caller.company(), [date(from), date(to)]).await?
    } else {
        [None, None]
    };
    let from = from_date.or(from.map(|(at, _)| at));
    let to = to_date.or(to.map(|(at, _)| at));
    if let (Some(f), Some(t)) = (from, to)
        && t <= f
    {
        return Err(ApiError::invalid("to", "to must be after from"));
    }
    Ok((from, to))
}

/// The company's activities, unmapped ones included (`?unmapped=true` for only those).
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/activities",
    tag = "activities",
    params(CompanyPath, ActivityListQuery),
    responses((status = 200, body = Page<ActivityView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<ActivityListQuery>,
) -> ApiResult<Json<Page<ActivityView>>> {
    let (limit, after) = paging::keyset_args(q.limit, q.cursor.as_deref())?;
    let (from, to) = period(&state, &caller, q.from.as_deref(), q.to.as_deref()).await?;
    let filter = Filter {
        unmapped: q.unmapped,
        user_id: q.user_id,
        workflow_id: q.workflow_id,
        activity_type: q.activity_type.filter(|t| !t.trim().is_empty()),
        state: q.state.map(|s| match s {
            ActivityStateName::Recorded => "recorded".into(),
            ActivityStateName::Retracted => "retracted".into(),
        }),
        from,
        to,
    };
    let rows = store::list(&state.pool, caller.company(), &filter, after, limit + 1).await?;
    Ok(Json(paging::keyset(rows, limit, ActivityView::from)))
}

/// One user's standing.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaderboardEntry {
    /// 1 for the highest total; equal totals share a rank.
    pub rank: i64,
    pub user_id: Uuid,
    pub display_name: String,
    /// Sum of the activities' values (exact decimal, as text).
    pub total: String,
    /// Number of activities.
    pub count: i64,
    /// The teams the user is on.
    pub teams: Vec<String>,
}

impl From<LeaderboardRow> for LeaderboardEntry {
    fn from(r: LeaderboardRow) -> Self {
        LeaderboardEntry {
            rank: r.rank,
            user_id: r.user_id,
            display_name: r.display_name,
            total: r.total.to_string(),
            count: r.count,
            teams: r.team_names,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeaderboardParams {
    /// The activity type to rank by, e.g. `deal_won`.
    pub activity_type: String,
    /// Activity date from (inclusive): a date (`2026-11-01`) or an RFC 3339 date-time.
    pub from: Option<String>,
    /// Activity date up to: a date includes that whole day; a date-time is exclusive.
    pub to: Option<String>,
    /// Only this team's members.
    pub team_id: Option<Uuid>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Totals and counts per user for an activity type and period, highest first. Only users on a
/// team count, as on the platform; `team_id` narrows it to one team.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/leaderboard",
    tag = "activities",
    params(CompanyPath, LeaderboardParams),
    responses((status = 200, body = Page<LeaderboardEntry>), ReadErrors)
)]
pub async fn leaderboard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<LeaderboardParams>,
) -> ApiResult<Json<Page<LeaderboardEntry>>> {
    let limit = paging::limit(q.limit)?;
    let offset = paging::offset(q.cursor.as_deref())?;
    let activity_type = text("activity_type", &q.activity_type, 200)?;
    let (from, to) = period(&state, &caller, q.from.as_deref(), q.to.as_deref()).await?;
    if let Some(team_id) = q.team_id
        && crm_sync_store::admin::teams::get(&state.pool, caller.company(), team_id)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid("team_id", "no such team in this company"));
    }
    let query = LeaderboardQuery {
        activity_type,
        from,
        to,
        team_id: q.team_id,
    };
    let rows = store::leaderboard(&state.pool, caller.company(), &query, offset, limit + 1).await?;
    Ok(Json(paging::offset_page(
        rows,
        offset,
        limit,
        LeaderboardEntry::from,
    )))
}
