//! Fake CRM APIs for the pull clients and jobs: one local HTTP server per test speaking a CRM's
//! documented paging, error and rate-limit shapes, over records the test adds, changes and
//! deletes. Every request is logged (method, path, query, status, time) for assertions, and
//! answers can be scripted ahead (a 429 with `Retry-After`, a 500, garbage, each CRM's own
//! rate-limit answers: [`RateLimit`]).
//!
//! - [`salesforce`]: `queryAll` with SOQL on `SystemModstamp`, `nextRecordsUrl` locators
//!   (expiring after 15 minutes unused, at most 10 open), `sobjects/{object}/{id}`,
//!   `Sforce-Limit-Info` on every answer, `INVALID_FIELD` for fields hidden from the API user;
//! - [`hubspot`]: CRM search with its 10,000-result window, sorted on the one property asked
//!   for (records sharing a stamp in no fixed order, offsets into the live result set, so that
//!   a record edited mid-pass moves to its end), archived listings, batch read, a per-second
//!   limit answered with HubSpot's 429 body;
//! - [`pipedrive`]: v2 lists with `updated_since` and cursors, `status=deleted`, `api_token`;
//! - [`dynamics`]: Web API collections with `$filter`, `$select`, `odata.maxpagesize`,
//!   `@odata.nextLink`.

pub mod dynamics;
pub mod hubspot;
mod limits;
mod oauth;
pub mod pipedrive;
pub mod salesforce;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Salesforce,
    HubSpot,
    Pipedrive,
    Dynamics,
}

pub use limits::RateLimit;
pub use oauth::{Refresh, TOKEN_PATHS};

/// One record as the fake CRM holds it.
#[derive(Debug, Clone)]
pub struct FakeRecord {
    pub fields: Map<String, Value>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub deleted: Option<DateTime<Utc>>,
}

/// One request the fake CRM answered.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub body: String,
    pub status: u16,
    pub at: Instant,
}

/// A scripted answer: served in place of the next normal one.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub retry_after: Option<u64>,
    /// Further headers, as the CRM sends them with such an answer.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub struct Shared {
    pub kind: Kind,
    /// The access token requests must carry (a new one once the token endpoint issues one).
    pub token: Mutex<String>,
    /// The token endpoint's refresh token, once [`FakeCrm::rotate_refresh_tokens`] is called.
    pub refresh: Mutex<Option<Refresh>>,
    /// (object, id) → record.
    pub records: Mutex<BTreeMap<(String, String), FakeRecord>>,
    pub log: Mutex<Vec<Logged>>,
    pub script: Mutex<VecDeque<Scripted>>,
    /// Open query results (Salesforce locators, Dataverse next links): id → remaining rows.
    pub locators: Mutex<HashMap<String, Vec<Value>>>,
    /// Salesforce daily API usage: (used, limit).
    pub api_usage: Mutex<(u64, u64)>,
    /// HubSpot requests allowed per second (None: unlimited).
    pub per_second: Mutex<Option<usize>>,
    /// HubSpot requests allowed in any 10 seconds (None: unlimited).
    pub per_ten_seconds: Mutex<Option<usize>>,
    /// Dataverse tables whose change tracking is not enabled.
    pub untracked: Mutex<BTreeSet<String>>,
    /// Fields the API user may not read (field-level security): (object, field).
    pub hidden: Mutex<BTreeSet<(String, String)>>,
    /// Objects the API user may not read (no read permission in its profile).
    pub denied: Mutex<BTreeSet<String>>,
    /// Salesforce: how long a query locator lives unused (15 minutes), and when each open one
    /// was last used.
    pub locator_idle: Mutex<std::time::Duration>,
    pub locator_used: Mutex<HashMap<String, Instant>>,
    /// Records written (created, changed, deleted) so far: HubSpot's search orders records
    /// sharing a stamp by where its index holds them, which moves as records are written.
    pub writes: Mutex<u64>,
    last_stamp: Mutex<DateTime<Utc>>,
}

/// A running fake CRM API.
#[derive(Clone)]
pub struct FakeCrm {
    pub url: String,
    pub shared: Arc<Shared>,
}

impl FakeCrm {
    /// Starts the fake API on a free local port; requests must carry `token`.
    pub async fn start(kind: Kind, token: &str) -> FakeCrm {
        let shared = Arc::new(Shared {
            kind,
            token: Mutex::new(token.to_owned()),
            refresh: Mutex::default(),
            records: Mutex::default(),
            log: Mutex::default(),
            script: Mutex::default(),
            locators: Mutex::default(),
            api_usage: Mutex::new((0, 15_000)),
            per_second: Mutex::new(None),
            per_ten_seconds: Mutex::new(None),
            untracked: Mutex::default(),
            hidden: Mutex::default(),
            denied: Mutex::default(),
            locator_idle: Mutex::new(std::time::Duration::from_secs(15 * 60)),
            locator_used: Mutex::default(),
            writes: Mutex::new(0),
            last_stamp: Mutex::new(DateTime::<Utc>::MIN_UTC),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeCrm {
            url: format!("http://{address}"),
            shared,
        }
    }

    fn tick(&self) -> DateTime<Utc> {
        next_stamp(&self.shared)
    }

    /// Turns Dataverse change tracking off for a table, as its settings can.
    pub fn untrack(&self, object: &str) {
        self.shared
            .untracked
            .lock()
            .unwrap()
            .insert(object.to_owned());
    }

    /// Hides a field from the API user, as field-level security does: Salesforce answers a query
    /// naming it with 400 `INVALID_FIELD`.
    pub fn hide_field(&self, object: &str, field: &str) {
        self.shared
            .hidden
            .lock()
            .unwrap()
            .insert((object.to_owned(), field.to_owned()));
    }

    /// Takes the read permission on an object from the API user: Salesforce answers a query of
    /// it with 403 `INSUFFICIENT_ACCESS_OR_READONLY`.
    pub fn deny_object(&self, object: &str) {
        self.shared.denied.lock().unwrap().insert(object.to_owned());
    }

    /// Salesforce: every open query locator expires, as after 15 minutes unused (a job waiting
    /// out a retry): their next use is answered with 400 `INVALID_QUERY_LOCATOR`.
    pub fn expire_open_locators(&self) {
        let mut used = self.shared.locator_used.lock().unwrap();
        let mut locators = self.shared.locators.lock().unwrap();
        for (id, _) in used.drain() {
            locators.remove(&id);
        }
    }

    /// Turns the token endpoint on (`/services/oauth2/token`, `/oauth/token`) with `current` as
    /// the refresh token it accepts. Each refresh issues a new access token and a new refresh
    /// token and revokes the one presented, as Pipedrive does (and Salesforce with rotation on):
    /// presenting a revoked one is answered 400 `invalid_grant`.
    pub fn rotate_refresh_tokens(&self, current: &str) {
        *self.shared.refresh.lock().unwrap() = Some(Refresh {
            current: current.to_owned(),
            issued: 0,
        });
    }

    /// The refresh token the token endpoint accepts now.
    pub fn current_refresh_token(&self) -> Option<String> {
        self.shared
            .refresh
            .lock()
            .unwrap()
            .as_ref()
            .map(|r| r.current.clone())
    }

    /// Creates the record or merges `fields` into it, stamped now.
    pub fn put(&self, object: &str, id: &str, fields: Value) {
        let at = self.tick();
        self.put_at(object, id, fields, at);
    }

    /// Creates the record or merges `fields` into it, stamped `at`.
    pub fn put_at(&self, object: &str, id: &str, fields: Value, at: DateTime<Utc>) {
        let Value::Object(fields) = fields else {
            panic!("fields must be a JSON object");
        };
        let mut records = self.shared.records.lock().unwrap();
        let record = records
            .entry((object.to_owned(), id.to_owned()))
            .or_insert_with(|| FakeRecord {
                fields: Map::new(),
                created: at,
                modified: at,
                deleted: None,
            });
        record.fields.extend(fields);
        record.modified = at;
        record.deleted = None;
        *self.shared.writes.lock().unwrap() += 1;
    }

    /// Deletes the record (it stays visible to the CRM's "deleted" listings).
    pub fn delete(&self, object: &str, id: &str) {
        let at = self.tick();
        self.delete_at(object, id, at);
    }

    /// Deletes the record, stamped `at`.
    pub fn delete_at(&self, object: &str, id: &str, at: DateTime<Utc>) {
        let mut records = self.shared.records.lock().unwrap();
        if let Some(r) = records.get_mut(&(object.to_owned(), id.to_owned())) {
            r.deleted = Some(at);
            r.modified = at;
        }
        *self.shared.writes.lock().unwrap() += 1;
    }

    /// Serves `status` (with `Retry-After: retry_after` and `body`) to the next request.
    pub fn fail_next(&self, status: u16, retry_after: Option<u64>, body: &str) {
        self.shared.script.lock().unwrap().push_back(Scripted {
            status,
            retry_after,
            headers: Vec::new(),
            body: body.to_owned(),
        });
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Requests whose path contains `part`.
    pub fn requests_to(&self, part: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.contains(part))
            .collect()
    }

    /// Salesforce: the org's daily API usage reported in `Sforce-Limit-Info`.
    pub fn set_api_usage(&self, used: u64, limit: u64) {
        *self.shared.api_usage.lock().unwrap() = (used, limit);
    }

    /// HubSpot: requests allowed per second before its `SECONDLY` 429.
    pub fn set_per_second(&self, limit: Option<usize>) {
        *self.shared.per_second.lock().unwrap() = limit;
    }

    /// HubSpot: requests allowed in any 10 seconds before its `TEN_SECONDLY_ROLLING` 429.
    pub fn set_per_ten_seconds(&self, limit: Option<usize>) {
        *self.shared.per_ten_seconds.lock().unwrap() = limit;
    }

    /// Serves the CRM's own answer for `limit` to the next request.
    pub fn rate_limit_next(&self, limit: RateLimit) {
        self.shared.script.lock().unwrap().push_back(limit.answer());
    }
}

/// The request as a CRM module sees it.
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The fake's own root URL as the client called it.
    pub base: String,
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let request = Request {
        method: method.clone(),
        path: uri.path().to_owned(),
        query: query.clone(),
        headers: headers.clone(),
        body: body.clone(),
        base: format!("http://{host}"),
    };
    let mut response = answer(&shared, &request);
    if response.status().is_redirection() {
        // A scripted redirect leads back to the same URL: a client that followed it would get
        // the real answer.
        response
            .headers_mut()
            .insert("location", uri.to_string().parse().unwrap());
    }
    shared.log.lock().unwrap().push(Logged {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: response.status().as_u16(),
        at: Instant::now(),
    });
    response
}

fn answer(shared: &Shared, request: &Request) -> Response {
    if let Some(s) = shared.script.lock().unwrap().pop_front() {
        let mut response = (
            StatusCode::from_u16(s.status).unwrap(),
            [("content-type", "application/json")],
            s.body,
        )
            .into_response();
        if let Some(after) = s.retry_after {
            response
                .headers_mut()
                .insert("retry-after", after.to_string().parse().unwrap());
        }
        for (name, value) in s.headers {
            let name = axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap();
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return response;
    }
    if request.method == Method::POST && TOKEN_PATHS.contains(&request.path.as_str()) {
        return oauth::token(shared, request);
    }
    if !authorized(shared, request) {
        return json(StatusCode::UNAUTHORIZED, unauthorized_body(shared.kind));
    }
    match shared.kind {
        Kind::Salesforce => salesforce::answer(shared, request),
        Kind::HubSpot => hubspot::answer(shared, request),
        Kind::Pipedrive => pipedrive::answer(shared, request),
        Kind::Dynamics => dynamics::answer(shared, request),
    }
}

fn authorized(shared: &Shared, request: &Request) -> bool {
    match shared.kind {
        Kind::Pipedrive => request.query.get("api_token") == Some(&*shared.token.lock().unwrap()),
        _ => {
            let expected = format!("Bearer {}", shared.token.lock().unwrap());
            request
                .headers
                .get("authorization")
                .and_then(|h| h.to_str().ok())
                == Some(expected.as_str())
        }
    }
}

fn unauthorized_body(kind: Kind) -> Value {
    match kind {
        Kind::Salesforce => serde_json::json!([{
            "errorCode": "INVALID_SESSION_ID", "message": "Session expired or invalid"
        }]),
        Kind::HubSpot => serde_json::json!({
            "status": "error", "category": "INVALID_AUTHENTICATION",
            "message": "Authentication credentials not found."
        }),
        Kind::Pipedrive => serde_json::json!({
            "success": false, "error": "unauthorized access", "errorCode": 401
        }),
        Kind::Dynamics => serde_json::json!({
            "error": {"code": "0x80072560", "message": "The user is not a member of the organization."}
        }),
    }
}

pub fn json(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A modification time after every earlier one (the CRMs' stamps only move forward).
pub fn next_stamp(shared: &Shared) -> DateTime<Utc> {
    let mut last = shared.last_stamp.lock().unwrap();
    let now = Utc::now();
    let now = now - Duration::nanoseconds(i64::from(now.timestamp_subsec_nanos() % 1_000_000));
    *last = now.max(*last + Duration::milliseconds(1));
    *last
}

/// The live and deleted records of `object`, oldest change first (ties by id).
pub fn sorted(shared: &Shared, object: &str) -> Vec<(String, FakeRecord)> {
    let records = shared.records.lock().unwrap();
    let mut all: Vec<(String, FakeRecord)> = records
        .iter()
        .filter(|((o, _), _)| o == object)
        .map(|((_, id), r)| (id.clone(), r.clone()))
        .collect();
    all.sort_by(|a, b| a.1.modified.cmp(&b.1.modified).then(a.0.cmp(&b.0)));
    all
}

/// Keeps `rows` under a new locator id and returns it.
pub fn open_locator(shared: &Shared, rows: Vec<Value>) -> String {
    let id = format!("{:016x}", rand::random::<u64>());
    shared.locators.lock().unwrap().insert(id.clone(), rows);
    id
}

/// Up to `n` rows of a locator from `offset`: (rows, whether more remain). Locators are
/// addressed by position, as Salesforce's `…/query/{locator}-{offset}` is, so asking for a page
/// again (a resumed job) gets the same rows.
pub fn take(shared: &Shared, locator: &str, offset: usize, n: usize) -> Option<(Vec<Value>, bool)> {
    let locators = shared.locators.lock().unwrap();
    let rows = locators.get(locator)?;
    let end = (offset + n).min(rows.len());
    let page = rows.get(offset.min(end)..end)?.to_vec();
    Some((page, end < rows.len()))
}

pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .or_else(|_| DateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
