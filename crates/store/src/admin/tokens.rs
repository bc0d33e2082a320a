//! Admin API bearer tokens: `csa_<token id>_<secret>`. Only the secret's SHA-256 is stored; the
//! id finds the row, and the secret is compared in constant time, so that timing tells an
//! attacker nothing about it.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::{After, keyset_query};
use crate::StoreError;
use crate::admin::audit::Actor;

const PREFIX: &str = "csa_";
/// How long a token lives unless its creator says otherwise.
pub const DEFAULT_LIFETIME_DAYS: u32 = 90;
/// The longest lifetime a token may be given.
pub const MAX_LIFETIME_DAYS: u32 = 730;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads and changes everything of its company.
    Admin,
    /// Reads everything of its company, changes nothing.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminToken {
    pub id: Uuid,
    pub company_id: Uuid,
    pub company_name: String,
    pub role: Role,
    pub label: Option<String>,
}

impl AdminToken {
    /// How the audit log names this token's holder.
    pub fn actor(&self) -> String {
        match &self.label {
            Some(label) => format!("token {} ({}, {label:?})", self.id, self.role.as_str()),
            None => format!("token {} ({})", self.id, self.role.as_str()),
        }
    }
}

/// Whether `actor` (as recorded, e.g. a backfill's `requested_by`) names an admin token, as
/// [`AdminToken::actor`] writes it, rather than the command-line tool or a service.
pub fn is_token_actor(actor: &str) -> bool {
    actor.starts_with("token ")
}

/// A token just created: `bearer` is shown once and cannot be recovered later.
#[derive(Debug, Clone)]
pub struct CreatedToken {
    pub token: AdminToken,
    pub bearer: String,
}

/// Creates a token valid for `lifetime_days` (1 to [`MAX_LIFETIME_DAYS`]).
pub async fn create(
    pool: &PgPool,
    company_id: Uuid,
    role: Role,
    label: Option<&str>,
    lifetime_days: u32,
) -> Result<CreatedToken, StoreError> {
    if !(1..=MAX_LIFETIME_DAYS).contains(&lifetime_days) {
        return Err(StoreError::Invalid(format!(
            "a token lives 1 to {MAX_LIFETIME_DAYS} days, not {lifetime_days}"
        )));
    }
    let expires_at = Utc::now() + Duration::days(i64::from(lifetime_days));
    let id = Uuid::new_v4();
    let secret = crate::secrets::new_token();
    let mut tx = pool.begin().await?;
    let company: Option<(String,)> = sqlx::query_as("SELECT name FROM companies WHERE id = $1")
        .bind(company_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some((company_name,)) = company else {
        return Err(StoreError::Invalid(format!(
            "company {company_id} does not exist"
        )));
    };
    sqlx::query(
        "INSERT INTO admin_tokens (id, company_id, role, token_sha256, label, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(company_id)
    .bind(role.as_str())
    .bind(crate::secrets::token_digest(&secret))
    .bind(label)
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    let token = AdminToken {
        id,
        company_id,
        company_name,
        role,
        label: label.map(str::to_owned),
    };
    crate::admin::audit::record(
        &mut tx,
        company_id,
        &crate::admin::audit::Actor {
            token_id: None,
            name: "cli".into(),
        },
        "admin_token.created",
        "admin_token",
        &id.to_string(),
        serde_json::json!({ "role": role.as_str(), "label": label, "expires_at": expires_at }),
    )
    .await?;
    tx.commit().await?;
    Ok(CreatedToken {
        token,
        bearer: format!("{PREFIX}{}_{secret}", id.simple()),
    })
}

/// The live token `presented` is, if any. Malformed, unknown, expired, revoked and
/// wrong-secret tokens all answer `None`.
pub async fn authenticate(
    pool: &PgPool,
    presented: &str,
) -> Result<Option<AdminToken>, sqlx::Error> {
    let Some((id, secret)) = parse(presented) else {
        return Ok(None);
    };
    #[derive(sqlx::FromRow)]
    struct Row {
        company_id: Uuid,
        company_name: String,
        role: String,
        token_sha256: Vec<u8>,
        label: Option<String>,
    }
    let row = sqlx::query_as::<_, Row>(
        "SELECT t.company_id, c.name AS company_name, t.role, t.token_sha256, t.label
         FROM admin_tokens t JOIN companies c ON c.id = t.company_id
         WHERE t.id = $1 AND t.revoked_at IS NULL AND t.expires_at > now()",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|r| {
        if !crate::secrets::token_matches(&r.token_sha256, secret) {
            return None;
        }
        Some(AdminToken {
            id,
            company_id: r.company_id,
            company_name: r.company_name,
            role: Role::parse(&r.role)?,
            label: r.label,
        })
    }))
}

/// A token as listed: never its secret (only a hash of it is stored anyway).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub company_id: Uuid,
    pub role: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl super::Keyed for TokenRow {
    fn position(&self) -> After {
        After {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

const COLUMNS: &str = "id, company_id, role, label, created_at, expires_at, revoked_at";

/// The company's tokens, live or not, oldest first.
pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<TokenRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM admin_tokens
         WHERE company_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
         ORDER BY created_at, id LIMIT $4"
    );
    keyset_query(&sql, company_id, after, limit)
        .fetch_all(pool)
        .await
}

/// Revokes the token (of `company_id` only, when given) and audits it, at once for every
/// request that presents it. Revoking a revoked token changes nothing. None: no such token.
pub async fn revoke(
    pool: &PgPool,
    company_id: Option<Uuid>,
    token_id: Uuid,
    actor: &Actor,
) -> Result<Option<TokenRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM admin_tokens
         WHERE id = $1 AND ($2::uuid IS NULL OR company_id = $2) FOR UPDATE"
    );
    let row: Option<TokenRow> = sqlx::query_as(&sql)
        .bind(token_id)
        .bind(company_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(mut row) = row else {
        return Ok(None);
    };
    if row.revoked_at.is_none() {
        let (at,): (DateTime<Utc>,) = sqlx::query_as(
            "UPDATE admin_tokens SET revoked_at = now() WHERE id = $1 RETURNING revoked_at",
        )
        .bind(token_id)
        .fetch_one(&mut *tx)
        .await?;
        row.revoked_at = Some(at);
        crate::admin::audit::record(
            &mut tx,
            row.company_id,
            actor,
            "admin_token.revoked",
            "admin_token",
            &token_id.to_string(),
            serde_json::json!({ "role": row.role, "label": row.label }),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Some(row))
}

fn parse(presented: &str) -> Option<(Uuid, &str)> {
    let rest = presented.trim().strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if secret.is_empty() {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_parse() {
        let id = Uuid::new_v4();
        let token = format!("csa_{}_abc", id.simple());
        assert_eq!(parse(&token), Some((id, "abc")));
        assert_eq!(parse(&format!("csa_{}_", id.simple())), None);
        assert_eq!(parse("csa_nope_abc"), None);
        assert_eq!(parse(&format!("{}_abc", id.simple())), None);
        assert_eq!(parse(""), None);
    }
}
