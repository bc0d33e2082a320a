//! The CRMs' rate limits as each answers them: a window is waited out within the request, a
//! longer wait (or a day's allowance spent) becomes the job's next attempt.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use crm_sync_crm_directory::Crm;
use crm_sync_e2e::TestEnv;
use crm_sync_e2e::fake_crm::{Kind, RateLimit};
use crm_sync_store::sync_jobs::{self, JobKind, Outcome};
use serde_json::json;

use super::jobs::{Memory, job_config, run_once};
use super::*;

#[tokio::test]
async fn hubspot_ten_second_window_is_waited_out_not_retried_inside() {
    let fake = start(Kind::HubSpot).await;
    for n in 1..=4u32 {
        fake.put("deal", &n.to_string(), json!({"dealstage": "closedwon"}));
    }
    fake.set_per_ten_seconds(Some(2));
    let mut cfg = config(3);
    cfg.api.max_backoff = Duration::from_secs(15);
    let client = client(&fake, Crm::HubSpot, TOKEN, cfg);
    let events = pull_all(&client, &scope("deal", &[]), at("2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    let ids: BTreeSet<&str> = events.iter().map(|e| e.record_id.as_str()).collect();
    assert_eq!(ids.len(), 4);
    let log = fake.requests();
    let refused = log.iter().filter(|r| r.status == 429).count();
    assert_eq!(refused, 1, "no retry inside the window: {log:?}");
    let waited = log.last().unwrap().at.duration_since(log[0].at);
    assert!(waited >= Duration::from_secs(10), "waited only {waited:?}");
}

#[tokio::test]
async fn pipedrive_window_is_waited_for_as_its_reset_header_says() {
    let fake = start(Kind::Pipedrive).await;
    fake.put("deal", "1", json!({"title": "a", "status": "won"}));
    fake.rate_limit_next(RateLimit::PipedriveWindow { reset_secs: 2 });
    let client = client(&fake, Crm::Pipedrive, TOKEN, config(50));
    let events = pull_all(&client, &scope("deal", &[]), at("2020-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.record_id == "1"));
    let log = fake.requests();
    let waited = log[1].at.duration_since(log[0].at);
    assert!(
        waited >= Duration::from_millis(1_990),
        "waited only {waited:?}"
    );
}

#[tokio::test]
async fn salesforce_concurrent_request_limit_is_retried_not_taken_for_the_daily_one() {
    let fake = start(Kind::Salesforce).await;
    fake.put(
        "Opportunity",
        "0065g00000LiMi1AAB",
        json!({"StageName": "Closed Won"}),
    );
    fake.rate_limit_next(RateLimit::SalesforceConcurrent);
    let client = client(&fake, Crm::Salesforce, TOKEN, config(50));
    let events = pull_all(
        &client,
        &scope("Opportunity", &[]),
        at("2020-01-01T00:00:00Z"),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [403, 200]);
}

/// A backfill of `object` that meets `limit` on its first request: the job's outcome, the
/// `run_after` stored, its `last_error`, and the requests the fake saw.
async fn backfill_meeting(
    env: &TestEnv,
    kind: Kind,
    crm: Crm,
    object: &str,
    limit: RateLimit,
) -> (Outcome, chrono::DateTime<Utc>, String, usize) {
    let (_, integration) = super::leases::integration(env).await;
    let fake = start(kind).await;
    fake.rate_limit_next(limit);
    let client = client(&fake, crm, TOKEN, config(50));
    let since = Utc::now() - chrono::Duration::days(1);
    let job = sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Backfill,
        since,
        &[object.into()],
    )
    .await
    .unwrap()
    .unwrap();
    let claimed = sync_jobs::claim(&env.pool, "a", job_config().lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job.id);
    let scopes = [scope(object, &[])];
    let outcome = run_once(env, "a", &claimed, &client, &scopes, &Memory::default()).await;
    let (run_after, error): (chrono::DateTime<Utc>, Option<String>) =
        crm_sync_store::sqlx::query_as("SELECT run_after, last_error FROM sync_jobs WHERE id = $1")
            .bind(job.id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    (
        outcome,
        run_after,
        error.unwrap_or_default(),
        fake.requests().len(),
    )
}

#[tokio::test]
async fn a_rate_limit_longer_than_a_request_waits_is_the_jobs_next_attempt() {
    let env = TestEnv::new("pull_rate_limits").await;
    let minutes = |m: i64| chrono::Duration::minutes(m);
    let cases = [
        // (CRM, object, limit, earliest and latest next attempt from now)
        (
            Kind::HubSpot,
            Crm::HubSpot,
            "deal",
            RateLimit::HubSpotDaily,
            (minutes(0), minutes(61)),
        ),
        (
            Kind::Pipedrive,
            Crm::Pipedrive,
            "deal",
            RateLimit::PipedriveWindow { reset_secs: 120 },
            (minutes(2), minutes(3)),
        ),
        (
            Kind::Pipedrive,
            Crm::Pipedrive,
            "deal",
            RateLimit::PipedriveDaily,
            (minutes(0), minutes(24 * 60 + 1)),
        ),
        (
            Kind::Dynamics,
            Crm::Dynamics,
            "opportunity",
            RateLimit::DataverseRequests {
                retry_after_secs: 300,
            },
            (minutes(5), minutes(6)),
        ),
        (
            Kind::Salesforce,
            Crm::Salesforce,
            "Opportunity",
            RateLimit::SalesforceTotalRequests,
            (minutes(60), minutes(61)),
        ),
    ];
    for (kind, crm, object, limit, (earliest, latest)) in cases {
        let before = Utc::now();
        let (outcome, run_after, error, requests) =
            backfill_meeting(&env, kind, crm, object, limit).await;
        let Outcome::Retry { retry_at, .. } = outcome else {
            panic!("{limit:?}: {outcome:?}");
        };
        // Stored to the microsecond.
        assert!(
            (run_after - retry_at).num_milliseconds().abs() < 1,
            "{limit:?}: the job's next attempt is {run_after}"
        );
        // Any limit that lasts makes the next attempt at least half a minute away.
        let earliest = earliest.max(chrono::Duration::seconds(30));
        assert!(
            retry_at >= before + earliest && retry_at <= Utc::now() + latest,
            "{limit:?}: next attempt in {}s",
            (retry_at - before).num_seconds()
        );
        assert!(error.contains("rate limit"), "{limit:?}: {error}");
        assert_eq!(requests, 1, "{limit:?}: not retried meanwhile");
    }
}
