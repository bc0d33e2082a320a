//! `crm-sync admin …`: control-plane chores that need no API, such as creating the first admin
//! API token of a company.

use anyhow::Context as _;
use crm_sync_store::admin::tokens::{self, Role};

use crate::context::Context;

pub struct CreateTokenArgs {
    /// The company's id or slug.
    pub company: String,
    /// `admin` or `viewer`.
    pub role: String,
    pub label: Option<String>,
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
    let created = tokens::create(&pool, company_id, role, args.label.as_deref())
        .await
        .context("creating the token")?;
    writeln!(out, "{}", created.bearer)?;
    eprintln!(
        "{} token {} for {company_name} ({company_id}). It is shown only this once: store it now.",
        role.as_str(),
        created.token.id
    );
    Ok(())
}
