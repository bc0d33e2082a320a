//! `crm-sync migrate`: brings the database schema up to date (the migrations are embedded).

use anyhow::Context as _;
use sqlx::PgPool;

use crate::context::{Context, redact_url};

pub async fn run(ctx: &Context) -> anyhow::Result<()> {
    let pool = ctx.pool().await?;
    let before = applied(&pool).await?;
    crm_sync_store::migrate(&pool).await?;
    let after = applied(&pool).await?;
    let known = crm_sync_store::MIGRATOR.iter().count();
    println!(
        "database {}: {} new migration(s) applied, {after} of {known} in place",
        redact_url(secrecy::ExposeSecret::expose_secret(
            &ctx.settings.database.url
        )),
        after.saturating_sub(before),
    );
    Ok(())
}

/// How many migrations the database has recorded (none before the first run).
async fn applied(pool: &PgPool) -> anyhow::Result<i64> {
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await
        .context("reading the migration history")?;
    if !exists {
        return Ok(0);
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .context("reading the migration history")?;
    Ok(n)
}
