use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_store::admin::audit::{self as store, Entry};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::integrations::ListQuery;
use super::{CompanyPath, ReadErrors};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::QueryParams;
use crate::paging::{self, Cursor, Page};

/// One change: who, what, when.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    /// The admin token that made the change (absent for the command-line tool).
    pub token_id: Option<Uuid>,
    /// Who made the change: to admins the token with its role and label (e.g.
    /// `token <id> (admin, "Alice's laptop")`), to viewers only `admin token`; `cli` for the
    /// command-line tool, or the service that made it.
    #[schema(example = "admin token")]
    pub actor: String,
    /// e.g. `integration.updated`, `team.member_placed`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// What changed.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl AuditEntryView {
    /// The entry as a caller reads it: an admin's (`admin`) with the actor as recorded, a
    /// viewer's with the actor of a token's change neutral.
    fn shown_to(e: Entry, admin: bool) -> Self {
        let actor = crate::auth::actor_shown(admin, e.actor, e.token_id.is_some());
        AuditEntryView {
            id: e.id,
            token_id: e.token_id,
            actor,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            details: e.details,
            at: e.at,
        }
    }
}

/// The company's audit log, newest first. Viewers do not see the changes to admin tokens (who
/// holds access), as they may not list the tokens, nor the labels of the tokens that made the
/// changes they see.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/audit-log",
    tag = "audit",
    params(CompanyPath, ListQuery),
    responses((status = 200, body = Page<AuditEntryView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page<AuditEntryView>>> {
    let limit = paging::limit(q.limit)?;
    let before = paging::before(q.cursor.as_deref())?;
    let mut rows = store::list(
        &state.pool,
        caller.company(),
        before,
        limit + 1,
        caller.is_admin(),
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| Cursor::Before(r.id).encode()))
        .flatten();
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(|e| AuditEntryView::shown_to(e, caller.is_admin()))
            .collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token_id: Option<Uuid>, actor: &str) -> Entry {
        Entry {
            id: 1,
            token_id,
            actor: actor.into(),
            action: "team.created".into(),
            target_type: "team".into(),
            target_id: "t".into(),
            details: serde_json::json!({"name": "Nordics"}),
            at: Utc::now(),
        }
    }

    #[test]
    fn viewers_read_a_tokens_change_as_an_admin_tokens_and_admins_read_the_token() {
        let id = Uuid::from_u128(7);
        let by_token = || entry(Some(id), "token 7 (admin, \"Alice's laptop\")");
        let viewer = AuditEntryView::shown_to(by_token(), false);
        assert_eq!(viewer.actor, "admin token");
        assert_eq!(viewer.token_id, Some(id));
        let admin = AuditEntryView::shown_to(by_token(), true);
        assert_eq!(admin.actor, "token 7 (admin, \"Alice's laptop\")");
        // The command-line tool and the services hold no token: named as they are.
        let cli = AuditEntryView::shown_to(entry(None, "cli"), false);
        assert_eq!(cli.actor, "cli");
    }
}
