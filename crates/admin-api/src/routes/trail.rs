//! "Why didn't this deal count?": a record's trail (each event the pipeline judged, every
//! workflow's decision with the reason in words, and what followed: the activity as it stands,
//! its user, dead letters), the integration's recent events to pick a record from, and its
//! dead letters. Kept for `trail.retention_days`; readable by viewers.

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_store::trail::{self as store, ActivityRow, DeadLetterRow, EventRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::integrations::IntegrationPath;
use super::{ReadErrors, text};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, OrNotFound};
use crate::extract::{ApiPath, QueryParams};
use crate::paging::{self, TimeKey};

/// Longest record id accepted (the longest any CRM uses is far shorter).
const MAX_RECORD_ID: usize = 255;
/// Events of one record shown at most, newest first.
const RECORD_EVENTS: i64 = 200;

/// One workflow's decision on an event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecisionView {
    pub workflow_id: Uuid,
    /// The workflow's name when the event was judged.
    pub workflow: String,
    pub activity_type: String,
    /// `counted` (a new activity, or a new value, date or owner), `still_counts`, `retracted`
    /// or `not_counted`.
    #[schema(example = "not_counted")]
    pub decision: String,
    /// Why, as a code: `conditions`, `no_change`, `unknown`, `type_mismatch`,
    /// `missing_value`, `other_trigger`, `no_longer_matches`, `deleted`; for an activity a
    /// delete retracted although its workflow had changed since it counted the record,
    /// `workflow_inactive` (the workflow was inactive by then) or `workflow_moved` (it reads
    /// another object now).
    pub reason: Option<String>,
    /// The reason in words: each failing condition with the record's value and what the
    /// condition wants.
    #[schema(example = json!(["StageName is \"Negotiation/Review\"; the condition wants eq \"Closed Won\""]))]
    pub explanation: Vec<String>,
}

/// One event of a record as the pipeline judged it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrailEventView {
    pub event_id: String,
    pub object_type: String,
    pub record_id: String,
    /// `created`, `updated` or `deleted`.
    pub change_type: String,
    /// The CRM's own name for the change where it says more (e.g. `UNDELETE`).
    pub source_change_type: Option<String>,
    /// `webhook`, or `pull` (backfill, reconciliation, hydration through the CRM's API).
    pub source: String,
    /// Which CRM format it came in: `salesforce`, `hubspot`, `pipedrive`, `dynamics`, `generic`.
    pub crm: String,
    /// The CRM's own id of the delivery (or the pull job's), where there is one.
    pub delivery_id: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub judged_at: DateTime<Utc>,
    /// `matched` (some workflow counted it), `retracted`, `no_match`, or `unchanged` (nothing a
    /// workflow reads was new: a replay, an older version).
    pub summary: String,
    /// Every active workflow of the record's object and, for a delete, every workflow whose
    /// activity of the record it retracted (inactive or moved to another object since); empty
    /// when there is none (or the event was `unchanged`).
    pub decisions: Vec<DecisionView>,
}

impl From<EventRow> for TrailEventView {
    fn from(r: EventRow) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        TrailEventView {
            event_id: r.event_id,
            object_type: r.object_type,
            record_id: r.record_id,
            change_type: r.change_type,
            source_change_type: some(r.source_change_type),
            source: r.source,
            crm: r.crm,
            delivery_id: some(r.delivery_id),
            occurred_at: r.occurred_at,
            received_at: r.received_at,
            judged_at: r.judged_at,
            summary: r.summary,
            decisions: serde_json::from_value(r.decisions).unwrap_or_default(),
        }
    }
}

/// What a workflow's match on the record led to, as it stands now.
#[derive(Debug, Serialize, ToSchema)]
pub struct FollowedView {
    pub workflow_id: Uuid,
    pub workflow: String,
    pub activity_type: String,
    /// `recorded` or `retracted`.
    pub state: String,
    pub value: String,
    pub activity_date: DateTime<Utc>,
    pub crm_user_id: String,
    /// None while the CRM user is not mapped to a platform user (the activity waits).
    pub user_id: Option<Uuid>,
    pub user_name: Option<String>,
    /// `pending` (created by auto-sync, not on a team yet) or `active`.
    pub user_status: Option<String>,
    /// The outcome in words.
    pub summary: String,
    pub updated_at: DateTime<Utc>,
}

impl From<ActivityRow> for FollowedView {
    fn from(r: ActivityRow) -> Self {
        let summary = match (r.state.as_str(), &r.user_name) {
            ("retracted", _) => "activity retracted".to_owned(),
            (_, None) => format!(
                "activity recorded, waiting: CRM user {} is not mapped to a platform user",
                r.crm_user_id
            ),
            (_, Some(name)) => match (r.user_source.as_deref(), r.user_status.as_deref()) {
                (Some("auto_sync"), Some("pending")) => format!(
                    "activity recorded for {name}, created by auto-sync and pending until placed on a team"
                ),
                (_, Some("pending")) => {
                    format!("activity recorded for {name} (pending until placed on a team)")
                }
                _ => format!("activity recorded for {name}"),
            },
        };
        FollowedView {
            workflow_id: r.workflow_id,
            workflow: r.workflow_name,
            activity_type: r.activity_type,
            state: r.state,
            value: r.value.to_string(),
            activity_date: r.activity_date,
            crm_user_id: r.crm_user_id,
            user_id: r.user_id,
            user_name: r.user_name,
            user_status: r.user_status,
            summary,
            updated_at: r.updated_at,
        }
    }
}

/// A message a consumer could never process, with the reason.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterView {
    pub object_type: String,
    pub record_id: String,
    pub event_id: Option<String>,
    /// The service that dead-lettered it.
    pub service: String,
    /// Where it was read from: `topic`, `partition`, `offset` (`crm-sync dlq list` prints each
    /// letter's origin). A pulled record refused before it reached any topic is placed where
    /// its dead letter is instead (topic `<events>.dlq`, the position `crm-sync dlq inspect`
    /// takes).
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The reason as a code, e.g. `database_refused`.
    pub reason: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

impl From<DeadLetterRow> for DeadLetterView {
    fn from(r: DeadLetterRow) -> Self {
        DeadLetterView {
            object_type: r.object_type,
            record_id: r.record_id,
            event_id: r.event_id,
            service: r.service,
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            reason: r.reason,
            detail: r.detail,
            at: r.at,
        }
    }
}

/// A record's story.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrailView {
    pub integration_id: Uuid,
    pub record_id: String,
    /// Newest first (the latest 200).
    pub events: Vec<TrailEventView>,
    /// The record's activities as they stand, per workflow that ever counted it.
    pub followed: Vec<FollowedView>,
    /// The record's messages that were dead-lettered, newest first.
    pub dead_letters: Vec<DeadLetterView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RecordPath {
    pub company_id: Uuid,
    pub integration_id: Uuid,
    /// The CRM's id of the record (as the CRM shows it).
    pub record_id: String,
}

/// 404 unless the integration is the caller's company's.
async fn integration_of(state: &AppState, caller: &Caller, integration_id: Uuid) -> ApiResult<()> {
    crm_sync_store::admin::integrations::get(&state.pool, caller.company(), integration_id)
        .await?
        .or_not_found("integration")?;
    Ok(())
}

/// The record's trail: each event, every workflow's decision and why, and what followed.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/records/{record_id}/trail",
    tag = "trail",
    params(RecordPath),
    responses((status = 200, body = TrailView), ReadErrors)
)]
pub async fn record(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<RecordPath>,
) -> ApiResult<Json<TrailView>> {
    let record_id = text("record_id", &p.record_id, MAX_RECORD_ID)?;
    integration_of(&state, &caller, p.integration_id).await?;
    let company = caller.company();
    let events = store::record_events(
        &state.pool,
        company,
        p.integration_id,
        &record_id,
        RECORD_EVENTS,
    )
    .await?;
    let followed =
        store::record_activities(&state.pool, company, p.integration_id, &record_id).await?;
    let dead = store::dead_letters(
        &state.pool,
        company,
        p.integration_id,
        Some(&record_id),
        None,
        RECORD_EVENTS,
    )
    .await?;
    Ok(Json(TrailView {
        integration_id: p.integration_id,
        record_id,
        events: events.into_iter().map(Into::into).collect(),
        followed: followed.into_iter().map(Into::into).collect(),
        dead_letters: dead.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SummaryName {
    Matched,
    Retracted,
    NoMatch,
    Unchanged,
}

impl SummaryName {
    fn as_str(self) -> &'static str {
        match self {
            SummaryName::Matched => "matched",
            SummaryName::Retracted => "retracted",
            SummaryName::NoMatch => "no_match",
            SummaryName::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// Only events judged so (e.g. `no_match`: the ones that did not count).
    #[param(inline)]
    pub summary: Option<SummaryName>,
    /// How many of the latest, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`, for older events.
    pub cursor: Option<String>,
}

/// The latest events of the integration, newest first, to pick a record from.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecentView {
    pub items: Vec<TrailEventView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/trail",
    tag = "trail",
    params(IntegrationPath, RecentQuery),
    responses((status = 200, body = RecentView), ReadErrors)
)]
pub async fn recent(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
    QueryParams(q): QueryParams<RecentQuery>,
) -> ApiResult<Json<RecentView>> {
    let limit = paging::limit(q.limit)?;
    let before = paging::time_key(q.cursor.as_deref())?;
    integration_of(&state, &caller, p.integration_id).await?;
    let mut rows = store::recent_events(
        &state.pool,
        caller.company(),
        p.integration_id,
        q.summary.map(SummaryName::as_str),
        before.as_ref().map(|b| (b.at, b.key.as_str())),
        limit + 1,
    )
    .await?;
    let next_cursor = paging::time_key_page(&mut rows, limit, |r| TimeKey {
        at: r.judged_at,
        key: r.event_id.clone(),
    });
    Ok(Json(RecentView {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// How many of the latest, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`, for older dead letters.
    pub cursor: Option<String>,
}

/// The integration's dead letters, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLettersView {
    pub items: Vec<DeadLetterView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/dead-letters",
    tag = "trail",
    params(IntegrationPath, DeadLetterQuery),
    responses((status = 200, body = DeadLettersView), ReadErrors)
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
    QueryParams(q): QueryParams<DeadLetterQuery>,
) -> ApiResult<Json<DeadLettersView>> {
    let limit = paging::limit(q.limit)?;
    // A dead letter's position: its time and row id (ids a cursor names must be numbers).
    let before = match paging::time_key(q.cursor.as_deref())? {
        Some(n) => Some((
            n.at,
            n.key.parse::<i64>().map_err(|_| paging::bad_cursor())?,
        )),
        None => None,
    };
    integration_of(&state, &caller, p.integration_id).await?;
    let mut rows = store::dead_letters(
        &state.pool,
        caller.company(),
        p.integration_id,
        None,
        before,
        limit + 1,
    )
    .await?;
    let next_cursor = paging::time_key_page(&mut rows, limit, |r| TimeKey {
        at: r.at,
        key: r.id.to_string(),
    });
    Ok(Json(DeadLettersView {
        items: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}
