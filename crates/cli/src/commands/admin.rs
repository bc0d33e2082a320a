//! `crm-sync admin …`: control-plane chores that need no API, such as creating the first admin
//! API token of a company.

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
