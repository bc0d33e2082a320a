//! HubSpot CRM v3: search (10,000-result window), archived listings, batch read, and the 429s
//! of its per-second and 10-second rolling limits.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use super::{FakeRecord, Request, Shared, json as reply, sorted};

/// Search results beyond this offset are refused, as HubSpot does.
pub const SEARCH_WINDOW: usize = 10_000;

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn object_of(path: &str) -> String {
    match path {
        "companies" => "company".into(),
        "line_items" => "line_item".into(),
        p => p.strip_suffix('s').unwrap_or(p).to_owned(),
    }
}

pub fn answer(shared: &Shared, request: &Request) -> Response {
    if let Some(limited) = rate_limited(shared) {
        return limited;
    }
    let Some(rest) = request.path.strip_prefix("/crm/v3/objects/") else {
        return not_found();
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let object = object_of(parts[0]);
    match (&request.method, parts.as_slice()) {
        (&Method::POST, [_, "search"]) => search(shared, &object, request),
        (&Method::POST, [_, "batch", "read"]) => batch_read(shared, &object, request),
        (&Method::GET, [_])
            if request.query.get("archived").map(String::as_str) == Some("true") =>
        {
            archived(shared, &object, request)
        }
        _ => not_found(),
    }
}

/// HubSpot's 429 for a full window, as it answers it: no `Retry-After`, the policy named in the
/// body and the window's length and allowance in headers.
fn rate_limited(shared: &Shared) -> Option<Response> {
    let windows = [
        (
            *shared.per_second.lock().unwrap(),
            1_000u64,
            "SECONDLY",
            "secondly",
        ),
        (
            *shared.per_ten_seconds.lock().unwrap(),
            10_000,
            "TEN_SECONDLY_ROLLING",
            "ten_secondly_rolling",
        ),
    ];
    let (limit, window_ms, policy, name) = windows
        .into_iter()
        .find(|(limit, window_ms, ..)| limit.is_some_and(|l| recent(shared, *window_ms) >= l))?;
    let mut response = reply(
        StatusCode::TOO_MANY_REQUESTS,
        json!({
            "status": "error", "message": format!("You have reached your {name} limit."),
            "errorType": "RATE_LIMIT", "correlationId": "c0ffee", "policyName": policy
        }),
    );
    let headers = response.headers_mut();
    headers.insert(
        "x-hubspot-ratelimit-interval-milliseconds",
        window_ms.into(),
    );
    headers.insert("x-hubspot-ratelimit-max", limit.unwrap_or(0).into());
    headers.insert("x-hubspot-ratelimit-remaining", 0.into());
    Some(response)
}

/// Requests answered (not refused for the limit) in the last `window_ms`.
fn recent(shared: &Shared, window_ms: u64) -> usize {
    let since = Instant::now() - Duration::from_millis(window_ms);
    shared
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.at > since && r.status != 429)
        .count()
}

fn not_found() -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!({"status": "error", "message": "Not found", "category": "OBJECT_NOT_FOUND"}),
    )
}

fn bad_request(message: &str) -> Response {
    reply(
        StatusCode::BAD_REQUEST,
        json!({"status": "error", "message": message, "category": "VALIDATION_ERROR"}),
    )
}

fn object_json(id: &str, r: &FakeRecord, properties: &[String]) -> Value {
    let mut props = Map::new();
    props.insert("hs_object_id".into(), json!(id));
    for p in properties {
        let value = match p.as_str() {
            "hs_lastmodifieddate" => json!(iso(r.modified)),
            "createdate" => json!(iso(r.created)),
            other => r.fields.get(other).cloned().unwrap_or(Value::Null),
        };
        props.insert(p.clone(), value);
    }
    let mut out = json!({
        "id": id, "properties": props, "createdAt": iso(r.created),
        "updatedAt": iso(r.modified), "archived": r.deleted.is_some(),
    });
    if let Some(at) = r.deleted {
        out["archivedAt"] = json!(iso(at));
    }
    out
}

fn search(shared: &Shared, object: &str, request: &Request) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return bad_request("Invalid input JSON");
    };
    let limit = body["limit"].as_u64().unwrap_or(10).min(200) as usize;
    let after: usize = match &body["after"] {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        _ => 0,
    };
    if after >= SEARCH_WINDOW {
        return bad_request(
            "There was a problem with the request. (paging beyond 10000 results is not supported)",
        );
    }
    let filters: Vec<Value> = body["filterGroups"][0]["filters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let filter = |property: &str, operator: &str| {
        filters
            .iter()
            .find(|f| f["propertyName"] == property && f["operator"] == operator)
            .and_then(|f| f["value"].as_str().and_then(|v| v.parse::<i64>().ok()))
    };
    let time = |millis: Option<i64>| millis.and_then(DateTime::<Utc>::from_timestamp_millis);
    let since = time(filter("hs_lastmodifieddate", "GTE"));
    // HubSpot keeps times to the millisecond.
    let at = filter("hs_lastmodifieddate", "EQ");
    let after_id = filter("hs_object_id", "GT");
    let properties: Vec<String> = body["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    let mut matching: Vec<(String, FakeRecord)> = by_modified(shared, object)
        .into_iter()
        .filter(|(_, r)| r.deleted.is_none() && since.is_none_or(|s| r.modified >= s))
        .filter(|(_, r)| at.is_none_or(|t| r.modified.timestamp_millis() == t))
        .filter(|(id, _)| after_id.is_none_or(|a| numeric(id) > a))
        .collect();
    if body["sorts"][0]["propertyName"] == "hs_object_id" {
        matching.sort_by_key(|(id, _)| numeric(id));
    }
    let results: Vec<Value> = matching
        .iter()
        .skip(after)
        .take(limit)
        .map(|(id, r)| object_json(id, r, &properties))
        .collect();
    let mut out = json!({"total": matching.len(), "results": results});
    if after + limit < matching.len() {
        out["paging"] = json!({"next": {"after": (after + limit).to_string()}});
    }
    reply(StatusCode::OK, out)
}

/// HubSpot's record ids are numbers, and compared as such.
fn numeric(id: &str) -> i64 {
    id.parse().unwrap_or(i64::MAX)
}

/// HubSpot sorts on the one property asked for and nothing else: records sharing a millisecond
/// come in no fixed order. Here their order flips with every write to the account, as a search
/// index's does when it re-indexes records. Each page is read from the records as they are now,
/// so a record edited mid-pass leaves its place and the ones behind it move up.
fn by_modified(shared: &Shared, object: &str) -> Vec<(String, FakeRecord)> {
    let mut all = sorted(shared, object);
    if *shared.writes.lock().unwrap() % 2 == 1 {
        all.sort_by(|a, b| a.1.modified.cmp(&b.1.modified).then(b.0.cmp(&a.0)));
    }
    all
}

fn archived(shared: &Shared, object: &str, request: &Request) -> Response {
    let limit: usize = request
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .min(100);
    let after: usize = request
        .query
        .get("after")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    let properties: Vec<String> = request
        .query
        .get("properties")
        .map(|p| p.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let gone: Vec<(String, FakeRecord)> = sorted(shared, object)
        .into_iter()
        .filter(|(_, r)| r.deleted.is_some())
        .collect();
    let results: Vec<Value> = gone
        .iter()
        .skip(after)
        .take(limit)
        .map(|(id, r)| object_json(id, r, &properties))
        .collect();
    let mut out = json!({"results": results});
    if after + limit < gone.len() {
        out["paging"] = json!({"next": {"after": (after + limit).to_string(), "link": ""}});
    }
    reply(StatusCode::OK, out)
}

fn batch_read(shared: &Shared, object: &str, request: &Request) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return bad_request("Invalid input JSON");
    };
    let properties: Vec<String> = body["properties"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    let records = shared.records.lock().unwrap();
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in body["inputs"].as_array().into_iter().flatten() {
        let id = input["id"].as_str().unwrap_or_default();
        match records.get(&(object.to_owned(), id.to_owned())) {
            Some(r) if r.deleted.is_none() => results.push(object_json(id, r, &properties)),
            _ => errors.push(json!({
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some DEAL objects, they may be deleted or not exist.",
                "context": {"ids": [id]}
            })),
        }
    }
    let now = iso(Utc::now());
    if errors.is_empty() {
        reply(
            StatusCode::OK,
            json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}),
        )
    } else {
        reply(
            StatusCode::MULTI_STATUS,
            json!({"status": "COMPLETE", "results": results, "numErrors": errors.len(),
                   "errors": errors, "startedAt": now, "completedAt": now}),
        )
    }
}
