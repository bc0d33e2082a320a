//! `crm-sync admin …`: control-plane chores that need no API, such as creating the first admin
//! API token of a company, or having the evaluators forget the record state of an integration
//! whose rows were deleted before deletions were recorded.

use anyhow::Context as _;
use crm_sync_store::admin::audit::Actor;
use crm_sync_store::admin::tokens::{self, Role};
use uuid::Uuid;

use crate::context::Context;

pub struct CreateTokenArgs {
    /// The company's id or slug.
    pub company: String,
    /// `admin` or `viewer`.
    pub role: String,
    pub label: Option<String>,
    pub expires_in_days: u32,
}

/// Creates a token and prints it once: only its hash is stored.
pub async fn create_token(
    ctx: &Context,
    args: CreateTokenArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let role = Role::parse(&args.role)
        .ok_or_else(|| anyhow::anyhow!("--role must be admin or viewer, not {:?}", args.role))?;
    let pool = ctx.pool().await?;
    let (company_id, company_name) = crm_sync_store::admin::find_company(&pool, &args.company)
        .await
        .context("looking up the company")?
        .ok_or_else(|| anyhow::anyhow!("no company with id or slug {:?}", args.company))?;
    let created = tokens::create(
        &pool,
        company_id,
        role,
        args.label.as_deref(),
        args.expires_in_days,
    )
    .await
    .context("creating the token")?;
    writeln!(out, "{}", created.bearer)?;
    eprintln!(
        "{} token {} for {company_name} ({company_id}), valid for {} days. It is shown only this once: store it now.",
        role.as_str(),
        created.token.id,
        args.expires_in_days
    );
    Ok(())
}

/// Revokes a token of any company, audited as the command-line tool.
pub async fn revoke_token(ctx: &Context, id: Uuid) -> anyhow::Result<()> {
    let pool = ctx.pool().await?;
    let actor = Actor {
        token_id: None,
        name: "cli".into(),
    };
    let revoked = tokens::revoke(&pool, None, id, &actor)
        .await
        .context("revoking the token")?
        .ok_or_else(|| anyhow::anyhow!("no admin token with id {id}"))?;
    eprintln!(
        "token {id} ({}, company {}) is revoked since {}",
        revoked.role,
        revoked.company_id,
        revoked
            .revoked_at
            .map(|at| at.to_rfc3339())
            .unwrap_or_default()
    );
    Ok(())
}

/// Records as deleted an integration whose rows are gone, so that each evaluator forgets its
/// records' state at its next purge round.
pub async fn forget_integration(ctx: &Context, id: Uuid) -> anyhow::Result<()> {
    use crm_sync_store::integrations::{Recorded, record_deleted};
    let pool = ctx.pool().await?;
    let recorded = record_deleted(&pool, id)
        .await
        .context("recording the integration as deleted")?;
    match recorded {
        Recorded::Exists => anyhow::bail!(
            "integration {id} exists; delete it through the admin API \
             (DELETE /admin/v1/companies/<company>/integrations/{id}?confirm=<its name>), \
             which also has its record state forgotten"
        ),
        Recorded::Now => eprintln!(
            "integration {id} is recorded as deleted: each evaluator forgets its records' state \
             at its next purge round (evaluator.purge_interval_secs)"
        ),
        Recorded::Already => eprintln!(
            "integration {id} was already recorded as deleted: evaluators forget its records' \
             state at each purge round"
        ),
    }
    Ok(())
}
