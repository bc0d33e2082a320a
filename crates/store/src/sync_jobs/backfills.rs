//! Backfills as admins start, watch and cancel them (admin-api, its page and `crm-sync
//! backfill`): one implementation of the rules, so every way in refuses alike. The runner's side
//! (claim, checkpoint, finish) is the parent module's.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{COLUMNS, Job, cancel as cancel_job};
use crate::admin::audit::{self, Actor};
use crate::admin::{After, Keyed, keyset_query, unique_violation};
use crate::credentials::{SecretKey, SecretsError};

/// The earliest `since` a backfill takes, 2000-01-01 UTC: before any of the CRMs kept records,
/// so an earlier date is a typo (and would cost a full scan of the org).
pub const FLOOR_UNIX: i64 = 946_684_800;

/// The unique index that allows one pending or running backfill per integration.
pub const ONE_ACTIVE_BACKFILL: &str = "sync_jobs_one_active_backfill";

/// Why a backfill was not started or not cancelled.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no such integration")]
    NoIntegration,
    #[error("no such backfill")]
    NoJob,
    /// An input is wrong: `field` names it (`since`, `objects`, `objects/1`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The integration cannot be pulled from as it is (a generic one, no API credentials).
    #[error("{0}")]
    NotPullable(String),
    #[error("backfill {0} of this integration is still {1}: wait for it to end or cancel it first")]
    AlreadyActive(Uuid, String),
    #[error("backfill {0} has already ended ({1}): there is nothing to cancel")]
    AlreadyEnded(Uuid, String),
    #[error("the integration's stored credentials cannot be opened: {0}")]
    Sealed(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Refused {
    Refused::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A backfill's start as people write it: an RFC 3339 date (midnight UTC) or date-time with an
/// offset, in the past and not before [`FLOOR_UNIX`].
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Refused> {
    let text = text.trim();
    let since = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc())
        })
        .ok_or_else(|| {
            invalid(
                "since",
                format!(
                    "{text:?} is neither an RFC 3339 date (2026-11-01) nor a date-time with an offset (2026-11-01T08:00:00Z)"
                ),
            )
        })?;
    let floor = DateTime::from_timestamp(FLOOR_UNIX, 0).unwrap_or_default();
    if since < floor {
        return Err(invalid(
            "since",
            format!("{text} is before 2000-01-01, older than any CRM's records"),
        ));
    }
    if since >= now {
        return Err(invalid(
            "since",
            format!("{text} is not in the past: a backfill pulls what already happened"),
        ));
    }
    Ok(since)
}

/// What each CRM's API credentials consist of, for the message that says they are missing.
fn api_needs(crm: &str) -> &'static str {
    match crm {
        "salesforce" => "the org's base_url and an access_token or an OAuth client",
        "hubspot" => "a private app access_token or an OAuth client",
        "pipedrive" => "the company domain as base_url with an API token, or an OAuth client",
        "dynamics" => "the environment's base_url and an OAuth client with its tenant_id",
        _ => "credentials for its API",
    }
}

/// Whether the integration can be pulled from: a CRM with an API, and `api` credentials set.
async fn check_pullable(
    pool: &PgPool,
    key: &SecretKey,
    integration_id: Uuid,
    crm: &str,
) -> Result<(), Refused> {
    if crm == "generic" {
        return Err(Refused::NotPullable(
            "a generic integration has no CRM API to pull from: its records arrive only as signed events".into(),
        ));
    }
    let status = crate::credentials::status(pool, integration_id, key)
        .await
        .map_err(|e| match e {
            SecretsError::Database(e) => Refused::Database(e),
            other => Refused::Sealed(other.to_string()),
        })?;
    if !status.set.iter().any(|(part, _)| *part == "api") {
        return Err(Refused::NotPullable(format!(
            "this {crm} integration has no CRM API credentials: set its `api` credentials ({}) first",
            api_needs(crm)
        )));
    }
    Ok(())
}

/// The objects to pull: those asked for, each the object of one of the integration's workflows
/// (what a pulled record is judged by), or by default the objects of its active workflows.
async fn backfill_objects(
    conn: &mut sqlx::PgConnection,
    integration_id: Uuid,
    asked: Option<&[String]>,
) -> Result<Vec<String>, Refused> {
    let known: Vec<(String, bool)> = sqlx::query_as(
        "SELECT object_type, bool_or(active) FROM workflows WHERE integration_id = $1
         GROUP BY object_type ORDER BY object_type",
    )
    .bind(integration_id)
    .fetch_all(&mut *conn)
    .await?;
    let Some(asked) = asked else {
        let active: Vec<String> = known.into_iter().filter(|k| k.1).map(|k| k.0).collect();
        if active.is_empty() {
            return Err(invalid(
                "objects",
                "the integration has no active workflow: activate one, or name the objects to pull",
            ));
        }
        return Ok(active);
    };
    if asked.is_empty() {
        return Err(invalid(
            "objects",
            "name at least one object, or leave objects out",
        ));
    }
    let mut objects: Vec<String> = Vec::new();
    for (i, object) in asked.iter().enumerate() {
        if !known.iter().any(|(k, _)| k == object) {
            let names: Vec<&str> = known.iter().map(|(k, _)| k.as_str()).collect();
            return Err(invalid(
                format!("objects/{i}"),
                format!(
                    "{object:?} is not the object of any workflow of this integration (known: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            ));
        }
        if !objects.contains(object) {
            objects.push(object.clone());
        }
    }
    Ok(objects)
}

/// Starts a backfill of the integration of `company_id` since `since`, of `objects` (default: its
/// active workflows' objects), requested by `actor`, audited in the same transaction. At most
/// one backfill of an integration is pending or running at a time.
pub async fn start(
    pool: &PgPool,
    key: &SecretKey,
    actor: &Actor,
    company_id: Uuid,
    integration_id: Uuid,
    since: DateTime<Utc>,
    objects: Option<&[String]>,
) -> Result<Job, Refused> {
    let mut tx = pool.begin().await?;
    // The integration's row lock serializes concurrent starts, so only one finds no active job.
    let crm: (String,) =
        sqlx::query_as("SELECT crm FROM integrations WHERE id = $1 AND company_id = $2 FOR UPDATE")
            .bind(integration_id)
            .bind(company_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Refused::NoIntegration)?;
    check_pullable(pool, key, integration_id, &crm.0).await?;
    if let Some(active) = active(&mut *tx, company_id, integration_id).await? {
        return Err(Refused::AlreadyActive(active.id, active.state));
    }
    let objects = backfill_objects(&mut tx, integration_id, objects).await?;
    let inserted: Result<Job, sqlx::Error> = sqlx::query_as(&format!(
        "INSERT INTO sync_jobs (id, company_id, integration_id, kind, since, objects, requested_by)
         VALUES ($1, $2, $3, 'backfill', $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(company_id)
    .bind(integration_id)
    .bind(since)
    .bind(&objects)
    .bind(&actor.name)
    .fetch_one(&mut *tx)
    .await;
    let job = match inserted {
        Ok(job) => job,
        // The backfill a replica makes on connect does not take the integration's lock: one it
        // inserted after the check above is found by the one-active-backfill index instead.
        Err(e) if unique_violation(&e).as_deref() == Some(ONE_ACTIVE_BACKFILL) => {
            drop(tx);
            return Err(match active(pool, company_id, integration_id).await? {
                Some(other) => Refused::AlreadyActive(other.id, other.state),
                None => Refused::Database(e),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let details =
        serde_json::json!({"integration_id": integration_id, "since": since, "objects": objects});
    audit::record(
        &mut tx,
        company_id,
        actor,
        "backfill.started",
        "sync_job",
        &job.id.to_string(),
        details,
    )
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// Asks a pending or running backfill to stop (a pending one stops at once, a running one when
/// its runner sees the request after its current page), audited.
pub async fn cancel(
    pool: &PgPool,
    actor: &Actor,
    company_id: Uuid,
    integration_id: Uuid,
    id: Uuid,
) -> Result<Job, Refused> {
    let mut tx = pool.begin().await?;
    let job: Job = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sync_jobs
         WHERE id = $1 AND company_id = $2 AND integration_id = $3 AND kind = 'backfill' FOR UPDATE"
    ))
    .bind(id)
    .bind(company_id)
    .bind(integration_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Refused::NoJob)?;
    if !cancel_job(&mut *tx, company_id, id).await? {
        return Err(Refused::AlreadyEnded(job.id, job.state));
    }
    let details = serde_json::json!({"integration_id": integration_id, "state_before": job.state});
    audit::record(
        &mut tx,
        company_id,
        actor,
        "backfill.cancel_requested",
        "sync_job",
        &id.to_string(),
        details,
    )
    .await?;
    let job: Job = sqlx::query_as(&format!("SELECT {COLUMNS} FROM sync_jobs WHERE id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(job)
}

/// The integration's pending or running backfill, if any.
pub async fn active<'e>(
    db: impl sqlx::PgExecutor<'e>,
    company_id: Uuid,
    integration_id: Uuid,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sync_jobs
         WHERE company_id = $1 AND integration_id = $2 AND kind = 'backfill'
           AND state IN ('pending', 'running')
         ORDER BY created_at DESC LIMIT 1"
    ))
    .bind(company_id)
    .bind(integration_id)
    .fetch_optional(db)
    .await
}

/// One backfill of the company's integration.
pub async fn get(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    id: Uuid,
) -> Result<Option<Job>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sync_jobs
         WHERE id = $1 AND company_id = $2 AND integration_id = $3 AND kind = 'backfill'"
    ))
    .bind(id)
    .bind(company_id)
    .bind(integration_id)
    .fetch_optional(pool)
    .await
}

/// The integration's backfills, newest first; a page continues below the `(created_at, id)` of
/// the previous page's last row.
pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM sync_jobs
         WHERE company_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
           AND integration_id = $5 AND kind = 'backfill'
         ORDER BY created_at DESC, id DESC LIMIT $4"
    );
    keyset_query(&sql, company_id, after, limit)
        .bind(integration_id)
        .fetch_all(pool)
        .await
}

impl Keyed for Job {
    fn position(&self) -> After {
        After {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// How far a job has come, as progress bars show it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JobProgress {
    /// Of the records the CRM said there were (100 once succeeded); unknown until it said.
    pub percent: Option<f64>,
    /// Records scanned per second since the job started (until it ended).
    pub rate_per_sec: Option<f64>,
    /// Seconds until done at that rate, while running with a known size.
    pub eta_secs: Option<i64>,
}

impl Job {
    pub fn progress(&self, now: DateTime<Utc>) -> JobProgress {
        let elapsed = self
            .started_at
            .map(|start| (self.finished_at.unwrap_or(now) - start).num_milliseconds() as f64 / 1e3)
            .filter(|secs| *secs > 0.0);
        let rate_per_sec = elapsed.map(|secs| self.records_scanned as f64 / secs);
        let percent = match (self.state.as_str(), self.records_expected) {
            ("succeeded", _) => Some(100.0),
            (_, Some(expected)) if expected > 0 => {
                Some((self.records_scanned as f64 * 100.0 / expected as f64).min(100.0))
            }
            (_, Some(_)) => Some(100.0),
            _ => None,
        };
        let eta_secs = match (self.state.as_str(), self.records_expected, rate_per_sec) {
            ("running", Some(expected), Some(rate)) if rate > 0.0 => {
                let left = (expected - self.records_scanned).max(0) as f64;
                Some((left / rate).ceil() as i64)
            }
            _ => None,
        };
        JobProgress {
            percent,
            rate_per_sec,
            eta_secs,
        }
    }

    /// Succeeded, failed or cancelled: nothing more will happen to it.
    pub fn ended(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn since_is_a_date_or_an_offset_date_time_in_the_past_after_2000() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            parse_since("2026-11-01", now()).unwrap(),
            at("2026-11-01T00:00:00Z")
        );
        assert_eq!(
            parse_since(" 2026-11-01T08:00:00+01:00 ", now()).unwrap(),
            at("2026-11-01T07:00:00Z")
        );
        assert_eq!(
            parse_since("2000-01-01", now()).unwrap(),
            at("2000-01-01T00:00:00Z")
        );
        for bad in [
            "yesterday",
            "2026-11-01T08:00:00",
            "1999-12-31",
            "2026-12-01T12:00:00Z",
            "2027-01-01",
        ] {
            match parse_since(bad, now()) {
                Err(Refused::Invalid { field, .. }) => assert_eq!(field, "since", "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    fn job(state: &str, scanned: i64, expected: Option<i64>) -> Job {
        Job {
            id: Uuid::nil(),
            company_id: Uuid::nil(),
            integration_id: Uuid::nil(),
            kind: super::super::JobKind::Backfill,
            state: state.into(),
            since: now(),
            objects: vec![],
            checkpoint: json!({}),
            lease_owner: None,
            lease_expires_at: None,
            attempts: 1,
            records_scanned: scanned,
            records_published: scanned,
            api_calls: 0,
            records_expected: expected,
            requested_by: "cli".into(),
            last_error: None,
            cancel_requested: false,
            created_at: now(),
            started_at: Some(now() - chrono::Duration::seconds(10)),
            finished_at: None,
        }
    }

    #[test]
    fn progress_is_a_share_of_the_expected_records_with_rate_and_eta() {
        let p = job("running", 250, Some(1000)).progress(now());
        assert_eq!(p.percent, Some(25.0));
        assert_eq!(p.rate_per_sec, Some(25.0));
        assert_eq!(p.eta_secs, Some(30));
        // Unknown size: no percent, no ETA, still a rate.
        let p = job("running", 250, None).progress(now());
        assert_eq!((p.percent, p.eta_secs), (None, None));
        // More than the CRM counted (records changed meanwhile) never passes 100%.
        let p = job("running", 1200, Some(1000)).progress(now());
        assert_eq!((p.percent, p.eta_secs), (Some(100.0), Some(0)));
        assert_eq!(
            job("succeeded", 0, None).progress(now()).percent,
            Some(100.0)
        );
        let pending = Job {
            started_at: None,
            ..job("pending", 0, None)
        };
        assert_eq!(pending.progress(now()), JobProgress::default());
        assert!(job("cancelled", 1, None).ended() && !job("running", 1, None).ended());
    }
}
