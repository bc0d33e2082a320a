//! `crm-sync backfill start|status|cancel`: an integration's backfills from the command line.
//! Like `crm-sync apply` and `crm-sync admin`, it works on the database directly (audited as
//! actor `cli`), through the same store functions and rules as the admin API; ingest runs the
//! jobs.

use std::io::{IsTerminal as _, Write};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_store::admin::audit::Actor;
use crm_sync_store::credentials::SecretKey;
use crm_sync_store::sync_jobs::Job;
use crm_sync_store::sync_jobs::backfills::{self, Refused};
use crm_sync_store::sync_status::SyncStatus;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;
use uuid::Uuid;

use crate::context::Context;

/// How often `--watch` reads the job.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// Backfills `status` lists without a job id.
const LISTED: i64 = 10;

/// An integration as the command line names it: its id, or its name when only one company has
/// an integration of that name.
pub struct Integration {
    pub company_id: Uuid,
    pub id: Uuid,
    pub name: String,
}

pub async fn find_integration(pool: &PgPool, text: &str) -> anyhow::Result<Integration> {
    let id = Uuid::try_parse(text).ok();
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT company_id, id, name FROM integrations
         WHERE id = $1 OR ($1 IS NULL AND name = $2) ORDER BY created_at LIMIT 10",
    )
    .bind(id)
    .bind(text)
    .fetch_all(pool)
    .await
    .context("looking up the integration")?;
    match rows.as_slice() {
        [(company_id, id, name)] => Ok(Integration {
            company_id: *company_id,
            id: *id,
            name: name.clone(),
        }),
        [] => anyhow::bail!("no integration with id or name {text:?}"),
        several => anyhow::bail!(
            "{} integrations are named {text:?} (ids {}): give the integration's id",
            several.len(),
            several
                .iter()
                .map(|r| r.1.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn cli_actor() -> Actor {
    Actor {
        token_id: None,
        name: "cli".into(),
    }
}

fn refused(error: Refused) -> anyhow::Error {
    match error {
        Refused::Invalid { field, message } => {
            let flag = match field.split('/').collect::<Vec<_>>().as_slice() {
                ["since"] => "--since".to_owned(),
                ["objects", i] => format!("--object #{}", i.parse::<usize>().unwrap_or(0) + 1),
                _ => "--object".to_owned(),
            };
            anyhow::anyhow!("{flag}: {message}")
        }
        other => anyhow::anyhow!("{other}"),
    }
}

pub struct StartArgs {
    pub integration: String,
    pub since: String,
    pub objects: Vec<String>,
}

/// Starts a backfill; prints its id (on stdout, for scripts) and what was started.
pub async fn start(ctx: &Context, args: StartArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let since = backfills::parse_since(&args.since, Utc::now()).map_err(refused)?;
    let key = SecretKey::from_settings(&ctx.settings.secrets)?.ok_or_else(|| {
        anyhow::anyhow!(
            "a backfill needs the integration's CRM API credentials, which are stored encrypted: configure secrets.encryption_key (e.g. CRM_SYNC__SECRETS__ENCRYPTION_KEY), the key the services use"
        )
    })?;
    let pool = ctx.pool().await?;
    let integration = find_integration(&pool, &args.integration).await?;
    let objects = (!args.objects.is_empty()).then_some(args.objects.as_slice());
    let job = backfills::start(
        &pool,
        &key,
        &cli_actor(),
        integration.company_id,
        integration.id,
        since,
        objects,
    )
    .await
    .map_err(refused)?;
    writeln!(out, "{}", job.id)?;
    eprintln!(
        "backfill {} of {} since {} ({}) is pending: ingest picks it up shortly. Follow it with `crm-sync backfill status {} {} --watch`.",
        job.id,
        integration.name,
        timestamp(job.since),
        job.objects.join(", "),
        integration.id,
        job.id
    );
    Ok(())
}

pub struct StatusArgs {
    pub integration: String,
    pub job: Option<Uuid>,
    pub watch: bool,
}

/// Without a job: the integration's sync status and latest backfills. With one: that backfill.
/// `--watch` follows the backfill (the given one, else the running one) with a progress bar
/// until it ends, and fails unless it succeeded.
pub async fn status(ctx: &Context, args: StatusArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let pool = ctx.pool().await?;
    let integration = find_integration(&pool, &args.integration).await?;
    let (company, id) = (integration.company_id, integration.id);
    let job = match args.job {
        Some(job) => Some(
            backfills::get(&pool, company, id, job)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no backfill {job} of {}", integration.name))?,
        ),
        None => {
            print_sync_status(&pool, &integration, out).await?;
            backfills::active(&pool, company, id).await?
        }
    };
    match (job, args.watch) {
        (Some(job), true) => watch(&pool, job, out).await,
        (Some(job), false) if args.job.is_some() => Ok(write!(out, "{}", describe(&job))?),
        (None, true) => Ok(writeln!(
            out,
            "no backfill of {} is running",
            integration.name
        )?),
        _ => Ok(()),
    }
}

/// How the last reconciliation ended, after its figures: a run that failed as a whole, or the
/// objects the CRM refused while the others were reconciled (not a failed run).
fn reconciliation_end(status: &SyncStatus) -> String {
    if let Some(error) = &status.last_reconciliation_error {
        return format!(", failed: {error}");
    }
    status
        .last_reconciliation_objects_not_read
        .iter()
        .map(|o| format!(", could not read {}: {}", o.object, o.error))
        .collect()
}

async fn print_sync_status(
    pool: &PgPool,
    integration: &Integration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let status = crm_sync_store::sync_status::get(pool, integration.company_id, integration.id)
        .await?
        .unwrap_or_default();
    let never = || "never".to_owned();
    writeln!(out, "{} ({})", integration.name, integration.id)?;
    writeln!(
        out,
        "  last webhook          {}",
        status.last_webhook_at.map(timestamp).unwrap_or_else(never)
    )?;
    let reconciliation = match status.last_reconciliation_at {
        None => never(),
        Some(at) => format!(
            "{}: {} scanned, {} published, {} API calls{}",
            timestamp(at),
            status.last_reconciliation_scanned,
            status.last_reconciliation_published,
            status.last_reconciliation_api_calls,
            reconciliation_end(&status)
        ),
    };
    writeln!(out, "  last reconciliation   {reconciliation}")?;
    writeln!(
        out,
        "  missed webhooks fixed {}",
        status.missed_webhooks_fixed
    )?;
    let jobs = backfills::list(pool, integration.company_id, integration.id, None, LISTED).await?;
    if jobs.is_empty() {
        writeln!(out, "\nno backfills yet")?;
        return Ok(());
    }
    let now = Utc::now();
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.to_string(),
                j.state.clone(),
                timestamp(j.since),
                percent(j, now),
                j.records_scanned.to_string(),
                j.records_published.to_string(),
                j.requested_by.clone(),
            ]
        })
        .collect();
    let headers = [
        "BACKFILL",
        "STATE",
        "SINCE",
        "DONE",
        "SCANNED",
        "PUBLISHED",
        "REQUESTED BY",
    ];
    write!(out, "\n{}", crate::table::render(&headers, &rows))?;
    Ok(())
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn percent(job: &Job, now: DateTime<Utc>) -> String {
    job.progress(now)
        .percent
        .map(|p| format!("{p:.1}%"))
        .unwrap_or_else(|| "?".to_owned())
}

/// `1h 02m`, `3m 05s`, `18s`.
pub fn duration(secs: i64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

/// One line: state, percent, counts, rate and ETA.
pub fn progress_line(job: &Job, now: DateTime<Utc>) -> String {
    let p = job.progress(now);
    let mut line = format!(
        "{} {} scanned, {} published",
        job.state,
        match job.records_expected {
            Some(expected) => format!("{} ({}/{expected})", percent(job, now), job.records_scanned),
            None => job.records_scanned.to_string(),
        },
        job.records_published
    );
    if let Some(rate) = p.rate_per_sec {
        line.push_str(&format!(", {rate:.1} records/s"));
    }
    if let Some(eta) = p.eta_secs {
        line.push_str(&format!(", ETA {}", duration(eta)));
    }
    if job.cancel_requested && !job.ended() {
        line.push_str(", cancel requested");
    }
    line
}

fn describe(job: &Job) -> String {
    let now = Utc::now();
    let at = |t: Option<DateTime<Utc>>| t.map(timestamp).unwrap_or_else(|| "-".into());
    format!(
        "backfill {}\n  state       {}\n  since       {}\n  objects     {}\n  progress    {}\n  api calls   {}\n  last error  {}\n  requested   by {} at {}\n  started     {}\n  finished    {}\n",
        job.id,
        job.state,
        timestamp(job.since),
        job.objects.join(", "),
        progress_line(job, now),
        job.api_calls,
        job.last_error.as_deref().unwrap_or("-"),
        job.requested_by,
        timestamp(job.created_at),
        at(job.started_at),
        at(job.finished_at),
    )
}

/// Follows the job until it ends: a live bar on a terminal, else a line whenever it moves.
async fn watch(pool: &PgPool, mut job: Job, out: &mut impl Write) -> anyhow::Result<()> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let live = std::io::stderr().is_terminal() && !bar.is_hidden();
    let mut last = None;
    loop {
        let now = Utc::now();
        let line = progress_line(&job, now);
        if live {
            show(&bar, &job, &line);
        } else if last.as_ref() != Some(&line) {
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        last = Some(line);
        if job.ended() {
            break;
        }
        tokio::time::sleep(WATCH_EVERY).await;
        job = backfills::get(pool, job.company_id, job.integration_id, job.id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("backfill {} is gone", job.id))?;
    }
    bar.finish_and_clear();
    write!(out, "{}", describe(&job))?;
    match job.state.as_str() {
        "succeeded" => Ok(()),
        state => anyhow::bail!(
            "backfill {} {state}{}",
            job.id,
            job.last_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    }
}

fn show(bar: &ProgressBar, job: &Job, line: &str) {
    match job.records_expected {
        Some(expected) => {
            if bar.length() != Some(expected.max(0) as u64) {
                bar.set_length(expected.max(0) as u64);
                bar.set_style(
                    ProgressStyle::with_template("{bar:40.cyan/blue} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            bar.set_position(job.records_scanned.clamp(0, expected.max(0)) as u64);
        }
        None => bar.tick(),
    }
    bar.set_message(line.to_owned());
}

pub struct CancelArgs {
    pub integration: String,
    pub job: Uuid,
}

pub async fn cancel(ctx: &Context, args: CancelArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let pool = ctx.pool().await?;
    let integration = find_integration(&pool, &args.integration).await?;
    let job = backfills::cancel(
        &pool,
        &cli_actor(),
        integration.company_id,
        integration.id,
        args.job,
    )
    .await
    .map_err(refused)?;
    if job.state == "cancelled" {
        writeln!(out, "backfill {} cancelled", job.id)?;
    } else {
        writeln!(
            out,
            "backfill {} asked to stop: it ends after its current page ({})",
            job.id,
            progress_line(&job, Utc::now())
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(18), "18s");
        assert_eq!(duration(185), "3m 05s");
        assert_eq!(duration(3720), "1h 02m");
    }
}
