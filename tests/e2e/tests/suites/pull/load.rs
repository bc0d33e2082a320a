//! Figures for BENCHMARKS.md (ignored by default; `tests/load/backfill.sh` runs it): a backfill
//! of `PULL_LOAD_RECORDS` (100,000) Salesforce opportunities at `PULL_LOAD_RATE` (2,000) records/s
//! and at most `PULL_LOAD_MAX_LAG` (400; 0 = not watched) records of evaluator lag, while live
//! Outbound Messages arrive 10 per second. Prints records/s pulled and published,
//! the backfill end to end to activities, and the live path's latency (webhook sent → activity
//! stored) before and during the backfill.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crm_sync_e2e::salesforce::{outbound_message, won_opportunity};
use crm_sync_store::credentials;
use crm_sync_store::sync_jobs::JobKind;
use tokio::sync::mpsc;

use super::connectors::{count, post, setup};
use super::*;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Posts one won opportunity per 100 ms until `stop`; sends (record id, sent at) back.
async fn live(
    url: String,
    prefix: &'static str,
    stop: Instant,
    sent: mpsc::UnboundedSender<(String, DateTime<Utc>)>,
) {
    let mut n = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < stop {
        tick.tick().await;
        n += 1;
        let record = format!("0065g{prefix}{n:09}");
        let xml = outbound_message(
            ORG,
            &[won_opportunity(
                &format!("04l5g{prefix}{n:09}"),
                &record,
                OWNER,
                "10",
            )],
        );
        let at = Utc::now();
        let answer = post(
            &url,
            &[
                ("content-type", "text/xml; charset=utf-8"),
                ("soapaction", "\"\""),
            ],
            xml,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let _ = sent.send((record, at));
    }
}

/// p50, p99 and max of the live records' latency to their activity, in milliseconds.
async fn latencies(
    env: &crm_sync_e2e::TestEnv,
    sent: &[(String, DateTime<Utc>)],
) -> (i64, i64, i64) {
    let mut ms = Vec::new();
    for (record, at) in sent {
        let created: (DateTime<Utc>,) =
            eventually("the live activity", Duration::from_secs(600), || async {
                sqlx::query_as("SELECT created_at FROM activities WHERE record_id = $1")
                    .bind(record)
                    .fetch_optional(&env.pool)
                    .await
                    .unwrap()
            })
            .await;
        ms.push((created.0 - *at).num_milliseconds());
    }
    ms.sort_unstable();
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.5), at(0.99), *ms.last().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load figures: run by tests/load/backfill.sh"]
async fn backfill_load_figures() {
    let records = env_number("PULL_LOAD_RECORDS", 100_000);
    let rate = env_number("PULL_LOAD_RATE", 2_000).to_string();
    let fake = fake_salesforce().await;
    for n in 0..records {
        let stage = if n % 3 == 0 {
            "Closed Won"
        } else {
            "Prospecting"
        };
        fake.put(
            "Opportunity",
            &format!("0065g{n:013}"),
            opportunity(stage, n as u64 + 1),
        );
    }
    let won = records.div_ceil(3);
    // Connected without API credentials first: live traffic alone, then the backfill starts.
    let s = setup(
        "pull-load",
        "salesforce",
        ORG,
        credentials::IntegrationSecrets::default(),
        Some(WEBHOOK_TOKEN),
        won_workflow(),
    )
    .await;
    let group = format!("{}-workflow-evaluator", s.env.id);
    let max_lag = env_number("PULL_LOAD_MAX_LAG", 400).to_string();
    let page = env_number("PULL_LOAD_PAGE", 200).to_string();
    let pull = [
        ("CRM_SYNC__PULL__EVALUATOR_GROUP", group.as_str()),
        ("CRM_SYNC__PULL__MAX_EVALUATOR_LAG", max_lag.as_str()),
        ("CRM_SYNC__PULL__ENABLED", "true"),
        ("CRM_SYNC__PULL__PAGE_SIZE", page.as_str()),
        ("CRM_SYNC__PULL__RECORDS_PER_SECOND", rate.as_str()),
        ("CRM_SYNC__PULL__POLL_INTERVAL_MS", "500"),
    ];
    let p = super::connectors::start_pipeline(&s.env, &pull).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/outbound-messages?token={WEBHOOK_TOKEN}",
        s.integration_id
    ));

    let (tx, mut rx) = mpsc::unbounded_channel();
    live(
        url.clone(),
        "BASE",
        Instant::now() + Duration::from_secs(15),
        tx,
    )
    .await;
    let mut before = Vec::new();
    while let Ok(x) = rx.try_recv() {
        before.push(x);
    }
    let baseline = latencies(&s.env, &before).await;

    credentials::update(
        &s.env.pool,
        &super::connectors::key(),
        s.company_id,
        s.integration_id,
        salesforce_api(&fake),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let live_during = tokio::spawn(live(
        url,
        "LIVE",
        Instant::now() + Duration::from_secs(3600),
        tx,
    ));
    let job = eventually(
        "the backfill to succeed",
        Duration::from_secs(3600),
        || async {
            jobs(&s.env, s.integration_id)
                .await
                .into_iter()
                .find(|j| j.kind == JobKind::Backfill && j.state == "succeeded")
        },
    )
    .await;
    let pulled_at = started.elapsed();
    let expected_activities = (won + before.len()) as i64;
    eventually(
        "every won opportunity's activity",
        Duration::from_secs(3600),
        || async {
            let n = count(
                &s.env,
                "SELECT count(*) FROM activities WHERE record_id NOT LIKE '0065gLIVE%'",
            )
            .await;
            (n >= expected_activities).then_some(n)
        },
    )
    .await;
    let end_to_end = started.elapsed();
    live_during.abort();
    let mut during = Vec::new();
    while let Ok(x) = rx.try_recv() {
        during.push(x);
    }
    let during_backfill = latencies(&s.env, &during).await;
    let job_secs =
        (job.finished_at.unwrap() - job.started_at.unwrap()).num_milliseconds() as f64 / 1000.0;
    println!(
        "FIGURES records={records} page={page} rate_limit={rate}/s max_evaluator_lag={max_lag} job={job_secs:.1}s pulled_and_published={:.0}/s \
         pulled_seen_at={:.1}s end_to_end={:.1}s ({:.0} records/s, {won} activities) \
         live_before(p50/p99/max ms)={baseline:?} live_during({} webhooks)={during_backfill:?}",
        job.records_published as f64 / job_secs,
        pulled_at.as_secs_f64(),
        end_to_end.as_secs_f64(),
        records as f64 / end_to_end.as_secs_f64(),
        during.len(),
    );
}
