use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_store::admin::integrations::{
    self as store, CRMS, IntegrationChanges, IntegrationRow, NewIntegration,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{CompanyPath, ReadErrors, WriteErrors, commit_audited, conflict_on, text};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, JsonBody, QueryParams};
use crate::paging::{self, Page};

/// An integration. Its secrets are write-only: only whether one is set is ever shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct IntegrationView {
    pub id: Uuid,
    pub name: String,
    /// `salesforce`, `hubspot`, `pipedrive`, `dynamics` or `generic`.
    pub crm: String,
    /// The CRM account bound to, e.g. a Salesforce Organization ID.
    pub crm_account_id: String,
    /// Whether the first matching event of an unknown CRM user creates a (pending) account.
    pub auto_sync_users: bool,
    /// Whether a CRM user the CRM says is inactive deactivates the platform user (default on).
    pub deactivate_with_crm: bool,
    pub has_webhook_token: bool,
    /// Where the CRM sends its webhooks (on the ingest service), without the token.
    pub webhook_path: String,
    /// The whole address to paste into the CRM, when admin-api knows where CRMs reach ingest
    /// (`ingest.public_url`); for Salesforce it ends in `?token=<webhook token>`, the token's
    /// place (the token itself is shown only when generated).
    pub webhook_url: Option<String>,
    /// Whether this CRM authenticates its webhooks with the webhook token (Salesforce Outbound
    /// Messages); the others use the credentials (signing secret, basic auth, key).
    pub uses_webhook_token: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn webhook_path(r: &IntegrationRow) -> String {
    let kind = match r.crm.as_str() {
        "salesforce" => "salesforce/outbound-messages",
        "hubspot" => "hubspot/webhooks",
        "pipedrive" => "pipedrive/webhooks",
        "dynamics" => "dynamics/webhooks",
        _ => "events",
    };
    format!("/v1/integrations/{}/{kind}", r.id)
}

/// Only Salesforce's Outbound Messages carry the token (in the query).
fn uses_webhook_token(crm: &str) -> bool {
    crm == "salesforce"
}

fn webhook_url(ingest_url: Option<&str>, r: &IntegrationRow) -> Option<String> {
    let token = if uses_webhook_token(&r.crm) {
        "?token=<webhook token>"
    } else {
        ""
    };
    ingest_url.map(|base| format!("{base}{}{token}", webhook_path(r)))
}

impl IntegrationView {
    fn new(r: IntegrationRow, ingest_url: Option<&str>) -> Self {
        IntegrationView {
            webhook_path: webhook_path(&r),
            webhook_url: webhook_url(ingest_url, &r),
            uses_webhook_token: uses_webhook_token(&r.crm),
            id: r.id,
            name: r.name,
            crm: r.crm,
            crm_account_id: r.crm_account_id,
            auto_sync_users: r.auto_sync_users,
            deactivate_with_crm: r.deactivate_with_crm,
            has_webhook_token: r.has_webhook_token,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IntegrationPath {
    pub company_id: Uuid,
    pub integration_id: Uuid,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The company's integrations.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations",
    tag = "integrations",
    params(CompanyPath, ListQuery),
    responses((status = 200, body = Page<IntegrationView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page<IntegrationView>>> {
    let (limit, after) = paging::keyset_args(q.limit, q.cursor.as_deref())?;
    let rows = store::list(&state.pool, caller.company(), after, limit + 1).await?;
    let url = state.ingest_url.as_deref();
    Ok(Json(paging::keyset(rows, limit, |r| {
        IntegrationView::new(r, url)
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIntegrationBody {
    /// Unique within the company.
    pub name: String,
    /// `salesforce`, `hubspot`, `pipedrive`, `dynamics` or `generic`.
    pub crm: String,
    pub crm_account_id: String,
    #[serde(default)]
    pub auto_sync_users: bool,
    /// The webhook token the CRM will present (write-only; at least 16 characters). Omit it and
    /// generate one with `POST …/webhook-token`.
    pub webhook_token: Option<String>,
    /// Credentials to store with it (write-only), as `PATCH …/credentials` takes them.
    pub credentials: Option<super::credentials::CredentialsPatch>,
}

fn webhook_token(token: Option<&str>) -> ApiResult<Option<String>> {
    match token {
        None => Ok(None),
        Some(t) if t.len() >= 16 && t.len() <= 256 && t.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(t.to_owned()))
        }
        Some(_) => Err(ApiError::invalid(
            "webhook_token",
            "a webhook token is 16 to 256 printable ASCII characters without spaces",
        )),
    }
}

/// Connects a CRM account.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/integrations",
    tag = "integrations",
    params(CompanyPath),
    request_body = NewIntegrationBody,
    responses((status = 201, body = IntegrationView), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(body): JsonBody<NewIntegrationBody>,
) -> ApiResult<(StatusCode, Json<IntegrationView>)> {
    let new = NewIntegration {
        name: text("name", &body.name, 200)?,
        crm: if CRMS.contains(&body.crm.as_str()) {
            body.crm.clone()
        } else {
            return Err(ApiError::invalid(
                "crm",
                format!(
                    "unknown CRM `{}` (expected one of {})",
                    body.crm,
                    CRMS.join(", ")
                ),
            ));
        },
        crm_account_id: text("crm_account_id", &body.crm_account_id, 200)?,
        auto_sync_users: body.auto_sync_users,
        webhook_token: webhook_token(body.webhook_token.as_deref())?,
    };
    // Checked before anything is written: an integration is created with its credentials or
    // not at all.
    let credentials = body
        .credentials
        .map(|c| super::credentials::checked(c, &new.crm, &state))
        .transpose()?;
    let mut tx = state.pool.begin().await?;
    let row = store::create(&mut tx, caller.company(), &new)
        .await
        .map_err(conflict_on("name", "an integration with this name"))?;
    let credentials_set = match credentials {
        Some((secrets, key)) => {
            super::credentials::store(&mut tx, key, &caller, row.id, secrets).await?
        }
        None => Vec::new(),
    };
    commit_audited(
        tx,
        &caller,
        "integration.created",
        "integration",
        row.id,
        json!({"name": row.name, "crm": row.crm, "crm_account_id": row.crm_account_id,
               "auto_sync_users": row.auto_sync_users, "webhook_token_set": new.webhook_token.is_some(),
               "credentials_set": credentials_set}),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(IntegrationView::new(row, state.ingest_url.as_deref())),
    ))
}

/// One integration.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}",
    tag = "integrations",
    params(IntegrationPath),
    responses((status = 200, body = IntegrationView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
) -> ApiResult<Json<IntegrationView>> {
    store::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .map(|r| Json(IntegrationView::new(r, state.ingest_url.as_deref())))
        .or_not_found("integration")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntegrationPatch {
    pub name: Option<String>,
    pub crm_account_id: Option<String>,
    /// Turn automatic user sync on or off.
    pub auto_sync_users: Option<bool>,
    /// Whether the CRM saying its user is inactive deactivates the platform user.
    pub deactivate_with_crm: Option<bool>,
    /// Replace the webhook token (write-only; at least 16 characters).
    pub webhook_token: Option<String>,
}

/// Changes an integration, e.g. `{"auto_sync_users": true}`. Absent fields keep their value.
#[utoipa::path(
    patch,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}",
    tag = "integrations",
    params(IntegrationPath),
    request_body = IntegrationPatch,
    responses((status = 200, body = IntegrationView), WriteErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
    JsonBody(body): JsonBody<IntegrationPatch>,
) -> ApiResult<Json<IntegrationView>> {
    let changes = IntegrationChanges {
        name: body
            .name
            .as_deref()
            .map(|n| text("name", n, 200))
            .transpose()?,
        crm_account_id: body
            .crm_account_id
            .as_deref()
            .map(|n| text("crm_account_id", n, 200))
            .transpose()?,
        auto_sync_users: body.auto_sync_users,
        deactivate_with_crm: body.deactivate_with_crm,
        webhook_token: webhook_token(body.webhook_token.as_deref())?,
    };
    let mut tx = state.pool.begin().await?;
    let before = store::get(&mut *tx, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let row = store::update(&mut tx, caller.company(), p.integration_id, &changes)
        .await
        .map_err(conflict_on("name", "an integration with this name"))?
        .or_not_found("integration")?;
    let mut details = serde_json::Map::new();
    if before.name != row.name {
        details.insert("name".into(), json!({"from": before.name, "to": row.name}));
    }
    if before.crm_account_id != row.crm_account_id {
        details.insert(
            "crm_account_id".into(),
            json!({"from": before.crm_account_id, "to": row.crm_account_id}),
        );
    }
    if before.auto_sync_users != row.auto_sync_users {
        details.insert(
            "auto_sync_users".into(),
            json!({"from": before.auto_sync_users, "to": row.auto_sync_users}),
        );
    }
    if before.deactivate_with_crm != row.deactivate_with_crm {
        details.insert(
            "deactivate_with_crm".into(),
            json!({"from": before.deactivate_with_crm, "to": row.deactivate_with_crm}),
        );
    }
    if changes.webhook_token.is_some() {
        details.insert("webhook_token".into(), json!("replaced"));
    }
    commit_audited(
        tx,
        &caller,
        "integration.updated",
        "integration",
        row.id,
        details.into(),
    )
    .await?;
    Ok(Json(IntegrationView::new(row, state.ingest_url.as_deref())))
}

/// A freshly generated webhook token, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedToken {
    pub webhook_token: String,
    /// The webhook path on the ingest service; Salesforce takes the token as `?token=`.
    pub webhook_path: String,
    /// The whole address with this token, when `ingest.public_url` is configured.
    pub webhook_url: Option<String>,
}

/// Generates a new webhook token, replacing the old one at once. The token is in this answer
/// only: it is stored hashed and can never be read back.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/webhook-token",
    tag = "integrations",
    params(IntegrationPath),
    responses((status = 200, body = RotatedToken), WriteErrors)
)]
pub async fn rotate_webhook_token(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
) -> ApiResult<Json<RotatedToken>> {
    let token = crm_sync_store::secrets::new_token();
    let mut tx = state.pool.begin().await?;
    let row = store::update(
        &mut tx,
        caller.company(),
        p.integration_id,
        &IntegrationChanges {
            webhook_token: Some(token.clone()),
            ..Default::default()
        },
    )
    .await?
    .or_not_found("integration")?;
    commit_audited(
        tx,
        &caller,
        "integration.webhook_token_rotated",
        "integration",
        row.id,
        json!({}),
    )
    .await?;
    let webhook_url = webhook_url(state.ingest_url.as_deref(), &row)
        .map(|url| url.replace("<webhook token>", &token));
    Ok(Json(RotatedToken {
        webhook_path: webhook_path(&row),
        webhook_url,
        webhook_token: token,
    }))
}
