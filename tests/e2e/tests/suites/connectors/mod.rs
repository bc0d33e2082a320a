//! Shared by the `connectors_*` suites: integrations with encrypted credentials, a fake CRM API
//! answering in each CRM's documented shape (users, owners, system users, OAuth tokens), the
//! services configured with the encryption key, and CRM-style request signing written here
//! independently of ingest's own code.

pub mod user_events;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
pub use crm_sync_e2e::app::{Answer, post};
use crm_sync_e2e::app::{App, AppOptions, Vars, spawn_app};
use crm_sync_e2e::{TestEnv, eventually, read_topic};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::{CrmEvent, UserProvisioned};
use crm_sync_store::credentials::{self, IntegrationSecrets, SecretKey};
use crm_sync_store::tenants::{self, IntegrationInput};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

/// The services' `secrets.encryption_key` in these suites (32 bytes, base64).
pub const ENCRYPTION_KEY: &str = "zHb8wT3nqV0rXy5kLm2pQs7uEf9gJd4aRt6cNv1oWiY=";

pub fn key() -> SecretKey {
    SecretKey::parse(ENCRYPTION_KEY).unwrap()
}

/// What ingest and the provisioner need on top of the test kit's environment: the key, and a
/// fast background completion of failed lookups.
pub const SERVICE_ENV: [(&str, &str); 3] = [
    ("CRM_SYNC__SECRETS__ENCRYPTION_KEY", ENCRYPTION_KEY),
    ("CRM_SYNC__DIRECTORY__COMPLETION_INTERVAL_SECS", "1"),
    ("CRM_SYNC__DIRECTORY__TIMEOUT_MS", "1000"),
];

pub struct Setup {
    pub env: TestEnv,
    pub company_id: Uuid,
    pub integration_id: Uuid,
}

/// A company with one auto-syncing integration of `crm` (credentials stored encrypted) and one
/// active workflow.
pub async fn setup(
    name: &str,
    crm: &str,
    crm_account_id: &str,
    secrets: IntegrationSecrets,
    webhook_token: Option<&str>,
    workflow: Value,
) -> Setup {
    let env = TestEnv::new(name).await;
    let company_id = tenants::upsert_company(&env.pool, None, "acme", "Acme Inc.")
        .await
        .unwrap();
    let integration_id = add_integration(
        &env,
        company_id,
        crm,
        crm,
        crm_account_id,
        secrets,
        webhook_token,
    )
    .await;
    crm_sync_e2e::upsert_workflow(&env.pool, company_id, integration_id, None, workflow, true)
        .await;
    Setup {
        env,
        company_id,
        integration_id,
    }
}

pub async fn add_integration(
    env: &TestEnv,
    company_id: Uuid,
    name: &str,
    crm: &str,
    crm_account_id: &str,
    secrets: IntegrationSecrets,
    webhook_token: Option<&str>,
) -> Uuid {
    // The outbound policy the kit's services run with (fake CRMs on 127.0.0.1 over http).
    let egress = crm_sync_store::credentials::Egress {
        allow_insecure: true,
        extra_hosts: vec!["127.0.0.1".into()],
    };
    secrets.validate(crm, &egress).unwrap();
    let id = tenants::upsert_integration(
        &env.pool,
        &IntegrationInput {
            id: None,
            company_id,
            name: name.into(),
            crm: crm.into(),
            crm_account_id: crm_account_id.into(),
            auto_sync_users: true,
            webhook_token: webhook_token.map(str::to_owned),
        },
    )
    .await
    .unwrap();
    if !secrets.is_empty() {
        credentials::update(&env.pool, &key(), company_id, id, secrets)
            .await
            .unwrap();
    }
    id
}

/// The pipeline with the encryption key and fast directory completion; `ingest_env` on top of
/// ingest's, where pull jobs stay off: the fake CRM here answers user lookups and tokens only,
/// and the suites count its token requests (`ingest_env` comes later and wins).
pub async fn start_pipeline<'e>(env: &'e TestEnv, ingest_env: Vars<'_>) -> App<'e> {
    start_pipeline_with(env, ingest_env, &[]).await
}

/// [`start_pipeline`], with `provisioner_env` on top of the provisioner's usual environment.
pub async fn start_pipeline_with<'e>(
    env: &'e TestEnv,
    ingest_env: Vars<'_>,
    provisioner_env: Vars<'_>,
) -> App<'e> {
    let mut ingest_vars = SERVICE_ENV.to_vec();
    ingest_vars.push(("CRM_SYNC__PULL__ENABLED", "false"));
    ingest_vars.extend_from_slice(ingest_env);
    let mut provisioner_vars = SERVICE_ENV.to_vec();
    provisioner_vars.extend_from_slice(provisioner_env);
    let options = AppOptions {
        ingest_env: &ingest_vars,
        provisioner_env: &provisioner_vars,
        ..AppOptions::default()
    };
    spawn_app(env, options).await
}

pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `X-HubSpot-Signature-v3` as HubSpot computes it: base64 HMAC-SHA256 of method + URI + body +
/// timestamp, keyed with the app's client secret.
pub fn hubspot_signature(secret: &str, uri: &str, body: &str, timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("POST{uri}{body}{timestamp}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `X-Crm-Sync-Signature`, the generic endpoint's signature: `t=<unix>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`.
pub fn crm_sync_signature(secret: &str, unix: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{unix}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={unix},v1={hex}")
}

pub async fn crm_events(env: &TestEnv) -> Vec<CrmEvent> {
    read_topic(&env.topics.events)
        .await
        .iter()
        .map(|r| CrmEvent::decode(r.payload.as_slice()).unwrap())
        .collect()
}

pub async fn users_announced(env: &TestEnv) -> Vec<UserProvisioned> {
    read_topic(&env.topics.users)
        .await
        .iter()
        .map(|r| UserProvisioned::decode(r.payload.as_slice()).unwrap())
        .collect()
}

/// An activity and the account it belongs to.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ActivityRow {
    pub state: String,
    pub value: String,
    pub crm_user_id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub user_status: Option<String>,
}

pub async fn activity(env: &TestEnv, integration_id: Uuid, record_id: &str) -> Option<ActivityRow> {
    sqlx::query_as(
        "SELECT a.state, a.value::text AS value, a.crm_user_id, u.display_name, u.email, u.status AS user_status
         FROM activities a LEFT JOIN users u ON u.id = a.user_id
         WHERE a.integration_id = $1 AND a.record_id = $2",
    )
    .bind(integration_id)
    .bind(record_id)
    .fetch_optional(&env.pool)
    .await
    .unwrap()
}

/// Waits until the record's activity exists in `state`.
pub async fn wait_for_activity(
    env: &TestEnv,
    integration_id: Uuid,
    record_id: &str,
    state: &str,
) -> ActivityRow {
    eventually(
        &format!("activity of {record_id} {state}"),
        Duration::from_secs(30),
        || async {
            activity(env, integration_id, record_id)
                .await
                .filter(|a| a.state == state)
        },
    )
    .await
}

pub async fn count(env: &TestEnv, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&env.pool).await.unwrap();
    n
}

/// A CRM API in this process: each CRM's user endpoint, plus OAuth token endpoints, answering in
/// the documented shapes. `unavailable(n)` makes the next `n` user lookups answer 503;
/// `hang_lookups(true)` holds every user lookup unanswered until `hang_lookups(false)`.
#[derive(Clone)]
pub struct FakeCrm {
    pub base_url: String,
    state: Arc<FakeState>,
}

#[derive(Default)]
struct FakeState {
    users: Mutex<HashMap<String, (String, String)>>,
    /// Users the CRM reports inactive (Salesforce `IsActive: false`).
    inactive: Mutex<std::collections::HashSet<String>>,
    unavailable: AtomicUsize,
    /// While true, user lookups get no answer (a CRM that hangs); set to false, they are answered.
    hanging: tokio::sync::watch::Sender<bool>,
    lookups: AtomicUsize,
    tokens: AtomicUsize,
    base_url: Mutex<String>,
    /// With refresh-token rotation on (as a Salesforce connected app can be): the only refresh
    /// token the endpoint accepts; each use answers with a new one and revokes the old.
    refresh_token: Mutex<Option<String>>,
}

impl FakeCrm {
    pub async fn start() -> FakeCrm {
        let state = Arc::new(FakeState::default());
        let router = Router::new()
            .route(
                "/services/oauth2/token",
                axum::routing::post(salesforce_token),
            )
            .route(
                "/services/data/v62.0/sobjects/User/{id}",
                get(salesforce_user),
            )
            .route("/crm/v3/owners/{id}", get(hubspot_owner))
            .route("/api/v1/users/{id}", get(pipedrive_user))
            .route(
                "/tenant-1/oauth2/v2.0/token",
                axum::routing::post(entra_token),
            )
            .route("/api/data/v9.2/{segment}", get(dataverse_user))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        *state.base_url.lock().unwrap() = base_url.clone();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        FakeCrm { base_url, state }
    }

    pub fn add_user(&self, id: &str, name: &str, email: &str) {
        self.state
            .users
            .lock()
            .unwrap()
            .insert(id.to_owned(), (name.to_owned(), email.to_owned()));
    }

    /// The CRM reports the user inactive from now on.
    pub fn deactivate_user(&self, id: &str) {
        self.state.inactive.lock().unwrap().insert(id.to_owned());
    }

    pub fn unavailable(&self, next_lookups: usize) {
        self.state.unavailable.store(next_lookups, Ordering::SeqCst);
    }

    /// With `true`, user lookups hang (token requests are still answered) until called with
    /// `false`, which answers the waiting ones too.
    pub fn hang_lookups(&self, hang: bool) {
        self.state.hanging.send_replace(hang);
    }

    pub fn lookups(&self) -> usize {
        self.state.lookups.load(Ordering::SeqCst)
    }

    pub fn tokens(&self) -> usize {
        self.state.tokens.load(Ordering::SeqCst)
    }

    /// Turns refresh-token rotation on, `current` being the only refresh token accepted.
    pub fn rotate_refresh_tokens(&self, current: &str) {
        *self.state.refresh_token.lock().unwrap() = Some(current.to_owned());
    }

    pub fn current_refresh_token(&self) -> Option<String> {
        self.state.refresh_token.lock().unwrap().clone()
    }
}

impl FakeState {
    /// Returns once user lookups are not hanging.
    async fn unless_hanging(&self) {
        let mut hanging = self.hanging.subscribe();
        // The sender lives as long as the state, so the wait cannot fail.
        let _ = hanging.wait_for(|hang| !*hang).await;
    }

    /// Counts the lookup; the error answer when it must fail or the user is unknown.
    #[allow(clippy::result_large_err)]
    fn lookup(&self, id: &str, not_found: Value) -> Result<(String, String), Response> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"message": "Service temporarily unavailable"})),
            )
                .into_response());
        }
        self.users
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| (StatusCode::NOT_FOUND, Json(not_found)).into_response())
    }
}

fn bearer(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn salesforce_token(
    State(s): State<Arc<FakeState>>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    s.tokens.fetch_add(1, Ordering::SeqCst);
    let instance = s.base_url.lock().unwrap().clone();
    let mut answer = json!({
        "access_token": "00Dxx0000001gPL!e2e-token", "signature": "sig", "scope": "api",
        "instance_url": instance, "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
        "token_type": "Bearer", "issued_at": "1705000000000"
    });
    let mut rotation = s.refresh_token.lock().unwrap();
    if let Some(current) = rotation.as_mut()
        && form.get("grant_type").map(String::as_str) == Some("refresh_token")
    {
        if form.get("refresh_token") != Some(current) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "invalid_grant", "error_description": "expired access/refresh token"})),
            )
                .into_response();
        }
        let n: u32 = current.trim_start_matches("rt-").parse().unwrap();
        *current = format!("rt-{}", n + 1);
        answer["refresh_token"] = json!(current.clone());
    }
    Json(answer).into_response()
}

async fn salesforce_user(
    State(s): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.unless_hanging().await;
    if bearer(&headers) != "Bearer 00Dxx0000001gPL!e2e-token" {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])),
        )
            .into_response();
    }
    match s.lookup(&id, json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])) {
        Ok((name, email)) => Json(json!({
            "attributes": {"type": "User", "url": format!("/services/data/v62.0/sobjects/User/{id}")},
            "Id": id, "Name": name, "Email": email,
            "IsActive": !s.inactive.lock().unwrap().contains(&id)
        }))
        .into_response(),
        Err(answer) => answer,
    }
}

async fn hubspot_owner(
    State(s): State<Arc<FakeState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.unless_hanging().await;
    if bearer(&headers) != "Bearer pat-na1-e2e" {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": "error", "message": "Authentication credentials not found.", "category": "INVALID_AUTHENTICATION"})),
        )
            .into_response();
    }
    match s.lookup(
        &id,
        json!({"status": "error", "message": "Resource not found", "category": "OBJECT_NOT_FOUND"}),
    ) {
        Ok((name, email)) => {
            let (first, last) = name.split_once(' ').unwrap_or((name.as_str(), ""));
            Json(json!({
                "id": id, "email": email, "type": "PERSON", "firstName": first, "lastName": last,
                "userId": 9586504, "createdAt": "2019-12-25T13:01:35.228Z", "updatedAt": "2023-08-22T13:40:26.790Z", "archived": false
            }))
            .into_response()
        }
        Err(answer) => answer,
    }
}

async fn pipedrive_user(
    State(s): State<Arc<FakeState>>,
    Path(id): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    s.unless_hanging().await;
    if query.get("api_token").map(String::as_str) != Some("pd-api-e2e") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"success": false, "error": "unauthorized access", "errorCode": 401})),
        )
            .into_response();
    }
    match s.lookup(&id, json!({"success": false, "error": "User not found", "errorCode": 404})) {
        Ok((name, email)) => Json(json!({
            "success": true,
            "data": {"id": id.parse::<i64>().unwrap_or(0), "name": name, "email": email, "active_flag": true, "is_deleted": false}
        }))
        .into_response(),
        Err(answer) => answer,
    }
}

async fn entra_token(State(s): State<Arc<FakeState>>) -> Json<Value> {
    s.tokens.fetch_add(1, Ordering::SeqCst);
    Json(
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "eyJ0eXAi.e2e"}),
    )
}

async fn dataverse_user(
    State(s): State<Arc<FakeState>>,
    Path(segment): Path<String>,
    headers: HeaderMap,
) -> Response {
    s.unless_hanging().await;
    if bearer(&headers) != "Bearer eyJ0eXAi.e2e" {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "0x80072560", "message": "The user is not a member of the organization."}})),
        )
            .into_response();
    }
    let id = segment
        .strip_prefix("systemusers(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_default()
        .to_owned();
    match s.lookup(&id, json!({"error": {"code": "0x80040217", "message": format!("systemuser With Id = {id} Does Not Exist")}})) {
        Ok((name, email)) => Json(json!({
            "@odata.context": "https://org.crm.dynamics.com/api/data/v9.2/$metadata#systemusers(fullname,internalemailaddress,isdisabled)/$entity",
            "fullname": name, "internalemailaddress": email, "isdisabled": false, "systemuserid": id
        }))
        .into_response(),
        Err(answer) => answer,
    }
}
