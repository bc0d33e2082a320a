//! The CRMs' limits, end to end: a 429's `Retry-After` is waited for, and pulls stop at the
//! configured share of the Salesforce org's daily API requests, saying so in the job.

use std::time::Duration;

use crm_sync_store::sync_jobs::JobKind;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_the_daily_share_stops_the_backfill() {
    let fake = fake_salesforce().await;
    for n in 1..=3 {
        fake.put(
            "Opportunity",
            &format!("0065g00000LiMi{n}AAB"),
            opportunity("Closed Won", n),
        );
    }
    fake.fail_next(
        429,
        Some(2),
        r#"[{"errorCode":"REQUEST_LIMIT_EXCEEDED","message":"slow down"}]"#,
    );
    // The answer after the 429 reports 2,500 of 10,000 requests used: the configured quarter.
    fake.set_api_usage(2_499, 10_000);
    let s = salesforce_setup("pull-limits", &fake).await;
    let _ingest = ingest(
        &s.env,
        "ingest",
        &[
            ("CRM_SYNC__PULL__PAGE_SIZE", "1"),
            ("CRM_SYNC__PULL__SALESFORCE_MAX_API_SHARE", "0.25"),
        ],
    )
    .await;
    let stopped = wait_for_job(
        &s.env,
        s.integration_id,
        "the backfill stopped at the share",
        |j| j.kind == JobKind::Backfill && j.last_error.is_some(),
    )
    .await;
    let error = stopped.last_error.clone().unwrap();
    assert!(
        error.contains("2500 of its 10000") && error.contains("pull.salesforce_max_api_share"),
        "{error}"
    );
    assert_eq!(
        stopped.records_published, 1,
        "the page before the stop was published"
    );
    assert_eq!(
        stopped.state, "running",
        "tried again later, when the limit may have reset"
    );

    // Not tried again within the backoff (each try would spend another of the org's requests).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = fake.requests();
    assert_eq!(log.len(), 2, "no request once the share is used: {log:?}");
    assert_eq!((log[0].status, log[1].status), (429, 200));
    let waited = log[1].at.duration_since(log[0].at);
    assert!(
        waited >= Duration::from_millis(1_990),
        "waited only {waited:?}"
    );
}
