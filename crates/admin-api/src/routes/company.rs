//! The company's own settings: after how long without webhooks an integration shows red, and its
//! time zone: a leaderboard or activity list asked for by
//! dates (`from=2026-11-01&to=2026-11-30`) counts from the company's midnight to its midnight,
//! so a deal closed late on the last evening of the month in Oslo counts in that month.

use axum::extract::State;
use axum::{Extension, Json};
use crm_sync_store::admin::company as store;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::{CompanyPath, ReadErrors, WriteErrors, commit_audited};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::JsonBody;

/// The company's settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompanySettingsView {
    /// IANA time zone (e.g. `Europe/Oslo`; default `UTC`) in which dates of periods begin and end.
    #[schema(example = "Europe/Oslo")]
    pub time_zone: String,
    /// After how many minutes without a webhook an integration with active workflows is red in
    /// its health (default 60, 1–10080).
    pub silence_alert_minutes: i32,
}

impl From<store::CompanySettings> for CompanySettingsView {
    fn from(s: store::CompanySettings) -> Self {
        CompanySettingsView {
            time_zone: s.time_zone,
            silence_alert_minutes: s.silence_alert_minutes,
        }
    }
}

#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/settings",
    tag = "company",
    params(CompanyPath),
    responses((status = 200, body = CompanySettingsView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<CompanySettingsView>> {
    let settings = store::get(&state.pool, caller.company())
        .await?
        .or_not_found("company")?;
    Ok(Json(settings.into()))
}

/// Changes the company's settings; absent fields keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompanySettingsChanges {
    /// An IANA time zone name, e.g. `Europe/Oslo`, `America/New_York`, `UTC`.
    pub time_zone: Option<String>,
    /// 1–10080 (a week).
    pub silence_alert_minutes: Option<i32>,
}

#[utoipa::path(
    patch,
    path = "/admin/v1/companies/{company_id}/settings",
    tag = "company",
    params(CompanyPath),
    request_body = CompanySettingsChanges,
    responses((status = 200, body = CompanySettingsView), WriteErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<CompanySettingsChanges>,
) -> ApiResult<Json<CompanySettingsView>> {
    let mut tx = state.pool.begin().await?;
    let time_zone = body.time_zone.map(|t| t.trim().to_owned());
    if let Some(zone) = &time_zone
        && (zone.len() > 64 || !store::is_time_zone(&mut *tx, zone).await?)
    {
        return Err(ApiError::invalid(
            "time_zone",
            format!(
                "time_zone: `{zone}` is not a known IANA time zone (e.g. Europe/Oslo, America/New_York, UTC)"
            ),
        ));
    }
    if let Some(minutes) = body.silence_alert_minutes
        && !(1..=10080).contains(&minutes)
    {
        return Err(ApiError::invalid(
            "silence_alert_minutes",
            "silence_alert_minutes must be between 1 and 10080 (a week)",
        ));
    }
    let (before, after) = store::update(
        &mut tx,
        caller.company(),
        time_zone.as_deref(),
        body.silence_alert_minutes,
    )
    .await?
    .or_not_found("company")?;
    let mut details = serde_json::Map::new();
    if before.time_zone != after.time_zone {
        details.insert(
            "time_zone".into(),
            json!({"from": before.time_zone, "to": after.time_zone}),
        );
    }
    if before.silence_alert_minutes != after.silence_alert_minutes {
        details.insert(
            "silence_alert_minutes".into(),
            json!({"from": before.silence_alert_minutes, "to": after.silence_alert_minutes}),
        );
    }
    if details.is_empty() {
        return Ok(Json(after.into()));
    }
    commit_audited(
        tx,
        &caller,
        "company.settings_changed",
        "company",
        caller.company(),
        details.into(),
    )
    .await?;
    Ok(Json(after.into()))
}
