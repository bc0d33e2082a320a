//! An integration's health at a glance: when its CRM last reached us, and when (and why) one of
//! its requests was last refused, how many events arrived in the last hour and which share some
//! workflow counted (from the record trail), what matched, dead letters, CRM users whose
//! directory lookup is failing, the last reconciliation, and a red state when nothing arrived for
//! longer than the company's `silence_alert_minutes` while workflows are active, webhook requests
//! were refused or messages dead-lettered in the last hour (an integration without active
//! workflows expects nothing and is `idle`).

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use crm_sync_store::admin::health as store;
use crm_sync_store::sync_status::SyncStatus;
use crm_sync_store::trail::Figures;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ReadErrors;
use super::backfills::ObjectNotReadView;
use super::integrations::IntegrationPath;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, OrNotFound};
use crate::extract::ApiPath;

/// What an admin reads to judge whether an integration works.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub integration_id: Uuid,
    /// `ok`, `red` (see `reasons`) or `idle` (no active workflow, so nothing is expected).
    #[schema(example = "red")]
    pub state: String,
    /// Why the state is not `ok`, in words.
    pub reasons: Vec<String>,
    /// When the CRM last delivered a webhook (precise to a few seconds).
    pub last_webhook_at: Option<DateTime<Utc>>,
    /// When ingest last refused a webhook request of the integration (a signature that does not
    /// match, a malformed body, a value that cannot be stored; not a rate limit, which only
    /// asks the CRM to retry), and why: status,
    /// code and message, e.g. `401 invalid_signature: …`.
    pub last_refused_webhook_at: Option<DateTime<Utc>>,
    pub last_webhook_refusal: Option<String>,
    pub last_reconciliation_at: Option<DateTime<Utc>>,
    /// Why the last reconciliation failed as a whole, if it did.
    pub last_reconciliation_error: Option<String>,
    /// The objects the CRM refused in the last reconciliation while the others were
    /// reconciled, each with the CRM's answer.
    pub last_reconciliation_objects_not_read: Vec<ObjectNotReadView>,
    pub active_workflows: i64,
    /// Activities recorded or updated in the last hour: events that matched a workflow.
    pub matched_last_hour: i64,
    /// Of those, the ones waiting for their CRM user to be mapped.
    pub unmapped_last_hour: i64,
    /// Activities retracted in the last hour.
    pub retracted_last_hour: i64,
    /// The company's threshold for `red` (`settings.silence_alert_minutes`).
    pub silence_alert_minutes: i32,
    /// Events the pipeline judged in the last hour (webhooks and pulls, replays included).
    pub events_last_hour: i64,
    /// The share of those that some workflow counted, 0–1; None without events.
    pub matched_share_last_hour: Option<f64>,
    /// Messages of this integration dead-lettered in the last hour / day (see `dead-letters`).
    pub dead_letters_last_hour: i64,
    pub dead_letters_last_day: i64,
    /// CRM users whose name and email lookup in the CRM's user directory is failing (being
    /// retried) or was given up.
    pub directory_lookups_failing: i64,
}

/// What ingest recorded of the integration's webhook requests.
struct Webhooks<'a> {
    last_accepted: Option<DateTime<Utc>>,
    last_refused: Option<(DateTime<Utc>, &'a str)>,
}

impl Webhooks<'_> {
    /// A request refused in the last hour, in words, and whether any was accepted since.
    fn refused_reason(&self, now: DateTime<Utc>) -> Option<String> {
        let (at, refusal) = self.last_refused?;
        if now - at > Duration::hours(1) {
            return None;
        }
        let since = match self.last_accepted {
            Some(accepted) if accepted > at => "",
            _ => "; none was accepted since",
        };
        Some(format!(
            "webhook requests were refused in the last hour (the last {} min ago: {refusal}){since}",
            (now - at).num_minutes()
        ))
    }
}

/// What is wrong with the last reconciliation, in words: a run that failed as a whole, or the
/// objects the CRM refused while the others were reconciled (told apart, so that one object the
/// API user may not read does not read as a failed run).
fn reconciliation_reason(sync: &SyncStatus) -> Option<String> {
    if let Some(error) = &sync.last_reconciliation_error {
        return Some(format!("the last reconciliation failed: {error}"));
    }
    let not_read = &sync.last_reconciliation_objects_not_read;
    if not_read.is_empty() {
        return None;
    }
    let objects: Vec<String> = not_read
        .iter()
        .map(|o| format!("{} ({})", o.object, o.error))
        .collect();
    Some(format!(
        "the last reconciliation could not read {}; the other objects were reconciled",
        objects.join("; ")
    ))
}

/// The state and its reasons from the figures, as of `now`.
fn judge(
    h: &store::HealthRow,
    figures: &Figures,
    webhooks: &Webhooks<'_>,
    reconciliation: Option<String>,
    now: DateTime<Utc>,
) -> (String, Vec<String>) {
    let last_webhook_at = webhooks.last_accepted;
    if h.active_workflows == 0 {
        return (
            "idle".into(),
            vec!["no active workflow: nothing is expected".into()],
        );
    }
    let mut reasons = Vec::new();
    let silence = Duration::minutes(i64::from(h.silence_alert_minutes));
    match last_webhook_at {
        None => reasons.push(format!(
            "no webhook has arrived yet while {} workflow(s) are active",
            h.active_workflows
        )),
        Some(at) if now - at > silence => reasons.push(format!(
            "no webhook for {} minutes while {} workflow(s) are active (alert after {})",
            (now - at).num_minutes(),
            h.active_workflows,
            h.silence_alert_minutes
        )),
        Some(_) => {}
    }
    if let Some(reason) = webhooks.refused_reason(now) {
        reasons.push(reason);
    }
    reasons.extend(reconciliation);
    if figures.dead_letters_last_hour > 0 {
        reasons.push(format!(
            "{} message(s) could not be processed in the last hour (see the dead letters)",
            figures.dead_letters_last_hour
        ));
    }
    if figures.directory_lookups_failing > 0 {
        reasons.push(format!(
            "looking up {} CRM user(s) in the CRM's user directory is failing (check the API credentials)",
            figures.directory_lookups_failing
        ));
    }
    let state = if reasons.is_empty() { "ok" } else { "red" };
    (state.into(), reasons)
}

#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/health",
    tag = "integrations",
    params(IntegrationPath),
    responses((status = 200, body = HealthView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
) -> ApiResult<Json<HealthView>> {
    let health = store::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let sync = crm_sync_store::sync_status::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let figures =
        crm_sync_store::trail::figures(&state.pool, caller.company(), p.integration_id).await?;
    let webhooks = Webhooks {
        last_accepted: sync.last_webhook_at,
        last_refused: sync
            .last_refused_webhook_at
            .zip(sync.last_webhook_refusal.as_deref()),
    };
    let (verdict, reasons) = judge(
        &health,
        &figures,
        &webhooks,
        reconciliation_reason(&sync),
        Utc::now(),
    );
    Ok(Json(HealthView {
        integration_id: p.integration_id,
        state: verdict,
        reasons,
        last_webhook_at: sync.last_webhook_at,
        last_refused_webhook_at: sync.last_refused_webhook_at,
        last_webhook_refusal: sync.last_webhook_refusal.clone(),
        last_reconciliation_at: sync.last_reconciliation_at,
        last_reconciliation_error: sync.last_reconciliation_error.clone(),
        last_reconciliation_objects_not_read: sync
            .last_reconciliation_objects_not_read
            .iter()
            .map(ObjectNotReadView::from)
            .collect(),
        active_workflows: health.active_workflows,
        matched_last_hour: health.matched_last_hour,
        unmapped_last_hour: health.unmapped_last_hour,
        retracted_last_hour: health.retracted_last_hour,
        silence_alert_minutes: health.silence_alert_minutes,
        events_last_hour: figures.events_last_hour,
        matched_share_last_hour: (figures.events_last_hour > 0)
            .then(|| figures.matched_events_last_hour as f64 / figures.events_last_hour as f64),
        dead_letters_last_hour: figures.dead_letters_last_hour,
        dead_letters_last_day: figures.dead_letters_last_day,
        directory_lookups_failing: figures.directory_lookups_failing,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_sync_store::sync_status::ObjectNotRead;

    #[test]
    fn a_refusal_in_the_last_hour_is_a_reason_saying_whether_any_was_accepted_since() {
        let now = Utc::now();
        let refused = |minutes_ago, accepted_minutes_ago: Option<i64>| {
            Webhooks {
                last_accepted: accepted_minutes_ago.map(|m| now - Duration::minutes(m)),
                last_refused: Some((
                    now - Duration::minutes(minutes_ago),
                    "401 invalid_token: no",
                )),
            }
            .refused_reason(now)
        };
        let none_since = refused(5, None).unwrap();
        assert!(
            none_since.contains("the last 5 min ago: 401 invalid_token: no"),
            "{none_since}"
        );
        assert!(
            none_since.ends_with("none was accepted since"),
            "{none_since}"
        );
        assert!(
            refused(5, Some(10))
                .unwrap()
                .ends_with("none was accepted since")
        );
        let recovered = refused(5, Some(1)).unwrap();
        assert!(!recovered.contains("none was accepted"), "{recovered}");
        assert_eq!(refused(61, None), None);
        let never = Webhooks {
            last_accepted: None,
            last_refused: None,
        };
        assert_eq!(never.refused_reason(now), None);
    }

    #[test]
    fn a_reconciliation_that_could_not_read_an_object_is_not_said_to_have_failed() {
        let ran = SyncStatus {
            last_reconciliation_at: Some(Utc::now()),
            ..SyncStatus::default()
        };
        assert_eq!(reconciliation_reason(&ran), None);
        let partial = SyncStatus {
            last_reconciliation_objects_not_read: vec![ObjectNotRead {
                object: "Quote".into(),
                error: "INVALID_FIELD: No such column".into(),
            }],
            ..ran.clone()
        };
        let reason = reconciliation_reason(&partial).unwrap();
        assert_eq!(
            reason,
            "the last reconciliation could not read Quote (INVALID_FIELD: No such column); \
             the other objects were reconciled"
        );
        let failed = SyncStatus {
            last_reconciliation_error: Some("no `api` credentials".into()),
            ..ran
        };
        assert_eq!(
            reconciliation_reason(&failed).unwrap(),
            "the last reconciliation failed: no `api` credentials"
        );
    }
}
