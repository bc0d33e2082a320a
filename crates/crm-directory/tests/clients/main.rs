//! The directory clients against a local HTTP server answering in each API's documented shape.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use crm_sync_crm_directory::{
    Config, Credentials, Crm, DirectoryClient, DirectoryUser, Egress, KeepRefreshToken,
    LookupError, OAuth,
};
use serde_json::json;

mod rotation;

/// What the fake CRM saw.
#[derive(Default)]
struct Seen {
    token_requests: AtomicUsize,
    user_requests: AtomicUsize,
    forms: Mutex<Vec<HashMap<String, String>>>,
    authorizations: Mutex<Vec<String>>,
    /// Answers to serve, in order, before the normal one: (status, retry-after).
    failures: Mutex<Vec<(StatusCode, Option<&'static str>)>>,
    delay: Mutex<Option<Duration>>,
}

impl Seen {
    fn next_failure(&self) -> Option<Response> {
        let mut f = self.failures.lock().unwrap();
        if f.is_empty() {
            return None;
        }
        let (status, retry_after) = f.remove(0);
        let mut response = (
            status,
            Json(json!([{"errorCode": "SERVER_UNAVAILABLE", "message": "try later"}])),
        )
            .into_response();
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", after.parse().unwrap());
        }
        Some(response)
    }

    fn authorization(&self, headers: &HeaderMap) -> String {
        let value = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        self.authorizations.lock().unwrap().push(value.clone());
        value
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

fn fast() -> Config {
    Config {
        timeout: Duration::from_millis(800),
        attempts: 3,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_secs(2),
        // The fake CRMs listen on 127.0.0.1 over plain http.
        egress: Egress {
            allow_insecure: true,
            extra_hosts: vec!["127.0.0.1".into()],
        },
        ..Config::default()
    }
}

fn oauth(refresh_token: Option<&str>) -> OAuth {
    OAuth {
        client_id: "client-id-1".into(),
        client_secret: "client-secret-1".into(),
        refresh_token: refresh_token.map(str::to_owned),
        token_url: None,
        scope: None,
        tenant_id: None,
    }
}

type Shared = (Arc<Seen>, Arc<Mutex<String>>);

/// Salesforce: the OAuth token endpoint (client credentials) names the instance URL; the REST
/// API answers `sobjects/User/{id}` with the record's fields and `attributes`.
fn salesforce(seen: Arc<Seen>, me: Arc<Mutex<String>>) -> Router {
    Router::new()
        .route(
            "/services/oauth2/token",
            post(
                |State((seen, me)): State<Shared>, Form(form): Form<HashMap<String, String>>| async move {
                    let n = seen.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.forms.lock().unwrap().push(form);
                    let instance = me.lock().unwrap().clone();
                    Json(json!({
                        "access_token": format!("00Dxx0000001gPL!token-{n}"),
                        "signature": "d4ti6M2EXoGHfXv3QzErRbNzXGqTmhrzr19nDV4cG+o=",
                        "scope": "api",
                        "instance_url": instance,
                        "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
                        "token_type": "Bearer",
                        "issued_at": "1705000000000"
                    }))
                },
            ),
        )
        .route(
            "/services/data/v62.0/sobjects/User/{id}",
            get(
                |State((seen, _)): State<Shared>, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap| async move {
                    seen.user_requests.fetch_add(1, Ordering::SeqCst);
                    let auth = seen.authorization(&headers);
                    if let Some(failure) = seen.next_failure() {
                        return failure;
                    }
                    if auth == "Bearer 00Dxx0000001gPL!token-1" && id == "005000000000EXPAAA" {
                        return (StatusCode::UNAUTHORIZED, Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]))).into_response();
                    }
                    if !auth.starts_with("Bearer 00Dxx0000001gPL!token-") {
                        return (StatusCode::UNAUTHORIZED, Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]))).into_response();
                    }
                    assert_eq!(q.get("fields").map(String::as_str), Some("Id,Name,Email,IsActive"));
                    if id.starts_with("005000000000NOT") {
                        return (StatusCode::NOT_FOUND, Json(json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]))).into_response();
                    }
                    Json(json!({
                        "attributes": {"type": "User", "url": format!("/services/data/v62.0/sobjects/User/{id}")},
                        "Id": id,
                        "Name": "Jane Doe",
                        "Email": "jane.doe@example.com",
                        "IsActive": true
                    }))
                    .into_response()
                },
            ),
        )
        .with_state((seen, me))
}

async fn salesforce_client(config: Config) -> (DirectoryClient, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let me = Arc::new(Mutex::new(String::new()));
    let base = serve(salesforce(seen.clone(), me.clone())).await;
    *me.lock().unwrap() = base.clone();
    let client = DirectoryClient::new(
        Crm::Salesforce,
        Credentials {
            base_url: Some(base),
            access_token: None,
            oauth: Some(oauth(None)),
        },
        config,
    )
    .unwrap();
    (client, seen)
}

#[tokio::test]
async fn salesforce_user_via_client_credentials_and_cached() {
    let (client, seen) = salesforce_client(fast()).await;
    let user = client.lookup("0055g00000AbCdEAAZ").await.unwrap();
    assert_eq!(
        user,
        DirectoryUser {
            crm_user_id: "0055g00000AbCdEAAZ".into(),
            name: Some("Jane Doe".into()),
            email: Some("jane.doe@example.com".into()),
            active: Some(true),
        }
    );
    let form = seen.forms.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], "client-id-1");
    assert_eq!(form["client_secret"], "client-secret-1");

    // Cached: no second request; the token is reused for the next user.
    client.lookup("0055g00000AbCdEAAZ").await.unwrap();
    assert_eq!(seen.user_requests.load(Ordering::SeqCst), 1);
    client.lookup("0055g00000ZyXwVAAQ").await.unwrap();
    assert_eq!(seen.user_requests.load(Ordering::SeqCst), 2);
    assert_eq!(seen.token_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_expired_salesforce_session_is_renewed_once() {
    let (client, seen) = salesforce_client(fast()).await;
    let user = client.lookup("005000000000EXPAAA").await.unwrap();
    assert_eq!(user.name.as_deref(), Some("Jane Doe"));
    assert_eq!(seen.token_requests.load(Ordering::SeqCst), 2);
    assert_eq!(
        *seen.authorizations.lock().unwrap(),
        [
            "Bearer 00Dxx0000001gPL!token-1",
            "Bearer 00Dxx0000001gPL!token-2"
        ]
    );
}

#[tokio::test]
async fn unknown_users_are_not_found_and_remembered() {
    let (client, seen) = salesforce_client(fast()).await;
    let err = client.lookup("005000000000NOTAAA").await.unwrap_err();
    assert_eq!(err, LookupError::NotFound("005000000000NOTAAA".into()));
    assert!(!err.is_transient());
    client.lookup("005000000000NOTAAA").await.unwrap_err();
    assert_eq!(seen.user_requests.load(Ordering::SeqCst), 1);
    // Ids that are not Salesforce ids never reach the API.
    let err = client.lookup("005/../../x").await.unwrap_err();
    assert!(matches!(err, LookupError::NotFound(_)));
    assert_eq!(seen.user_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_with_backoff() {
    let (client, seen) = salesforce_client(fast()).await;
    seen.failures.lock().unwrap().extend([
        (StatusCode::SERVICE_UNAVAILABLE, None),
        (StatusCode::BAD_GATEWAY, None),
    ]);
    let user = client.lookup("0055g00000AbCdEAAZ").await.unwrap();
    assert_eq!(user.email.as_deref(), Some("jane.doe@example.com"));
    assert_eq!(seen.user_requests.load(Ordering::SeqCst), 3);

    seen.failures
        .lock()
        .unwrap()
        .extend([(StatusCode::SERVICE_UNAVAILABLE, None)]);
    let err = client
        .lookup_with_attempts("0055g00000ZyXwVAAQ", 1)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
}

#[tokio::test]
async fn throttling_honours_retry_after_up_to_the_backoff_cap() {
    let (client, seen) = salesforce_client(fast()).await;
    seen.failures
        .lock()
        .unwrap()
        .push((StatusCode::TOO_MANY_REQUESTS, Some("1")));
    let started = std::time::Instant::now();
    client.lookup("0055g00000AbCdEAAZ").await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );

    seen.failures
        .lock()
        .unwrap()
        .push((StatusCode::TOO_MANY_REQUESTS, Some("3600")));
    let started = std::time::Instant::now();
    let err = client.lookup("0055g00000ZyXwVAAQ").await.unwrap_err();
    assert!(err.is_transient());
    assert!(
        matches!(&err, LookupError::RateLimited { wait, .. } if *wait == Duration::from_secs(3600)),
        "{err}"
    );
    assert!(err.to_string().contains("again in 3600s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn a_slow_api_times_out() {
    let seen = Arc::new(Seen::default());
    *seen.delay.lock().unwrap() = Some(Duration::from_secs(3));
    let router = Router::new()
        .route(
            "/crm/v3/owners/{id}",
            get(|State(seen): State<Arc<Seen>>| async move {
                seen.user_requests.fetch_add(1, Ordering::SeqCst);
                let delay = *seen.delay.lock().unwrap();
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                Json(json!({"id": "1", "email": "late@example.com"}))
            }),
        )
        .with_state(seen.clone());
    let base = serve(router).await;
    let client = DirectoryClient::new(
        Crm::HubSpot,
        Credentials {
            base_url: Some(base),
            access_token: Some("pat-na1-secret".into()),
            oauth: None,
        },
        Config {
            timeout: Duration::from_millis(200),
            attempts: 2,
            ..fast()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = client.lookup("123").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert_eq!(seen.user_requests.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// HubSpot owners API: `GET /crm/v3/owners/{ownerId}`; deactivated owners only with
/// `archived=true`.
fn hubspot(seen: Arc<Seen>) -> Router {
    Router::new()
        .route(
            "/oauth/v1/token",
            post(
                |State(seen): State<Arc<Seen>>, Form(form): Form<HashMap<String, String>>| async move {
                    seen.token_requests.fetch_add(1, Ordering::SeqCst);
                    let redeemed = form.get("refresh_token").map(String::as_str) == Some("rt-0");
                    seen.forms.lock().unwrap().push(form);
                    if !redeemed {
                        return (StatusCode::BAD_REQUEST, Json(json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token", "error": "invalid_grant"}))).into_response();
                    }
                    Json(json!({"token_type": "bearer", "refresh_token": "rt-1", "access_token": "oauth-access-1", "expires_in": 1800})).into_response()
                },
            ),
        )
        .route(
            "/crm/v3/owners/{id}",
            get(
                |State(seen): State<Arc<Seen>>, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap| async move {
                    seen.user_requests.fetch_add(1, Ordering::SeqCst);
                    let auth = seen.authorization(&headers);
                    if auth != "Bearer pat-na1-secret" && auth != "Bearer oauth-access-1" {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"status": "error", "message": "Authentication credentials not found.", "category": "INVALID_AUTHENTICATION"}))).into_response();
                    }
                    assert_eq!(q.get("idProperty").map(String::as_str), Some("id"));
                    let archived = q.get("archived").map(String::as_str) == Some("true");
                    match (id.as_str(), archived) {
                        ("41629779", false) => Json(json!({
                            "id": "41629779", "email": "mary.major@example.com", "type": "PERSON",
                            "firstName": "Mary", "lastName": "Major", "userId": 9586504, "userIdIncludingInactive": 9586504,
                            "createdAt": "2019-12-25T13:01:35.228Z", "updatedAt": "2023-08-22T13:40:26.790Z", "archived": false,
                            "teams": [{"id": "368389", "name": "Sales Team", "primary": true}]
                        })).into_response(),
                        ("55512345", true) => Json(json!({
                            "id": "55512345", "email": "gone@example.com", "firstName": "Gone", "lastName": "Person", "userId": 1, "archived": true
                        })).into_response(),
                        _ => (StatusCode::NOT_FOUND, Json(json!({"status": "error", "message": "Resource not found", "category": "OBJECT_NOT_FOUND"}))).into_response(),
                    }
                },
            ),
        )
        .with_state(seen)
}

/// A client of `crm` at `base` with a long-lived token, retrying quickly.
fn with_token(crm: Crm, base: &str, token: &str) -> DirectoryClient {
    DirectoryClient::new(
        crm,
        Credentials {
            base_url: Some(base.to_owned()),
            access_token: Some(token.into()),
            oauth: None,
        },
        fast(),
    )
    .unwrap()
}

#[tokio::test]
async fn hubspot_owners_with_a_private_app_token_including_archived_ones() {
    let seen = Arc::new(Seen::default());
    let base = serve(hubspot(seen.clone())).await;
    let client = with_token(Crm::HubSpot, &base, "pat-na1-secret");
    let mary = client.lookup("41629779").await.unwrap();
    assert_eq!(mary.name.as_deref(), Some("Mary Major"));
    assert_eq!(mary.email.as_deref(), Some("mary.major@example.com"));
    assert_eq!(mary.active, Some(true));
    let gone = client.lookup("55512345").await.unwrap();
    assert_eq!(gone.active, Some(false));
    assert_eq!(gone.name.as_deref(), Some("Gone Person"));
    assert_eq!(
        client.lookup("999").await.unwrap_err(),
        LookupError::NotFound("999".into())
    );
    assert_eq!(seen.token_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_not_transient() {
    let seen = Arc::new(Seen::default());
    let base = serve(hubspot(seen.clone())).await;
    let client = with_token(Crm::HubSpot, &base, "wrong");
    let err = client.lookup("41629779").await.unwrap_err();
    assert!(matches!(err, LookupError::Unauthorized(_)), "{err}");
    assert!(!err.is_transient());
    assert!(!err.to_string().contains("wrong"), "{err}");
}

/// Pipedrive: `GET /api/v1/users/{id}` with the API token as `api_token`.
fn pipedrive(seen: Arc<Seen>) -> Router {
    Router::new()
        .route(
            "/api/v1/users/{id}",
            get(
                |State(seen): State<Arc<Seen>>, Path(id): Path<String>, Query(q): Query<HashMap<String, String>>| async move {
                    seen.user_requests.fetch_add(1, Ordering::SeqCst);
                    if let Some(failure) = seen.next_failure() {
                        return failure;
                    }
                    if q.get("api_token").map(String::as_str) != Some("pd-api-token-1") {
                        return (StatusCode::UNAUTHORIZED, Json(json!({"success": false, "error": "unauthorized access", "errorCode": 401}))).into_response();
                    }
                    if id != "18487521" {
                        return (StatusCode::NOT_FOUND, Json(json!({"success": false, "error": "User not found", "errorCode": 404, "error_info": "Please check developers.pipedrive.com"}))).into_response();
                    }
                    Json(json!({
                        "success": true,
                        "data": {
                            "id": 18487521, "name": "Pat Pipeline", "default_currency": "EUR", "locale": "en_US", "lang": 1,
                            "email": "pat@example.com", "phone": null, "activated": true, "last_login": "2024-09-27 14:20:11",
                            "created": "2020-01-01 10:00:00", "modified": "2024-09-27 14:20:11", "has_created_company": true,
                            "access": [{"app": "sales", "admin": true, "permission_set_id": "1"}], "active_flag": true,
                            "timezone_name": "Europe/Tallinn", "timezone_offset": "+03:00", "role_id": 1, "icon_url": null, "is_you": false, "is_deleted": false
                        }
                    }))
                    .into_response()
                },
            ),
        )
        .with_state(seen)
}

#[tokio::test]
async fn pipedrive_users_with_an_api_token_that_never_shows_in_errors() {
    let seen = Arc::new(Seen::default());
    let base = serve(pipedrive(seen.clone())).await;
    let client = with_token(Crm::Pipedrive, &base, "pd-api-token-1");
    let pat = client.lookup("18487521").await.unwrap();
    assert_eq!(pat.name.as_deref(), Some("Pat Pipeline"));
    assert_eq!(pat.email.as_deref(), Some("pat@example.com"));
    assert!(matches!(
        client.lookup("1").await.unwrap_err(),
        LookupError::NotFound(_)
    ));

    seen.failures.lock().unwrap().extend([
        (StatusCode::INTERNAL_SERVER_ERROR, None),
        (StatusCode::INTERNAL_SERVER_ERROR, None),
        (StatusCode::INTERNAL_SERVER_ERROR, None),
    ]);
    let err = client.lookup("2").await.unwrap_err();
    assert!(err.is_transient());
    assert!(!err.to_string().contains("pd-api-token-1"), "{err}");

    // A refused connection: transport errors carry no URL (and so no token) either.
    let closed = DirectoryClient::new(
        Crm::Pipedrive,
        Credentials {
            base_url: Some("http://127.0.0.1:9".into()),
            access_token: Some("pd-api-token-1".into()),
            oauth: None,
        },
        Config {
            attempts: 1,
            ..fast()
        },
    )
    .unwrap();
    let err = closed.lookup("3").await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(!err.to_string().contains("pd-api-token-1"), "{err}");
}

/// Dataverse: Microsoft Entra client credentials, then `systemusers({id})` with `$select`.
fn dynamics(seen: Arc<Seen>, me: Arc<Mutex<String>>) -> Router {
    Router::new()
        .route(
            "/tenant-1/oauth2/v2.0/token",
            post(
                |State((seen, _)): State<Shared>, Form(form): Form<HashMap<String, String>>| async move {
                    seen.token_requests.fetch_add(1, Ordering::SeqCst);
                    seen.forms.lock().unwrap().push(form);
                    Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "eyJ0eXAiOiJKV1Qi.entra"}))
                },
            ),
        )
        .route(
            "/api/data/v9.2/{segment}",
            get(
                |State((seen, _)): State<Shared>, Path(segment): Path<String>, Query(q): Query<HashMap<String, String>>, headers: HeaderMap| async move {
                    seen.user_requests.fetch_add(1, Ordering::SeqCst);
                    assert_eq!(seen.authorization(&headers), "Bearer eyJ0eXAiOiJKV1Qi.entra");
                    assert_eq!(headers.get("odata-version").unwrap(), "4.0");
                    assert_eq!(q.get("$select").map(String::as_str), Some("fullname,internalemailaddress,isdisabled"));
                    let id = segment.strip_prefix("systemusers(").and_then(|s| s.strip_suffix(')')).unwrap().to_owned();
                    if id != "7d577253-3ef0-4a0a-bb7f-8335c2596e70" {
                        return (StatusCode::NOT_FOUND, Json(json!({"error": {"code": "0x80040217", "message": format!("systemuser With Id = {id} Does Not Exist")}}))).into_response();
                    }
                    Json(json!({
                        "@odata.context": "https://org.crm.dynamics.com/api/data/v9.2/$metadata#systemusers(fullname,internalemailaddress,isdisabled)/$entity",
                        "@odata.etag": "W/\"1234567\"",
                        "fullname": "Dana Dynamics",
                        "internalemailaddress": "dana@example.com",
                        "isdisabled": false,
                        "systemuserid": id
                    }))
                    .into_response()
                },
            ),
        )
        .with_state((seen, me))
}

#[tokio::test]
async fn dataverse_system_users_with_entra_client_credentials() {
    let seen = Arc::new(Seen::default());
    let me = Arc::new(Mutex::new(String::new()));
    let base = serve(dynamics(seen.clone(), me)).await;
    let client = DirectoryClient::new(
        Crm::Dynamics,
        Credentials {
            base_url: Some(base.clone()),
            access_token: None,
            oauth: Some(OAuth {
                token_url: Some(format!("{base}/tenant-1/oauth2/v2.0/token")),
                tenant_id: Some("tenant-1".into()),
                ..oauth(None)
            }),
        },
        fast(),
    )
    .unwrap();
    let dana = client
        .lookup("7d577253-3ef0-4a0a-bb7f-8335c2596e70")
        .await
        .unwrap();
    assert_eq!(dana.name.as_deref(), Some("Dana Dynamics"));
    assert_eq!(dana.email.as_deref(), Some("dana@example.com"));
    assert_eq!(dana.active, Some(true));
    let form = seen.forms.lock().unwrap()[0].clone();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["scope"], format!("{base}/.default"));
    assert!(matches!(
        client
            .lookup("00000000-0000-0000-0000-000000000001")
            .await
            .unwrap_err(),
        LookupError::NotFound(_)
    ));
    assert_eq!(seen.token_requests.load(Ordering::SeqCst), 1);
}
