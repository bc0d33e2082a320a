//! `crm-sync backfill start|status|cancel` (a module of the cli suite): refusals name the flag,
//! `status --watch` follows a job as ingest's runner (the kit's stand-in) advances it, and
//! everything is audited as `cli`.

use std::process::Stdio;
use std::time::Duration;

use crm_sync_e2e::pull_jobs::FakeRunner;
use crm_sync_e2e::{Tenant, TestEnv, binary_path};
use crm_sync_store::credentials::{self, ApiCredentials, IntegrationSecrets, SecretKey};
use crm_sync_store::sync_jobs::Outcome;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

use super::{assert_success, crm_sync, text};

const KEY: &str = "zHb8wT3nqV0rXy5kLm2pQs7uEf9gJd4aRt6cNv1oWiY=";
const WAIT: Duration = Duration::from_secs(30);

async fn with_api_credentials(env: &TestEnv, tenant: &Tenant) {
    let secrets = IntegrationSecrets {
        api: Some(ApiCredentials {
            base_url: Some("https://example.my.salesforce.com".into()),
            access_token: Some("cli-backfill-token".into()),
            oauth: None,
        }),
        ..Default::default()
    };
    let key = SecretKey::parse(KEY).unwrap();
    credentials::update(
        &env.pool,
        &key,
        tenant.company_id,
        tenant.integration_id,
        secrets,
    )
    .await
    .unwrap();
}

/// Runs `crm-sync backfill ARGS` with the encryption key configured.
async fn backfill(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut all = vec!["backfill"];
    all.extend_from_slice(args);
    crm_sync(
        env,
        &all,
        &[("CRM_SYNC__SECRETS__ENCRYPTION_KEY", KEY)],
        None,
    )
    .await
}

/// A line of the child's stdout containing `needle`, within the deadline.
async fn line_with(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    needle: &str,
    seen: &mut Vec<String>,
) {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line.clone());
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no line with {needle:?} in {seen:#?}"
    );
}

/// Refusals name what is wrong: missing credentials, a bad `--since`, an unknown `--object`.
async fn refusals(env: &TestEnv, tenant: &Tenant) {
    let integration = tenant.integration_id.to_string();
    // Without API credentials there is nothing to pull with.
    let out = backfill(env, &["start", &integration, "--since", "2026-11-01"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no CRM API credentials"),
        "{}",
        text(&out.stderr)
    );
    with_api_credentials(env, tenant).await;

    // Refusals name the flag.
    let out = backfill(env, &["start", &integration, "--since", "1999-01-01"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--since: 1999-01-01 is before 2000-01-01"));
    let out = backfill(
        env,
        &[
            "start",
            "salesforce",
            "--since",
            "2026-11-01",
            "--object",
            "Lead",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--object #1: \"Lead\" is not the object of any workflow"),
        "{}",
        text(&out.stderr)
    );
}

/// `status --watch` follows the job while the runner advances it, then says how it ended.
async fn watch_follows_the_runner(env: &TestEnv, integration: &str, job: Uuid) {
    let mut child = Command::new(binary_path("crm-sync"))
        .args([
            "backfill",
            "status",
            integration,
            &job.to_string(),
            "--watch",
        ])
        .envs(env.service_env())
        .env_remove("CRM_SYNC_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    line_with(&mut lines, "pending", &mut seen).await;
    let runner = FakeRunner::claim(&env.pool, WAIT).await;
    runner.expect(200).await;
    runner.page(50, 48, 2).await;
    line_with(
        &mut lines,
        "running 25.0% (50/200) scanned, 48 published",
        &mut seen,
    )
    .await;
    assert!(
        seen.last().unwrap().contains("records/s, ETA "),
        "{seen:#?}"
    );
    runner.page(150, 150, 3).await;
    line_with(&mut lines, "running 100.0% (200/200)", &mut seen).await;
    runner.finish(Outcome::Succeeded).await;
    line_with(&mut lines, "api calls   5", &mut seen).await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{seen:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn backfills_start_watch_and_cancel_from_the_command_line() {
    let env = TestEnv::new("cli-backfill").await;
    let tenant = Tenant::create(&env.pool, "acme", false, true).await;
    let integration = tenant.integration_id.to_string();

    refusals(&env, &tenant).await;

    // Started by name; the id is what stdout says, and a second start is refused.
    let out = backfill(&env, &["start", "salesforce", "--since", "2026-11-01"]).await;
    assert_success("backfill start", &out);
    let job = Uuid::parse_str(text(&out.stdout).trim()).unwrap();
    let out = backfill(&env, &["start", &integration, "--since", "2026-10-01"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&format!(
        "backfill {job} of this integration is still pending"
    )));

    watch_follows_the_runner(&env, &integration, job).await;

    // The integration's status lists it, asked for by the command line.
    let out = backfill(&env, &["status", &integration]).await;
    assert_success("backfill status", &out);
    let listing = text(&out.stdout);
    assert!(listing.contains("last webhook          never"), "{listing}");
    let row = listing
        .lines()
        .find(|l| l.starts_with(&job.to_string()))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        row.contains("succeeded") && row.contains("100.0%") && row.ends_with("cli"),
        "{row}"
    );

    // A pending one is cancelled at once; an ended one cannot be.
    let out = backfill(&env, &["start", &integration, "--since", "2026-11-15"]).await;
    assert_success("backfill start", &out);
    let second = text(&out.stdout).trim().to_owned();
    let out = backfill(&env, &["cancel", &integration, &second]).await;
    assert_success("backfill cancel", &out);
    assert!(text(&out.stdout).contains(&format!("backfill {second} cancelled")));
    let out = backfill(&env, &["cancel", &integration, &second]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("has already ended (cancelled)"));

    // Watching a job that fails exits non-zero with the job's error.
    let out = backfill(&env, &["start", &integration, "--since", "2026-11-20"]).await;
    let third = text(&out.stdout).trim().to_owned();
    FakeRunner::claim(&env.pool, WAIT)
        .await
        .finish(Outcome::Failed("the CRM refused the token".into()))
        .await;
    let out = backfill(&env, &["status", &integration, &third, "--watch"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "backfill {third} failed: the CRM refused the token"
        )),
        "{}",
        text(&out.stderr)
    );

    let actors: Vec<(String, String)> =
        sqlx::query_as("SELECT action, actor FROM audit_log WHERE target_type = 'sync_job'")
            .fetch_all(&env.pool)
            .await
            .unwrap();
    assert!(actors.iter().all(|(_, actor)| actor == "cli"), "{actors:?}");
    assert_eq!(actors.len(), 4, "{actors:?}");
}
