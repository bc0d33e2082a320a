//! Runs the browser tests of the integration management page (`tests/browser/*.spec.js`,
//! Playwright driving headless Debian Chromium) against admin-api and the pipeline started here as
//! real processes on a fresh database and fresh topics. Ignored by a plain `cargo test`, which
//! may run where no browser is installed: `tests/browser/run.sh` installs what is needed and runs
//! it with `--ignored`. Screenshots go to this test's log folder under `e2e-logs/`.
//!
//! Backfills started from the page are run by the kit's stand-in for ingest's runner (a task
//! here): it advances the job's counts through the store, so the page's progress bar moves, and
//! stops when the page cancels it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::admin_support;

use std::path::PathBuf;
use std::time::Duration;

use admin_support::{start_admin_api_with, token};
use crm_sync_e2e::app::{App, AppOptions, spawn_app};
use crm_sync_e2e::pull_jobs::FakeRunner;
use crm_sync_e2e::{Tenant, TestEnv};
use crm_sync_store::sync_jobs::Outcome;
use crm_sync_store::sync_status::{self, ReconciliationRun};
use sqlx::PgPool;

/// Runs every backfill the page starts: 1000 records expected, 10 more scanned per tick, until
/// the page cancels it (or it is done).
async fn run_backfills(pool: PgPool) {
    let mut tick = tokio::time::interval(Duration::from_millis(400));
    loop {
        tick.tick().await;
        let Some(runner) = FakeRunner::try_claim(&pool).await else {
            continue;
        };
        runner.expect(1000).await;
        let mut scanned = 0;
        let outcome = loop {
            tick.tick().await;
            if runner.cancel_requested().await {
                break Outcome::Cancelled;
            }
            if scanned >= 1000 {
                break Outcome::Succeeded;
            }
            runner.page(10, 9, 1).await;
            scanned += 10;
        };
        runner.finish(outcome).await;
    }
}

/// A company of its own (the other specs expect their integration's health green) whose
/// integration's last reconciliation could not read Quote while it reconciled the rest, as
/// ingest records it; a viewer token of it.
async fn partly_reconciled(env: &TestEnv) -> String {
    let tenant = Tenant::create(&env.pool, "browser-partly-reconciled", false, true).await;
    let run = ReconciliationRun {
        job_id: uuid::Uuid::new_v4(),
        scanned: 40,
        published: 2,
        api_calls: 3,
        error: None,
        objects_not_read: vec![sync_status::ObjectNotRead {
            object: "Quote".into(),
            error: "INVALID_FIELD: No such column 'Discount__c' on entity 'Quote'".into(),
        }],
    };
    sync_status::record_reconciliation(&env.pool, tenant.integration_id, chrono::Utc::now(), &run)
        .await
        .unwrap();
    token(env, tenant.company_id, "viewer").await
}

#[tokio::test]
#[ignore = "needs Chromium and the npm packages: run tests/browser/run.sh"]
async fn the_management_page_in_headless_chromium() {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../browser");
    let playwright = browser_dir.join("node_modules/.bin/playwright");
    assert!(
        playwright.exists(),
        "{} is missing: run tests/browser/run.sh",
        playwright.display()
    );

    let env = TestEnv::new("admin-browser").await;
    // An integration as a company gets it: auto-sync off, and no active workflow of its own.
    let tenant = Tenant::create(&env.pool, "browser-co", false, false).await;
    let options = AppOptions {
        wait_for_partitions: true,
        ..AppOptions::default()
    };
    let App {
        ingest,
        evaluator: _evaluator,
        provisioner: _provisioner,
        ..
    } = spawn_app(&env, options).await;
    // The page shows webhook URLs under the address CRMs reach ingest at: this ingest.
    let api =
        start_admin_api_with(&env, &[("CRM_SYNC__INGEST__PUBLIC_URL", &ingest.url(""))]).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    // What ingest and the evaluator would have recorded about this integration's pulls.
    let now = chrono::Utc::now();
    let run = ReconciliationRun {
        job_id: uuid::Uuid::new_v4(),
        scanned: 120,
        published: 3,
        api_calls: 4,
        error: None,
        objects_not_read: Vec::new(),
    };
    sync_status::record_webhook(&env.pool, tenant.integration_id, now, 0.0)
        .await
        .unwrap();
    // A request refused two hours ago (a signing secret since fixed): shown, but not red.
    sync_status::record_webhook_refusal(
        &env.pool,
        tenant.integration_id,
        now - chrono::Duration::hours(2),
        "401 invalid_signature: the signature does not match the integration's secret",
        0.0,
    )
    .await
    .unwrap();
    sync_status::record_reconciliation(&env.pool, tenant.integration_id, now, &run)
        .await
        .unwrap();
    sync_status::add_missed_webhooks_fixed(&env.pool, &[(tenant.integration_id, 3)], now)
        .await
        .unwrap();
    // More dead letters than one page of the trail's list holds (the page loads older ones),
    // from two days ago: kept, but not counted by the health the admin spec expects green.
    for offset in 0..35 {
        let letter = crm_sync_store::trail::NewDeadLetter {
            integration_id: tenant.integration_id,
            object_type: "Opportunity".into(),
            record_id: format!("006DEAD0000000{offset:02}A"),
            event_id: None,
            service: "provisioner".into(),
            topic: env.topics.matches.clone(),
            partition: 0,
            offset,
            reason: "invalid_value".into(),
            detail: format!("dead letter number {offset}"),
        };
        crm_sync_store::trail::record_dead_letters(&env.pool, std::slice::from_ref(&letter))
            .await
            .unwrap();
    }
    sqlx::query(
        "UPDATE trail_dead_letters SET at = now() - interval '2 days' + \"offset\" * interval '1 second'
         WHERE integration_id = $1",
    )
    .bind(tenant.integration_id)
    .execute(&env.pool)
    .await
    .unwrap();
    let runner = tokio::spawn(run_backfills(env.pool.clone()));
    let viewer = token(&env, tenant.company_id, "viewer").await;
    let partial = partly_reconciled(&env).await;

    let status = tokio::process::Command::new(&playwright)
        .arg("test")
        .current_dir(&browser_dir)
        .env("ADMIN_URL", api.url(""))
        .env("INGEST_URL", ingest.url(""))
        .env("ADMIN_TOKEN", &admin)
        .env("VIEWER_TOKEN", &viewer)
        .env("PARTLY_RECONCILED_VIEWER_TOKEN", &partial)
        .env("INTEGRATION_ID", tenant.integration_id.to_string())
        .env("WEBHOOK_TOKEN", &tenant.token)
        .env("ORG_ID", &tenant.organization_id)
        .env("CRM_SYNC_BROWSER_ARTIFACTS", &env.log_dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .status()
        .await
        .expect("running playwright");
    runner.abort();
    println!("screenshots and logs: {}", env.log_dir.display());
    assert!(
        status.success(),
        "the browser tests failed ({status}); see {}",
        env.log_dir.display()
    );
}
