//! Pipedrive API v2: lists with `updated_since` and cursors, `status=deleted` for deals, one
//! record by id.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{FakeRecord, Request, Shared, json as reply, parse_time, sorted};

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn object_of(path: &str) -> Option<&'static str> {
    Some(match path {
        "deals" => "deal",
        "persons" => "person",
        "organizations" => "organization",
        "activities" => "activity",
        "products" => "product",
        _ => return None,
    })
}

pub fn answer(shared: &Shared, request: &Request) -> Response {
    let Some(rest) = request.path.strip_prefix("/api/v2/") else {
        return not_found("Unknown method");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let Some(object) = object_of(parts[0]) else {
        return not_found("Unknown method");
    };
    match (&request.method, parts.as_slice()) {
        (&Method::GET, [_]) => list(shared, object, request),
        (&Method::GET, [_, id]) => {
            let records = shared.records.lock().unwrap();
            match records.get(&(object.to_owned(), (*id).to_owned())) {
                Some(r) if r.deleted.is_none() => reply(
                    StatusCode::OK,
                    json!({"success": true, "data": record(id, r)}),
                ),
                _ => not_found("Deal not found"),
            }
        }
        _ => not_found("Unknown method"),
    }
}

fn not_found(error: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!({"success": false, "error": error, "code": "ERR_NOT_FOUND"}),
    )
}

fn record(id: &str, r: &FakeRecord) -> Value {
    let mut out = json!({
        "id": id.parse::<u64>().map(Value::from).unwrap_or_else(|_| json!(id)),
        "add_time": iso(r.created),
        "update_time": iso(r.modified),
        "is_deleted": r.deleted.is_some(),
    });
    for (k, v) in &r.fields {
        out[k] = v.clone();
    }
    out
}

fn list(shared: &Shared, object: &str, request: &Request) -> Response {
    let since = match request.query.get("updated_since") {
        Some(t) => match parse_time(t) {
            Some(t) => Some(t),
            None => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"success": false, "error": "updated_since must be RFC3339", "code": "ERR_SCHEMA_VALIDATION_FAILED"}),
                );
            }
        },
        None => None,
    };
    let deleted = request.query.get("status").map(String::as_str) == Some("deleted");
    let limit: usize = request
        .query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(100)
        .min(500);
    let offset: usize = request
        .query
        .get("cursor")
        .and_then(|c| base64::engine::general_purpose::STANDARD.decode(c).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    // Pipedrive keeps update_time in whole seconds: `updated_since` compares at that precision.
    let matching: Vec<(String, FakeRecord)> = sorted(shared, object)
        .into_iter()
        .filter(|(_, r)| r.deleted.is_some() == deleted)
        .filter(|(_, r)| since.is_none_or(|s| r.modified.timestamp() >= s.timestamp()))
        .collect();
    let data: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, r)| record(id, r))
        .collect();
    let next = (offset + limit < matching.len()).then(|| {
        base64::engine::general_purpose::STANDARD.encode(format!("offset:{}", offset + limit))
    });
    reply(
        StatusCode::OK,
        json!({"success": true, "data": data, "additional_data": {"next_cursor": next}}),
    )
}
