//! Dry-running a workflow on a sample record: what it would decide, in words, changing nothing.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{CrmEvent, CrmUser};
use crm_sync_store::admin::workflows::{self as store, WorkflowRow};
use crm_sync_workflow::WorkflowSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::WriteErrors;
use super::workflows::{TriggerName, WorkflowPath, stored_spec};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::explain::{self, FailedCondition, Sample};
use crate::extract::{ApiPath, JsonBody};

/// A sample CRM record to dry-run a workflow on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunBody {
    /// The record's fields as the CRM sends them, e.g. `{"StageName": "Closed Won", "Amount": 1250}`.
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, Value>,
    /// The fields' values before the change, for conditions on changes.
    #[schema(value_type = Option<Object>)]
    #[serde(default)]
    pub previous_fields: Option<serde_json::Map<String, Value>>,
    /// The change (default `updated`).
    pub change_type: Option<TriggerName>,
    /// The CRM object (default: the workflow's).
    pub object_type: Option<String>,
    /// The record's owner, when the CRM names it outside the fields.
    pub owner_crm_user_id: Option<String>,
}

/// The activity a match would record.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunActivity {
    pub crm_user_id: Option<String>,
    pub value: String,
    /// None: the event time.
    pub activity_date: Option<DateTime<Utc>>,
    pub activity_type: String,
}

/// Whether the sample matches, and if not, why.
#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunResult {
    pub matched: bool,
    /// Why not, as the evaluator names it: e.g. `other_object`, `other_trigger`, `conditions`,
    /// `type_mismatch`, `missing_value`, or for updates and deletes that would retract an
    /// existing activity `no_longer_matches` / `deleted`.
    pub reason: Option<String>,
    /// The outcome in words.
    pub explanation: String,
    /// Each failing part of the conditions, outermost first.
    pub failed_conditions: Vec<FailedCondition>,
    /// The condition tree, each node with `path`, `verdict` (`match`, `no_match`, `unknown`,
    /// `type_mismatch`), `reason` (in words, when not a match) and `kind`: `all`/`any` with
    /// `items`, `not` with `item`, or `compare` with `field`, `op`, `value`, the sample's
    /// `actual` value and, for change operators, its `previous` one. Absent when something other
    /// than the conditions decided (another object or trigger, a delete, a missing value).
    #[schema(value_type = Option<Object>)]
    pub conditions: Option<crm_sync_workflow::Explanation>,
    /// What a match would record.
    pub activity: Option<DryRunActivity>,
}

fn sample_fields(
    field: &str,
    map: &serde_json::Map<String, Value>,
) -> ApiResult<BTreeMap<String, crm_sync_proto::v1::FieldValue>> {
    map.iter()
        .map(|(k, v)| {
            explain::field_value(v)
                .map(|f| (k.clone(), f))
                .map_err(|m| ApiError::invalid(format!("{field}/{k}"), m))
        })
        .collect()
}

/// Dry-runs the workflow (active or not) on a sample record: changes nothing, says whether it
/// matches and, if not, which condition failed.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/workflows/{workflow_id}/test",
    tag = "workflows",
    params(WorkflowPath),
    request_body = DryRunBody,
    responses((status = 200, body = DryRunResult), WriteErrors)
)]
pub async fn dry_run(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<WorkflowPath>,
    JsonBody(b): JsonBody<DryRunBody>,
) -> ApiResult<Json<DryRunResult>> {
    let row = store::get(&state.pool, caller.company(), p.workflow_id)
        .await?
        .or_not_found("workflow")?;
    let spec = stored_spec(&row)?;
    let change = b.change_type.unwrap_or(TriggerName::Updated);
    let sample = Sample {
        object_type: b.object_type.unwrap_or_else(|| row.object_type.clone()),
        change: change.change(),
        fields: sample_fields("fields", &b.fields)?,
        previous_fields: match &b.previous_fields {
            Some(m) => sample_fields("previous_fields", m)?,
            None => BTreeMap::new(),
        },
        owner: b.owner_crm_user_id.map(|id| CrmUser {
            crm_user_id: id,
            ..Default::default()
        }),
    };
    let event = sample.event();
    let outcome = explain::dry_run(&spec, &event);
    let explanation = explanation(&outcome, &spec, &row, change, &event);
    Ok(Json(DryRunResult {
        matched: outcome.matched,
        reason: outcome.reason.map(str::to_owned),
        explanation,
        activity: outcome.matched.then(|| DryRunActivity {
            crm_user_id: outcome.owner_crm_user_id.clone(),
            value: outcome.value.clone().unwrap_or_default(),
            activity_date: outcome.activity_date,
            activity_type: spec.activity_type.clone(),
        }),
        failed_conditions: outcome.failed_conditions,
        conditions: outcome.conditions,
    }))
}

/// The outcome in words, for the page.
fn explanation(
    outcome: &explain::Outcome,
    spec: &WorkflowSpec,
    row: &WorkflowRow,
    change: TriggerName,
    event: &CrmEvent,
) -> String {
    match (outcome.matched, outcome.reason) {
        (true, _) => format!(
            "matches: would record {} {} for CRM user {}",
            outcome.value.as_deref().unwrap_or("1"),
            spec.activity_type,
            outcome.owner_crm_user_id.as_deref().unwrap_or("(none named)")
        ),
        (false, Some("other_object")) => format!(
            "does not match: the workflow reads {} records, not {}",
            spec.object_type, event.object_type
        ),
        (false, Some("other_trigger")) => format!(
            "does not match: the workflow reacts to {}, not to {}",
            row.triggers.join(", "),
            serde_json::to_value(change).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
        ),
        (false, Some("no_longer_matches")) => match outcome.failed_conditions.iter().find(|f| f.field.is_some()) {
            Some(f) => format!(
                "does not match: {} ({}); as an update, it would retract this record's activity if one exists",
                f.message, f.path
            ),
            None => "does not match any more: as an update, it would retract this record's activity if one exists".to_owned(),
        },
        (false, Some("deleted")) => {
            "does not match: a deleted record retracts its activity (add the deleted trigger to count deletions)".to_owned()
        }
        (false, Some("missing_value")) => format!(
            "does not match: the record has no value field {}",
            spec.value_field.as_deref().unwrap_or_default()
        ),
        (false, _) => match outcome.failed_conditions.iter().find(|f| f.field.is_some()) {
            Some(f) => format!("does not match: {} ({})", f.message, f.path),
            None => "does not match: the conditions do not hold".to_owned(),
        },
    }
}
