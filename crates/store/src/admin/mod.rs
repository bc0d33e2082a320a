//! The control plane's queries (admin-api and `crm-sync admin`). Every function takes the company
//! and scopes every statement by it, so a row of another company is indistinguishable from a
//! missing one: no company ever sees or learns of another's data.
//!
//! Lists are paginated by keyset: rows come in `(created_at, id)` order and a page starts after
//! the [`After`] position of the previous page's last row.

pub mod activities;
pub mod audit;
pub mod company;
pub mod health;
pub mod integrations;
pub mod people;
pub mod teams;
pub mod tokens;
pub mod users;
pub mod workflows;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::QueryAs;
use sqlx::{FromRow, Postgres};
use uuid::Uuid;

/// The position of the last row of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// Rows listed by keyset pagination: where a row stands in `(created_at, id)` order, which is
/// what the next page's cursor records.
pub trait Keyed {
    fn position(&self) -> After;
}

/// Implements [`Keyed`] for rows with `created_at` and `id` columns.
macro_rules! keyed {
    ($($row:ty),*) => {$(
        impl $crate::admin::Keyed for $row {
            fn position(&self) -> $crate::admin::After {
                $crate::admin::After { created_at: self.created_at, id: self.id }
            }
        }
    )*};
}

keyed!(
    activities::ActivityRow,
    integrations::IntegrationRow,
    teams::TeamRow,
    users::UserRow,
    workflows::WorkflowRow
);

/// `(created_at, id)` of the first row not to return again, as the two SQL parameters the list
/// queries take (`NULL`s on the first page).
pub(crate) fn after_params(after: Option<After>) -> (Option<DateTime<Utc>>, Option<Uuid>) {
    match after {
        Some(a) => (Some(a.created_at), Some(a.id)),
        None => (None, None),
    }
}

/// A company-scoped keyset list query with its common parameters bound: `$1` the company,
/// `$2`/`$3` the position after which the page starts, `$4` the limit. Callers bind their
/// filters from `$5` on.
pub(crate) fn keyset_query<'q, R>(
    sql: &'q str,
    company_id: Uuid,
    after: Option<After>,
    limit: i64,
) -> QueryAs<'q, Postgres, R, PgArguments>
where
    R: for<'r> FromRow<'r, PgRow>,
{
    let (at, id) = after_params(after);
    sqlx::query_as::<_, R>(sql)
        .bind(company_id)
        .bind(at)
        .bind(id)
        .bind(limit)
}

/// One row by id within the company: `$1` the company, `$2` the id.
pub(crate) fn by_id_query<'q, R>(
    sql: &'q str,
    company_id: Uuid,
    id: Uuid,
) -> QueryAs<'q, Postgres, R, PgArguments>
where
    R: for<'r> FromRow<'r, PgRow>,
{
    sqlx::query_as::<_, R>(sql).bind(company_id).bind(id)
}

/// The constraint a unique violation hit, if `error` is one: callers turn it into a conflict
/// naming the field.
pub fn unique_violation(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

/// The company named by its id or its slug.
pub async fn find_company(
    pool: &sqlx::PgPool,
    id_or_slug: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let id = Uuid::parse_str(id_or_slug).ok();
    sqlx::query_as::<_, (Uuid, String)>(
        "SELECT id, name FROM companies WHERE id = $1 OR ($1 IS NULL AND slug = $2)",
    )
    .bind(id)
    .bind(id_or_slug)
    .fetch_optional(pool)
    .await
}
